// The geometry of an elementwise op (soft_threshold) after TensorIterator
// coalescing, filled by the host (soft_threshold.h) and taken by the CUDA
// kernel: up to kMaxDims dims, innermost first, strides in elements for out,
// x and tau.
#pragma once

#include <cstdint>

namespace pgsl {

constexpr int kMaxDims = 8;

struct ElementwiseParams {
  int ndim;
  int64_t numel;
  int64_t sizes[kMaxDims];
  int64_t strides[3][kMaxDims];
  bool contiguous;  // out and x dense in the same order
  bool index32;     // every offset fits in int32 (TensorIterator::can_use_32bit_indexing)
};

}  // namespace pgsl
