// Portability macros shared by the C++ and CUDA translation units.
// Nothing here includes ATen: kernels see plain pointers and sizes only.
#pragma once

#if defined(__CUDACC__) || defined(__HIPCC__)
#define PGSL_HOST_DEVICE __host__ __device__ __forceinline__
#elif defined(__GNUC__)
// Always inlined on the host, so that a CPU kernel compiled for several ISAs
// (target_clones) gets these bodies compiled for each ISA too.
#define PGSL_HOST_DEVICE inline __attribute__((always_inline))
#else
#define PGSL_HOST_DEVICE inline
#endif

// Vectorise the following loop across its iterations (lanes) on the CPU;
// nothing on the device, where a thread runs one lane.
#if defined(_OPENMP) && !defined(__CUDA_ARCH__)
#define PGSL_SIMD _Pragma("omp simd")
// ... and OR-reduce the int `any` across them.
#define PGSL_SIMD_ANY _Pragma("omp simd reduction(|:any)")
#else
#define PGSL_SIMD
#define PGSL_SIMD_ANY
#endif
