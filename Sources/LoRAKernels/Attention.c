// The kernels of CausalAttention's AVX-512 path (CausalAttention+Packed.swift): the products against
// keys and values packed once per head, and the softmax rows, which write the probabilities straight
// into the layouts the next products read in place.
#include "LoRAKernels.h"

#if defined(__x86_64__)
#include <immintrin.h>
#include <math.h>

// MARK: - Products with B packed once

// One MR×NR tile, or a ragged one (rows < MR) through a scratch tile: the kernels compute all MR rows
// (repeating the last), so a ragged tile lands in scratch and only its real rows are combined into C.
#define LORA_ATTENTION_TILES(MR, NR, TILE_CALL)                                                           \
    for (int64_t j0 = 0; j0 < n; j0 += NR) {                                                              \
        for (int64_t i0 = 0; i0 < m; i0 += MR) {                                                          \
            const int64_t rows = m - i0 < MR ? m - i0 : MR;                                               \
            float *ct = c + i0 * ldc + j0;                                                                \
            if (rows == MR) {                                                                             \
                TILE_CALL(ct, ldc, alpha, beta);                                                          \
            } else {                                                                                      \
                float scratch[MR * NR];                                                                   \
                TILE_CALL(scratch, NR, 1.0f, 0.0f);                                                       \
                for (int64_t r = 0; r < rows; r++) {                                                      \
                    for (int64_t j = 0; j < NR; j++) {                                                    \
                        const float x = alpha * scratch[r * NR + j];                                      \
                        ct[r * ldc + j] = beta == 0.0f ? x : x + beta * ct[r * ldc + j];                  \
                    }                                                                                     \
                }                                                                                         \
            }                                                                                             \
        }                                                                                                 \
    }

__attribute__((target("avx2,fma")))
void lora_attention_sgemm_avx2(int64_t m, int64_t n, int64_t kc, const float *a, int64_t ars, int64_t acs,
                               const float *b, int64_t bps, float *c, int64_t ldc, float alpha, float beta) {
#define LORA_TILE(ct, ld, al, be) \
    lora_sgemm_avx2_6x16_strided(kc, a + i0 * ars, ars, acs, rows, b + (j0 / 16) * bps, 16, ct, ld, al, be)
    LORA_ATTENTION_TILES(6, 16, LORA_TILE)
#undef LORA_TILE
}

__attribute__((target("avx512f")))
void lora_attention_sgemm_avx512(int64_t m, int64_t n, int64_t kc, const float *a, int64_t ars, int64_t acs,
                                 const float *b, int64_t bps, float *c, int64_t ldc, float alpha, float beta) {
#define LORA_TILE(ct, ld, al, be) \
    lora_sgemm_avx512_14x32_strided(kc, a + i0 * ars, ars, acs, rows, b + (j0 / 32) * bps, 32, ct, ld, al, be)
    LORA_ATTENTION_TILES(14, 32, LORA_TILE)
#undef LORA_TILE
}

__attribute__((target("avx512f,avx512bf16")))
void lora_attention_sbgemm_avx512bf16(int64_t m, int64_t n, int64_t kq, const uint32_t *a, int64_t ars, int64_t acs,
                                      const uint32_t *b, int64_t bps, float *c, int64_t ldc, float alpha, float beta) {
#define LORA_TILE(ct, ld, al, be) \
    lora_sbgemm_avx512bf16_14x32_strided(kq, a + i0 * ars, ars, acs, rows, b + (j0 / 32) * bps, ct, ld, al, be)
    LORA_ATTENTION_TILES(14, 32, LORA_TILE)
#undef LORA_TILE
}
#undef LORA_ATTENTION_TILES

// MARK: - Softmax rows

// exp(x) as FastMath.swift's fastExp computes it (2ⁿ·exp(r), n = round(x / ln 2), ln 2 in two parts,
// a degree-7 Taylor polynomial for exp(r)), with FMAs and vscalefps, which gives 0 for x below −104
// where fastExp clamps at −87.3 (both are 0 or subnormal there). A NaN stays NaN (vmaxps returns its
// second operand when one is NaN), so a diverged score reaches the loss as on the `Gemm` path.
__attribute__((target("avx512f"), always_inline))
static inline __m512 exp512(__m512 x) {
    x = _mm512_max_ps(_mm512_set1_ps(-104.0f), x);
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187045e-06f), r);
    __m512 p = _mm512_set1_ps(1.0f / 5040);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

// Lanes j0..j0+15 that are below valid.
static inline __mmask16 below(int64_t j0, int64_t valid) {
    const int64_t left = valid - j0;
    return left >= 16 ? (__mmask16)0xFFFF : left <= 0 ? (__mmask16)0 : (__mmask16)((1u << left) - 1);
}

