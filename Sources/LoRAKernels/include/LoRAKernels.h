// SIMD micro-kernels that Swift cannot express: each is compiled for its instruction set with a
// function-level target attribute and called only when lora_cpu_features() reports that set.
// Blocking, packing and threading live in Swift (LoRAFormats' KernelGemm); these functions are the
// innermost loops only.
#ifndef LORA_KERNELS_H
#define LORA_KERNELS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Bits of lora_cpu_features().
enum {
    LORA_CPU_AVX2_FMA = 1 << 0,
    LORA_CPU_AVX512F = 1 << 1,
    LORA_CPU_AVX512BF16 = 1 << 2,
    /// AVX-512 VNNI with AVX-512VL and BW (vpdpbusd on 256-bit registers, byte masks).
    LORA_CPU_AVX512VNNI = 1 << 3,
    /// ARM64's Advanced SIMD, present on every AArch64 CPU.
    LORA_CPU_NEON = 1 << 4,
    /// ARM64's BFloat16 instructions (FEAT_BF16: BFDOT), as the OS reports them.
    LORA_CPU_NEON_BF16 = 1 << 5,
};

/// The instruction sets this CPU and operating system can run (an OR of LORA_CPU_* bits).
uint32_t lora_cpu_features(void);


/// Rows and columns of the tile lora_sgemm_avx2_6x16 computes.
enum { LORA_AVX2_MR = 6, LORA_AVX2_NR = 16 };

/// One 6×16 tile: C = alpha·Σ_p A(r, p)·B(p, j) + beta·C for r < 6, j < 16, p < kc, with A packed:
/// A(r, p) is a[p·6 + r]. B(p, j) is b[p·ldb + j], 16 floats per p. C(r, j) is c[r·ldc + j]; when
/// beta == 0 C is not read. Requires AVX2 and FMA (LORA_CPU_AVX2_FMA).
void lora_sgemm_avx2_6x16(int64_t kc, const float *a, const float *b, int64_t ldb, float *c, int64_t ldc,
                          float alpha, float beta);

/// As lora_sgemm_avx2_6x16 with A read in place: A(r, p) is a[min(r, arows − 1)·ars + p·acs] (rows
/// past arows repeat the last one, so A is never read past its end; their results land in C too, so
/// the caller passes a scratch C for a ragged tile).
void lora_sgemm_avx2_6x16_strided(int64_t kc, const float *a, int64_t ars, int64_t acs, int64_t arows,
                                  const float *b, int64_t ldb, float *c, int64_t ldc, float alpha, float beta);

/// lora_sgemm_avx2_6x16 and its strided form on ARM64 with NEON (LORA_CPU_NEON), the same contract.
void lora_sgemm_neon_6x16(int64_t kc, const float *a, const float *b, int64_t ldb, float *c, int64_t ldc,
                          float alpha, float beta);
void lora_sgemm_neon_6x16_strided(int64_t kc, const float *a, int64_t ars, int64_t acs, int64_t arows,
                                  const float *b, int64_t ldb, float *c, int64_t ldc, float alpha, float beta);

/// Rows and columns of the AVX-512 tiles (fp32 and bf16).
enum { LORA_AVX512_MR = 14, LORA_AVX512_NR = 32 };

/// As lora_sgemm_avx2_6x16 for a 14×32 tile: A packed as a[p·14 + r], B 32 floats per p.
/// Requires AVX-512F (LORA_CPU_AVX512F).
void lora_sgemm_avx512_14x32(int64_t kc, const float *a, const float *b, int64_t ldb, float *c, int64_t ldc,
                             float alpha, float beta);

/// As lora_sgemm_avx2_6x16_strided for a 14×32 tile. Requires AVX-512F.
void lora_sgemm_avx512_14x32_strided(int64_t kc, const float *a, int64_t ars, int64_t acs, int64_t arows,
                                     const float *b, int64_t ldb, float *c, int64_t ldc, float alpha, float beta);

