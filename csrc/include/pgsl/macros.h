// Portability macros shared by the C++ and CUDA translation units.
// Nothing here includes ATen: kernels see plain pointers and sizes only.
#pragma once

#if defined(__CUDACC__) || defined(__HIPCC__)
#define PGSL_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define PGSL_HOST_DEVICE inline
#endif

#include <cstdint>

namespace pgsl {

// Element types the kernels are instantiated for. The host side maps
// at::ScalarType onto this; kernels never see ATen types.
enum class ScalarKind : int { Float16 = 0, BFloat16 = 1, Float32 = 2, Float64 = 3 };

}  // namespace pgsl
