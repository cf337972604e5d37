// Dot products of GGML-quantized weight rows with 8-bit-quantized activations, as llama.cpp takes
// them when decoding: integer products of each block's 32 weights and 32 activation bytes, one
// float multiply-add per block. The activations come from QuantizedDot.Q8Vectors (Swift): per block
// of 32 values q = round(x / d) with d = max|x| / 127, the scale d and f = d·Σq.
//
// Block sums, with u the weights as unsigned bytes and s the activation bytes:
//   Q8_0: w = dw·q          Σ w·x = dw·d·Σ |q|·sign(s, q)   (|q| ≤ 128 fits u8; signs moved onto s)
//   Q4_0: w = dw·(n − 8)    Σ w·x = dw·d·Σ n·s − 8·dw·f
//   Q4_1: w = dw·n + m      Σ w·x = dw·d·Σ n·s + m·f
//   Q5_0, Q5_1: as Q4_0 (with 16 for 8) and Q4_1, n taking its fifth bit
//   Q4_K: sub-block j (32 values) as Q4_1 with its own scale and min (QuantizedDotK.c's layout)
//   Q6_K: each 32 values as Q8_0, their two halves under their own scales
// The integer sums are exact; what differs from the product in fp32 is the rounding of x to 8 bits.
#include "QuantizedBlocks.h"

#if defined(__x86_64__)
#include <immintrin.h>

// How far ahead the weight stream is fetched: as in QuantizedDot.c (2 KB ahead: 1.5x the blocks per
// second on a 70 MB Q4_1 matrix here).
#define LORA_QDOT_PREFETCH 2048

// A Q5 block's 32 fifth bits as bytes: byte i is 0x10 where bit i is set (each byte of the word
// spread over 8 bytes, then each tested against its own bit).
__attribute__((target("avx2"), always_inline))
static inline __m256i fifth_bits(uint32_t bits) {
    const __m256i spread = _mm256_shuffle_epi8(_mm256_set1_epi32((int)bits),
                                               _mm256_setr_epi64x(0, 0x0101010101010101, 0x0202020202020202, 0x0303030303030303));
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    return _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit), _mm256_set1_epi8(0x10));
}

// Block b of a row into accumulator set J (a constant, so the accumulators stay in registers).
// DOT(u, s) is the 8 int32 sums of 4 adjacent u8·s8 pairs: vpdpbusd with VNNI, or vpmaddubsw and
// vpmaddwd (no pair sum overflows: 2·128·127 < 2^15).
#define LORA_Q8_BLOCK(DOT, FIFTH, J, b)                                                                             \
    do {                                                                                                     \
        const uint8_t *blk = row + (b) * bb;                                                                 \
        const float dw = _cvtsh_ss(load_u16(blk));                                                        \
        __m256i u, w = _mm256_setzero_si256();                                                               \
        float m = 0;                                                                                         \
        if (type == LORA_QDOT_Q8_0) {                                                                        \
            w = _mm256_loadu_si256((const __m256i *)(blk + 2));                                              \
            u = _mm256_abs_epi8(w);                                                                          \
        } else {                                                                                             \
            const __m128i q = _mm_loadu_si128((const __m128i *)(blk + quants_at(type)));                     \
            /* values 0..15 are the low nibbles, 16..31 the high ones: the activations' order */              \
            u = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), low);                            \
            if (has_fifth_bit(type)) u = _mm256_or_si256(u, FIFTH(load_u32(blk + (has_min(type) ? 4 : 2))));    \
            if (has_min(type)) m = _cvtsh_ss(load_u16(blk + 2));                                          \
        }                                                                                                    \
        for (int64_t r = 0; r < nx; r++) {                                                                   \
            __m256i s = _mm256_loadu_si256((const __m256i *)(xq + r * ldq + (b) * 32));                      \
            if (type == LORA_QDOT_Q8_0) s = _mm256_sign_epi8(s, w);                                          \
            const __m256 p = _mm256_cvtepi32_ps(DOT(u, s));                                                  \
            acc##J[r] = _mm256_fmadd_ps(p, _mm256_set1_ps(dw * xd[r * ldb + (b)]), acc##J[r]);               \
            if (type == LORA_QDOT_Q4_0) off##J[r] -= 8 * dw * xf[r * ldb + (b)];                             \
            if (type == LORA_QDOT_Q5_0) off##J[r] -= 16 * dw * xf[r * ldb + (b)];                            \
            if (has_min(type)) off##J[r] += m * xf[r * ldb + (b)];                                           \
        }                                                                                                    \
    } while (0)

