// What the quantized dot kernels (QuantizedDot*.c) share about GGML's 32-value blocks: their sizes,
// where their quants start, and unaligned loads of their halves and bit masks.
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

#endif
