// Dot products of GGML's K-quant rows (Q4_K, Q6_K: super-blocks of 256 values, the types of the
// common Q4_K_M files) with fp32 vectors, for token-by-token decoding as QuantizedDot.c does for the
// 32-value types. Each group of 16 weights is dequantized in registers (scale·q − min, one FMA) and
// multiplied into every vector's accumulator; the vectors are not rounded.
#include "QuantizedBlocks.h"

#if defined(__x86_64__)

// As in QuantizedDot.c: how far ahead of the block being read the weight stream is fetched.
#define LORA_QDOT_K_PREFETCH 2048

// MARK: AVX-512

__attribute__((target("avx512f,f16c"), always_inline))
static inline void avx512_q4k_row(const uint8_t *row, int64_t blocks, const float *x, int64_t ldx, int64_t nx, float sums[4]) {
    __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    for (int64_t b = 0; b < blocks; b++) {
        const uint8_t *blk = row + b * 144;
        _mm_prefetch((const char *)(blk + LORA_QDOT_K_PREFETCH), _MM_HINT_T0);
        float scale[8], min[8];
        q4k_scales(blk, scale, min);
        for (int pair = 0; pair < 4; pair++) {
            __m256i nib[2];
            q4k_pair(blk, pair, nib);
            for (int half = 0; half < 2; half++) {
                const int j = 2 * pair + half;
                const __m512 s = _mm512_set1_ps(scale[j]), m = _mm512_set1_ps(-min[j]);
                const __m512 w0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm256_castsi256_si128(nib[half]))), s, m);
                const __m512 w1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm256_extracti128_si256(nib[half], 1))), s, m);
                for (int64_t r = 0; r < nx; r++) {
                    const float *xb = x + r * ldx + b * 256 + 32 * j;
                    acc[r] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(xb), acc[r]);
                    acc[r] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(xb + 16), acc[r]);
                }
            }
        }
    }
    for (int64_t r = 0; r < nx; r++) sums[r] = _mm512_reduce_add_ps(acc[r]);
}

__attribute__((target("avx512f,f16c"), always_inline))
static inline void avx512_q6k_row(const uint8_t *row, int64_t blocks, const float *x, int64_t ldx, int64_t nx, float sums[4]) {
    __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    for (int64_t b = 0; b < blocks; b++) {
        const uint8_t *blk = row + b * 210;
        _mm_prefetch((const char *)(blk + LORA_QDOT_K_PREFETCH), _MM_HINT_T0);
        const float d = _cvtsh_ss(load_u16(blk + 208));
        const int8_t *scales = (const int8_t *)(blk + 192);
        for (int h = 0; h < 2; h++) {
            for (int g = 0; g < 4; g++) {
                const __m256i q = q6k_group(blk, h, g);
                const int s = 8 * h + 2 * g;
                const __m512 w0 = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_castsi256_si128(q))),
                                                _mm512_set1_ps(d * (float)scales[s]));
                const __m512 w1 = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_extracti128_si256(q, 1))),
                                                _mm512_set1_ps(d * (float)scales[s + 1]));
                for (int64_t r = 0; r < nx; r++) {
                    const float *xb = x + r * ldx + b * 256 + 128 * h + 32 * g;
                    acc[r] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(xb), acc[r]);
                    acc[r] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(xb + 16), acc[r]);
                }
            }
        }
    }
    for (int64_t r = 0; r < nx; r++) sums[r] = _mm512_reduce_add_ps(acc[r]);
}

// The loop over rows, with the type and the vector count as constants in each inlined instance.
#define LORA_QDOT_K_ROWS(Q4K, Q6K)                                                              \
    for (int64_t k = 0; k < rows; k++) {                                                        \
        float sums[4];                                                                          \
        const uint8_t *row = w + k * row_bytes;                                                 \
        switch (nx) {                                                                           \
        case 1: if (type == LORA_QDOT_Q4_K) Q4K(row, blocks, x, ldx, 1, sums); else Q6K(row, blocks, x, ldx, 1, sums); break; \
        case 2: if (type == LORA_QDOT_Q4_K) Q4K(row, blocks, x, ldx, 2, sums); else Q6K(row, blocks, x, ldx, 2, sums); break; \
        case 3: if (type == LORA_QDOT_Q4_K) Q4K(row, blocks, x, ldx, 3, sums); else Q6K(row, blocks, x, ldx, 3, sums); break; \
        default: if (type == LORA_QDOT_Q4_K) Q4K(row, blocks, x, ldx, 4, sums); else Q6K(row, blocks, x, ldx, 4, sums); break; \
        }                                                                                       \
        for (int64_t r = 0; r < nx; r++) y[r * ldy + k] = beta == 0 ? sums[r] : beta * y[r * ldy + k] + sums[r]; \
    }

__attribute__((target("avx512f,f16c")))
void lora_qdot_k_avx512(int type, const uint8_t *w, int64_t row_bytes, int64_t rows, int64_t blocks, const float *x,
                        int64_t ldx, int64_t nx, float beta, float *y, int64_t ldy) {
    LORA_QDOT_K_ROWS(avx512_q4k_row, avx512_q6k_row)
}

// MARK: AVX2

