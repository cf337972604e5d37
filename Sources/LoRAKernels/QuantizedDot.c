// Dot products of GGML-quantized weight rows with fp32 vectors, straight from the blocks: what
// token-by-token generation spends its time on (each weight read once per token). The activations
// stay fp32, so the result is the fp32 product of the dequantized weights up to summation order;
// the reference they are tested against is GGMLQuant's dequantization and a product in Double.
// Block scales are halves, converted with F16C (every AVX2 CPU has it; AVX-512F implies it).
#include "QuantizedBlocks.h"

#if defined(__x86_64__)
#include <immintrin.h>

// How far ahead of the block being read the weight stream is fetched: the hardware prefetcher alone
// left a single thread at half this machine's read bandwidth. A prefetch past the end of the matrix
// is harmless: it never faults.
#define LORA_QDOT_PREFETCH 2048

// An entry point's loop over rows first..<rows, calling ROW(type, row, blocks, x, ldx, nx, sums)
// with the type and vector count as constants: each pair gets its own inlined instance, so the
// per-block branches fold away and the accumulators stay in registers (indexed by a run-time count
// they would live in memory).
#define LORA_QDOT_VECTORS(ROW, t)                                             \
    switch (nx) {                                                             \
    case 1: ROW(t, row, blocks, x, ldx, 1, sums); break;                      \
    case 2: ROW(t, row, blocks, x, ldx, 2, sums); break;                      \
    case 3: ROW(t, row, blocks, x, ldx, 3, sums); break;                      \
    default: ROW(t, row, blocks, x, ldx, 4, sums); break;                     \
    }
#define LORA_QDOT_ROWS(ROW, first)                                            \
    for (int64_t k = (first); k < rows; k++) {                                \
        float sums[4];                                                        \
        const uint8_t *row = w + k * row_bytes;                               \
        switch (type) {                                                       \
        case LORA_QDOT_Q4_0: LORA_QDOT_VECTORS(ROW, LORA_QDOT_Q4_0) break;    \
        case LORA_QDOT_Q4_1: LORA_QDOT_VECTORS(ROW, LORA_QDOT_Q4_1) break;    \
        case LORA_QDOT_Q5_0: LORA_QDOT_VECTORS(ROW, LORA_QDOT_Q5_0) break;    \
        case LORA_QDOT_Q5_1: LORA_QDOT_VECTORS(ROW, LORA_QDOT_Q5_1) break;    \
        default: LORA_QDOT_VECTORS(ROW, LORA_QDOT_Q8_0) break;                \
        }                                                                     \
        for (int64_t r = 0; r < nx; r++) y[r * ldy + k] = beta == 0 ? sums[r] : beta * y[r * ldy + k] + sums[r]; \
    }

