// Every pgsl_ext op schema, in one place. Kernels register themselves per
// dispatch key in csrc/cpu/ and csrc/cuda/, autograd in csrc/autograd.cpp;
// fake kernels are registered in Python (pgsl_ext/ops.py).
#include <torch/library.h>

TORCH_LIBRARY(pgsl_ext, m) {
  m.def("soft_threshold(Tensor x, float tau) -> Tensor");
  m.def("soft_threshold.Tensor(Tensor x, Tensor tau) -> Tensor");
  m.def(
      "pixel_unshuffle_concat(Tensor x, Tensor saliency, int factor=2, str reduce=\"max\") -> "
      "Tensor");
  m.def(
      "pixel_unshuffle_concat_backward(Tensor grad_out, Tensor saliency, int channels, "
      "int factor, str reduce) -> (Tensor, Tensor)");
  m.def(
      "jsma_saliency_search(Tensor grad_class, Tensor grad_others, Tensor domain, *, "
      "bool targeted) -> (Tensor p, Tensor q, Tensor found)");
  m.def(
      "svt(Tensor x, float tau, *, int? rank=None, int oversample=10, int power_iters=2, "
      "Generator? generator=None) -> Tensor");
  m.def(
      "svt.Tensor(Tensor x, Tensor tau, *, int? rank=None, int oversample=10, int power_iters=2, "
      "Generator? generator=None) -> Tensor");
  m.def(
      "rpca(Tensor x, Tensor? init=None, *, float? mu=0.55, float? lam=None, int max_iter=1000, "
      "float tol=1e-7, int? rank=None, str method=\"alternating\", Generator? generator=None) -> "
      "(Tensor low_rank, Tensor sparse, Tensor iterations, Tensor converged)");
}
