// pixel_unshuffle_concat: index maps and the block reduction of the saliency
// channel, shared by the CPU and CUDA kernels.
//
// Shapes: x (B, C, H, W), saliency (B, 1, H, W), factor f,
//         out (B, C*f*f + 1, H/f, W/f), contiguous.
//   out[b, c*f*f + i*f + j, ho, wo] = x[b, c, ho*f + i, wo*f + j]
//   out[b, C*f*f, ho, wo]          = reduce_{i,j} saliency[b, 0, ho*f + i, wo*f + j]
// The first C*f*f channels are exactly torch.nn.functional.pixel_unshuffle.
#pragma once

#include <cmath>
#include <cstdint>

#include "pgsl/macros.h"

namespace pgsl {

enum class BlockReduce : int { Max = 0, Mean = 1 };

// Sizes and element strides of one pixel_unshuffle_concat call. Input strides
// are arbitrary (transposed or sliced tensors); the output is contiguous.
struct UnshuffleParams {
  int64_t batch, channels, height, width;  // of x
  int64_t factor;
  int64_t x_stride[4];                     // b, c, h, w of x (elements)
  int64_t s_stride[3];                     // b, h, w of saliency (elements)
  BlockReduce reduce;
  PGSL_HOST_DEVICE int64_t out_height() const { return height / factor; }
  PGSL_HOST_DEVICE int64_t out_width() const { return width / factor; }
  PGSL_HOST_DEVICE int64_t out_channels() const { return channels * factor * factor + 1; }
  // The work items of a kernel: one per factor-element run of an input row
  // (b, c, h, wo), then one per factor x factor saliency block (b, ho, wo).
  PGSL_HOST_DEVICE int64_t row_runs() const { return batch * channels * height * out_width(); }
  PGSL_HOST_DEVICE int64_t blocks() const { return batch * out_height() * out_width(); }
};

// Output channel that receives x[:, c, ho*f + i, wo*f + j].
PGSL_HOST_DEVICE int64_t unshuffle_channel(int64_t c, int64_t i, int64_t j, int64_t factor) {
  return (c * factor + i) * factor + j;
}

// Position (within the f x f block, row-major) of the value the block
// reduction keeps for `Max`: the first maximum, or the first NaN if the block
// holds one (NaN propagates, as in max_pool2d). Reads block[i*sh + j*sw].
// Branch-free in the data (selects, not jumps): random blocks would otherwise
// mispredict on every other element.
template <typename T, typename Acc>
PGSL_HOST_DEVICE int64_t block_argmax(const T* block, int64_t sh, int64_t sw, int64_t factor) {
  int64_t best = 0, first_nan = -1;
  Acc best_value = static_cast<Acc>(block[0]);
  for (int64_t i = 0; i < factor; ++i) {
    for (int64_t j = 0; j < factor; ++j) {
      const int64_t k = i * factor + j;
      const Acc v = static_cast<Acc>(block[i * sh + j * sw]);
      first_nan = (v != v && first_nan < 0) ? k : first_nan;
      const bool better = v > best_value;  // strict: ties keep the first
      best = better ? k : best;
      best_value = better ? v : best_value;
    }
  }
  return first_nan >= 0 ? first_nan : best;
}

// The value block_argmax selects: the block's maximum, NaN if it holds one.
template <typename T, typename Acc>
PGSL_HOST_DEVICE Acc block_max(const T* block, int64_t sh, int64_t sw, int64_t factor) {
  Acc best = static_cast<Acc>(block[0]);
  bool nan = best != best;
  for (int64_t i = 0; i < factor; ++i)
    for (int64_t j = 0; j < factor; ++j) {
      const Acc v = static_cast<Acc>(block[i * sh + j * sw]);
      nan = nan || v != v;
      best = v > best ? v : best;
    }
  return nan ? static_cast<Acc>(NAN) : best;
}

// Mean of an f x f block, summed in row-major order in Acc.
template <typename T, typename Acc>
PGSL_HOST_DEVICE Acc block_mean(const T* block, int64_t sh, int64_t sw, int64_t factor) {
  Acc sum = Acc(0);
  for (int64_t i = 0; i < factor; ++i)
    for (int64_t j = 0; j < factor; ++j) sum += static_cast<Acc>(block[i * sh + j * sw]);
  return sum / static_cast<Acc>(factor * factor);
}

// The saliency value of one output position (Max or Mean).
template <typename T, typename Acc>
PGSL_HOST_DEVICE T block_reduce(const T* block, int64_t sh, int64_t sw, int64_t factor,
                                BlockReduce reduce) {
  return static_cast<T>(reduce == BlockReduce::Max ? block_max<T, Acc>(block, sh, sw, factor)
                                                   : block_mean<T, Acc>(block, sh, sw, factor));
}

// Scatter one input run x[b, c, h, wo*f : wo*f + f] into its f output
// channels (forward), or gather it back (backward, `Inverse`). dst/src for the
// unshuffled side point at channel unshuffle_channel(c, i, 0, f) position
// (ho, wo); consecutive j are `channel_stride` elements apart.
template <typename T>
PGSL_HOST_DEVICE void unshuffle_run(const T* run, int64_t run_stride, T* out, int64_t channel_stride,
                                    int64_t factor) {
  for (int64_t j = 0; j < factor; ++j) out[j * channel_stride] = run[j * run_stride];
}

template <typename T>
PGSL_HOST_DEVICE void shuffle_run(const T* in, int64_t channel_stride, T* run, int64_t run_stride,
                                  int64_t factor) {
  for (int64_t j = 0; j < factor; ++j) run[j * run_stride] = in[j * channel_stride];
}

}  // namespace pgsl
