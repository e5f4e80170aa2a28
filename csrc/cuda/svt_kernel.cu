// Small-matrix SVT on CUDA, in two designs (SmallMatrixDesign, launchers.h).
// One launch covers the batch, with no per-matrix launches and no host
// synchronisation, and grid-stride loops cover any batch.
//   thread: one matrix per thread, running exactly the per-matrix code the CPU
//           kernel runs (pgsl/svd_jacobi.h with one lane), on a per-thread
//           slice of a global workspace.
//   group:  one warp per matrix, the matrix and V in shared memory
//           (small_matrix_group.cuh).
#include "cuda_types.cuh"
#include "launchers.h"
#include "pgsl/svd_jacobi.h"
#include "small_matrix_group.cuh"

namespace pgsl {
namespace {

constexpr int kThreads = 64;

template <typename T>
__global__ void small_svt_kernel(SvtParams p, T* workspace) {
  const SmallBatchGeometry& g = p.g;
  const T* __restrict__ x = static_cast<const T*>(p.x);
  const T* __restrict__ tau = static_cast<const T*>(p.tau);
  T* __restrict__ out = static_cast<T*>(p.out);
  const int64_t M = g.rows(), N = g.cols();
  const int64_t step = int64_t(gridDim.x) * blockDim.x;  // the grid is capped (blocks_for)
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < g.batch; i += step) {
    T* A = workspace + i * (M * N + N * N);
    T* V = A + M * N;
    auto load = [&](int, int64_t r, int64_t c) { return x[g.in_offset(i, r, c)]; };
    auto store = [&](int, int64_t r, int64_t c, T v) { out[g.out_offset(i, r, c)] = v; };
    svt_group<T, 1>(M, N, load, store, tau + i, A, V, p.kept + i, kJacobiMaxSweeps);
  }
}

// svt_group (svd_jacobi.h) by a warp.
template <typename T>
__global__ void __launch_bounds__(kGroupsPerBlock * kGroupLanes, kGroupMinBlocksPerSm<T>)
    group_svt_kernel(SvtParams p, GroupLayout layout, T* workspace) {
  PGSL_DYNAMIC_SHARED(T, shared_memory);
  const SmallBatchGeometry& g = p.g;
  const T* __restrict__ x = static_cast<const T*>(p.x);
  T* __restrict__ out = static_cast<T*>(p.out);
  const int M = int(g.rows()), N = int(g.cols()), size = M * N;
  const int lane = int(threadIdx.x) % kGroupLanes, lda = layout.lda, ldv = layout.ldv;
  T* A = layout.matrix_data(shared_memory, workspace);
  T* V = A + lda * N;
  const int64_t step = int64_t(gridDim.x) * layout.groups_per_block;  // the grid is capped (blocks_for)
  for (int64_t i = int64_t(blockIdx.x) * layout.groups_per_block + threadIdx.x / kGroupLanes; i < g.batch;
       i += step) {
    const GroupScan<T> scan = group_load_scan(g, x, i, size, lane, [&](int, int r, int c, T v) {
      A[c * lda + r] = v;
      return true;
    });
    const bool finite = scan.finite;
    const T scale = exact_scale_for<T>(scan.amax);
    for (int o = lane; o < size; o += kGroupLanes) {
      int r, c;
      g.out_coords(o, r, c);
      A[c * lda + r] = finite ? A[c * lda + r] * scale : T(0);
    }
    group_set_identity(V, ldv, N, lane);
    __syncwarp();
    group_jacobi_sweeps<T>(A, lda, V, ldv, M, N, kJacobiMaxSweeps, T(-1), lane);
    const T tau = static_cast<const T*>(p.tau)[i] * scale;
    const bool residual = group_shrink_columns<T>(A, lda, M, N, tau, p.kept + i, lane);
    for (int o = lane; o < size; o += kGroupLanes) {
      int r, c;
      g.out_coords(o, r, c);
      const T part = group_reconstruct_at(A, lda, V, ldv, N, r, c) / scale;
      out[i * size + o] = !finite ? std::numeric_limits<T>::quiet_NaN()
                          : residual ? x[g.in_offset(i, r, c)] - part
                                     : part;
    }
    __syncwarp();  // the next matrix overwrites A and V
  }
}

}  // namespace

int64_t small_svt_workspace(const SvtParams& p, SmallMatrixDesign design) {
  const SmallBatchGeometry& g = p.g;
  if (design == SmallMatrixDesign::kThread) return g.batch * (g.rows() * g.cols() + g.cols() * g.cols());
  return float_switch<void, void>(p.kind, int64_t(0), [&](auto tag) {
    return group_layout(g, sizeof(tag), 0).workspace_elements();
  });
}

cudaError_t launch_small_svt(const SvtParams& p, SmallMatrixDesign design, void* workspace, cudaStream_t stream) {
  if (p.g.batch == 0) return cudaSuccess;
  return float_switch<void, void>(p.kind, cudaErrorInvalidValue, [&](auto tag) {
    using T = decltype(tag);
    if (design == SmallMatrixDesign::kThread) {
      launch_kernel<small_svt_kernel<T>>(blocks_for(p.g.batch, kThreads), kThreads, 0, stream, p,
                                         static_cast<T*>(workspace));
    } else {
      const GroupLayout layout = group_layout(p.g, sizeof(T), 0);
      launch_kernel<group_svt_kernel<T>>(layout.blocks, layout.groups_per_block * kGroupLanes,
                                         layout.shared_bytes(sizeof(T)), stream, p, layout,
                                         static_cast<T*>(workspace));
    }
    return cudaGetLastError();
  });
}

}  // namespace pgsl
