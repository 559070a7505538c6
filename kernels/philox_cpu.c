/* Philox4x32-10 and the float32 transforms of philox.py, as one C loop for the CPU.
 *
 * The float arithmetic mirrors philox.py operation by operation (the same constants,
 * rounded to float32 from the same doubles, the same order of operations, no fused
 * multiply-adds: built with -ffp-contract=off), so the values are bit for bit those
 * of the torch-ops path; tests/test_kernels.py and tests/test_kernels_native.py check
 * it. Built and loaded by native.py.
 *
 * The scalar functions below make the portable loop; with AVX2 the whole fill is the
 * fused vector loop further down, which repeats them with intrinsics.
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

/* float32 sqrt is correctly rounded (IEEE 754), and so is philox.py's route through
 * float64: a double holds more than 2 * 24 + 2 bits, so rounding the double root to float
 * cannot round twice (tests/test_kernels_native.py checks two whole binades and every
 * subnormal). sqrtf is one instruction with -fno-math-errno, and vectorizes at full width. */
static inline float sqrt_f32(float x) { return sqrtf(x); }

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

#ifdef __AVX2__
/* With AVX2: GROUP blocks of eight counters at a time, from Philox to the stored values in
 * registers (one pass over the output, no intermediate arrays). The transforms are the
 * scalar ones above written with intrinsics, operation for operation.
 *
 * Every step of a polynomial waits for the one before (a multiply and an add: ~6 cycles),
 * and keeping the bits rules out reordering the evaluation, so speed comes from many
 * independent vectors in flight: each function below works on n vectors, one statement
 * at a time across all of them (EACH), which the compiler unrolls into interleaved code.
 * Looping over the vectors one after another instead ran at the polynomials' latency. */
#define GROUP 2               /* blocks of eight counters per batch */
#define BATCH (8 * GROUP)     /* counters per batch */
#define EACH(j, n) _Pragma("GCC unroll 16") for (int j = 0; j < (n); j++)
#define AI inline __attribute__((always_inline))

#define V(x) _mm256_set1_ps(F(x))
#define ADD _mm256_add_ps
#define SUB _mm256_sub_ps
#define MUL _mm256_mul_ps

/* Philox4x32-10 of GROUP blocks of eight counters, ctr[2 b] and ctr[2 b + 1] for block b.
 * A counter sits in a 64-bit lane, so one vpmuludq gives the whole 32x32->64-bit product
 * (the high word by a shift, the low word in place). The upper halves of the lanes fill
 * with junk along the way; vpmuludq reads only the lower ones, and only those are kept.
 * ctr[2 b] holds counters 0, 4, 1, 5 of the block and ctr[2 b + 1] counters 2, 6, 3, 7, so
 * word j, w[4 b + j], comes out in lane order 0 2 4 6 1 3 5 7: the order in which the
 * in-lane transpose of store_block puts two whole counters in each 256-bit store. */
static AI void philox_group(const __m256i ctr[2 * GROUP], const __m256i keys[10][2],
                            __m256i w[4 * GROUP]) {
    const __m256i mul_a = _mm256_set1_epi64x(ROUND_A), mul_b = _mm256_set1_epi64x(ROUND_B);
    __m256i x0[2 * GROUP], x1[2 * GROUP], x2[2 * GROUP], x3[2 * GROUP];
    EACH(c, 2 * GROUP) {
        x0[c] = ctr[c];
        x1[c] = _mm256_srli_epi64(ctr[c], 32);
        x2[c] = x3[c] = _mm256_setzero_si256();
    }
#pragma GCC unroll 10
    for (int round = 0; round < 10; round++) {
        EACH(c, 2 * GROUP) {
            __m256i pa = _mm256_mul_epu32(x0[c], mul_a), pb = _mm256_mul_epu32(x2[c], mul_b);
            x0[c] = _mm256_xor_si256(_mm256_xor_si256(_mm256_srli_epi64(pb, 32), x1[c]),
                                     keys[round][0]);
            x2[c] = _mm256_xor_si256(_mm256_xor_si256(_mm256_srli_epi64(pa, 32), x3[c]),
                                     keys[round][1]);
            x1[c] = pb;
            x3[c] = pa;
        }
    }
    EACH(b, GROUP) {
        w[4 * b] = _mm256_blend_epi32(x0[2 * b], _mm256_slli_epi64(x0[2 * b + 1], 32), 0xAA);
        w[4 * b + 1] = _mm256_blend_epi32(x1[2 * b], _mm256_slli_epi64(x1[2 * b + 1], 32), 0xAA);
        w[4 * b + 2] = _mm256_blend_epi32(x2[2 * b], _mm256_slli_epi64(x2[2 * b + 1], 32), 0xAA);
        w[4 * b + 3] = _mm256_blend_epi32(x3[2 * b], _mm256_slli_epi64(x3[2 * b + 1], 32), 0xAA);
    }
}

