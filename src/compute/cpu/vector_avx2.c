/* compute/cpu/vector_avx2.c: the f32 vector kernels with AVX2 and FMA
 * (8 floats per register). Tails shorter than a register run the scalar loop. */
#include <immintrin.h>
#include <stdbool.h>

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

/* TOKENS tokens x 16 rows of the panel at a time (two 8-float registers). */
#define PANEL_KERNEL(TOKENS)                                                                         \
    static void panel_tokens_##TOKENS(const float *panel, int64_t k, const float *x, int64_t x_stride, \
                                      float *y, int64_t y_stride)                                    \
    {                                                                                                \
        __m256 acc0[TOKENS], acc1[TOKENS];                                                           \
        _Pragma("GCC unroll 8")                                                                     \
        for (int t = 0; t < TOKENS; t++)                                                             \
            acc0[t] = acc1[t] = _mm256_setzero_ps();                                                 \
        for (int64_t j = 0; j < k; j++) {                                                            \
            __m256 w0 = _mm256_loadu_ps(panel + j * PANEL_ROWS);                                     \
            __m256 w1 = _mm256_loadu_ps(panel + j * PANEL_ROWS + 8);                                 \
            _Pragma("GCC unroll 8")                                                                 \
            for (int t = 0; t < TOKENS; t++) {                                                       \
                __m256 xv = _mm256_broadcast_ss(x + t * x_stride + j);                               \
                acc0[t] = _mm256_fmadd_ps(w0, xv, acc0[t]);                                          \
                acc1[t] = _mm256_fmadd_ps(w1, xv, acc1[t]);                                          \
            }                                                                                        \
        }                                                                                            \
        _Pragma("GCC unroll 8")                                                                     \
        for (int t = 0; t < TOKENS; t++) {                                                           \
            _mm256_storeu_ps(y + t * y_stride, acc0[t]);                                             \
            _mm256_storeu_ps(y + t * y_stride + 8, acc1[t]);                                         \
        }                                                                                            \
    }
PANEL_KERNEL(1)
PANEL_KERNEL(2)
PANEL_KERNEL(3)
PANEL_KERNEL(4)
PANEL_KERNEL(5)
PANEL_KERNEL(6)
#undef PANEL_KERNEL

static void avx2_panel_multiply(const float *panel, int64_t k, const float *x, int64_t x_stride,
                                int64_t tokens, float *y, int64_t y_stride, int64_t rows)
{
    /* Full 16-row halves go straight to y; a partial half goes through a
     * buffer so no store lands past `rows`. */
    float buffer[6 * 16];
    for (int64_t half = 0; half * 16 < rows; half++) {
        const float *half_panel = panel + half * 16;
        int64_t valid = rows - half * 16 < 16 ? rows - half * 16 : 16;
        for (int64_t t = 0; t < tokens; t += 6) {
            int64_t count = tokens - t < 6 ? tokens - t : 6;
            bool direct = valid == 16;
            float *out = direct ? y + t * y_stride + half * 16 : buffer;
            int64_t out_stride = direct ? y_stride : 16;
            const float *xt = x + t * x_stride;
            switch (count) {
            case 6: panel_tokens_6(half_panel, k, xt, x_stride, out, out_stride); break;
            case 5: panel_tokens_5(half_panel, k, xt, x_stride, out, out_stride); break;
            case 4: panel_tokens_4(half_panel, k, xt, x_stride, out, out_stride); break;
            case 3: panel_tokens_3(half_panel, k, xt, x_stride, out, out_stride); break;
            case 2: panel_tokens_2(half_panel, k, xt, x_stride, out, out_stride); break;
            default: panel_tokens_1(half_panel, k, xt, x_stride, out, out_stride); break;
            }
            if (!direct)
                for (int64_t i = 0; i < count; i++)
                    for (int64_t r = 0; r < valid; r++)
                        y[(t + i) * y_stride + half * 16 + r] = buffer[i * 16 + r];
        }
    }
}

/* exp(x) for x clamped to [-87, 88]: x = n ln2 + r, e^r by a degree-6
 * polynomial, 2^n built in the exponent bits. */
static __m256 exp_ps(__m256 x)
{
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.0f / 720.0f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    __m256i exponent = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(exponent));
}

static void avx2_gated_sigmoid(float *gate, const float *up, float scale, float cubic, int64_t n)
{
    __m256 scale_v = _mm256_set1_ps(scale), cubic_v = _mm256_set1_ps(cubic), one = _mm256_set1_ps(1.0f);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 g = _mm256_loadu_ps(gate + i), u = _mm256_loadu_ps(up + i);
        __m256 g3 = _mm256_mul_ps(_mm256_mul_ps(g, g), g);
        __m256 z = _mm256_mul_ps(scale_v, _mm256_fmadd_ps(cubic_v, g3, g));
        __m256 e = exp_ps(_mm256_sub_ps(_mm256_setzero_ps(), z));
        _mm256_storeu_ps(gate + i, _mm256_div_ps(_mm256_mul_ps(g, u), _mm256_add_ps(one, e)));
    }
    vector_kernels_scalar.gated_sigmoid(gate + i, up + i, scale, cubic, n - i);
}

const vector_kernels vector_kernels_avx2 = {
    .level = SIMD_AVX2,
    .dot = avx2_dot,
    .axpy = avx2_axpy,
    .panel_multiply = avx2_panel_multiply,
    .gated_sigmoid = avx2_gated_sigmoid,
};
