// The generic host-side argument checks of every op (dtype, device, tau), and
// the map from at::ScalarType to the kernels' ScalarKind. Each op's own checks
// and params packing live beside it (csrc/<op>.h). Every message names the
// argument, what it was, and what was expected.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <limits>

#include "pgsl/scalar_kind.h"

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

}  // namespace pgsl
