/* compute/cpu/vector_avx512.c: the f32 vector kernels with AVX-512
 * (16 floats per register). Tails use masked loads, so any length works. */
#include <immintrin.h>

#include "compute/cpu/vector.h"

static __mmask16 tail_mask(int64_t remaining)
{
    return remaining >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << remaining) - 1u);
}

static float avx512_dot(const float *a, const float *b, int64_t n)
{
    __m512 sum0 = _mm512_setzero_ps(), sum1 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        sum0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), sum0);
        sum1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), sum1);
    }
    for (; i < n; i += 16) {
        __mmask16 mask = tail_mask(n - i);
        sum0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, a + i), _mm512_maskz_loadu_ps(mask, b + i), sum0);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(sum0, sum1));
}

static void avx512_axpy(float *y, float a, const float *x, int64_t n)
{
    __m512 scale = _mm512_set1_ps(a);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 mask = tail_mask(n - i);
        __m512 updated = _mm512_fmadd_ps(scale, _mm512_maskz_loadu_ps(mask, x + i),
                                         _mm512_maskz_loadu_ps(mask, y + i));
        _mm512_mask_storeu_ps(y + i, mask, updated);
    }
}

/* TOKENS tokens x 32 rows: 2 * TOKENS accumulators; per step two weight
 * loads and TOKENS broadcasts feed 2 * TOKENS FMAs. */
#define PANEL_KERNEL(TOKENS)                                                                         \
    static void panel_tokens_##TOKENS(const float *panel, int64_t k, const float *x, int64_t x_stride, \
                                      float *y, int64_t y_stride, __mmask16 mask0, __mmask16 mask1)    \
    {                                                                                                \
        __m512 acc0[TOKENS], acc1[TOKENS];                                                           \
        _Pragma("GCC unroll 8")                                                                     \
        for (int t = 0; t < TOKENS; t++)                                                             \
            acc0[t] = acc1[t] = _mm512_setzero_ps();                                                 \
        for (int64_t j = 0; j < k; j++) {                                                            \
            __m512 w0 = _mm512_loadu_ps(panel + j * PANEL_ROWS);                                     \
            __m512 w1 = _mm512_loadu_ps(panel + j * PANEL_ROWS + 16);                                \
            _Pragma("GCC unroll 8")                                                                 \
            for (int t = 0; t < TOKENS; t++) {                                                       \
                __m512 xv = _mm512_set1_ps(x[t * x_stride + j]);                                     \
                acc0[t] = _mm512_fmadd_ps(w0, xv, acc0[t]);                                          \
                acc1[t] = _mm512_fmadd_ps(w1, xv, acc1[t]);                                          \
            }                                                                                        \
        }                                                                                            \
        _Pragma("GCC unroll 8")                                                                     \
        for (int t = 0; t < TOKENS; t++) {                                                           \
            _mm512_mask_storeu_ps(y + t * y_stride, mask0, acc0[t]);                                 \
            _mm512_mask_storeu_ps(y + t * y_stride + 16, mask1, acc1[t]);                            \
        }                                                                                            \
    }
PANEL_KERNEL(1)
PANEL_KERNEL(2)
PANEL_KERNEL(3)
PANEL_KERNEL(4)
PANEL_KERNEL(5)
PANEL_KERNEL(6)
#undef PANEL_KERNEL

static void avx512_panel_multiply(const float *panel, int64_t k, const float *x, int64_t x_stride,
                                  int64_t tokens, float *y, int64_t y_stride, int64_t rows)
{
    __mmask16 mask0 = tail_mask(rows), mask1 = tail_mask(rows > 16 ? rows - 16 : 0);
    if (rows <= 16)
        mask1 = 0;
    int64_t t = 0;
    for (; t + 6 <= tokens; t += 6)
        panel_tokens_6(panel, k, x + t * x_stride, x_stride, y + t * y_stride, y_stride, mask0, mask1);
    switch (tokens - t) {
    case 5: panel_tokens_5(panel, k, x + t * x_stride, x_stride, y + t * y_stride, y_stride, mask0, mask1); break;
    case 4: panel_tokens_4(panel, k, x + t * x_stride, x_stride, y + t * y_stride, y_stride, mask0, mask1); break;
    case 3: panel_tokens_3(panel, k, x + t * x_stride, x_stride, y + t * y_stride, y_stride, mask0, mask1); break;
    case 2: panel_tokens_2(panel, k, x + t * x_stride, x_stride, y + t * y_stride, y_stride, mask0, mask1); break;
    case 1: panel_tokens_1(panel, k, x + t * x_stride, x_stride, y + t * y_stride, y_stride, mask0, mask1); break;
    default: break;
    }
}

/* exp(x) for x clamped to [-87, 88]: x = n ln2 + r with |r| <= ln2/2, e^r by
 * a degree-6 polynomial (relative error about 2e-7), 2^n by scalef. */
static __m512 exp_ps(__m512 x)
{
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.0f)), _mm512_set1_ps(88.0f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.0f / 720.0f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

static void avx512_gated_sigmoid(float *gate, const float *up, float scale, float cubic, int64_t n)
{
    __m512 scale_v = _mm512_set1_ps(scale), cubic_v = _mm512_set1_ps(cubic), one = _mm512_set1_ps(1.0f);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 mask = tail_mask(n - i);
        __m512 g = _mm512_maskz_loadu_ps(mask, gate + i);
        __m512 u = _mm512_maskz_loadu_ps(mask, up + i);
        __m512 g3 = _mm512_mul_ps(_mm512_mul_ps(g, g), g);
        __m512 z = _mm512_mul_ps(scale_v, _mm512_fmadd_ps(cubic_v, g3, g));
        __m512 e = exp_ps(_mm512_sub_ps(_mm512_setzero_ps(), z));
        __m512 result = _mm512_div_ps(_mm512_mul_ps(g, u), _mm512_add_ps(one, e));
        _mm512_mask_storeu_ps(gate + i, mask, result);
    }
}

const vector_kernels vector_kernels_avx512 = {
    .level = SIMD_AVX512,
    .dot = avx512_dot,
    .axpy = avx512_axpy,
    .panel_multiply = avx512_panel_multiply,
    .gated_sigmoid = avx512_gated_sigmoid,
};
