// Host-side singular value thresholding and RPCA, shared by the CPU and CUDA
// registrations: argument checks, the choice between the hand-written Jacobi
// kernel (small matrices), the blocked LAPACK/cuSOLVER path and the randomized
// path. The device kernels come in as function pointers.
#pragma once

#include <ATen/ATen.h>

#include <optional>

#include "pgsl/rpca.h"
#include "pgsl/svd_jacobi.h"

namespace pgsl {

// The small-matrix exact kernel of one device: x3 (B, m, n) any strides with
// min(m, n) <= kJacobiMaxN, tau (B,) contiguous in x's dtype; writes out
// (B, m, n) contiguous and kept (B,) int32 (singular values above tau).
using SmallSvtKernel = void (*)(const at::Tensor& x3, const at::Tensor& tau, at::Tensor& out,
                                at::Tensor& kept);

inline SmallBatchGeometry small_batch_geometry(const at::Tensor& x3) {
  return SmallBatchGeometry{x3.size(0), x3.size(1), x3.size(2), x3.stride(0), x3.stride(1), x3.stride(2)};
}

struct SvtOptions {
  std::optional<int64_t> rank;
  int64_t oversample = 10;
  int64_t power_iters = 2;
  std::optional<at::Generator> generator;
};

// svt(x, tau) for tau given per matrix, shape x.shape[:-2] (already checked).
at::Tensor svt_forward(const at::Tensor& x, const at::Tensor& tau, const SvtOptions& options,
                       SmallSvtKernel small);

// Checks x and turns a scalar or tensor tau into one tau per matrix, (B,).
void check_svt_input(const at::Tensor& x, const char* op);
at::Tensor tau_per_matrix(const at::Tensor& x, double tau, const char* op);
at::Tensor tau_per_matrix(const at::Tensor& x, const at::Tensor& tau, const char* op);
SvtOptions svt_options(std::optional<int64_t> rank, int64_t oversample, int64_t power_iters,
                       std::optional<at::Generator> generator, const char* op);

// A batch prepared for the ATen paths: non-finite matrices replaced by zeros
// (their results become all-NaN, as in the Jacobi kernel, so one bad matrix
// never fails or pollutes the batch), then rescaled per matrix by an exact
// power of two 2^-e with max|x| = f 2^e, f in [0.5, 1).
struct Rescaled {
  at::Tensor x, finite, scale;  // x (B, m, n); finite, scale (B,)
  at::Tensor restore(const at::Tensor& y) const;  // y / scale, NaN where not finite
};
Rescaled rescale(const at::Tensor& x3);

// The exact path on a (B, m, n) batch: Jacobi kernel or blocked SVD. Returns
// (out contiguous (B, m, n), kept (B,) int32).
std::tuple<at::Tensor, at::Tensor> svt_exact(const at::Tensor& x3, const at::Tensor& tau,
                                             SmallSvtKernel small);

}  // namespace pgsl

namespace pgsl {

// Robust PCA (csrc/rpca.cpp), batched over leading dims.
struct RpcaOptions {
  std::optional<double> mu;  // fixed relaxation; nullopt: continuation
  double lam;                // already defaulted to 1/sqrt(max(m, n))
  int64_t max_iter;
  double tol;                // already floored for the dtype
  std::optional<int64_t> rank;
  RpcaMethod method;
  std::optional<at::Generator> generator;  // for rank=k
};

// The fused small-matrix RPCA kernel of one device: x3 (B, m, n) any strides
// with min(m, n) <= kJacobiMaxN; init3 the starting S, (B, m, n) any strides
// in x's dtype and device, or none; mu0 (B,) the starting relaxation per
// matrix (the fixed mu, or mu_0 of the continuation); writes low_rank and
// sparse (B, m, n) contiguous, iterations (B,) int64 and converged (B,) bool.
using SmallRpcaKernel = void (*)(const at::Tensor& x3, const std::optional<at::Tensor>& init3,
                                 const at::Tensor& mu0, const RpcaOptions& o, at::Tensor& low_rank,
                                 at::Tensor& sparse, at::Tensor& iterations, at::Tensor& converged);

RpcaOptions rpca_options(const at::Tensor& x, std::optional<double> mu, std::optional<double> lam,
                         int64_t max_iter, double tol, std::optional<int64_t> rank,
                         c10::string_view method, std::optional<at::Generator> generator,
                         const char* op);
void check_rpca_init(const at::Tensor& x, const std::optional<at::Tensor>& init, const char* op);

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> rpca_forward(
    const at::Tensor& x, const std::optional<at::Tensor>& init, const RpcaOptions& options,
    SmallSvtKernel small_svt, SmallRpcaKernel small_rpca);

}  // namespace pgsl

namespace pgsl {

// The op entry points, one instantiation per device: register
// svt_op<&small_svt_cpu> for CPU, svt_op<&small_svt_cuda> for CUDA, and so on.
template <SmallSvtKernel kSmall>
at::Tensor svt_op(const at::Tensor& x, double tau, std::optional<int64_t> rank, int64_t oversample,
                  int64_t power_iters, std::optional<at::Generator> generator) {
  constexpr const char* op = "pgsl_ext.svt";
  check_svt_input(x, op);
  const SvtOptions options = svt_options(rank, oversample, power_iters, std::move(generator), op);
  return svt_forward(x, tau_per_matrix(x, tau, op), options, kSmall);
}

template <SmallSvtKernel kSmall>
at::Tensor svt_tensor_op(const at::Tensor& x, const at::Tensor& tau, std::optional<int64_t> rank,
                         int64_t oversample, int64_t power_iters,
                         std::optional<at::Generator> generator) {
  constexpr const char* op = "pgsl_ext.svt";
  check_svt_input(x, op);
  const SvtOptions options = svt_options(rank, oversample, power_iters, std::move(generator), op);
  return svt_forward(x, tau_per_matrix(x, tau, op), options, kSmall);
}

template <SmallSvtKernel kSmallSvt, SmallRpcaKernel kSmallRpca>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> rpca_op(
    const at::Tensor& x, const std::optional<at::Tensor>& init, std::optional<double> mu,
    std::optional<double> lam, int64_t max_iter, double tol, std::optional<int64_t> rank,
    c10::string_view method, std::optional<at::Generator> generator) {
  constexpr const char* op = "pgsl_ext.rpca";
  const RpcaOptions o = rpca_options(x, mu, lam, max_iter, tol, rank, method, std::move(generator), op);
  check_rpca_init(x, init, op);
  return rpca_forward(x, init, o, kSmallSvt, kSmallRpca);
}

// The CPU kernels (csrc/cpu/), and the CUDA kernels (csrc/cuda/) when built.
void small_svt_cpu(const at::Tensor& x3, const at::Tensor& tau, at::Tensor& out, at::Tensor& kept);
void small_rpca_cpu(const at::Tensor& x3, const std::optional<at::Tensor>& init3, const at::Tensor& mu0,
                    const RpcaOptions& o, at::Tensor& low_rank, at::Tensor& sparse,
                    at::Tensor& iterations, at::Tensor& converged);
void small_svt_cuda(const at::Tensor& x3, const at::Tensor& tau, at::Tensor& out, at::Tensor& kept);
void small_rpca_cuda(const at::Tensor& x3, const std::optional<at::Tensor>& init3,
                     const at::Tensor& mu0, const RpcaOptions& o, at::Tensor& low_rank,
                     at::Tensor& sparse, at::Tensor& iterations, at::Tensor& converged);

}  // namespace pgsl
