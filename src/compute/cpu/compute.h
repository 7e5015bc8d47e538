/* compute/cpu/compute.h: the CPU backend's operations on f32 activations.
 *
 * A compute_context owns the worker pool, the kernel tables chosen for this
 * CPU and per-thread scratch memory. The operations are what one transformer
 * layer needs: matrix products with weights in any computable GGUF type
 * (activations stay f32), RMS norm, rotary position embedding, activations,
 * (attention, which reads the KV cache through block tables, is in
 * compute/cpu/attention.h). Every
 * operation works on a batch of rows (tokens) at once; matrix products and
 * attention spread over the pool's threads. */
#ifndef STRATA_COMPUTE_CPU_COMPUTE_H
#define STRATA_COMPUTE_CPU_COMPUTE_H

#include <stdbool.h>
#include <stdint.h>

#include "base/threads.h"
#include "compute/cpu/vector.h"
#include "quant/kernels.h"
#include "quant/types.h"
#include "strata.h"

/* A weight matrix in its GGUF type: rows of cols values, row r at data + r * row_bytes. */
typedef struct weight_matrix {
    const void *data;
    tensor_type type;
    int64_t rows;
    int64_t cols;
    uint64_t row_bytes;
} weight_matrix;

typedef struct compute_context {
    thread_pool *pool;
    const quant_kernels *quant;
    const vector_kernels *vector;
    int thread_count;
    int64_t scratch_floats; /* per thread */
    float **scratch;        /* one buffer per thread */
} compute_context;

/* Creates a context with thread_count threads (0: one per core) and
 * scratch_floats floats of scratch per thread; matrix products with
 * several tokens need (PANEL_ROWS + 1) * cols floats of it. */
strata_status compute_context_create(int thread_count, int64_t scratch_floats,
                                     compute_context **out, strata_error *err);
/* Destroys a context; accepts NULL. */
void compute_context_destroy(compute_context *context);
/* Grows every thread's scratch to at least floats floats. */
strata_status compute_context_reserve(compute_context *context, int64_t floats, strata_error *err);

/* y[t][r] = sum_c w[r][c] * x[t][c] for t < tokens: y has w->rows columns. */
void compute_matmul(compute_context *context, const weight_matrix *w, const float *x, int64_t tokens,
                    float *y);
/* Dequantizes row `row` of w into out (w->cols floats). */
void compute_weight_row(const compute_context *context, const weight_matrix *w, int64_t row, float *out);

/* out[t] = x[t] / sqrt(mean(x[t]^2) + eps) * weight (weight may be NULL: no scale);
 * rows of n values, `rows` of them; out may equal x. */
void compute_rms_norm(const float *x, const float *weight, float *out, int64_t rows, int64_t n,
                      float eps);
/* x[i] += y[i] for n values. */
void compute_add(float *x, const float *y, int64_t n);
/* x[i] += bias[i % width] for n values (a bias added to every row). */
void compute_add_bias(float *x, const float *bias, int64_t n, int64_t width);

typedef enum rope_style {
    ROPE_NORM, /* rotate adjacent pairs (x[2i], x[2i+1]) */
    ROPE_NEOX, /* rotate (x[i], x[i + rotated/2]) */
} rope_style;

typedef struct rope_params {
    rope_style style;
    int64_t rotated_dims;       /* dimensions rotated per head; the rest pass through */
    float base;                 /* frequency base */
    float frequency_scale;      /* 1 / linear scaling factor */
    const float *frequency_factors; /* rotated_dims/2 divisors of the angle, or NULL */
} rope_params;

/* Rotates every head of every token: x is [tokens][heads * head_dim] with row
 * stride `stride`, token t at position positions[t]. */
void compute_rope(float *x, int64_t tokens, int64_t heads, int64_t head_dim, int64_t stride,
                  const int64_t *positions, const rope_params *params);

/* gate[i] = silu(gate[i]) * up[i]. */
void compute_silu_mul(const compute_context *context, float *gate, const float *up, int64_t n);
/* gate[i] = gelu_tanh(gate[i]) * up[i]. */
void compute_gelu_tanh_mul(const compute_context *context, float *gate, const float *up, int64_t n);
/* x[i] = cap * tanh(x[i] / cap). */
void compute_soft_cap(float *x, int64_t n, float cap);

#endif