static AI __m256 u24_8(__m256i x) { /* x >> 8 < 2**24: the int conversion is exact */
    return MUL(_mm256_cvtepi32_ps(_mm256_srli_epi32(x, 8)), V(5.9604644775390625e-08));
}

/* min/max with the bound first: vminps(a, b) is a < b ? a : b, the ternaries of clamp_max
 * and clamp_min (which keep x when x == bound, signed zeros included). */
static AI __m256 clamp_max_8(__m256 x, __m256 hi) { return _mm256_min_ps(hi, x); }
static AI __m256 clamp_min_8(__m256 x, __m256 lo) { return _mm256_max_ps(lo, x); }

/* One Horner step, p = p * x + c, for each of n vectors (HORNER_R: c + p * x, written
 * in erfinv_f32's order). */
#define HORNER(n, p, x, c) EACH(j_, n) p[j_] = ADD(MUL(p[j_], x[j_]), V(c))
#define HORNER_R(n, p, x, c) EACH(j_, n) p[j_] = ADD(V(c), MUL(p[j_], x[j_]))

static AI void log_n(int n, const __m256 *x, __m256 *out) { /* log_f32 of n vectors */
    __m256 f[4 * GROUP], ef[4 * GROUP], z[4 * GROUP], p[4 * GROUP];
    EACH(j, n) {
        __m256i bits = _mm256_castps_si256(x[j]);
        __m256 m = _mm256_castsi256_ps(_mm256_or_si256(
            _mm256_and_si256(bits, _mm256_set1_epi32(0x7FFFFF)), _mm256_set1_epi32(0x3F000000)));
        __m256 low = _mm256_cmp_ps(m, V(0.70710677), _CMP_LT_OQ);
        f[j] = SUB(_mm256_blendv_ps(m, ADD(m, m), low), V(1.0));
        /* e + 1 - low, with low as the all-ones mask (-1) */
        ef[j] = _mm256_cvtepi32_ps(_mm256_add_epi32(
            _mm256_sub_epi32(_mm256_srai_epi32(bits, 23), _mm256_set1_epi32(126)),
            _mm256_castps_si256(low)));
        z[j] = MUL(f[j], f[j]);
        p[j] = V(7.0376836292e-2);
    }
    HORNER(n, p, f, -1.1514610310e-1);
    HORNER(n, p, f, 1.1676998740e-1);
    HORNER(n, p, f, -1.2420140846e-1);
    HORNER(n, p, f, 1.4249322787e-1);
    HORNER(n, p, f, -1.6668057665e-1);
    HORNER(n, p, f, 2.0000714765e-1);
    HORNER(n, p, f, -2.4999993993e-1);
    HORNER(n, p, f, 3.3333331174e-1);
    EACH(j, n) {
        __m256 y = SUB(ADD(MUL(MUL(f[j], z[j]), p[j]), MUL(ef[j], V(-2.12194440e-4))),
                       MUL(V(0.5), z[j]));
        out[j] = ADD(ADD(f[j], y), MUL(ef[j], V(0.693359375)));
    }
}

