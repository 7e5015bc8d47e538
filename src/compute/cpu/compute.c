/* compute/cpu/compute.c: the CPU operations of a transformer layer.
 *
 * Matrix products are the hot path. With one token (decode) every weight row
 * is dotted with the activation straight from its packed form (quant dot
 * kernels), so each weight byte is read once. With several tokens (prefill)
 * each thread dequantizes a panel of PANEL_ROWS weight rows into f32 scratch
 * once and multiplies it with every token through 4x4 register tiles, so the
 * dequantization cost is shared by all tokens. Both paths split the weight
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
    for (int64_t r = row_begin; r < row_end; r++) {
        const uint8_t *row = (const uint8_t *)w->data + (uint64_t)r * w->row_bytes;
        for (int64_t t = 0; t < job->tokens; t++)
            job->y[t * w->rows + r] = dot(row, job->x + t * w->cols, w->cols);
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
    if (job->tokens < 4 || !panel_fits)
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

/* Prefill attention works on blocks of ATTENTION_BLOCK_ROWS query rows (the
 * query heads of one KV head times the block's tokens); fewer new tokens than
 * ATTENTION_BLOCK_MIN_TOKENS (decode) take the per-(token, head) path. */
enum { ATTENTION_BLOCK_ROWS = 64, ATTENTION_BLOCK_MIN_TOKENS = 4 };

typedef struct attention_job {
    compute_context *context;
    const attention_args *args;
} attention_job;

static void attention_one(const attention_args *args, const vector_kernels *vector, int64_t t,
                          int64_t h, float *scores)
{
    int64_t group = args->heads / args->kv_heads;
    int64_t kv_head = h / group;
    int64_t d = args->head_dim;
    const float *q = args->queries + (t * args->heads + h) * d;
    const float *keys = args->keys + kv_head * args->capacity * d;
    int64_t value_dim = args->value_dim;
    const float *values = args->values + kv_head * args->capacity * value_dim;
    float *out = args->output + (t * args->heads + h) * value_dim;
    int64_t last = args->positions[t];
    int64_t first = 0;
    if (args->window > 0 && last - args->window + 1 > 0)
        first = last - args->window + 1;
    float max_score = -INFINITY;
    for (int64_t p = first; p <= last; p++) {
        float s = vector->dot(q, keys + p * d, d) * args->scale;
        scores[p - first] = s;
        if (s > max_score)
            max_score = s;
    }
    float sum = 0.0f;
    for (int64_t p = first; p <= last; p++) {
        float e = expf(scores[p - first] - max_score);
        scores[p - first] = e;
        sum += e;
    }
    memset(out, 0, (size_t)value_dim * sizeof(float));
    float inverse = 1.0f / sum;
    for (int64_t p = first; p <= last; p++)
        vector->axpy(out, scores[p - first] * inverse, values + p * value_dim, value_dim);
}

/* Keys visible to the token at `position`: [first, position]. */
static int64_t first_visible(const attention_args *args, int64_t position)
{
    if (args->window > 0 && position - args->window + 1 > 0)
        return position - args->window + 1;
    return 0;
}

/* The blocked path, for prefill: one KV head and a block of tokens at once.
 * All query heads of the KV group, for all tokens of the block, form the
 * rows of two matrix products through transposed panels: scores = Q K^T over
 * the block's key span, then (after the masked softmax) output = P V. */