/// Packs X(t, p) = x[t·ts + p·ps], t < count, p < kc, for the AVX-512 tile: dst[p·width + t] = X(t, p),
/// zero for count ≤ t < width (width ≤ 32). Requires AVX-512F.
void lora_pack_f32_avx512(const float *x, int64_t ts, int64_t ps, int64_t count, int64_t kc, int64_t width, float *dst);

/// Packs X(t, p) = x[t·ts + p·ps], t < count, p < kc, as bfloat16 pairs along p: dst[q·width + t] holds
/// X(t, 2q) in its low 16 bits and X(t, 2q + 1) in its high 16 bits, each rounded to nearest even
/// (a NaN stays NaN; a subnormal becomes a zero of its sign, as vcvtneps2bf16 does). Columns
/// t ≥ count and the missing half of an odd kc's last pair are zero. On x86-64 requires AVX-512 BF16;
/// portable C on other CPUs.
void lora_pack_bf16_pairs(const float *x, int64_t ts, int64_t ps, int64_t count, int64_t kc, int64_t width,
                          uint32_t *dst);

/// dst[i] = x[i] rounded to bfloat16 bits as lora_pack_bf16_pairs rounds, for i < n (a frozen weight
/// stored once in bf16). On x86-64 requires AVX-512 BF16.
void lora_round_bf16(const float *x, int64_t n, uint16_t *dst);

/// lora_pack_bf16_pairs from values already in bfloat16 (x16[t·ts + p·ps]): the same panel, no rounding.
/// On x86-64 requires AVX-512 BF16.
void lora_pack_bf16_pairs_from_bf16(const uint16_t *x, int64_t ts, int64_t ps, int64_t count, int64_t kc,
                                    int64_t width, uint32_t *dst);

/// As lora_sbgemm_avx512bf16_14x32 for a 6×16 tile on ARM64 with BFDOT (LORA_CPU_NEON_BF16): A pair
/// (r, q) at a[q·6 + r], B pair (q, j) at b[q·16 + j]. BFDOT rounds each pair's sum and each
/// accumulation to odd (Arm's rule without FEAT_EBF16), where vdpbf16ps rounds to nearest even.
void lora_sbgemm_neonbf16_6x16(int64_t kq, const uint32_t *a, const uint32_t *b, float *c, int64_t ldc,
                               float alpha, float beta);

/// One 14×32 tile from bfloat16 pairs with vdpbf16ps: C = alpha·Σ_q dot(A pair (r, q), B pair (q, j)) +
/// beta·C, A pair (r, q) at a[q·14 + r], B pair (q, j) at b[q·32 + j] (both from lora_pack_bf16_pairs),
/// fp32 sums. Requires AVX-512 BF16 (LORA_CPU_AVX512BF16).
void lora_sbgemm_avx512bf16_14x32(int64_t kq, const uint32_t *a, const uint32_t *b, float *c, int64_t ldc,
                                  float alpha, float beta);

/// As lora_sbgemm_avx512bf16_14x32 with A read in place: A pair (r, q) is a[min(r, arows − 1)·ars + q·acs]
/// (as lora_sgemm_avx512_14x32_strided reads its floats). Requires AVX-512 BF16.
void lora_sbgemm_avx512bf16_14x32_strided(int64_t kq, const uint32_t *a, int64_t ars, int64_t acs, int64_t arows,
                                          const uint32_t *b, float *c, int64_t ldc, float alpha, float beta);

/// CausalAttention's products (Attention.c): C = alpha·A·B + beta·C for an m×n C with n a multiple of 32
/// (C(r, j) at c[r·ldc + j]), A read in place as the strided tiles read it (A(r, p) at a[r·ars + p·acs]),
/// B packed once: 32-column panels, panel j/32 at b + (j/32)·bps holding B(p, j) at [p·32 + j mod 32].
/// The fp32 form takes kc floats per row (lora_pack_f32_avx512's panels; requires AVX-512F), the bf16 form
/// kq pairs (lora_pack_bf16_pairs' panels; requires AVX-512 BF16).
void lora_attention_sgemm_avx512(int64_t m, int64_t n, int64_t kc, const float *a, int64_t ars, int64_t acs,
                                 const float *b, int64_t bps, float *c, int64_t ldc, float alpha, float beta);
