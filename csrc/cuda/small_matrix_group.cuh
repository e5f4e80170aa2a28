// The "group" design of the small-matrix svt and rpca kernels: one warp per
// matrix (MAGMA's batched one-sided Jacobi, gesvj_batched_small_sm, with a
// warp where MAGMA takes a block). Why a warp: the PGSL batch is 8,192
// matrices of 14 x 14, whose round-robin Jacobi round has 7 disjoint column
// pairs of 14 rows, about a warp's worth of work; a warp synchronises with
// __syncwarp and reduces with shuffles, never with a block barrier, so the
// warps of a block run independently; and 4 warps (4 matrices) per block keep
// the matrix, V and rpca's iterates of the PGSL batch in 22 KB of shared
// memory per block, 32 resident warps per SM on an H100 (bench/RESULTS.md,
// "Small-matrix kernels: the model").
//
// Within a warp: each round of a sweep rotates its n/2 disjoint column pairs at
// once, `width` lanes per pair (a power of two) splitting the rows, the three
// dot products summed over those lanes by xor shuffles (every lane gets the
// same bits); elementwise work and the loads and stores walk the matrix in the
// output's order, lane l on elements l, l + 32, ...: coalesced for the output
// and a contiguous input. The maths of an element, a rotation and a matrix's
// scalars is pgsl/svd_jacobi.h's and pgsl/robust_pca.h's.
//
// A matrix whose data does not fit the shared memory a block may use lives in
// a per-warp slice of a global workspace instead (GroupLayout::shared false):
// the same code through plain pointers.
#pragma once

#include <algorithm>
#include <cstdint>

#include "cuda_types.cuh"
#include "pgsl/robust_pca.h"
#include "pgsl/small_batch_geometry.h"
#include "pgsl/svd_jacobi.h"

