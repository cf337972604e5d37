// The SGEMM tiles for ARM64's Advanced SIMD (NEON, part of every AArch64 CPU): fp32 with the same 6×16
// contract as the AVX2 tile (LoRAKernels.h), so the Swift blocking and packing serve both, and a 6×16
// bf16 tile (BFDOT, FEAT_BF16) fed by the bf16 packing. Tested on x86-64 machines
// under qemu-aarch64 against a scalar model of its exact order (scripts/neon_check.sh).
#include "LoRAKernels.h"

#if defined(__aarch64__)
#include <arm_neon.h>

// C = alpha·acc + beta·C for a 6×16 tile (C not read when beta is 0).
static inline __attribute__((always_inline))
void neon_store_6x16(float32x4_t acc[6][4], float *c, int64_t ldc, float alpha, float beta) {
    for (int r = 0; r < 6; r++) {
        float *cr = c + r * ldc;
        for (int q = 0; q < 4; q++) {
            float32x4_t v = vmulq_n_f32(acc[r][q], alpha);
            if (beta == 1.0f) v = vaddq_f32(v, vld1q_f32(cr + 4 * q));
            else if (beta != 0.0f) v = vfmaq_n_f32(v, vld1q_f32(cr + 4 * q), beta);
            vst1q_f32(cr + 4 * q, v);
        }
    }
}

// 24 accumulators (6 rows × four 4-float quarters) and four B registers: 28 of the 32 vector
// registers; each A value multiplies all four quarters by element (fmla by scalar), in k order, one
// rounding per FMA as the scalar model has it.
static inline __attribute__((always_inline))
void neon_6x16(int64_t kc, const float *a0, const float *a1, const float *a2, const float *a3, const float *a4,
               const float *a5, int64_t acs, const float *b, int64_t ldb, float *c, int64_t ldc, float alpha, float beta) {
    float32x4_t acc[6][4];
    for (int r = 0; r < 6; r++) for (int q = 0; q < 4; q++) acc[r][q] = vdupq_n_f32(0);
    const float *rows[6] = {a0, a1, a2, a3, a4, a5};
    for (int64_t p = 0; p < kc; p++) {
        const float *bp = b + p * ldb;
        const float32x4_t b0 = vld1q_f32(bp), b1 = vld1q_f32(bp + 4), b2 = vld1q_f32(bp + 8), b3 = vld1q_f32(bp + 12);
        for (int r = 0; r < 6; r++) {
            const float x = rows[r][p * acs];
            acc[r][0] = vfmaq_n_f32(acc[r][0], b0, x);
            acc[r][1] = vfmaq_n_f32(acc[r][1], b1, x);
            acc[r][2] = vfmaq_n_f32(acc[r][2], b2, x);
            acc[r][3] = vfmaq_n_f32(acc[r][3], b3, x);
        }
    }
    neon_store_6x16(acc, c, ldc, alpha, beta);
}

void lora_sgemm_neon_6x16(int64_t kc, const float *a, const float *b, int64_t ldb, float *c, int64_t ldc,
                          float alpha, float beta) {
    neon_6x16(kc, a, a + 1, a + 2, a + 3, a + 4, a + 5, 6, b, ldb, c, ldc, alpha, beta);
}

void lora_sgemm_neon_6x16_strided(int64_t kc, const float *a, int64_t ars, int64_t acs, int64_t arows,
                                  const float *b, int64_t ldb, float *c, int64_t ldc, float alpha, float beta) {
    const int64_t last = arows - 1;
    neon_6x16(kc, a, a + (last < 1 ? last : 1) * ars, a + (last < 2 ? last : 2) * ars,
              a + (last < 3 ? last : 3) * ars, a + (last < 4 ? last : 4) * ars, a + (last < 5 ? last : 5) * ars,
              acs, b, ldb, c, ldc, alpha, beta);
}

// MARK: bf16 (BFDOT)

