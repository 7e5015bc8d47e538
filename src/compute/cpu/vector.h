/* compute/cpu/vector.h: f32 vector kernels the forward pass is built from.
 *
 * A small table of function pointers per SIMD level, like quant/kernels.h:
 * the scalar versions in vector.c are the specification, the AVX2 and
 * AVX-512 versions beside them must agree (tests/compute/test_vector.c).
 *   dot(a, b, n)                    sum a[i] * b[i]
 *   axpy(y, a, x, n)                y[i] += a * x[i]
 *   panel_multiply(panel, k, x, xs, tokens, y, ys, rows)
 *                                   y[t*ys + r] = sum_j panel[j*PANEL_ROWS + r] * x[t*xs + j]
 *                                   for t < tokens, r < rows (<= PANEL_ROWS): the core of
 *                                   matrix-matrix products. The panel holds PANEL_ROWS weight
 *                                   rows transposed (column j of the panel is contiguous), so
 *                                   each step loads weights as vectors and broadcasts one
 *                                   activation per token: no horizontal sums.
 *   gated_sigmoid(gate, up, scale, cubic, n)
 *                                   gate[i] = g * up[i] / (1 + exp(-z)), g = gate[i],
 *                                   z = scale * (g + cubic * g^3): with scale 1 and cubic 0
 *                                   this is SiLU(g) * up; with scale 2*sqrt(2/pi) and cubic
 *                                   0.044715 it is GELU-tanh(g) * up, since
 *                                   0.5 * (1 + tanh(u)) = 1 / (1 + exp(-2u)). */
#ifndef STRATA_COMPUTE_CPU_VECTOR_H
#define STRATA_COMPUTE_CPU_VECTOR_H

#include <stdint.h>

#include "base/cpu_features.h"

enum { PANEL_ROWS = 32 };

typedef struct vector_kernels {
    simd_level level;
    float (*dot)(const float *a, const float *b, int64_t n);
    void (*axpy)(float *y, float a, const float *x, int64_t n);
    void (*panel_multiply)(const float *panel, int64_t k, const float *x, int64_t x_stride, int64_t tokens,
                           float *y, int64_t y_stride, int64_t rows);
    void (*gated_sigmoid)(float *gate, const float *up, float scale, float cubic, int64_t n);
} vector_kernels;

/* Returns the vector kernels of one SIMD level, or NULL if it is not built in. */
const vector_kernels *vector_kernels_for_level(simd_level level);
/* Returns the kernels for cpu_simd_level_selected() (cached). */
const vector_kernels *vector_kernels_selected(void);

/* The per-level tables, defined in vector.c, vector_avx2.c and vector_avx512.c. */
extern const vector_kernels vector_kernels_scalar;
extern const vector_kernels vector_kernels_avx2;
extern const vector_kernels vector_kernels_avx512;

#endif