namespace pgsl {

constexpr int kGroupLanes = 32;  // a warp per matrix
constexpr unsigned kGroupMask = 0xffffffffu;
constexpr int kGroupsPerBlock = 4;
// __launch_bounds__(kGroupsPerBlock * kGroupLanes, kGroupMinBlocksPerSm<T>): float32
// gets at most 65536 / (128 * 8) = 64 registers per thread, so that 8 blocks (32 warps)
// fit an SM; float64 at most 128 (4 blocks), since its shared memory, twice float32's,
// already keeps it to 5 blocks per SM at 14 x 14, and 64 registers spill.
template <typename T>
constexpr int kGroupMinBlocksPerSm = sizeof(T) == 4 ? 8 : 4;

// Where the matrices of a launch live. Per matrix: A (M x N, leading dimension
// lda) and V (N x N, ldv), both odd so that the lanes of a round, reading
// different columns, fall in different shared-memory banks; then rpca's
// `state_arrays` M x N iterates, in the output's element order.
struct GroupLayout {
  int lda, ldv, state_arrays, groups_per_block;
  int64_t elements;  // per matrix
  bool shared;       // in shared memory; else in the workspace, one slice per warp of the grid
  unsigned blocks;
  int64_t shared_bytes(int element_bytes) const { return shared ? groups_per_block * elements * element_bytes : 0; }
  int64_t workspace_elements() const { return shared ? 0 : int64_t(blocks) * groups_per_block * elements; }
  // This warp's matrix data: its slot of the block's shared memory, or of the workspace.
  template <typename T>
  __device__ T* matrix_data(T* shared_memory, T* workspace) const {
    const int warp = int(threadIdx.x) / kGroupLanes;
    return shared ? shared_memory + warp * elements
                  : workspace + (int64_t(blockIdx.x) * groups_per_block + warp) * elements;
  }
};

inline GroupLayout group_layout(const SmallBatchGeometry& g, int element_bytes, int state_arrays) {
  GroupLayout layout{};
  const int64_t M = g.rows(), N = g.cols();
  layout.lda = int(M | 1);
  layout.ldv = int(N | 1);
  layout.state_arrays = state_arrays;
  layout.elements = layout.lda * N + layout.ldv * N + state_arrays * M * N;
  // Empty matrices (n = 0) need no storage but still a launch: svt reports kept = 0 for them.
  const int64_t fit = max_dynamic_shared_bytes() / std::max<int64_t>(layout.elements * element_bytes, 1);
  layout.shared = fit >= 1;
  layout.groups_per_block = int(fit >= kGroupsPerBlock || !layout.shared ? kGroupsPerBlock : fit);
  layout.blocks = blocks_for(g.batch, layout.groups_per_block);
  return layout;
}

// Sum over aligned segments of `width` lanes (a power of two): xor shuffles, so
// every lane of a segment gets the same bits (IEEE addition commutes).
template <typename T>
__device__ __forceinline__ T segment_sum(T v, int width) {
  for (int offset = width / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(kGroupMask, v, offset);
  return v;
}

template <typename T>
__device__ __forceinline__ T group_max(T v) {
  for (int offset = kGroupLanes / 2; offset > 0; offset /= 2) {
    const T other = __shfl_xor_sync(kGroupMask, v, offset);
    v = other > v ? other : v;
  }
  return v;
}

// What group_load_scan found in one matrix: the largest finite |value| (every lane holds it) and
// whether every value, and whatever the store read beside it, was finite (the group's vote).
template <typename T>
struct GroupScan {
  T amax;
  bool finite;
};

// Matrix i of the batch read lane by lane in output order (the group-stride loop both the svt and
// the rpca kernels start with): each value goes to store(o, r, c, v), which keeps it where its
// kernel wants it and returns whether anything else it read there (rpca's warm start) is finite.
template <typename T, typename Store>
__device__ __forceinline__ GroupScan<T> group_load_scan(const SmallBatchGeometry& g, const T* x, int64_t i, int size,
                                                        int lane, Store&& store) {
  T amax = T(0);
  bool finite = true;
  for (int o = lane; o < size; o += kGroupLanes) {
    int r, c;
    g.out_coords(o, r, c);
    const T v = x[g.in_offset(i, r, c)];
    const bool ok = std::isfinite(v);
    finite = store(o, r, c, v) && finite && ok;
    amax = ok && std::fabs(v) > amax ? std::fabs(v) : amax;
  }
  finite = __all_sync(kGroupMask, finite);
  return {group_max(amax), finite};
}

template <typename T>
__device__ __forceinline__ void group_set_identity(T* V, int ldv, int N, int lane) {
  for (int e = lane; e < N * N; e += kGroupLanes) V[(e / N) * ldv + e % N] = e / N == e % N ? T(1) : T(0);
}

// jacobi_sweeps (svd_jacobi.h) with the round-robin ordering: the same
// rotations, stopping rule and negligible-column floor (negligible2 < 0: none).
template <typename T>
__device__ int group_jacobi_sweeps(T* A, int lda, T* V, int ldv, int M, int N, int max_sweeps, T negligible2,
                                   int lane) {
  const T tol = jacobi_tolerance<T>(M);
  const int n_even = N + (N & 1), pairs = n_even / 2;
  int width = kGroupLanes;
  while (width > 1 && width * pairs > kGroupLanes) width /= 2;
  const int pair = lane / width, sub = lane % width;
  int sweep = 0;
  while (sweep < max_sweeps) {
    ++sweep;
    bool rotated = false;
    for (int round = 0; round + 1 < n_even; ++round) {
      int i = 0, j = 0;
      if (pair < pairs) round_robin_pair(n_even, round, pair, i, j);
      const bool mine = pair < pairs && j < N;
      T* ai = A + i * lda;
      T* aj = A + j * lda;
      T alpha = T(0), beta = T(0), gamma = T(0);
      if (mine)
        for (int r = sub; r < M; r += width) {
          const T x = ai[r], y = aj[r];
          alpha += x * x;
          beta += y * y;
          gamma += x * y;
        }
      alpha = segment_sum(alpha, width);
      beta = segment_sum(beta, width);
      gamma = segment_sum(gamma, width);
      const bool negligible = negligible2 >= T(0) && (alpha < beta ? alpha : beta) <= negligible2;
      T c = T(1), s = T(0);
      const bool rotate = mine && jacobi_rotation<T>(alpha, beta, negligible ? T(0) : gamma, tol, c, s);
      if (rotate) {
        for (int r = sub; r < M; r += width) {
          const T x = ai[r], y = aj[r];
          ai[r] = c * x - s * y;
          aj[r] = s * x + c * y;
        }
        T* vi = V + i * ldv;
        T* vj = V + j * ldv;
        for (int r = sub; r < N; r += width) {
          const T x = vi[r], y = vj[r];
          vi[r] = c * x - s * y;
          vj[r] = s * x + c * y;
        }
      }
      rotated = rotated || rotate;
      __syncwarp();  // the next round pairs these columns with others, owned by other lanes
    }
    if (!__any_sync(kGroupMask, rotated)) break;
  }
  return sweep;
}

// shrink_columns (svd_jacobi.h): the lane owning column c sums its squares in
// row order, as the CPU does, and scales it. Returns whether the residual form
// is used; sets *kept (lane 0) when given.
template <typename T>
__device__ bool group_shrink_columns(T* A, int lda, int M, int N, T tau, int* kept, int lane) {
  int count = 0;
  for (int c = lane; c < N; c += kGroupLanes) {
    T norm2 = T(0);
    for (int r = 0; r < M; ++r) norm2 += A[c * lda + r] * A[c * lda + r];
    count += std::sqrt(norm2) > tau ? 1 : 0;
  }
  count = segment_sum(count, kGroupLanes);
  const bool residual = 2 * count > N;
  if (kept != nullptr && lane == 0) *kept = count;
  for (int c = lane; c < N; c += kGroupLanes) {
    T norm2 = T(0);
    for (int r = 0; r < M; ++r) norm2 += A[c * lda + r] * A[c * lda + r];
    const T g = shrink_column_factor<T>(std::sqrt(norm2), tau, residual);
    for (int r = 0; r < M; ++r) A[c * lda + r] *= g;
  }
  __syncwarp();
  return residual;
}

// (A V^T)(r, c), summed over k in order as reconstruct() does.
template <typename T>
__device__ __forceinline__ T group_reconstruct_at(const T* A, int lda, const T* V, int ldv, int N, int r, int c) {
  T acc = T(0);
  for (int k = 0; k < N; ++k) acc += A[k * lda + r] * V[k * ldv + c];
  return acc;
}

// A <- B V where B(r, k) = input(o) at o = the output-order index of (r, k):
// multiply_right (svd_jacobi.h) on an A that is formed on the fly.
template <typename T, typename Input>
__device__ void group_multiply_right(T* A, int lda, const T* V, int ldv, const SmallBatchGeometry& g, int M, int N,
                                     Input&& input, int lane) {
  for (int o = lane; o < M * N; o += kGroupLanes) {
    int r, c;
    g.out_coords(o, r, c);
    T acc = T(0);
    for (int k = 0; k < N; ++k) acc += input(int(g.out_offset(0, r, k))) * V[c * ldv + k];
    A[c * lda + r] = acc;
  }
  __syncwarp();
}

// rpca_reorthonormalize_v (rpca.h), the rows of each column split over the lanes.
template <typename T>
__device__ void group_reorthonormalize(T* V, int ldv, int N, int lane) {
  for (int c = 0; c < N; ++c) {
    T* v = V + c * ldv;
    for (int p = 0; p < c; ++p) {
      const T* u = V + p * ldv;
      T dot = T(0);
      for (int r = lane; r < N; r += kGroupLanes) dot += u[r] * v[r];
      dot = segment_sum(dot, kGroupLanes);
      for (int r = lane; r < N; r += kGroupLanes) v[r] -= dot * u[r];
      __syncwarp();
    }
    T norm2 = T(0);
    for (int r = lane; r < N; r += kGroupLanes) norm2 += v[r] * v[r];
    norm2 = segment_sum(norm2, kGroupLanes);
    const T inv = T(1) / std::sqrt(norm2);
    for (int r = lane; r < N; r += kGroupLanes) v[r] *= inv;
    __syncwarp();
  }
}

}  // namespace pgsl
