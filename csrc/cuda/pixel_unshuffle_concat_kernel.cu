// pixel_unshuffle_concat CUDA kernels. One thread per f-element run of an
// input row (a coalesced read, f coalesced writes into f output channels), and
// one per f x f saliency block, in a single launch. Index maps and the block
// reduction come from pgsl/pixel_unshuffle.h, as on the CPU.
#include "cuda_types.cuh"
#include "launchers.h"
#include "pgsl/pixel_unshuffle.h"

namespace pgsl {
namespace {

constexpr int kThreads = 256;

// The params' sizes in the kernel's index type, and the work item -> coordinates
// maps (the work items are UnshuffleParams' row runs, then its blocks).
template <typename Index>
struct UnshuffleGrid {
  Index f, C, H, W, Ho, Wo, OC, plane, runs, total;
  __device__ explicit UnshuffleGrid(const UnshuffleParams& p)
      : f(p.factor), C(p.channels), H(p.height), W(p.width), Ho(p.out_height()),
        Wo(p.out_width()), OC(p.out_channels()), plane(Ho * Wo), runs(p.row_runs()),
        total(p.row_runs() + p.blocks()) {}
  __device__ void run(Index k, Index& b, Index& c, Index& h, Index& wo) const {
    wo = k % Wo, h = (k / Wo) % H, c = (k / (Wo * H)) % C, b = k / (Wo * H * C);
  }
  __device__ void block(Index k, Index& b, Index& ho, Index& wo) const {
    const Index q = k - runs;
    wo = q % Wo, ho = (q / Wo) % Ho, b = q / (Wo * Ho);
  }
};

template <typename T, typename Index>
__global__ void unshuffle_forward(UnshuffleParams p, const T* __restrict__ x,
                                  const T* __restrict__ s, T* __restrict__ out) {
  using Acc = opmath_t<T>;
  const UnshuffleGrid<Index> g(p);
  const Index f = g.f, Wo = g.Wo, OC = g.OC, plane = g.plane;
  const Index step = Index(gridDim.x) * blockDim.x;
  for (Index k = Index(blockIdx.x) * blockDim.x + threadIdx.x; k < g.total; k += step) {
    if (k < g.runs) {
      Index b, c, h, wo;
      g.run(k, b, c, h, wo);
      const T* run = x + b * p.x_stride[0] + c * p.x_stride[1] + h * p.x_stride[2] +
                     wo * f * p.x_stride[3];
      T* dst = out + (b * OC + unshuffle_channel(c, h % f, 0, f)) * plane + (h / f) * Wo + wo;
      unshuffle_run<T>(run, p.x_stride[3], dst, plane, f);
    } else {
      Index b, ho, wo;
      g.block(k, b, ho, wo);
      const T* block = s + b * p.s_stride[0] + ho * f * p.s_stride[1] + wo * f * p.s_stride[2];
      out[(b * OC + OC - 1) * plane + ho * Wo + wo] =
          block_reduce<T, Acc>(block, p.s_stride[1], p.s_stride[2], f, p.reduce);
    }
  }
}

// grad_x and grad_s are contiguous; grad_out is contiguous.
template <typename T, typename Index>
__global__ void unshuffle_backward(UnshuffleParams p, const T* __restrict__ grad,
                                   const T* __restrict__ s, T* __restrict__ grad_x,
                                   T* __restrict__ grad_s) {
  using Acc = opmath_t<T>;
  const UnshuffleGrid<Index> g(p);
  const Index f = g.f, H = g.H, W = g.W, Wo = g.Wo, OC = g.OC, plane = g.plane;
  const Index step = Index(gridDim.x) * blockDim.x;
  for (Index k = Index(blockIdx.x) * blockDim.x + threadIdx.x; k < g.total; k += step) {
    if (k < g.runs) {
      Index b, c, h, wo;
      g.run(k, b, c, h, wo);
      const T* src = grad + (b * OC + unshuffle_channel(c, h % f, 0, f)) * plane + (h / f) * Wo + wo;
      shuffle_run<T>(src, plane, grad_x + k * f, 1, f);  // k * f == ((b*C + c)*H + h)*W + wo*f
    } else {
      Index b, ho, wo;
      g.block(k, b, ho, wo);
      const T gv = grad[(b * OC + OC - 1) * plane + ho * Wo + wo];
      T* block = grad_s + (b * H + ho * f) * W + wo * f;
      if (p.reduce == BlockReduce::Max) {
        const T* sblock = s + b * p.s_stride[0] + ho * f * p.s_stride[1] + wo * f * p.s_stride[2];
        const Index arg = block_argmax<T, Acc>(sblock, p.s_stride[1], p.s_stride[2], f);
        for (Index i = 0; i < f; ++i)
          for (Index j = 0; j < f; ++j) block[i * W + j] = (i * f + j == arg) ? gv : T(0.0f);
      } else {
        const T share = static_cast<T>(static_cast<Acc>(gv) / static_cast<Acc>(f * f));
        for (Index i = 0; i < f; ++i)
          for (Index j = 0; j < f; ++j) block[i * W + j] = share;
      }
    }
  }
}

// Largest element offset either kernel forms, to choose the index width.
bool fits_int32(const UnshuffleParams& p) {
  const int64_t out_elems = p.batch * p.out_channels() * p.out_height() * p.out_width();
  int64_t x_span = 1, s_span = 1;
  const int64_t xs[4] = {p.batch, p.channels, p.height, p.width};
  for (int d = 0; d < 4; ++d) x_span += (xs[d] - 1) * p.x_stride[d];
  s_span += (p.batch - 1) * p.s_stride[0] + (p.height - 1) * p.s_stride[1] + (p.width - 1) * p.s_stride[2];
  const int64_t limit = (int64_t{1} << 31) - 1;
  return out_elems < limit && x_span < limit && s_span < limit &&
         p.batch * p.channels * p.height * p.width < limit;
}

}  // namespace

cudaError_t launch_pixel_unshuffle_concat(ScalarKind kind, const UnshuffleParams& p, const void* x,
                                          const void* saliency, void* out, cudaStream_t stream) {
  const int64_t work = p.row_runs() + p.blocks();
  if (work == 0) return cudaSuccess;
  return float_switch<Half16, BFloat16>(kind, cudaErrorInvalidValue, [&](auto tag) {
    using T = decltype(tag);
    const unsigned grid = blocks_for(work, kThreads);
    if (fits_int32(p))
      launch_kernel<unshuffle_forward<T, int32_t>>(grid, kThreads, 0, stream, p,
                                                static_cast<const T*>(x),
                                                static_cast<const T*>(saliency), static_cast<T*>(out));
    else
      launch_kernel<unshuffle_forward<T, int64_t>>(grid, kThreads, 0, stream, p,
                                                static_cast<const T*>(x),
                                                static_cast<const T*>(saliency), static_cast<T*>(out));
    return cudaGetLastError();
  });
}

cudaError_t launch_pixel_unshuffle_concat_backward(ScalarKind kind, const UnshuffleParams& p,
                                                   const void* grad_out, const void* saliency,
                                                   void* grad_x, void* grad_s, cudaStream_t stream) {
  const int64_t work = p.row_runs() + p.blocks();
  if (work == 0) return cudaSuccess;
  return float_switch<Half16, BFloat16>(kind, cudaErrorInvalidValue, [&](auto tag) {
    using T = decltype(tag);
    const unsigned grid = blocks_for(work, kThreads);
    if (fits_int32(p))
      launch_kernel<unshuffle_backward<T, int32_t>>(
          grid, kThreads, 0, stream, p, static_cast<const T*>(grad_out),
          static_cast<const T*>(saliency), static_cast<T*>(grad_x), static_cast<T*>(grad_s));
    else
      launch_kernel<unshuffle_backward<T, int64_t>>(
          grid, kThreads, 0, stream, p, static_cast<const T*>(grad_out),
          static_cast<const T*>(saliency), static_cast<T*>(grad_x), static_cast<T*>(grad_s));
    return cudaGetLastError();
  });
}

}  // namespace pgsl
