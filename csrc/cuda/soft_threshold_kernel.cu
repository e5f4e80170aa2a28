// soft_threshold CUDA kernels: a vectorised path for dense tensors with a
// scalar threshold, and a strided path for everything else (broadcast tau,
// transposed or sliced x). The element math is pgsl::soft_threshold_value.
#include "cuda_types.cuh"
#include "launchers.h"
#include "pgsl/shrinkage.h"

namespace pgsl {
namespace {

constexpr int kThreads = 256;

template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

template <typename T>
__global__ void shrink_dense(T* __restrict__ out, const T* __restrict__ x, opmath_t<T> tau,
                             int64_t n) {
  using Acc = opmath_t<T>;
  constexpr int N = 16 / sizeof(T);
  const int64_t packs = n / N;
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t k = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; k < packs; k += step) {
    Pack<T, N> in = reinterpret_cast<const Pack<T, N>*>(x)[k], res;
#pragma unroll
    for (int e = 0; e < N; ++e)
      res.v[e] = static_cast<T>(soft_threshold_value<Acc>(static_cast<Acc>(in.v[e]), tau));
    reinterpret_cast<Pack<T, N>*>(out)[k] = res;
  }
  for (int64_t k = packs * N + int64_t(blockIdx.x) * blockDim.x + threadIdx.x; k < n; k += step)
    out[k] = static_cast<T>(soft_threshold_value<Acc>(static_cast<Acc>(x[k]), tau));
}

template <typename T, typename Index>
__global__ void shrink_strided(ElementwiseParams p, T* out, const T* x, const T* tau,
                               opmath_t<T> tau_value) {
  using Acc = opmath_t<T>;
  const Index step = Index(gridDim.x) * blockDim.x;
  for (Index k = Index(blockIdx.x) * blockDim.x + threadIdx.x; k < Index(p.numel); k += step) {
    Index rest = k, o_out = 0, o_x = 0, o_tau = 0;
    for (int d = 0; d < p.ndim; ++d) {
      const Index size = Index(p.sizes[d]);
      const Index at = rest % size;
      rest /= size;
      o_out += at * Index(p.strides[0][d]);
      o_x += at * Index(p.strides[1][d]);
      o_tau += at * Index(p.strides[2][d]);
    }
    const Acc t = tau != nullptr ? static_cast<Acc>(tau[o_tau]) : tau_value;
    out[o_out] = static_cast<T>(soft_threshold_value<Acc>(static_cast<Acc>(x[o_x]), t));
  }
}

}  // namespace

cudaError_t launch_soft_threshold(ScalarKind kind, const ElementwiseParams& p, void* out,
                                  const void* x, const void* tau, double tau_value,
                                  cudaStream_t stream) {
  if (p.numel == 0) return cudaSuccess;
  return float_switch<Half16, BFloat16>(kind, cudaErrorInvalidValue, [&](auto tag) {
    using T = decltype(tag);
    using Acc = opmath_t<T>;
    const unsigned blocks = blocks_for(p.numel, kThreads);
    const bool aligned = (reinterpret_cast<uintptr_t>(out) % 16 == 0) &&
                         (reinterpret_cast<uintptr_t>(x) % 16 == 0);
    if (p.contiguous && tau == nullptr && aligned) {
      constexpr int N = 16 / sizeof(T);
      launch_kernel<shrink_dense<T>>(blocks_for((p.numel + N - 1) / N, kThreads), kThreads, 0,
                                     stream, static_cast<T*>(out), static_cast<const T*>(x),
                                     static_cast<Acc>(tau_value), p.numel);
    } else if (p.index32) {
      launch_kernel<shrink_strided<T, int32_t>>(
          blocks, kThreads, 0, stream, p, static_cast<T*>(out), static_cast<const T*>(x),
          static_cast<const T*>(tau), static_cast<Acc>(tau_value));
    } else {
      launch_kernel<shrink_strided<T, int64_t>>(
          blocks, kThreads, 0, stream, p, static_cast<T*>(out), static_cast<const T*>(x),
          static_cast<const T*>(tau), static_cast<Acc>(tau_value));
    }
    return cudaGetLastError();
  });
}

}  // namespace pgsl
