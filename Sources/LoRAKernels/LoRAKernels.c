#include "LoRAKernels.h"

#include <string.h>
#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP2_BF16
#define HWCAP2_BF16 (1 << 14)
#endif
#elif defined(__aarch64__) && defined(__APPLE__)
#include <sys/sysctl.h>
#endif

// vcvtneps2bf16's rounding in scalar form: NaN stays NaN (made quiet), a zero or subnormal input
// becomes a zero of its sign (the instruction treats denormal inputs as zero), anything else is
// rounded to nearest, ties to even.
static inline uint32_t bf16_bits(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (u >> 16) | 0x40u;
    if ((u & 0x7f800000u) == 0) return (u >> 16) & 0x8000u;
    return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
}


#if defined(__x86_64__)
#include <immintrin.h>

uint32_t lora_cpu_features(void) {
    // __builtin_cpu_supports also checks that the OS saves the wide registers (XGETBV).
    __builtin_cpu_init();
    uint32_t f = 0;
    // F16C too (every AVX2 CPU has it): the quantized dot kernels convert block scales with it.
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c")) f |= LORA_CPU_AVX2_FMA;
    if (__builtin_cpu_supports("avx512f")) f |= LORA_CPU_AVX512F;
    if (__builtin_cpu_supports("avx512bf16")) f |= LORA_CPU_AVX512BF16;
    if (__builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw") &&
        (f & LORA_CPU_AVX2_FMA)) f |= LORA_CPU_AVX512VNNI;
    return f;
}

// Twelve accumulators (6 rows × two 8-float halves), two B loads and one broadcast per row: 15 of the
// 16 ymm registers. Each k step is 12 FMAs against 8 loads, which keeps both FMA pipes of a Zen or
// Skylake core busy. The k loop is unrolled by two so the loop overhead stays off the FMA ports.
// Inlined into both entry points, so the packed one sees its A offsets as constants (one pointer
// register instead of six, and no spills in the loop).
__attribute__((target("avx2,fma"), always_inline))
static inline void avx2_6x16(int64_t kc, const float *a0, const float *a1, const float *a2, const float *a3,
                             const float *a4, const float *a5, int64_t acs, const float *b, int64_t ldb,
                             float *c, int64_t ldc, float alpha, float beta) {
    // The tile of C is written at the end; start fetching its rows now (they are rarely in cache).
    for (int r = 0; r < 6; r++) {
        _mm_prefetch((const char *)(c + r * ldc), _MM_HINT_T0);
        _mm_prefetch((const char *)(c + r * ldc + 15), _MM_HINT_T0);
    }
    __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps(), c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
    __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps(), c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
    __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps(), c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
#define LORA_AVX2_STEP(p)                                                          \
    do {                                                                           \
        const float *bp = b + (p) * ldb;                                           \
        const int64_t ao = (p) * acs;                                              \
        __m256 b0 = _mm256_loadu_ps(bp), b1 = _mm256_loadu_ps(bp + 8), x;          \
        x = _mm256_broadcast_ss(a0 + ao);                                          \
        c00 = _mm256_fmadd_ps(x, b0, c00); c01 = _mm256_fmadd_ps(x, b1, c01);      \
        x = _mm256_broadcast_ss(a1 + ao);                                          \
        c10 = _mm256_fmadd_ps(x, b0, c10); c11 = _mm256_fmadd_ps(x, b1, c11);      \
        x = _mm256_broadcast_ss(a2 + ao);                                          \
        c20 = _mm256_fmadd_ps(x, b0, c20); c21 = _mm256_fmadd_ps(x, b1, c21);      \
        x = _mm256_broadcast_ss(a3 + ao);                                          \
        c30 = _mm256_fmadd_ps(x, b0, c30); c31 = _mm256_fmadd_ps(x, b1, c31);      \
        x = _mm256_broadcast_ss(a4 + ao);                                          \
        c40 = _mm256_fmadd_ps(x, b0, c40); c41 = _mm256_fmadd_ps(x, b1, c41);      \
        x = _mm256_broadcast_ss(a5 + ao);                                          \
        c50 = _mm256_fmadd_ps(x, b0, c50); c51 = _mm256_fmadd_ps(x, b1, c51);      \
    } while (0)
    int64_t p = 0;
    for (; p + 2 <= kc; p += 2) {
        LORA_AVX2_STEP(p);
        LORA_AVX2_STEP(p + 1);
    }
    if (p < kc) LORA_AVX2_STEP(p);
#undef LORA_AVX2_STEP

    const __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
#define LORA_AVX2_STORE(row, lo, hi)                                                              \
    do {                                                                                          \
        float *cr = c + (row) * ldc;                                                              \
        __m256 r0 = _mm256_mul_ps(va, lo), r1 = _mm256_mul_ps(va, hi);                            \
        if (beta == 1.0f) {                                                                       \
            r0 = _mm256_add_ps(r0, _mm256_loadu_ps(cr)); r1 = _mm256_add_ps(r1, _mm256_loadu_ps(cr + 8)); \
        } else if (beta != 0.0f) {                                                                \
            r0 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(cr), r0);                                    \
            r1 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(cr + 8), r1);                                \
        }                                                                                         \
        _mm256_storeu_ps(cr, r0); _mm256_storeu_ps(cr + 8, r1);                                   \
    } while (0)
    LORA_AVX2_STORE(0, c00, c01);
    LORA_AVX2_STORE(1, c10, c11);
    LORA_AVX2_STORE(2, c20, c21);
    LORA_AVX2_STORE(3, c30, c31);
    LORA_AVX2_STORE(4, c40, c41);
    LORA_AVX2_STORE(5, c50, c51);
