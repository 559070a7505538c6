/* Philox4x32-10 and the float32 transforms of philox.py, as one C loop for the CPU.
 *
 * The float arithmetic mirrors philox.py operation by operation (the same constants,
 * rounded to float32 from the same doubles, the same order of operations, no fused
 * multiply-adds: built with -ffp-contract=off), so the values are bit for bit those
 * of the torch-ops path; tests/test_kernels.py checks it. Built and loaded by native.py.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>
#ifdef __AVX2__
#include <immintrin.h>
#endif

#define ROUND_A 0xD2511F53u
#define ROUND_B 0xCD9E8D57u
#define KEY_A 0x9E3779B9u
#define KEY_B 0xBB67AE85u
#define F(x) ((float)(x)) /* a double constant rounded to float32, as torch does */

/* cond ? a : b by bit masks: GCC does not if-convert every float ternary, and a branch
 * in a loop stops its vectorization. */
static inline float pick(int32_t cond, float a, float b) {
    uint32_t ab, bb, mask = -(uint32_t)(cond != 0), r;
    memcpy(&ab, &a, 4);
    memcpy(&bb, &b, 4);
    r = (ab & mask) | (bb & ~mask);
    float out;
    memcpy(&out, &r, 4);
    return out;
}

/* std::max / std::min, as torch.clamp computes them (fminf would be a libm call; no value
 * here is NaN). */
static inline float clamp_min(float x, float lo) { return pick(x < lo, lo, x); }
static inline float clamp_max(float x, float hi) { return pick(hi < x, hi, x); }

static inline float u24(uint32_t x) { return (float)(x >> 8) * F(5.9604644775390625e-08); }

static inline float log_f32(float x) { /* philox.log_f32 */
    int32_t bits;
    memcpy(&bits, &x, 4);
    int32_t e = (bits >> 23) - 127;
    int32_t mbits = (bits & 0x7FFFFF) | 0x3F000000;
    float m;
    memcpy(&m, &mbits, 4);
    /* low ? m + m : m and low ? e : e + 1, as arithmetic (exact) so the loop vectorizes */
    int32_t low = m < F(0.70710677);
    float f = (m + m * (float)low) - F(1.0);
    float ef = (float)(e + 1 - low);
    float z = f * f;
    float p = F(7.0376836292e-2);
    p = p * f + F(-1.1514610310e-1);
    p = p * f + F(1.1676998740e-1);
    p = p * f + F(-1.2420140846e-1);
    p = p * f + F(1.4249322787e-1);
    p = p * f + F(-1.6668057665e-1);
    p = p * f + F(2.0000714765e-1);
    p = p * f + F(-2.4999993993e-1);
    p = p * f + F(3.3333331174e-1);
    float y = f * z * p + ef * F(-2.12194440e-4) - F(0.5) * z;
    return (f + y) + ef * F(0.693359375);
}

static inline float sqrt_f32(float x) { return (float)sqrt((double)x); }

static inline void sincos_f32(float t, float *sin_out, float *cos_out) {
    /* torch.round (half to even) of a value in [0, 4]: adding and subtracting 1.5 * 2**23
     * rounds in the default mode and, unlike rintf, vectorizes without SSE4.1. */
    float q = (t * F(0.63661975) + F(12582912.0)) - F(12582912.0);
    float r = t - q * F(1.5703125) - q * F(4.837512969970703125e-4) - q * F(7.549789948768648e-8);
    float z = r * r;
    float s = ((F(-1.9515295891e-4) * z + F(8.3321608736e-3)) * z - F(1.6666654611e-1)) * z * r + r;
    float c = ((F(2.443315711809948e-5) * z - F(1.388731625493765e-3)) * z
               + F(4.166664568298827e-2)) * z * z - F(0.5) * z + F(1.0);
    int32_t j = (int32_t)q;
    float sn = (j & 1) ? c : s, cs = (j & 1) ? s : c;
    *sin_out = (j & 2) ? -sn : sn;
    *cos_out = ((j + 1) & 2) ? -cs : cs;
}