// One row against nx ≤ 4 quantized vectors. Everything is 256 bits wide: on CPUs that run AVX-512
// on two ports, ymm work has three. Even and odd blocks go to separate accumulators, so that two
// multiply-add chains run side by side (one alone holds a block to the FMA's latency).
#define LORA_Q8_ROW(NAME, TARGET, DOT, FIFTH)                                                                       \
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
            LORA_Q8_BLOCK(DOT, FIFTH, 0, b);                                                                        \
            LORA_Q8_BLOCK(DOT, FIFTH, 1, b + 1);                                                                    \
        }                                                                                                    \
        if (b < blocks) LORA_Q8_BLOCK(DOT, FIFTH, 0, b);                                                            \
        for (int64_t r = 0; r < nx; r++) {                                                                   \
            sums[r] = sum8(_mm256_add_ps(acc0[r], acc1[r])) + (off0[r] + off1[r]);                         \
        }                                                                                                    \
    }

// One K-quant row against nx ≤ 4 quantized vectors: each 32 values of a super-block meet one block of
// the vectors, as the 32-value types do above.
#define LORA_Q8_K_ROWS(Q4K, Q6K, TARGET, DOT)                                                                \
    __attribute__((target(TARGET), always_inline))                                                           \
    static inline void Q4K(int type, const uint8_t *row, int64_t blocks, const int8_t *xq, const float *xd,             \
                           const float *xf, int64_t ldq, int64_t nx, float sums[4]) {                         \
        __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};  \
        (void)type;                                                                                          \
        float off[4] = {0, 0, 0, 0};                                                                         \
        const int64_t ldb = ldq / 32;                                                                        \
        for (int64_t b = 0; b < blocks; b++) {                                                               \
            const uint8_t *blk = row + b * 144;                                                              \
            _mm_prefetch((const char *)(blk + LORA_QDOT_PREFETCH), _MM_HINT_T0);                             \
            float scale[8], min[8];                                                                          \
            q4k_scales(blk, scale, min);                                                                     \
            for (int pair = 0; pair < 4; pair++) {                                                           \
                __m256i nib[2];                                                                              \
                q4k_pair(blk, pair, nib);                                                                    \
                for (int half = 0; half < 2; half++) {                                                       \
                    const int64_t j = 8 * b + 2 * pair + half;                                               \
                    for (int64_t r = 0; r < nx; r++) {                                                       \
                        const __m256i s = _mm256_loadu_si256((const __m256i *)(xq + r * ldq + 32 * j));       \
                        const __m256 p = _mm256_cvtepi32_ps(DOT(nib[half], s));                              \
                        acc[r] = _mm256_fmadd_ps(p, _mm256_set1_ps(scale[2 * pair + half] * xd[r * ldb + j]), acc[r]); \
                        off[r] -= min[2 * pair + half] * xf[r * ldb + j];                                    \
                    }                                                                                        \
                }                                                                                            \
            }                                                                                                \
        }                                                                                                    \
        for (int64_t r = 0; r < nx; r++) sums[r] = sum8(acc[r]) + off[r];                                 \
    }                                                                                                        \
    __attribute__((target(TARGET), always_inline))                                                           \
    static inline void Q6K(int type, const uint8_t *row, int64_t blocks, const int8_t *xq, const float *xd,             \
                           const float *xf, int64_t ldq, int64_t nx, float sums[4]) {                         \
        (void)type; (void)xf;                                                                                \
        __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};  \
        const int64_t ldb = ldq / 32;                                                                        \
        for (int64_t b = 0; b < blocks; b++) {                                                               \
            const uint8_t *blk = row + b * 210;                                                              \
            _mm_prefetch((const char *)(blk + LORA_QDOT_PREFETCH), _MM_HINT_T0);                             \
            const float d = _cvtsh_ss(load_u16(blk + 208));                                                  \
            const int8_t *scales = (const int8_t *)(blk + 192);                                              \
            for (int h = 0; h < 2; h++) {                                                                    \
                for (int g = 0; g < 4; g++) {                                                                \
                    const __m256i q = q6k_group(blk, h, g), u = _mm256_abs_epi8(q);                          \
                    const int sc = 8 * h + 2 * g;                                                            \
                    /* lanes 0–3 sum values 0–15, lanes 4–7 values 16–31 */                                  \
                    const __m256 halves = _mm256_set_m128(_mm_set1_ps(d * (float)scales[sc + 1]), _mm_set1_ps(d * (float)scales[sc])); \
                    const int64_t j = 8 * b + 4 * h + g;                                                     \
                    for (int64_t r = 0; r < nx; r++) {                                                       \
                        const __m256i s = _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)(xq + r * ldq + 32 * j)), q); \
                        const __m256 p = _mm256_cvtepi32_ps(DOT(u, s));                                      \
                        acc[r] = _mm256_fmadd_ps(p, _mm256_mul_ps(halves, _mm256_set1_ps(xd[r * ldb + j])), acc[r]); \
                    }                                                                                        \
                }                                                                                            \
            }                                                                                                \
        }                                                                                                    \
        for (int64_t r = 0; r < nx; r++) sums[r] = sum8(acc[r]);                                          \
    }