#undef LORA_AVX2_STORE
}

__attribute__((target("avx2,fma")))
void lora_sgemm_avx2_6x16(int64_t kc, const float *a, const float *b, int64_t ldb, float *c, int64_t ldc,
                          float alpha, float beta) {
    avx2_6x16(kc, a, a + 1, a + 2, a + 3, a + 4, a + 5, 6, b, ldb, c, ldc, alpha, beta);
}

__attribute__((target("avx2,fma")))
void lora_sgemm_avx2_6x16_strided(int64_t kc, const float *a, int64_t ars, int64_t acs, int64_t arows,
                                  const float *b, int64_t ldb, float *c, int64_t ldc, float alpha, float beta) {
    const int64_t last = arows - 1;
    avx2_6x16(kc, a, a + (last < 1 ? last : 1) * ars, a + (last < 2 ? last : 2) * ars,
              a + (last < 3 ? last : 3) * ars, a + (last < 4 ? last : 4) * ars, a + (last < 5 ? last : 5) * ars,
              acs, b, ldb, c, ldc, alpha, beta);
}

// MARK: - AVX-512: 14×32 fp32 tile

// 28 accumulators (14 rows × two 16-float halves), two B loads per k and one broadcast per row,
// folded into the FMA as an embedded broadcast: 31 of the 32 zmm registers. 28 FMAs against 16 loads
// per k keep both 512-bit FMA pipes of a Sapphire Rapids or Zen 4 core busy; the B micro-panel
// (kc × 32 floats, 32 KiB at kc = 256) and the A micro-panel (14 KiB) share a 48 KiB L1.
#define LORA_ROWS14(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) X(13)

