// Storage types for float16/bfloat16 on the device. torch builds .cu files
// with __CUDA_NO_HALF_CONVERSIONS__, so these wrappers spell the conversions
// out; the shared math in pgsl/*.h then works on them through static_cast.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "pgsl/macros.h"

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

// Calls f(T{}) with the storage type of `kind`.
template <typename F>
cudaError_t dispatch_kind(ScalarKind kind, F&& f) {
  switch (kind) {
    case ScalarKind::Float16: return f(Half16{});
    case ScalarKind::BFloat16: return f(BFloat16{});
    case ScalarKind::Float32: return f(float{});
    case ScalarKind::Float64: return f(double{});
  }
  return cudaErrorInvalidValue;
}

inline unsigned blocks_for(int64_t work, int threads) {
  const int64_t blocks = (work + threads - 1) / threads;
  // Grid-stride loops cover the rest; 2^20 blocks saturate any current GPU.
  return static_cast<unsigned>(blocks < (int64_t{1} << 20) ? blocks : (int64_t{1} << 20));
}

}  // namespace pgsl