// Row i's exp(s − max) over its valid keys, as fp32 in place or (p16) as bfloat16; zero past them up
// to width. Returns the sum of the fp32 values, and the max through rowMax.
__attribute__((target("avx512f"), always_inline))
static inline float exp_row(float *row, int64_t valid, int64_t width, float *rowMax, uint16_t *p16,
                            void (*store16)(uint16_t *, __m512)) {
    __m512 mx = _mm512_set1_ps(-INFINITY);
    for (int64_t j = 0; j < valid; j += 16) mx = _mm512_mask_max_ps(mx, below(j, valid), mx, _mm512_loadu_ps(row + j));
    *rowMax = _mm512_reduce_max_ps(mx);
    const __m512 shift = _mm512_set1_ps(*rowMax);
    __m512 sum = _mm512_setzero_ps();
    for (int64_t j = 0; j < width; j += 16) {
        const __m512 e = _mm512_maskz_mov_ps(below(j, valid), exp512(_mm512_sub_ps(_mm512_loadu_ps(row + j), shift)));
        if (p16) store16(p16 + j, e);
        else _mm512_storeu_ps(row + j, e);
        sum = _mm512_add_ps(sum, e);
    }
    return _mm512_reduce_add_ps(sum);
}

__attribute__((target("avx512f")))
void lora_attention_softmax_avx512(float *s, int64_t ld, int64_t rows, int64_t first_valid, int64_t width, float *lse,
                                   float *inverse_sum) {
    for (int64_t i = 0; i < rows; i++) {
        float rowMax;
        const int64_t valid = first_valid + i < width ? first_valid + i : width;
        const float total = exp_row(s + i * ld, valid, width, &rowMax, 0, 0);
        lse[i] = rowMax + logf(total);
        inverse_sum[i] = 1.0f / total;
    }
}

__attribute__((target("avx512f,avx512bf16"), always_inline))
static inline void store_bf16(uint16_t *dst, __m512 x) { _mm256_storeu_si256((__m256i *)dst, (__m256i)_mm512_cvtneps_pbh(x)); }

__attribute__((target("avx512f,avx512bf16")))
void lora_attention_softmax_avx512bf16(float *s, int64_t ld, int64_t rows, int64_t first_valid, int64_t width,
                                       float *lse, float *inverse_sum, uint16_t *p16) {
    for (int64_t i = 0; i < rows; i++) {
        float rowMax;
        const int64_t valid = first_valid + i < width ? first_valid + i : width;
        const float total = exp_row(s + i * ld, valid, width, &rowMax, p16 + i * ld, store_bf16);
        lse[i] = rowMax + logf(total);
        inverse_sum[i] = 1.0f / total;
    }
}

// Rows i and i + 1 (a zero row when i + 1 = rows), keys j..j+15: P = exp(S − lse) and dS = P∘(dP − D)
// over the valid keys, zero past them.
typedef struct { __m512 p0, p1, g0, g1; } grad_lanes;

__attribute__((target("avx512f"), always_inline))
static inline grad_lanes grad_at(const float *s, const float *dp, int64_t ld, int64_t i, int64_t rows,
                                 int64_t first_valid, int64_t width, const float *lse, const float *dots, int64_t j) {
    grad_lanes out = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    for (int h = 0; h < 2 && i + h < rows; h++) {
        const int64_t valid = first_valid + i + h < width ? first_valid + i + h : width;
        const __mmask16 keep = below(j, valid);
        if (!keep) continue;
        const int64_t at = (i + h) * ld + j;
        const __m512 p = _mm512_maskz_mov_ps(keep, exp512(_mm512_sub_ps(_mm512_loadu_ps(s + at), _mm512_set1_ps(lse[i + h]))));
        const __m512 g = _mm512_maskz_mul_ps(keep, p, _mm512_sub_ps(_mm512_loadu_ps(dp + at), _mm512_set1_ps(dots[i + h])));
        if (h == 0) { out.p0 = p; out.g0 = g; } else { out.p1 = p; out.g1 = g; }
    }
    return out;
}

__attribute__((target("avx512f")))
void lora_attention_softmax_grad_avx512(float *s, float *dp, int64_t ld, int64_t rows, int64_t first_valid,
                                        int64_t width, const float *lse, const float *dots) {
    for (int64_t i = 0; i < rows; i += 2) {
        for (int64_t j = 0; j < width; j += 16) {
            const grad_lanes g = grad_at(s, dp, ld, i, rows, first_valid, width, lse, dots, j);
            _mm512_storeu_ps(s + i * ld + j, g.p0); _mm512_storeu_ps(dp + i * ld + j, g.g0);
            if (i + 1 < rows) { _mm512_storeu_ps(s + (i + 1) * ld + j, g.p1); _mm512_storeu_ps(dp + (i + 1) * ld + j, g.g1); }
        }
    }
}

