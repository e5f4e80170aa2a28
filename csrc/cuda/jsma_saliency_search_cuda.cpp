// jsma_saliency_search CUDA entry point: checks, device guard, current stream,
// the O(B*N) workspace, then the launcher in jsma_saliency_search_kernel.cu.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <tuple>

#include "../jsma_saliency_search.h"
#include "launchers.h"

namespace pgsl {
namespace {

constexpr const char* kOp = "pgsl_ext.jsma_saliency_search";

std::tuple<at::Tensor, at::Tensor, at::Tensor> jsma_saliency_search_cuda(
    const at::Tensor& grad_class, const at::Tensor& grad_others, const at::Tensor& domain,
    bool targeted) {
  const JsmaSearchParams params =
      jsma_search_params(grad_class, grad_others, domain, targeted, kOp);
  const c10::cuda::CUDAGuard guard(grad_class.device());
  const int64_t batch = params.batch;
  at::Tensor p_out = at::full({batch}, -1, grad_class.options().dtype(at::kLong));
  at::Tensor q_out = at::full({batch}, -1, grad_class.options().dtype(at::kLong));
  at::Tensor found = at::zeros({batch}, grad_class.options().dtype(at::kBool));
  if (batch == 0 || params.n < 2) return {p_out, q_out, found};
  // Oriented gradients u, v and the per-feature bounds: 3 x (B, N) of the input dtype.
  at::Tensor workspace = at::empty({3, batch, params.n}, grad_class.options());
  C10_CUDA_CHECK(launch_jsma_saliency_search(
      scalar_kind(grad_class.scalar_type()), params, grad_class.const_data_ptr(),
      grad_others.const_data_ptr(), domain.const_data_ptr<bool>(), workspace.data_ptr(),
      p_out.data_ptr<int64_t>(), q_out.data_ptr<int64_t>(), found.data_ptr<bool>(),
      c10::cuda::getCurrentCUDAStream()));
  return {p_out, q_out, found};
}

}  // namespace

TORCH_LIBRARY_IMPL(pgsl_ext, CUDA, m) {
  m.impl("jsma_saliency_search", &jsma_saliency_search_cuda);
}

}  // namespace pgsl
