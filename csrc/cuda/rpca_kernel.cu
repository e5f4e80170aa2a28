// Small-matrix RPCA on CUDA: one matrix per thread, running exactly the
// per-matrix code the CPU kernel runs (pgsl/rpca.h with one lane), on a
// per-thread slice of a global workspace. One launch covers the batch, and
// each thread runs its matrix's whole loop to its own stopping point: no
// per-iteration launches and no host synchronisation.
#include "cuda_types.cuh"
#include "launchers.h"
#include "pgsl/rpca.h"

namespace pgsl {
namespace {

constexpr int kThreads = 64;

template <typename T>
__global__ void small_rpca_kernel(RpcaParams p, T* workspace) {
  const SmallBatchGeometry& g = p.g;
  const T* __restrict__ x = static_cast<const T*>(p.x);
  const T* __restrict__ mu0 = static_cast<const T*>(p.mu0);
  const T* init = static_cast<const T*>(p.init);
  T* __restrict__ low_rank = static_cast<T*>(p.low_rank);
  T* __restrict__ sparse = static_cast<T*>(p.sparse);
  const int64_t M = g.rows(), N = g.cols();
  const int64_t step = int64_t(gridDim.x) * blockDim.x;  // the grid is capped (blocks_for)
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < g.batch; i += step) {
    RpcaLanes<T, 1> s;
    s.bind(workspace + i * RpcaLanes<T, 1>::workspace(M, N), M, N);
    rpca_load_lane<T, 1>(
        s, 0, M, N, [&](int64_t r, int64_t c) { return x[g.in_offset(i, r, c)]; },
        [&](int64_t r, int64_t c) { return init[p.init_g.in_offset(i, r, c)]; },
        init != nullptr, mu0[i], false);
    bool done = false, ok = false;
    while (!done)
      rpca_step<T, 1>(p.method, s, M, N, static_cast<T>(p.lam), p.continuation,
                      static_cast<T>(p.tol), p.max_iter, kJacobiMaxSweeps, &done, &ok);
    rpca_store_lane<T, 1>(s, 0, M, N, [&](int64_t r, int64_t c, T low, T sp) {
      low_rank[g.out_offset(i, r, c)] = low;
      sparse[g.out_offset(i, r, c)] = sp;
    });
    p.iterations[i] = s.finite[0] ? s.iter[0] : 0;
    p.converged[i] = ok && s.finite[0];
  }
}

}  // namespace

int64_t small_rpca_workspace(const SmallBatchGeometry& g) {
  return g.batch * RpcaLanes<float, 1>::workspace(g.rows(), g.cols());
}

cudaError_t launch_small_rpca(const RpcaParams& p, void* workspace, cudaStream_t stream) {
  if (p.g.batch == 0) return cudaSuccess;
  return float_switch<void, void>(p.kind, cudaErrorInvalidValue, [&](auto tag) {
    using T = decltype(tag);
    launch_kernel<small_rpca_kernel<T>>(blocks_for(p.g.batch, kThreads), kThreads, 0, stream, p,
                                        static_cast<T*>(workspace));
    return cudaGetLastError();
  });
}

}  // namespace pgsl