__attribute__((target("avx512f"), always_inline))
static inline void store_row_16x2(float *cr, __m512 lo, __m512 hi, float alpha, float beta) {
    const __m512 va = _mm512_set1_ps(alpha);
    __m512 r0 = _mm512_mul_ps(va, lo), r1 = _mm512_mul_ps(va, hi);
    if (beta == 1.0f) {
        r0 = _mm512_add_ps(r0, _mm512_loadu_ps(cr)); r1 = _mm512_add_ps(r1, _mm512_loadu_ps(cr + 16));
    } else if (beta != 0.0f) {
        const __m512 vb = _mm512_set1_ps(beta);
        r0 = _mm512_fmadd_ps(vb, _mm512_loadu_ps(cr), r0);
        r1 = _mm512_fmadd_ps(vb, _mm512_loadu_ps(cr + 16), r1);
    }
    _mm512_storeu_ps(cr, r0); _mm512_storeu_ps(cr + 16, r1);
}

// A(r, p) is ar[r][p·acs]; the packed entry point passes ar[r] = a + r with acs = 14.
__attribute__((target("avx512f"), always_inline))
static inline void avx512_14x32(int64_t kc, const float *const ar[14], int64_t acs, const float *b, int64_t ldb,
                                float *c, int64_t ldc, float alpha, float beta) {
#define LORA_DECL(r) __m512 c##r##0 = _mm512_setzero_ps(), c##r##1 = _mm512_setzero_ps(); const float *a##r = ar[r];
    LORA_ROWS14(LORA_DECL)
#undef LORA_DECL
    for (int r = 0; r < 14; r++) {
        _mm_prefetch((const char *)(c + r * ldc), _MM_HINT_T0);
        _mm_prefetch((const char *)(c + r * ldc + 31), _MM_HINT_T0);
    }
    for (int64_t p = 0; p < kc; p++) {
        const float *bp = b + p * ldb;
        const int64_t ao = p * acs;
        const __m512 b0 = _mm512_loadu_ps(bp), b1 = _mm512_loadu_ps(bp + 16);
#define LORA_FMA(r) { const __m512 x = _mm512_set1_ps(a##r[ao]); c##r##0 = _mm512_fmadd_ps(x, b0, c##r##0); c##r##1 = _mm512_fmadd_ps(x, b1, c##r##1); }
        LORA_ROWS14(LORA_FMA)
#undef LORA_FMA
    }
#define LORA_STORE(r) store_row_16x2(c + (r) * ldc, c##r##0, c##r##1, alpha, beta);
    LORA_ROWS14(LORA_STORE)
#undef LORA_STORE
}

__attribute__((target("avx512f")))
void lora_sgemm_avx512_14x32(int64_t kc, const float *a, const float *b, int64_t ldb, float *c, int64_t ldc,
                             float alpha, float beta) {
    const float *const ar[14] = {a, a + 1, a + 2, a + 3, a + 4, a + 5, a + 6, a + 7, a + 8, a + 9, a + 10, a + 11, a + 12, a + 13};
    avx512_14x32(kc, ar, 14, b, ldb, c, ldc, alpha, beta);
}

__attribute__((target("avx512f")))
void lora_sgemm_avx512_14x32_strided(int64_t kc, const float *a, int64_t ars, int64_t acs, int64_t arows,
                                     const float *b, int64_t ldb, float *c, int64_t ldc, float alpha, float beta) {
    const float *ar[14];
    for (int64_t r = 0; r < 14; r++) ar[r] = a + (r < arows ? r : arows - 1) * ars;
    avx512_14x32(kc, ar, acs, b, ldb, c, ldc, alpha, beta);
}