static inline float erfinv_f32(float x, float one_minus_x2) { /* philox.erfinv_f32 */
    float w = -log_f32(one_minus_x2);
    float c = w - F(2.5);
    float p = F(2.81022636e-08);
    p = F(3.43273939e-07) + p * c;
    p = F(-3.5233877e-06) + p * c;
    p = F(-4.39150654e-06) + p * c;
    p = F(0.00021858087) + p * c;
    p = F(-0.00125372503) + p * c;
    p = F(-0.00417768164) + p * c;
    p = F(0.246640727) + p * c;
    p = F(1.50140941) + p * c;
    float t = sqrt_f32(w) - F(3.0);
    float q = F(-0.000200214257);
    q = F(0.000100950558) + q * t;
    q = F(0.00134934322) + q * t;
    q = F(-0.00367342844) + q * t;
    q = F(0.00573950773) + q * t;
    q = F(-0.0076224613) + q * t;
    q = F(0.00943887047) + q * t;
    q = F(1.00167406) + q * t;
    q = F(2.83297682) + q * t;
    return pick(w < F(5.0), p, q) * x;
}

#define BATCH 64

/* Philox4x32-10 of counters first .. first + BATCH - 1: word j of counter i into x[j][i].
 * With AVX2, written with intrinsics: GCC vectorizes the 32x32->64-bit products of the
 * plain loop below with a shuffle per lane, and the fill ran at half the speed. */
#ifdef __AVX2__
/* The high and low words of the eight 32x32-bit products a * m: even lanes by one
 * vpmuludq, odd lanes by another, blended back into place. */
static inline void mulhilo8(__m256i a, __m256i m, __m256i *hi, __m256i *lo) {
    __m256i even = _mm256_mul_epu32(a, m);
    __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);
    *lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
    *hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
}

static void philox(uint32_t k0, uint32_t k1, uint64_t first, uint32_t x[4][BATCH]) {
    const __m256i mul_a = _mm256_set1_epi32((int)ROUND_A), mul_b = _mm256_set1_epi32((int)ROUND_B);
    for (int i = 0; i < BATCH; i += 8) {
        uint32_t lo[8], hi[8];
        for (int l = 0; l < 8; l++) {
            uint64_t ctr = first + (uint64_t)(i + l);
            lo[l] = (uint32_t)ctr;
            hi[l] = (uint32_t)(ctr >> 32);
        }
        __m256i c0 = _mm256_loadu_si256((const __m256i *)lo);
        __m256i c1 = _mm256_loadu_si256((const __m256i *)hi);
        __m256i c2 = _mm256_setzero_si256(), c3 = _mm256_setzero_si256();
        uint32_t r0 = k0, r1 = k1;
        for (int round = 0; round < 10; round++) {
            __m256i hi_a, lo_a, hi_b, lo_b;
            mulhilo8(c0, mul_a, &hi_a, &lo_a);
            mulhilo8(c2, mul_b, &hi_b, &lo_b);
            c0 = _mm256_xor_si256(_mm256_xor_si256(hi_b, c1), _mm256_set1_epi32((int)r0));
            c2 = _mm256_xor_si256(_mm256_xor_si256(hi_a, c3), _mm256_set1_epi32((int)r1));
            c1 = lo_b;
            c3 = lo_a;
            r0 += KEY_A;
            r1 += KEY_B;
        }
        _mm256_storeu_si256((__m256i *)&x[0][i], c0);
        _mm256_storeu_si256((__m256i *)&x[1][i], c1);
        _mm256_storeu_si256((__m256i *)&x[2][i], c2);
        _mm256_storeu_si256((__m256i *)&x[3][i], c3);
    }
}
#else
static void philox(uint32_t k0, uint32_t k1, uint64_t first, uint32_t x[4][BATCH]) {
    for (int i = 0; i < BATCH; i++) {
        uint64_t ctr = first + (uint64_t)i;
        uint32_t c0 = (uint32_t)ctr, c1 = (uint32_t)(ctr >> 32), c2 = 0, c3 = 0;
        uint32_t r0 = k0, r1 = k1;
#pragma GCC unroll 10
        for (int round = 0; round < 10; round++) {
            uint64_t pa = (uint64_t)c0 * ROUND_A;
            uint64_t pb = (uint64_t)c2 * ROUND_B;
            uint32_t n0 = (uint32_t)(pb >> 32) ^ c1 ^ r0;
            uint32_t n2 = (uint32_t)(pa >> 32) ^ c3 ^ r1;
            c1 = (uint32_t)pb;
            c3 = (uint32_t)pa;
            c0 = n0;
            c2 = n2;
            r0 += KEY_A;
            r1 += KEY_B;
        }
        x[0][i] = c0; x[1][i] = c1; x[2][i] = c2; x[3][i] = c3;
    }
}
#endif

