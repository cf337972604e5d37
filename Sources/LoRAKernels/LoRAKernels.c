#include "LoRAKernels.h"


#if defined(__x86_64__)
#include <immintrin.h>

uint32_t lora_cpu_features(void) {
    // __builtin_cpu_supports also checks that the OS saves the wide registers (XGETBV).
    __builtin_cpu_init();
    uint32_t f = 0;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) f |= LORA_CPU_AVX2_FMA;
    if (__builtin_cpu_supports("avx512f")) f |= LORA_CPU_AVX512F;
    if (__builtin_cpu_supports("avx512bf16")) f |= LORA_CPU_AVX512BF16;
    return f;
}

// Twelve accumulators (6 rows × two 8-float halves), two B loads and one broadcast per row: 15 of the
// 16 ymm registers. Each k step is 12 FMAs against 8 loads, which keeps both FMA pipes of a Zen or
// Skylake core busy. The k loop is unrolled by two so the loop overhead stays off the FMA ports.
// Inlined into both entry points, so the packed one sees its A offsets as constants (one pointer
// register instead of six, and no spills in the loop).
__attribute__((target("avx2,fma"), always_inline))
static inline void avx2_6x16(int64_t kc, const float *a0, const float *a1, const float *a2, const float *a3,
                             const float *a4, const float *a5, int64_t acs, const float *b, int64_t ldb,
                             float *c, int64_t ldc, float alpha, float beta) {
    // The tile of C is written at the end; start fetching its rows now (they are rarely in cache).
    for (int r = 0; r < 6; r++) {
        _mm_prefetch((const char *)(c + r * ldc), _MM_HINT_T0);
        _mm_prefetch((const char *)(c + r * ldc + 15), _MM_HINT_T0);
    }
    __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps(), c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
    __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps(), c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
    __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps(), c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
#define LORA_AVX2_STEP(p)                                                          \
    do {                                                                           \
        const float *bp = b + (p) * ldb;                                           \
        const int64_t ao = (p) * acs;                                              \
        __m256 b0 = _mm256_loadu_ps(bp), b1 = _mm256_loadu_ps(bp + 8), x;          \
        x = _mm256_broadcast_ss(a0 + ao);                                          \
        c00 = _mm256_fmadd_ps(x, b0, c00); c01 = _mm256_fmadd_ps(x, b1, c01);      \
        x = _mm256_broadcast_ss(a1 + ao);                                          \
        c10 = _mm256_fmadd_ps(x, b0, c10); c11 = _mm256_fmadd_ps(x, b1, c11);      \
        x = _mm256_broadcast_ss(a2 + ao);                                          \
        c20 = _mm256_fmadd_ps(x, b0, c20); c21 = _mm256_fmadd_ps(x, b1, c21);      \
        x = _mm256_broadcast_ss(a3 + ao);                                          \
        c30 = _mm256_fmadd_ps(x, b0, c30); c31 = _mm256_fmadd_ps(x, b1, c31);      \
        x = _mm256_broadcast_ss(a4 + ao);                                          \
        c40 = _mm256_fmadd_ps(x, b0, c40); c41 = _mm256_fmadd_ps(x, b1, c41);      \
        x = _mm256_broadcast_ss(a5 + ao);                                          \
        c50 = _mm256_fmadd_ps(x, b0, c50); c51 = _mm256_fmadd_ps(x, b1, c51);      \
    } while (0)
    int64_t p = 0;
    for (; p + 2 <= kc; p += 2) {
        LORA_AVX2_STEP(p);
        LORA_AVX2_STEP(p + 1);
    }
    if (p < kc) LORA_AVX2_STEP(p);
#undef LORA_AVX2_STEP

    const __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
#define LORA_AVX2_STORE(row, lo, hi)                                                              \
    do {                                                                                          \
        float *cr = c + (row) * ldc;                                                              \
        __m256 r0 = _mm256_mul_ps(va, lo), r1 = _mm256_mul_ps(va, hi);                            \
        if (beta == 1.0f) {                                                                       \
            r0 = _mm256_add_ps(r0, _mm256_loadu_ps(cr)); r1 = _mm256_add_ps(r1, _mm256_loadu_ps(cr + 8)); \
        } else if (beta != 0.0f) {                                                                \
            r0 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(cr), r0);                                    \
            r1 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(cr + 8), r1);                                \
        }                                                                                         \
        _mm256_storeu_ps(cr, r0); _mm256_storeu_ps(cr + 8, r1);                                   \
    } while (0)
    LORA_AVX2_STORE(0, c00, c01);
    LORA_AVX2_STORE(1, c10, c11);
    LORA_AVX2_STORE(2, c20, c21);
    LORA_AVX2_STORE(3, c30, c31);
    LORA_AVX2_STORE(4, c40, c41);
    LORA_AVX2_STORE(5, c50, c51);
#undef LORA_AVX2_STORE
}

__attribute__((target("avx2,fma")))
void lora_sgemm_avx2_6x16(int64_t kc, const float *a, const float *b, int64_t ldb, float *c, int64_t ldc,
                          float alpha, float beta) {
    avx2_6x16(kc, a, a + 1, a + 2, a + 3, a + 4, a + 5, 6, b, ldb, c, ldc, alpha, beta);
}

__attribute__((target("avx2,fma")))
void lora_sgemm_avx2_6x16_strided(int64_t kc, const float *a, int64_t ars, int64_t acs, int64_t arows,
                                  const float *b, int64_t ldb, float *c, int64_t ldc, float alpha, float beta) {
    const int64_t last = arows - 1;
    avx2_6x16(kc, a, a + (last < 1 ? last : 1) * ars, a + (last < 2 ? last : 2) * ars,
              a + (last < 3 ? last : 3) * ars, a + (last < 4 ? last : 4) * ars, a + (last < 5 ? last : 5) * ars,
              acs, b, ldb, c, ldc, alpha, beta);
}

#else

uint32_t lora_cpu_features(void) { return 0; }

// Never called where lora_cpu_features() lacks LORA_CPU_AVX2_FMA; defined so every platform links.
void lora_sgemm_avx2_6x16(int64_t kc, const float *a, const float *b, int64_t ldb, float *c, int64_t ldc,
                          float alpha, float beta) {
    (void)kc; (void)a; (void)b; (void)ldb; (void)c; (void)ldc; (void)alpha; (void)beta;
    __builtin_trap();
}

void lora_sgemm_avx2_6x16_strided(int64_t kc, const float *a, int64_t ars, int64_t acs, int64_t arows,
                                  const float *b, int64_t ldb, float *c, int64_t ldc, float alpha, float beta) {
    (void)kc; (void)a; (void)ars; (void)acs; (void)arows; (void)b; (void)ldb; (void)c; (void)ldc;
    (void)alpha; (void)beta;
    __builtin_trap();
}

#endif
