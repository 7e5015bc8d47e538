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

static void avx512_dot_4x4(const float *w, int64_t w_stride, const float *x, int64_t x_stride,
                           int64_t k, float *y, int64_t y_stride)
{
    __m512 acc[4][4];
    for (int t = 0; t < 4; t++)
        for (int r = 0; r < 4; r++)
            acc[t][r] = _mm512_setzero_ps();
    for (int64_t j = 0; j < k; j += 16) {
        __mmask16 mask = tail_mask(k - j);
        __m512 wv[4];
        for (int r = 0; r < 4; r++)
            wv[r] = _mm512_maskz_loadu_ps(mask, w + r * w_stride + j);
        for (int t = 0; t < 4; t++) {
            __m512 xv = _mm512_maskz_loadu_ps(mask, x + t * x_stride + j);
            for (int r = 0; r < 4; r++)
                acc[t][r] = _mm512_fmadd_ps(wv[r], xv, acc[t][r]);
        }
    }
    for (int t = 0; t < 4; t++)
        for (int r = 0; r < 4; r++)
            y[t * y_stride + r] = _mm512_reduce_add_ps(acc[t][r]);
}

const vector_kernels vector_kernels_avx512 = {
    .level = SIMD_AVX512,
    .dot = avx512_dot,
    .axpy = avx512_axpy,
    .dot_4x4 = avx512_dot_4x4,
};
