// Robust PCA, device-generic host code. Per matrix X it solves
//     min_{L,S}  F(L, S) = mu ||L||_* + mu lam ||S||_1 + 1/2 ||X - L - S||_F^2
// by one of two methods with the same minimiser and the same stopping rule:
// a matrix stops when g / ||X||_F < tol for a subgradient g of F at the
// returned (L, S) (with continuation: once mu has reached its floor).
//
// "alternating" (the default): L minimised out exactly. For fixed S the best L
// is svt(X - S, mu), and what is left, min_S mu lam ||S||_1 + e(X - S) with e
// the Moreau envelope of mu ||.||_*, has a 1-Lipschitz gradient, so FISTA with
// step 1 applies (Beck & Teboulle 2009), with the gradient restart of
// O'Donoghue & Candes (2015):
//     Y = S_k + beta_k (S_k - S_{k-1})
//     L_{k+1} = svt(X - Y, mu),  S_{k+1} = soft_threshold(X - L_{k+1}, lam mu)
//     g = (S_{k+1} - Y, 0) in dF(L_{k+1}, S_{k+1})
//     restart (beta = 0, t = 1) when (Y - S_{k+1}) . (S_{k+1} - S_k) > 0.
// Without momentum this is exact alternating minimisation (block coordinate
// descent); the step is twice APG's and momentum restarts instead of
// oscillating, which is where the iterations go (bench/bench_rpca_methods.py).
//
// "apg": accelerated proximal gradient (Lin, Ganesh, Wright, Wu, Chen & Ma
// 2009) on (L, S) jointly, FISTA momentum and step 1/2 (the gradient of the
// smooth term is 2-Lipschitz in (L, S)):
//     Y_L = L_k + (t_{k-1} - 1)/t_k (L_k - L_{k-1}),  Y_S likewise
//     G   = Y_L + Y_S - X
//     L_{k+1} = svt(Y_L - G/2, mu/2),  S_{k+1} = soft_threshold(Y_S - G/2, lam mu/2)
//     g = (2(Y_L - L_{k+1}) + E, 2(Y_S - S_{k+1}) + E),  E = L_{k+1} + S_{k+1} - Y_L - Y_S.
//
// Small matrices run the whole loop in the device's fused kernel
// (pgsl/robust_pca.h); others run this batched loop, which only computes the
// matrices still iterating.
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "rpca.h"

#include "checks.h"
#include "pgsl/robust_pca.h"
#include "pgsl/svd_jacobi.h"
#include "svt.h"

