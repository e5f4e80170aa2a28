// The fused RPCA iteration for small matrices, shared by the CPU kernel (L
// matrices per SIMD lane group, lanes refilled as matrices finish) and the
// CUDA kernels (the thread design: one matrix per thread, L = 1; the group
// design, a warp per matrix, through the per-element and per-matrix helpers
// below). See csrc/rpca.cpp for the maths of both methods (kAlternating, the
// default, and kApg).
//
// Each lane holds one matrix, exactly rescaled by a power of two at load (the
// problem is homogeneous: L, S and mu scale with X). The SVT step warm-starts
// Jacobi from the previous iteration's right singular vectors, so a few sweeps
// suffice after the first iterations. The accumulated rotations slowly erode
// V's orthogonality, and in float32 that error grows with every warm-started
// iteration (measured: 64 x 64, 100 iterations, 2e-3 relative with a reset
// every 64 iterations, 3e-5 every 8, 1.4e-5 for cold starts), so every
// kVResetPeriod iterations V is restored: the alternating method
// re-orthonormalises it (modified Gram-Schmidt, N^3 flops, keeping the warm
// start: measured on activation maps, 5.5 instead of 7.1 sweeps per
// iteration), the APG resets it to the identity (unchanged since it landed).
// The alternating method's sweeps leave alone columns below eps ||X||
// (svd_jacobi.h, jacobi_sweeps: on activation maps 7 instead of 37 sweeps per
// iteration, the same result).
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#include "pgsl/macros.h"
#include "pgsl/scalar_kind.h"
#include "pgsl/small_batch_geometry.h"
#include "pgsl/shrinkage.h"
#include "pgsl/svd_jacobi.h"

