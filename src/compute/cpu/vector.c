/* compute/cpu/vector.c: the scalar f32 vector kernels (the specification) and
 * the choice of SIMD level. */
#include "compute/cpu/vector.h"

#include <math.h>
#include <stddef.h>

static float scalar_dot(const float *a, const float *b, int64_t n)
{
    float sum = 0.0f;
    for (int64_t i = 0; i < n; i++)
        sum += a[i] * b[i];
    return sum;
}

static void scalar_axpy(float *y, float a, const float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] += a * x[i];
}

static void scalar_panel_multiply(const float *panel, int64_t k, const float *x, int64_t x_stride,
                                  int64_t tokens, float *y, int64_t y_stride, int64_t rows)
{
    for (int64_t t = 0; t < tokens; t++)
        for (int64_t r = 0; r < rows; r++) {
            float sum = 0.0f;
            for (int64_t j = 0; j < k; j++)
                sum += panel[j * PANEL_ROWS + r] * x[t * x_stride + j];
            y[t * y_stride + r] = sum;
        }
}

static void scalar_gated_sigmoid(float *gate, const float *up, float scale, float cubic, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        float g = gate[i];
        float z = scale * (g + cubic * g * g * g);
        gate[i] = g * up[i] / (1.0f + expf(-z));
    }
}

const vector_kernels vector_kernels_scalar = {
    .level = SIMD_SCALAR,
    .dot = scalar_dot,
    .axpy = scalar_axpy,
    .panel_multiply = scalar_panel_multiply,
    .gated_sigmoid = scalar_gated_sigmoid,
};

const vector_kernels *vector_kernels_for_level(simd_level level)
{
    switch (level) {
    case SIMD_SCALAR: return &vector_kernels_scalar;
    case SIMD_AVX2: return &vector_kernels_avx2;
    case SIMD_AVX512: return &vector_kernels_avx512;
    }
    return NULL;
}

const vector_kernels *vector_kernels_selected(void)
{
    static const vector_kernels *selected;
    if (selected == NULL)
        selected = vector_kernels_for_level(cpu_simd_level_selected());
    return selected;
}
