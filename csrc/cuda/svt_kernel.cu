// Small-matrix SVT on CUDA: one matrix per thread, running exactly the
// per-matrix code the CPU kernel runs (pgsl/svd_jacobi.h with one lane), on a
// per-thread slice of a global workspace. One launch covers the batch, with no
// per-matrix launches and no host synchronisation.
#include "cuda_types.cuh"
#include "launchers.h"
#include "pgsl/svd_jacobi.h"

namespace pgsl {
namespace {

constexpr int kThreads = 64;

template <typename T>
__global__ void small_svt_kernel(SvtParams p, T* workspace) {
  const SmallBatchGeometry& g = p.g;
  const T* __restrict__ x = static_cast<const T*>(p.x);
  const T* __restrict__ tau = static_cast<const T*>(p.tau);
  T* __restrict__ out = static_cast<T*>(p.out);
  const int64_t M = g.rows(), N = g.cols();
  const int64_t step = int64_t(gridDim.x) * blockDim.x;  // the grid is capped (blocks_for)
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < g.batch; i += step) {
    T* A = workspace + i * (M * N + N * N);
    T* V = A + M * N;
    auto load = [&](int, int64_t r, int64_t c) { return x[g.in_offset(i, r, c)]; };
    auto store = [&](int, int64_t r, int64_t c, T v) { out[g.out_offset(i, r, c)] = v; };
    svt_group<T, 1>(M, N, load, store, tau + i, A, V, p.kept + i, kJacobiMaxSweeps);
  }
}

}  // namespace

int64_t small_svt_workspace(const SmallBatchGeometry& g) {
  return g.batch * (g.rows() * g.cols() + g.cols() * g.cols());
}

cudaError_t launch_small_svt(const SvtParams& p, void* workspace, cudaStream_t stream) {
  if (p.g.batch == 0) return cudaSuccess;
  return float_switch<void, void>(p.kind, cudaErrorInvalidValue, [&](auto tag) {
    using T = decltype(tag);
    launch_kernel<small_svt_kernel<T>>(blocks_for(p.g.batch, kThreads), kThreads, 0, stream, p,
                                       static_cast<T*>(workspace));
    return cudaGetLastError();
  });
}

}  // namespace pgsl