#define LORA_Q8_DOT_VNNI(u, s) _mm256_dpbusd_epi32(_mm256_setzero_si256(), (u), (s))
// A Q5 block's fifth bits as fifth_bits gives them, from the bit mask directly (AVX-512BW).
#define LORA_Q8_FIFTH_AVX512(bits) _mm256_maskz_mov_epi8((__mmask32)(bits), _mm256_set1_epi8(0x10))
#define LORA_Q8_DOT_AVX2(u, s) _mm256_madd_epi16(_mm256_maddubs_epi16((u), (s)), _mm256_set1_epi16(1))

LORA_Q8_ROW(vnni_row, "avx512vnni,avx512vl,avx512bw,avx2,fma,f16c", LORA_Q8_DOT_VNNI, LORA_Q8_FIFTH_AVX512)
LORA_Q8_ROW(avx2_q8_row, "avx2,fma,f16c", LORA_Q8_DOT_AVX2, fifth_bits)
LORA_Q8_K_ROWS(vnni_q4k_row, vnni_q6k_row, "avx512vnni,avx512vl,avx512bw,avx2,fma,f16c", LORA_Q8_DOT_VNNI)
LORA_Q8_K_ROWS(avx2_q4k_row, avx2_q6k_row, "avx2,fma,f16c", LORA_Q8_DOT_AVX2)

// The loop over rows for one type and instruction set, with the vector count a constant in each
// instance (see QuantizedDot.c). Each type gets a function of its own: with all seven inlined into one
// entry point, the 32-value loops came out 3× slower (as if one type's code cost another's registers).
#define LORA_Q8_TYPE_ROWS(NAME, TARGET, ROW, t)                                                              \
    __attribute__((target(TARGET), noinline))                                                                 \
    static void NAME(const uint8_t *w, int64_t row_bytes, int64_t rows, int64_t blocks, const int8_t *xq,     \
                     const float *xd, const float *xf, int64_t ldq, int64_t nx, float beta, float *y, int64_t ldy) { \
        for (int64_t k = 0; k < rows; k++) {                                                                 \
            float sums[4];                                                                                   \
            const uint8_t *row = w + k * row_bytes;                                                          \
            switch (nx) {                                                                                    \
            case 1: ROW(t, row, blocks, xq, xd, xf, ldq, 1, sums); break;                                    \
            case 2: ROW(t, row, blocks, xq, xd, xf, ldq, 2, sums); break;                                    \
            case 3: ROW(t, row, blocks, xq, xd, xf, ldq, 3, sums); break;                                    \
            default: ROW(t, row, blocks, xq, xd, xf, ldq, 4, sums); break;                                   \
            }                                                                                                \
            for (int64_t r = 0; r < nx; r++) y[r * ldy + k] = beta == 0 ? sums[r] : beta * y[r * ldy + k] + sums[r]; \
        }                                                                                                    \
    }

