// jsma_saliency_search CUDA kernel: one block per row (grid-stride over rows).
//
// Per row, the same steps as the CPU kernel, with the same pgsl/jsma.h math:
//   1. orient the gradients into the workspace (u, v) and reduce their maxima;
//   2. bound every feature and pick the one with the largest bound;
//   3. scan that feature's pairs: the best score found is a lower bound on the winner;
//   4. every warp takes features p (strided) whose bound is not below that score
//      and scans q > p with its 32 lanes (coalesced loads, warp-uniform skips);
//   5. block reduction of (score, key) with jsma_better, the tie rule.
// jsma_better is a total order on candidates, so the reduction order never
// changes the winner: the result equals the CPU kernel's bit for bit.
#include "cuda_types.cuh"
#include "launchers.h"
#include "pgsl/jsma.h"

namespace pgsl {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

template <typename T>
struct Candidate {
  T score;
  int64_t key;
};

template <typename T>
__device__ __forceinline__ void take_if_better(Candidate<T>& best, T score, int64_t key) {
  if (jsma_better(score, key, best.score, best.key)) {
    best.score = score;
    best.key = key;
  }
}

// Block-wide reduction under jsma_better; every thread receives the winner.
template <typename T>
__device__ Candidate<T> block_best(Candidate<T> c, T* s_score, int64_t* s_key) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  for (int offset = 16; offset > 0; offset /= 2) {
    const T other_score = __shfl_down_sync(0xffffffffu, c.score, offset);
    const int64_t other_key = __shfl_down_sync(0xffffffffu, c.key, offset);
    take_if_better(c, other_score, other_key);
  }
  __syncthreads();  // the shared slots may still be read from the previous reduction
  if (lane == 0) {
    s_score[warp] = c.score;
    s_key[warp] = c.key;
  }
  __syncthreads();
  Candidate<T> best{s_score[0], s_key[0]};
  for (int w = 1; w < kWarps; ++w) take_if_better(best, s_score[w], s_key[w]);
  return best;
}

template <typename T>
__device__ T block_max(T x, T* s_score) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  for (int offset = 16; offset > 0; offset /= 2) {
    const T other = __shfl_down_sync(0xffffffffu, x, offset);
    x = other > x ? other : x;
  }
  __syncthreads();
  if (lane == 0) s_score[warp] = x;
  __syncthreads();
  T m = s_score[0];
  for (int w = 1; w < kWarps; ++w) m = s_score[w] > m ? s_score[w] : m;
  return m;
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    jsma_search_rows(JsmaSearchParams p, const T* __restrict__ gc, const T* __restrict__ go,
                     const bool* __restrict__ dom, T* __restrict__ u_ws, T* __restrict__ v_ws,
                     T* __restrict__ bound_ws, int64_t* __restrict__ p_out,
                     int64_t* __restrict__ q_out, bool* __restrict__ found_out) {
  __shared__ T s_score[kWarps];
  __shared__ int64_t s_key[kWarps];
  const int64_t n = p.n;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  for (int64_t row = blockIdx.x; row < p.batch; row += gridDim.x) {
    const T* g_c = gc + row * p.gc_stride[0];
    const T* g_o = go + row * p.go_stride[0];
    const bool* d = dom + row * p.dom_stride[0];
    T* u = u_ws + row * n;
    T* v = v_ws + row * n;
    T* bound = bound_ws + row * n;

    // 1. Oriented gradients and their maxima.
    T u_max = jsma_neg_inf<T>(), v_max = jsma_neg_inf<T>();
    for (int64_t k = threadIdx.x; k < n; k += kThreads) {
      T uk, vk;
      jsma_orient<T>(g_c[k * p.gc_stride[1]], g_o[k * p.go_stride[1]], d[k * p.dom_stride[1]],
                     p.targeted, uk, vk);
      u[k] = uk;
      v[k] = vk;
      u_max = uk > u_max ? uk : u_max;
      v_max = vk > v_max ? vk : v_max;
    }
    u_max = block_max(u_max, s_score);
    v_max = block_max(v_max, s_score);

    // 2. Bounds and the feature with the largest one (the first on ties).
    Candidate<T> top{jsma_neg_inf<T>(), kJsmaNoKey};
    for (int64_t k = threadIdx.x; k < n; k += kThreads) {
      const T b = jsma_bound<T>(u[k], v[k], u_max, v_max);
      bound[k] = b;
      take_if_better(top, b, k);
    }
    top = block_best(top, s_score, s_key);  // also makes bound[] visible to the block

    Candidate<T> best{jsma_no_score<T>(), kJsmaNoKey};
    if (top.score > jsma_neg_inf<T>()) {
      // 3. The pairs of the top feature.
      const int64_t c = top.key;
      const T uc = u[c], vc = v[c];
      for (int64_t q = threadIdx.x; q < n; q += kThreads) {
        const T s = jsma_masked_score<T>(uc, vc, u[q], v[q]);
        if (q != c && s > jsma_no_score<T>()) take_if_better(best, s, jsma_key(c, q, n));
      }
      best = block_best(best, s_score, s_key);
      const bool found = best.key != kJsmaNoKey;
      const T threshold = best.score;

      // 4. Pairs (p, q > p) of every feature whose bound may still reach the winner.
      for (int64_t i = warp; i < n; i += kWarps) {
        if (!jsma_worth_visiting(bound[i], found, threshold)) continue;
        const T ui = u[i], vi = v[i];
        for (int64_t q = i + 1 + lane; q < n; q += 32) {
          const T s = jsma_masked_score<T>(ui, vi, u[q], v[q]);
          if (s > jsma_no_score<T>()) take_if_better(best, s, i * n + q);
        }
      }
      // 5. The winner.
      best = block_best(best, s_score, s_key);
    }
    if (threadIdx.x == 0) {
      const bool found = best.key != kJsmaNoKey;
      p_out[row] = found ? best.key / n : -1;
      q_out[row] = found ? best.key % n : -1;
      found_out[row] = found;
    }
    __syncthreads();  // the next row reuses the shared slots
  }
}

}  // namespace

cudaError_t launch_jsma_saliency_search(ScalarKind kind, const JsmaSearchParams& p,
                                        const void* grad_class, const void* grad_others,
                                        const bool* domain, void* workspace, int64_t* p_out,
                                        int64_t* q_out, bool* found, cudaStream_t stream) {
  if (p.batch == 0) return cudaSuccess;
  const unsigned blocks = blocks_for(p.batch, 1);  // a block per row
  return float_switch<void, void>(kind, cudaErrorInvalidValue, [&](auto tag) {
    using T = decltype(tag);
    T* ws = static_cast<T*>(workspace);
    const int64_t plane = p.batch * p.n;
    launch_kernel<jsma_search_rows<T>>(
        blocks, kThreads, 0, stream, p, static_cast<const T*>(grad_class),
        static_cast<const T*>(grad_others), domain, ws, ws + plane, ws + 2 * plane, p_out, q_out,
        found);
    return cudaGetLastError();
  });
}

}  // namespace pgsl
