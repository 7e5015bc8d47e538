/* compute/cpu/vector_avx2.c: the f32 vector kernels with AVX2 and FMA
 * (8 floats per register). Tails shorter than a register run the scalar loop. */
#include <immintrin.h>

#include "compute/cpu/vector.h"

static float horizontal_sum(__m256 v)
{
    __m128 low = _mm256_castps256_ps128(v);
    __m128 high = _mm256_extractf128_ps(v, 1);
    __m128 sum = _mm_add_ps(low, high);
    sum = _mm_add_ps(sum, _mm_movehl_ps(sum, sum));
    sum = _mm_add_ss(sum, _mm_movehdup_ps(sum));
    return _mm_cvtss_f32(sum);
}

static float avx2_dot(const float *a, const float *b, int64_t n)
{
    __m256 sum0 = _mm256_setzero_ps(), sum1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        sum0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), sum0);
        sum1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), sum1);
    }
    for (; i + 8 <= n; i += 8)
        sum0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), sum0);
    float sum = horizontal_sum(_mm256_add_ps(sum0, sum1));
    for (; i < n; i++)
        sum += a[i] * b[i];
    return sum;
}

static void avx2_axpy(float *y, float a, const float *x, int64_t n)
{
    __m256 scale = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(scale, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++)
        y[i] += a * x[i];
}

static void avx2_dot_4x4(const float *w, int64_t w_stride, const float *x, int64_t x_stride,
                         int64_t k, float *y, int64_t y_stride)
{
    /* 4 weight rows x 2 token rows at a time keeps 8 accumulators plus the
     * 6 loaded vectors inside AVX2's 16 registers. */
    for (int t = 0; t < 4; t += 2) {
        __m256 acc[2][4];
        for (int i = 0; i < 2; i++)
            for (int r = 0; r < 4; r++)
                acc[i][r] = _mm256_setzero_ps();
        const float *x0 = x + t * x_stride, *x1 = x0 + x_stride;
        int64_t j = 0;
        for (; j + 8 <= k; j += 8) {
            __m256 xv0 = _mm256_loadu_ps(x0 + j), xv1 = _mm256_loadu_ps(x1 + j);
            for (int r = 0; r < 4; r++) {
                __m256 wv = _mm256_loadu_ps(w + r * w_stride + j);
                acc[0][r] = _mm256_fmadd_ps(wv, xv0, acc[0][r]);
                acc[1][r] = _mm256_fmadd_ps(wv, xv1, acc[1][r]);
            }
        }
        for (int i = 0; i < 2; i++)
            for (int r = 0; r < 4; r++) {
                float sum = horizontal_sum(acc[i][r]);
                const float *xi = i == 0 ? x0 : x1;
                for (int64_t tail = j; tail < k; tail++)
                    sum += w[r * w_stride + tail] * xi[tail];
                y[(t + i) * y_stride + r] = sum;
            }
    }
}

const vector_kernels vector_kernels_avx2 = {
    .level = SIMD_AVX2,
    .dot = avx2_dot,
    .axpy = avx2_axpy,
    .dot_4x4 = avx2_dot_4x4,
};
