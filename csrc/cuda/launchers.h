// CUDA launchers: plain-pointer entry points implemented in the *_kernel.cu
// files, called by the host code in *_cuda.cpp (which owns ATen, the device
// guard and the stream). Keeping ATen out of the .cu files keeps nvcc fast.
#pragma once

#if defined(PGSL_CUDA_EMULATION)
#include "pgsl_cuda_emulator.h"
#else
#include <cuda_runtime_api.h>
#endif

#include "pgsl/jsma.h"
#include "pgsl/macros.h"
#include "pgsl/pixel_unshuffle.h"
#include "pgsl/rpca.h"
#include "pgsl/svd_jacobi.h"

namespace pgsl {

constexpr int kMaxDims = 8;

// Geometry of an elementwise op after TensorIterator coalescing: up to
// kMaxDims dims, innermost first, strides in elements for out, x, tau.
struct ElementwiseParams {
  int ndim;
  int64_t numel;
  int64_t sizes[kMaxDims];
  int64_t strides[3][kMaxDims];
  bool contiguous;  // out and x dense in the same order
  bool index32;     // every offset fits in int32 (TensorIterator::can_use_32bit_indexing)
};

// tau == nullptr: scalar tau_value. Otherwise tau is an operand of x's dtype.
cudaError_t launch_soft_threshold(ScalarKind kind, const ElementwiseParams& p, void* out,
                                  const void* x, const void* tau, double tau_value,
                                  cudaStream_t stream);

cudaError_t launch_pixel_unshuffle_concat(ScalarKind kind, const UnshuffleParams& p, const void* x,
                                          const void* saliency, void* out, cudaStream_t stream);

cudaError_t launch_pixel_unshuffle_concat_backward(ScalarKind kind, const UnshuffleParams& p,
                                                   const void* grad_out, const void* saliency,
                                                   void* grad_x, void* grad_s, cudaStream_t stream);

// workspace: 3 * p.batch * p.n elements of the input dtype (float32 or float64).
cudaError_t launch_jsma_saliency_search(ScalarKind kind, const JsmaSearchParams& p,
                                        const void* grad_class, const void* grad_others,
                                        const bool* domain, void* workspace, int64_t* p_out,
                                        int64_t* q_out, bool* found, cudaStream_t stream);

// Small-matrix SVT and RPCA, one matrix per thread (pgsl/svd_jacobi.h and
// pgsl/rpca.h with L = 1). `workspace` holds small_*_workspace(g) elements of
// the matrix dtype; tau / mu0 are (B,) in that dtype.
int64_t small_svt_workspace(const SmallBatchGeometry& g);
int64_t small_rpca_workspace(const SmallBatchGeometry& g);

cudaError_t launch_small_svt(ScalarKind kind, const SmallBatchGeometry& g, const void* x,
                             const void* tau, void* out, int* kept, void* workspace,
                             cudaStream_t stream);

struct RpcaKernelOptions {
  double lam, tol;
  int64_t max_iter;
  bool continuation;
  RpcaMethod method;
  const void* init;             // the starting S in x's dtype, or null
  SmallBatchGeometry init_geometry;
};

cudaError_t launch_small_rpca(ScalarKind kind, const SmallBatchGeometry& g, const void* x,
                              const void* mu0, const RpcaKernelOptions& options, void* low_rank,
                              void* sparse, int64_t* iterations, bool* converged, void* workspace,
                              cudaStream_t stream);

}  // namespace pgsl
