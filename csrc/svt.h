// svt's host API, shared by the CPU and CUDA registrations: argument checks,
// the packing of SvtParams, and the choice between the hand-written Jacobi
// kernel (small matrices), the blocked LAPACK/cuSOLVER path and the randomized
// path (csrc/svt.cpp). The device's small-matrix kernel comes in as a function
// pointer.
#pragma once

#include <ATen/ATen.h>

#include <optional>

#include "pgsl/small_batch_geometry.h"
#include "pgsl/svd_jacobi.h"

namespace pgsl {

// The small-matrix exact kernel of one device: runs p (min(m, n) <=
// kJacobiMaxN, at least one matrix) on x3's device; x3 is the batch p points
// into, for the device guard and the workspace.
using SmallSvtKernel = void (*)(const at::Tensor& x3, const SvtParams& p);

inline SmallBatchGeometry small_batch_geometry(const at::Tensor& x3) {
  return SmallBatchGeometry{x3.size(0), x3.size(1), x3.size(2), x3.stride(0), x3.stride(1), x3.stride(2)};
}

// x3 (B, m, n) any strides, tau (B,) contiguous in x's dtype, out (B, m, n)
// contiguous, kept (B,) int32.
SvtParams svt_params(const at::Tensor& x3, const at::Tensor& tau, at::Tensor& out, at::Tensor& kept);

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

// The op entry points, one instantiation per device: svt_op<&small_svt_cpu>
// for CPU, svt_op<&small_svt_cuda> for CUDA.
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

// The small-matrix kernels: cpu/svt_cpu.cpp, and cuda/svt_cuda.cpp when built.
void small_svt_cpu(const at::Tensor& x3, const SvtParams& p);
void small_svt_cuda(const at::Tensor& x3, const SvtParams& p);

}  // namespace pgsl
