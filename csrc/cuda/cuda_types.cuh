// Storage types for float16/bfloat16 on the device. torch builds .cu files
// with __CUDA_NO_HALF_CONVERSIONS__, so these wrappers spell the conversions
// out; the shared math in pgsl/*.h then works on them through static_cast.
// Also the one way kernels are launched (launch_kernel), so that the same .cu
// files run on a GPU under nvcc and on the CPU emulation of the CUDA execution
// model with the host compiler (PGSL_CUDA_EMULATION, tests/cpp/emulator/).
#pragma once

#if defined(PGSL_CUDA_EMULATION)
#include "pgsl_cuda_emulator.h"
#else
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#endif

#include "pgsl/macros.h"
#include "pgsl/scalar_kind.h"

namespace pgsl {

struct Half16 {
  __half v;
  Half16() = default;
  __host__ __device__ Half16(float f) : v(__float2half_rn(f)) {}
  __host__ __device__ operator float() const { return __half2float(v); }
};

struct BFloat16 {
  __nv_bfloat16 v;
  BFloat16() = default;
  __host__ __device__ BFloat16(float f) : v(__float2bfloat16_rn(f)) {}
  __host__ __device__ operator float() const { return __bfloat162float(v); }
};

template <typename T> struct OpMath { using type = T; };
template <> struct OpMath<Half16> { using type = float; };
template <> struct OpMath<BFloat16> { using type = float; };
template <typename T> using opmath_t = typename OpMath<T>::type;

// The most blocks a launch asks for: grid-stride loops cover the rest, and
// 2^20 blocks saturate any current GPU. The emulator's tests lower it.
constexpr int64_t kMaxGridBlocks = int64_t{1} << 20;

inline int64_t max_grid_blocks() {
#if defined(PGSL_CUDA_EMULATION)
  const int64_t cap = ::pgsl::emu::grid_cap();  // 0: not lowered
  return cap > 0 ? cap : kMaxGridBlocks;
#else
  return kMaxGridBlocks;
#endif
}

inline unsigned blocks_for(int64_t work, int threads) {
  const int64_t blocks = (work + threads - 1) / threads;
  return static_cast<unsigned>(blocks < max_grid_blocks() ? blocks : max_grid_blocks());
}

// The dynamic shared memory a block may use without opting in
// (cudaFuncAttributeMaxDynamicSharedMemorySize), on every GPU since Volta.
// The emulator's tests lower it, so that every placement of a kernel's data
// (shared memory or its global workspace) runs.
constexpr int64_t kMaxDynamicSharedBytes = 48 * 1024;

inline int64_t max_dynamic_shared_bytes() {
#if defined(PGSL_CUDA_EMULATION)
  const int64_t cap = ::pgsl::emu::shared_cap();  // 0: not lowered
  return cap > 0 ? cap : kMaxDynamicSharedBytes;
#else
  return kMaxDynamicSharedBytes;
#endif
}

// Kernel<<<grid, block, shared_bytes, stream>>>(args...), or its emulation.
template <auto Kernel, typename... Args>
inline void launch_kernel(dim3 grid, dim3 block, size_t shared_bytes, cudaStream_t stream,
                          Args... args) {
#if defined(PGSL_CUDA_EMULATION)
  ::pgsl::emu::launch<Kernel>(grid, block, shared_bytes, stream, args...);
#else
  Kernel<<<grid, block, shared_bytes, stream>>>(args...);
#endif
}

}  // namespace pgsl

// `extern __shared__` memory of the size given at launch, as a T*:
//   PGSL_DYNAMIC_SHARED(float, buffer);
#if defined(PGSL_CUDA_EMULATION)
#define PGSL_DYNAMIC_SHARED(T, name) PGSL_EMULATED_DYNAMIC_SHARED(T, name)
#else
#define PGSL_DYNAMIC_SHARED(T, name)                                      \
  extern __shared__ __align__(16) unsigned char pgsl_dynamic_shared_[]; \
  T* name = reinterpret_cast<T*>(pgsl_dynamic_shared_)
#endif
