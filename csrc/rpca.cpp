// Robust PCA by accelerated proximal gradient (Lin, Ganesh, Wright, Wu, Chen &
// Ma 2009), device-generic host code. Per matrix X it solves
//     min_{L,S}  mu ||L||_* + mu lam ||S||_1 + 1/2 ||X - L - S||_F^2
// with FISTA momentum and step 1/2 (the gradient of the smooth term is
// 2-Lipschitz in (L, S)):
//     Y_L = L_k + (t_{k-1} - 1)/t_k (L_k - L_{k-1}),  Y_S likewise
//     G   = Y_L + Y_S - X
//     L_{k+1} = svt(Y_L - G/2, mu/2),  S_{k+1} = soft_threshold(Y_S - G/2, lam mu/2)
// and stops a matrix when the relative residual of the optimality conditions,
//     || (2(Y_L - L_{k+1}) + E, 2(Y_S - S_{k+1}) + E) ||_F / ||X||_F,
//     E = L_{k+1} + S_{k+1} - Y_L - Y_S,
// falls below tol (with continuation: once mu has reached its floor). Small
// matrices run the whole loop in the device's fused kernel; others run this
// batched loop, which only computes the matrices still iterating.
#include <c10/util/Exception.h>

#include <cmath>
#include <limits>

#include "checks.h"
#include "pgsl/rpca.h"
#include "pgsl/svd_jacobi.h"
#include "svt.h"

