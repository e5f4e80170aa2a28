// jsma_saliency_search on the CPU: O(N) memory per row, exact, parallel over rows.
//
// Per row: orient the gradients and compact the features that can be part of a
// valid pair (pgsl::jsma_orient), then
//   1. the Pareto search (pgsl/jsma.h): a small set F of features dominated by
//      fewer than two others covers every pair, so the best score is the best
//      within F x F; the tie rule then needs one vectorised pass per feature of
//      F that reaches it, over the features before the incumbent's first one;
//   2. if a pair overflowed (the covering argument needs finite scores), the
//      bound-pruned search: visit features in descending bound order, each a
//      vectorised max over one row of the pair matrix, until the bound drops
//      below the best score.
// Both return the brute-force winner exactly. Rows are independent and each
// row's result depends on that row only, so the thread count and the batch
// composition never change a result.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <vector>

#include "../jsma_saliency_search.h"
#include "simd_clones.h"
#include "pgsl/jsma.h"

namespace pgsl {
namespace {

constexpr const char* kOp = "pgsl_ext.jsma_saliency_search";


// The largest masked score of the pairs (c, q), q in [begin, end). Lane-wise
// blends over a fixed-width block (no reduction semantics needed, so the
// compiler vectorises it without fast-math), then a scalar max over the lanes.
template <typename T>
PGSL_CPU_INLINE T scan_max_impl(const T* u, const T* v, T uc, T vc, int64_t begin, int64_t end) {
  constexpr int kLanes = kCpuLanes<T>;
  T lane[kLanes];
  for (int l = 0; l < kLanes; ++l) lane[l] = jsma_no_score<T>();
  int64_t q = begin;
  for (; q + kLanes <= end; q += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      const T s = jsma_masked_score<T>(uc, vc, u[q + l], v[q + l]);
      lane[l] = s > lane[l] ? s : lane[l];
    }
  }
  T best = jsma_no_score<T>();
  for (; q < end; ++q) {
    const T s = jsma_masked_score<T>(uc, vc, u[q], v[q]);
    best = s > best ? s : best;
  }
  for (int l = 0; l < kLanes; ++l) best = lane[l] > best ? lane[l] : best;
  return best;
}
// The cloned entry points: one non-template overload per type (target_clones
// takes no templates), so a caller's T picks its clone set by overloading.
PGSL_CPU_CLONES float scan_max(const float* u, const float* v, float uc, float vc, int64_t begin,
                               int64_t end) {
  return scan_max_impl<float>(u, v, uc, vc, begin, end);
}
PGSL_CPU_CLONES double scan_max(const double* u, const double* v, double uc, double vc,
                                int64_t begin, int64_t end) {
  return scan_max_impl<double>(u, v, uc, vc, begin, end);
}

// The first q in [begin, end) whose pair with c scores `target`, or -1.
template <typename T>
inline int64_t first_reaching(const T* u, const T* v, T uc, T vc, int64_t begin, int64_t end,
                              T target) {
  for (int64_t q = begin; q < end; ++q)
    if (jsma_masked_score<T>(uc, vc, u[q], v[q]) == target) return q;
  return -1;
}

// Best partner of c within [begin, end) (c excluded): (score, q), the first q
// on ties; score = jsma_no_score when there is no valid pair.
template <typename T>
inline std::pair<T, int64_t> best_partner_in(const T* u, const T* v, int64_t c, int64_t begin,
                                             int64_t end) {
  const T uc = u[c], vc = v[c];
  const int64_t split = std::clamp(c, begin, end);
  const int64_t resume = std::clamp(c + 1, begin, end);
  const T m = std::max(scan_max(u, v, uc, vc, begin, split), scan_max(u, v, uc, vc, resume, end));
  if (!(m > jsma_no_score<T>())) return {jsma_no_score<T>(), -1};
  int64_t q = first_reaching(u, v, uc, vc, begin, split, m);
  if (q < 0) q = first_reaching(u, v, uc, vc, resume, end, m);
  return {m, q};
}

// Pair keys of (c, q) grow with q, so "the first q reaching the max" is the
// tie rule restricted to one pair row.
template <typename T>
std::pair<T, int64_t> best_partner(const T* u, const T* v, int64_t c, int64_t n) {
  return best_partner_in(u, v, c, 0, n);
}

struct RowResult {
  int64_t p = -1, q = -1;
  bool found = false;
};

// Workspace of one thread. Features in the domain with finite gradients are
// compacted (in index order, so pair keys on positions order pairs exactly as
// keys on feature indices do); the rest never form a valid pair.
template <typename T>
struct RowBuffers {
  std::vector<T> u, v, bound;
  std::vector<int64_t> index, candidates, index_scratch;
  std::vector<int32_t> dominators;
  std::vector<uint8_t> hit;
  explicit RowBuffers(int64_t n) : u(n), v(n), bound(n), index(n), dominators(n), hit(n) {
    candidates.reserve(n);
    index_scratch.reserve(n);
  }
};

// Pair of positions (a < b) and whether one was found.
struct Winner {
  int64_t a = -1, b = -1;
  bool found = false;
};

// The bound-pruned search over the m compacted features (see pgsl/jsma.h):
// visit features in descending bound order until the bound drops below the
// best score. Exact for any input; the fallback of the Pareto search.
template <typename T>
Winner bound_search(const T* u, const T* v, int64_t m, RowBuffers<T>& buf) {
  T* bound = buf.bound.data();
  T u_max = jsma_neg_inf<T>(), v_max = jsma_neg_inf<T>();
  for (int64_t k = 0; k < m; ++k) {
    u_max = u[k] > u_max ? u[k] : u_max;
    v_max = v[k] > v_max ? v[k] : v_max;
  }
  int64_t top = -1;
  T top_bound = jsma_neg_inf<T>();
  for (int64_t k = 0; k < m; ++k) {
    bound[k] = jsma_bound<T>(u[k], v[k], u_max, v_max);
    if (bound[k] > top_bound) {
      top_bound = bound[k];
      top = k;
    }
  }
  Winner w;
  if (top < 0) return w;  // no feature can be part of a valid pair

  T best_score = jsma_no_score<T>();
  int64_t best_key = kJsmaNoKey;
  auto visit = [&](int64_t c) {
    const auto [score, q] = best_partner(u, v, c, m);
    if (q < 0) return;
    const int64_t key = jsma_key(c, q, m);
    if (!w.found || jsma_better(score, key, best_score, best_key)) {
      best_score = score;
      best_key = key;
      w.found = true;
    }
  };
  visit(top);
  auto& cand = buf.candidates;
  cand.clear();
  for (int64_t k = 0; k < m; ++k)
    if (k != top && jsma_worth_visiting(bound[k], w.found, best_score)) cand.push_back(k);
  std::sort(cand.begin(), cand.end(), [&](int64_t a, int64_t b) { return bound[a] > bound[b]; });
  for (const int64_t c : cand) {
    if (!jsma_worth_visiting(bound[c], w.found, best_score)) break;
    visit(c);
  }
  if (w.found) {
    w.a = best_key / m;
    w.b = best_key % m;
  }
  return w;
}

// For every position i: how many of the pivots dominate it (capped use: >= 2
// means "not in the covering set"). Vectorised over i.
template <typename T>
PGSL_CPU_INLINE void count_dominators_impl(const T* u, const T* v, int64_t m, const int64_t* pivots,
                                  int npivots, int32_t* count) {
  for (int64_t i = 0; i < m; ++i) count[i] = 0;
  for (int k = 0; k < npivots; ++k) {
    const int64_t r = pivots[k];
    const T ur = u[r], vr = v[r];
    for (int64_t i = 0; i < m; ++i)
      count[i] += jsma_dominates<T>(ur, vr, r, u[i], v[i], i) ? 1 : 0;
  }
}
PGSL_CPU_CLONES void count_dominators(const float* u, const float* v, int64_t m,
                                      const int64_t* pivots, int npivots, int32_t* count) {
  count_dominators_impl<float>(u, v, m, pivots, npivots, count);
}
PGSL_CPU_CLONES void count_dominators(const double* u, const double* v, int64_t m,
                                      const int64_t* pivots, int npivots, int32_t* count) {
  count_dominators_impl<double>(u, v, m, pivots, npivots, count);
}

// hit[i] |= the pair (i, r) scores exactly `target`, for i in [0, end), i != r.
template <typename T>
PGSL_CPU_INLINE void mark_hits_impl(const T* u, const T* v, int64_t end, int64_t r, T target, uint8_t* hit) {
  const T ur = u[r], vr = v[r];
  for (int64_t i = 0; i < end; ++i)
    hit[i] |= (jsma_masked_score<T>(u[i], v[i], ur, vr) == target && i != r) ? 1 : 0;
}
PGSL_CPU_CLONES void mark_hits(const float* u, const float* v, int64_t end, int64_t r,
                               float target, uint8_t* hit) {
  mark_hits_impl<float>(u, v, end, r, target, hit);
}
PGSL_CPU_CLONES void mark_hits(const double* u, const double* v, int64_t end, int64_t r,
                               double target, uint8_t* hit) {
  mark_hits_impl<double>(u, v, end, r, target, hit);
}

// Pivots for the dominance filter: the two largest features along a few
// directions of the (u, v) plane (scaled by the spread of each). Only the
// filter's strength depends on this choice, never the result.
template <typename T>
int select_pivots(const T* u, const T* v, int64_t m, int64_t* pivots) {
  constexpr int kDirections = 5;
  T u_scale = T(0), v_scale = T(0);
  for (int64_t i = 0; i < m; ++i) {
    u_scale = std::max(u_scale, std::fabs(u[i]));
    v_scale = std::max(v_scale, std::fabs(v[i]));
  }
  T wu[kDirections], wv[kDirections];
  for (int d = 0; d < kDirections; ++d) {
    const double angle = 1.5707963267948966 * d / (kDirections - 1);
    wu[d] = u_scale > 0 ? static_cast<T>(std::cos(angle) / u_scale) : T(1);
    wv[d] = v_scale > 0 ? static_cast<T>(std::sin(angle) / v_scale) : T(1);
  }
  T first[kDirections], second[kDirections];
  int64_t first_at[kDirections], second_at[kDirections];
  for (int d = 0; d < kDirections; ++d) {
    first[d] = second[d] = jsma_neg_inf<T>();
    first_at[d] = second_at[d] = -1;
  }
  for (int64_t i = 0; i < m; ++i) {
    for (int d = 0; d < kDirections; ++d) {
      const T x = wu[d] * u[i] + wv[d] * v[i];
      if (x > second[d] || second_at[d] < 0) {
        if (x > first[d] || first_at[d] < 0) {
          second[d] = first[d];
          second_at[d] = first_at[d];
          first[d] = x;
          first_at[d] = i;
        } else {
          second[d] = x;
          second_at[d] = i;
        }
      }
    }
  }
  int count = 0;
  auto add = [&](int64_t i) {
    if (i < 0) return;
    for (int k = 0; k < count; ++k)
      if (pivots[k] == i) return;
    pivots[count++] = i;
  };
  for (int d = 0; d < kDirections; ++d) {
    add(first_at[d]);
    add(second_at[d]);
  }
  return count;
}

// The Pareto search over the m compacted features (see pgsl/jsma.h). Returns
// false when a pair overflowed (the covering argument does not hold): the
// caller then runs the bound search.
template <typename T>
bool pareto_search(const T* u, const T* v, int64_t m, RowBuffers<T>& buf, Winner& w) {
  // 1. A superset of the covering set F: features dominated by fewer than two
  //    pivots, then by fewer than two of the survivors (sweep in (u, v) order).
  int64_t pivots[16];
  const int npivots = select_pivots(u, v, m, pivots);
  int32_t* dominators = buf.dominators.data();
  count_dominators(u, v, m, pivots, npivots, dominators);
  auto& cover = buf.candidates;
  cover.clear();
  for (int64_t i = 0; i < m; ++i)
    if (dominators[i] < 2) cover.push_back(i);
  std::sort(cover.begin(), cover.end(), [&](int64_t a, int64_t b) {
    return u[a] > u[b] || (u[a] == u[b] && (v[a] > v[b] || (v[a] == v[b] && a < b)));
  });
  {
    // Every earlier feature has u >= u[q] and precedes q; it dominates q iff v >= v[q].
    T v_first = jsma_neg_inf<T>(), v_second = jsma_neg_inf<T>();
    int64_t kept = 0, seen = 0;
    for (const int64_t q : cover) {
      if (seen < 2 || v_second < v[q]) cover[kept++] = q;
      if (v[q] > v_first || seen == 0) {
        v_second = v_first;
        v_first = v[q];
      } else if (v[q] > v_second || seen == 1) {
        v_second = v[q];
      }
      ++seen;
    }
    cover.resize(kept);
  }

  // 2. The best score: reached within F x F.
  T best = jsma_no_score<T>();
  int64_t best_a = -1, best_b = -1;
  const int64_t f = static_cast<int64_t>(cover.size());
  for (int64_t i = 0; i < f; ++i) {
    const int64_t a = cover[i];
    for (int64_t j = i + 1; j < f; ++j) {
      const int64_t b = cover[j];
      T score;
      bool overflow;
      const bool valid = jsma_pair_overflow<T>(u[a], v[a], u[b], v[b], score, overflow);
      if (overflow) return false;
      if (valid && (best_a < 0 || jsma_better(score, jsma_key(a, b, m), best, jsma_key(best_a, best_b, m)))) {
        best = score;
        best_a = std::min(a, b);
        best_b = std::max(a, b);
      }
    }
  }
  if (best_a < 0) return true;  // no valid pair at all

  // 3. The tie rule: the winner's first feature is the smallest feature that
  //    has a partner reaching `best`, and its partner the first one reaching it.
  //    Every feature's best partner score is reached within F, and only by
  //    partners r that reach `best` within F x F already (if (i, r) scores
  //    `best`, so does (r', r) for the r' in F that dominates i); only features
  //    before best_a need checking.
  auto& reaching = buf.index_scratch;
  reaching.clear();
  for (int64_t i = 0; i < f; ++i) {
    const int64_t a = cover[i];
    for (int64_t j = 0; j < f; ++j) {
      T score;
      if (j != i && jsma_pair<T>(u[a], v[a], u[cover[j]], v[cover[j]], score) && score == best) {
        reaching.push_back(a);
        break;
      }
    }
  }
  uint8_t* hit = buf.hit.data();
  std::fill(hit, hit + best_a, uint8_t{0});
  for (const int64_t r : reaching) mark_hits(u, v, best_a, r, best, hit);
  int64_t a = best_a;
  for (int64_t i = 0; i < best_a; ++i)
    if (hit[i]) {
      a = i;
      break;
    }
  int64_t b = first_reaching(u, v, u[a], v[a], a + 1, m, best);
  w.a = a;
  w.b = b;
  w.found = true;
  return true;
}

template <typename T>
RowResult search_row(const JsmaSearchParams& p, const T* gc, const T* go, const bool* dom,
                     RowBuffers<T>& buf) {
  T* u = buf.u.data();
  T* v = buf.v.data();
  int64_t* index = buf.index.data();
  int64_t m = 0;
  for (int64_t k = 0; k < p.n; ++k) {
    T uk, vk;
    jsma_orient<T>(gc[k * p.gc_stride[1]], go[k * p.go_stride[1]], dom[k * p.dom_stride[1]],
                   p.targeted, uk, vk);
    u[m] = uk;
    v[m] = vk;
    index[m] = k;
    m += uk > jsma_neg_inf<T>() ? 1 : 0;
  }
  RowResult result;
  if (m < 2) return result;
  Winner w;
  if (!pareto_search(u, v, m, buf, w)) w = bound_search(u, v, m, buf);
  if (w.found) {
    result.p = index[w.a];
    result.q = index[w.b];
    result.found = true;
  }
  return result;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> jsma_saliency_search_cpu(
    const at::Tensor& grad_class, const at::Tensor& grad_others, const at::Tensor& domain,
    bool targeted) {
  const JsmaSearchParams params =
      jsma_search_params(grad_class, grad_others, domain, targeted, kOp);
  const int64_t batch = params.batch;
  at::Tensor p_out = at::full({batch}, -1, grad_class.options().dtype(at::kLong));
  at::Tensor q_out = at::full({batch}, -1, grad_class.options().dtype(at::kLong));
  at::Tensor found = at::zeros({batch}, grad_class.options().dtype(at::kBool));
  if (batch == 0 || params.n < 2) return {p_out, q_out, found};
  int64_t* p_ptr = p_out.data_ptr<int64_t>();
  int64_t* q_ptr = q_out.data_ptr<int64_t>();
  bool* f_ptr = found.data_ptr<bool>();
  const bool* dom = domain.const_data_ptr<bool>();

  const bool ran = float_switch<void, void>(scalar_kind(grad_class.scalar_type()), false, [&](auto tag) {
    using T = decltype(tag);
    const T* gc = grad_class.const_data_ptr<T>();
    const T* go = grad_others.const_data_ptr<T>();
    at::parallel_for(0, batch, 1, [&](int64_t begin, int64_t end) {
      RowBuffers<T> buf(params.n);
      for (int64_t b = begin; b < end; ++b) {
        const RowResult r = search_row<T>(params, gc + b * params.gc_stride[0],
                                          go + b * params.go_stride[0],
                                          dom + b * params.dom_stride[0], buf);
        p_ptr[b] = r.p;
        q_ptr[b] = r.q;
        f_ptr[b] = r.found;
      }
    });
    return true;
  });
  TORCH_INTERNAL_ASSERT(ran, "jsma_saliency_search_cpu: ", grad_class.scalar_type(), " passed the dtype check");
  return {p_out, q_out, found};
}

}  // namespace

TORCH_LIBRARY_IMPL(pgsl_ext, CPU, m) {
  m.impl("jsma_saliency_search", &jsma_saliency_search_cpu);
}

}  // namespace pgsl