// Every type's rows for one instruction set, and the entry point that picks among them.
#define LORA_Q8_ENTRY(ENTRY, TARGET, ROW, Q4K, Q6K)                                                          \
    LORA_Q8_TYPE_ROWS(ENTRY##_q4_0, TARGET, ROW, LORA_QDOT_Q4_0)                                             \
    LORA_Q8_TYPE_ROWS(ENTRY##_q4_1, TARGET, ROW, LORA_QDOT_Q4_1)                                             \
    LORA_Q8_TYPE_ROWS(ENTRY##_q5_0, TARGET, ROW, LORA_QDOT_Q5_0)                                             \
    LORA_Q8_TYPE_ROWS(ENTRY##_q5_1, TARGET, ROW, LORA_QDOT_Q5_1)                                             \
    LORA_Q8_TYPE_ROWS(ENTRY##_q8_0, TARGET, ROW, LORA_QDOT_Q8_0)                                             \
    LORA_Q8_TYPE_ROWS(ENTRY##_q4_k, TARGET, Q4K, LORA_QDOT_Q4_K)                                             \
    LORA_Q8_TYPE_ROWS(ENTRY##_q6_k, TARGET, Q6K, LORA_QDOT_Q6_K)                                             \
    void ENTRY(int type, const uint8_t *w, int64_t row_bytes, int64_t rows, int64_t blocks, const int8_t *xq, \
               const float *xd, const float *xf, int64_t ldq, int64_t nx, float beta, float *y, int64_t ldy) { \
        switch (type) {                                                                                      \
        case LORA_QDOT_Q4_0: ENTRY##_q4_0(w, row_bytes, rows, blocks, xq, xd, xf, ldq, nx, beta, y, ldy); break; \
        case LORA_QDOT_Q4_1: ENTRY##_q4_1(w, row_bytes, rows, blocks, xq, xd, xf, ldq, nx, beta, y, ldy); break; \
        case LORA_QDOT_Q5_0: ENTRY##_q5_0(w, row_bytes, rows, blocks, xq, xd, xf, ldq, nx, beta, y, ldy); break; \
        case LORA_QDOT_Q5_1: ENTRY##_q5_1(w, row_bytes, rows, blocks, xq, xd, xf, ldq, nx, beta, y, ldy); break; \
        case LORA_QDOT_Q4_K: ENTRY##_q4_k(w, row_bytes, rows, blocks, xq, xd, xf, ldq, nx, beta, y, ldy); break; \
        case LORA_QDOT_Q6_K: ENTRY##_q6_k(w, row_bytes, rows, blocks, xq, xd, xf, ldq, nx, beta, y, ldy); break; \
        default: ENTRY##_q8_0(w, row_bytes, rows, blocks, xq, xd, xf, ldq, nx, beta, y, ldy); break;           \
        }                                                                                                    \
    }

LORA_Q8_ENTRY(lora_qdot_q8_vnni, "avx512vnni,avx512vl,avx512bw,avx2,fma,f16c", vnni_row, vnni_q4k_row, vnni_q6k_row)
LORA_Q8_ENTRY(lora_qdot_q8_avx2, "avx2,fma,f16c", avx2_q8_row, avx2_q4k_row, avx2_q6k_row)

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
