// The fused RPCA iteration for small matrices, shared by the CPU kernel (L
// matrices per SIMD lane group, lanes refilled as matrices finish) and the
// CUDA kernel (one matrix per thread, L = 1). See csrc/rpca.cpp for the maths.
//
// Each lane holds one matrix, exactly rescaled by a power of two at load (the
// problem is homogeneous: L, S and mu scale with X). The SVT step warm-starts
// Jacobi from the previous iteration's right singular vectors, so a sweep or
// two suffices after the first iterations. The accumulated rotations slowly
// erode V's orthogonality, and in float32 that error grows with every
// warm-started iteration (measured: 64 x 64, 100 iterations, 2e-3 relative with
// a reset every 64 iterations, 3e-5 every 8, 1.4e-5 for cold starts), so V is
// reset to the identity every kVResetPeriod iterations.
#pragma once

#include <cmath>
#include <limits>

#include "pgsl/macros.h"
#include "pgsl/soft_threshold.h"
#include "pgsl/svd_jacobi.h"

namespace pgsl {

constexpr int kVResetPeriod = 8;

// Continuation schedule (mu=None): mu_0 = 0.99 ||X||_2,
// mu_{k+1} = max(0.9 mu_k, 1e-5 mu_0) (Lin et al. 2009).
constexpr double kContinuationStart = 0.99;
constexpr double kContinuationDecay = 0.9;
constexpr double kContinuationFloor = 1e-5;

// Below this relative residual the iteration only sees rounding noise.
PGSL_HOST_DEVICE double rpca_tolerance_floor(bool single_precision) {
  return single_precision ? 64.0 * 1.1920928955078125e-07 : 64.0 * 2.220446049250313e-16;
}

// Workspace of one lane group: eight M x N blocks and one N x N block, each
// in the svd_jacobi.h layout (element e of lane l at [e * L + l]).
template <typename T, int L>
struct RpcaLanes {
  T *X, *Lk, *Lp, *Sk, *Sp, *YL, *YS, *A, *V, *row;
  T t[L], tp[L], mu[L], mu_floor[L], x_norm[L], scale[L];
  int64_t iter[L];
  bool finite[L];

