// CPU kernels compiled once per ISA and picked at load time (like ATen's own
// dispatch): AVX-512, AVX2 or baseline x86-64. The hot loops of the headers
// under pgsl/ are always inlined into the cloned function, so each clone gets
// them vectorised for its ISA.
#pragma once

#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define PGSL_CPU_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define PGSL_CPU_CLONES
#endif

// For the helpers a cloned function calls: a call that is not inlined would
// run the baseline build of the callee.
#if defined(__GNUC__)
#define PGSL_CPU_INLINE inline __attribute__((always_inline))
#else
#define PGSL_CPU_INLINE inline
#endif

// Matrices per lane group of the CPU svt / rpca kernels, and lanes of the
// JSMA scan: one 64-byte (AVX-512) vector of T, 16 float / 8 double.
template <typename T>
constexpr int kCpuLanes = 64 / sizeof(T);
