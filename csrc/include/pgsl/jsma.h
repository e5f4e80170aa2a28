// jsma_saliency_search: the pair score, its validity test, the tie rule and the
// pruning bound, shared by the CPU and CUDA kernels (so both pick the same pair,
// bit for bit).
//
// Shapes: grad_class, grad_others (B, N) of T (float or double), domain (B, N) bool;
// outputs p, q (B,) int64 and found (B,) bool.
//
// Per row, over pairs p < q both in the domain:
//   a = grad_class[p] + grad_class[q],  b = grad_others[p] + grad_others[q]
//   targeted:     valid when a > 0 and b < 0   (Papernot et al. 2016)
//   non-targeted: valid when a < 0 and b > 0   (PGSL's inverted conditions)
//   score = -a * b; the largest score wins, ties go to the smallest key p * N + q.
// A pair whose a, b or score is not finite is never valid (NaN/Inf never chosen).
//
// Oriented form used by the kernels. With u = +-grad_class and v = -+grad_others
// (signs chosen per mode) both sums must be positive:
//   su = u[p] + u[q] (= +-a exactly), sv = v[p] + v[q] (= -+b exactly),
//   score = su * sv (= -a * b exactly: negation is exact in IEEE arithmetic).
// A feature outside the domain, or with a non-finite gradient, is stored as
// u = v = -inf: every pair it is part of then has su = -inf or NaN, which fails
// su > 0, so the validity test needs no separate domain lookup.
//
// Pruning (exact). Let U = max u and V = max v over the row. For any valid pair
// containing p, u[q] <= U and v[q] <= V, and IEEE rounding is monotone, so
//   bound(p) = (u[p] + U) * (v[p] + V)   (computed the same way)
// is >= the score of every valid pair containing p; bound(p) = -inf when no pair
// containing p can be valid. A feature whose bound is strictly below a score
// already found cannot be part of the winner (not even of a tie), so it is skipped.
//
// Pareto covering (exact, used by the CPU kernel). If r dominates q
// (u[r] >= u[q] and v[r] >= v[q]) then, by the same monotonicity, the pair
// (p, r) scores at least as much as (p, q) and is valid whenever (p, q) is,
// unless it overflows. So with F = the features dominated by fewer than two
// others (in the strict order of jsma_dominates), every pair (p, q) has a
// partner r in F, r != p, scoring at least as much: the best score is reached
// within F x F, and the best partner of any p within F. Rows where a pair
// overflows fall back to the bound-pruned search.
//
// Every add and multiply goes through pair_add / pair_mul, which use the
// explicitly rounded intrinsics on the device (and in the CUDA emulator, which
// runs the device code): nvcc can never contract them into an FMA, and the host
// and device round the same way.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#include "pgsl/macros.h"

