// One-sided (Hestenes) Jacobi SVD and singular value thresholding of small
// matrices, shared by the CPU and CUDA kernels.
//
// The routines work on L independent matrices at once ("lanes"): element (r, c)
// of lane l lives at A[(c * M + r) * L + l], columns contiguous, lanes
// innermost. The CPU runs L = kCpuLanes<T> matrices (cpu/simd_clones.h: one
// 64-byte vector of T per step); CUDA's thread design runs L = 1 per thread. Every decision is taken per lane,
// so a lane's result never depends on the others in its group. CUDA's group design
// (cuda/small_matrix_group.cuh, a warp per matrix) runs the same sweeps in round-robin order
// from the per-pair and per-column pieces: jacobi_rotation, round_robin_pair, shrink_column_factor.
//
// Work matrices are M x N with M >= N (a wide input is handled as its
// transpose). Orthogonalising the columns of A by plane rotations from the
// right, A V = U diag(sigma), so with f_k = max(sigma_k - tau, 0) / sigma_k
//     svt(A, tau) = U diag(max(sigma - tau, 0)) V^T = (A V) diag(f) V^T.
// One-sided Jacobi keeps high relative accuracy (no Gram matrix is formed), so
// float32 stays accurate for condition numbers far beyond 1 / sqrt(eps).
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#include "pgsl/macros.h"
#include "pgsl/scalar_kind.h"
#include "pgsl/small_batch_geometry.h"

