// soft_threshold on the CPU: one TensorIterator pass (any strides, broadcast
// tau), parallel over chunks, with branch-free contiguous inner loops that the
// compiler vectorises. The element math is pgsl::soft_threshold_value.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/TensorIterator.h>
#include <torch/library.h>

#include "../soft_threshold.h"
#include "simd_clones.h"
#include "pgsl/shrinkage.h"

namespace pgsl {
namespace {

constexpr const char* kOp = "pgsl_ext.soft_threshold";

// Contiguous runs get their own loops so that the compiler sees unit strides
// and a loop-invariant tau. The target_clones pick AVX-512/AVX2 code at load
// time where the CPU has it, like ATen's own dispatch.
template <typename T>
PGSL_CPU_INLINE void shrink_run(T* out, const T* x, T tau, int64_t n) {
  for (int64_t k = 0; k < n; ++k) out[k] = soft_threshold_value<T>(x[k], tau);
}
// One clone set per type (target_clones takes no templates), picked by overloading.
PGSL_CPU_CLONES void contiguous_run(float* out, const float* x, float tau, int64_t n) {
  shrink_run<float>(out, x, tau, n);
}
PGSL_CPU_CLONES void contiguous_run(double* out, const double* x, double tau, int64_t n) {
  shrink_run<double>(out, x, tau, n);
}
// float16 / bfloat16: computed in float, one element at a time.
template <typename T>
inline void contiguous_run(T* out, const T* x, at::opmath_type<T> tau, int64_t n) {
  using Acc = at::opmath_type<T>;
  for (int64_t k = 0; k < n; ++k)
    out[k] = static_cast<T>(soft_threshold_value<Acc>(static_cast<Acc>(x[k]), tau));
}

// !tau_is_tensor: the scalar overload (tau_scalar); otherwise tau is the iterator's third operand.
template <typename T>
void run(at::TensorIterator& iter, at::opmath_type<T> tau_scalar, bool tau_is_tensor) {
  using Acc = at::opmath_type<T>;
  const int ntensors = iter.ntensors();
  constexpr int64_t sz = sizeof(T);
  auto loop = [&](char** data, const int64_t* strides, int64_t n, int64_t m) {
    for (int64_t outer = 0; outer < m; ++outer) {
      char* out = data[0] + outer * strides[ntensors + 0];
      const char* x = data[1] + outer * strides[ntensors + 1];
      const char* tau = tau_is_tensor ? data[2] + outer * strides[ntensors + 2] : nullptr;
      const int64_t so = strides[0], sx = strides[1], st = tau_is_tensor ? strides[2] : 0;
      if (so == sz && sx == sz && st == 0) {
        const Acc t = tau_is_tensor ? static_cast<Acc>(*reinterpret_cast<const T*>(tau)) : tau_scalar;
        contiguous_run(reinterpret_cast<T*>(out), reinterpret_cast<const T*>(x), t, n);
        continue;
      }
      for (int64_t k = 0; k < n; ++k) {
        const Acc t = tau_is_tensor ? static_cast<Acc>(*reinterpret_cast<const T*>(tau + k * st))
                                    : tau_scalar;
        const Acc v = static_cast<Acc>(*reinterpret_cast<const T*>(x + k * sx));
        *reinterpret_cast<T*>(out + k * so) = static_cast<T>(soft_threshold_value<Acc>(v, t));
      }
    }
  };
  iter.for_each(loop);
}

at::Tensor soft_threshold_cpu(const at::Tensor& x, double tau) {
  check_float_tensor(x, kOp, "x");
  check_tau_scalar(tau, kOp);
  at::Tensor out = at::empty_like(x);
  auto iter = soft_threshold_iterator(out, x, nullptr);
  const bool ran = float_switch<at::Half, at::BFloat16>(scalar_kind(x.scalar_type()), false, [&](auto tag) {
    using T = decltype(tag);
    run<T>(iter, static_cast<at::opmath_type<T>>(tau), false);
    return true;
  });
  TORCH_INTERNAL_ASSERT(ran);
  return out;
}

at::Tensor soft_threshold_tensor_cpu(const at::Tensor& x, const at::Tensor& tau) {
  check_float_tensor(x, kOp, "x");
  const at::Tensor tau_cast = check_tau_tensor(x, tau, kOp);
  at::Tensor out = at::empty_like(x);
  auto iter = soft_threshold_iterator(out, x, &tau_cast);
  const bool ran = float_switch<at::Half, at::BFloat16>(scalar_kind(x.scalar_type()), false, [&](auto tag) {
    run<decltype(tag)>(iter, 0, true);
    return true;
  });
  TORCH_INTERNAL_ASSERT(ran);
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(pgsl_ext, CPU, m) {
  m.impl("soft_threshold", &soft_threshold_cpu);
  m.impl("soft_threshold.Tensor", &soft_threshold_tensor_cpu);
}

}  // namespace pgsl
