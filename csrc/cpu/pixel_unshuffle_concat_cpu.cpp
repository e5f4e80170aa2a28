// pixel_unshuffle_concat on the CPU: a single pass over x and saliency. Work
// is split into rows: each input row of x is scattered into its f output
// channels, and each row of f x f saliency blocks is reduced into the last
// channel. Index maps and reductions come from pgsl/pixel_unshuffle.h.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../pixel_unshuffle_concat.h"
#include "pgsl/pixel_unshuffle.h"

namespace pgsl {
namespace {

constexpr const char* kOp = "pgsl_ext.pixel_unshuffle_concat";
constexpr const char* kBackwardOp = "pgsl_ext.pixel_unshuffle_concat_backward";

// Planes (one (b, c) image channel, or one batch's saliency) per parallel task:
// roughly ATen's GRAIN_SIZE elements. Whole planes keep index arithmetic (and
// its integer divisions) out of the row loops.
int64_t plane_grain(int64_t plane_elements) {
  return std::max<int64_t>(1, at::internal::GRAIN_SIZE / std::max<int64_t>(1, plane_elements));
}

// One input row x[b, c, h, :] -> f output rows, `channel_stride` apart.
template <typename T>
void scatter_row(const T* row, int64_t sw, T* out, int64_t channel_stride, int64_t wo_count,
                 int64_t f) {
  if (f == 2 && sw == 1) {  // the common case, de-interleaved with vector shuffles
    const T* __restrict__ in = row;
    T* __restrict__ even = out;
    T* __restrict__ odd = out + channel_stride;
    for (int64_t wo = 0; wo < wo_count; ++wo) {
      even[wo] = in[2 * wo];
      odd[wo] = in[2 * wo + 1];
    }
    return;
  }
  for (int64_t wo = 0; wo < wo_count; ++wo)
    unshuffle_run<T>(row + wo * f * sw, sw, out + wo, channel_stride, f);
}

// The inverse: f rows of the unshuffled gradient -> one contiguous row.
template <typename T>
void gather_row(const T* in, int64_t channel_stride, T* row, int64_t wo_count, int64_t f) {
  if (f == 2) {
    const T* __restrict__ even = in;
    const T* __restrict__ odd = in + channel_stride;
    T* __restrict__ out = row;
    for (int64_t wo = 0; wo < wo_count; ++wo) {
      out[2 * wo] = even[wo];
      out[2 * wo + 1] = odd[wo];
    }
    return;
  }
  for (int64_t wo = 0; wo < wo_count; ++wo) shuffle_run<T>(in + wo, channel_stride, row + wo * f, 1, f);
}

template <typename T>
void forward(const UnshuffleParams& p, const T* x, const T* s, T* out) {
  using Acc = at::opmath_type<T>;
  const int64_t f = p.factor, C = p.channels, H = p.height;
  const int64_t Ho = p.out_height(), Wo = p.out_width(), OC = p.out_channels();
  const int64_t plane = Ho * Wo;
  const int64_t x_planes = p.batch * C;
  at::parallel_for(0, x_planes + p.batch, plane_grain(H * p.width), [&](int64_t begin, int64_t end) {
    for (int64_t q = begin; q < end; ++q) {
      if (q < x_planes) {  // x[b, c] -> out[b, c f^2 : (c + 1) f^2]
        const int64_t b = q / C, c = q % C;
        const T* src = x + b * p.x_stride[0] + c * p.x_stride[1];
        T* dst = out + (b * OC + unshuffle_channel(c, 0, 0, f)) * plane;
        for (int64_t h = 0; h < H; ++h)
          scatter_row<T>(src + h * p.x_stride[2], p.x_stride[3], dst + (h % f) * f * plane + (h / f) * Wo,
                         plane, Wo, f);
      } else {  // saliency[b] -> out[b, C f^2]
        const int64_t b = q - x_planes;
        const T* src = s + b * p.s_stride[0];
        T* dst = out + (b * OC + OC - 1) * plane;
        for (int64_t ho = 0; ho < Ho; ++ho)
          for (int64_t wo = 0; wo < Wo; ++wo)
            dst[ho * Wo + wo] = block_reduce<T, Acc>(src + ho * f * p.s_stride[1] + wo * f * p.s_stride[2],
                                                     p.s_stride[1], p.s_stride[2], f, p.reduce);
      }
    }
  });
}

template <typename T>
void backward(const UnshuffleParams& p, const T* grad, const T* s, T* grad_x, T* grad_s) {
  using Acc = at::opmath_type<T>;
  const int64_t f = p.factor, C = p.channels, H = p.height, W = p.width;
  const int64_t Ho = p.out_height(), Wo = p.out_width(), OC = p.out_channels();
  const int64_t plane = Ho * Wo;
  const int64_t x_planes = p.batch * C;
  at::parallel_for(0, x_planes + p.batch, plane_grain(H * W), [&](int64_t begin, int64_t end) {
    for (int64_t q = begin; q < end; ++q) {
      if (q < x_planes) {  // grad_x is contiguous (B, C, H, W)
        const int64_t b = q / C, c = q % C;
        const T* src = grad + (b * OC + unshuffle_channel(c, 0, 0, f)) * plane;
        for (int64_t h = 0; h < H; ++h)
          gather_row<T>(src + (h % f) * f * plane + (h / f) * Wo, plane, grad_x + (q * H + h) * W, Wo, f);
      } else {  // grad_s is contiguous (B, 1, H, W)
        const int64_t b = q - x_planes;
        const T* g = grad + (b * OC + OC - 1) * plane;
        const T* blocks = s + b * p.s_stride[0];
        T* gs = grad_s + b * H * W;
        for (int64_t ho = 0; ho < Ho; ++ho) {
          for (int64_t wo = 0; wo < Wo; ++wo) {
            T* block = gs + ho * f * W + wo * f;
            const T gv = g[ho * Wo + wo];
            if (p.reduce == BlockReduce::Max) {
              const int64_t k = block_argmax<T, Acc>(
                  blocks + ho * f * p.s_stride[1] + wo * f * p.s_stride[2], p.s_stride[1], p.s_stride[2], f);
              for (int64_t i = 0; i < f; ++i)
                for (int64_t j = 0; j < f; ++j) block[i * W + j] = i * f + j == k ? gv : T(0);
            } else {
              const T share = static_cast<T>(static_cast<Acc>(gv) / static_cast<Acc>(f * f));
              for (int64_t i = 0; i < f; ++i)
                for (int64_t j = 0; j < f; ++j) block[i * W + j] = share;
            }
          }
        }
      }
    }
  });
}

at::Tensor pixel_unshuffle_concat_cpu(const at::Tensor& x, const at::Tensor& saliency,
                                      int64_t factor, c10::string_view reduce) {
  const UnshuffleParams p = unshuffle_params(x, saliency, factor, reduce, kOp);
  at::Tensor out = at::empty({p.batch, p.out_channels(), p.out_height(), p.out_width()}, x.options());
  if (out.numel() == 0) return out;
  const bool ran = float_switch<at::Half, at::BFloat16>(scalar_kind(x.scalar_type()), false, [&](auto tag) {
    using T = decltype(tag);
    forward<T>(p, x.const_data_ptr<T>(), saliency.const_data_ptr<T>(), out.mutable_data_ptr<T>());
    return true;
  });
  TORCH_INTERNAL_ASSERT(ran);
  return out;
}

std::tuple<at::Tensor, at::Tensor> pixel_unshuffle_concat_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& saliency, int64_t channels, int64_t factor,
    c10::string_view reduce) {
  const UnshuffleBackward r =
      prepare_unshuffle_backward(grad_out, saliency, channels, factor, reduce, kBackwardOp);
  if (r.grad_x.numel() + r.grad_s.numel() == 0) return {r.grad_x, r.grad_s};
  const bool ran = float_switch<at::Half, at::BFloat16>(scalar_kind(r.grad.scalar_type()), false, [&](auto tag) {
    using T = decltype(tag);
    backward<T>(r.params, r.grad.const_data_ptr<T>(), saliency.const_data_ptr<T>(),
                r.grad_x.mutable_data_ptr<T>(), r.grad_s.mutable_data_ptr<T>());
    return true;
  });
  TORCH_INTERNAL_ASSERT(ran);
  return {r.grad_x, r.grad_s};
}

}  // namespace

TORCH_LIBRARY_IMPL(pgsl_ext, CPU, m) {
  m.impl("pixel_unshuffle_concat", &pixel_unshuffle_concat_cpu);
  m.impl("pixel_unshuffle_concat_backward", &pixel_unshuffle_concat_backward_cpu);
}

}  // namespace pgsl
