// Host-side argument checks and parameter packing shared by the CPU and CUDA
// entry points. Every message names the argument, what it was, and what was
// expected.
#pragma once

#include <ATen/ATen.h>
#include <ATen/TensorIterator.h>
#include <c10/util/Exception.h>
#include <c10/util/safe_numerics.h>

#include <cmath>
#include <limits>
#include <string>

#include "pgsl/jsma.h"
#include "pgsl/macros.h"
#include "pgsl/pixel_unshuffle.h"

namespace pgsl {

inline bool is_supported_float(at::ScalarType t) {
  return t == at::kHalf || t == at::kBFloat16 || t == at::kFloat || t == at::kDouble;
}

inline ScalarKind scalar_kind(at::ScalarType t) {
  switch (t) {
    case at::kHalf: return ScalarKind::Float16;
    case at::kBFloat16: return ScalarKind::BFloat16;
    case at::kFloat: return ScalarKind::Float32;
    case at::kDouble: return ScalarKind::Float64;
    default: TORCH_CHECK_TYPE(false, "pgsl_ext: unsupported dtype ", t);
  }
}

inline void check_float_tensor(const at::Tensor& t, const char* op, const char* arg) {
  TORCH_CHECK_TYPE(is_supported_float(t.scalar_type()), op, ": expected `", arg,
                   "` to be float16, bfloat16, float32 or float64, but got ", t.scalar_type());
}

inline void check_same_device(const at::Tensor& a, const char* arg_a, const at::Tensor& b,
                              const char* arg_b, const char* op) {
  TORCH_CHECK(a.device() == b.device(), op, ": expected `", arg_b, "` on the device of `", arg_a,
              "` (", a.device(), "), but got ", b.device());
}

inline void check_tau_scalar(double tau, const char* op) {
  TORCH_CHECK_VALUE(tau >= 0.0, op, ": expected `tau` >= 0 (and not NaN), but got ", tau);
}

// A double argument stored in a float32 or float64 tensor: beyond the largest
// finite value of the dtype it becomes +-inf, as rounding would give (at::full
// and static_cast would raise or be undefined instead).
inline double saturate_to(double v, at::ScalarType dtype) {
  const double largest = dtype == at::kFloat ? std::numeric_limits<float>::max()
                                             : std::numeric_limits<double>::max();
  return std::fabs(v) > largest ? std::copysign(std::numeric_limits<double>::infinity(), v) : v;
}

// Whether a tensor of shape `from` broadcasts *to* `to` (never expanding `to`).
inline bool broadcasts_to(at::IntArrayRef from, at::IntArrayRef to) {
  if (from.size() > to.size()) return false;
  for (size_t d = 1; d <= from.size(); ++d)
    if (from[from.size() - d] != 1 && from[from.size() - d] != to[to.size() - d]) return false;
  return true;
}

// A tensor tau: floating point, on x's device, no negative or NaN entry. The
// check is one small reduction (a device sync on CUDA); tau holds one value
// per matrix at most, so it is cheap next to the op itself.
inline void check_tau_entries(const at::Tensor& x, const at::Tensor& tau, const char* op) {
  TORCH_CHECK_TYPE(at::isFloatingType(tau.scalar_type()), op,
                   ": expected `tau` to be a floating-point tensor, but got ", tau.scalar_type());
  check_same_device(x, "x", tau, "tau", op);
  if (tau.numel() > 0) {
    const bool bad = at::logical_not(tau.ge(0)).any().item<bool>();
    TORCH_CHECK_VALUE(!bad, op, ": expected every entry of `tau` >= 0 (and not NaN), but got min ",
                      tau.min().item<double>());
  }
}

// Validates a tensor tau against x and returns it in x's dtype (not expanded:
// the caller's iterator broadcasts it). A tau tensor must broadcast *to* x.
inline at::Tensor check_tau_tensor(const at::Tensor& x, const at::Tensor& tau, const char* op) {
  TORCH_CHECK_VALUE(broadcasts_to(tau.sizes(), x.sizes()), op,
                    ": expected `tau` to broadcast to the shape of `x` ", x.sizes(),
                    ", but got shape ", tau.sizes());
  check_tau_entries(x, tau, op);
  return tau.scalar_type() == x.scalar_type() ? tau : tau.to(x.scalar_type());
}

// soft_threshold's elementwise geometry, shared by the CPU loop and the CUDA
// launcher: out (allocated like x), x and, for the tensor overload, tau.
inline at::TensorIterator soft_threshold_iterator(const at::Tensor& out, const at::Tensor& x,
                                                  const at::Tensor* tau) {
  at::TensorIteratorConfig config;
  config.set_check_mem_overlap(true).add_output(out).add_const_input(x);
  if (tau != nullptr) config.add_const_input(*tau);
  return config.resize_outputs(false).check_all_same_dtype(true).build();
}

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

// Checks jsma_saliency_search's inputs and packs their geometry (strides in
// elements; any strides are accepted).
inline JsmaSearchParams jsma_search_params(const at::Tensor& grad_class,
                                           const at::Tensor& grad_others,
                                           const at::Tensor& domain, bool targeted,
                                           const char* op) {
  TORCH_CHECK_VALUE(grad_class.dim() == 2, op, ": expected `grad_class` of shape (B, N), but got ",
                    grad_class.dim(), "-d shape ", grad_class.sizes());
  TORCH_CHECK_VALUE(grad_others.sizes() == grad_class.sizes(), op,
                    ": expected `grad_others` of the shape of `grad_class` ", grad_class.sizes(),
                    ", but got ", grad_others.sizes());
  TORCH_CHECK_VALUE(domain.sizes() == grad_class.sizes(), op,
                    ": expected `domain` of the shape of `grad_class` ", grad_class.sizes(),
                    ", but got ", domain.sizes());
  TORCH_CHECK_TYPE(grad_class.scalar_type() == at::kFloat || grad_class.scalar_type() == at::kDouble,
                   op, ": expected `grad_class` to be float32 or float64, but got ",
                   grad_class.scalar_type());
  TORCH_CHECK_TYPE(grad_others.scalar_type() == grad_class.scalar_type(), op,
                   ": expected `grad_others` to have the dtype of `grad_class` (",
                   grad_class.scalar_type(), "), but got ", grad_others.scalar_type());
  TORCH_CHECK_TYPE(domain.scalar_type() == at::kBool, op,
                   ": expected `domain` to be a bool tensor, but got ", domain.scalar_type());
  check_same_device(grad_class, "grad_class", grad_others, "grad_others", op);
  check_same_device(grad_class, "grad_class", domain, "domain", op);
  JsmaSearchParams p{};
  p.batch = grad_class.size(0);
  p.n = grad_class.size(1);
  for (int d = 0; d < 2; ++d) {
    p.gc_stride[d] = grad_class.stride(d);
    p.go_stride[d] = grad_others.stride(d);
    p.dom_stride[d] = domain.stride(d);
  }
  p.targeted = targeted;
  return p;
}

}  // namespace pgsl
