// A CPU emulation of the CUDA execution model, for running the kernels of
// csrc/cuda/*.cu, unchanged, with the host C++ compiler (tests/cpp/emulator/).
//
// Compile a .cu file as C++ with -DPGSL_CUDA_EMULATION and this folder on the
// include path: csrc/cuda/cuda_types.cuh and launchers.h then include this
// header instead of the CUDA runtime headers, and launch_kernel<K>(...) runs
// the launch here instead of K<<<...>>>(...).
//
// What a launch does: every block of the grid (in the schedule's block order)
// runs its threads as fibers (ucontext) on one OS thread. A thread runs until
// it reaches __syncthreads, a warp collective (__shfl_*_sync, __ballot_sync,
// __syncwarp) or its end; then the schedule picks the next runnable thread
// (the lowest index, the highest, or a random one). A warp collective completes
// as soon as every lane it names has arrived, so one warp may run ahead of the
// others, as on a GPU; a __syncthreads releases the block when every thread
// waits at it. When no thread can run, anything still waiting is a fault
// (KernelFault, naming the kernel, block and thread): a barrier some threads
// reach while others exited or wait at another barrier; a collective whose
// mask names a lane that does not exist, exited, waits elsewhere, or is read
// by a shuffle without being in the mask; a caller not in its own mask.
// `__shared__` variables are per block (blocks run one after another; their
// bytes are poisoned with 0xff at every block start, as are the dynamic shared
// bytes of PGSL_DYNAMIC_SHARED). Atomics are exact: fibers never preempt one
// another. Under AddressSanitizer the fiber switches are annotated, so global,
// shared and stack accesses out of bounds are reported, with the kernel, block
// and thread that made them.
#pragma once

#if defined(__CUDACC__)
#error "pgsl_cuda_emulator.h is for the host compiler; nvcc uses the CUDA runtime"
#endif

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <source_location>
#include <stdexcept>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <vector>

// ---------------------------------------------------------------------------- keywords
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
// One instance per program, in a section the emulator poisons at each block start;
// blocks run one after another, so each sees the shared memory as its own.
#define __shared__ __attribute__((section("pgsl_emu_shared"), aligned(16))) static
#define PGSL_EMULATED_DYNAMIC_SHARED(T, name) T* name = ::pgsl::emu::dynamic_shared<T>()

// ---------------------------------------------------------------------------- runtime types
struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
};

enum cudaError_t : int {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorLaunchFailure = 719,
};
struct CUstream_st;
using cudaStream_t = CUstream_st*;
constexpr int warpSize = 32;

cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
const char* cudaGetErrorString(cudaError_t error);

namespace pgsl::emu {

// ---------------------------------------------------------------------------- schedules
enum class Order { InOrder, Reversed, Shuffled };

// The order in which blocks run, and which runnable thread of a block resumes
// next: in order (lowest index first), reversed (highest first), or shuffled (a
// random pick at every step, from `seed`).
struct Schedule {
  Order order = Order::InOrder;
  std::uint64_t seed = 0;
  std::string describe() const;
};

void set_schedule(const Schedule& schedule);
const Schedule& schedule();
// In order, reversed, and two seeded shuffles: what the tests run every launch under.
std::vector<Schedule> test_schedules();

// The most blocks a launcher asks for (cuda_types.cuh's max_grid_blocks());
// tests lower it so that grid-stride loops take more than one step. 0 (the
// default): not lowered, the launchers' own kMaxGridBlocks.
void set_grid_cap(unsigned blocks);
unsigned grid_cap();
// The most dynamic shared bytes a launcher plans a block for (cuda_types.cuh's
// max_dynamic_shared_bytes()); 0 (the default): not lowered.
void set_shared_cap(unsigned bytes);
unsigned shared_cap();

// A launch that broke the execution model. The message names the kernel, the
// block and the thread(s).
class KernelFault : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct Stats {
  std::int64_t launches = 0, blocks = 0, threads = 0;
};
const Stats& stats();
// Every kernel launched since the program started, as "name<template args>".
const std::vector<std::string>& launched_kernels();

// ---------------------------------------------------------------------------- inside a kernel
const uint3& thread_idx();
const uint3& block_idx();
const dim3& block_dim();
const dim3& grid_dim();

void syncthreads(const std::source_location& where);
void* dynamic_shared_bytes();
template <typename T>
T* dynamic_shared() {
  return static_cast<T*>(dynamic_shared_bytes());
}

enum class Collective { ShflDown, ShflUp, ShflXor, ShflIdx, Ballot, SyncWarp };
// Deposits this lane's 8-byte value for a warp collective and returns the lane's
// result once every lane named in `mask` has arrived (see the header comment).
std::uint64_t warp_collective(Collective kind, unsigned mask, std::uint64_t value, int arg,
                              int width, const std::source_location& where);

template <typename T>
std::uint64_t to_bits(T v) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "shuffles move <= 8 bytes");
  std::uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  return bits;
}
template <typename T>
T from_bits(std::uint64_t bits) {
  T v;
  std::memcpy(&v, &bits, sizeof(T));
  return v;
}

