// pixel_unshuffle_concat on the CPU: a single pass over x and saliency. Work
// is split into rows: each input row of x is scattered into its f output
// channels, and each row of f x f saliency blocks is reduced into the last
// channel. Index maps and reductions come from pgsl/pixel_unshuffle.h.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../checks.h"
#include "pgsl/pixel_unshuffle.h"

namespace pgsl {
namespace {

constexpr const char* kOp = "pgsl_ext.pixel_unshuffle_concat";
constexpr const char* kBackwardOp = "pgsl_ext.pixel_unshuffle_concat_backward";

// Rows per parallel task: roughly 32K elements, as ATen's GRAIN_SIZE.
int64_t row_grain(int64_t row_elements) {
  return std::max<int64_t>(1, at::internal::GRAIN_SIZE / std::max<int64_t>(1, row_elements));
}

// One input row x[b, c, h, :] -> f output rows. `kFactor` > 0 fixes the
// factor at compile time (the common f = 2 with a unit stride vectorises).
template <typename T, int kFactor>
void scatter_row(const T* row, int64_t sw, T* out, int64_t channel_stride, int64_t wo_count,
                 int64_t factor) {
  const int64_t f = kFactor > 0 ? kFactor : factor;
  if (kFactor > 0 && sw == 1) {
    for (int64_t wo = 0; wo < wo_count; ++wo)
      unshuffle_run<T>(row + wo * f, 1, out + wo, channel_stride, f);
  } else {
    for (int64_t wo = 0; wo < wo_count; ++wo)
      unshuffle_run<T>(row + wo * f * sw, sw, out + wo, channel_stride, f);
  }
}

template <typename T, int kFactor>
void gather_row(const T* in, int64_t channel_stride, T* row, int64_t wo_count, int64_t factor) {
  const int64_t f = kFactor > 0 ? kFactor : factor;
  for (int64_t wo = 0; wo < wo_count; ++wo) shuffle_run<T>(in + wo, channel_stride, row + wo * f, 1, f);
}

template <typename T>
void forward(const UnshuffleParams& p, const T* x, const T* s, T* out) {
  using Acc = at::opmath_type<T>;
  const int64_t f = p.factor, C = p.channels, H = p.height;
  const int64_t Ho = p.out_height(), Wo = p.out_width(), OC = p.out_channels();
  const int64_t plane = Ho * Wo;
  const int64_t x_rows = p.batch * C * H, s_rows = p.batch * Ho;
  at::parallel_for(0, x_rows + s_rows, row_grain(p.width), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      if (r < x_rows) {
        const int64_t h = r % H, c = (r / H) % C, b = r / (H * C);
        const int64_t ho = h / f, i = h % f;
        const T* row = x + b * p.x_stride[0] + c * p.x_stride[1] + h * p.x_stride[2];
        T* dst = out + (b * OC + unshuffle_channel(c, i, 0, f)) * plane + ho * Wo;
        if (f == 2)
          scatter_row<T, 2>(row, p.x_stride[3], dst, plane, Wo, f);
        else
          scatter_row<T, 0>(row, p.x_stride[3], dst, plane, Wo, f);
      } else {
        const int64_t q = r - x_rows, ho = q % Ho, b = q / Ho;
        const T* blocks = s + b * p.s_stride[0] + ho * f * p.s_stride[1];
        T* dst = out + (b * OC + OC - 1) * plane + ho * Wo;
        for (int64_t wo = 0; wo < Wo; ++wo)
          dst[wo] = block_reduce<T, Acc>(blocks + wo * f * p.s_stride[2], p.s_stride[1],
                                         p.s_stride[2], f, p.reduce);
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
  const int64_t x_rows = p.batch * C * H, s_rows = p.batch * Ho;
  at::parallel_for(0, x_rows + s_rows, row_grain(W), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      if (r < x_rows) {
        const int64_t h = r % H, c = (r / H) % C, b = r / (H * C);
        const int64_t ho = h / f, i = h % f;
        const T* src = grad + (b * OC + unshuffle_channel(c, i, 0, f)) * plane + ho * Wo;
        T* row = grad_x + r * W;  // grad_x is contiguous (B, C, H, W)
        if (f == 2)
          gather_row<T, 2>(src, plane, row, Wo, f);
        else
          gather_row<T, 0>(src, plane, row, Wo, f);
      } else {
        const int64_t q = r - x_rows, ho = q % Ho, b = q / Ho;
        const T* g = grad + (b * OC + OC - 1) * plane + ho * Wo;
        const T* blocks = s + b * p.s_stride[0] + ho * f * p.s_stride[1];
        T* gs = grad_s + (b * H + ho * f) * W;  // grad_s is contiguous (B, 1, H, W)
        for (int64_t wo = 0; wo < Wo; ++wo) {
          T* block = gs + wo * f;
          if (p.reduce == BlockReduce::Max) {
            for (int64_t i = 0; i < f; ++i)
              for (int64_t j = 0; j < f; ++j) block[i * W + j] = T(0);
            const int64_t k = block_argmax<T, Acc>(blocks + wo * f * p.s_stride[2], p.s_stride[1],
                                                   p.s_stride[2], f);
            block[(k / f) * W + k % f] = g[wo];
          } else {
            const T share = static_cast<T>(static_cast<Acc>(g[wo]) / static_cast<Acc>(f * f));
            for (int64_t i = 0; i < f; ++i)
              for (int64_t j = 0; j < f; ++j) block[i * W + j] = share;
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
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), kOp, [&] {
    forward<scalar_t>(p, x.const_data_ptr<scalar_t>(), saliency.const_data_ptr<scalar_t>(),
                      out.mutable_data_ptr<scalar_t>());
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> pixel_unshuffle_concat_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& saliency, int64_t channels, int64_t factor,
    c10::string_view reduce) {
  const UnshuffleBackward r =
      prepare_unshuffle_backward(grad_out, saliency, channels, factor, reduce, kBackwardOp);
  if (r.grad_x.numel() + r.grad_s.numel() == 0) return {r.grad_x, r.grad_s};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, r.grad.scalar_type(), kBackwardOp, [&] {
    backward<scalar_t>(r.params, r.grad.const_data_ptr<scalar_t>(),
                       saliency.const_data_ptr<scalar_t>(), r.grad_x.mutable_data_ptr<scalar_t>(),
                       r.grad_s.mutable_data_ptr<scalar_t>());
  });
  return {r.grad_x, r.grad_s};
}

}  // namespace

TORCH_LIBRARY_IMPL(pgsl_ext, CPU, m) {
  m.impl("pixel_unshuffle_concat", &pixel_unshuffle_concat_cpu);
  m.impl("pixel_unshuffle_concat_backward", &pixel_unshuffle_concat_backward_cpu);
}

}  // namespace pgsl