namespace pgsl {

template <typename T> struct Epsilon;
template <> struct Epsilon<float> { static constexpr float value = 1.1920929e-07f; };
template <> struct Epsilon<double> { static constexpr double value = 2.220446049250313e-16; };

// Largest N handled by the Jacobi kernels; larger matrices take the blocked
// (LAPACK / cuSOLVER) path. Up to 64 the batched kernel beats a batched
// LAPACK SVD by far on the CPU (measured: 64 x 64 x 64).
constexpr int kJacobiMaxN = 64;
constexpr int kJacobiMaxSweeps = 40;

// The rotation (c, s) that makes columns i, j orthogonal, given
// alpha = |a_i|^2, beta = |a_j|^2, gamma = a_i . a_j. Returns false (c = 1,
// s = 0) when they already are, to the relative tolerance `tol`. Branch-free,
// so that a loop over lanes vectorises.
template <typename T>
PGSL_HOST_DEVICE bool jacobi_rotation(T alpha, T beta, T gamma, T tol, T& c, T& s) {
  const bool rotate = std::fabs(gamma) > tol * std::sqrt(alpha) * std::sqrt(beta);
  const T g = rotate ? gamma : T(1);
  const T zeta = (beta - alpha) / (T(2) * g);
  // The smaller root of t^2 + 2 zeta t - 1 = 0; 1 + zeta^2 may overflow to
  // inf for a nearly orthogonal pair, which gives t = 0 (no rotation).
  const T t = std::copysign(T(1), zeta) / (std::fabs(zeta) + std::sqrt(T(1) + zeta * zeta));
  const T cos = T(1) / std::sqrt(T(1) + t * t);
  c = rotate ? cos : T(1);
  s = rotate ? cos * t : T(0);
  return rotate;
}

// Convergence tolerance of the column-pair test for an M-row matrix.
template <typename T>
PGSL_HOST_DEVICE T jacobi_tolerance(int64_t M) {
  return std::sqrt(static_cast<T>(M > 1 ? M : 1)) * Epsilon<T>::value;
}

// The shrink factor of one singular value: max(sigma - tau, 0) / sigma.
template <typename T>
PGSL_HOST_DEVICE T svt_shrink_factor(T sigma, T tau) {
  return sigma > tau ? (sigma - tau) / sigma : T(0);
}

// The factor that scales column k after the sweeps: f_k in the direct form,
// g_k = min(sigma_k, tau) / sigma_k in the residual form (shrink_columns).
template <typename T>
PGSL_HOST_DEVICE T shrink_column_factor(T sigma, T tau, bool residual) {
  return residual ? (sigma > tau ? tau / sigma : T(1)) : svt_shrink_factor<T>(sigma, tau);
}

// Pair p of round `round` of a round-robin (parallel) Jacobi ordering of
// `n_even` columns (N rounded up to even; column N, if it exists, is a dummy
// whose pairs are skipped): each round's n_even / 2 pairs are disjoint, so
// they rotate at once, and the n_even - 1 rounds of a sweep meet every pair
// exactly once (the circle method: column n_even - 1 stays, the others turn).
// Sets i < j.
PGSL_HOST_DEVICE void round_robin_pair(int n_even, int round, int p, int& i, int& j) {
  const int turning = n_even - 1;
  const int a = p == 0 ? turning : (round + p) % turning;
  const int b = (round - p + turning) % turning;
  i = a < b ? a : b;
  j = a < b ? b : a;
}

// The exponents of the smallest and largest normal powers of two.
template <typename T> struct NormalExponents;
template <> struct NormalExponents<float> { static constexpr int min = -126, max = 127; };
template <> struct NormalExponents<double> { static constexpr int min = -1022, max = 1023; };

// A power of two that brings max|a| into [0.5, 1): scaling by it is exact, and
// squares of the scaled entries neither overflow nor underflow. The power is
// kept normal (2^-e itself overflows when max|a| is subnormal, and a
// subnormal scale is flushed where denormals are off), so a subnormal max|a|
// lands in [2^-22, 1) (float; [2^-51, 1) double) and the top binade of the
// format in [2, 4): still far from overflow and underflow for the sums of at
// most 64 x 64 squares.
template <typename T>
PGSL_HOST_DEVICE T exact_scale_for(T max_abs) {
  if (!(max_abs > T(0))) return T(1);
  int e = 0;
  (void)std::frexp(max_abs, &e);
  const int power = -e < NormalExponents<T>::min ? NormalExponents<T>::min
                    : -e > NormalExponents<T>::max ? NormalExponents<T>::max
                                                   : -e;
  return std::ldexp(T(1), power);
}

// [a_i, a_j] <- [a_i, a_j] [[c, s], [-s, c]] for `rows` rows of each lane.
template <typename T, int L>
PGSL_HOST_DEVICE void rotate_columns(T* ai, T* aj, int64_t rows, const T* c, const T* s) {
  for (int64_t r = 0; r < rows; ++r) {
    T* x = ai + r * L;
    T* y = aj + r * L;
    PGSL_SIMD
    for (int l = 0; l < L; ++l) {
      const T xi = x[l], yj = y[l];
      x[l] = c[l] * xi - s[l] * yj;
      y[l] = s[l] * xi + c[l] * yj;
    }
  }
}

// Cyclic one-sided Jacobi sweeps on L matrices of M x N (M >= N), rotating the
// columns of A and accumulating the rotations into V (N x N, same layout).
// Stops after the first sweep in which no lane rotated; returns the number of
// sweeps run. `negligible2` (per lane, or null): a pair whose smaller squared
// column norm is at most this is left alone. A rank-deficient A (ReLU maps
// with zero rows) has columns at the rounding level of the matrix, which never
// pass the relative test (each rotation of a large column adds more rounding
// than they hold), so without a floor every call runs max_sweeps.
template <typename T, int L>
PGSL_HOST_DEVICE int jacobi_sweeps(T* A, T* V, int64_t M, int64_t N, int max_sweeps,
                                   const T* negligible2 = nullptr) {
  const T tol = jacobi_tolerance<T>(M);
  int sweep = 0;
  while (sweep < max_sweeps) {
    ++sweep;
    bool rotated = false;
    for (int64_t i = 0; i + 1 < N; ++i) {
      for (int64_t j = i + 1; j < N; ++j) {
        T* ai = A + i * M * L;
        T* aj = A + j * M * L;
        T alpha[L], beta[L], gamma[L], c[L], s[L];
        PGSL_SIMD
        for (int l = 0; l < L; ++l) alpha[l] = beta[l] = gamma[l] = T(0);
        for (int64_t r = 0; r < M; ++r) {
          const T* x = ai + r * L;
          const T* y = aj + r * L;
          PGSL_SIMD
          for (int l = 0; l < L; ++l) {
            alpha[l] += x[l] * x[l];
            beta[l] += y[l] * y[l];
            gamma[l] += x[l] * y[l];
          }
        }
        int any = 0;
        PGSL_SIMD_ANY
        for (int l = 0; l < L; ++l) {
          const bool negligible = negligible2 != nullptr && (alpha[l] < beta[l] ? alpha[l] : beta[l]) <= negligible2[l];
          any |= int(jacobi_rotation<T>(alpha[l], beta[l], negligible ? T(0) : gamma[l], tol, c[l], s[l]));
        }
        if (!any) continue;
        rotated = true;
        rotate_columns<T, L>(ai, aj, M, c, s);
        rotate_columns<T, L>(V + i * N * L, V + j * N * L, N, c, s);
      }
    }
    if (!rotated) break;
  }
  return sweep;
}

template <typename T, int L>
PGSL_HOST_DEVICE void set_identity(T* V, int64_t N) {
  for (int64_t c = 0; c < N; ++c)
    for (int64_t r = 0; r < N; ++r)
      PGSL_SIMD
      for (int l = 0; l < L; ++l) V[(c * N + r) * L + l] = r == c ? T(1) : T(0);
}

// A <- A V (warm start from a previous V, whose columns are nearly the right
// singular vectors). `row` is scratch of N * L.
template <typename T, int L>
PGSL_HOST_DEVICE void multiply_right(T* A, const T* V, int64_t M, int64_t N, T* row) {
  for (int64_t r = 0; r < M; ++r) {
    for (int64_t c = 0; c < N; ++c) {
      PGSL_SIMD
      for (int l = 0; l < L; ++l) row[c * L + l] = T(0);
      for (int64_t k = 0; k < N; ++k)
        PGSL_SIMD
        for (int l = 0; l < L; ++l) row[c * L + l] += A[(k * M + r) * L + l] * V[(c * N + k) * L + l];
    }
    for (int64_t c = 0; c < N; ++c)
      PGSL_SIMD
      for (int l = 0; l < L; ++l) A[(c * M + r) * L + l] = row[c * L + l];
  }
}

// After the sweeps: sigma_k = |a_k| and the shrink of each column. Per lane,
// either the direct form, A diag(f) V^T with f = max(sigma - tau, 0) / sigma,
// or, when more than half the singular values survive, the residual form
// X - A diag(g) V^T with g = min(sigma, tau) / sigma (residual[l] = true):
// rounding in the rotations then only touches the part that is removed, which
// is small, instead of the whole matrix. Scales the columns of A by f or g and
// returns per lane the number of singular values above tau in `kept` (may be
// null). N <= kJacobiMaxN.
template <typename T, int L>
PGSL_HOST_DEVICE void shrink_columns(T* A, int64_t M, int64_t N, const T* tau, int* kept, bool* residual) {
  T sigma[kJacobiMaxN * L];
  int count[L];
  for (int l = 0; l < L; ++l) count[l] = 0;
  for (int64_t c = 0; c < N; ++c) {
    const T* a = A + c * M * L;
    T norm2[L];
    PGSL_SIMD
    for (int l = 0; l < L; ++l) norm2[l] = T(0);
    for (int64_t r = 0; r < M; ++r)
      PGSL_SIMD
      for (int l = 0; l < L; ++l) norm2[l] += a[r * L + l] * a[r * L + l];
    for (int l = 0; l < L; ++l) {
      sigma[c * L + l] = std::sqrt(norm2[l]);
      count[l] += sigma[c * L + l] > tau[l] ? 1 : 0;
    }
  }
  for (int l = 0; l < L; ++l) {
    residual[l] = 2 * count[l] > N;
    if (kept != nullptr) kept[l] = count[l];
  }
  for (int64_t c = 0; c < N; ++c) {
    T* a = A + c * M * L;
    T g[L];
    for (int l = 0; l < L; ++l) {
      g[l] = shrink_column_factor<T>(sigma[c * L + l], tau[l], residual[l]);
    }
    for (int64_t r = 0; r < M; ++r)
      PGSL_SIMD
      for (int l = 0; l < L; ++l) a[r * L + l] *= g[l];
  }
}

// out(r, c) = sum_k A(r, k) V(c, k) for r < M, c < N, written through `store`
// as store(lane, r, c, value).
template <typename T, int L, typename Store>
PGSL_HOST_DEVICE void reconstruct(const T* A, const T* V, int64_t M, int64_t N, Store&& store) {
  for (int64_t c = 0; c < N; ++c) {
    for (int64_t r = 0; r < M; ++r) {
      T acc[L];
      PGSL_SIMD
      for (int l = 0; l < L; ++l) acc[l] = T(0);
      for (int64_t k = 0; k < N; ++k)
        PGSL_SIMD
        for (int l = 0; l < L; ++l) acc[l] += A[(k * M + r) * L + l] * V[(k * N + c) * L + l];
      for (int l = 0; l < L; ++l) store(l, r, c, acc[l]);
    }
  }
}

}  // namespace pgsl