static AI void sincos_n(int n, const __m256 *t, __m256 *sin_out, __m256 *cos_out) {
    EACH(j, n) { /* sincos_f32 */
        __m256 q = SUB(ADD(MUL(t[j], V(0.63661975)), V(12582912.0)), V(12582912.0));
        __m256 r = SUB(SUB(SUB(t[j], MUL(q, V(1.5703125))), MUL(q, V(4.837512969970703125e-4))),
                       MUL(q, V(7.549789948768648e-8)));
        __m256 z = MUL(r, r);
        __m256 s = ADD(MUL(MUL(SUB(MUL(ADD(MUL(V(-1.9515295891e-4), z), V(8.3321608736e-3)), z),
                                   V(1.6666654611e-1)), z), r), r);
        __m256 c = ADD(SUB(MUL(MUL(ADD(MUL(SUB(MUL(V(2.443315711809948e-5), z),
                                                   V(1.388731625493765e-3)), z),
                                       V(4.166664568298827e-2)), z), z), MUL(V(0.5), z)),
                       V(1.0));
        __m256i k = _mm256_cvttps_epi32(q); /* q is a whole number: exact */
        __m256 odd = _mm256_castsi256_ps(_mm256_cmpeq_epi32(
            _mm256_and_si256(k, _mm256_set1_epi32(1)), _mm256_set1_epi32(1)));
        __m256 sn = _mm256_blendv_ps(s, c, odd), cs = _mm256_blendv_ps(c, s, odd);
        /* bit 1 of k (of k + 1) moved to the sign bit: the negations, as sign flips */
        __m256i two = _mm256_set1_epi32(2);
        sin_out[j] = _mm256_xor_ps(sn, _mm256_castsi256_ps(
            _mm256_slli_epi32(_mm256_and_si256(k, two), 30)));
        cos_out[j] = _mm256_xor_ps(cs, _mm256_castsi256_ps(_mm256_slli_epi32(
            _mm256_and_si256(_mm256_add_epi32(k, _mm256_set1_epi32(1)), two), 30)));
    }
}

static AI void erfinv_n(int n, const __m256 *x, const __m256 *one_minus_x2, __m256 *out) {
    __m256 w[4 * GROUP], c[4 * GROUP], p[4 * GROUP], central[4 * GROUP];
    log_n(n, one_minus_x2, w);
    int all_central = 0xFF;
    EACH(j, n) {
        w[j] = _mm256_xor_ps(w[j], _mm256_set1_ps(-0.0f)); /* -log, as a sign flip */
        c[j] = SUB(w[j], V(2.5));
        p[j] = V(2.81022636e-08);
        central[j] = _mm256_cmp_ps(w[j], V(5.0), _CMP_LT_OQ);
        all_central &= _mm256_movemask_ps(central[j]);
    }
    HORNER_R(n, p, c, 3.43273939e-07);
    HORNER_R(n, p, c, -3.5233877e-06);
    HORNER_R(n, p, c, -4.39150654e-06);
    HORNER_R(n, p, c, 0.00021858087);
    HORNER_R(n, p, c, -0.00125372503);
    HORNER_R(n, p, c, -0.00417768164);
    HORNER_R(n, p, c, 0.246640727);
    HORNER_R(n, p, c, 1.50140941);
    /* The tail polynomial (and its square root) only when a lane needs it: where every
     * lane has w < 5 (|x| < 0.9966: all draws of a truncation within +-2.9 std) the
     * chosen value is p in each, and the bits are the same without it. */
    if (all_central == 0xFF) {
        EACH(j, n) out[j] = MUL(p[j], x[j]);
        return;
    }
    __m256 t[4 * GROUP], q[4 * GROUP];
    EACH(j, n) {
        t[j] = SUB(_mm256_sqrt_ps(w[j]), V(3.0));
        q[j] = V(-0.000200214257);
    }
    HORNER_R(n, q, t, 0.000100950558);
    HORNER_R(n, q, t, 0.00134934322);
    HORNER_R(n, q, t, -0.00367342844);
    HORNER_R(n, q, t, 0.00573950773);
    HORNER_R(n, q, t, -0.0076224613);
    HORNER_R(n, q, t, 0.00943887047);
    HORNER_R(n, q, t, 1.00167406);
    HORNER_R(n, q, t, 2.83297682);
    EACH(j, n) out[j] = MUL(_mm256_blendv_ps(q[j], p[j], central[j]), x[j]);
}

/* The four values of each counter side by side: y[j] holds word j's values in the lane
 * order of philox_group, so in-lane unpacks and shuffles make each 256-bit half one
 * counter's four values, and each store two consecutive counters. Streaming stores skip
 * reading the output's cache lines before writing them (out must then be 32-byte aligned). */
