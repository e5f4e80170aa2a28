// soft_threshold: the proximal operator of tau * ||x||_1.
//   y = sign(x) * max(|x| - tau, 0)
// Contract: tau >= 0 (checked by the host entry points). NaN in x propagates
// to y; +-inf maps to +-inf. Computed in the "opmath" type (float for
// float16/bfloat16), so CPU and CUDA round identically.
#pragma once

#include <cmath>

#include "pgsl/macros.h"

namespace pgsl {

template <typename T>
PGSL_HOST_DEVICE T soft_threshold_value(T x, T tau) {
  // |x| - tau < 0 is false for NaN, so NaN survives; copysign restores the sign
  // and keeps the result branch-free (the contiguous CPU loop vectorises).
  T shrunk = std::fabs(x) - tau;
  shrunk = shrunk < T(0) ? T(0) : shrunk;
  return std::copysign(shrunk, x);
}

// d soft_threshold / dx: 1 strictly outside [-tau, tau], else 0.
template <typename T>
PGSL_HOST_DEVICE T soft_threshold_slope(T x, T tau) {
  return std::fabs(x) > tau ? T(1) : T(0);
}

}  // namespace pgsl
