// SIMD micro-kernels that Swift cannot express: each is compiled for its instruction set with a
// function-level target attribute and called only when lora_cpu_features() reports that set.
// Blocking, packing and threading live in Swift (LoRAFormats' KernelGemm); these functions are the
// innermost loops only.
#ifndef LORA_KERNELS_H
#define LORA_KERNELS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Bits of lora_cpu_features().
enum {
    LORA_CPU_AVX2_FMA = 1 << 0,
    LORA_CPU_AVX512F = 1 << 1,
    LORA_CPU_AVX512BF16 = 1 << 2,
};

/// The instruction sets this CPU and operating system can run (an OR of LORA_CPU_* bits).
uint32_t lora_cpu_features(void);


/// Rows and columns of the tile lora_sgemm_avx2_6x16 computes.
enum { LORA_AVX2_MR = 6, LORA_AVX2_NR = 16 };

/// One 6×16 tile: C = alpha·Σ_p A(r, p)·B(p, j) + beta·C for r < 6, j < 16, p < kc, with A packed:
/// A(r, p) is a[p·6 + r]. B(p, j) is b[p·ldb + j], 16 floats per p. C(r, j) is c[r·ldc + j]; when
/// beta == 0 C is not read. Requires AVX2 and FMA (LORA_CPU_AVX2_FMA).
void lora_sgemm_avx2_6x16(int64_t kc, const float *a, const float *b, int64_t ldb, float *c, int64_t ldc,
                          float alpha, float beta);

/// As lora_sgemm_avx2_6x16 with A read in place: A(r, p) is a[min(r, arows − 1)·ars + p·acs] (rows
/// past arows repeat the last one, so A is never read past its end; their results land in C too, so
/// the caller passes a scratch C for a ragged tile).
void lora_sgemm_avx2_6x16_strided(int64_t kc, const float *a, int64_t ars, int64_t acs, int64_t arows,
                                  const float *b, int64_t ldb, float *c, int64_t ldc, float alpha, float beta);

#ifdef __cplusplus
}
#endif

#endif
