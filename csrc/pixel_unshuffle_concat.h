// pixel_unshuffle_concat's host API, shared by the CPU and CUDA entry points:
// the argument checks and the packing of UnshuffleParams (pgsl/pixel_unshuffle.h),
// for the forward and for the backward.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <c10/util/safe_numerics.h>

#include <limits>
#include <string>
#include <vector>

#include "checks.h"
#include "pgsl/pixel_unshuffle.h"

namespace pgsl {

inline BlockReduce parse_reduce(c10::string_view reduce, const char* op) {
  if (reduce == "max") return BlockReduce::Max;
  if (reduce == "mean") return BlockReduce::Mean;
  TORCH_CHECK_VALUE(false, op, ": expected `reduce` to be \"max\" or \"mean\", but got \"",
                    std::string(reduce), "\"");
}

// Checks pixel_unshuffle_concat's inputs and packs their geometry.
inline UnshuffleParams unshuffle_params(const at::Tensor& x, const at::Tensor& saliency,
                                        int64_t factor, c10::string_view reduce, const char* op) {
  TORCH_CHECK_VALUE(x.dim() == 4, op, ": expected `x` of shape (B, C, H, W), but got ", x.dim(),
                    "-d shape ", x.sizes());
  TORCH_CHECK_VALUE(saliency.dim() == 4 && saliency.size(1) == 1, op,
                    ": expected `saliency` of shape (B, 1, H, W), but got ", saliency.sizes());
  TORCH_CHECK_VALUE(factor >= 1, op, ": expected `factor` >= 1, but got ", factor);
  check_float_tensor(x, op, "x");
  TORCH_CHECK_TYPE(saliency.scalar_type() == x.scalar_type(), op,
                   ": expected `saliency` to have the dtype of `x` (", x.scalar_type(),
                   "), but got ", saliency.scalar_type());
  check_same_device(x, "x", saliency, "saliency", op);
  TORCH_CHECK_VALUE(saliency.size(0) == x.size(0), op, ": expected `saliency` batch size ",
                    x.size(0), " (that of `x`), but got ", saliency.size(0));
  TORCH_CHECK_VALUE(saliency.size(2) == x.size(2) && saliency.size(3) == x.size(3), op,
                    ": expected `saliency` spatial size (", x.size(2), ", ", x.size(3),
                    ") (that of `x`), but got (", saliency.size(2), ", ", saliency.size(3), ")");
  TORCH_CHECK_VALUE(x.size(2) % factor == 0 && x.size(3) % factor == 0, op,
                    ": expected the height and width of `x` to be divisible by `factor` = ",
                    factor, ", but got (", x.size(2), ", ", x.size(3), ")");
  int64_t factor_squared = 0, unshuffled = 0;
  TORCH_CHECK_VALUE(!c10::mul_overflows(factor, factor, &factor_squared) &&
                        !c10::mul_overflows(x.size(1), factor_squared, &unshuffled) &&
                        unshuffled < std::numeric_limits<int64_t>::max(),
                    op, ": expected C * factor**2 + 1 output channels to fit in int64, but got C = ",
                    x.size(1), ", factor = ", factor);
  UnshuffleParams p{};
  p.batch = x.size(0);
  p.channels = x.size(1);
  p.height = x.size(2);
  p.width = x.size(3);
  p.factor = factor;
  for (int d = 0; d < 4; ++d) p.x_stride[d] = x.stride(d);
  p.s_stride[0] = saliency.stride(0);
  p.s_stride[1] = saliency.stride(2);
  p.s_stride[2] = saliency.stride(3);
  p.reduce = parse_reduce(reduce, op);
  return p;
}

// Checks the backward's gradient against the forward geometry.
inline void check_unshuffle_grad(const at::Tensor& grad_out, const UnshuffleParams& p,
                                 const at::Tensor& saliency, const char* op) {
  const std::vector<int64_t> expected{p.batch, p.out_channels(), p.out_height(), p.out_width()};
  TORCH_CHECK_VALUE(grad_out.sizes() == at::IntArrayRef(expected), op,
                    ": expected `grad_out` of shape ", at::IntArrayRef(expected), ", but got ",
                    grad_out.sizes());
  TORCH_CHECK_TYPE(grad_out.scalar_type() == saliency.scalar_type(), op,
                   ": expected `grad_out` to have the dtype of `saliency` (",
                   saliency.scalar_type(), "), but got ", grad_out.scalar_type());
  check_same_device(saliency, "saliency", grad_out, "grad_out", op);
}

// Checks the backward's inputs and allocates its outputs (both contiguous);
// `grad` is grad_out made contiguous. Call under the device guard.
struct UnshuffleBackward {
  UnshuffleParams params;
  at::Tensor grad, grad_x, grad_s;
};

inline UnshuffleBackward prepare_unshuffle_backward(const at::Tensor& grad_out,
                                                    const at::Tensor& saliency, int64_t channels,
                                                    int64_t factor, c10::string_view reduce,
                                                    const char* op) {
  TORCH_CHECK_VALUE(channels >= 0, op, ": expected `channels` >= 0, but got ", channels);
  TORCH_CHECK_VALUE(saliency.dim() == 4, op,
                    ": expected `saliency` of shape (B, 1, H, W), but got ", saliency.sizes());
  UnshuffleBackward r;
  r.grad_x = at::empty({saliency.size(0), channels, saliency.size(2), saliency.size(3)},
                       saliency.options());
  r.params = unshuffle_params(r.grad_x, saliency, factor, reduce, op);
  check_unshuffle_grad(grad_out, r.params, saliency, op);
  r.grad_s = at::empty_like(saliency, at::MemoryFormat::Contiguous);
  r.grad = grad_out.contiguous();
  return r;
}

}  // namespace pgsl
