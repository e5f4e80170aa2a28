// The element types of the kernels, and the one switch from a runtime dtype to
// a compile-time type (flash-attention's BOOL_SWITCH, for dtypes). The host
// maps at::ScalarType onto ScalarKind (checks.h, scalar_kind()); kernels never
// see ATen types.
#pragma once

#include <type_traits>

namespace pgsl {

enum class ScalarKind : int { Float16 = 0, BFloat16 = 1, Float32 = 2, Float64 = 3 };

// Calls body(T{}) with T the storage type of `kind`: float, double, or the
// caller's 16-bit storage types `Half` and `BFloat` (Half16 / BFloat16 in CUDA
// code, c10::Half / c10::BFloat16 on the CPU); `void` for a kernel that takes
// float32 and float64 only. A kind the kernel does not take returns
// `unsupported` (the host checks reject such a dtype before any kernel runs).
//   return float_switch<Half16, BFloat16>(kind, cudaErrorInvalidValue, [&](auto tag) {
//     using T = decltype(tag);
//     ...
//   });
template <typename Half, typename BFloat, typename R, typename Body>
R float_switch(ScalarKind kind, R unsupported, Body&& body) {
  switch (kind) {
    case ScalarKind::Float16:
      if constexpr (!std::is_void_v<Half>) return body(Half{});
      break;
    case ScalarKind::BFloat16:
      if constexpr (!std::is_void_v<BFloat>) return body(BFloat{});
      break;
    case ScalarKind::Float32: return body(float{});
    case ScalarKind::Float64: return body(double{});
  }
  return unsupported;
}

}  // namespace pgsl
