/* compute/cpu/compute.c: the CPU operations of a transformer layer.
 *
 * Matrix products are the hot path. With few tokens (decode) every weight
 * row is dotted with the activations straight from its packed form (quant
 * dot kernels), so each weight byte is read once. With many tokens (prefill)
 * each thread dequantizes a panel of PANEL_ROWS weight rows into f32
 * scratch, transposed so that each input column of the panel is one vector,
 * and multiplies it with every token (vector_kernels.panel_multiply): the
 * dequantization cost is shared by all tokens and the inner loop is pure
 * FMAs on registers. Both paths split the weight
 * rows between threads, so every output element is computed by exactly one
 * thread in a fixed order: results do not depend on the thread count. */
#include "compute/cpu/compute.h"

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"

strata_status compute_context_create(int thread_count, int64_t scratch_floats,
                                     compute_context **out, strata_error *err)
{
    *out = NULL;
    if (thread_count <= 0)
        thread_count = thread_count_available();
    compute_context *context = calloc(1, sizeof *context);
    if (context == NULL)
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "cannot allocate a compute context");
    context->thread_count = thread_count;
    context->quant = quant_kernels_selected();
    context->vector = vector_kernels_selected();
    context->scratch = calloc((size_t)thread_count, sizeof *context->scratch);
    strata_status status = context->scratch == NULL
        ? strata_fail(err, STRATA_E_OUT_OF_MEMORY, "cannot allocate scratch pointers")
        : thread_pool_create(thread_count, &context->pool, err);
    if (status == STRATA_OK)
        status = compute_context_reserve(context, scratch_floats, err);
    if (status != STRATA_OK) {
        compute_context_destroy(context);
        return status;
    }
    *out = context;
    return STRATA_OK;
}

void compute_context_destroy(compute_context *context)
{
    if (context == NULL)
        return;
    thread_pool_destroy(context->pool);
    if (context->scratch != NULL)
        for (int i = 0; i < context->thread_count; i++)
            free(context->scratch[i]);
    free(context->scratch);
    free(context);
}

strata_status compute_context_reserve(compute_context *context, int64_t floats, strata_error *err)
{
    if (floats <= context->scratch_floats)
        return STRATA_OK;
    for (int i = 0; i < context->thread_count; i++) {
        float *grown = realloc(context->scratch[i], (size_t)floats * sizeof(float));
        if (grown == NULL)
            return strata_fail(err, STRATA_E_OUT_OF_MEMORY,
                               "cannot allocate %lld floats of scratch for thread %d",
                               (long long)floats, i);
        context->scratch[i] = grown;
    }
    context->scratch_floats = floats;
    return STRATA_OK;
}

void compute_weight_row(const compute_context *context, const weight_matrix *w, int64_t row, float *out)
{
    const uint8_t *bytes = (const uint8_t *)w->data + (uint64_t)row * w->row_bytes;
    context->quant->dequantize[w->type](bytes, out, w->cols);
}

/* Below PANEL_MIN_TOKENS (decode, batched decode, short appends) each row is
 * dotted with the tokens straight from its packed form, the row staying in
 * L1 between tokens. From PANEL_MIN_TOKENS on (prefill), transposed panels
 * feed the broadcast-FMA kernel; packing a panel (a transposing scatter of
 * PANEL_ROWS rows) costs more than it saves for fewer tokens. */
enum { PANEL_MIN_TOKENS = 64 };

typedef struct matmul_job {
    compute_context *context;
    const weight_matrix *w;
    const float *x;
    int64_t tokens;
    float *y;
} matmul_job;

/* One token or a few: dot every row straight from its packed form. */
static void matmul_rows_direct(const matmul_job *job, int64_t row_begin, int64_t row_end)
{
    const weight_matrix *w = job->w;
    quant_dot_fn dot = job->context->quant->dot[w->type];
    quant_dot_multi_fn dot_multi = job->context->quant->dot_multi[w->type];
    if (job->tokens == 1 || dot_multi == NULL) {
        for (int64_t r = row_begin; r < row_end; r++) {
            const uint8_t *row = (const uint8_t *)w->data + (uint64_t)r * w->row_bytes;
            for (int64_t t = 0; t < job->tokens; t++)
                job->y[t * w->rows + r] = dot(row, job->x + t * w->cols, w->cols);
        }
        return;
    }
    /* Several tokens (batched decode): each block of a row is decoded once
     * for up to QUANT_DOT_MULTI_MAX of them. Rows go in tiles so that one
     * group of activation vectors stays in L1 while a tile's rows (in L2)
     * pass by; the next group then reads the same rows again from L2. */
    enum { ROW_TILE = 32 };
    float sums[QUANT_DOT_MULTI_MAX];
    for (int64_t tile = row_begin; tile < row_end; tile += ROW_TILE) {
        int64_t tile_end = tile + ROW_TILE < row_end ? tile + ROW_TILE : row_end;
        for (int64_t t0 = 0; t0 < job->tokens; t0 += QUANT_DOT_MULTI_MAX) {
            int count = (int)(job->tokens - t0 < QUANT_DOT_MULTI_MAX ? job->tokens - t0 : QUANT_DOT_MULTI_MAX);
            for (int64_t r = tile; r < tile_end; r++) {
                const uint8_t *row = (const uint8_t *)w->data + (uint64_t)r * w->row_bytes;
                dot_multi(row, job->x + t0 * w->cols, w->cols, count, w->cols, sums);
                for (int t = 0; t < count; t++)
                    job->y[(t0 + t) * w->rows + r] = sums[t];
            }
        }
    }
}