// A block's 32 weights as two zmm of floats (values 0–15, 16–31), dequantized by table: the block's
// 16 possible values d·(n − 8) or d·n + m (Q5: 32, in two tables) are computed once, and vpermps picks
// each weight's from its nibble (it reads only the index's low 4 bits; vpermt2ps 5), in place of
// converting every quant to a float and scaling the block's sum (Q4_1 on one Zen 5 core, from L2: 0.95
// against 1.19 ns per 32 weights; Q5_0 1.12 against 1.18).
// Q8_0's quants come back converted but not scaled (`avx512_block` scales their sum).
__attribute__((target("avx512f"), always_inline))
static inline void avx512_weights(int type, const uint8_t *blk, __m512 w[2]) {
    if (type == LORA_QDOT_Q8_0) {
        w[0] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(blk + 2))));
        w[1] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(blk + 18))));
        return;
    }
    const __m512 d = _mm512_set1_ps(_cvtsh_ss(load_u16(blk)));
    const __m512 n = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    // Each byte's two nibbles: the low one in bits 0–3 of its lane (vpermps ignores the rest), the high one after the shift.
    const __m512i bytes = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(blk + quants_at(type))));
    __m512i i0 = bytes, i1 = _mm512_srli_epi32(bytes, 4);
    if (!has_fifth_bit(type)) {
        const __m512 table = type == LORA_QDOT_Q4_0 ? _mm512_mul_ps(d, _mm512_sub_ps(n, _mm512_set1_ps(8)))
                                                    : _mm512_fmadd_ps(d, n, _mm512_set1_ps(_cvtsh_ss(load_u16(blk + 2))));
        w[0] = _mm512_permutexvar_ps(i0, table);
        w[1] = _mm512_permutexvar_ps(i1, table);
        return;
    }
    // Q5: the fifth bit picks the second table (values 16–31).
    const uint32_t qh = load_u32(blk + (type == LORA_QDOT_Q5_1 ? 4 : 2));
    const __m512i sixteen = _mm512_set1_epi32(16);
    i0 = _mm512_or_si512(_mm512_and_si512(i0, _mm512_set1_epi32(15)), _mm512_maskz_mov_epi32((__mmask16)(qh & 0xFFFF), sixteen));
    i1 = _mm512_or_si512(i1, _mm512_maskz_mov_epi32((__mmask16)(qh >> 16), sixteen));
    __m512 low, high;
    if (type == LORA_QDOT_Q5_0) {
        low = _mm512_mul_ps(d, _mm512_sub_ps(n, _mm512_set1_ps(16)));
        high = _mm512_mul_ps(d, n);
    } else {
        const __m512 m = _mm512_set1_ps(_cvtsh_ss(load_u16(blk + 2)));
        low = _mm512_fmadd_ps(d, n, m);
        high = _mm512_fmadd_ps(d, _mm512_add_ps(n, _mm512_set1_ps(16)), m);
    }
    w[0] = _mm512_permutex2var_ps(low, i0, high);
    w[1] = _mm512_permutex2var_ps(low, i1, high);
}

// A block's weights (avx512_weights) times 32 values of x into the accumulators a0 and a1, one
// dependent FMA each; Q8_0's products are summed and scaled once, into a0 alone.
__attribute__((target("avx512f"), always_inline))
static inline void avx512_block(int type, const uint8_t *blk, const __m512 w[2], __m512 x0, __m512 x1, __m512 *a0, __m512 *a1) {
    if (type == LORA_QDOT_Q8_0) {
        *a0 = _mm512_fmadd_ps(_mm512_set1_ps(_cvtsh_ss(load_u16(blk))), _mm512_fmadd_ps(w[1], x1, _mm512_mul_ps(w[0], x0)), *a0);
    } else {
        *a0 = _mm512_fmadd_ps(w[0], x0, *a0);
        *a1 = _mm512_fmadd_ps(w[1], x1, *a1);
    }
}