static AI void store_block(const __m256 y[4], float *out, int stream) {
    __m256 t0 = _mm256_unpacklo_ps(y[0], y[1]), t1 = _mm256_unpackhi_ps(y[0], y[1]);
    __m256 t2 = _mm256_unpacklo_ps(y[2], y[3]), t3 = _mm256_unpackhi_ps(y[2], y[3]);
    __m256 v[4] = {_mm256_shuffle_ps(t0, t2, 0x44), _mm256_shuffle_ps(t0, t2, 0xEE),
                   _mm256_shuffle_ps(t1, t3, 0x44), _mm256_shuffle_ps(t1, t3, 0xEE)};
    if (stream) {
        EACH(i, 4) _mm256_stream_ps(out + 8 * i, v[i]);
    } else {
        EACH(i, 4) _mm256_storeu_ps(out + 8 * i, v[i]);
    }
}

/* `batches` batches of BATCH counters from `first` into out; kind is a constant where
 * this is inlined, so each kind gets a loop of its own with its constants hoisted. */
static AI void run_kind(int kind, uint32_t k0, uint32_t k1, uint64_t first, int64_t batches,
                        const float *a, float *out, int stream) {
    __m256i keys[10][2];
    for (int round = 0; round < 10; round++) {
        keys[round][0] = _mm256_set1_epi32((int)(k0 + (uint32_t)round * KEY_A));
        keys[round][1] = _mm256_set1_epi32((int)(k1 + (uint32_t)round * KEY_B));
    }
    __m256i ctr[2 * GROUP];
    EACH(b, GROUP) {
        __m256i base = _mm256_set1_epi64x((long long)(first + 8 * (uint64_t)b));
        ctr[2 * b] = _mm256_add_epi64(base, _mm256_set_epi64x(5, 1, 4, 0));
        ctr[2 * b + 1] = _mm256_add_epi64(base, _mm256_set_epi64x(7, 3, 6, 2));
    }
    const __m256i step = _mm256_set1_epi64x(BATCH);
    const __m256 a0 = _mm256_set1_ps(a[0]), a1 = _mm256_set1_ps(a[1]), a2 = _mm256_set1_ps(a[2]),
                 a3 = _mm256_set1_ps(a[3]), a4 = _mm256_set1_ps(a[4]), a5 = _mm256_set1_ps(a[5]),
                 a6 = _mm256_set1_ps(a[6]), a7 = _mm256_set1_ps(a[7]);
    for (int64_t i = 0; i < batches; i++, out += 4 * BATCH) {
        __m256i w[4 * GROUP];
        __m256 y[4 * GROUP];
        philox_group(ctr, (const __m256i(*)[2])keys, w);
        EACH(c, 2 * GROUP) ctr[c] = _mm256_add_epi64(ctr[c], step);
        if (kind == 1) { /* uniform: (low, high - low, largest value < high) */
            EACH(j, 4 * GROUP) y[j] = clamp_max_8(ADD(MUL(u24_8(w[j]), a1), a0), a2);
        } else if (kind == 2) { /* normal: Box-Muller on (x0, x1) and (x2, x3): pairs 2k, 2k + 1 */
            __m256 u1[2 * GROUP], lg[2 * GROUP], theta[2 * GROUP], sn[2 * GROUP], cs[2 * GROUP];
            EACH(k, 2 * GROUP) {
                u1[k] = ADD(u24_8(w[2 * k]), V(5.9604644775390625e-08));
                theta[k] = MUL(u24_8(w[2 * k + 1]), V(6.2831855));
            }
            log_n(2 * GROUP, u1, lg);
            sincos_n(2 * GROUP, theta, sn, cs);
            EACH(k, 2 * GROUP) {
                __m256 r = _mm256_sqrt_ps(MUL(V(-2.0), lg[k]));
                y[2 * k] = ADD(MUL(MUL(r, cs[k]), a1), a0);
                y[2 * k + 1] = ADD(MUL(MUL(r, sn[k]), a1), a0);
            }
        } else { /* truncated normal: (mean, std sqrt 2, e_a, span, c_a, c_b, lo, hi) */
            __m256 t[4 * GROUP], omx2[4 * GROUP], z[4 * GROUP];
            EACH(j, 4 * GROUP) {
                __m256 u = MUL(ADD(_mm256_cvtepi32_ps(_mm256_srli_epi32(w[j], 8)), V(0.5)),
                               V(5.9604644775390625e-08));
                t[j] = ADD(MUL(a3, u), a2);
                __m256 one_minus = ADD(MUL(a3, SUB(V(1.0), u)), a5);
                __m256 one_plus = ADD(MUL(a3, u), a4);
                omx2[j] = MUL(one_minus, one_plus);
            }
            erfinv_n(4 * GROUP, t, omx2, z);
            EACH(j, 4 * GROUP) y[j] = clamp_max_8(clamp_min_8(ADD(MUL(z[j], a1), a0), a6), a7);
        }
        EACH(b, GROUP) store_block(&y[4 * b], out + 32 * b, stream);
    }
}