// ---------------------------------------------------------------------------- launching
using KernelBody = void (*)(const void* bound_args);
void run_launch(const char* name, dim3 grid, dim3 block, std::size_t shared_bytes, KernelBody body,
                const void* bound_args);

// "... [with auto Kernel = pgsl::{anonymous}::shrink_dense<float>]" -> "shrink_dense<float>".
std::string kernel_name_from(std::string_view pretty_function);

template <auto Kernel>
const char* kernel_name() {
  static const std::string name = kernel_name_from(__PRETTY_FUNCTION__);
  return name.c_str();
}

// Kernel<<<grid, block, shared_bytes, stream>>>(args...): the arguments are
// copied once at launch, as CUDA copies them, and every thread calls the kernel
// with its own copies.
template <auto Kernel, typename... Args>
void launch(dim3 grid, dim3 block, std::size_t shared_bytes, cudaStream_t, Args&&... args) {
  using Params = decltype(std::tuple(std::forward<Args>(args)...));
  const Params bound(std::forward<Args>(args)...);
  run_launch(
      kernel_name<Kernel>(), grid, block, shared_bytes,
      [](const void* p) {
        std::apply([](auto... a) { Kernel(a...); }, *static_cast<const Params*>(p));
      },
      &bound);
}

// Runs `run()` (which launches and returns its outputs, comparable with ==) under
// every test schedule; returns "" if all results are equal, else which differ.
template <typename F>
std::string schedule_dependence(F&& run) {
  const Schedule saved = schedule();
  std::string difference;
  const std::vector<Schedule> schedules = test_schedules();
  set_schedule(schedules.front());
  const auto first = run();
  for (std::size_t s = 1; s < schedules.size() && difference.empty(); ++s) {
    set_schedule(schedules[s]);
    if (!(run() == first))
      difference = "results under " + schedules[s].describe() + " differ from those under " +
                   schedules.front().describe();
  }
  set_schedule(saved);
  return difference;
}

}  // namespace pgsl::emu

#define threadIdx (::pgsl::emu::thread_idx())
#define blockIdx (::pgsl::emu::block_idx())
#define blockDim (::pgsl::emu::block_dim())
#define gridDim (::pgsl::emu::grid_dim())

// ---------------------------------------------------------------------------- intrinsics
inline void __syncthreads(const std::source_location& where = std::source_location::current()) {
  ::pgsl::emu::syncthreads(where);
}

inline void __syncwarp(unsigned mask = 0xffffffffu,
                       const std::source_location& where = std::source_location::current()) {
  ::pgsl::emu::warp_collective(::pgsl::emu::Collective::SyncWarp, mask, 0, 0, warpSize, where);
}

template <typename T>
T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize,
                   const std::source_location& where = std::source_location::current()) {
  using namespace ::pgsl::emu;
  return from_bits<T>(warp_collective(Collective::ShflDown, mask, to_bits(var), int(delta), width, where));
}

template <typename T>
T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize,
                 const std::source_location& where = std::source_location::current()) {
  using namespace ::pgsl::emu;
  return from_bits<T>(warp_collective(Collective::ShflUp, mask, to_bits(var), int(delta), width, where));
}

template <typename T>
T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = warpSize,
                  const std::source_location& where = std::source_location::current()) {
  using namespace ::pgsl::emu;
  return from_bits<T>(warp_collective(Collective::ShflXor, mask, to_bits(var), lane_mask, width, where));
}

template <typename T>
T __shfl_sync(unsigned mask, T var, int src_lane, int width = warpSize,
              const std::source_location& where = std::source_location::current()) {
  using namespace ::pgsl::emu;
  return from_bits<T>(warp_collective(Collective::ShflIdx, mask, to_bits(var), src_lane, width, where));
}

