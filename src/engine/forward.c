/* engine/forward.c: one generic transformer forward pass for every architecture.
 *
 * Read top to bottom, this is the model: embed the new tokens, then for each
 * layer normalize, project to q/k/v, optionally normalize q and k per head,
 * rotate them, append k and v to the KV buffer, attend, project back, add to
 * the residual stream (through a post-norm when the architecture has one),
 * and do the same for the feed-forward block. The architecture descriptor
 * and the presence of optional tensors decide each variation; every matrix
 * product covers all new tokens at once. */
#include "engine/forward.h"

#include <stdlib.h>

#include "base/error.h"

strata_status forward_scratch_create(const strata_model *model, int64_t max_tokens,
                                     forward_scratch **out, strata_error *err)
{
    *out = NULL;
    const model_params *p = &model->params;
    forward_scratch *s = calloc(1, sizeof *s);
    if (s == NULL)
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "cannot allocate forward scratch");
    s->max_tokens = max_tokens;
    size_t t = (size_t)max_tokens;
    s->residual = malloc(t * (size_t)p->embedding_length * sizeof(float));
    s->normed = malloc(t * (size_t)p->embedding_length * sizeof(float));
    s->query = malloc(t * (size_t)(p->head_count * p->key_length) * sizeof(float));
    s->key = malloc(t * (size_t)(p->kv_head_count * p->key_length) * sizeof(float));
    s->value = malloc(t * (size_t)(p->kv_head_count * p->value_length) * sizeof(float));
    s->attention = malloc(t * (size_t)(p->head_count * p->value_length) * sizeof(float));
    s->projected = malloc(t * (size_t)p->embedding_length * sizeof(float));
    s->gate = malloc(t * (size_t)p->max_feed_forward_length * sizeof(float));
    s->up = malloc(t * (size_t)p->max_feed_forward_length * sizeof(float));
    s->positions = malloc(t * sizeof(int64_t));
    if (!s->residual || !s->normed || !s->query || !s->key || !s->value || !s->attention ||
        !s->projected || !s->gate || !s->up || !s->positions) {
        forward_scratch_destroy(s);
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY,
                           "cannot allocate activations for %lld tokens per step", (long long)max_tokens);
    }
    *out = s;
    return STRATA_OK;
}

void forward_scratch_destroy(forward_scratch *s)
{
    if (s == NULL)
        return;
    free(s->residual);
    free(s->normed);
    free(s->query);
    free(s->key);
    free(s->value);
    free(s->attention);
    free(s->projected);
    free(s->gate);
    free(s->up);
    free(s->positions);
    free(s);
}

/* Adds a block's output to the residual stream, through the post-norm if any. */
static void add_to_residual(float *residual, float *block_output, const float *post_norm, int64_t tokens,
                            int64_t n_embd, float eps)
{
    if (post_norm != NULL)
        compute_rms_norm(block_output, post_norm, block_output, tokens, n_embd, eps);
    compute_add(residual, block_output, tokens * n_embd);
}

