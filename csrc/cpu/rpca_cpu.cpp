// RPCA on the CPU. Small matrices: the fused loop of pgsl/robust_pca.h on lane
// groups of L = kCpuLanes<T> matrices (one per SIMD lane), parallel over ranges of matrices;
// when a lane's matrix finishes, its result is written and the lane is refilled
// with the next matrix of the range, so converged matrices stop costing work.
// Ranges shorter than a lane group run one matrix at a time (L = 1, the
// instantiation a CUDA thread runs). Larger matrices and rank=k: rpca.cpp.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "../rpca.h"
#include "simd_clones.h"
#include "pgsl/robust_pca.h"

namespace pgsl {

namespace {

template <typename T, int L>
PGSL_CPU_INLINE void rpca_range(const RpcaParams& p, int64_t begin, int64_t end) {
  const T* x = static_cast<const T*>(p.x);
  const T* init = static_cast<const T*>(p.init);
  const T* mu0 = static_cast<const T*>(p.mu0);
  T* low_rank = static_cast<T*>(p.low_rank);
  T* sparse = static_cast<T*>(p.sparse);
  const T lam = static_cast<T>(p.lam), tol = static_cast<T>(p.tol);
  const int64_t M = p.g.rows(), N = p.g.cols();
  std::vector<T> workspace(RpcaLanes<T, L>::workspace(M, N));
  RpcaLanes<T, L> s;
  s.bind(workspace.data(), M, N);
  int64_t lane_matrix[L];
  int64_t next = begin;
  auto fill = [&](int l) {
    const int64_t i = next < end ? next++ : -1;
    lane_matrix[l] = i;
    rpca_load_lane<T, L>(
        s, l, M, N, [&](int64_t r, int64_t c) { return x[p.g.in_offset(i, r, c)]; },
        [&](int64_t r, int64_t c) { return init[p.init_g.in_offset(i, r, c)]; }, init != nullptr,
        i < 0 ? T(1) : mu0[i], i < 0);
  };
  for (int l = 0; l < L; ++l) fill(l);
  bool done[L], converged[L];
  for (;;) {
    bool busy = false;
    for (int l = 0; l < L; ++l) busy = busy || lane_matrix[l] >= 0;
    if (!busy) break;
    rpca_step<T, L>(p.method, s, M, N, lam, p.continuation, tol, p.max_iter, kJacobiMaxSweeps, done, converged);
    for (int l = 0; l < L; ++l) {
      const int64_t i = lane_matrix[l];
      if (i < 0 || !done[l]) continue;
      rpca_store_lane<T, L>(s, l, M, N, [&](int64_t r, int64_t c, T low, T sp) {
        low_rank[p.g.out_offset(i, r, c)] = low;
        sparse[p.g.out_offset(i, r, c)] = sp;
      });
      p.iterations[i] = s.finite[l] ? s.iter[l] : 0;
      p.converged[i] = converged[l] && s.finite[l];
      fill(l);
    }
  }
}

template <typename T>
PGSL_CPU_INLINE void rpca_range_dispatch(const RpcaParams& p, int64_t begin, int64_t end) {
  constexpr int L = kCpuLanes<T>;
  if (end - begin >= L) rpca_range<T, L>(p, begin, end);
  else rpca_range<T, 1>(p, begin, end);
}

// One clone set per type (target_clones takes no templates); the tag picks it.
PGSL_CPU_CLONES void rpca_range_cloned(float, const RpcaParams& p, int64_t begin, int64_t end) {
  rpca_range_dispatch<float>(p, begin, end);
}
PGSL_CPU_CLONES void rpca_range_cloned(double, const RpcaParams& p, int64_t begin, int64_t end) {
  rpca_range_dispatch<double>(p, begin, end);
}

}  // namespace

void small_rpca_cpu(const at::Tensor& x3, const RpcaParams& p) {
  const bool ran = float_switch<void, void>(p.kind, false, [&](auto tag) {
    using T = decltype(tag);
    // at::parallel_for hands each thread one contiguous range (at least a lane group), whose
    // matrices flow through the lanes.
    at::parallel_for(0, p.g.batch, kCpuLanes<T>, [&](int64_t begin, int64_t end) {
      rpca_range_cloned(T{}, p, begin, end);
    });
    return true;
  });
  TORCH_INTERNAL_ASSERT(ran, "small_rpca_cpu: ", x3.scalar_type(), " reached the float32/float64 kernel");
}

TORCH_LIBRARY_IMPL(pgsl_ext, CPU, m) { m.impl("rpca", &rpca_op<&small_svt_cpu, &small_rpca_cpu>); }

}  // namespace pgsl