// An 8×8 block of 32-bit values transposed in registers (three shuffle stages): c[i][j] = r[j][i].
__attribute__((target("avx512f"), always_inline))
static inline void transpose_8x8(const __m256 r[8], __m256 c[8]) {
    const __m256 u0 = _mm256_unpacklo_ps(r[0], r[1]), u1 = _mm256_unpackhi_ps(r[0], r[1]);
    const __m256 u2 = _mm256_unpacklo_ps(r[2], r[3]), u3 = _mm256_unpackhi_ps(r[2], r[3]);
    const __m256 u4 = _mm256_unpacklo_ps(r[4], r[5]), u5 = _mm256_unpackhi_ps(r[4], r[5]);
    const __m256 u6 = _mm256_unpacklo_ps(r[6], r[7]), u7 = _mm256_unpackhi_ps(r[6], r[7]);
    const __m256 s0 = _mm256_shuffle_ps(u0, u2, 0x44), s1 = _mm256_shuffle_ps(u0, u2, 0xee);
    const __m256 s2 = _mm256_shuffle_ps(u1, u3, 0x44), s3 = _mm256_shuffle_ps(u1, u3, 0xee);
    const __m256 s4 = _mm256_shuffle_ps(u4, u6, 0x44), s5 = _mm256_shuffle_ps(u4, u6, 0xee);
    const __m256 s6 = _mm256_shuffle_ps(u5, u7, 0x44), s7 = _mm256_shuffle_ps(u5, u7, 0xee);
    c[0] = _mm256_permute2f128_ps(s0, s4, 0x20); c[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
    c[2] = _mm256_permute2f128_ps(s2, s6, 0x20); c[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
    c[4] = _mm256_permute2f128_ps(s0, s4, 0x31); c[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
    c[6] = _mm256_permute2f128_ps(s2, s6, 0x31); c[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

__attribute__((target("avx512f")))
void lora_pack_f32_avx512(const float *x, int64_t ts, int64_t ps, int64_t count, int64_t kc, int64_t width, float *dst) {
    // Lanes to read (the panel's real columns) and to write (all its columns), in two halves of 16.
    const __mmask16 lo = (__mmask16)(count >= 16 ? 0xffff : (1u << count) - 1);
    const __mmask16 hi = (__mmask16)(count <= 16 ? 0 : count >= 32 ? 0xffff : (1u << (count - 16)) - 1);
    const __mmask16 wlo = (__mmask16)(width >= 16 ? 0xffff : (1u << width) - 1);
    const __mmask16 whi = (__mmask16)(width <= 16 ? 0 : (1u << (width - 16)) - 1);
    if (ts == 1) {
        // The panel's columns are adjacent: a masked copy per p.
        for (int64_t p = 0; p < kc; p++) {
            const float *src = x + p * ps;
            float *out = dst + p * width;
            _mm512_mask_storeu_ps(out, wlo, _mm512_maskz_loadu_ps(lo, src));
            if (width > 16) _mm512_mask_storeu_ps(out + 16, whi, _mm512_maskz_loadu_ps(hi, src + 16));
        }
        return;
    }
    if (ps == 1) {
        // Each panel column's values are adjacent in its source row: 8×8 blocks transposed in
        // registers (three shuffle stages), a quarter of the gathers' cost per value.
        for (int64_t t0 = 0; t0 < width; t0 += 8) {
            const int64_t rows = count - t0 < 0 ? 0 : count - t0 < 8 ? count - t0 : 8;
            const int64_t cols = width - t0 < 8 ? width - t0 : 8;
            const __m256i keep = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)cols), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
            int64_t p = 0;
            for (; p + 8 <= kc; p += 8) {
                __m256 r[8];
                for (int i = 0; i < 8; i++) r[i] = i < rows ? _mm256_loadu_ps(x + (t0 + i) * ts + p) : _mm256_setzero_ps();
                __m256 c[8];
                transpose_8x8(r, c);
                for (int i = 0; i < 8; i++) {
                    if (cols == 8) _mm256_storeu_ps(dst + (p + i) * width + t0, c[i]);
                    else _mm256_maskstore_ps(dst + (p + i) * width + t0, keep, c[i]);
                }
            }
            for (; p < kc; p++) {
                for (int64_t i = 0; i < cols; i++) dst[p * width + t0 + i] = i < rows ? x[(t0 + i) * ts + p] : 0.0f;
            }
        }
        return;
    }
    if (ts * width < (1 << 29)) {
        // Each p gathers the panel's values of column p from their rows.
        const __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                               _mm512_set1_epi32((int)ts));
        for (int64_t p = 0; p < kc; p++) {
            const float *src = x + p * ps;
            float *out = dst + p * width;
            _mm512_mask_storeu_ps(out, wlo, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), lo, idx, src, 4));
            if (width > 16) _mm512_mask_storeu_ps(out + 16, whi, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), hi, idx, src + 16 * ts, 4));
        }
        return;
    }
    for (int64_t p = 0; p < kc; p++) {
        for (int64_t t = 0; t < width; t++) dst[p * width + t] = t < count ? x[t * ts + p * ps] : 0.0f;
    }
}