static void run(int kind, uint32_t k0, uint32_t k1, uint64_t first, int64_t batches,
                const float *a, float *out, int stream) {
    stream = stream && ((uintptr_t)out & 31) == 0; /* every batch then starts aligned too */
    if (kind == 1)
        run_kind(1, k0, k1, first, batches, a, out, stream);
    else if (kind == 2)
        run_kind(2, k0, k1, first, batches, a, out, stream);
    else
        run_kind(3, k0, k1, first, batches, a, out, stream);
    if (stream)
        _mm_sfence(); /* streamed stores are weakly ordered: make them visible */
}

static void sqrt_n(const float *x, float *out, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(out + i, _mm256_sqrt_ps(_mm256_loadu_ps(x + i)));
    for (; i < n; i++)
        out[i] = sqrt_f32(x[i]);
}
#else
/* Without AVX2: Philox into arrays, then each transform as a simple loop over the batch,
 * which the compiler vectorizes at whatever width the target has. */
#define BATCH 64

/* Philox4x32-10 of counters first .. first + BATCH - 1: word j of counter i into x[j][i]. */
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

static void run(int kind, uint32_t k0, uint32_t k1, uint64_t first, int64_t batches,
                const float *a, float *out, int stream) {
    (void)stream; /* plain stores: streaming ones are not portable C */
    for (int64_t b = 0; b < batches; b++)
        batch(kind, k0, k1, first + (uint64_t)(b * BATCH), a, out + b * 4 * BATCH);
}

static void sqrt_n(const float *x, float *out, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        out[i] = sqrt_f32(x[i]);
}
#endif

/* Outputs of at least this many elements (4 MB, more than a core's L2 cache on common
 * CPUs) are written with streaming stores, where there are any: so large a fill pushes
 * out of the near caches what it wrote first anyway, and skipping the read of each line
 * before it is written saves memory traffic (measured: a few percent, within the noise of
 * a loaded machine). */
#define STREAM_MIN_NUMEL (1 << 20)

/* Elements start .. start + n - 1 of the stream key into out[0 .. n - 1]: the batches wholly
 * inside straight into out, the partial ones at either end through a buffer. */
void fengine_philox_fill_f32(float *out, int64_t start, int64_t n, int kind, uint64_t key,
                             const float *a) {
    uint32_t k0 = (uint32_t)key, k1 = (uint32_t)(key >> 32);
    float tmp[4 * BATCH];
    int64_t end = start + n;
    int64_t c = start / 4; /* the counter of the first element */
    while (4 * c < end) {
        int64_t lo = 4 * c, hi = lo + 4 * BATCH; /* this batch's elements */
        if (lo >= start && hi <= end) {
            int64_t batches = (end - lo) / (4 * BATCH);
            run(kind, k0, k1, (uint64_t)c, batches, a, out + (lo - start),
                n >= STREAM_MIN_NUMEL);
            c += batches * BATCH;
        } else {
            run(kind, k0, k1, (uint64_t)c, 1, a, tmp, 0);
            int64_t from = lo > start ? lo : start, to = hi < end ? hi : end;
            memcpy(out + (from - start), tmp + (from - lo), (size_t)(to - from) * sizeof(float));
            c += BATCH;
        }
    }
}

/* The square root the fill uses, for n floats: exported so that tests can hold it against
 * philox.py's float64 route. */
void fengine_philox_sqrt_f32(const float *x, float *out, int64_t n) { sqrt_n(x, out, n); }