  static constexpr int64_t workspace(int64_t M, int64_t N) { return (8 * M * N + N * N + N) * L; }
  PGSL_HOST_DEVICE void bind(T* w, int64_t M, int64_t N) {
    T** blocks[8] = {&X, &Lk, &Lp, &Sk, &Sp, &YL, &YS, &A};
    for (int b = 0; b < 8; ++b) *blocks[b] = w + b * M * N * L;
    V = w + 8 * M * N * L;
    row = V + N * N * L;
  }
};

// Loads lane l: X from load(r, c) (M x N work coordinates), zero iterates,
// V = I; mu0 is the starting relaxation (fixed mu, or mu_0 of the
// continuation). A lane given no matrix (load == nullptr path: `empty`) holds
// zeros and finishes after one iteration.
template <typename T, int L, typename Load>
PGSL_HOST_DEVICE void rpca_load_lane(RpcaLanes<T, L>& s, int l, int64_t M, int64_t N, Load&& load,
                                     T mu0, bool empty) {
  T amax = T(0);
  bool finite = true;
  for (int64_t e = 0; e < M * N; ++e) {
    const T v = empty ? T(0) : load(e % M, e / M);
    s.X[e * L + l] = v;
    const bool ok = std::isfinite(v);
    finite = finite && ok;
    amax = ok && std::fabs(v) > amax ? std::fabs(v) : amax;
  }
  const T scale = exact_scale_for<T>(amax);
  T norm2 = T(0);
  for (int64_t e = 0; e < M * N; ++e) {
    const T v = finite ? s.X[e * L + l] * scale : T(0);
    s.X[e * L + l] = v;
    norm2 += v * v;
    s.Lk[e * L + l] = s.Lp[e * L + l] = s.Sk[e * L + l] = s.Sp[e * L + l] = T(0);
  }
  for (int64_t c = 0; c < N; ++c)
    for (int64_t r = 0; r < N; ++r) s.V[(c * N + r) * L + l] = r == c ? T(1) : T(0);
  s.t[l] = s.tp[l] = T(1);
  s.mu[l] = mu0 * scale;
  s.mu_floor[l] = s.mu[l] * T(kContinuationFloor);
  s.x_norm[l] = norm2 > T(0) ? std::sqrt(norm2) : T(1);
  s.scale[l] = scale;
  s.iter[l] = 0;
  s.finite[l] = finite;
}

// One APG iteration on every lane. On return, done[l] says lane l has
// finished (converged[l]: by the tolerance; otherwise by max_iter).
template <typename T, int L>
PGSL_HOST_DEVICE void rpca_step(RpcaLanes<T, L>& s, int64_t M, int64_t N, T lam, bool continuation,
                                T tol, int64_t max_iter, int max_sweeps, bool* done, bool* converged) {
  const int64_t size = M * N;
  T beta[L], shrink_s[L], tau[L];
  PGSL_SIMD
  for (int l = 0; l < L; ++l) {
    beta[l] = (s.tp[l] - T(1)) / s.t[l];
    shrink_s[l] = T(0.5) * lam * s.mu[l];
    tau[l] = T(0.5) * s.mu[l];
  }
  // Momentum, gradient step, the L1 prox; the previous iterates shift back.
  for (int64_t e = 0; e < size; ++e) {
    PGSL_SIMD
    for (int l = 0; l < L; ++l) {
      const int64_t k = e * L + l;
      const T lk = s.Lk[k], sk = s.Sk[k];
      const T yl = lk + beta[l] * (lk - s.Lp[k]);
      const T ys = sk + beta[l] * (sk - s.Sp[k]);
      const T half_grad = T(0.5) * (yl + ys - s.X[k]);
      s.Lp[k] = lk;
      s.Sp[k] = sk;
      s.YL[k] = yl;
      s.YS[k] = ys;
      s.A[k] = yl - half_grad;
      s.Sk[k] = soft_threshold_value<T>(ys - half_grad, shrink_s[l]);
    }
  }
  // The nuclear-norm prox: warm-started Jacobi SVT of A into Lk.
  bool reset = false;
  for (int l = 0; l < L; ++l) reset = reset || (s.iter[l] % kVResetPeriod == 0);
  if (reset) {
    for (int l = 0; l < L; ++l)
      if (s.iter[l] % kVResetPeriod == 0)
        for (int64_t c = 0; c < N; ++c)
          for (int64_t r = 0; r < N; ++r) s.V[(c * N + r) * L + l] = r == c ? T(1) : T(0);
  }
  multiply_right<T, L>(s.A, s.V, M, N, s.row);
  jacobi_sweeps<T, L>(s.A, s.V, M, N, max_sweeps);
  bool residual[L];
  shrink_columns<T, L>(s.A, M, N, tau, nullptr, residual);
  reconstruct<T, L>(s.A, s.V, M, N, [&](int l, int64_t r, int64_t c, T v) {
    const int64_t k = (c * M + r) * L + l;
    // The SVT input, recomputed exactly as it was formed above, for the residual form.
    const T yl = s.YL[k];
    const T input = yl - T(0.5) * (yl + s.YS[k] - s.X[k]);
    s.Lk[k] = residual[l] ? input - v : v;
  });
  // Residual of the optimality conditions, FISTA and continuation updates.
  T res2[L];
  PGSL_SIMD
  for (int l = 0; l < L; ++l) res2[l] = T(0);
  for (int64_t e = 0; e < size; ++e) {
    PGSL_SIMD
    for (int l = 0; l < L; ++l) {
      const int64_t k = e * L + l;
      const T excess = s.Lk[k] + s.Sk[k] - s.YL[k] - s.YS[k];
      const T rl = T(2) * (s.YL[k] - s.Lk[k]) + excess;
      const T rs = T(2) * (s.YS[k] - s.Sk[k]) + excess;
      res2[l] += rl * rl + rs * rs;
    }
  }
  for (int l = 0; l < L; ++l) {
    const bool small = std::sqrt(res2[l]) < tol * s.x_norm[l];
    const bool ok = small && (!continuation || s.mu[l] <= s.mu_floor[l]);
    if (continuation) {
      const T next = T(kContinuationDecay) * s.mu[l];
      s.mu[l] = next > s.mu_floor[l] ? next : s.mu_floor[l];
    }
    s.tp[l] = s.t[l];
    s.t[l] = (T(1) + std::sqrt(T(1) + T(4) * s.t[l] * s.t[l])) / T(2);
    s.iter[l] += 1;
    converged[l] = ok;
    done[l] = ok || s.iter[l] >= max_iter;
  }
}

// Writes lane l's L and S (rescaled back; all-NaN for a non-finite input)
// through store(r, c, low_rank_value, sparse_value).
template <typename T, int L, typename Store>
PGSL_HOST_DEVICE void rpca_store_lane(const RpcaLanes<T, L>& s, int l, int64_t M, int64_t N, Store&& store) {
  const T nan = std::numeric_limits<T>::quiet_NaN();
  for (int64_t e = 0; e < M * N; ++e) {
    const bool ok = s.finite[l];
    store(e % M, e / M, ok ? s.Lk[e * L + l] / s.scale[l] : nan, ok ? s.Sk[e * L + l] / s.scale[l] : nan);
  }
}

}  // namespace pgsl