// MARK: - AVX-512 BF16: 14×32 tile of bf16 pairs, fp32 accumulation


// The bfloat16 pair (2q, 2q + 1) of row t, from Float32 (rounded) or bfloat16 source rows; the
// missing half of an odd kc's last pair is zero.
__attribute__((target("avx512f,avx512bf16"), always_inline))
static inline uint32_t pair_word(const void *x, int from_bf16, int64_t t, int64_t ts, int64_t q, int64_t kc) {
    if (from_bf16) {
        const uint16_t *row = (const uint16_t *)x + t * ts;
        return row[2 * q] | (2 * q + 1 < kc ? (uint32_t)row[2 * q + 1] << 16 : 0);
    }
    const float *row = (const float *)x + t * ts;
    return bf16_bits(row[2 * q]) | (2 * q + 1 < kc ? bf16_bits(row[2 * q + 1]) << 16 : 0);
}

// The panel when pairs are adjacent in each source row (ps = 1): 16 values of 8 rows make 8 pairs
// each (converted from Float32, or already one 32-bit word each in bfloat16), and the 8×8 block of
// pairs is transposed in registers onto 8 panel rows. (A scatter per source row was simpler, but
// AMD's Zen cores microcode vpscatterdd: the bf16 products ran at 0.85× the fp32 ones on Zen 5.)
__attribute__((target("avx512f,avx512bf16"), always_inline))
static inline void pack_pairs_along_rows(const void *x, int from_bf16, int64_t ts, int64_t count, int64_t kc,
                                         int64_t width, uint32_t *dst) {
    const int64_t kq = (kc + 1) / 2;
    for (int64_t t0 = 0; t0 < count; t0 += 8) {
        const int64_t rows = count - t0 < 8 ? count - t0 : 8;
        const __m256i keep = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)rows), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        int64_t q = 0;
        for (; 2 * q + 16 <= kc; q += 8) {
            __m256 r[8], c[8];
            for (int i = 0; i < 8; i++) {
                if (i >= rows) r[i] = _mm256_setzero_ps();
                else if (from_bf16) r[i] = _mm256_loadu_ps((const float *)((const uint16_t *)x + (t0 + i) * ts + 2 * q));
                else r[i] = _mm256_castsi256_ps((__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps((const float *)x + (t0 + i) * ts + 2 * q)));
            }
            transpose_8x8(r, c);
            for (int i = 0; i < 8; i++) {
                if (rows == 8) _mm256_storeu_ps((float *)(dst + (q + i) * width + t0), c[i]);
                else _mm256_maskstore_ps((float *)(dst + (q + i) * width + t0), keep, c[i]);
            }
        }
        for (; q < kq; q++) {
            for (int64_t t = t0; t < t0 + rows; t++) dst[q * width + t] = pair_word(x, from_bf16, t, ts, q, kc);
        }
    }
}