// 16 values of two rows as bfloat16 pairs: row a's in the low halves, row b's in the high.
__attribute__((target("avx512f,avx512bf16"), always_inline))
static inline __m512i pair_words(__m512 a, __m512 b) {
    const __m512i lo = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(a));
    const __m512i hi = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(b));
    return _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16));
}

__attribute__((target("avx512f,avx512bf16")))
void lora_attention_softmax_grad_avx512bf16(const float *s, const float *dp, int64_t ld, int64_t rows, int64_t first_valid,
                                            int64_t width, const float *lse, const float *dots, uint16_t *ds16,
                                            uint32_t *ds_pairs, uint32_t *p_pairs) {
    for (int64_t i = 0; i < rows; i += 2) {
        for (int64_t j = 0; j < width; j += 16) {
            const grad_lanes g = grad_at(s, dp, ld, i, rows, first_valid, width, lse, dots, j);
            _mm256_storeu_si256((__m256i *)(ds16 + i * ld + j), (__m256i)_mm512_cvtneps_pbh(g.g0));
            if (i + 1 < rows) _mm256_storeu_si256((__m256i *)(ds16 + (i + 1) * ld + j), (__m256i)_mm512_cvtneps_pbh(g.g1));
            _mm512_storeu_si512(ds_pairs + (i / 2) * ld + j, pair_words(g.g0, g.g1));
            _mm512_storeu_si512(p_pairs + (i / 2) * ld + j, pair_words(g.p0, g.p1));
        }
    }
}

// MARK: - AVX2: the fp32 softmax kernels 8 lanes at a time

// exp512's algorithm on 8 lanes; 2ⁿ built in the exponent field, so x is clamped at −87.3 as
// fastExp clamps it (n + 127 stays positive).
__attribute__((target("avx2,fma"), always_inline))
static inline __m256 exp256(__m256 x) {
    x = _mm256_max_ps(_mm256_set1_ps(-87.3f), x);  // a NaN stays NaN, as in exp512
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145751953125f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428606765330187045e-06f), r);
    __m256 p = _mm256_set1_ps(1.0f / 5040);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    const __m256i scale = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(scale));
}

// All ones in lanes j0..j0+7 below valid.
__attribute__((target("avx2,fma"), always_inline))
static inline __m256 below8(int64_t j0, int64_t valid) {
    const int64_t left = valid - j0 < 8 ? valid - j0 : 8;
    return _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32((int)(left < 0 ? 0 : left)),
                                                  _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)));
}

__attribute__((target("avx2,fma"), always_inline))
static inline float sum8(__m256 x) {
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    return _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)));
}

__attribute__((target("avx2,fma"), always_inline))
static inline float max8(__m256 x) {
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    return _mm_cvtss_f32(_mm_max_ss(h, _mm_movehdup_ps(h)));
}

__attribute__((target("avx2,fma")))
void lora_attention_softmax_avx2(float *s, int64_t ld, int64_t rows, int64_t first_valid, int64_t width, float *lse,
                                 float *inverse_sum) {
    for (int64_t i = 0; i < rows; i++) {
        float *row = s + i * ld;
        const int64_t valid = first_valid + i < width ? first_valid + i : width;
        __m256 mx = _mm256_set1_ps(-INFINITY);
        for (int64_t j = 0; j < valid; j += 8) {
            mx = _mm256_max_ps(mx, _mm256_blendv_ps(_mm256_set1_ps(-INFINITY), _mm256_loadu_ps(row + j), below8(j, valid)));
        }
        const float rowMax = max8(mx);
        const __m256 shift = _mm256_set1_ps(rowMax);
        __m256 sum = _mm256_setzero_ps();
        for (int64_t j = 0; j < width; j += 8) {
            const __m256 e = _mm256_and_ps(below8(j, valid), exp256(_mm256_sub_ps(_mm256_loadu_ps(row + j), shift)));
            _mm256_storeu_ps(row + j, e);
            sum = _mm256_add_ps(sum, e);
        }
        const float total = sum8(sum);
        lse[i] = rowMax + logf(total);
        inverse_sum[i] = 1.0f / total;
    }
}