void lora_attention_sbgemm_avx512bf16(int64_t m, int64_t n, int64_t kq, const uint32_t *a, int64_t ars, int64_t acs,
                                      const uint32_t *b, int64_t bps, float *c, int64_t ldc, float alpha, float beta);
/// As lora_attention_sgemm_avx512 with the AVX2+FMA 6×16 tile (LORA_CPU_AVX2_FMA): n a multiple of 16,
/// B in 16-column panels, panel j/16 at b + (j/16)·bps holding B(p, j) at [p·16 + j mod 16].
void lora_attention_sgemm_avx2(int64_t m, int64_t n, int64_t kc, const float *a, int64_t ars, int64_t acs,
                               const float *b, int64_t bps, float *c, int64_t ldc, float alpha, float beta);

/// The causal softmax of rows i < rows of s (row i at s + i·ld), whose first first_valid + i keys are
/// visible (at most width, a multiple of 16 ≤ ld), left unnormalized as FlashAttention leaves it:
/// exp(s − the row's max) over the visible keys, zero past them to width, in place (fp32 form, requires
/// AVX-512F) or as bfloat16 at p16 + i·ld (bf16 form, requires AVX-512 BF16; s is scratch); lse[i] is
/// the log-sum-exp of the visible scores and inverse_sum[i] = 1 / Σ exp(s − max), by which the caller
/// scales row i of the product with V.
void lora_attention_softmax_avx512(float *s, int64_t ld, int64_t rows, int64_t first_valid, int64_t width, float *lse,
                                   float *inverse_sum);
void lora_attention_softmax_avx512bf16(float *s, int64_t ld, int64_t rows, int64_t first_valid, int64_t width,
                                       float *lse, float *inverse_sum, uint16_t *p16);
/// The fp32 form with AVX2+FMA (LORA_CPU_AVX2_FMA), width a multiple of 8; exp's argument is clamped at
/// −87.3 as FastMath's fastExp clamps it.
void lora_attention_softmax_avx2(float *s, int64_t ld, int64_t rows, int64_t first_valid, int64_t width, float *lse,
                                 float *inverse_sum);

/// The softmax's backward over the same rows: from the scaled scores s, dP = dO·Vᵀ at dp, and per row
/// lse[i] and dots[i] = dO_i·O_i: P = exp(s − lse) and dS = P∘(dP − dots) over the visible keys, zero past
/// them. The fp32 form (AVX-512F) writes P over s and dS over dp. The bf16 form (AVX-512 BF16) writes dS
/// as bfloat16 rows at ds16 + i·ld, and dS and P as pairs of rows: word j of row pair i/2, at
/// ds_pairs + (i/2)·ld + j (likewise p_pairs), holds row i's value in its low half and row i + 1's (zero
/// past the last row) in its high half.
void lora_attention_softmax_grad_avx512(float *s, float *dp, int64_t ld, int64_t rows, int64_t first_valid,
                                        int64_t width, const float *lse, const float *dots);
/// The fp32 form with AVX2+FMA (LORA_CPU_AVX2_FMA), width a multiple of 8.
void lora_attention_softmax_grad_avx2(float *s, float *dp, int64_t ld, int64_t rows, int64_t first_valid,
                                      int64_t width, const float *lse, const float *dots);
void lora_attention_softmax_grad_avx512bf16(const float *s, const float *dp, int64_t ld, int64_t rows, int64_t first_valid,
                                            int64_t width, const float *lse, const float *dots, uint16_t *ds16,
                                            uint32_t *ds_pairs, uint32_t *p_pairs);