__attribute__((target("avx512f,avx512bf16")))
void lora_pack_bf16_pairs(const float *x, int64_t ts, int64_t ps, int64_t count, int64_t kc, int64_t width,
                          uint32_t *dst) {
    const int64_t kq = (kc + 1) / 2;
    if (ps == 1 && count > 0) {
        pack_pairs_along_rows(x, 0, ts, count, kc, width, dst);
    } else if (ts == 1) {
        // The panel's columns are adjacent in each source row: two rows (k = 2q, 2q + 1) of 16 values
        // interleave into 16 pairs; a last group of fewer than 16 (all of a 14-row A panel) is loaded
        // under a mask, which reads nothing past it.
        for (int64_t t = 0; t < count; t += 16) {
            const __mmask16 keep = count - t >= 16 ? 0xFFFF : (__mmask16)((1u << (count - t)) - 1);
            for (int64_t q = 0; q < kq; q++) {
                const __m512i lo = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(keep, x + 2 * q * ps + t)));
                __m512i pair = lo;
                if (2 * q + 1 < kc) {
                    const __m512i hi = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(keep, x + (2 * q + 1) * ps + t)));
                    pair = _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16));
                }
                _mm512_mask_storeu_epi32(dst + q * width + t, keep, pair);
            }
        }
    } else {
        for (int64_t t = 0; t < count; t++) {
            for (int64_t q = 0; q < kq; q++) {
                const uint32_t lo = bf16_bits(x[t * ts + 2 * q * ps]);
                const uint32_t hi = 2 * q + 1 < kc ? bf16_bits(x[t * ts + (2 * q + 1) * ps]) : 0;
                dst[q * width + t] = lo | hi << 16;
            }
        }
    }
    for (int64_t q = 0; q < kq; q++) {
        for (int64_t t = count; t < width; t++) dst[q * width + t] = 0;
    }
}

__attribute__((target("avx512f,avx512bf16")))
void lora_round_bf16(const float *x, int64_t n, uint16_t *dst) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) _mm256_storeu_si256((__m256i *)(dst + i), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(x + i)));
    for (; i < n; i++) dst[i] = (uint16_t)bf16_bits(x[i]);
}

__attribute__((target("avx512f,avx512bf16")))
void lora_pack_bf16_pairs_from_bf16(const uint16_t *x, int64_t ts, int64_t ps, int64_t count, int64_t kc,
                                    int64_t width, uint32_t *dst) {
    const int64_t kq = (kc + 1) / 2;
    if (ps == 1 && count > 0) {
        pack_pairs_along_rows(x, 1, ts, count, kc, width, dst);
    } else if (ts == 1) {
        // The panel's columns are adjacent: two source rows (k = 2q, 2q + 1) of 16 values interleave.
        int64_t t = 0;
        for (; t + 16 <= count; t += 16) {
            for (int64_t q = 0; q < kq; q++) {
                __m512i pair = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(x + 2 * q * ps + t)));
                if (2 * q + 1 < kc) {
                    const __m512i hi = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(x + (2 * q + 1) * ps + t)));
                    pair = _mm512_or_si512(pair, _mm512_slli_epi32(hi, 16));
                }
                _mm512_storeu_si512(dst + q * width + t, pair);
            }
        }
        for (; t < count; t++) {
            for (int64_t q = 0; q < kq; q++) {
                dst[q * width + t] = x[2 * q * ps + t] | (2 * q + 1 < kc ? (uint32_t)x[(2 * q + 1) * ps + t] << 16 : 0);
            }
        }
    } else {
        for (int64_t t = 0; t < count; t++) {
            for (int64_t q = 0; q < kq; q++) {
                dst[q * width + t] = x[t * ts + 2 * q * ps] | (2 * q + 1 < kc ? (uint32_t)x[t * ts + (2 * q + 1) * ps] << 16 : 0);
            }
        }
    }
    for (int64_t q = 0; q < kq; q++) {
        for (int64_t t = count; t < width; t++) dst[q * width + t] = 0;
    }
}