namespace pgsl {

// The svt kernel family's params (causal-conv1d's ConvParamsBase): filled by
// svt_params() (csrc/svt.cpp), taken by the CPU kernel (cpu/svt_cpu.cpp) and
// the CUDA launcher (cuda/svt_kernel.cu) alike.
struct SvtParams {
  ScalarKind kind;       // Float32 or Float64
  SmallBatchGeometry g;  // of x; out is (B, m, n) contiguous
  const void* x;
  const void* tau;       // (B,) in x's dtype
  void* out;
  int* kept;             // (B,): how many singular values exceeded tau
};

// SVT of one lane group, end to end: load (exactly rescaled), sweep, shrink,
// reconstruct, store (rescaled back). A lane whose matrix holds NaN or Inf is
// computed as zero and stored as all-NaN: it never affects the other lanes. `load(l, r, c)` and `store(l, r, c, v)`
// address the M x N work matrix of lane l (the caller maps a wide input onto
// its transpose). A holds M * N * L, V holds N * N * L. Returns the sweeps run.
template <typename T, int L, typename Load, typename Store>
PGSL_HOST_DEVICE int svt_group(int64_t M, int64_t N, Load&& load, Store&& store, const T* tau_in,
                               T* A, T* V, int* kept, int max_sweeps) {
  T amax[L], scale[L], tau[L];
  bool finite[L];
  PGSL_SIMD
  for (int l = 0; l < L; ++l) {
    amax[l] = T(0);
    finite[l] = true;
  }
  for (int64_t c = 0; c < N; ++c)
    for (int64_t r = 0; r < M; ++r)
      for (int l = 0; l < L; ++l) {
        const T v = load(l, r, c);
        A[(c * M + r) * L + l] = v;
        const bool ok = std::isfinite(v);
        finite[l] = finite[l] && ok;
        amax[l] = ok && std::fabs(v) > amax[l] ? std::fabs(v) : amax[l];
      }
  PGSL_SIMD
  for (int l = 0; l < L; ++l) {
    scale[l] = exact_scale_for<T>(amax[l]);
    tau[l] = tau_in[l] * scale[l];
  }
  for (int64_t k = 0; k < M * N; ++k)
    PGSL_SIMD
    for (int l = 0; l < L; ++l) A[k * L + l] = finite[l] ? A[k * L + l] * scale[l] : T(0);
  set_identity<T, L>(V, N);
  const int sweeps = jacobi_sweeps<T, L>(A, V, M, N, max_sweeps);
  bool residual[L];
  shrink_columns<T, L>(A, M, N, tau, kept, residual);
  reconstruct<T, L>(A, V, M, N, [&](int l, int64_t r, int64_t c, T v) {
    const T part = v / scale[l];
    store(l, r, c, !finite[l] ? std::numeric_limits<T>::quiet_NaN() : residual[l] ? load(l, r, c) - part : part);
  });
  return sweeps;
}

}  // namespace pgsl
