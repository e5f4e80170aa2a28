// Singular value thresholding on the CPU. Small matrices: the one-sided
// Jacobi kernel of pgsl/svd_jacobi.h on groups of L matrices at once (one per
// SIMD lane; L = 16 float / 8 double), parallel over groups; a tail of fewer
// than L matrices runs one matrix at a time (L = 1, the instantiation a CUDA
// thread runs). Larger matrices and rank=k go through svt.cpp.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "../svt.h"
#include "simd_clones.h"
#include "pgsl/svd_jacobi.h"

namespace pgsl {
namespace {

template <typename T>
struct SmallBatch {
  SmallBatchGeometry g;
  const T* x;
  const T* tau;  // (B,)
  T* out;        // (B, m, n) contiguous
  int* kept;     // (B,)
};

// Matrices [first, first + L) as one lane group.
template <typename T, int L>
PGSL_CPU_INLINE void svt_lane_group(const SmallBatch<T>& b, int64_t first, T* A, T* V) {
  auto load = [&](int l, int64_t r, int64_t c) { return b.x[b.g.in_offset(first + l, r, c)]; };
  auto store = [&](int l, int64_t r, int64_t c, T v) { b.out[b.g.out_offset(first + l, r, c)] = v; };
  svt_group<T, L>(b.g.rows(), b.g.cols(), load, store, b.tau + first, A, V, b.kept + first,
                  kJacobiMaxSweeps);
}

template <typename T, int L>
PGSL_CPU_INLINE void svt_range(const SmallBatch<T>& b, int64_t begin, int64_t end) {
  std::vector<T> A(b.g.rows() * b.g.cols() * L), V(b.g.cols() * b.g.cols() * L);
  int64_t i = begin;
  for (; i + L <= end; i += L) svt_lane_group<T, L>(b, i, A.data(), V.data());
  for (; i < end; ++i) svt_lane_group<T, 1>(b, i, A.data(), V.data());
}

PGSL_CPU_CLONES void svt_range_f32(const SmallBatch<float>& b, int64_t begin, int64_t end) {
  svt_range<float, 16>(b, begin, end);
}
PGSL_CPU_CLONES void svt_range_f64(const SmallBatch<double>& b, int64_t begin, int64_t end) {
  svt_range<double, 8>(b, begin, end);
}

template <typename T>
void small_svt_typed(const at::Tensor& x3, const at::Tensor& tau, at::Tensor& out, at::Tensor& kept) {
  SmallBatch<T> b{small_batch_geometry(x3), x3.const_data_ptr<T>(), tau.const_data_ptr<T>(),
                  out.mutable_data_ptr<T>(), kept.mutable_data_ptr<int>()};
  constexpr int64_t L = std::is_same_v<T, float> ? 16 : 8;
  const int64_t groups = (x3.size(0) + L - 1) / L;
  // A task of a few lane groups: each group is tens of microseconds of work.
  at::parallel_for(0, groups, 4, [&](int64_t g0, int64_t g1) {
    const int64_t begin = g0 * L, end = std::min(g1 * L, x3.size(0));
    if constexpr (std::is_same_v<T, float>) svt_range_f32(b, begin, end);
    else svt_range_f64(b, begin, end);
  });
}

}  // namespace

void small_svt_cpu(const at::Tensor& x3, const at::Tensor& tau, at::Tensor& out, at::Tensor& kept) {
  if (x3.scalar_type() == at::kFloat) small_svt_typed<float>(x3, tau, out, kept);
  else small_svt_typed<double>(x3, tau, out, kept);
}

TORCH_LIBRARY_IMPL(pgsl_ext, CPU, m) {
  m.impl("svt", &svt_op<&small_svt_cpu>);
  m.impl("svt.Tensor", &svt_tensor_op<&small_svt_cpu>);
}

}  // namespace pgsl
