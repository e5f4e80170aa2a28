// soft_threshold's host API, shared by the CPU and CUDA entry points: the
// elementwise geometry (TensorIterator) and its packing into
// ElementwiseParams for the CUDA kernel. The checks are the generic ones
// (checks.h: float dtype, tau).
#pragma once

#include <ATen/ATen.h>
#include <ATen/TensorIterator.h>

#include "checks.h"
#include "pgsl/elementwise_params.h"

namespace pgsl {

// soft_threshold's elementwise geometry, shared by the CPU loop and the CUDA
// launcher: out (allocated like x), x and, for the tensor overload, tau.
inline at::TensorIterator soft_threshold_iterator(const at::Tensor& out, const at::Tensor& x,
                                                  const at::Tensor* tau) {
  at::TensorIteratorConfig config;
  config.set_check_mem_overlap(true).add_output(out).add_const_input(x);
  if (tau != nullptr) config.add_const_input(*tau);
  return config.resize_outputs(false).check_all_same_dtype(true).build();
}

// The iterator's geometry for the CUDA kernel; the caller checks
// iter.ndim() <= kMaxDims first (more dims: run on a contiguous copy).
inline ElementwiseParams elementwise_params(const at::TensorIterator& iter, const at::Tensor& out) {
  ElementwiseParams p{};
  p.ndim = static_cast<int>(iter.ndim());
  p.numel = iter.numel();
  p.index32 = iter.can_use_32bit_indexing();
  const int64_t elem = out.element_size();
  for (int d = 0; d < p.ndim; ++d) {
    p.sizes[d] = iter.shape()[d];
    for (int arg = 0; arg < iter.ntensors(); ++arg) p.strides[arg][d] = iter.strides(arg)[d] / elem;
  }
  p.contiguous = out.is_non_overlapping_and_dense() && iter.is_contiguous();
  return p;
}

}  // namespace pgsl