// One row against nx ≤ 4 vectors: per block the 32 weights are dequantized once and multiplied into
// every vector's two accumulators (one per half, so each block adds one dependent FMA per chain).
__attribute__((target("avx512f"), always_inline))
static inline void avx512_row(int type, const uint8_t *row, int64_t blocks, const float *x, int64_t ldx, int64_t nx,
                              float sums[4]) {
    __m512 acc0[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    __m512 acc1[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    const int64_t bb = block_bytes(type);
    for (int64_t b = 0; b < blocks; b++) {
        const uint8_t *blk = row + b * bb;
        _mm_prefetch((const char *)(blk + LORA_QDOT_PREFETCH), _MM_HINT_T0);
        __m512 w[2];
        avx512_weights(type, blk, w);
        for (int64_t r = 0; r < nx; r++) {
            const float *xb = x + r * ldx + b * 32;
            avx512_block(type, blk, w, _mm512_loadu_ps(xb), _mm512_loadu_ps(xb + 16), &acc0[r], &acc1[r]);
        }
    }
    for (int64_t r = 0; r < nx; r++) sums[r] = _mm512_reduce_add_ps(_mm512_add_ps(acc0[r], acc1[r]));
}

// Two rows against one vector (token-by-token decoding): the vector is loaded once for both, and
// the two rows' chains run side by side.
__attribute__((target("avx512f"), always_inline))
static inline void avx512_two_rows(int type, const uint8_t *row0, const uint8_t *row1, int64_t blocks, const float *x,
                                   float sums[2]) {
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), c0 = _mm512_setzero_ps(), c1 = _mm512_setzero_ps();
    const int64_t bb = block_bytes(type);
    for (int64_t b = 0; b < blocks; b++) {
        const uint8_t *p0 = row0 + b * bb, *p1 = row1 + b * bb;
        _mm_prefetch((const char *)(p0 + LORA_QDOT_PREFETCH), _MM_HINT_T0);
        _mm_prefetch((const char *)(p1 + LORA_QDOT_PREFETCH), _MM_HINT_T0);
        const __m512 x0 = _mm512_loadu_ps(x + b * 32), x1 = _mm512_loadu_ps(x + b * 32 + 16);
        __m512 a[2], c[2];
        avx512_weights(type, p0, a);
        avx512_weights(type, p1, c);
        avx512_block(type, p0, a, x0, x1, &a0, &a1);
        avx512_block(type, p1, c, x0, x1, &c0, &c1);
    }
    sums[0] = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
    sums[1] = _mm512_reduce_add_ps(_mm512_add_ps(c0, c1));
}

__attribute__((target("avx512f")))
void lora_qdot_avx512(int type, const uint8_t *w, int64_t row_bytes, int64_t rows, int64_t blocks, const float *x,
                      int64_t ldx, int64_t nx, float beta, float *y, int64_t ldy) {
    int64_t i = 0;
    if (nx == 1) {
        for (; i + 2 <= rows; i += 2) {
            float sums[2];
            const uint8_t *row = w + i * row_bytes;
            switch (type) {
            case LORA_QDOT_Q4_0: avx512_two_rows(LORA_QDOT_Q4_0, row, row + row_bytes, blocks, x, sums); break;
            case LORA_QDOT_Q4_1: avx512_two_rows(LORA_QDOT_Q4_1, row, row + row_bytes, blocks, x, sums); break;
            case LORA_QDOT_Q5_0: avx512_two_rows(LORA_QDOT_Q5_0, row, row + row_bytes, blocks, x, sums); break;
            case LORA_QDOT_Q5_1: avx512_two_rows(LORA_QDOT_Q5_1, row, row + row_bytes, blocks, x, sums); break;
            default: avx512_two_rows(LORA_QDOT_Q8_0, row, row + row_bytes, blocks, x, sums); break;
            }
            for (int r = 0; r < 2; r++) y[i + r] = beta == 0 ? sums[r] : beta * y[i + r] + sums[r];
        }
    }
    LORA_QDOT_ROWS(avx512_row, i)
}

// A block's 32 quants as four ymm of floats, as avx512_quants gives them. The fifth bits spread
// over 8 lanes by testing each lane's bit of the byte.
__attribute__((target("avx2,fma,f16c"), always_inline))
static inline void avx2_quants(int type, const uint8_t *blk, __m256 w[4]) {
    if (type == LORA_QDOT_Q8_0) {
        for (int j = 0; j < 4; j++) w[j] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(blk + 2 + 8 * j))));
        return;
    }
    const __m128i q = _mm_loadu_si128((const __m128i *)(blk + quants_at(type))), low = _mm_set1_epi8(0x0F);
    const __m128i lo = _mm_and_si128(q, low), hi = _mm_and_si128(_mm_srli_epi16(q, 4), low);
    const __m128i bytes[4] = {lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)};
    const uint32_t qh = has_fifth_bit(type) ? load_u32(blk + (type == LORA_QDOT_Q5_1 ? 4 : 2)) : 0;
    const __m256i lane_bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    for (int j = 0; j < 4; j++) {
        __m256i v = _mm256_cvtepu8_epi32(bytes[j]);
        if (has_fifth_bit(type)) {
            const __m256i set = _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32((int)(qh >> (8 * j))), lane_bit), lane_bit);
            v = _mm256_or_si256(v, _mm256_and_si256(set, _mm256_set1_epi32(16)));
        }
        if (type == LORA_QDOT_Q4_0 || type == LORA_QDOT_Q5_0) v = _mm256_sub_epi32(v, _mm256_set1_epi32(type == LORA_QDOT_Q4_0 ? 8 : 16));
        w[j] = _mm256_cvtepi32_ps(v);
    }
}

