// Dot products of GGML-quantized weight rows with 8-bit-quantized activations, as llama.cpp takes
// them when decoding: integer products of each block's 32 weights and 32 activation bytes, one
// float multiply-add per block. The activations come from QuantizedDot.Q8Vectors (Swift): per block
// of 32 values q = round(x / d) with d = max|x| / 127, the scale d and f = d·Σq.
//
// Block sums, with u the weights as unsigned bytes and s the activation bytes:
//   Q8_0: w = dw·q          Σ w·x = dw·d·Σ |q|·sign(s, q)   (|q| ≤ 128 fits u8; signs moved onto s)
//   Q4_0: w = dw·(n − 8)    Σ w·x = dw·d·Σ n·s − 8·dw·f
//   Q4_1: w = dw·n + m      Σ w·x = dw·d·Σ n·s + m·f
// The integer sums are exact; what differs from the product in fp32 is the rounding of x to 8 bits.
#include "QuantizedBlocks.h"

#if defined(__x86_64__)
#include <immintrin.h>

// How far ahead the weight stream is fetched: as in QuantizedDot.c (2 KB ahead: 1.5x the blocks per
// second on a 70 MB Q4_1 matrix here).
#define LORA_QDOT_PREFETCH 2048

// Block b of a row into accumulator set J (a constant, so the accumulators stay in registers).
// DOT(u, s) is the 8 int32 sums of 4 adjacent u8·s8 pairs: vpdpbusd with VNNI, or vpmaddubsw and
// vpmaddwd (no pair sum overflows: 2·128·127 < 2^15).
#define LORA_Q8_BLOCK(DOT, J, b)                                                                             \
    do {                                                                                                     \
        const uint8_t *blk = row + (b) * bb;                                                                 \
        const float dw = _cvtsh_ss(load_u16(blk));                                                        \
        __m256i u, w = _mm256_setzero_si256();                                                               \
        float m = 0;                                                                                         \
        if (type == LORA_QDOT_Q8_0) {                                                                        \
            w = _mm256_loadu_si256((const __m256i *)(blk + 2));                                              \
            u = _mm256_abs_epi8(w);                                                                          \
        } else {                                                                                             \
            const __m128i q = _mm_loadu_si128((const __m128i *)(blk + (type == LORA_QDOT_Q4_1 ? 4 : 2)));     \
            /* values 0..15 are the low nibbles, 16..31 the high ones: the activations' order */              \
            u = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), low);                            \
            if (type == LORA_QDOT_Q4_1) m = _cvtsh_ss(load_u16(blk + 2));                                 \
        }                                                                                                    \
        for (int64_t r = 0; r < nx; r++) {                                                                   \
            __m256i s = _mm256_loadu_si256((const __m256i *)(xq + r * ldq + (b) * 32));                      \
            if (type == LORA_QDOT_Q8_0) s = _mm256_sign_epi8(s, w);                                          \
            const __m256 p = _mm256_cvtepi32_ps(DOT(u, s));                                                  \
            acc##J[r] = _mm256_fmadd_ps(p, _mm256_set1_ps(dw * xd[r * ldb + (b)]), acc##J[r]);               \
            if (type == LORA_QDOT_Q4_0) off##J[r] -= 8 * dw * xf[r * ldb + (b)];                             \
            if (type == LORA_QDOT_Q4_1) off##J[r] += m * xf[r * ldb + (b)];                                  \
        }                                                                                                    \
    } while (0)

// One row against nx ≤ 4 quantized vectors. Everything is 256 bits wide: on CPUs that run AVX-512
// on two ports, ymm work has three. Even and odd blocks go to separate accumulators, so that two
// multiply-add chains run side by side (one alone holds a block to the FMA's latency).
#define LORA_Q8_ROW(NAME, TARGET, DOT)                                                                       \
    __attribute__((target(TARGET), always_inline))                                                           \
    static inline void NAME(int type, const uint8_t *row, int64_t blocks, const int8_t *xq, const float *xd,   \
                            const float *xf, int64_t ldq, int64_t nx, float sums[4]) {                       \
        __m256 acc0[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()}; \
        __m256 acc1[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()}; \
        float off0[4] = {0, 0, 0, 0}, off1[4] = {0, 0, 0, 0};                                                \
        const __m256i low = _mm256_set1_epi8(0x0F);                                                          \
        const int64_t bb = block_bytes(type);                                                                \
        const int64_t ldb = ldq / 32;                                                                        \
        int64_t b = 0;                                                                                       \
        for (; b + 2 <= blocks; b += 2) {                                                                    \
            _mm_prefetch((const char *)(row + b * bb + LORA_QDOT_PREFETCH), _MM_HINT_T0);                    \
            LORA_Q8_BLOCK(DOT, 0, b);                                                                        \
            LORA_Q8_BLOCK(DOT, 1, b + 1);                                                                    \
        }                                                                                                    \
        if (b < blocks) LORA_Q8_BLOCK(DOT, 0, b);                                                            \
        for (int64_t r = 0; r < nx; r++) {                                                                   \
            const __m256 a = _mm256_add_ps(acc0[r], acc1[r]);                                                \
            const __m128 h = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));             \
            const __m128 h2 = _mm_add_ps(h, _mm_movehl_ps(h, h));                                            \
            sums[r] = _mm_cvtss_f32(_mm_add_ss(h2, _mm_shuffle_ps(h2, h2, 1))) + (off0[r] + off1[r]);        \
        }                                                                                                    \
    }