namespace pgsl {

RpcaOptions rpca_options(const at::Tensor& x, std::optional<double> mu, std::optional<double> lam,
                         int64_t max_iter, double tol, std::optional<int64_t> rank,
                         std::optional<at::Generator> generator, const char* op) {
  check_svt_input(x, op);
  TORCH_CHECK_VALUE(!mu.has_value() || *mu > 0.0, op,
                    ": expected `mu` > 0 (or None for continuation), but got ", mu.value_or(0.0));
  TORCH_CHECK_VALUE(!lam.has_value() || *lam > 0.0, op, ": expected `lam` > 0 or None, but got ",
                    lam.value_or(0.0));
  TORCH_CHECK_VALUE(max_iter >= 0, op, ": expected `max_iter` >= 0, but got ", max_iter);
  TORCH_CHECK_VALUE(tol >= 0.0, op, ": expected `tol` >= 0 (and not NaN), but got ", tol);
  TORCH_CHECK_VALUE(!rank.has_value() || *rank >= 1, op, ": expected `rank` >= 1 or None, but got ",
                    rank.value_or(0));
  const int64_t m = x.size(-2), n = x.size(-1);
  // Values beyond the dtype's range act as +inf (mu = 1e39 for float32 gives L = S = 0).
  const auto dtype = x.scalar_type();
  RpcaOptions o;
  if (mu.has_value()) o.mu = saturate_to(*mu, dtype);
  o.lam = saturate_to(
      lam.value_or(1.0 / std::sqrt(static_cast<double>(std::max<int64_t>(1, std::max(m, n))))), dtype);
  o.max_iter = max_iter;
  o.tol = saturate_to(std::max(tol, rpca_tolerance_floor(dtype == at::kFloat)), dtype);
  o.rank = rank;
  o.generator = std::move(generator);
  return o;
}

namespace {

at::Tensor starting_mu(const at::Tensor& x3, const RpcaOptions& o) {
  if (o.mu.has_value()) return at::full({x3.size(0)}, *o.mu, x3.options());
  // ||X||_2 of the exactly rescaled X (LAPACK's SVD fails on subnormal input), scaled back.
  const Rescaled r = rescale(x3);
  return kContinuationStart * at::linalg_matrix_norm(r.x, 2, {-2, -1}) / r.scale;
}

// The batched loop: every tensor holds only the matrices still iterating.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> rpca_batched(
    const at::Tensor& x3, const at::Tensor& mu0, const RpcaOptions& o, SmallSvtKernel small_svt) {
  const int64_t batch = x3.size(0);
  const auto opts = x3.options();
  at::Tensor low_rank = at::zeros_like(x3, at::MemoryFormat::Contiguous);
  at::Tensor sparse = at::zeros_like(x3, at::MemoryFormat::Contiguous);
  at::Tensor iterations = at::zeros({batch}, opts.dtype(at::kLong));
  at::Tensor converged = at::zeros({batch}, opts.dtype(at::kBool));
  // Every matrix iterates on an exactly rescaled copy (mu scales with it); a
  // non-finite matrix runs as zeros and comes back all-NaN, not converged.
  const Rescaled r = rescale(x3);
  at::Tensor index = at::arange(batch, opts.dtype(at::kLong));
  at::Tensor X = r.x;
  at::Tensor L = at::zeros_like(X), Lp = at::zeros_like(X), S = at::zeros_like(X), Sp = at::zeros_like(X);
  at::Tensor t = at::ones({batch}, opts), tp = at::ones({batch}, opts);
  at::Tensor mu = mu0 * r.scale;
  at::Tensor mu_floor = kContinuationFloor * mu;
  at::Tensor x_norm = at::linalg_vector_norm(X, 2, {-2, -1});
  x_norm = at::where(x_norm > 0, x_norm, at::ones_like(x_norm));  // a zero X: residual 0, no 0/0
  SvtOptions svt_opts;
  svt_opts.rank = o.rank;
  svt_opts.generator = o.generator;
  for (int64_t k = 1; k <= o.max_iter && index.numel() > 0; ++k) {
    const at::Tensor beta = ((tp - 1) / t).view({-1, 1, 1});
    const at::Tensor YL = L + beta * (L - Lp), YS = S + beta * (S - Sp);
    const at::Tensor half_grad = 0.5 * (YL + YS - X);
    const at::Tensor L_new = svt_forward(YL - half_grad, 0.5 * mu, svt_opts, small_svt);
    const at::Tensor Z = YS - half_grad;
    const at::Tensor S_new = at::sign(Z) * (Z.abs() - (0.5 * o.lam * mu).view({-1, 1, 1})).clamp_min(0);
    const at::Tensor E = L_new + S_new - YL - YS;
    const at::Tensor residual =
        at::sqrt((2 * (YL - L_new) + E).square().sum({-2, -1}) + (2 * (YS - S_new) + E).square().sum({-2, -1})) /
        x_norm;
    Lp = L;
    Sp = S;
    L = L_new;
    S = S_new;
    tp = t;
    t = (1 + at::sqrt(1 + 4 * t * t)) / 2;
    at::Tensor ok = residual < o.tol;
    if (!o.mu.has_value()) {  // converged only once mu has reached its floor
      ok = at::logical_and(ok, mu <= mu_floor);
      mu = at::maximum(kContinuationDecay * mu, mu_floor);
    }
    const at::Tensor done = k == o.max_iter ? at::ones_like(ok) : ok;
    const at::Tensor finished = done.nonzero().view({-1});
    if (finished.numel() == 0) continue;
    const at::Tensor rows = index.index_select(0, finished);
    low_rank.index_copy_(0, rows, L.index_select(0, finished));
    sparse.index_copy_(0, rows, S.index_select(0, finished));
    iterations.index_fill_(0, rows, k);
    converged.index_copy_(0, rows, ok.index_select(0, finished));
    const at::Tensor keep = at::logical_not(done).nonzero().view({-1});
    index = index.index_select(0, keep);
    for (at::Tensor* state : {&X, &L, &Lp, &S, &Sp, &t, &tp, &mu, &mu_floor, &x_norm})
      *state = state->index_select(0, keep);
  }
  iterations.masked_fill_(at::logical_not(r.finite), 0);
  return {r.restore(low_rank), r.restore(sparse), iterations, converged.logical_and_(r.finite)};
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> rpca_forward(
    const at::Tensor& x, const RpcaOptions& o, SmallSvtKernel small_svt, SmallRpcaKernel small_rpca) {
  const int64_t m = x.size(-2), n = x.size(-1);
  const auto batch_shape = x.sizes().slice(0, x.dim() - 2);
  const int64_t batch = c10::multiply_integers(batch_shape);
  const at::Tensor x3 = x.reshape({batch, m, n});  // not -1: ambiguous for zero-size matrices
  at::Tensor low_rank, sparse, iterations, converged;
  if (x.numel() == 0 || o.max_iter == 0) {
    // Nothing to iterate: an empty matrix has converged; max_iter = 0 returns the starting
    // point L = S = 0 (all-NaN for a non-finite matrix), not converged.
    const at::Tensor finite = at::isfinite(x3).all(-1).all(-1).view({-1, 1, 1});
    low_rank = at::where(finite, at::zeros({}, x.options()), at::full({}, NAN, x.options()))
                   .expand({batch, m, n})
                   .contiguous();
    sparse = low_rank.clone();
    iterations = at::zeros({batch}, x.options().dtype(at::kLong));
    converged = at::full({batch}, x.numel() == 0, x.options().dtype(at::kBool));
  } else if (!o.rank.has_value() && std::min(m, n) <= kJacobiMaxN) {
    low_rank = at::empty({batch, m, n}, x.options());
    sparse = at::empty({batch, m, n}, x.options());
    iterations = at::empty({batch}, x.options().dtype(at::kLong));
    converged = at::empty({batch}, x.options().dtype(at::kBool));
    small_rpca(x3, starting_mu(x3, o), o, low_rank, sparse, iterations, converged);
  } else {
    std::tie(low_rank, sparse, iterations, converged) = rpca_batched(x3, starting_mu(x3, o), o, small_svt);
  }
  return {low_rank.view(x.sizes()), sparse.view(x.sizes()), iterations.view(batch_shape),
          converged.view(batch_shape)};
}

}  // namespace pgsl