static void attention_block(strata_model *model, kv_buffer *kv, forward_scratch *s, int64_t il,
                            int64_t count)
{
    const model_params *p = &model->params;
    const layer_weights *layer = &model->layers[il];
    compute_context *compute = model->compute;
    int64_t q_width = p->head_count * p->key_length;
    int64_t k_width = p->kv_head_count * p->key_length;
    int64_t v_width = p->kv_head_count * p->value_length;

    compute_rms_norm(s->residual, layer->attention_norm, s->normed, count, p->embedding_length, p->rms_epsilon);
    compute_matmul(compute, &layer->query, s->normed, count, s->query);
    compute_matmul(compute, &layer->key, s->normed, count, s->key);
    compute_matmul(compute, &layer->value, s->normed, count, s->value);
    if (layer->query_bias != NULL)
        compute_add_bias(s->query, layer->query_bias, count * q_width, q_width);
    if (layer->key_bias != NULL)
        compute_add_bias(s->key, layer->key_bias, count * k_width, k_width);
    if (layer->value_bias != NULL)
        compute_add_bias(s->value, layer->value_bias, count * v_width, v_width);
    if (layer->query_norm != NULL) {
        compute_rms_norm(s->query, layer->query_norm, s->query, count * p->head_count, p->key_length, p->rms_epsilon);
        compute_rms_norm(s->key, layer->key_norm, s->key, count * p->kv_head_count, p->key_length, p->rms_epsilon);
    }
    rope_params rope = {
        .style = model->arch->rope,
        .rotated_dims = p->rotated_dims,
        .base = layer->rope_base,
        /* Linear RoPE scaling stretches the global layers' long context only;
         * sliding-window layers rotate unscaled (as llama.cpp does for Gemma 3). */
        .frequency_scale = layer->sliding_window ? 1.0f : p->rope_frequency_scale,
        .frequency_factors = layer->sliding_window ? NULL : model->rope_frequency_factors,
    };
    compute_rope(s->query, count, p->head_count, p->key_length, q_width, s->positions, &rope);
    compute_rope(s->key, count, p->kv_head_count, p->key_length, k_width, s->positions, &rope);
    kv_buffer_store(kv, il, s->key, s->value, count, s->positions);

    attention_args args = {
        .queries = s->query,
        .keys = kv->keys[il],
        .values = kv->values[il],
        .output = s->attention,
        .positions = s->positions,
        .tokens = count,
        .heads = p->head_count,
        .kv_heads = p->kv_head_count,
        .head_dim = p->key_length,
        .value_dim = p->value_length,
        .capacity = kv->capacity,
        .window = layer->sliding_window ? p->sliding_window : 0,
        .scale = p->attention_scale,
    };
    compute_attention(compute, &args);
    compute_matmul(compute, &layer->output, s->attention, count, s->projected);
    add_to_residual(s->residual, s->projected, layer->post_attention_norm, count, p->embedding_length,
                    p->rms_epsilon);
}

static void feed_forward_block(strata_model *model, forward_scratch *s, int64_t il, int64_t count)
{
    const model_params *p = &model->params;
    const layer_weights *layer = &model->layers[il];
    compute_context *compute = model->compute;
    int64_t ff = layer->feed_forward_length;
    compute_rms_norm(s->residual, layer->ffn_norm, s->normed, count, p->embedding_length, p->rms_epsilon);
    compute_matmul(compute, &layer->gate, s->normed, count, s->gate);
    compute_matmul(compute, &layer->up, s->normed, count, s->up);
    if (model->arch->activation == FFN_GELU_TANH)
        compute_gelu_tanh_mul(compute, s->gate, s->up, count * ff);
    else
        compute_silu_mul(compute, s->gate, s->up, count * ff);
    compute_matmul(compute, &layer->down, s->gate, count, s->projected);
    add_to_residual(s->residual, s->projected, layer->post_ffn_norm, count, p->embedding_length,
                    p->rms_epsilon);
}

void forward_run(strata_model *model, kv_buffer *kv, forward_scratch *s, const int32_t *tokens,
                 int64_t count, int64_t first_position, bool all_logits, float *logits)
{
    const model_params *p = &model->params;
    int64_t n_embd = p->embedding_length;
    for (int64_t t = 0; t < count; t++) {
        s->positions[t] = first_position + t;
        float *row = s->residual + t * n_embd;
        compute_weight_row(model->compute, &model->token_embedding, tokens[t], row);
        if (p->embedding_scale != 1.0f)
            for (int64_t i = 0; i < n_embd; i++)
                row[i] *= p->embedding_scale;
    }
    for (int64_t il = 0; il < p->layer_count; il++) {
        attention_block(model, kv, s, il, count);
        feed_forward_block(model, s, il, count);
    }
    if (logits == NULL)
        return;
    int64_t first_row = all_logits ? 0 : count - 1;
    int64_t rows = count - first_row;
    compute_rms_norm(s->residual + first_row * n_embd, model->output_norm, s->normed, rows, n_embd,
                     p->rms_epsilon);
    compute_matmul(model->compute, &model->output, s->normed, rows, logits);
    if (p->final_logit_soft_cap > 0.0f)
        compute_soft_cap(logits, rows * p->vocab_size, p->final_logit_soft_cap);
}
