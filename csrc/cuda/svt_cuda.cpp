// svt's CUDA entry points: the small-matrix kernel (svt_kernel.cu) on the
// current stream under a device guard; everything else is svt.cpp on ATen's
// cuBLAS / cuSOLVER.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cstdlib>

#include "../svt.h"
#include "launchers.h"

namespace pgsl {

SmallMatrixDesign small_matrix_design() {
  static const SmallMatrixDesign design = [] {
    const char* text = std::getenv(kSmallMatrixDesignVariable);
    SmallMatrixDesign parsed = SmallMatrixDesign::kGroup;
    TORCH_CHECK(text == nullptr || parse_small_matrix_design(text, parsed), kSmallMatrixDesignVariable, " is '",
                text, "'; expected 'group' (one warp per matrix, the default) or 'thread' (one thread per matrix)");
    return parsed;
  }();
  return design;
}

void small_svt_cuda(const at::Tensor& x3, const SvtParams& p) {
  const c10::cuda::CUDAGuard guard(x3.device());
  const SmallMatrixDesign design = small_matrix_design();
  at::Tensor workspace = at::empty({small_svt_workspace(p, design)}, x3.options());
  C10_CUDA_CHECK(launch_small_svt(p, design, workspace.data_ptr(), c10::cuda::getCurrentCUDAStream()));
}

TORCH_LIBRARY_IMPL(pgsl_ext, CUDA, m) {
  m.impl("svt", &svt_op<&small_svt_cuda>);
  m.impl("svt.Tensor", &svt_tensor_op<&small_svt_cuda>);
}

}  // namespace pgsl
