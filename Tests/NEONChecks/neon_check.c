// The NEON kernels, built for aarch64 and run under qemu by scripts/neon_check.sh so x86-64 machines
// test them too; exit status 0 when every case passes.
// - The SGEMM tile (Sources/LoRAKernels/NEONGemm.c) bit for bit against a scalar model of its order:
//   per C element, acc = fma(A(r, p), B(p, j), acc) for p = 0, 1, ... (one rounding each), then
//   alpha·acc, plus C (beta 1) or fma(beta, C, alpha·acc).
// - The bf16 tile (BFDOT, where the CPU has FEAT_BF16; qemu's default CPU does) bit for bit against
//   a scalar model of Arm's round-to-odd BFDOT, from panels the portable bf16 packing wrote.
// - The quantized dot products (QuantizedDotNEON.c) against the rows dequantized here, from ggml's
//   block formulas, and multiplied in double: within 2e-6 of Σ|w·x|, fp32's summation error.
#include "LoRAKernels.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static float model(int64_t kc, const float *a, int64_t ars, int64_t acs, int64_t r, const float *b, int64_t ldb,
                   int64_t j, float c, float alpha, float beta) {
    float acc = 0;
    for (int64_t p = 0; p < kc; p++) acc = fmaf(a[r * ars + p * acs], b[p * ldb + j], acc);
    const float v = alpha * acc;
    return beta == 0 ? v : beta == 1 ? v + c : fmaf(beta, c, v);
}

static uint64_t state = 88172645463325252ull;
static float uniform(void) {  // xorshift64: values in [-1, 1)
    state ^= state << 13; state ^= state >> 7; state ^= state << 17;
    return (float)((state >> 40) * (1.0 / 8388608.0)) - 1.0f;
}

static void put_half(uint8_t *p, float v) { __fp16 h = (__fp16)v; memcpy(p, &h, 2); }
static float get_half(const uint8_t *p) { __fp16 h; memcpy(&h, p, 2); return (float)h; }

// Value i (< 32) of a block, as ggml dequantizes it.
static double dequantized(int type, const uint8_t *blk, int i) {
    const double d = get_half(blk);
    switch (type) {
    case LORA_QDOT_Q8_0: return d * (int8_t)blk[2 + i];
    case LORA_QDOT_Q4_0: return d * ((i < 16 ? blk[2 + i] & 0x0F : blk[2 + i - 16] >> 4) - 8);
    case LORA_QDOT_Q4_1: return d * (i < 16 ? blk[4 + i] & 0x0F : blk[4 + i - 16] >> 4) + get_half(blk + 2);
    default: {
        const int one = type == LORA_QDOT_Q5_1;
        uint32_t qh;
        memcpy(&qh, blk + (one ? 4 : 2), 4);
        const uint8_t *qs = blk + (one ? 8 : 6);
        const int q = (i < 16 ? qs[i] & 0x0F : qs[i - 16] >> 4) | (int)((qh >> i) & 1) << 4;
        return one ? d * q + get_half(blk + 2) : d * (q - 16);
    }
    }
}

static int check_qdot(void) {
    const int types[] = {LORA_QDOT_Q4_0, LORA_QDOT_Q4_1, LORA_QDOT_Q5_0, LORA_QDOT_Q5_1, LORA_QDOT_Q8_0}, bytes[] = {18, 20, 22, 24, 34};
    int failures = 0, cases = 0;
    for (int ti = 0; ti < 5; ti++) {
        const int type = types[ti], bb = bytes[ti], rows = 7, blocks = 5, n = 32 * blocks, ldx = n + 3, ldy = rows + 1;
        uint8_t *w = malloc((size_t)rows * blocks * bb);
        for (int i = 0; i < rows * blocks * bb; i++) w[i] = (uint8_t)(uniform() * 128 + 128);
        for (int b = 0; b < rows * blocks; b++) {
            put_half(w + b * bb, 0.02f * (uniform() + 1.1f));
            if (type == LORA_QDOT_Q4_1 || type == LORA_QDOT_Q5_1) put_half(w + b * bb + 2, -0.1f * (uniform() + 1));
        }
        float x[4 * (32 * 5 + 3)];
        for (int i = 0; i < 4 * ldx; i++) x[i] = uniform();
        for (int nx = 1; nx <= 4; nx++) {
            for (int bi = 0; bi < 2; bi++) {
                const float beta = bi ? 0.5f : 0;
                float y[4 * 8], before[4 * 8];
                for (int i = 0; i < 4 * 8; i++) y[i] = before[i] = (float)(i % 7);
                lora_qdot_neon(type, w, blocks * bb, rows, blocks, x, ldx, nx, beta, y, ldy);
                cases++;
                for (int r = 0; r < nx; r++) {
                    for (int i = 0; i <= rows; i++) {
                        double exact = 0, magnitude = 0;
                        for (int k = 0; k < n && i < rows; k++) {
                            const double p = dequantized(type, w + (i * blocks + k / 32) * bb, k % 32) * x[r * ldx + k];
                            exact += p; magnitude += fabs(p);
                        }
                        const double expected = i < rows ? beta * before[r * ldy + i] + exact : before[r * ldy + i];
                        if (fabs(y[r * ldy + i] - expected) > 2e-6 * (magnitude + fabs(expected)) + 1e-30) {
                            fprintf(stderr, "neon_check: qdot type %d, %d vectors, beta %g: y[%d][%d] = %.9g, expected %.9g\n",
                                    type, nx, beta, r, i, y[r * ldy + i], expected);
                            failures++;
                            r = nx; break;
                        }
                    }
                }
            }
        }
        free(w);
    }
    if (failures) { fprintf(stderr, "neon_check: %d of %d quantized dot cases differ\n", failures, cases); return 1; }
    printf("neon_check: the NEON quantized dot products (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0; 1-4 vectors) equal the dequantized product in all %d cases\n", cases);
    return 0;
}