// The 6×16 tile from bfloat16 pairs: per k pair, four B registers of four column pairs each, and the
// six rows' pairs in one q register (rows 0–3) and one d register (rows 4, 5), each row's pair picked
// by lane. Only functions built for FEAT_BF16 may use BFDOT, so this one names its architecture.
#define LORA_BFDOT_ROW(r, av, lane, LANEFN)                                                      \
    do {                                                                                         \
        acc[r][0] = LANEFN(acc[r][0], b0, av, lane); acc[r][1] = LANEFN(acc[r][1], b1, av, lane); \
        acc[r][2] = LANEFN(acc[r][2], b2, av, lane); acc[r][3] = LANEFN(acc[r][3], b3, av, lane); \
    } while (0)

__attribute__((target("arch=armv8.2-a+fp16+bf16")))
void lora_sbgemm_neonbf16_6x16(int64_t kq, const uint32_t *a, const uint32_t *b, float *c, int64_t ldc,
                               float alpha, float beta) {
    float32x4_t acc[6][4];
    for (int r = 0; r < 6; r++) for (int q = 0; q < 4; q++) acc[r][q] = vdupq_n_f32(0);
    for (int64_t q = 0; q < kq; q++) {
        const uint32_t *bp = b + q * 16, *ap = a + q * 6;
        const bfloat16x8_t b0 = vreinterpretq_bf16_u32(vld1q_u32(bp)), b1 = vreinterpretq_bf16_u32(vld1q_u32(bp + 4));
        const bfloat16x8_t b2 = vreinterpretq_bf16_u32(vld1q_u32(bp + 8)), b3 = vreinterpretq_bf16_u32(vld1q_u32(bp + 12));
        const bfloat16x8_t a03 = vreinterpretq_bf16_u32(vld1q_u32(ap));
        const bfloat16x4_t a45 = vreinterpret_bf16_u32(vld1_u32(ap + 4));
        LORA_BFDOT_ROW(0, a03, 0, vbfdotq_laneq_f32);
        LORA_BFDOT_ROW(1, a03, 1, vbfdotq_laneq_f32);
        LORA_BFDOT_ROW(2, a03, 2, vbfdotq_laneq_f32);
        LORA_BFDOT_ROW(3, a03, 3, vbfdotq_laneq_f32);
        LORA_BFDOT_ROW(4, a45, 0, vbfdotq_lane_f32);
        LORA_BFDOT_ROW(5, a45, 1, vbfdotq_lane_f32);
    }
    neon_store_6x16(acc, c, ldc, alpha, beta);
}
#undef LORA_BFDOT_ROW

#else

// Never called where lora_cpu_features() lacks LORA_CPU_NEON_BF16; defined so every platform links.
void lora_sbgemm_neonbf16_6x16(int64_t kq, const uint32_t *a, const uint32_t *b, float *c, int64_t ldc,
                               float alpha, float beta) {
    (void)kq; (void)a; (void)b; (void)c; (void)ldc; (void)alpha; (void)beta;
    __builtin_trap();
}

// Never called where lora_cpu_features() lacks LORA_CPU_NEON; defined so every platform links.
void lora_sgemm_neon_6x16(int64_t kc, const float *a, const float *b, int64_t ldb, float *c, int64_t ldc,
                          float alpha, float beta) {
    (void)kc; (void)a; (void)b; (void)ldb; (void)c; (void)ldc; (void)alpha; (void)beta;
    __builtin_trap();
}

void lora_sgemm_neon_6x16_strided(int64_t kc, const float *a, int64_t ars, int64_t acs, int64_t arows,
                                  const float *b, int64_t ldb, float *c, int64_t ldc, float alpha, float beta) {
    (void)kc; (void)a; (void)ars; (void)acs; (void)arows; (void)b; (void)ldb; (void)c; (void)ldc;
    (void)alpha; (void)beta;
    __builtin_trap();
}

#endif
