// Small-matrix RPCA on CUDA, in two designs (SmallMatrixDesign, launchers.h).
// One launch covers the batch, and each matrix runs its whole loop to its own
// stopping point: no per-iteration launches and no host synchronisation.
//   thread: one matrix per thread, running exactly the per-matrix code the CPU
//           kernel runs (pgsl/robust_pca.h with one lane), on a per-thread slice of
//           a global workspace.
//   group:  one warp per matrix, the matrix, V and the iterates in shared
//           memory (small_matrix_group.cuh).
#include "cuda_types.cuh"
#include "launchers.h"
#include "pgsl/robust_pca.h"
#include "small_matrix_group.cuh"

namespace pgsl {
namespace {

constexpr int kThreads = 64;

template <typename T>
__global__ void small_rpca_kernel(RpcaParams p, T* workspace) {
  const SmallBatchGeometry& g = p.g;
  const T* __restrict__ x = static_cast<const T*>(p.x);
  const T* __restrict__ mu0 = static_cast<const T*>(p.mu0);
  const T* init = static_cast<const T*>(p.init);
  T* __restrict__ low_rank = static_cast<T*>(p.low_rank);
  T* __restrict__ sparse = static_cast<T*>(p.sparse);
  const int64_t M = g.rows(), N = g.cols();
  const int64_t step = int64_t(gridDim.x) * blockDim.x;  // the grid is capped (blocks_for)
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < g.batch; i += step) {
    RpcaLanes<T, 1> s;
    s.bind(workspace + i * RpcaLanes<T, 1>::workspace(M, N), M, N);
    rpca_load_lane<T, 1>(
        s, 0, M, N, [&](int64_t r, int64_t c) { return x[g.in_offset(i, r, c)]; },
        [&](int64_t r, int64_t c) { return init[p.init_g.in_offset(i, r, c)]; },
        init != nullptr, mu0[i], false);
    bool done = false, ok = false;
    while (!done)
      rpca_step<T, 1>(p.method, s, M, N, static_cast<T>(p.lam), p.continuation,
                      static_cast<T>(p.tol), p.max_iter, kJacobiMaxSweeps, &done, &ok);
    rpca_store_lane<T, 1>(s, 0, M, N, [&](int64_t r, int64_t c, T low, T sp) {
      low_rank[g.out_offset(i, r, c)] = low;
      sparse[g.out_offset(i, r, c)] = sp;
    });
    p.iterations[i] = s.finite[0] ? s.iter[0] : 0;
    p.converged[i] = ok && s.finite[0];
  }
}

// The M x N iterates a group keeps per matrix (GroupLayout::state_arrays), in
// the output's element order: X, S_k, S_{k-1}, Y_S, L_k; the APG adds L_{k-1}, Y_L.
int rpca_state_arrays(RpcaMethod method) { return method == RpcaMethod::kApg ? 7 : 5; }

// rpca_load_lane, the rpca_step loop and rpca_store_lane (pgsl/robust_pca.h) by a warp.
template <typename T>
__global__ void __launch_bounds__(kGroupsPerBlock * kGroupLanes, kGroupMinBlocksPerSm<T>)
    group_rpca_kernel(RpcaParams p, GroupLayout layout, T* workspace) {
  PGSL_DYNAMIC_SHARED(T, shared_memory);
  const SmallBatchGeometry& g = p.g;
  const T* __restrict__ x = static_cast<const T*>(p.x);
  const T* init = static_cast<const T*>(p.init);
  const int M = int(g.rows()), N = int(g.cols()), size = M * N;
  const int lane = int(threadIdx.x) % kGroupLanes, lda = layout.lda, ldv = layout.ldv;
  const bool apg = p.method == RpcaMethod::kApg;
  const T lam = static_cast<T>(p.lam), tol = static_cast<T>(p.tol);
  T* A = layout.matrix_data(shared_memory, workspace);
  T* V = A + lda * N;
  T* X = V + ldv * N;
  T* Sk = X + size;
  T* Sp = Sk + size;
  T* YS = Sp + size;
  T* Lk = YS + size;
  T* Lp = Lk + size;  // APG only
  T* YL = Lp + size;  // APG only
  const int64_t step = int64_t(gridDim.x) * layout.groups_per_block;  // the grid is capped (blocks_for)
  for (int64_t i = int64_t(blockIdx.x) * layout.groups_per_block + threadIdx.x / kGroupLanes; i < g.batch;
       i += step) {
    // rpca_load_lane
    const GroupScan<T> scan = group_load_scan(g, x, i, size, lane, [&](int o, int r, int c, T v) {
      const T s0 = init != nullptr ? init[p.init_g.in_offset(i, r, c)] : T(0);
      X[o] = v;
      Sk[o] = s0;
      return bool(std::isfinite(s0));
    });
    const bool finite = scan.finite;
    const T scale = exact_scale_for<T>(scan.amax);
    T norm2 = T(0);
    for (int o = lane; o < size; o += kGroupLanes) {
      const T v = finite ? X[o] * scale : T(0);
      const T s0 = finite ? Sk[o] * scale : T(0);
      X[o] = v;
      norm2 += v * v;
      Lk[o] = T(0);
      Sk[o] = Sp[o] = s0;
      if (apg) Lp[o] = T(0);
    }
    norm2 = segment_sum(norm2, kGroupLanes);
    group_set_identity(V, ldv, N, lane);
    __syncwarp();
    T t = T(1), tp = T(1);
    T mu = static_cast<const T*>(p.mu0)[i] * scale;
    const T mu_floor = mu * T(kContinuationFloor);
    const T x_norm = norm2 > T(0) ? std::sqrt(norm2) : T(1);
    int64_t iter = 0;
    bool done = false, converged = false;
    while (!done) {
      const T beta = (tp - T(1)) / t;
      const T shrink = apg ? T(0.5) * lam * mu : lam * mu;
      const T tau = apg ? T(0.5) * mu : mu;
      T res2 = T(0), descent = T(0);
      if (apg) {
        // rpca_apg_step
        for (int o = lane; o < size; o += kGroupLanes) {
          const T lk = Lk[o], sk = Sk[o];
          const T yl = momentum_point<T>(lk, Lp[o], beta);
          const T ys = momentum_point<T>(sk, Sp[o], beta);
          Lp[o] = lk;
          Sp[o] = sk;
          YL[o] = yl;
          YS[o] = ys;
          Sk[o] = soft_threshold_value<T>(apg_sparse_input<T>(yl, ys, X[o]), shrink);
        }
        if (iter % kVResetPeriod == 0) group_set_identity(V, ldv, N, lane);
        __syncwarp();
        group_multiply_right<T>(A, lda, V, ldv, g, M, N,
                                [&](int e) { return apg_low_rank_input<T>(YL[e], YS[e], X[e]); }, lane);
        group_jacobi_sweeps<T>(A, lda, V, ldv, M, N, kJacobiMaxSweeps, T(-1), lane);
        const bool residual = group_shrink_columns<T>(A, lda, M, N, tau, nullptr, lane);
        for (int o = lane; o < size; o += kGroupLanes) {
          int r, c;
          g.out_coords(o, r, c);
          const T v = group_reconstruct_at(A, lda, V, ldv, N, r, c);
          const T low = residual ? apg_low_rank_input<T>(YL[o], YS[o], X[o]) - v : v;
          Lk[o] = low;
          res2 += apg_residual2<T>(low, Sk[o], YL[o], YS[o]);
        }
      } else {
        // rpca_alternating_step
        for (int o = lane; o < size; o += kGroupLanes) {
          const T sk = Sk[o];
          YS[o] = momentum_point<T>(sk, Sp[o], beta);
          Sp[o] = sk;
        }
        __syncwarp();
        if (iter % kVResetPeriod == 0 && iter != 0) group_reorthonormalize(V, ldv, N, lane);
        group_multiply_right<T>(A, lda, V, ldv, g, M, N, [&](int e) { return X[e] - YS[e]; }, lane);
        const T negligible2 = Epsilon<T>::value * Epsilon<T>::value * x_norm * x_norm;
        group_jacobi_sweeps<T>(A, lda, V, ldv, M, N, kJacobiMaxSweeps, negligible2, lane);
        const bool residual = group_shrink_columns<T>(A, lda, M, N, tau, nullptr, lane);
        for (int o = lane; o < size; o += kGroupLanes) {
          int r, c;
          g.out_coords(o, r, c);
          const T v = group_reconstruct_at(A, lda, V, ldv, N, r, c);
          const AlternatingUpdate<T> u = alternating_update<T>(X[o], YS[o], Sp[o], v, residual, shrink);
          Lk[o] = u.low;
          Sk[o] = u.sparse;
          res2 += u.step2;
          descent += u.descent;
        }
        descent = segment_sum(descent, kGroupLanes);
      }
      res2 = segment_sum(res2, kGroupLanes);
      // Every lane holds the same scalars (the sums above give every lane the same bits).
      rpca_end_iteration<T>(res2, x_norm, tol, p.continuation, !apg && descent < T(0), p.max_iter, mu, mu_floor, t,
                            tp, iter, done, converged);
      __syncwarp();  // the next iteration rewrites A, and the SVT reads the iterates
    }
    // rpca_store_lane
    const T nan = std::numeric_limits<T>::quiet_NaN();
    T* __restrict__ low_rank = static_cast<T*>(p.low_rank);
    T* __restrict__ sparse = static_cast<T*>(p.sparse);
    for (int o = lane; o < size; o += kGroupLanes) {
      low_rank[i * size + o] = finite ? Lk[o] / scale : nan;
      sparse[i * size + o] = finite ? Sk[o] / scale : nan;
    }
    if (lane == 0) {
      p.iterations[i] = finite ? iter : 0;
      p.converged[i] = converged && finite;
    }
    __syncwarp();  // the next matrix overwrites the iterates
  }
}

}  // namespace

