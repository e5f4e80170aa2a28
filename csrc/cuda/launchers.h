// CUDA launchers: plain-pointer entry points implemented in the *_kernel.cu
// files, called by the host code in *_cuda.cpp (which owns ATen, the device
// guard and the stream). Keeping ATen out of the .cu files keeps nvcc fast.
// Each takes its kernel family's params struct (pgsl/*.h), the one the host
// packs for the CPU kernel too.
#pragma once

#if defined(PGSL_CUDA_EMULATION)
#include "pgsl_cuda_emulator.h"
#else
#include <cuda_runtime_api.h>
#endif

#include <string_view>

#include "pgsl/elementwise_params.h"
#include "pgsl/jsma.h"
#include "pgsl/pixel_unshuffle.h"
#include "pgsl/robust_pca.h"
#include "pgsl/scalar_kind.h"
#include "pgsl/svd_jacobi.h"

namespace pgsl {

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

// Small-matrix SVT and RPCA (pgsl/svd_jacobi.h, pgsl/robust_pca.h) in two designs:
//   kThread: one matrix per thread (the CPU kernel's code with L = 1), the
//            matrix in a global workspace;
//   kGroup:  one warp per matrix, the matrix in shared memory
//            (small_matrix_group.cuh).
// `workspace` holds small_*_workspace(p, design) elements of the matrix dtype.
enum class SmallMatrixDesign : int { kThread = 0, kGroup = 1 };

// The design named by `text` ("thread" or "group"); false for any other text.
inline bool parse_small_matrix_design(const char* text, SmallMatrixDesign& design) {
  const std::string_view name = text;
  if (name == "thread") design = SmallMatrixDesign::kThread;
  else if (name == "group") design = SmallMatrixDesign::kGroup;
  else return false;
  return true;
}

// The design the CUDA ops use: $PGSL_SMALL_MATRIX_KERNEL, "group" when unset
// (read once per process, in svt_cuda.cpp; an unknown name raises).
constexpr const char* kSmallMatrixDesignVariable = "PGSL_SMALL_MATRIX_KERNEL";
SmallMatrixDesign small_matrix_design();

int64_t small_svt_workspace(const SvtParams& p, SmallMatrixDesign design);
cudaError_t launch_small_svt(const SvtParams& p, SmallMatrixDesign design, void* workspace, cudaStream_t stream);

int64_t small_rpca_workspace(const RpcaParams& p, SmallMatrixDesign design);
cudaError_t launch_small_rpca(const RpcaParams& p, SmallMatrixDesign design, void* workspace,
                              cudaStream_t stream);

}  // namespace pgsl
