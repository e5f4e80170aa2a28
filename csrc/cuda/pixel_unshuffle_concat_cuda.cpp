// pixel_unshuffle_concat CUDA entry points: checks, device guard, current
// stream, then the launchers in pixel_unshuffle_concat_kernel.cu.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../pixel_unshuffle_concat.h"
#include "launchers.h"

namespace pgsl {
namespace {

constexpr const char* kOp = "pgsl_ext.pixel_unshuffle_concat";
constexpr const char* kBackwardOp = "pgsl_ext.pixel_unshuffle_concat_backward";

at::Tensor pixel_unshuffle_concat_cuda(const at::Tensor& x, const at::Tensor& saliency,
                                       int64_t factor, c10::string_view reduce) {
  const UnshuffleParams p = unshuffle_params(x, saliency, factor, reduce, kOp);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor out = at::empty({p.batch, p.out_channels(), p.out_height(), p.out_width()}, x.options());
  C10_CUDA_CHECK(launch_pixel_unshuffle_concat(scalar_kind(x.scalar_type()), p, x.const_data_ptr(),
                                               saliency.const_data_ptr(), out.data_ptr(),
                                               c10::cuda::getCurrentCUDAStream()));
  return out;
}

std::tuple<at::Tensor, at::Tensor> pixel_unshuffle_concat_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& saliency, int64_t channels, int64_t factor,
    c10::string_view reduce) {
  const c10::cuda::CUDAGuard guard(saliency.device());
  const UnshuffleBackward r =
      prepare_unshuffle_backward(grad_out, saliency, channels, factor, reduce, kBackwardOp);
  C10_CUDA_CHECK(launch_pixel_unshuffle_concat_backward(
      scalar_kind(r.grad.scalar_type()), r.params, r.grad.const_data_ptr(),
      saliency.const_data_ptr(), r.grad_x.data_ptr(), r.grad_s.data_ptr(),
      c10::cuda::getCurrentCUDAStream()));
  return {r.grad_x, r.grad_s};
}

}  // namespace

TORCH_LIBRARY_IMPL(pgsl_ext, CUDA, m) {
  m.impl("pixel_unshuffle_concat", &pixel_unshuffle_concat_cuda);
  m.impl("pixel_unshuffle_concat_backward", &pixel_unshuffle_concat_backward_cuda);
}

}  // namespace pgsl