// A pair (r, q) is ar[r][q·acs]; the packed entry point passes ar[r] = a + r with acs = 14.
__attribute__((target("avx512f,avx512bf16"), always_inline))
static inline void avx512bf16_14x32(int64_t kq, const uint32_t *const ar[14], int64_t acs, const uint32_t *b,
                                    float *c, int64_t ldc, float alpha, float beta) {
#define LORA_DECL(r) __m512 c##r##0 = _mm512_setzero_ps(), c##r##1 = _mm512_setzero_ps(); const uint32_t *a##r = ar[r];
    LORA_ROWS14(LORA_DECL)
#undef LORA_DECL
    for (int r = 0; r < 14; r++) {
        _mm_prefetch((const char *)(c + r * ldc), _MM_HINT_T0);
        _mm_prefetch((const char *)(c + r * ldc + 31), _MM_HINT_T0);
    }
    for (int64_t q = 0; q < kq; q++) {
        const __m512bh b0 = (__m512bh)_mm512_loadu_si512(b + q * 32), b1 = (__m512bh)_mm512_loadu_si512(b + q * 32 + 16);
        const int64_t ao = q * acs;
#define LORA_DOT(r) { const __m512bh x = (__m512bh)_mm512_set1_epi32((int)a##r[ao]); c##r##0 = _mm512_dpbf16_ps(c##r##0, x, b0); c##r##1 = _mm512_dpbf16_ps(c##r##1, x, b1); }
        LORA_ROWS14(LORA_DOT)
#undef LORA_DOT
    }
#define LORA_STORE(r) store_row_16x2(c + (r) * ldc, c##r##0, c##r##1, alpha, beta);
    LORA_ROWS14(LORA_STORE)
#undef LORA_STORE
}

__attribute__((target("avx512f,avx512bf16")))
void lora_sbgemm_avx512bf16_14x32(int64_t kq, const uint32_t *a, const uint32_t *b, float *c, int64_t ldc,
                                  float alpha, float beta) {
    const uint32_t *const ar[14] = {a, a + 1, a + 2, a + 3, a + 4, a + 5, a + 6, a + 7, a + 8, a + 9, a + 10, a + 11, a + 12, a + 13};
    avx512bf16_14x32(kq, ar, 14, b, c, ldc, alpha, beta);
}

__attribute__((target("avx512f,avx512bf16")))
void lora_sbgemm_avx512bf16_14x32_strided(int64_t kq, const uint32_t *a, int64_t ars, int64_t acs, int64_t arows,
                                          const uint32_t *b, float *c, int64_t ldc, float alpha, float beta) {
    const uint32_t *ar[14];
    for (int64_t r = 0; r < 14; r++) ar[r] = a + (r < arows ? r : arows - 1) * ars;
    avx512bf16_14x32(kq, ar, acs, b, c, ldc, alpha, beta);
}
#undef LORA_ROWS14

#else

uint32_t lora_cpu_features(void) {
#if defined(__aarch64__) && defined(__linux__)
    return LORA_CPU_NEON | ((getauxval(AT_HWCAP2) & HWCAP2_BF16) ? LORA_CPU_NEON_BF16 : 0);
#elif defined(__aarch64__) && defined(__APPLE__)
    int bf16 = 0;
    size_t size = sizeof bf16;
    const int asked = sysctlbyname("hw.optional.arm.FEAT_BF16", &bf16, &size, NULL, 0);
    return LORA_CPU_NEON | (asked == 0 && bf16 ? LORA_CPU_NEON_BF16 : 0);
#elif defined(__aarch64__)
    return LORA_CPU_NEON;
#else
    return 0;
#endif
}

// The bf16 packing in portable C, for ARM64's bf16 tile (the packing is a small part of a product;
// the rounding is bf16_bits', as on x86-64): from Float32 values (rounded) or bfloat16 ones.
static void pack_pairs_portable(const void *x, int from_bf16, int64_t ts, int64_t ps, int64_t count, int64_t kc,
                                int64_t width, uint32_t *dst) {
    const int64_t kq = (kc + 1) / 2;
    for (int64_t q = 0; q < kq; q++) {
        for (int64_t t = 0; t < width; t++) {
            uint32_t half[2] = {0, 0};
            for (int64_t i = 0; i < 2 && t < count && 2 * q + i < kc; i++) {
                const int64_t at = t * ts + (2 * q + i) * ps;
                half[i] = from_bf16 ? ((const uint16_t *)x)[at] : bf16_bits(((const float *)x)[at]);
            }
            dst[q * width + t] = half[0] | half[1] << 16;
        }
    }
}

