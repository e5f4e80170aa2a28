// Small-matrix SVT and RPCA on CUDA: one matrix per thread, running exactly the
// per-matrix code the CPU kernels run (pgsl/svd_jacobi.h, pgsl/rpca.h with one
// lane), on a per-thread slice of a global workspace. No per-matrix launches
// and no host synchronisation: one launch covers the batch, and the RPCA
// thread runs its whole loop to its own stopping point.
#include "cuda_types.cuh"
#include "launchers.h"
#include "pgsl/rpca.h"
#include "pgsl/svd_jacobi.h"

namespace pgsl {
namespace {

constexpr int kThreads = 64;

template <typename T>
__global__ void small_svt_kernel(SmallBatchGeometry g, const T* __restrict__ x,
                                 const T* __restrict__ tau, T* __restrict__ out, int* kept,
                                 T* workspace) {
  const int64_t M = g.rows(), N = g.cols();
  const int64_t step = int64_t(gridDim.x) * blockDim.x;  // the grid is capped (blocks_for)
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < g.batch; i += step) {
    T* A = workspace + i * (M * N + N * N);
    T* V = A + M * N;
    auto load = [&](int, int64_t r, int64_t c) { return x[g.in_offset(i, r, c)]; };
    auto store = [&](int, int64_t r, int64_t c, T v) { out[g.out_offset(i, r, c)] = v; };
    svt_group<T, 1>(M, N, load, store, tau + i, A, V, kept + i, kJacobiMaxSweeps);
  }
}

template <typename T>
__global__ void small_rpca_kernel(SmallBatchGeometry g, const T* __restrict__ x,
                                  const T* __restrict__ mu0, RpcaKernelOptions o,
                                  T* __restrict__ low_rank, T* __restrict__ sparse,
                                  int64_t* iterations, bool* converged, T* workspace) {
  const int64_t M = g.rows(), N = g.cols();
  const int64_t step = int64_t(gridDim.x) * blockDim.x;  // the grid is capped (blocks_for)
  const T* init = static_cast<const T*>(o.init);
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < g.batch; i += step) {
    RpcaLanes<T, 1> s;
    s.bind(workspace + i * RpcaLanes<T, 1>::workspace(M, N), M, N);
    rpca_load_lane<T, 1>(
        s, 0, M, N, [&](int64_t r, int64_t c) { return x[g.in_offset(i, r, c)]; },
        [&](int64_t r, int64_t c) { return init[o.init_geometry.in_offset(i, r, c)]; },
        init != nullptr, mu0[i], false);
    bool done = false, ok = false;
    while (!done)
      rpca_step<T, 1>(o.method, s, M, N, static_cast<T>(o.lam), o.continuation,
                      static_cast<T>(o.tol), o.max_iter, kJacobiMaxSweeps, &done, &ok);
    rpca_store_lane<T, 1>(s, 0, M, N, [&](int64_t r, int64_t c, T low, T sp) {
      low_rank[g.out_offset(i, r, c)] = low;
      sparse[g.out_offset(i, r, c)] = sp;
    });
    iterations[i] = s.finite[0] ? s.iter[0] : 0;
    converged[i] = ok && s.finite[0];
  }
}

template <typename F>
cudaError_t dispatch_real(ScalarKind kind, F&& f) {
  if (kind == ScalarKind::Float32) return f(float{});
  if (kind == ScalarKind::Float64) return f(double{});
  return cudaErrorInvalidValue;
}

}  // namespace

int64_t small_svt_workspace(const SmallBatchGeometry& g) {
  return g.batch * (g.rows() * g.cols() + g.cols() * g.cols());
}

int64_t small_rpca_workspace(const SmallBatchGeometry& g) {
  return g.batch * RpcaLanes<float, 1>::workspace(g.rows(), g.cols());
}

cudaError_t launch_small_svt(ScalarKind kind, const SmallBatchGeometry& g, const void* x,
                             const void* tau, void* out, int* kept, void* workspace,
                             cudaStream_t stream) {
  if (g.batch == 0) return cudaSuccess;
  return dispatch_real(kind, [&](auto tag) {
    using T = decltype(tag);
    launch_kernel<small_svt_kernel<T>>(blocks_for(g.batch, kThreads), kThreads, 0, stream, g,
                                       static_cast<const T*>(x), static_cast<const T*>(tau),
                                       static_cast<T*>(out), kept, static_cast<T*>(workspace));
    return cudaGetLastError();
  });
}

cudaError_t launch_small_rpca(ScalarKind kind, const SmallBatchGeometry& g, const void* x,
                              const void* mu0, const RpcaKernelOptions& options, void* low_rank,
                              void* sparse, int64_t* iterations, bool* converged, void* workspace,
                              cudaStream_t stream) {
  if (g.batch == 0) return cudaSuccess;
  return dispatch_real(kind, [&](auto tag) {
    using T = decltype(tag);
    launch_kernel<small_rpca_kernel<T>>(
        blocks_for(g.batch, kThreads), kThreads, 0, stream, g, static_cast<const T*>(x),
        static_cast<const T*>(mu0), options, static_cast<T*>(low_rank), static_cast<T*>(sparse),
        iterations, converged, static_cast<T*>(workspace));
    return cudaGetLastError();
  });
}

}  // namespace pgsl
