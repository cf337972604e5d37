// The decoding dot products of QuantizedDot.c (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 rows with fp32 vectors) for ARM64's
// NEON, so generation on ARM machines reads the blocks directly too. Tested on x86-64 machines under
// qemu-aarch64 against the dequantized product (scripts/neon_check.sh).
#include "QuantizedBlocks.h"

#if defined(__aarch64__)
#include <arm_neon.h>
#include <string.h>

static inline float half_at(const uint8_t *p) {
    __fp16 h;
    memcpy(&h, p, sizeof h);
    return (float)h;
}

// 16 bytes of 16 where bits 0–15 of `bits` are set, else 0: the fifth bits of Q5 values.
static inline __attribute__((always_inline)) uint8x16_t neon_fifth_bits(uint32_t bits) {
    static const uint8_t lane_bit[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
    const uint8x16_t bytes = vcombine_u8(vdup_n_u8((uint8_t)bits), vdup_n_u8((uint8_t)(bits >> 8)));
    return vandq_u8(vtstq_u8(bytes, vld1q_u8(lane_bit)), vdupq_n_u8(16));
}

// The block's 32 values as eight float32x4 (in order), from two int8x16 (values 0–15 and 16–31).
static inline __attribute__((always_inline)) void neon_floats(int8x16_t a, int8x16_t b, float32x4_t w[8]) {
    const int16x8_t s[4] = {vmovl_s8(vget_low_s8(a)), vmovl_s8(vget_high_s8(a)), vmovl_s8(vget_low_s8(b)), vmovl_s8(vget_high_s8(b))};
    for (int i = 0; i < 4; i++) {
        w[2 * i] = vcvtq_f32_s32(vmovl_s16(vget_low_s16(s[i])));
        w[2 * i + 1] = vcvtq_f32_s32(vmovl_s16(vget_high_s16(s[i])));
    }
}

// One row against nx ≤ 4 vectors: per block the 32 weights become floats once, each vector's block
// sum is scaled by d (Q4_1: plus m times the block's Σx).
static inline __attribute__((always_inline))
void neon_row(int type, const uint8_t *row, int64_t blocks, const float *x, int64_t ldx, int64_t nx, float sums[4]) {
    float32x4_t acc[4] = {vdupq_n_f32(0), vdupq_n_f32(0), vdupq_n_f32(0), vdupq_n_f32(0)};
    float32x4_t offsets[4] = {vdupq_n_f32(0), vdupq_n_f32(0), vdupq_n_f32(0), vdupq_n_f32(0)};
    const int64_t bb = block_bytes(type);
    for (int64_t b = 0; b < blocks; b++) {
        const uint8_t *blk = row + b * bb;
        __builtin_prefetch(blk + 2048);
        const float d = half_at(blk);
        float32x4_t w[8];
        float m = 0;
        if (type == LORA_QDOT_Q8_0) {
            neon_floats(vld1q_s8((const int8_t *)(blk + 2)), vld1q_s8((const int8_t *)(blk + 18)), w);
        } else {
            const uint8x16_t q = vld1q_u8(blk + quants_at(type));
            uint8x16_t lo = vandq_u8(q, vdupq_n_u8(0x0F)), hi = vshrq_n_u8(q, 4);
            if (has_fifth_bit(type)) {
                const uint32_t qh = load_u32(blk + (type == LORA_QDOT_Q5_1 ? 4 : 2));
                lo = vorrq_u8(lo, neon_fifth_bits(qh));
                hi = vorrq_u8(hi, neon_fifth_bits(qh >> 16));
            }
            int8x16_t l = vreinterpretq_s8_u8(lo), h = vreinterpretq_s8_u8(hi);
            if (!has_min(type)) {
                const int8x16_t offset = vdupq_n_s8(has_fifth_bit(type) ? 16 : 8);
                l = vsubq_s8(l, offset);
                h = vsubq_s8(h, offset);
            } else {
                m = half_at(blk + 2);
            }
            neon_floats(l, h, w);
        }
        for (int64_t r = 0; r < nx; r++) {
            const float *xb = x + r * ldx + b * 32;
            float32x4_t t = vmulq_f32(w[0], vld1q_f32(xb)), xs = vld1q_f32(xb);
            for (int i = 1; i < 8; i++) {
                const float32x4_t xi = vld1q_f32(xb + 4 * i);
                t = vfmaq_f32(t, w[i], xi);
                if (has_min(type)) xs = vaddq_f32(xs, xi);
            }
            acc[r] = vfmaq_n_f32(acc[r], t, d);
            if (has_min(type)) offsets[r] = vfmaq_n_f32(offsets[r], xs, m);  // m·Σx
        }
    }
    for (int64_t r = 0; r < nx; r++) sums[r] = vaddvq_f32(has_min(type) ? vaddq_f32(acc[r], offsets[r]) : acc[r]);
}

#define LORA_NEON_VECTORS(t)                                                  \
    switch (nx) {                                                             \
    case 1: neon_row(t, row, blocks, x, ldx, 1, sums); break;                 \
    case 2: neon_row(t, row, blocks, x, ldx, 2, sums); break;                 \
    case 3: neon_row(t, row, blocks, x, ldx, 3, sums); break;                 \
    default: neon_row(t, row, blocks, x, ldx, 4, sums); break;                \
    }

void lora_qdot_neon(int type, const uint8_t *w, int64_t row_bytes, int64_t rows, int64_t blocks, const float *x,
                    int64_t ldx, int64_t nx, float beta, float *y, int64_t ldy) {
    for (int64_t k = 0; k < rows; k++) {
        float sums[4];
        const uint8_t *row = w + k * row_bytes;
        switch (type) {
        case LORA_QDOT_Q4_0: LORA_NEON_VECTORS(LORA_QDOT_Q4_0) break;
        case LORA_QDOT_Q4_1: LORA_NEON_VECTORS(LORA_QDOT_Q4_1) break;
        case LORA_QDOT_Q5_0: LORA_NEON_VECTORS(LORA_QDOT_Q5_0) break;
        case LORA_QDOT_Q5_1: LORA_NEON_VECTORS(LORA_QDOT_Q5_1) break;
        default: LORA_NEON_VECTORS(LORA_QDOT_Q8_0) break;
        }
        for (int64_t r = 0; r < nx; r++) y[r * ldy + k] = beta == 0 ? sums[r] : beta * y[r * ldy + k] + sums[r];
    }
}

#else

// Never called where lora_cpu_features() lacks LORA_CPU_NEON; defined so every platform links.
void lora_qdot_neon(int type, const uint8_t *w, int64_t row_bytes, int64_t rows, int64_t blocks, const float *x,
                    int64_t ldx, int64_t nx, float beta, float *y, int64_t ldy) {
    (void)type; (void)w; (void)row_bytes; (void)rows; (void)blocks; (void)x; (void)ldx; (void)nx; (void)beta; (void)y; (void)ldy;
    __builtin_trap();
}

#endif