// As avx512_row, with the block's 32 weights in four ymm of floats.
__attribute__((target("avx2,fma,f16c"), always_inline))
static inline void avx2_row(int type, const uint8_t *row, int64_t blocks, const float *x, int64_t ldx, int64_t nx,
                            float sums[4]) {
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    __m256 offsets[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    const int64_t bb = block_bytes(type);
    for (int64_t b = 0; b < blocks; b++) {
        const uint8_t *blk = row + b * bb;
        _mm_prefetch((const char *)(blk + LORA_QDOT_PREFETCH), _MM_HINT_T0);
        const __m256 d = _mm256_set1_ps(_cvtsh_ss(load_u16(blk)));
        const __m256 m = has_min(type) ? _mm256_set1_ps(_cvtsh_ss(load_u16(blk + 2))) : _mm256_setzero_ps();
        __m256 w[4];
        avx2_quants(type, blk, w);
        for (int64_t r = 0; r < nx; r++) {
            const float *xb = x + r * ldx + b * 32;
            const __m256 x0 = _mm256_loadu_ps(xb), x1 = _mm256_loadu_ps(xb + 8);
            const __m256 x2 = _mm256_loadu_ps(xb + 16), x3 = _mm256_loadu_ps(xb + 24);
            __m256 t = _mm256_mul_ps(w[0], x0);
            t = _mm256_fmadd_ps(w[1], x1, t);
            t = _mm256_fmadd_ps(w[2], x2, t);
            t = _mm256_fmadd_ps(w[3], x3, t);
            acc[r] = _mm256_fmadd_ps(d, t, acc[r]);
            if (has_min(type)) {
                offsets[r] = _mm256_fmadd_ps(m, _mm256_add_ps(_mm256_add_ps(x0, x1), _mm256_add_ps(x2, x3)), offsets[r]);
            }
        }
    }
    for (int64_t r = 0; r < nx; r++) {
        const __m256 a = has_min(type) ? _mm256_add_ps(acc[r], offsets[r]) : acc[r];
        const __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
        const __m128 s2 = _mm_add_ps(s, _mm_movehl_ps(s, s));
        sums[r] = _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));
    }
}

__attribute__((target("avx2,fma,f16c")))
void lora_qdot_avx2(int type, const uint8_t *w, int64_t row_bytes, int64_t rows, int64_t blocks, const float *x,
                    int64_t ldx, int64_t nx, float beta, float *y, int64_t ldy) {
    LORA_QDOT_ROWS(avx2_row, 0)
}

#else

// Never called where lora_cpu_features() lacks the instruction set; defined so every platform links.
void lora_qdot_avx512(int type, const uint8_t *w, int64_t row_bytes, int64_t rows, int64_t blocks, const float *x,
                      int64_t ldx, int64_t nx, float beta, float *y, int64_t ldy) {
    (void)type; (void)w; (void)row_bytes; (void)rows; (void)blocks; (void)x; (void)ldx; (void)nx; (void)beta; (void)y; (void)ldy;
    (void)load_u16; (void)load_u32; (void)block_bytes; (void)quants_at; (void)has_min;
    __builtin_trap();
}

void lora_qdot_avx2(int type, const uint8_t *w, int64_t row_bytes, int64_t rows, int64_t blocks, const float *x,
                    int64_t ldx, int64_t nx, float beta, float *y, int64_t ldy) {
    (void)type; (void)w; (void)row_bytes; (void)rows; (void)blocks; (void)x; (void)ldx; (void)nx; (void)beta; (void)y; (void)ldy;
    __builtin_trap();
}

#endif