// ±(1 + |u|)·2^e with e from −4 to 3.
static float spread(void) {
    const float u = uniform();
    const int e = (int)((uniform() + 1) * 4) - 4;
    return (u < 0 ? -1 : 1) * ldexpf(1 + fabsf(u), e);
}

// x rounded to bfloat16 (nearest even; subnormals to a zero of their sign), as a float.
static float bf16(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7f800000u) == 0) u &= 0x80000000u;
    else u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

// x (a double holding the exact value) rounded to odd in fp32, a denormal result flushed to zero:
// BFDOT's rounding without FEAT_EBF16.
static float round_odd(double x) {
    float f = (float)x;
    if (fabs((double)f) > fabs(x)) f = nextafterf(f, 0.0f);  // toward zero
    if ((double)f != x) { uint32_t u; memcpy(&u, &f, 4); u |= 1; memcpy(&f, &u, 4); }
    return fabsf(f) < FLT_MIN ? copysignf(0.0f, f) : f;
}

// The bf16 tile against the scalar model of BFDOT: per k pair, t = RO(a·b + a'·b') (the bfloat16
// products are exact), acc = RO(acc + t); then alpha and beta as the fp32 tile. Operands are packed
// by lora_pack_bf16_pairs, so a wrong panel shows too. Magnitudes span 2⁻⁴ to 2⁵: wide enough that
// the fp32 sums round (so round-to-odd is tested, not only exact sums), narrow enough that the
// model's sums in double are exact.
static int check_bf16(void) {
    const int64_t kcs[] = {1, 2, 3, 16, 61, 256, 257};
    const float ab[][2] = {{1, 0}, {1, 1}, {1.5f, -0.5f}};
    int failures = 0, cases = 0;
    for (size_t ki = 0; ki < sizeof kcs / sizeof kcs[0]; ki++) {
        const int64_t kc = kcs[ki], kq = (kc + 1) / 2, lda = kc + 1, ldb = 19, ldc = 17;
        float *a = malloc(sizeof(float) * 6 * lda), *b = malloc(sizeof(float) * kc * ldb);
        for (int64_t i = 0; i < 6 * lda; i++) a[i] = spread();
        for (int64_t i = 0; i < kc * ldb; i++) b[i] = spread();
        uint32_t *pa = malloc(4 * (size_t)kq * 6 + 16), *pb = malloc(4 * (size_t)kq * 16);
        lora_pack_bf16_pairs(b, 1, ldb, 16, kc, 16, pb);  // panel columns j are B's columns
        for (int rows = 6; rows >= 1; rows -= 5) {
            lora_pack_bf16_pairs(a, lda, 1, rows, kc, 6, pa);
            for (size_t s = 0; s < sizeof ab / sizeof ab[0]; s++) {
                const float alpha = ab[s][0], beta = ab[s][1];
                float c[6 * 17], expected[6 * 17];
                for (int i = 0; i < 6 * 17; i++) c[i] = expected[i] = uniform();
                for (int r = 0; r < 6; r++) {
                    for (int j = 0; j < 16; j++) {
                        float acc = 0;
                        for (int64_t q = 0; q < kq; q++) {
                            double t = r < rows ? (double)bf16(a[r * lda + 2 * q]) * bf16(b[2 * q * ldb + j]) : 0;
                            if (2 * q + 1 < kc && r < rows) t += (double)bf16(a[r * lda + 2 * q + 1]) * bf16(b[(2 * q + 1) * ldb + j]);
                            acc = round_odd((double)acc + round_odd(t));
                        }
                        const float v = alpha * acc, old = c[r * ldc + j];
                        expected[r * ldc + j] = beta == 0 ? v : beta == 1 ? v + old : fmaf(beta, old, v);
                    }
                }
                lora_sbgemm_neonbf16_6x16(kq, pa, pb, c, ldc, alpha, beta);
                cases++;
                for (int i = 0; i < 6 * 17; i++) {
                    if (c[i] != expected[i]) {
                        fprintf(stderr, "neon_check: bf16 kc %lld rows %d alpha %g beta %g: C[%d] = %.9g, the model gives %.9g\n",
                                (long long)kc, rows, alpha, beta, i, c[i], expected[i]);
                        failures++;
                        break;
                    }
                }
            }
        }
        free(a); free(b); free(pa); free(pb);
    }
    if (failures) { fprintf(stderr, "neon_check: %d of %d bf16 cases differ\n", failures, cases); return 1; }
    printf("neon_check: the NEON bf16 6x16 tile (BFDOT) equals its round-to-odd scalar model in all %d cases\n", cases);
    return 0;
}