void lora_pack_bf16_pairs(const float *x, int64_t ts, int64_t ps, int64_t count, int64_t kc, int64_t width,
                          uint32_t *dst) {
    pack_pairs_portable(x, 0, ts, ps, count, kc, width, dst);
}

void lora_pack_bf16_pairs_from_bf16(const uint16_t *x, int64_t ts, int64_t ps, int64_t count, int64_t kc,
                                    int64_t width, uint32_t *dst) {
    pack_pairs_portable(x, 1, ts, ps, count, kc, width, dst);
}

void lora_round_bf16(const float *x, int64_t n, uint16_t *dst) {
    for (int64_t i = 0; i < n; i++) dst[i] = (uint16_t)bf16_bits(x[i]);
}

// Never called where lora_cpu_features() lacks LORA_CPU_AVX2_FMA; defined so every platform links.
void lora_sgemm_avx2_6x16(int64_t kc, const float *a, const float *b, int64_t ldb, float *c, int64_t ldc,
                          float alpha, float beta) {
    (void)kc; (void)a; (void)b; (void)ldb; (void)c; (void)ldc; (void)alpha; (void)beta;
    __builtin_trap();
}

void lora_sgemm_avx2_6x16_strided(int64_t kc, const float *a, int64_t ars, int64_t acs, int64_t arows,
                                  const float *b, int64_t ldb, float *c, int64_t ldc, float alpha, float beta) {
    (void)kc; (void)a; (void)ars; (void)acs; (void)arows; (void)b; (void)ldb; (void)c; (void)ldc;
    (void)alpha; (void)beta;
    __builtin_trap();
}

void lora_sgemm_avx512_14x32(int64_t kc, const float *a, const float *b, int64_t ldb, float *c, int64_t ldc,
                             float alpha, float beta) {
    (void)kc; (void)a; (void)b; (void)ldb; (void)c; (void)ldc; (void)alpha; (void)beta;
    __builtin_trap();
}

void lora_sgemm_avx512_14x32_strided(int64_t kc, const float *a, int64_t ars, int64_t acs, int64_t arows,
                                     const float *b, int64_t ldb, float *c, int64_t ldc, float alpha, float beta) {
    (void)kc; (void)a; (void)ars; (void)acs; (void)arows; (void)b; (void)ldb; (void)c; (void)ldc;
    (void)alpha; (void)beta;
    __builtin_trap();
}

void lora_sbgemm_avx512bf16_14x32(int64_t kq, const uint32_t *a, const uint32_t *b, float *c, int64_t ldc,
                                  float alpha, float beta) {
    (void)kq; (void)a; (void)b; (void)c; (void)ldc; (void)alpha; (void)beta;
    __builtin_trap();
}

void lora_sbgemm_avx512bf16_14x32_strided(int64_t kq, const uint32_t *a, int64_t ars, int64_t acs, int64_t arows,
                                          const uint32_t *b, float *c, int64_t ldc, float alpha, float beta) {
    (void)kq; (void)a; (void)ars; (void)acs; (void)arows; (void)b; (void)c; (void)ldc; (void)alpha; (void)beta;
    __builtin_trap();
}

void lora_pack_f32_avx512(const float *x, int64_t ts, int64_t ps, int64_t count, int64_t kc, int64_t width, float *dst) {
    (void)x; (void)ts; (void)ps; (void)count; (void)kc; (void)width; (void)dst;
    __builtin_trap();
}

#endif