namespace pgsl {

RpcaParams rpca_params(const at::Tensor& x, std::optional<double> mu, std::optional<double> lam,
                       int64_t max_iter, double tol, std::optional<int64_t> rank,
                       c10::string_view method, const char* op) {
  check_svt_input(x, op);
  TORCH_CHECK_VALUE(method == "alternating" || method == "apg", op,
                    ": expected `method` to be \"alternating\" or \"apg\", but got \"", std::string(method), "\"");
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
  RpcaParams p{};
  p.continuation = !mu.has_value();
  p.mu = mu.has_value() ? saturate_to(*mu, dtype) : 0.0;
  p.lam = saturate_to(
      lam.value_or(1.0 / std::sqrt(static_cast<double>(std::max<int64_t>(1, std::max(m, n))))), dtype);
  p.max_iter = max_iter;
  p.tol = saturate_to(std::max(tol, rpca_tolerance_floor(dtype == at::kFloat)), dtype);
  p.rank = rank.value_or(0);
  p.method = method == "apg" ? RpcaMethod::kApg : RpcaMethod::kAlternating;
  p.kind = scalar_kind(dtype);
  return p;
}

void check_rpca_init(const at::Tensor& x, const std::optional<at::Tensor>& init, const char* op) {
  if (!init.has_value()) return;
  TORCH_CHECK_VALUE(init->sizes() == x.sizes(), op, ": expected `init` (the starting sparse part) of x's shape ",
                    x.sizes(), ", but got ", init->sizes());
  TORCH_CHECK_TYPE(init->scalar_type() == x.scalar_type(), op, ": expected `init` of x's dtype ",
                   x.scalar_type(), ", but got ", init->scalar_type());
  check_same_device(x, "x", *init, "init", op);
}

namespace {

at::Tensor starting_mu(const at::Tensor& x3, const RpcaParams& o) {
  if (!o.continuation) return at::full({x3.size(0)}, o.mu, x3.options());
  // ||X||_2 of the exactly rescaled X (LAPACK's SVD fails on subnormal input), scaled back.
  const Rescaled r = rescale(x3);
  return kContinuationStart * at::linalg_matrix_norm(r.x, 2, {-2, -1}) / r.scale;
}

at::Tensor soft(const at::Tensor& z, const at::Tensor& threshold) {
  return at::sign(z) * (z.abs() - threshold.view({-1, 1, 1})).clamp_min(0);
}

// The batched loop: every tensor holds only the matrices still iterating.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> rpca_batched(
    const at::Tensor& x3, const std::optional<at::Tensor>& init3, const at::Tensor& mu0,
    const RpcaParams& o, const std::optional<at::Generator>& generator, SmallSvtKernel small_svt) {
  const int64_t batch = x3.size(0);
  const auto opts = x3.options();
  at::Tensor low_rank = at::zeros_like(x3, at::MemoryFormat::Contiguous);
  at::Tensor sparse = at::zeros_like(x3, at::MemoryFormat::Contiguous);
  at::Tensor iterations = at::zeros({batch}, opts.dtype(at::kLong));
  at::Tensor converged = at::zeros({batch}, opts.dtype(at::kBool));
  // Every matrix iterates on an exactly rescaled copy (mu scales with it); a
  // non-finite matrix (or start) runs as zeros and comes back all-NaN, not converged.
  at::Tensor x_in = x3;
  if (init3) {
    const at::Tensor bad = at::logical_not(at::isfinite(*init3).all(-1).all(-1)).view({-1, 1, 1});
    x_in = at::where(bad, at::full({}, std::numeric_limits<double>::quiet_NaN(), opts), x3);
  }
  const Rescaled r = rescale(x_in);
  at::Tensor index = at::arange(batch, opts.dtype(at::kLong));
  at::Tensor X = r.x;
  at::Tensor L = at::zeros_like(X), Lp = at::zeros_like(X);
  at::Tensor S = init3 ? at::where(r.finite.view({-1, 1, 1}), *init3 * r.scale.view({-1, 1, 1}), 0).contiguous()
                       : at::zeros_like(X);
  at::Tensor Sp = S;
  at::Tensor t = at::ones({batch}, opts), tp = at::ones({batch}, opts);
  at::Tensor mu = mu0 * r.scale;
  at::Tensor mu_floor = kContinuationFloor * mu;
  at::Tensor x_norm = at::linalg_vector_norm(X, 2, {-2, -1});
  x_norm = at::where(x_norm > 0, x_norm, at::ones_like(x_norm));  // a zero X: residual 0, no 0/0
  SvtOptions svt_opts;
  if (o.rank > 0) svt_opts.rank = o.rank;
  svt_opts.generator = generator;
  const bool alternating = o.method == RpcaMethod::kAlternating;
  for (int64_t k = 1; k <= o.max_iter && index.numel() > 0; ++k) {
    const at::Tensor beta = ((tp - 1) / t).view({-1, 1, 1});
    at::Tensor L_new, S_new, residual, restart;
    if (alternating) {
      const at::Tensor Y = S + beta * (S - Sp);
      L_new = svt_forward(X - Y, mu, svt_opts, small_svt);
      S_new = soft(X - L_new, o.lam * mu);
      const at::Tensor step = S_new - Y;
      residual = at::linalg_vector_norm(step, 2, {-2, -1}) / x_norm;
      restart = (step * (S_new - S)).sum({-2, -1}) < 0;
    } else {
      const at::Tensor YL = L + beta * (L - Lp), YS = S + beta * (S - Sp);
      const at::Tensor half_grad = 0.5 * (YL + YS - X);
      L_new = svt_forward(YL - half_grad, 0.5 * mu, svt_opts, small_svt);
      S_new = soft(YS - half_grad, 0.5 * o.lam * mu);
      const at::Tensor E = L_new + S_new - YL - YS;
      residual = at::sqrt((2 * (YL - L_new) + E).square().sum({-2, -1}) +
                          (2 * (YS - S_new) + E).square().sum({-2, -1})) /
                 x_norm;
      restart = at::zeros_like(residual, at::kBool);
    }
    Lp = L;
    Sp = S;
    L = L_new;
    S = S_new;
    const at::Tensor one = at::ones_like(t);
    tp = at::where(restart, one, t);
    t = at::where(restart, one, (1 + at::sqrt(1 + 4 * t * t)) / 2);
    at::Tensor ok = residual < o.tol;
    if (o.continuation) {  // converged only once mu has reached its floor
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

// The warm start projected onto a box that holds the minimiser's S, so that a
// start far larger than X cannot overflow once rescaled. The bound: S* minimises
// G(S) = mu lam ||S||_1 + e(X - S), e the Moreau envelope of mu ||.||_* (0 <= e(Z)
// <= mu ||Z||_*), so mu lam ||S*||_1 <= G(0) <= mu ||X||_* and every entry of S*
// lies within ||X||_* / lam <= sqrt(min(m, n)) ||X||_F / lam, for any mu (and so
// at every stage of continuation). Projection onto a convex set holding S* never
// moves the start farther from it. In X's rescaled units the box is capped at
// max/8 (X - S stays finite); non-finite entries are kept (they mark the matrix).
at::Tensor clamp_start(const at::Tensor& x3, const at::Tensor& init3, double lam) {
  const Rescaled r = rescale(x3);
  const double finite_max = x3.scalar_type() == at::kFloat ? std::numeric_limits<float>::max()
                                                           : std::numeric_limits<double>::max();
  const double k = std::sqrt(static_cast<double>(std::min(x3.size(-2), x3.size(-1))));
  const at::Tensor norm = at::linalg_vector_norm(r.x.to(at::kDouble), 2, {-2, -1});
  const at::Tensor box_scaled = (norm * (k / lam)).clamp_max(finite_max / 8);
  // Back in X's units (inf where that overflows the dtype: no bound is needed there).
  const at::Tensor box = (box_scaled / r.scale.to(at::kDouble)).to(x3.scalar_type()).view({-1, 1, 1});
  return at::where(at::isfinite(init3), at::maximum(at::minimum(init3, box), -box), init3);
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> rpca_forward(
    const at::Tensor& x, const std::optional<at::Tensor>& init, RpcaParams o,
    const std::optional<at::Generator>& generator, SmallSvtKernel small_svt,
    SmallRpcaKernel small_rpca) {
  const int64_t m = x.size(-2), n = x.size(-1);
  const auto batch_shape = x.sizes().slice(0, x.dim() - 2);
  const int64_t batch = c10::multiply_integers(batch_shape);
  const at::Tensor x3 = x.reshape({batch, m, n});  // not -1: ambiguous for zero-size matrices
  std::optional<at::Tensor> init3;
  if (init) init3 = init->reshape({batch, m, n});
  if (init3 && x.numel() > 0 && o.max_iter > 0) init3 = clamp_start(x3, *init3, o.lam);
  at::Tensor low_rank, sparse, iterations, converged;
  if (x.numel() == 0 || o.max_iter == 0) {
    // Nothing to iterate: an empty matrix has converged; max_iter = 0 returns the starting
    // point L = 0, S = init or 0 (all-NaN for a non-finite matrix or start), not converged.
    at::Tensor finite = at::isfinite(x3).all(-1).all(-1);
    if (init3) finite = at::logical_and(finite, at::isfinite(*init3).all(-1).all(-1));
    finite = finite.view({-1, 1, 1});
    const at::Tensor nan = at::full({}, NAN, x.options());
    low_rank = at::where(finite, at::zeros({}, x.options()), nan).expand({batch, m, n}).contiguous();
    sparse = init3 ? at::where(finite, *init3, nan).contiguous() : low_rank.clone();
    iterations = at::zeros({batch}, x.options().dtype(at::kLong));
    converged = at::full({batch}, x.numel() == 0, x.options().dtype(at::kBool));
  } else if (o.rank == 0 && std::min(m, n) <= kJacobiMaxN) {
    low_rank = at::empty({batch, m, n}, x.options());
    sparse = at::empty({batch, m, n}, x.options());
    iterations = at::empty({batch}, x.options().dtype(at::kLong));
    converged = at::empty({batch}, x.options().dtype(at::kBool));
    const at::Tensor mu0 = starting_mu(x3, o).to(x3.scalar_type()).contiguous();
    o.g = small_batch_geometry(x3);
    o.init_g = init3 ? small_batch_geometry(*init3) : o.g;
    o.x = x3.const_data_ptr();
    o.init = init3 ? init3->const_data_ptr() : nullptr;
    o.mu0 = mu0.const_data_ptr();
    o.low_rank = low_rank.data_ptr();
    o.sparse = sparse.data_ptr();
    o.iterations = iterations.data_ptr<int64_t>();
    o.converged = converged.data_ptr<bool>();
    small_rpca(x3, o);
  } else {
    std::tie(low_rank, sparse, iterations, converged) =
        rpca_batched(x3, init3, starting_mu(x3, o), o, generator, small_svt);
  }
  return {low_rank.view(x.sizes()), sparse.view(x.sizes()), iterations.view(batch_shape),
          converged.view(batch_shape)};
}

}  // namespace pgsl
