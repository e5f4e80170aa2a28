// Singular value thresholding on the CPU. Small matrices: the one-sided
// Jacobi kernel of pgsl/svd_jacobi.h on groups of L = kCpuLanes<T> matrices at
// once (one per SIMD lane), parallel over groups; a tail of fewer than L
// matrices runs one matrix at a time (L = 1, the instantiation a CUDA thread
// runs). Larger matrices and rank=k go through svt.cpp.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "../svt.h"
#include "simd_clones.h"
#include "pgsl/svd_jacobi.h"

namespace pgsl {
namespace {

// Matrices [first, first + L) as one lane group.
template <typename T, int L>
PGSL_CPU_INLINE void svt_lane_group(const SvtParams& p, int64_t first, T* A, T* V) {
  const T* x = static_cast<const T*>(p.x);
  T* out = static_cast<T*>(p.out);
  auto load = [&](int l, int64_t r, int64_t c) { return x[p.g.in_offset(first + l, r, c)]; };
  auto store = [&](int l, int64_t r, int64_t c, T v) { out[p.g.out_offset(first + l, r, c)] = v; };
  svt_group<T, L>(p.g.rows(), p.g.cols(), load, store, static_cast<const T*>(p.tau) + first, A, V,
                  p.kept + first, kJacobiMaxSweeps);
}

template <typename T>
PGSL_CPU_INLINE void svt_range(const SvtParams& p, int64_t begin, int64_t end) {
  constexpr int L = kCpuLanes<T>;
  std::vector<T> A(p.g.rows() * p.g.cols() * L), V(p.g.cols() * p.g.cols() * L);
  int64_t i = begin;
  for (; i + L <= end; i += L) svt_lane_group<T, L>(p, i, A.data(), V.data());
  for (; i < end; ++i) svt_lane_group<T, 1>(p, i, A.data(), V.data());
}

// One clone set per type (target_clones takes no templates); the tag picks it.
PGSL_CPU_CLONES void svt_range_cloned(float, const SvtParams& p, int64_t begin, int64_t end) {
  svt_range<float>(p, begin, end);
}
PGSL_CPU_CLONES void svt_range_cloned(double, const SvtParams& p, int64_t begin, int64_t end) {
  svt_range<double>(p, begin, end);
}

}  // namespace

void small_svt_cpu(const at::Tensor& x3, const SvtParams& p) {
  const bool ran = float_switch<void, void>(p.kind, false, [&](auto tag) {
    using T = decltype(tag);
    constexpr int64_t L = kCpuLanes<T>;
    const int64_t groups = (p.g.batch + L - 1) / L;
    // Tasks of roughly 1e5 multiply-adds per sweep (a lane group costs ~ M N^2 L per sweep).
    const int64_t group_cost = p.g.rows() * p.g.cols() * p.g.cols() * L;
    const int64_t grain = std::max<int64_t>(1, 100000 / std::max<int64_t>(1, group_cost));
    at::parallel_for(0, groups, grain, [&](int64_t g0, int64_t g1) {
      svt_range_cloned(T{}, p, g0 * L, std::min(g1 * L, p.g.batch));
    });
    return true;
  });
  TORCH_INTERNAL_ASSERT(ran, "small_svt_cpu: ", x3.scalar_type(), " reached the float32/float64 kernel");
}

TORCH_LIBRARY_IMPL(pgsl_ext, CPU, m) {
  m.impl("svt", &svt_op<&small_svt_cpu>);
  m.impl("svt.Tensor", &svt_tensor_op<&small_svt_cpu>);
}

}  // namespace pgsl