__attribute__((target("avx2,fma,f16c"), always_inline))
static inline __m256 k_floats_u8(__m128i v) { return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v)); }
__attribute__((target("avx2,fma,f16c"), always_inline))
static inline __m256 k_floats_i8(__m128i v) { return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v)); }

__attribute__((target("avx2,fma,f16c"), always_inline))
static inline void avx2_q4k_row(const uint8_t *row, int64_t blocks, const float *x, int64_t ldx, int64_t nx, float sums[4]) {
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t b = 0; b < blocks; b++) {
        const uint8_t *blk = row + b * 144;
        _mm_prefetch((const char *)(blk + LORA_QDOT_K_PREFETCH), _MM_HINT_T0);
        float scale[8], min[8];
        q4k_scales(blk, scale, min);
        for (int pair = 0; pair < 4; pair++) {
            __m256i nib[2];
            q4k_pair(blk, pair, nib);
            for (int half = 0; half < 2; half++) {
                const int j = 2 * pair + half;
                const __m256 s = _mm256_set1_ps(scale[j]), m = _mm256_set1_ps(-min[j]);
                const __m128i n0 = _mm256_castsi256_si128(nib[half]), n1 = _mm256_extracti128_si256(nib[half], 1);
                const __m256 wv[4] = {
                    _mm256_fmadd_ps(k_floats_u8(n0), s, m), _mm256_fmadd_ps(k_floats_u8(_mm_srli_si128(n0, 8)), s, m),
                    _mm256_fmadd_ps(k_floats_u8(n1), s, m), _mm256_fmadd_ps(k_floats_u8(_mm_srli_si128(n1, 8)), s, m),
                };
                for (int64_t r = 0; r < nx; r++) {
                    const float *xb = x + r * ldx + b * 256 + 32 * j;
                    for (int i = 0; i < 4; i++) acc[r] = _mm256_fmadd_ps(wv[i], _mm256_loadu_ps(xb + 8 * i), acc[r]);
                }
            }
        }
    }
    for (int64_t r = 0; r < nx; r++) sums[r] = sum8(acc[r]);
}

__attribute__((target("avx2,fma,f16c"), always_inline))
static inline void avx2_q6k_row(const uint8_t *row, int64_t blocks, const float *x, int64_t ldx, int64_t nx, float sums[4]) {
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t b = 0; b < blocks; b++) {
        const uint8_t *blk = row + b * 210;
        _mm_prefetch((const char *)(blk + LORA_QDOT_K_PREFETCH), _MM_HINT_T0);
        const float d = _cvtsh_ss(load_u16(blk + 208));
        const int8_t *scales = (const int8_t *)(blk + 192);
        for (int h = 0; h < 2; h++) {
            for (int g = 0; g < 4; g++) {
                const __m256i q = q6k_group(blk, h, g);
                const int s = 8 * h + 2 * g;
                const __m256 sa = _mm256_set1_ps(d * (float)scales[s]), sb = _mm256_set1_ps(d * (float)scales[s + 1]);
                const __m128i q0 = _mm256_castsi256_si128(q), q1 = _mm256_extracti128_si256(q, 1);
                const __m256 wv[4] = {
                    _mm256_mul_ps(k_floats_i8(q0), sa), _mm256_mul_ps(k_floats_i8(_mm_srli_si128(q0, 8)), sa),
                    _mm256_mul_ps(k_floats_i8(q1), sb), _mm256_mul_ps(k_floats_i8(_mm_srli_si128(q1, 8)), sb),
                };
                for (int64_t r = 0; r < nx; r++) {
                    const float *xb = x + r * ldx + b * 256 + 128 * h + 32 * g;
                    for (int i = 0; i < 4; i++) acc[r] = _mm256_fmadd_ps(wv[i], _mm256_loadu_ps(xb + 8 * i), acc[r]);
                }
            }
        }
    }
    for (int64_t r = 0; r < nx; r++) sums[r] = sum8(acc[r]);
}

__attribute__((target("avx2,fma,f16c")))
void lora_qdot_k_avx2(int type, const uint8_t *w, int64_t row_bytes, int64_t rows, int64_t blocks, const float *x,
                      int64_t ldx, int64_t nx, float beta, float *y, int64_t ldy) {
    LORA_QDOT_K_ROWS(avx2_q4k_row, avx2_q6k_row)
}

#else

// Never called where lora_cpu_features() lacks the instruction set; defined so every platform links.
void lora_qdot_k_avx512(int type, const uint8_t *w, int64_t row_bytes, int64_t rows, int64_t blocks, const float *x,
                        int64_t ldx, int64_t nx, float beta, float *y, int64_t ldy) {
    (void)type; (void)w; (void)row_bytes; (void)rows; (void)blocks; (void)x; (void)ldx; (void)nx; (void)beta; (void)y; (void)ldy;
    __builtin_trap();
}

void lora_qdot_k_avx2(int type, const uint8_t *w, int64_t row_bytes, int64_t rows, int64_t blocks, const float *x,
                      int64_t ldx, int64_t nx, float beta, float *y, int64_t ldy) {
    (void)type; (void)w; (void)row_bytes; (void)rows; (void)blocks; (void)x; (void)ldx; (void)nx; (void)beta; (void)y; (void)ldy;
    __builtin_trap();
}

#endif