namespace pgsl {

template <typename T>
PGSL_HOST_DEVICE T pair_add(T a, T b) {
#if defined(__CUDA_ARCH__) || defined(PGSL_CUDA_EMULATION)
  if constexpr (sizeof(T) == 4) return __fadd_rn(a, b);
  else return __dadd_rn(a, b);
#else
  return a + b;
#endif
}

template <typename T>
PGSL_HOST_DEVICE T pair_mul(T a, T b) {
#if defined(__CUDA_ARCH__) || defined(PGSL_CUDA_EMULATION)
  if constexpr (sizeof(T) == 4) return __fmul_rn(a, b);
  else return __dmul_rn(a, b);
#else
  return a * b;
#endif
}

template <typename T>
PGSL_HOST_DEVICE T jsma_neg_inf() {
  return -std::numeric_limits<T>::infinity();
}

// The "no pair yet" score: below every valid score (valid scores are >= +0).
template <typename T>
PGSL_HOST_DEVICE T jsma_no_score() {
  return jsma_neg_inf<T>();
}

constexpr int64_t kJsmaNoKey = std::numeric_limits<int64_t>::max();

// Sizes and element strides of one search call (inputs may be strided views).
struct JsmaSearchParams {
  int64_t batch, n;
  int64_t gc_stride[2];   // row, feature strides of grad_class (elements)
  int64_t go_stride[2];   // of grad_others
  int64_t dom_stride[2];  // of domain
  bool targeted;
};

// Oriented gradients of one feature (see the header comment). Non-finite
// gradients and features outside the domain become (-inf, -inf).
template <typename T>
PGSL_HOST_DEVICE void jsma_orient(T grad_class, T grad_others, bool in_domain, bool targeted, T& u,
                                  T& v) {
  u = targeted ? grad_class : -grad_class;
  v = targeted ? -grad_others : grad_others;
  // |x| <= max is false for NaN and +-inf.
  const T big = std::numeric_limits<T>::max();
  const bool usable = in_domain && (u <= big && u >= -big) && (v <= big && v >= -big);
  u = usable ? u : jsma_neg_inf<T>();
  v = usable ? v : jsma_neg_inf<T>();
}

// The score of the pair (p, q) in oriented form; returns whether it is valid.
// `score` is written either way (invalid pairs may hold anything).
template <typename T>
PGSL_HOST_DEVICE bool jsma_pair(T up, T vp, T uq, T vq, T& score) {
  const T su = pair_add(up, uq);
  const T sv = pair_add(vp, vq);
  score = pair_mul(su, sv);
  // su, sv > 0 rule out NaN and -inf; score <= max rules out +inf (an overflow of
  // su, sv or the product).
  return su > T(0) && sv > T(0) && score <= std::numeric_limits<T>::max();
}

// As jsma_pair, and also reports whether the pair failed only by overflowing
// (both sums positive, but a sum or the product not finite). The Pareto search
// relies on "a pair dominating a valid pair is valid", which only an overflow breaks.
template <typename T>
PGSL_HOST_DEVICE bool jsma_pair_overflow(T up, T vp, T uq, T vq, T& score, bool& overflow) {
  const T su = pair_add(up, uq);
  const T sv = pair_add(vp, vq);
  score = pair_mul(su, sv);
  const bool positive = su > T(0) && sv > T(0);
  const bool finite = score <= std::numeric_limits<T>::max();
  overflow = positive && !finite;
  return positive && finite;
}

// Whether feature r strictly precedes feature q in the dominance order the
// Pareto search uses: r is at least as large in both u and v, and ahead in
// (u desc, v desc, index asc). A strict partial order even with duplicates.
template <typename T>
PGSL_HOST_DEVICE bool jsma_dominates(T ur, T vr, int64_t r, T uq, T vq, int64_t q) {
  return ur >= uq && vr >= vq && (ur > uq || vr > vq || r < q);
}

// The score of a pair, or jsma_no_score when the pair is invalid (branch-free,
// for vectorised loops).
template <typename T>
PGSL_HOST_DEVICE T jsma_masked_score(T up, T vp, T uq, T vq) {
  T score;
  const bool valid = jsma_pair(up, vp, uq, vq, score);
  return valid ? score : jsma_no_score<T>();
}

// Upper bound on the score of every valid pair containing a feature with
// oriented gradients (u, v), given the row maxima U and V; -inf if none can be valid.
template <typename T>
PGSL_HOST_DEVICE T jsma_bound(T u, T v, T u_max, T v_max) {
  const T su = pair_add(u, u_max);
  const T sv = pair_add(v, v_max);
  return (su > T(0) && sv > T(0)) ? pair_mul(su, sv) : jsma_neg_inf<T>();
}

// The key that encodes the tie rule: smaller keys win among equal scores.
PGSL_HOST_DEVICE int64_t jsma_key(int64_t p, int64_t q, int64_t n) {
  return p < q ? p * n + q : q * n + p;
}

// Whether candidate (score, key) beats the incumbent (best_score, best_key):
// a larger score, or the same score and a smaller key. A total order on valid
// candidates (keys are unique), so any merge order gives the same winner.
template <typename T>
PGSL_HOST_DEVICE bool jsma_better(T score, int64_t key, T best_score, int64_t best_key) {
  return score > best_score || (score == best_score && key < best_key);
}

// Whether a feature whose bound is `bound` may still be part of the winner,
// given the best score found so far (`found` false: nothing found yet).
template <typename T>
PGSL_HOST_DEVICE bool jsma_worth_visiting(T bound, bool found, T best_score) {
  // Not strict: a feature with bound == best may hold a tie with a smaller key.
  // (Bounds are never NaN: -inf or a product of two positive numbers.)
  return found ? bound >= best_score : bound > jsma_neg_inf<T>();
}

}  // namespace pgsl
