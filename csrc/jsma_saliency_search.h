// jsma_saliency_search's host API, shared by the CPU and CUDA entry points:
// the argument checks and the packing of JsmaSearchParams (pgsl/jsma.h).
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include "checks.h"
#include "pgsl/jsma.h"

namespace pgsl {

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
