// jsma_saliency_search on the CPU: O(N) memory per row, exact pruning.
//
// Per row: orient the gradients (pgsl::jsma_orient), bound every feature
// (pgsl::jsma_bound), scan the pairs of the feature with the largest bound,
// then visit the features whose bound is not below the best score found so far,
// in descending bound order, stopping at the first one below it. Each visit is a
// vectorised max over one row of the pair matrix followed by a search for the
// first feature reaching it. The result is the brute-force winner exactly (see
// pgsl/jsma.h for why the bound is safe).
//
// Parallelism: over rows (at::parallel_for); when there are fewer rows than
// threads and rows are long, each pair-row scan is split across threads instead
// and the chunks are merged with the same total order, so the result never
// depends on the thread count or on which rows share a batch.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <mutex>
#include <tuple>
#include <vector>

#include "../checks.h"
#include "pgsl/jsma.h"

namespace pgsl {
namespace {

constexpr const char* kOp = "pgsl_ext.jsma_saliency_search";

#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define PGSL_JSMA_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define PGSL_JSMA_CLONES
#endif

// The largest masked score of the pairs (c, q), q in [begin, end). Lane-wise
// blends over a fixed-width block (no reduction semantics needed, so the
// compiler vectorises it without fast-math), then a scalar max over the lanes.
template <typename T>
inline T scan_max_impl(const T* u, const T* v, T uc, T vc, int64_t begin, int64_t end) {
  constexpr int kLanes = 64 / sizeof(T);
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
PGSL_JSMA_CLONES float scan_max_f32(const float* u, const float* v, float uc, float vc,
                                    int64_t begin, int64_t end) {
  return scan_max_impl<float>(u, v, uc, vc, begin, end);
}
PGSL_JSMA_CLONES double scan_max_f64(const double* u, const double* v, double uc, double vc,
                                     int64_t begin, int64_t end) {
  return scan_max_impl<double>(u, v, uc, vc, begin, end);
}
template <typename T>
inline T scan_max(const T* u, const T* v, T uc, T vc, int64_t begin, int64_t end) {
  if constexpr (std::is_same_v<T, float>) return scan_max_f32(u, v, uc, vc, begin, end);
  else return scan_max_f64(u, v, uc, vc, begin, end);
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
// tie rule restricted to one pair row; across chunks, the larger score wins and
// then the smaller q.
template <typename T>
std::pair<T, int64_t> best_partner(const T* u, const T* v, int64_t c, int64_t n, bool split_rows) {
  constexpr int64_t kGrain = 1 << 14;
  if (!split_rows || n < 2 * kGrain) return best_partner_in(u, v, c, 0, n);
  std::pair<T, int64_t> best{jsma_no_score<T>(), -1};
  std::mutex lock;
  at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
    const auto part = best_partner_in(u, v, c, begin, end);
    if (part.second < 0) return;
    const std::lock_guard<std::mutex> guard(lock);
    if (best.second < 0 || jsma_better(part.first, part.second, best.first, best.second))
      best = part;
  });
  return best;
}

struct RowResult {
  int64_t p = -1, q = -1;
  bool found = false;
};

// Workspace of one thread: oriented gradients, bounds, candidate list.
template <typename T>
struct RowBuffers {
  std::vector<T> u, v, bound;
  std::vector<int64_t> candidates;
  explicit RowBuffers(int64_t n) : u(n), v(n), bound(n) { candidates.reserve(n); }
};

template <typename T>
RowResult search_row(const JsmaSearchParams& p, const T* gc, const T* go, const bool* dom,
                     RowBuffers<T>& buf, bool split_rows) {
  const int64_t n = p.n;
  T* u = buf.u.data();
  T* v = buf.v.data();
  T* bound = buf.bound.data();
  T u_max = jsma_neg_inf<T>(), v_max = jsma_neg_inf<T>();
  for (int64_t k = 0; k < n; ++k) {
    jsma_orient<T>(gc[k * p.gc_stride[1]], go[k * p.go_stride[1]], dom[k * p.dom_stride[1]],
                   p.targeted, u[k], v[k]);
    u_max = u[k] > u_max ? u[k] : u_max;
    v_max = v[k] > v_max ? v[k] : v_max;
  }
  int64_t top = -1;
  T top_bound = jsma_neg_inf<T>();
  for (int64_t k = 0; k < n; ++k) {
    bound[k] = jsma_bound<T>(u[k], v[k], u_max, v_max);
    if (bound[k] > top_bound) {
      top_bound = bound[k];
      top = k;
    }
  }
  RowResult result;
  if (top < 0) return result;  // no feature can be part of a valid pair

  T best_score = jsma_no_score<T>();
  int64_t best_key = kJsmaNoKey;
  auto visit = [&](int64_t c) {
    const auto [score, q] = best_partner(u, v, c, n, split_rows);
    if (q < 0) return;
    const int64_t key = jsma_key(c, q, n);
    if (!result.found || jsma_better(score, key, best_score, best_key)) {
      best_score = score;
      best_key = key;
      result.found = true;
    }
  };
  visit(top);

  auto& cand = buf.candidates;
  cand.clear();
  for (int64_t k = 0; k < n; ++k)
    if (k != top && jsma_worth_visiting(bound[k], result.found, best_score)) cand.push_back(k);
  std::sort(cand.begin(), cand.end(), [&](int64_t a, int64_t b) { return bound[a] > bound[b]; });
  for (const int64_t c : cand) {
    if (!jsma_worth_visiting(bound[c], result.found, best_score)) break;
    visit(c);
  }
  if (result.found) {
    result.p = best_key / n;
    result.q = best_key % n;
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

  AT_DISPATCH_FLOATING_TYPES(grad_class.scalar_type(), "jsma_saliency_search_cpu", [&] {
    const scalar_t* gc = grad_class.const_data_ptr<scalar_t>();
    const scalar_t* go = grad_others.const_data_ptr<scalar_t>();
    auto run_rows = [&](int64_t begin, int64_t end, bool split_rows) {
      RowBuffers<scalar_t> buf(params.n);
      for (int64_t b = begin; b < end; ++b) {
        const RowResult r = search_row<scalar_t>(params, gc + b * params.gc_stride[0],
                                                 go + b * params.go_stride[0],
                                                 dom + b * params.dom_stride[0], buf, split_rows);
        p_ptr[b] = r.p;
        q_ptr[b] = r.q;
        f_ptr[b] = r.found;
      }
    };
    // Few long rows: split each pair-row scan across threads instead.
    if (batch < at::get_num_threads() && params.n >= (int64_t{1} << 15)) {
      run_rows(0, batch, true);
    } else {
      at::parallel_for(0, batch, 1, [&](int64_t begin, int64_t end) { run_rows(begin, end, false); });
    }
  });
  return {p_out, q_out, found};
}

}  // namespace

TORCH_LIBRARY_IMPL(pgsl_ext, CPU, m) {
  m.impl("jsma_saliency_search", &jsma_saliency_search_cpu);
}

}  // namespace pgsl
