// rpca's CUDA entry point: the fused small-matrix kernel (rpca_kernel.cu) on
// the current stream under a device guard; everything else is rpca.cpp on
// ATen's cuBLAS / cuSOLVER.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../rpca.h"
#include "launchers.h"

namespace pgsl {

void small_rpca_cuda(const at::Tensor& x3, const RpcaParams& p) {
  const c10::cuda::CUDAGuard guard(x3.device());
  const SmallMatrixDesign design = small_matrix_design();
  at::Tensor workspace = at::empty({small_rpca_workspace(p, design)}, x3.options());
  C10_CUDA_CHECK(launch_small_rpca(p, design, workspace.data_ptr(), c10::cuda::getCurrentCUDAStream()));
}

TORCH_LIBRARY_IMPL(pgsl_ext, CUDA, m) { m.impl("rpca", &rpca_op<&small_svt_cuda, &small_rpca_cuda>); }

}  // namespace pgsl