inline unsigned __ballot_sync(unsigned mask, int predicate,
                              const std::source_location& where = std::source_location::current()) {
  using namespace ::pgsl::emu;
  return unsigned(warp_collective(Collective::Ballot, mask, predicate != 0, 0, warpSize, where));
}
inline int __any_sync(unsigned mask, int predicate,
                      const std::source_location& where = std::source_location::current()) {
  return __ballot_sync(mask, predicate, where) != 0;
}
inline int __all_sync(unsigned mask, int predicate,
                      const std::source_location& where = std::source_location::current()) {
  return __ballot_sync(mask, predicate, where) == __ballot_sync(mask, 1, where);
}

// Explicitly rounded arithmetic: one IEEE operation each, never contracted
// (this file is compiled with -ffp-contract=off, as the CPU kernels are).
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fsqrt_rn(float a) { return std::sqrt(a); }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dsub_rn(double a, double b) { return a - b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __ddiv_rn(double a, double b) { return a / b; }
inline double __dsqrt_rn(double a) { return std::sqrt(a); }
inline double __fma_rn(double a, double b, double c) { return std::fma(a, b, c); }

// Atomics: a fiber is never interrupted between the read and the write.
template <typename T> T atomicAdd(T* address, T value) { const T old = *address; *address = old + value; return old; }
template <typename T> T atomicSub(T* address, T value) { const T old = *address; *address = old - value; return old; }
template <typename T> T atomicExch(T* address, T value) { const T old = *address; *address = value; return old; }
template <typename T> T atomicMin(T* address, T value) { const T old = *address; *address = value < old ? value : old; return old; }
template <typename T> T atomicMax(T* address, T value) { const T old = *address; *address = value > old ? value : old; return old; }
template <typename T> T atomicAnd(T* address, T value) { const T old = *address; *address = old & value; return old; }
template <typename T> T atomicOr(T* address, T value) { const T old = *address; *address = old | value; return old; }
template <typename T> T atomicCAS(T* address, T compare, T value) {
  const T old = *address;
  if (old == compare) *address = value;
  return old;
}

// ---------------------------------------------------------------------------- __half, __nv_bfloat16
// Storage and the round-to-nearest-even conversions (cuda_fp16.h, cuda_bf16.h);
// the kernels do their arithmetic in float (pgsl::opmath_t).
struct __half {
  unsigned short __x;
};
struct __nv_bfloat16 {
  unsigned short __x;
};

inline __half __float2half_rn(float f) {
  std::uint32_t x;
  std::memcpy(&x, &f, 4);
  const std::uint16_t sign = static_cast<std::uint16_t>((x >> 16) & 0x8000u);
  const std::uint32_t abs = x & 0x7fffffffu;
  std::uint16_t h;
  if (abs > 0x7f800000u) {
    h = 0x7fff;  // NaN: CUDA's canonical half NaN
  } else if (abs >= 0x477ff000u) {
    h = sign | 0x7c00u;  // >= 65520 rounds to infinity
  } else if (abs < 0x38800000u) {
    // Below 2^-14: a subnormal half, round(|f| * 2^24) in the current (nearest-even) mode.
    float a;
    std::memcpy(&a, &abs, 4);
    h = sign | static_cast<std::uint16_t>(std::nearbyint(a * 16777216.0f));
  } else {
    const std::uint32_t rebiased = abs - 0x38000000u;  // exponent 127 bias -> 15
    std::uint32_t m = rebiased >> 13;
    const std::uint32_t rest = rebiased & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (m & 1u))) ++m;
    h = sign | static_cast<std::uint16_t>(m);
  }
  return __half{h};
}

inline float __half2float(__half h) {
  const std::uint32_t sign = std::uint32_t(h.__x & 0x8000u) << 16;
  const std::uint32_t exponent = (h.__x >> 10) & 0x1fu, mantissa = h.__x & 0x3ffu;
  std::uint32_t bits;
  if (exponent == 0) {
    const float v = std::ldexp(static_cast<float>(mantissa), -24);
    std::memcpy(&bits, &v, 4);
    bits |= sign;
  } else if (exponent == 31) {
    bits = sign | 0x7f800000u | (mantissa << 13);
  } else {
    bits = sign | ((exponent + 112u) << 23) | (mantissa << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline __nv_bfloat16 __float2bfloat16_rn(float f) {
  std::uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) return __nv_bfloat16{0x7fff};
  x += 0x7fffu + ((x >> 16) & 1u);
  return __nv_bfloat16{static_cast<unsigned short>(x >> 16)};
}

inline float __bfloat162float(__nv_bfloat16 b) {
  const std::uint32_t bits = std::uint32_t(b.__x) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
