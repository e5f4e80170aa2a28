// RPCA on the CPU. Small matrices: the fused loop of pgsl/rpca.h on lane
// groups of L matrices (one per SIMD lane), parallel over ranges of matrices;
// when a lane's matrix finishes, its result is written and the lane is refilled
// with the next matrix of the range, so converged matrices stop costing work.
// Ranges shorter than a lane group run one matrix at a time (L = 1, the
// instantiation a CUDA thread runs). Larger matrices and rank=k: rpca.cpp.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "../svt.h"
#include "simd_clones.h"
#include "pgsl/rpca.h"

namespace pgsl {

namespace {

template <typename T>
struct RpcaBatch {
  SmallBatchGeometry g, init_g;
  const T* x;
  const T* init;  // the starting S, or null
  const T* mu0;
  T *low_rank, *sparse;  // (B, m, n) contiguous
  int64_t* iterations;
  bool* converged;
  T lam, tol;
  int64_t max_iter;
  bool continuation;
  RpcaMethod method;
};

template <typename T, int L>
PGSL_CPU_INLINE void rpca_range(const RpcaBatch<T>& b, int64_t begin, int64_t end) {
  const int64_t M = b.g.rows(), N = b.g.cols();
  std::vector<T> workspace(RpcaLanes<T, L>::workspace(M, N));
  RpcaLanes<T, L> s;
  s.bind(workspace.data(), M, N);
  int64_t lane_matrix[L];
  int64_t next = begin;
  auto fill = [&](int l) {
    const int64_t i = next < end ? next++ : -1;
    lane_matrix[l] = i;
    rpca_load_lane<T, L>(
        s, l, M, N, [&](int64_t r, int64_t c) { return b.x[b.g.in_offset(i, r, c)]; },
        [&](int64_t r, int64_t c) { return b.init[b.init_g.in_offset(i, r, c)]; }, b.init != nullptr,
        i < 0 ? T(1) : b.mu0[i], i < 0);
  };
  for (int l = 0; l < L; ++l) fill(l);
  bool done[L], converged[L];
  for (;;) {
    bool busy = false;
    for (int l = 0; l < L; ++l) busy = busy || lane_matrix[l] >= 0;
    if (!busy) break;
    rpca_step<T, L>(b.method, s, M, N, b.lam, b.continuation, b.tol, b.max_iter, kJacobiMaxSweeps, done, converged);
    for (int l = 0; l < L; ++l) {
      const int64_t i = lane_matrix[l];
      if (i < 0 || !done[l]) continue;
      rpca_store_lane<T, L>(s, l, M, N, [&](int64_t r, int64_t c, T low, T sparse) {
        b.low_rank[b.g.out_offset(i, r, c)] = low;
        b.sparse[b.g.out_offset(i, r, c)] = sparse;
      });
      b.iterations[i] = s.finite[l] ? s.iter[l] : 0;
      b.converged[i] = converged[l] && s.finite[l];
      fill(l);
    }
  }
}

template <typename T, int L>
PGSL_CPU_INLINE void rpca_range_dispatch(const RpcaBatch<T>& b, int64_t begin, int64_t end) {
  if (end - begin >= L) rpca_range<T, L>(b, begin, end);
  else rpca_range<T, 1>(b, begin, end);
}

PGSL_CPU_CLONES void rpca_range_f32(const RpcaBatch<float>& b, int64_t begin, int64_t end) {
  rpca_range_dispatch<float, 16>(b, begin, end);
}
PGSL_CPU_CLONES void rpca_range_f64(const RpcaBatch<double>& b, int64_t begin, int64_t end) {
  rpca_range_dispatch<double, 8>(b, begin, end);
}

template <typename T>
void small_rpca_typed(const at::Tensor& x3, const std::optional<at::Tensor>& init3, const at::Tensor& mu0,
                      const RpcaOptions& o, at::Tensor& low_rank, at::Tensor& sparse,
                      at::Tensor& iterations, at::Tensor& converged) {
  const at::Tensor mu = mu0.to(x3.scalar_type()).contiguous();
  const SmallBatchGeometry g = small_batch_geometry(x3);
  RpcaBatch<T> b{g, init3 ? small_batch_geometry(*init3) : g, x3.const_data_ptr<T>(),
                 init3 ? init3->const_data_ptr<T>() : nullptr, mu.const_data_ptr<T>(),
                 low_rank.mutable_data_ptr<T>(),
                 sparse.mutable_data_ptr<T>(), iterations.mutable_data_ptr<int64_t>(),
                 converged.mutable_data_ptr<bool>(), static_cast<T>(o.lam), static_cast<T>(o.tol),
                 o.max_iter, !o.mu.has_value(), o.method};
  constexpr int64_t L = std::is_same_v<T, float> ? 16 : 8;
  // at::parallel_for hands each thread one contiguous range (at least a lane group), whose
  // matrices flow through the lanes.
  at::parallel_for(0, x3.size(0), L, [&](int64_t begin, int64_t end) {
    if constexpr (std::is_same_v<T, float>) rpca_range_f32(b, begin, end);
    else rpca_range_f64(b, begin, end);
  });
}

}  // namespace

void small_rpca_cpu(const at::Tensor& x3, const std::optional<at::Tensor>& init3, const at::Tensor& mu0,
                    const RpcaOptions& o, at::Tensor& low_rank, at::Tensor& sparse,
                    at::Tensor& iterations, at::Tensor& converged) {
  if (x3.scalar_type() == at::kFloat)
    small_rpca_typed<float>(x3, init3, mu0, o, low_rank, sparse, iterations, converged);
  else
    small_rpca_typed<double>(x3, init3, mu0, o, low_rank, sparse, iterations, converged);
}

TORCH_LIBRARY_IMPL(pgsl_ext, CPU, m) { m.impl("rpca", &rpca_op<&small_svt_cpu, &small_rpca_cpu>); }

}  // namespace pgsl