int64_t small_rpca_workspace(const RpcaParams& p, SmallMatrixDesign design) {
  const SmallBatchGeometry& g = p.g;
  if (design == SmallMatrixDesign::kThread) return g.batch * RpcaLanes<float, 1>::workspace(g.rows(), g.cols());
  return float_switch<void, void>(p.kind, int64_t(0), [&](auto tag) {
    return group_layout(g, sizeof(tag), rpca_state_arrays(p.method)).workspace_elements();
  });
}

cudaError_t launch_small_rpca(const RpcaParams& p, SmallMatrixDesign design, void* workspace, cudaStream_t stream) {
  if (p.g.batch == 0) return cudaSuccess;
  return float_switch<void, void>(p.kind, cudaErrorInvalidValue, [&](auto tag) {
    using T = decltype(tag);
    if (design == SmallMatrixDesign::kThread) {
      launch_kernel<small_rpca_kernel<T>>(blocks_for(p.g.batch, kThreads), kThreads, 0, stream, p,
                                          static_cast<T*>(workspace));
    } else {
      const GroupLayout layout = group_layout(p.g, sizeof(T), rpca_state_arrays(p.method));
      launch_kernel<group_rpca_kernel<T>>(layout.blocks, layout.groups_per_block * kGroupLanes,
                                          layout.shared_bytes(sizeof(T)), stream, p, layout,
                                          static_cast<T*>(workspace));
    }
    return cudaGetLastError();
  });
}

}  // namespace pgsl