int main(void) {
    if (!(lora_cpu_features() & LORA_CPU_NEON)) { fprintf(stderr, "neon_check: no LORA_CPU_NEON\n"); return 1; }
    if (check_qdot()) return 1;
    if (!(lora_cpu_features() & LORA_CPU_NEON_BF16)) {
        printf("neon_check: skipped the bf16 tile: this CPU has no FEAT_BF16\n");
    } else if (check_bf16()) {
        return 1;
    }
    const int64_t kcs[] = {1, 2, 3, 16, 61, 256, 257};
    const float ab[][2] = {{1, 0}, {1, 1}, {1.5f, -0.5f}, {-2, 0}};
    int failures = 0, cases = 0;
    for (size_t ki = 0; ki < sizeof kcs / sizeof kcs[0]; ki++) {
        const int64_t kc = kcs[ki], ldb = 19, ldc = 21, lda = kc + 3;
        float *a = malloc(sizeof(float) * 6 * lda), *b = malloc(sizeof(float) * kc * ldb);
        for (int64_t i = 0; i < 6 * lda; i++) a[i] = uniform();
        for (int64_t i = 0; i < kc * ldb; i++) b[i] = uniform();
        float *packed = malloc(sizeof(float) * 6 * kc);  // A(r, p) at packed[p·6 + r]
        for (int64_t p = 0; p < kc; p++) for (int r = 0; r < 6; r++) packed[p * 6 + r] = a[r * lda + p];
        for (size_t s = 0; s < sizeof ab / sizeof ab[0]; s++) {
            const float alpha = ab[s][0], beta = ab[s][1];
            // form 0: packed A; forms 1–6: A read in place with 1–6 real rows (rows past repeat the last).
            for (int form = 0; form <= 6; form++) {
                float c[6 * 21], expected[6 * 21];
                for (int i = 0; i < 6 * 21; i++) c[i] = expected[i] = uniform();
                for (int r = 0; r < 6; r++) {
                    const int64_t row = form == 0 ? r : (r < form ? r : form - 1);
                    for (int j = 0; j < 16; j++) {
                        expected[r * ldc + j] = model(kc, a, lda, 1, row, b, ldb, j, c[r * ldc + j], alpha, beta);
                    }
                }
                if (form == 0) lora_sgemm_neon_6x16(kc, packed, b, ldb, c, ldc, alpha, beta);
                else lora_sgemm_neon_6x16_strided(kc, a, lda, 1, form, b, ldb, c, ldc, alpha, beta);
                cases++;
                for (int i = 0; i < 6 * 21; i++) {
                    if (c[i] != expected[i] && !(isnan(c[i]) && isnan(expected[i]))) {
                        fprintf(stderr, "neon_check: kc %lld alpha %g beta %g form %d: C[%d] = %.9g, the model gives %.9g\n",
                                (long long)kc, alpha, beta, form, i, c[i], expected[i]);
                        failures++;
                        break;
                    }
                }
            }
        }
        free(a); free(b); free(packed);
    }
    if (failures) { fprintf(stderr, "neon_check: %d of %d cases differ\n", failures, cases); return 1; }
    printf("neon_check: the NEON 6x16 tile equals its scalar model in all %d cases (packed and strided A, kc up to 257)\n", cases);
    return 0;
}