__attribute__((target("avx2,fma")))
void lora_attention_softmax_grad_avx2(float *s, float *dp, int64_t ld, int64_t rows, int64_t first_valid,
                                      int64_t width, const float *lse, const float *dots) {
    for (int64_t i = 0; i < rows; i++) {
        float *srow = s + i * ld, *dprow = dp + i * ld;
        const int64_t valid = first_valid + i < width ? first_valid + i : width;
        const __m256 shift = _mm256_set1_ps(lse[i]), dot = _mm256_set1_ps(dots[i]);
        for (int64_t j = 0; j < width; j += 8) {
            const __m256 keep = below8(j, valid);
            const __m256 p = _mm256_and_ps(keep, exp256(_mm256_sub_ps(_mm256_loadu_ps(srow + j), shift)));
            const __m256 g = _mm256_and_ps(keep, _mm256_mul_ps(p, _mm256_sub_ps(_mm256_loadu_ps(dprow + j), dot)));
            _mm256_storeu_ps(srow + j, p);
            _mm256_storeu_ps(dprow + j, g);
        }
    }
}

#else

// Never called where lora_cpu_features() lacks LORA_CPU_AVX512F (or LORA_CPU_AVX2_FMA for the avx2
// functions); defined so every platform links.
void lora_attention_sgemm_avx2(int64_t m, int64_t n, int64_t kc, const float *a, int64_t ars, int64_t acs,
                               const float *b, int64_t bps, float *c, int64_t ldc, float alpha, float beta) {
    (void)m; (void)n; (void)kc; (void)a; (void)ars; (void)acs; (void)b; (void)bps; (void)c; (void)ldc;
    (void)alpha; (void)beta;
    __builtin_trap();
}

void lora_attention_softmax_avx2(float *s, int64_t ld, int64_t rows, int64_t first_valid, int64_t width, float *lse,
                                 float *inverse_sum) {
    (void)s; (void)ld; (void)rows; (void)first_valid; (void)width; (void)lse; (void)inverse_sum;
    __builtin_trap();
}

void lora_attention_softmax_grad_avx2(float *s, float *dp, int64_t ld, int64_t rows, int64_t first_valid,
                                      int64_t width, const float *lse, const float *dots) {
    (void)s; (void)dp; (void)ld; (void)rows; (void)first_valid; (void)width; (void)lse; (void)dots;
    __builtin_trap();
}

void lora_attention_sgemm_avx512(int64_t m, int64_t n, int64_t kc, const float *a, int64_t ars, int64_t acs,
                                 const float *b, int64_t bps, float *c, int64_t ldc, float alpha, float beta) {
    (void)m; (void)n; (void)kc; (void)a; (void)ars; (void)acs; (void)b; (void)bps; (void)c; (void)ldc;
    (void)alpha; (void)beta;
    __builtin_trap();
}

void lora_attention_sbgemm_avx512bf16(int64_t m, int64_t n, int64_t kq, const uint32_t *a, int64_t ars, int64_t acs,
                                      const uint32_t *b, int64_t bps, float *c, int64_t ldc, float alpha, float beta) {
    (void)m; (void)n; (void)kq; (void)a; (void)ars; (void)acs; (void)b; (void)bps; (void)c; (void)ldc;
    (void)alpha; (void)beta;
    __builtin_trap();
}

void lora_attention_softmax_avx512(float *s, int64_t ld, int64_t rows, int64_t first_valid, int64_t width, float *lse,
                                   float *inverse_sum) {
    (void)s; (void)ld; (void)rows; (void)first_valid; (void)width; (void)lse; (void)inverse_sum;
    __builtin_trap();
}

void lora_attention_softmax_avx512bf16(float *s, int64_t ld, int64_t rows, int64_t first_valid, int64_t width,
                                       float *lse, float *inverse_sum, uint16_t *p16) {
    (void)s; (void)ld; (void)rows; (void)first_valid; (void)width; (void)lse; (void)inverse_sum; (void)p16;
    __builtin_trap();
}

void lora_attention_softmax_grad_avx512(float *s, float *dp, int64_t ld, int64_t rows, int64_t first_valid,
                                        int64_t width, const float *lse, const float *dots) {
    (void)s; (void)dp; (void)ld; (void)rows; (void)first_valid; (void)width; (void)lse; (void)dots;
    __builtin_trap();
}

void lora_attention_softmax_grad_avx512bf16(const float *s, const float *dp, int64_t ld, int64_t rows, int64_t first_valid,
                                            int64_t width, const float *lse, const float *dots, uint16_t *ds16,
                                            uint32_t *ds_pairs, uint32_t *p_pairs) {
    (void)s; (void)dp; (void)ld; (void)rows; (void)first_valid; (void)width; (void)lse; (void)dots; (void)ds16;
    (void)ds_pairs; (void)p_pairs;
    __builtin_trap();
}

#endif
