// SVT and RPCA CUDA entry points: the small-matrix kernels (svt_kernel.cu) on
// the current stream under a device guard; everything else is svt.cpp /
// rpca.cpp on ATen's cuBLAS / cuSOLVER.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../checks.h"
#include "../svt.h"
#include "launchers.h"

namespace pgsl {

void small_svt_cuda(const at::Tensor& x3, const at::Tensor& tau, at::Tensor& out, at::Tensor& kept) {
  const c10::cuda::CUDAGuard guard(x3.device());
  const SmallBatchGeometry g = small_batch_geometry(x3);
  at::Tensor workspace = at::empty({small_svt_workspace(g)}, x3.options());
  C10_CUDA_CHECK(launch_small_svt(scalar_kind(x3.scalar_type()), g, x3.const_data_ptr(),
                                  tau.const_data_ptr(), out.data_ptr(), kept.data_ptr<int>(),
                                  workspace.data_ptr(), c10::cuda::getCurrentCUDAStream()));
}

void small_rpca_cuda(const at::Tensor& x3, const std::optional<at::Tensor>& init3,
                     const at::Tensor& mu0, const RpcaOptions& o, at::Tensor& low_rank,
                     at::Tensor& sparse, at::Tensor& iterations, at::Tensor& converged) {
  const c10::cuda::CUDAGuard guard(x3.device());
  const SmallBatchGeometry g = small_batch_geometry(x3);
  const at::Tensor mu = mu0.to(x3.scalar_type()).contiguous();
  at::Tensor workspace = at::empty({small_rpca_workspace(g)}, x3.options());
  const RpcaKernelOptions options{o.lam,
                                  o.tol,
                                  o.max_iter,
                                  !o.mu.has_value(),
                                  o.method,
                                  init3 ? init3->const_data_ptr() : nullptr,
                                  init3 ? small_batch_geometry(*init3) : g};
  C10_CUDA_CHECK(launch_small_rpca(scalar_kind(x3.scalar_type()), g, x3.const_data_ptr(),
                                   mu.const_data_ptr(), options, low_rank.data_ptr(),
                                   sparse.data_ptr(), iterations.data_ptr<int64_t>(),
                                   converged.data_ptr<bool>(), workspace.data_ptr(),
                                   c10::cuda::getCurrentCUDAStream()));
}

TORCH_LIBRARY_IMPL(pgsl_ext, CUDA, m) {
  m.impl("svt", &svt_op<&small_svt_cuda>);
  m.impl("svt.Tensor", &svt_tensor_op<&small_svt_cuda>);
  m.impl("rpca", &rpca_op<&small_svt_cuda, &small_rpca_cuda>);
}

}  // namespace pgsl