static void attention_block(const attention_args *args, const vector_kernels *vector, int64_t kv_head,
                            int64_t token_begin, int64_t token_end, float *scratch)
{
    int64_t group = args->heads / args->kv_heads;
    int64_t d = args->head_dim, dv = args->value_dim;
    int64_t rows = (token_end - token_begin) * group;
    int64_t low = INT64_MAX, high = 0;
    for (int64_t t = token_begin; t < token_end; t++) {
        int64_t first = first_visible(args, args->positions[t]);
        low = first < low ? first : low;
        high = args->positions[t] > high ? args->positions[t] : high;
    }
    int64_t width = high - low + 1;
    float *queries = scratch, *scores = queries + rows * d, *output = scores + rows * width;
    float *panel = output + rows * dv;
    const float *keys = args->keys + (kv_head * args->capacity + low) * d;
    const float *values = args->values + (kv_head * args->capacity + low) * dv;

    for (int64_t t = token_begin; t < token_end; t++)
        memcpy(queries + (t - token_begin) * group * d,
               args->queries + (t * args->heads + kv_head * group) * d, (size_t)(group * d) * sizeof(float));
    for (int64_t p0 = 0; p0 < width; p0 += PANEL_ROWS) {
        int64_t count = width - p0 < PANEL_ROWS ? width - p0 : PANEL_ROWS;
        for (int64_t j = 0; j < d; j++)
            for (int64_t r = 0; r < PANEL_ROWS; r++)
                panel[j * PANEL_ROWS + r] = r < count ? keys[(p0 + r) * d + j] : 0.0f;
        vector->panel_multiply(panel, d, queries, d, rows, scores + p0, width, count);
    }
    for (int64_t row = 0; row < rows; row++) {
        int64_t t = token_begin + row / group;
        int64_t first = first_visible(args, args->positions[t]) - low, last = args->positions[t] - low;
        float *s = scores + row * width;
        float max_score = -INFINITY;
        for (int64_t p = first; p <= last; p++) {
            s[p] *= args->scale;
            max_score = s[p] > max_score ? s[p] : max_score;
        }
        float sum = 0.0f;
        for (int64_t p = first; p <= last; p++) {
            s[p] = expf(s[p] - max_score);
            sum += s[p];
        }
        float inverse = 1.0f / sum;
        for (int64_t p = 0; p < width; p++)
            s[p] = p >= first && p <= last ? s[p] * inverse : 0.0f;
    }
    for (int64_t d0 = 0; d0 < dv; d0 += PANEL_ROWS) {
        int64_t count = dv - d0 < PANEL_ROWS ? dv - d0 : PANEL_ROWS;
        for (int64_t j = 0; j < width; j++)
            for (int64_t r = 0; r < PANEL_ROWS; r++)
                panel[j * PANEL_ROWS + r] = r < count ? values[j * dv + d0 + r] : 0.0f;
        vector->panel_multiply(panel, width, scores, width, rows, output + d0, dv, count);
    }
    for (int64_t t = token_begin; t < token_end; t++)
        memcpy(args->output + (t * args->heads + kv_head * group) * dv, output + (t - token_begin) * group * dv,
               (size_t)(group * dv) * sizeof(float));
}

int64_t compute_attention_scratch_floats(int64_t heads, int64_t kv_heads, int64_t head_dim, int64_t value_dim,
                                         int64_t capacity)
{
    int64_t group = heads / kv_heads;
    int64_t block_tokens = ATTENTION_BLOCK_ROWS / group > 0 ? ATTENTION_BLOCK_ROWS / group : 1;
    int64_t rows = block_tokens * group;
    int64_t width = capacity; /* the widest key span a block can see */
    int64_t panel = PANEL_ROWS * (head_dim > width ? head_dim : width);
    int64_t blocked = rows * (head_dim + width + value_dim) + panel;
    return blocked > capacity ? blocked : capacity; /* the per-pair path needs `capacity` scores */
}

static void attention_task(void *argument, int thread_index, int thread_count)
{
    const attention_job *job = argument;
    const attention_args *args = job->args;
    float *scratch = job->context->scratch[thread_index];
    /* Work is interleaved, not split in ranges: later tokens see more keys and cost more. */
    if (args->tokens < ATTENTION_BLOCK_MIN_TOKENS) {
        long pairs = (long)(args->tokens * args->heads);
        for (long pair = thread_index; pair < pairs; pair += thread_count)
            attention_one(args, job->context->vector, pair / args->heads, pair % args->heads, scratch);
        return;
    }
    int64_t group = args->heads / args->kv_heads;
    int64_t block_tokens = ATTENTION_BLOCK_ROWS / group > 0 ? ATTENTION_BLOCK_ROWS / group : 1;
    int64_t blocks = (args->tokens + block_tokens - 1) / block_tokens;
    for (int64_t item = thread_index; item < blocks * args->kv_heads; item += thread_count) {
        int64_t block = item / args->kv_heads, kv_head = item % args->kv_heads;
        int64_t begin = block * block_tokens;
        int64_t end = begin + block_tokens < args->tokens ? begin + block_tokens : args->tokens;
        attention_block(args, job->context->vector, kv_head, begin, end, scratch);
    }
}

void compute_attention(compute_context *context, const attention_args *args)
{
    attention_job job = {.context = context, .args = args};
    thread_pool_run(context->pool, attention_task, &job);
}
