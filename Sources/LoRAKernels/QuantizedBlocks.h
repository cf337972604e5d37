// What the quantized dot kernels (QuantizedDot*.c) share about GGML's blocks: the 32-value blocks'
// sizes and where their quants start, unaligned loads of their halves and bit masks, and on x86-64
// the K-quant super-blocks' layouts with the loads that unpack them.
#ifndef LORA_QUANTIZED_BLOCKS_H
#define LORA_QUANTIZED_BLOCKS_H

#include "LoRAKernels.h"

#include <string.h>

static inline uint16_t load_u16(const uint8_t *p) {
    uint16_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline uint32_t load_u32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/// Bytes of one block of 32 values: Q4_0 {half d; 16 bytes of nibbles}, Q4_1 {half d, m; nibbles},
/// Q5_0 {half d; 32 fifth bits; nibbles}, Q5_1 {half d, m; fifth bits; nibbles}, Q8_0 {half d; 32
/// int8}. Nibble j of byte i is value i + 16·j; bit i of the fifth bits belongs to value i.
static inline int64_t block_bytes(int type) {
    switch (type) {
    case LORA_QDOT_Q4_0: return 18;
    case LORA_QDOT_Q4_1: return 20;
    case LORA_QDOT_Q5_0: return 22;
    case LORA_QDOT_Q5_1: return 24;
    default: return 34;
    }
}

/// Where a block's quants start.
static inline int64_t quants_at(int type) {
    return type == LORA_QDOT_Q4_1 ? 4 : type == LORA_QDOT_Q5_0 ? 6 : type == LORA_QDOT_Q5_1 ? 8 : 2;
}

/// Whether the block's values are d·q + m (else d·q, with Q4_0's q − 8 and Q5_0's q − 16).
static inline int has_min(int type) { return type == LORA_QDOT_Q4_1 || type == LORA_QDOT_Q5_1; }

/// Whether the block has a fifth bit per value (Q5_0, Q5_1), at 2 or 4.
static inline int has_fifth_bit(int type) { return type == LORA_QDOT_Q5_0 || type == LORA_QDOT_Q5_1; }

#if defined(__x86_64__)
#include <immintrin.h>

// The sum of 8 lanes.
__attribute__((target("avx2"), always_inline))
static inline float sum8(__m256 a) {
    const __m128 h = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    const __m128 h2 = _mm_add_ps(h, _mm_movehl_ps(h, h));
    return _mm_cvtss_f32(_mm_add_ss(h2, _mm_shuffle_ps(h2, h2, 1)));
}

// Q4_K's super-block (144 bytes): d, dmin (f16), 12 bytes of eight 6-bit (scale, min) pairs, 128 bytes
// of nibbles; sub-block j (32 values) is the low (j even) or high (j odd) nibbles of bytes
// 32(j/2) ..< 32(j/2) + 32, its values d·scale_j·q − dmin·min_j. The pairs' packing is ggml's
// get_scale_min_k4: bytes 0–3 and 4–7 hold scales and mins 0–3 (low 6 bits) and the top 2 bits of
// 4–7; bytes 8–11 the low 4 bits of scales 4–7 (low nibble) and mins 4–7 (high nibble).
__attribute__((target("f16c"), always_inline))
static inline void q4k_scales(const uint8_t *blk, float scale[8], float min[8]) {
    const float d = _cvtsh_ss(load_u16(blk)), dmin = _cvtsh_ss(load_u16(blk + 2));
    const uint8_t *s = blk + 4;
    for (int j = 0; j < 8; j++) {
        const int sc = j < 4 ? s[j] & 63 : (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4);
        const int m = j < 4 ? s[j + 4] & 63 : (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
        scale[j] = d * (float)sc;
        min[j] = dmin * (float)m;
    }
}

// Q6_K's super-block (210 bytes): 128 bytes of low nibbles (ql), 64 bytes of high bit pairs (qh), 16
// int8 scales, d (f16). In half h (128 values), group g (32 values) has its low nibbles in
// ql[64h + 32(g mod 2) ...] shifted by 4·(g / 2), its high bits in qh[32h ...] shifted by 2g, and its
// values d·scale[8h + 2g + (0 or 1 for each 16)]·(q − 32).

// Sub-blocks 2·pair and 2·pair + 1 of a Q4_K super-block as 32 bytes of quants each (the layout above).
__attribute__((target("avx2"), always_inline))
static inline void q4k_pair(const uint8_t *blk, int pair, __m256i nib[2]) {
    const __m256i q = _mm256_loadu_si256((const __m256i *)(blk + 16 + 32 * pair)), low = _mm256_set1_epi8(0x0F);
    nib[0] = _mm256_and_si256(q, low);
    nib[1] = _mm256_and_si256(_mm256_srli_epi16(q, 4), low);
}

// Group g of half h of a Q6_K super-block as 32 signed bytes q − 32 (the layout above).
__attribute__((target("avx2"), always_inline))
static inline __m256i q6k_group(const uint8_t *blk, int h, int g) {
    const __m256i ql = _mm256_loadu_si256((const __m256i *)(blk + 64 * h + 32 * (g & 1)));
    const __m256i qh = _mm256_loadu_si256((const __m256i *)(blk + 128 + 32 * h));
    const __m256i lo = _mm256_and_si256(_mm256_srli_epi16(ql, 4 * (g >> 1)), _mm256_set1_epi8(0x0F));
    const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * g), _mm256_set1_epi8(3));
    return _mm256_sub_epi8(_mm256_or_si256(lo, _mm256_slli_epi16(hi, 4)), _mm256_set1_epi8(32));
}

#endif

#endif