namespace pgsl {

constexpr int kVResetPeriod = 8;

enum class RpcaMethod : int {
  kAlternating = 0,  // FISTA on S with L minimised out, adaptive restart (csrc/rpca.cpp)
  kApg = 1,          // accelerated proximal gradient on (L, S), step 1/2 (Lin et al. 2009)
};

// The one params struct of rpca (flash-attention's Flash_fwd_params): the
// options, checked and filled by rpca_params() (csrc/rpca.cpp), and the
// small-matrix batch, filled by rpca_forward() there; taken by the
// batched host loop (csrc/rpca.cpp), the CPU kernel (cpu/rpca_cpu.cpp) and the
// CUDA launcher (cuda/rpca_kernel.cu).
struct RpcaParams {
  // The options, already defaulted, floored and saturated for x's dtype.
  double mu;          // the fixed relaxation, unless `continuation`
  bool continuation;  // mu=None: mu_k decays from mu_0 to its floor (below)
  double lam, tol;
  int64_t max_iter;
  int64_t rank;       // > 0: each SVT randomized at this rank (host loop only); 0: exact
  RpcaMethod method;
  // The small-matrix batch.
  ScalarKind kind;                 // Float32 or Float64
  SmallBatchGeometry g, init_g;    // of x, and of init when there is one
  const void* x;
  const void* init;                // the starting S in x's dtype, or null (S = 0)
  const void* mu0;                 // (B,): the starting relaxation per matrix
  void *low_rank, *sparse;         // (B, m, n) contiguous
  int64_t* iterations;             // (B,)
  bool* converged;                 // (B,)
};

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

// Loads lane l: X from load(r, c) (M x N work coordinates), V = I, and the
// iterates: zero, or with `warm`, S = init(r, c) (in X's units; L starts at
// zero, since both methods compute L from S first). mu0 is the starting
// relaxation (fixed mu, or mu_0 of the continuation). A lane given no matrix
// (`empty`) holds zeros and finishes after one iteration. A non-finite entry
// of X or of the start makes the lane non-finite (stored as all-NaN).
template <typename T, int L, typename Load, typename Init>
PGSL_HOST_DEVICE void rpca_load_lane(RpcaLanes<T, L>& s, int l, int64_t M, int64_t N, Load&& load,
                                     Init&& init, bool warm, T mu0, bool empty) {
  T amax = T(0);
  bool finite = true;
  for (int64_t e = 0; e < M * N; ++e) {
    const T v = empty ? T(0) : load(e % M, e / M);
    const T s0 = empty || !warm ? T(0) : init(e % M, e / M);
    s.X[e * L + l] = v;
    s.Sk[e * L + l] = s0;
    const bool ok = std::isfinite(v);
    finite = finite && ok && std::isfinite(s0);
    amax = ok && std::fabs(v) > amax ? std::fabs(v) : amax;
  }
  const T scale = exact_scale_for<T>(amax);
  T norm2 = T(0);
  for (int64_t e = 0; e < M * N; ++e) {
    const T v = finite ? s.X[e * L + l] * scale : T(0);
    const T s0 = finite ? s.Sk[e * L + l] * scale : T(0);
    s.X[e * L + l] = v;
    norm2 += v * v;
    s.Lk[e * L + l] = s.Lp[e * L + l] = T(0);
    s.Sk[e * L + l] = s.Sp[e * L + l] = s0;
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

// Resets V to the identity on the lanes that start a reset period.
template <typename T, int L>
PGSL_HOST_DEVICE void rpca_reset_v(RpcaLanes<T, L>& s, int64_t N) {
  for (int l = 0; l < L; ++l)
    if (s.iter[l] % kVResetPeriod == 0)
      for (int64_t c = 0; c < N; ++c)
        for (int64_t r = 0; r < N; ++r) s.V[(c * N + r) * L + l] = r == c ? T(1) : T(0);
}

// Re-orthonormalises V (modified Gram-Schmidt on its columns) on the lanes
// that start a reset period.
template <typename T, int L>
PGSL_HOST_DEVICE void rpca_reorthonormalize_v(RpcaLanes<T, L>& s, int64_t N) {
  for (int l = 0; l < L; ++l) {
    if (s.iter[l] % kVResetPeriod != 0 || s.iter[l] == 0) continue;
    for (int64_t c = 0; c < N; ++c) {
      T* v = s.V + c * N * L + l;
      for (int64_t p = 0; p < c; ++p) {
        const T* u = s.V + p * N * L + l;
        T dot = T(0);
        for (int64_t r = 0; r < N; ++r) dot += u[r * L] * v[r * L];
        for (int64_t r = 0; r < N; ++r) v[r * L] -= dot * u[r * L];
      }
      T norm2 = T(0);
      for (int64_t r = 0; r < N; ++r) norm2 += v[r * L] * v[r * L];
      const T inv = T(1) / std::sqrt(norm2);
      for (int64_t r = 0; r < N; ++r) v[r * L] *= inv;
    }
  }
}

// The maths of one element and of one matrix's scalars, shared by the lane
// loops below and by the CUDA group kernel (cuda/rpca_kernel.cu, group_rpca_kernel),
// which spreads a matrix's elements over a warp: the same expressions, so the same
// rounding per element (only the order of the sums over elements differs).

// The momentum point cur + beta (cur - prev) of FISTA.
template <typename T>
PGSL_HOST_DEVICE T momentum_point(T cur, T prev, T beta) {
  return cur + beta * (cur - prev);
}

// The alternating method after the SVT, for one element: L from the shrunk
// reconstruction v (in residual form, v is the part removed from X - Y), S by
// soft thresholding, and the terms of the residual and the restart test.
template <typename T>
struct AlternatingUpdate {
  T low, sparse, step2, descent;
};
template <typename T>
PGSL_HOST_DEVICE AlternatingUpdate<T> alternating_update(T x, T y, T s_prev, T v, bool residual, T shrink) {
  const T low = residual ? (x - y) - v : v;
  const T sparse = soft_threshold_value<T>(x - low, shrink);
  const T step = sparse - y;
  return {low, sparse, step * step, step * (sparse - s_prev)};
}

// The APG gradient step at (YL, YS): the SVT input and the soft-thresholding input.
template <typename T>
PGSL_HOST_DEVICE T apg_low_rank_input(T yl, T ys, T x) {
  return yl - T(0.5) * (yl + ys - x);
}
template <typename T>
PGSL_HOST_DEVICE T apg_sparse_input(T yl, T ys, T x) {
  return ys - T(0.5) * (yl + ys - x);
}

// The APG optimality residual of one element, squared.
template <typename T>
PGSL_HOST_DEVICE T apg_residual2(T lk, T sk, T yl, T ys) {
  const T excess = lk + sk - yl - ys;
  const T rl = T(2) * (yl - lk) + excess;
  const T rs = T(2) * (ys - sk) + excess;
  return rl * rl + rs * rs;
}

// The end of an iteration for one matrix, both methods (the APG never
// restarts): the stopping test, the continuation of mu, FISTA's t, the count.
template <typename T>
PGSL_HOST_DEVICE void rpca_end_iteration(T res2, T x_norm, T tol, bool continuation, bool restart,
                                         int64_t max_iter, T& mu, T mu_floor, T& t, T& tp, int64_t& iter,
                                         bool& done, bool& converged) {
  const bool small = std::sqrt(res2) < tol * x_norm;
  const bool ok = small && (!continuation || mu <= mu_floor);
  if (continuation) {
    const T next = T(kContinuationDecay) * mu;
    mu = next > mu_floor ? next : mu_floor;
  }
  tp = restart ? T(1) : t;
  t = restart ? T(1) : (T(1) + std::sqrt(T(1) + T(4) * t * t)) / T(2);
  iter += 1;
  converged = ok;
  done = ok || iter >= max_iter;
}

// One iteration of the alternating method on every lane:
//     Y = S_k + beta_k (S_k - S_{k-1})
//     L = svt(X - Y, mu),  S_{k+1} = soft_threshold(X - L, lam mu)
// with the residual ||S_{k+1} - Y|| (the L part of a subgradient of the
// objective at (L, S_{k+1}); the S part is zero) and the gradient restart of
// O'Donoghue & Candes: when (Y - S_{k+1}) . (S_{k+1} - S_k) > 0, the momentum
// restarts. On return, done[l] says lane l has finished (converged[l]: by the
// tolerance; otherwise by max_iter).
template <typename T, int L>
PGSL_HOST_DEVICE void rpca_alternating_step(RpcaLanes<T, L>& s, int64_t M, int64_t N, T lam,
                                            bool continuation, T tol, int64_t max_iter,
                                            int max_sweeps, bool* done, bool* converged) {
  const int64_t size = M * N;
  T beta[L], shrink_s[L], tau[L];
  PGSL_SIMD
  for (int l = 0; l < L; ++l) {
    beta[l] = (s.tp[l] - T(1)) / s.t[l];
    shrink_s[l] = lam * s.mu[l];
    tau[l] = s.mu[l];
  }
  for (int64_t e = 0; e < size; ++e) {
    PGSL_SIMD
    for (int l = 0; l < L; ++l) {
      const int64_t k = e * L + l;
      const T sk = s.Sk[k];
      const T y = momentum_point<T>(sk, s.Sp[k], beta[l]);
      s.Sp[k] = sk;
      s.YS[k] = y;
      s.A[k] = s.X[k] - y;
    }
  }
  rpca_reorthonormalize_v<T, L>(s, N);
  multiply_right<T, L>(s.A, s.V, M, N, s.row);
  T negligible2[L];
  for (int l = 0; l < L; ++l) negligible2[l] = Epsilon<T>::value * Epsilon<T>::value * s.x_norm[l] * s.x_norm[l];
  jacobi_sweeps<T, L>(s.A, s.V, M, N, max_sweeps, negligible2);
  bool residual[L];
  shrink_columns<T, L>(s.A, M, N, tau, nullptr, residual);
  // L, the S update, the residual and the restart test in one pass.
  T res2[L], descent[L];
  for (int l = 0; l < L; ++l) res2[l] = descent[l] = T(0);
  reconstruct<T, L>(s.A, s.V, M, N, [&](int l, int64_t r, int64_t c, T v) {
    const int64_t k = (c * M + r) * L + l;
    const AlternatingUpdate<T> u = alternating_update<T>(s.X[k], s.YS[k], s.Sp[k], v, residual[l], shrink_s[l]);
    s.Lk[k] = u.low;
    s.Sk[k] = u.sparse;
    res2[l] += u.step2;
    descent[l] += u.descent;
  });
  for (int l = 0; l < L; ++l)
    rpca_end_iteration<T>(res2[l], s.x_norm[l], tol, continuation, descent[l] < T(0), max_iter, s.mu[l],
                          s.mu_floor[l], s.t[l], s.tp[l], s.iter[l], done[l], converged[l]);
}

// One APG iteration on every lane. On return, done[l] says lane l has
// finished (converged[l]: by the tolerance; otherwise by max_iter).
template <typename T, int L>
PGSL_HOST_DEVICE void rpca_apg_step(RpcaLanes<T, L>& s, int64_t M, int64_t N, T lam, bool continuation,
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
      const T yl = momentum_point<T>(lk, s.Lp[k], beta[l]);
      const T ys = momentum_point<T>(sk, s.Sp[k], beta[l]);
      s.Lp[k] = lk;
      s.Sp[k] = sk;
      s.YL[k] = yl;
      s.YS[k] = ys;
      s.A[k] = apg_low_rank_input<T>(yl, ys, s.X[k]);
      s.Sk[k] = soft_threshold_value<T>(apg_sparse_input<T>(yl, ys, s.X[k]), shrink_s[l]);
    }
  }
  // The nuclear-norm prox: warm-started Jacobi SVT of A into Lk.
  rpca_reset_v<T, L>(s, N);
  multiply_right<T, L>(s.A, s.V, M, N, s.row);
  jacobi_sweeps<T, L>(s.A, s.V, M, N, max_sweeps);
  bool residual[L];
  shrink_columns<T, L>(s.A, M, N, tau, nullptr, residual);
  reconstruct<T, L>(s.A, s.V, M, N, [&](int l, int64_t r, int64_t c, T v) {
    const int64_t k = (c * M + r) * L + l;
    // The SVT input, recomputed exactly as it was formed above, for the residual form.
    const T input = apg_low_rank_input<T>(s.YL[k], s.YS[k], s.X[k]);
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
      res2[l] += apg_residual2<T>(s.Lk[k], s.Sk[k], s.YL[k], s.YS[k]);
    }
  }
  for (int l = 0; l < L; ++l)
    rpca_end_iteration<T>(res2[l], s.x_norm[l], tol, continuation, false, max_iter, s.mu[l], s.mu_floor[l],
                          s.t[l], s.tp[l], s.iter[l], done[l], converged[l]);
}

template <typename T, int L>
PGSL_HOST_DEVICE void rpca_step(RpcaMethod method, RpcaLanes<T, L>& s, int64_t M, int64_t N, T lam,
                                bool continuation, T tol, int64_t max_iter, int max_sweeps, bool* done,
                                bool* converged) {
  if (method == RpcaMethod::kApg)
    rpca_apg_step<T, L>(s, M, N, lam, continuation, tol, max_iter, max_sweeps, done, converged);
  else
    rpca_alternating_step<T, L>(s, M, N, lam, continuation, tol, max_iter, max_sweeps, done, converged);
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