/// GGML block types the quantized dot kernels read (the values are GGML's type ids).
enum {
    LORA_QDOT_Q4_0 = 2, LORA_QDOT_Q4_1 = 3, LORA_QDOT_Q5_0 = 6, LORA_QDOT_Q5_1 = 7, LORA_QDOT_Q8_0 = 8,
    LORA_QDOT_Q4_K = 12, LORA_QDOT_Q6_K = 14,
};

/// y[r·ldy + i] = Σ_k W(i, k)·x[r·ldx + k] (plus beta·y[r·ldy + i] when beta ≠ 0) for i < rows and
/// r < nx ≤ 4, where row i of W is `blocks` GGML blocks of 32 values of `type` (LORA_QDOT_*) at
/// w + i·row_bytes, dequantized as ggml does and multiplied with fp32 x without rounding x.
/// lora_qdot_avx512 requires LORA_CPU_AVX512F, lora_qdot_avx2 LORA_CPU_AVX2_FMA.
void lora_qdot_avx512(int type, const uint8_t *w, int64_t row_bytes, int64_t rows, int64_t blocks, const float *x,
                      int64_t ldx, int64_t nx, float beta, float *y, int64_t ldy);
void lora_qdot_avx2(int type, const uint8_t *w, int64_t row_bytes, int64_t rows, int64_t blocks, const float *x,
                    int64_t ldx, int64_t nx, float beta, float *y, int64_t ldy);

/// As lora_qdot_avx512 on ARM64 with NEON (LORA_CPU_NEON), for the 32-value types (not the K-quants).
void lora_qdot_neon(int type, const uint8_t *w, int64_t row_bytes, int64_t rows, int64_t blocks, const float *x,
                    int64_t ldx, int64_t nx, float beta, float *y, int64_t ldy);

/// As lora_qdot_avx512 and lora_qdot_avx2 for K-quant rows (LORA_QDOT_Q4_K or LORA_QDOT_Q6_K): `blocks`
/// super-blocks of 256 values per row (QuantizedDotK.c).
void lora_qdot_k_avx512(int type, const uint8_t *w, int64_t row_bytes, int64_t rows, int64_t blocks, const float *x,
                        int64_t ldx, int64_t nx, float beta, float *y, int64_t ldy);
void lora_qdot_k_avx2(int type, const uint8_t *w, int64_t row_bytes, int64_t rows, int64_t blocks, const float *x,
                      int64_t ldx, int64_t nx, float beta, float *y, int64_t ldy);

/// As lora_qdot_avx512 and lora_qdot_k_avx512 (every LORA_QDOT_* type; `blocks` of the type's size)
/// against 8-bit-quantized vectors (llama.cpp's way of decoding): vector r's values k < the row's
/// length are xd[r·ldq/32 + k/32]·xq[r·ldq + k], and xf[r·ldq/32 + b] is block b's scale times the sum
/// of its xq (see QuantizedDot.Q8Vectors). ldq is a multiple of 32. The products of each 32 values
/// (16 for Q6_K's sub-blocks) are exact integers, each scaled by the two scales in fp32.
/// lora_qdot_q8_vnni requires LORA_CPU_AVX512VNNI, lora_qdot_q8_avx2 LORA_CPU_AVX2_FMA.
void lora_qdot_q8_vnni(int type, const uint8_t *w, int64_t row_bytes, int64_t rows, int64_t blocks, const int8_t *xq,
                       const float *xd, const float *xf, int64_t ldq, int64_t nx, float beta, float *y, int64_t ldy);
void lora_qdot_q8_avx2(int type, const uint8_t *w, int64_t row_bytes, int64_t rows, int64_t blocks, const int8_t *xq,
                       const float *xd, const float *xf, int64_t ldq, int64_t nx, float beta, float *y, int64_t ldy);

#ifdef __cplusplus
}
#endif

#endif
