// svt's CUDA entry points: the small-matrix kernel (svt_kernel.cu) on the
// current stream under a device guard; everything else is svt.cpp on ATen's
// cuBLAS / cuSOLVER.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../svt.h"
#include "launchers.h"

namespace pgsl {

void small_svt_cuda(const at::Tensor& x3, const SvtParams& p) {
  const c10::cuda::CUDAGuard guard(x3.device());
  at::Tensor workspace = at::empty({small_svt_workspace(p.g)}, x3.options());
  C10_CUDA_CHECK(launch_small_svt(p, workspace.data_ptr(), c10::cuda::getCurrentCUDAStream()));
}

TORCH_LIBRARY_IMPL(pgsl_ext, CUDA, m) {
  m.impl("svt", &svt_op<&small_svt_cuda>);
  m.impl("svt.Tensor", &svt_tensor_op<&small_svt_cuda>);
}

}  // namespace pgsl