/* The values of counters first .. first + BATCH - 1 into out[0 .. 4 BATCH - 1], for kind 1, 2
 * or 3. Each transform is a simple loop over the batch, so the compiler vectorizes it; the
 * four words of a counter are written side by side at the end, in one pass (a store at
 * stride 4 inside each transform loop would be one scalar store per element). */
static void batch(int kind, uint32_t k0, uint32_t k1, uint64_t first, const float *a,
                  float *out) {
    uint32_t x[4][BATCH];
    philox(k0, k1, first, x);
    float y[4][BATCH];
    if (kind == 1) { /* uniform: (low, high - low, largest value < high) */
        for (int j = 0; j < 4; j++)
            for (int i = 0; i < BATCH; i++)
                y[j][i] = clamp_max(u24(x[j][i]) * a[1] + a[0], a[2]);
    } else if (kind == 2) { /* normal: Box-Muller on (x0, x1) and (x2, x3) */
        for (int j = 0; j < 4; j += 2)
            for (int i = 0; i < BATCH; i++) {
                float u1 = u24(x[j][i]) + F(5.9604644775390625e-08);
                float r = sqrt_f32(F(-2.0) * log_f32(u1));
                float sn, cs;
                sincos_f32(u24(x[j + 1][i]) * F(6.2831855), &sn, &cs);
                y[j][i] = (r * cs) * a[1] + a[0];
                y[j + 1][i] = (r * sn) * a[1] + a[0];
            }
    } else { /* truncated normal, inverse CDF: (mean, std sqrt 2, e_a, span, c_a, c_b, lo, hi) */
        for (int j = 0; j < 4; j++)
            for (int i = 0; i < BATCH; i++) {
                float u = ((float)(x[j][i] >> 8) + F(0.5)) * F(5.9604644775390625e-08);
                float t = a[3] * u + a[2];
                float one_minus = a[3] * (F(1.0) - u) + a[5];
                float one_plus = a[3] * u + a[4];
                float z = erfinv_f32(t, one_minus * one_plus) * a[1] + a[0];
                y[j][i] = clamp_max(clamp_min(z, a[6]), a[7]);
            }
    }
    /* The four words of counter i are elements 4i .. 4i + 3: interleave. */
    for (int i = 0; i < BATCH; i++) {
        out[4 * i] = y[0][i];
        out[4 * i + 1] = y[1][i];
        out[4 * i + 2] = y[2][i];
        out[4 * i + 3] = y[3][i];
    }
}

/* Elements start .. start + n - 1 of the stream key into out[0 .. n - 1]. */
void fengine_philox_fill_f32(float *out, int64_t start, int64_t n, int kind, uint64_t key,
                             const float *a) {
    uint32_t k0 = (uint32_t)key, k1 = (uint32_t)(key >> 32);
    float tmp[4 * BATCH];
    int64_t end = start + n;
    int64_t c = start / 4; /* the counter of the first element */
    while (4 * c < end) {
        int64_t lo = 4 * c, hi = lo + 4 * BATCH; /* this batch's elements */
        if (lo >= start && hi <= end) { /* wholly inside: straight into out */
            batch(kind, k0, k1, (uint64_t)c, a, out + (lo - start));
        } else {
            batch(kind, k0, k1, (uint64_t)c, a, tmp);
            int64_t from = lo > start ? lo : start, to = hi < end ? hi : end;
            memcpy(out + (from - start), tmp + (from - lo), (size_t)(to - from) * sizeof(float));
        }
        c += BATCH;
    }
}
