// The fused RPCA iteration for small matrices, shared by the CPU kernel (L
// matrices per SIMD lane group, lanes refilled as matrices finish) and the
// CUDA kernel (one matrix per thread, L = 1). See csrc/rpca.cpp for the maths
// of both methods (kAlternating, the default, and kApg).
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
#include "pgsl/soft_threshold.h"
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
      const T y = sk + beta[l] * (sk - s.Sp[k]);
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
    const T x = s.X[k], y = s.YS[k];
    const T low = residual[l] ? (x - y) - v : v;
    const T sparse = soft_threshold_value<T>(x - low, shrink_s[l]);
    const T step = sparse - y;
    s.Lk[k] = low;
    s.Sk[k] = sparse;
    res2[l] += step * step;
    descent[l] += step * (sparse - s.Sp[k]);
  });
  for (int l = 0; l < L; ++l) {
    const bool small = std::sqrt(res2[l]) < tol * s.x_norm[l];
    const bool ok = small && (!continuation || s.mu[l] <= s.mu_floor[l]);
    if (continuation) {
      const T next = T(kContinuationDecay) * s.mu[l];
      s.mu[l] = next > s.mu_floor[l] ? next : s.mu_floor[l];
    }
    const bool restart = descent[l] < T(0);
    s.tp[l] = restart ? T(1) : s.t[l];
    s.t[l] = restart ? T(1) : (T(1) + std::sqrt(T(1) + T(4) * s.t[l] * s.t[l])) / T(2);
    s.iter[l] += 1;
    converged[l] = ok;
    done[l] = ok || s.iter[l] >= max_iter;
  }
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
  rpca_reset_v<T, L>(s, N);
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
