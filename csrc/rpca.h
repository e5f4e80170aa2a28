// rpca's host API, shared by the CPU and CUDA registrations: argument checks,
// the packing of RpcaParams, and the choice between the device's fused
// small-matrix kernel and the batched host loop (csrc/rpca.cpp). The device's
// kernels come in as function pointers.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>

#include "pgsl/robust_pca.h"
#include "svt.h"

namespace pgsl {

// The fused small-matrix RPCA kernel of one device: runs p's small-matrix
// batch (min(m, n) <= kJacobiMaxN, at least one matrix) on x3's device; x3 is
// the batch p points into, for the device guard and the workspace.
using SmallRpcaKernel = void (*)(const at::Tensor& x3, const RpcaParams& p);

// Checks the arguments and fills RpcaParams' options.
RpcaParams rpca_params(const at::Tensor& x, std::optional<double> mu, std::optional<double> lam,
                       int64_t max_iter, double tol, std::optional<int64_t> rank,
                       c10::string_view method, const char* op);
void check_rpca_init(const at::Tensor& x, const std::optional<at::Tensor>& init, const char* op);

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> rpca_forward(
    const at::Tensor& x, const std::optional<at::Tensor>& init, RpcaParams params,
    const std::optional<at::Generator>& generator, SmallSvtKernel small_svt,
    SmallRpcaKernel small_rpca);

// The op entry point, one instantiation per device.
template <SmallSvtKernel kSmallSvt, SmallRpcaKernel kSmallRpca>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> rpca_op(
    const at::Tensor& x, const std::optional<at::Tensor>& init, std::optional<double> mu,
    std::optional<double> lam, int64_t max_iter, double tol, std::optional<int64_t> rank,
    c10::string_view method, std::optional<at::Generator> generator) {
  constexpr const char* op = "pgsl_ext.rpca";
  const RpcaParams params = rpca_params(x, mu, lam, max_iter, tol, rank, method, op);
  check_rpca_init(x, init, op);
  return rpca_forward(x, init, params, generator, kSmallSvt, kSmallRpca);
}

// The fused small-matrix kernels: cpu/rpca_cpu.cpp, and cuda/rpca_cuda.cpp when built.
void small_rpca_cpu(const at::Tensor& x3, const RpcaParams& p);
void small_rpca_cuda(const at::Tensor& x3, const RpcaParams& p);

}  // namespace pgsl