/* Many tokens: dequantize a panel of rows once, transposed, and multiply it
 * with every token. Scratch holds the panel (PANEL_ROWS * cols) and one row. */
static void matmul_rows_panel(const matmul_job *job, int64_t row_begin, int64_t row_end, float *scratch)
{
    const weight_matrix *w = job->w;
    int64_t k = w->cols, n = w->rows;
    float *panel = scratch, *row = scratch + PANEL_ROWS * k;
    for (int64_t panel_begin = row_begin; panel_begin < row_end; panel_begin += PANEL_ROWS) {
        int64_t panel_rows = row_end - panel_begin < PANEL_ROWS ? row_end - panel_begin : PANEL_ROWS;
        for (int64_t r = 0; r < PANEL_ROWS; r++) {
            if (r < panel_rows) {
                compute_weight_row(job->context, w, panel_begin + r, row);
                for (int64_t j = 0; j < k; j++)
                    panel[j * PANEL_ROWS + r] = row[j];
            } else {
                for (int64_t j = 0; j < k; j++)
                    panel[j * PANEL_ROWS + r] = 0.0f; /* lanes past the matrix: computed, never stored */
            }
        }
        job->context->vector->panel_multiply(panel, k, job->x, k, job->tokens, job->y + panel_begin, n,
                                             panel_rows);
    }
}

static void matmul_task(void *argument, int thread_index, int thread_count)
{
    const matmul_job *job = argument;
    long begin, end;
    thread_range((long)job->w->rows, thread_index, thread_count, PANEL_ROWS, &begin, &end);
    if (begin >= end)
        return;
    /* The panel path needs (PANEL_ROWS + 1) * cols floats of scratch; with less
     * (a context reserved for smaller matrices) the direct path is still exact. */
    bool panel_fits = (PANEL_ROWS + 1) * job->w->cols <= job->context->scratch_floats;
    if (job->tokens < PANEL_MIN_TOKENS || !panel_fits)
        matmul_rows_direct(job, begin, end);
    else
        matmul_rows_panel(job, begin, end, job->context->scratch[thread_index]);
}

void compute_matmul(compute_context *context, const weight_matrix *w, const float *x, int64_t tokens,
                    float *y)
{
    matmul_job job = {.context = context, .w = w, .x = x, .tokens = tokens, .y = y};
    thread_pool_run(context->pool, matmul_task, &job);
}

void compute_rms_norm(const float *x, const float *weight, float *out, int64_t rows, int64_t n,
                      float eps)
{
    for (int64_t t = 0; t < rows; t++) {
        const float *row = x + t * n;
        double sum_of_squares = 0.0;
        for (int64_t i = 0; i < n; i++)
            sum_of_squares += (double)row[i] * row[i];
        float inverse = (float)(1.0 / sqrt(sum_of_squares / (double)n + eps));
        float *destination = out + t * n;
        for (int64_t i = 0; i < n; i++)
            destination[i] = row[i] * inverse * (weight != NULL ? weight[i] : 1.0f);
    }
}

void compute_add(float *x, const float *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        x[i] += y[i];
}

void compute_add_bias(float *x, const float *bias, int64_t n, int64_t width)
{
    for (int64_t i = 0; i < n; i++)
        x[i] += bias[i % width];
}

void compute_rope(float *x, int64_t tokens, int64_t heads, int64_t head_dim, int64_t stride,
                  const int64_t *positions, const rope_params *params)
{
    int64_t pairs = params->rotated_dims / 2;
    double inverse_frequency[2048]; /* rotated_dims <= head size <= 4096 (checked at load) */
    for (int64_t i = 0; i < pairs; i++) {
        inverse_frequency[i] = pow((double)params->base, -2.0 * (double)i / (double)params->rotated_dims);
        if (params->frequency_factors != NULL)
            inverse_frequency[i] /= params->frequency_factors[i];
    }
    for (int64_t t = 0; t < tokens; t++) {
        double position = (double)positions[t] * params->frequency_scale;
        for (int64_t i = 0; i < pairs; i++) {
            double angle = position * inverse_frequency[i];
            float cosine = (float)cos(angle), sine = (float)sin(angle);
            int64_t first = params->style == ROPE_NORM ? 2 * i : i;
            int64_t second = params->style == ROPE_NORM ? 2 * i + 1 : i + pairs;
            for (int64_t h = 0; h < heads; h++) {
                float *head = x + t * stride + h * head_dim;
                float a = head[first], b = head[second];
                head[first] = a * cosine - b * sine;
                head[second] = a * sine + b * cosine;
            }
        }
    }
}

void compute_silu_mul(const compute_context *context, float *gate, const float *up, int64_t n)
{
    context->vector->gated_sigmoid(gate, up, 1.0f, 0.0f, n);
}

void compute_gelu_tanh_mul(const compute_context *context, float *gate, const float *up, int64_t n)
{
    const float two_sqrt_2_over_pi = 1.5957691216057308f; /* 2 * sqrt(2 / pi) */
    context->vector->gated_sigmoid(gate, up, two_sqrt_2_over_pi, 0.044715f, n);
}

void compute_soft_cap(float *x, int64_t n, float cap)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = cap * tanhf(x[i] / cap);
}
