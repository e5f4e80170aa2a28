// soft_threshold CUDA entry points: checks, device guard, current stream,
// TensorIterator geometry, then the launcher in soft_threshold_kernel.cu.
#include <ATen/ATen.h>
#include <ATen/TensorIterator.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../soft_threshold.h"
#include "launchers.h"

namespace pgsl {
namespace {

constexpr const char* kOp = "pgsl_ext.soft_threshold";

at::Tensor run(const at::Tensor& x, const at::Tensor* tau, double tau_value) {
  at::Tensor out = at::empty_like(x);
  auto iter = soft_threshold_iterator(out, x, tau);
  if (iter.ndim() > kMaxDims) {  // rare: more than 8 non-coalescable dims
    return run(x.contiguous(), tau, tau_value).view_as(x).clone(at::MemoryFormat::Preserve);
  }
  const ElementwiseParams p = elementwise_params(iter, out);
  C10_CUDA_CHECK(launch_soft_threshold(scalar_kind(x.scalar_type()), p, out.data_ptr(),
                                       x.const_data_ptr(), tau ? tau->const_data_ptr() : nullptr,
                                       tau_value, c10::cuda::getCurrentCUDAStream()));
  return out;
}

at::Tensor soft_threshold_cuda(const at::Tensor& x, double tau) {
  check_float_tensor(x, kOp, "x");
  check_tau_scalar(tau, kOp);
  const c10::cuda::CUDAGuard guard(x.device());
  return run(x, nullptr, tau);
}

at::Tensor soft_threshold_tensor_cuda(const at::Tensor& x, const at::Tensor& tau) {
  check_float_tensor(x, kOp, "x");
  const c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor tau_cast = check_tau_tensor(x, tau, kOp);
  return run(x, &tau_cast, 0.0);
}

}  // namespace

TORCH_LIBRARY_IMPL(pgsl_ext, CUDA, m) {
  m.impl("soft_threshold", &soft_threshold_cuda);
  m.impl("soft_threshold.Tensor", &soft_threshold_tensor_cuda);
}

}  // namespace pgsl
