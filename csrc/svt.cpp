// Singular value thresholding, device-generic host code: checks, the blocked
// path (LAPACK / cuSOLVER through ATen) and the randomized path (Halko,
// Martinsson & Tropp 2011) on BLAS / cuBLAS GEMMs. Small matrices go to the
// device's Jacobi kernel.
#include "svt.h"

#include <c10/util/Exception.h>

#include "checks.h"
#include "pgsl/svd_jacobi.h"

namespace pgsl {

void check_svt_input(const at::Tensor& x, const char* op) {
  TORCH_CHECK_VALUE(x.dim() >= 2, op, ": expected `x` of shape (..., m, n), but got a ", x.dim(),
                    "-d tensor");
  TORCH_CHECK_TYPE(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, op,
                   ": expected `x` to be float32 or float64, but got ", x.scalar_type());
}

at::Tensor tau_per_matrix(const at::Tensor& x, double tau, const char* op) {
  check_tau_scalar(tau, op);
  return at::full({c10::multiply_integers(x.sizes().slice(0, x.dim() - 2))},
                  saturate_to(tau, x.scalar_type()), x.options());
}

at::Tensor tau_per_matrix(const at::Tensor& x, const at::Tensor& tau, const char* op) {
  const auto batch_shape = x.sizes().slice(0, x.dim() - 2);
  TORCH_CHECK_VALUE(broadcasts_to(tau.sizes(), batch_shape), op,
                    ": expected `tau` of shape x.shape[:-2] = ", batch_shape,
                    " (one threshold per matrix), but got shape ", tau.sizes());
  check_tau_entries(x, tau, op);
  return tau.to(x.scalar_type()).expand(batch_shape).reshape({-1}).contiguous();
}

SvtOptions svt_options(std::optional<int64_t> rank, int64_t oversample, int64_t power_iters,
                       std::optional<at::Generator> generator, const char* op) {
  TORCH_CHECK_VALUE(!rank.has_value() || *rank >= 1, op, ": expected `rank` >= 1 or None, but got ",
                    rank.value_or(0));
  TORCH_CHECK_VALUE(oversample >= 0, op, ": expected `oversample` >= 0, but got ", oversample);
  TORCH_CHECK_VALUE(power_iters >= 0, op, ": expected `power_iters` >= 0, but got ", power_iters);
  return SvtOptions{rank, oversample, power_iters, std::move(generator)};
}

SvtParams svt_params(const at::Tensor& x3, const at::Tensor& tau, at::Tensor& out, at::Tensor& kept) {
  return SvtParams{scalar_kind(x3.scalar_type()), small_batch_geometry(x3), x3.const_data_ptr(),
                   tau.const_data_ptr(), out.data_ptr(), kept.data_ptr<int>()};
}

Rescaled rescale(const at::Tensor& x3) {
  Rescaled r;
  r.finite = at::isfinite(x3).all(-1).all(-1);
  const at::Tensor clean = at::where(r.finite.view({-1, 1, 1}), x3, at::zeros({}, x3.options()));
  const at::Tensor amax = clean.abs().amax({-2, -1});
  // 2^-e for max|x| = f 2^e, kept a normal number (see exact_scale_for).
  const bool single = x3.scalar_type() == at::kFloat;
  const at::Tensor power = std::get<1>(at::frexp(amax))
                               .neg()
                               .clamp(single ? NormalExponents<float>::min : NormalExponents<double>::min,
                                      single ? NormalExponents<float>::max : NormalExponents<double>::max);
  r.scale = at::where(amax > 0, at::pow(2.0, power.to(x3.scalar_type())), at::ones({}, x3.options()));
  r.x = clean * r.scale.view({-1, 1, 1});
  return r;
}

at::Tensor Rescaled::restore(const at::Tensor& y) const {
  const at::Tensor back = y / scale.view({-1, 1, 1});
  return at::where(finite.view({-1, 1, 1}), back, at::full({}, NAN, y.options())).contiguous();
}

namespace {

// Blocked exact path for matrices too large for the Jacobi kernel:
// U diag(max(s - tau, 0)) V^T from ATen's SVD (LAPACK gesdd / cuSOLVER).
std::tuple<at::Tensor, at::Tensor> svt_blocked(const at::Tensor& x3, const at::Tensor& tau) {
  const Rescaled r = rescale(x3);
  auto [u, s, vh] = at::linalg_svd(r.x, /*full_matrices=*/false);
  const at::Tensor tau_scaled = (tau * r.scale).unsqueeze(-1);
  const at::Tensor kept = (s > tau_scaled).sum(-1).to(at::kInt);
  const at::Tensor out = at::matmul(u * (s - tau_scaled).clamp_min(0).unsqueeze(-2), vh);
  return {r.restore(out), kept};
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> svt_exact(const at::Tensor& x3, const at::Tensor& tau,
                                             SmallSvtKernel small) {
  const int64_t m = x3.size(1), n = x3.size(2), lo = std::min(m, n), hi = std::max(m, n);
  if (lo > kJacobiMaxN) return svt_blocked(x3, tau);
  if (x3.numel() > 0 && hi > 2 * lo) {
    // Tall (or wide) and thin: QR-precondition (Q R = x, or its transpose), run the Jacobi
    // kernel on the small square R, and map back: svt(Q R) = Q svt(R) for orthonormal Q.
    // Rescaled first: R's entries are column norms, which overflow for entries near the
    // largest float (and LAPACK's QR loses subnormal input).
    const Rescaled r = rescale(x3);
    const bool wide = m < n;
    auto [q, upper] = at::linalg_qr(wide ? r.x.mT() : r.x, "reduced");
    auto [small_out, kept] = svt_exact(upper, tau * r.scale, small);
    const at::Tensor out = at::matmul(q, small_out);
    return {r.restore(wide ? out.mT() : out), kept};
  }
  at::Tensor out = at::empty({x3.size(0), m, n}, x3.options());
  at::Tensor kept = at::empty({x3.size(0)}, x3.options().dtype(at::kInt));
  if (x3.numel() > 0) small(x3, svt_params(x3, tau, out, kept));
  else kept.zero_();
  return {out, kept};
}

namespace {

at::Tensor orthonormal_basis(const at::Tensor& y) {
  return std::get<0>(at::linalg_qr(y, "reduced"));
}

// Randomized SVT: Q spans an approximate range of x (Gaussian sketch of l
// columns, power iterations re-orthonormalised), then svt(x) ~= Q svt(Q^T x),
// whose small SVD is exact. If every singular value of Q^T x of some matrix
// exceeds tau, the thresholded rank may reach past the sketch: the sketch is
// doubled (up to min(m, n), where the exact path takes over), never truncated.
at::Tensor svt_randomized(const at::Tensor& x3, const at::Tensor& tau, const SvtOptions& o,
                          SmallSvtKernel small) {
  const int64_t m = x3.size(1), n = x3.size(2), full = std::min(m, n);
  // min(rank + oversample, full), without overflowing int64.
  int64_t sketch = *o.rank >= full || o.oversample >= full - *o.rank ? full : *o.rank + o.oversample;
  // Rescaled like the exact paths: the sketch's GEMMs and QRs overflow for entries near the
  // largest float. Non-finite matrices run as zeros and come back all-NaN, as elsewhere.
  const Rescaled r = rescale(x3);
  const at::Tensor tau_scaled = tau * r.scale;
  while (sketch < full) {
    const at::Tensor omega = at::randn({x3.size(0), n, sketch}, o.generator, x3.options());
    at::Tensor q = orthonormal_basis(at::matmul(r.x, omega));
    for (int64_t it = 0; it < o.power_iters; ++it) {
      q = orthonormal_basis(at::matmul(r.x.mT(), q));
      q = orthonormal_basis(at::matmul(r.x, q));
    }
    const at::Tensor projected = at::matmul(q.mT(), r.x);  // (B, sketch, n)
    auto [small_out, kept] = svt_exact(projected, tau_scaled, small);
    if (kept.numel() == 0 || kept.max().item<int64_t>() < sketch) {
      return r.restore(at::matmul(q, small_out));
    }
    sketch = std::min(2 * sketch, full);
  }
  return r.restore(std::get<0>(svt_exact(r.x, tau_scaled, small)));
}

}  // namespace

at::Tensor svt_forward(const at::Tensor& x, const at::Tensor& tau, const SvtOptions& options,
                       SmallSvtKernel small) {
  const int64_t m = x.size(-2), n = x.size(-1);
  if (x.numel() == 0) return at::zeros_like(x, at::MemoryFormat::Contiguous);
  const at::Tensor x3 = x.reshape({-1, m, n});
  at::Tensor out = options.rank.has_value() ? svt_randomized(x3, tau, options, small)
                                            : std::get<0>(svt_exact(x3, tau, small));
  return out.view(x.sizes());
}

}  // namespace pgsl