#define LORA_Q8_DOT_VNNI(u, s) _mm256_dpbusd_epi32(_mm256_setzero_si256(), (u), (s))
#define LORA_Q8_DOT_AVX2(u, s) _mm256_madd_epi16(_mm256_maddubs_epi16((u), (s)), _mm256_set1_epi16(1))

LORA_Q8_ROW(vnni_row, "avx512vnni,avx512vl,avx2,fma,f16c", LORA_Q8_DOT_VNNI)
LORA_Q8_ROW(avx2_q8_row, "avx2,fma,f16c", LORA_Q8_DOT_AVX2)

// An entry point's loop over rows, with the type and vector count as constants in each instance (see
// QuantizedDot.c).
#define LORA_Q8_VECTORS(ROW, t)                                               \
    switch (nx) {                                                             \
    case 1: ROW(t, row, blocks, xq, xd, xf, ldq, 1, sums); break;             \
    case 2: ROW(t, row, blocks, xq, xd, xf, ldq, 2, sums); break;             \
    case 3: ROW(t, row, blocks, xq, xd, xf, ldq, 3, sums); break;             \
    default: ROW(t, row, blocks, xq, xd, xf, ldq, 4, sums); break;            \
    }
#define LORA_Q8_ROWS(ROW)                                                     \
    for (int64_t k = 0; k < rows; k++) {                                      \
        float sums[4];                                                        \
        const uint8_t *row = w + k * row_bytes;                               \
        switch (type) {                                                       \
        case LORA_QDOT_Q4_0: LORA_Q8_VECTORS(ROW, LORA_QDOT_Q4_0) break;      \
        case LORA_QDOT_Q4_1: LORA_Q8_VECTORS(ROW, LORA_QDOT_Q4_1) break;      \
        default: LORA_Q8_VECTORS(ROW, LORA_QDOT_Q8_0) break;                  \
        }                                                                     \
        for (int64_t r = 0; r < nx; r++) y[r * ldy + k] = beta == 0 ? sums[r] : beta * y[r * ldy + k] + sums[r]; \
    }

__attribute__((target("avx512vnni,avx512vl,avx2,fma,f16c")))
void lora_qdot_q8_vnni(int type, const uint8_t *w, int64_t row_bytes, int64_t rows, int64_t blocks, const int8_t *xq,
                       const float *xd, const float *xf, int64_t ldq, int64_t nx, float beta, float *y, int64_t ldy) {
    LORA_Q8_ROWS(vnni_row)
}

__attribute__((target("avx2,fma,f16c")))
void lora_qdot_q8_avx2(int type, const uint8_t *w, int64_t row_bytes, int64_t rows, int64_t blocks, const int8_t *xq,
                       const float *xd, const float *xf, int64_t ldq, int64_t nx, float beta, float *y, int64_t ldy) {
    LORA_Q8_ROWS(avx2_q8_row)
}

#else

// Never called where lora_cpu_features() lacks the instruction set; defined so every platform links.
void lora_qdot_q8_vnni(int type, const uint8_t *w, int64_t row_bytes, int64_t rows, int64_t blocks, const int8_t *xq,
                       const float *xd, const float *xf, int64_t ldq, int64_t nx, float beta, float *y, int64_t ldy) {
    (void)type; (void)w; (void)row_bytes; (void)rows; (void)blocks; (void)xq; (void)xd; (void)xf; (void)ldq; (void)nx;
    (void)beta; (void)y; (void)ldy;
    __builtin_trap();
}

void lora_qdot_q8_avx2(int type, const uint8_t *w, int64_t row_bytes, int64_t rows, int64_t blocks, const int8_t *xq,
                       const float *xd, const float *xf, int64_t ldq, int64_t nx, float beta, float *y, int64_t ldy) {
    (void)type; (void)w; (void)row_bytes; (void)rows; (void)blocks; (void)xq; (void)xd; (void)xf; (void)ldq; (void)nx;
    (void)beta; (void)y; (void)ldy;
    __builtin_trap();
}

#endif
