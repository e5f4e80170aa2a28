// Where the matrices of a small-matrix batch live (the svt and rpca kernels):
// input with arbitrary strides, output contiguous (B, m, n). Kernels work on
// M x N with M >= N, the transpose of a wide matrix; the maps below take work
// coordinates (r < M, c < N).
#pragma once

#include <cstdint>

#include "pgsl/macros.h"

namespace pgsl {

struct SmallBatchGeometry {
  int64_t batch, m, n, batch_stride, row_stride, col_stride;
  PGSL_HOST_DEVICE bool wide() const { return m < n; }
  PGSL_HOST_DEVICE int64_t rows() const { return wide() ? n : m; }  // M
  PGSL_HOST_DEVICE int64_t cols() const { return wide() ? m : n; }  // N
  PGSL_HOST_DEVICE int64_t in_offset(int64_t i, int64_t r, int64_t c) const {
    return i * batch_stride + (wide() ? c * row_stride + r * col_stride : r * row_stride + c * col_stride);
  }
  PGSL_HOST_DEVICE int64_t out_offset(int64_t i, int64_t r, int64_t c) const {
    return i * m * n + (wide() ? c * n + r : r * n + c);
  }
  // The work coordinates of element o of a matrix in the output's order
  // (out_offset(i, r, c) == i * m * n + o): threads that walk o together walk
  // the output, and a contiguous input, contiguously.
  PGSL_HOST_DEVICE void out_coords(int o, int& r, int& c) const {
    const int row = o / int(n), col = o % int(n);
    r = wide() ? col : row;
    c = wide() ? row : col;
  }
};

}  // namespace pgsl
