/* engine/forward.c: one generic transformer forward pass for every
 * architecture, over a batch step of several sequences.
 *
 * Read top to bottom, this is the model: embed the new tokens, then for each
 * layer normalize, project to q/k/v, optionally normalize q and k per head,
 * rotate them, write k and v into each sequence's block tables, attend per
 * sequence through those tables, project back, add to the residual stream
 * (through a post-norm when the architecture has one), and do the same for
 * the feed-forward block. The architecture descriptor and the presence of
 * optional tensors decide each variation; every matrix product covers all
 * new tokens of all sequences at once. Sliding-window layers release the
 * blocks their window has left behind after each step. */
#include "engine/forward.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "kv/policy.h"

strata_status forward_scratch_create(const strata_model *model, int64_t max_tokens, forward_scratch **out,
                                     strata_error *err)
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
    s->views = calloc((size_t)p->kv_head_count, sizeof *s->views);
    if (!s->residual || !s->normed || !s->query || !s->key || !s->value || !s->attention || !s->projected ||
        !s->gate || !s->up || !s->positions || !s->views) {
        forward_scratch_destroy(s);
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "cannot allocate activations for %lld tokens per step",
                           (long long)max_tokens);
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
    free(s->views);
    free(s->view_keys);
    free(s->view_values);
    free(s->view_positions);
    free(s->view_key_readers);
    free(s->view_value_readers);
    free(s->view_key_types);
    free(s->chosen);
    free(s->chosen_counts);
    free(s->last_logits);
    free(s);
}

/* Grows the per-head block pointer arrays to hold `blocks` blocks per KV head. */
static strata_status reserve_views(forward_scratch *s, int64_t kv_heads, int64_t blocks, strata_error *err)
{
    if (blocks <= s->view_block_capacity)
        return STRATA_OK;
    int64_t capacity = blocks * 2;
    size_t entries = (size_t)(capacity * kv_heads);
    const void **keys = realloc(s->view_keys, entries * sizeof *keys);
    if (keys != NULL)
        s->view_keys = keys;
    const void **values = realloc(s->view_values, entries * sizeof *values);
    if (values != NULL)
        s->view_values = values;
    const int32_t **positions = realloc(s->view_positions, entries * sizeof *positions);
    if (positions != NULL)
        s->view_positions = positions;
    attention_row_reader *key_readers = realloc(s->view_key_readers, entries * sizeof *key_readers);
    if (key_readers != NULL)
        s->view_key_readers = key_readers;
    attention_row_reader *value_readers = realloc(s->view_value_readers, entries * sizeof *value_readers);
    if (value_readers != NULL)
        s->view_value_readers = value_readers;
    tensor_type *key_types = realloc(s->view_key_types, entries * sizeof *key_types);
    if (key_types != NULL)
        s->view_key_types = key_types;
    if (keys == NULL || values == NULL || positions == NULL || key_readers == NULL || value_readers == NULL ||
        key_types == NULL)
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "cannot allocate block pointers for %lld blocks",
                           (long long)capacity);
    s->view_block_capacity = capacity;
    return STRATA_OK;
}

/* Grows the chosen-block lists to `blocks` entries per KV head (a step with a block selection). */
static strata_status reserve_chosen(forward_scratch *s, int64_t kv_heads, int64_t blocks, strata_error *err)
{
    if (s->chosen_counts == NULL && (s->chosen_counts = malloc((size_t)kv_heads * sizeof *s->chosen_counts)) == NULL)
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "cannot allocate block selection counts");
    if (blocks <= s->chosen_capacity)
        return STRATA_OK;
    int64_t *grown = realloc(s->chosen, (size_t)(2 * blocks * kv_heads) * sizeof *grown);
    if (grown == NULL)
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "cannot allocate a block selection of %lld blocks",
                           (long long)(2 * blocks));
    s->chosen = grown;
    s->chosen_capacity = 2 * blocks;
    return STRATA_OK;
}

/* For an item of one token whose policy selects blocks (Quest-style), asks
 * it which blocks of each KV head's table of this layer attention reads,
 * given the token's queries (the KV group's query heads are consecutive). */
static bool choose_blocks(forward_scratch *s, const forward_item *item, int32_t layer, const model_params *p,
                          const float *queries)
{
    if (item->selection == NULL || item->count != 1)
        return false;
    int64_t group = p->head_count / p->kv_head_count;
    for (int64_t h = 0; h < p->kv_head_count; h++)
        s->chosen_counts[h] = item->selection->ops->select_blocks(
            &item->selection->view, layer, (int32_t)h, queries + h * group * p->key_length, group,
            s->chosen + h * s->chosen_capacity);
    return true;
}

/* Points the attention views at one sequence's blocks of one layer: all of
 * them, or when `selected` those in s->chosen (increasing, all full but the
 * last, which is the table's last: the view's slots are theirs in order). */
static void build_views(forward_scratch *s, const kv_seq *seq, int32_t layer, int64_t kv_heads, bool selected)
{
    kv_pool *pool = kv_seq_pool(seq);
    int64_t block_tokens = kv_pool_configuration(pool)->block_tokens;
    for (int64_t h = 0; h < kv_heads; h++) {
        const kv_block_table *table = kv_seq_table(seq, layer, (int32_t)h);
        int64_t blocks = (table->slot_count + block_tokens - 1) / block_tokens;
        const int64_t *chosen = selected ? s->chosen + h * s->chosen_capacity : NULL;
        int64_t slot_count = table->slot_count;
        if (selected) {
            assert(s->chosen_counts[h] >= 1 && chosen[s->chosen_counts[h] - 1] == blocks - 1);
            slot_count -= (blocks - s->chosen_counts[h]) * block_tokens; /* the blocks left out are full */
            blocks = s->chosen_counts[h];
        }
        const void **keys = s->view_keys + h * s->view_block_capacity;
        const void **values = s->view_values + h * s->view_block_capacity;
        const int32_t **positions = s->view_positions + h * s->view_block_capacity;
        attention_row_reader *key_readers = s->view_key_readers + h * s->view_block_capacity;
        attention_row_reader *value_readers = s->view_value_readers + h * s->view_block_capacity;
        tensor_type *key_types = s->view_key_types + h * s->view_block_capacity;
        for (int64_t b = 0; b < blocks; b++) {
            kv_block_id block = table->blocks[selected ? chosen[b] : b];
            keys[b] = kv_block_keys_const(pool, block);
            values[b] = kv_block_values_const(pool, block);
            positions[b] = kv_block_positions_const(pool, block);
            kv_storage storage = kv_block_storage(pool, block);
            key_readers[b] = kv_storage_key_reader(storage);
            value_readers[b] = kv_storage_value_reader(storage);
            key_types[b] = kv_storage_key_tensor_type(storage);
        }
        s->views[h] = (attention_kv_view){.keys = keys, .values = values, .positions = positions,
                                          .key_readers = key_readers, .value_readers = value_readers,
                                          .key_types = key_types, .slot_count = slot_count};
    }
}

/* Adds a block's output to the residual stream, through the post-norm if any. */
static void add_to_residual(float *residual, float *block_output, const float *post_norm, int64_t tokens,
                            int64_t n_embd, float eps)
{
    if (post_norm != NULL)
        compute_rms_norm(block_output, post_norm, block_output, tokens, n_embd, eps);
    compute_add(residual, block_output, tokens * n_embd);
}

static void attention_block(strata_model *model, forward_scratch *s, const forward_item *items, int64_t item_count,
                            int64_t il, int64_t count)
{
    const model_params *p = &model->params;
    const layer_weights *layer = &model->layers[il];
    compute_context *compute = model->compute;
    int64_t q_width = p->head_count * p->key_length;
    int64_t k_width = p->kv_head_count * p->key_length;
    int64_t v_width = p->kv_head_count * p->value_length;
    int64_t a_width = p->head_count * p->value_length;

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

    int64_t row = 0;
    for (int64_t i = 0; i < item_count; i++) {
        const forward_item *item = &items[i];
        kv_seq_write(item->seq, (int32_t)il, s->key + row * k_width, s->value + row * v_width, item->count,
                     s->positions + row);
        bool selected = choose_blocks(s, item, (int32_t)il, p, s->query + row * q_width);
        build_views(s, item->seq, (int32_t)il, p->kv_head_count, selected);
        const kv_pool_config *config = kv_pool_configuration(kv_seq_pool(item->seq));
        attention_args args = {
            .queries = s->query + row * q_width,
            .output = s->attention + row * a_width,
            .positions = s->positions + row,
            .tokens = item->count,
            .heads = p->head_count,
            .kv_heads = p->kv_head_count,
            .head_dim = p->key_length,
            .value_dim = p->value_length,
            .block_tokens = config->block_tokens,
            .window = layer->sliding_window ? p->sliding_window : 0,
            .scale = p->attention_scale,
            .views = s->views,
        };
        if (item->slot_mass != NULL && item->slot_mass[il * p->kv_head_count] != NULL) {
            args.slot_mass = item->slot_mass + il * p->kv_head_count;
            args.mass_first_token = item->mass_first_token;
            if (item->slot_mass_squares != NULL)
                args.slot_mass_squares = item->slot_mass_squares + il * p->kv_head_count;
        }
        if (item->slot_mass_all != NULL && item->slot_mass_all[il * p->kv_head_count] != NULL)
            args.slot_mass_all = item->slot_mass_all + il * p->kv_head_count;
        assert(!selected || (args.slot_mass == NULL && args.slot_mass_all == NULL)); /* statistics need every slot at its table index */
        compute_attention(compute, &args);
        row += item->count;
    }
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

/* Writes each item's logits: the rows asked for go through the final norm
 * and the output matrix. Items wanting only their last token's logits share
 * one product (the output matrix is the largest weight: reading it once per
 * decode step instead of once per sequence is what makes batching pay). */
static void write_logits(strata_model *model, forward_scratch *s, const forward_item *items, int64_t item_count)
{
    const model_params *p = &model->params;
    int64_t n_embd = p->embedding_length, vocab = p->vocab_size;
    int64_t row = 0, last_rows = 0;
    for (int64_t i = 0; i < item_count; i++) {
        const forward_item *item = &items[i];
        if (item->logits != NULL && item->all_logits) {
            compute_rms_norm(s->residual + row * n_embd, model->output_norm, s->normed, item->count, n_embd,
                             p->rms_epsilon);
            compute_matmul(model->compute, &model->output, s->normed, item->count, item->logits);
            if (p->final_logit_soft_cap > 0.0f)
                compute_soft_cap(item->logits, item->count * vocab, p->final_logit_soft_cap);
        }
        row += item->count;
    }
    row = 0;
    for (int64_t i = 0; i < item_count; i++) {
        if (items[i].logits != NULL && !items[i].all_logits)
            compute_rms_norm(s->residual + (row + items[i].count - 1) * n_embd, model->output_norm,
                             s->normed + last_rows++ * n_embd, 1, n_embd, p->rms_epsilon);
        row += items[i].count;
    }
    if (last_rows == 0)
        return;
    compute_matmul(model->compute, &model->output, s->normed, last_rows, s->last_logits);
    if (p->final_logit_soft_cap > 0.0f)
        compute_soft_cap(s->last_logits, last_rows * vocab, p->final_logit_soft_cap);
    last_rows = 0;
    for (int64_t i = 0; i < item_count; i++)
        if (items[i].logits != NULL && !items[i].all_logits)
            memcpy(items[i].logits, s->last_logits + last_rows++ * vocab, (size_t)vocab * sizeof(float));
}

strata_status forward_step(strata_model *model, forward_scratch *s, const forward_item *items, int64_t item_count,
                           strata_error *err)
{
    const model_params *p = &model->params;
    int64_t n_embd = p->embedding_length;
    int64_t count = 0, most_blocks = 0;
    for (int64_t i = 0; i < item_count; i++)
        count += items[i].count;
    if (count <= 0 || count > s->max_tokens)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT, "a step of %lld tokens is outside 1..%lld",
                           (long long)count, (long long)s->max_tokens);
    for (int64_t i = 0; i < item_count; i++) {
        strata_status status = kv_seq_reserve(items[i].seq, items[i].count, err);
        if (status != STRATA_OK)
            return status;
        for (int64_t il = 0; il < p->layer_count; il++)
            for (int64_t h = 0; h < p->kv_head_count; h++) {
                int64_t blocks = kv_seq_table(items[i].seq, (int32_t)il, (int32_t)h)->block_count;
                most_blocks = blocks > most_blocks ? blocks : most_blocks;
            }
    }
    strata_status status = reserve_views(s, p->kv_head_count, most_blocks, err);
    for (int64_t i = 0; i < item_count && status == STRATA_OK; i++)
        if (items[i].selection != NULL)
            status = reserve_chosen(s, p->kv_head_count, most_blocks, err);
    if (status != STRATA_OK)
        return status;
    if (item_count > s->last_logits_capacity) {
        float *grown = realloc(s->last_logits, (size_t)item_count * (size_t)p->vocab_size * sizeof(float));
        if (grown == NULL)
            return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "cannot allocate logits for %lld sequences",
                               (long long)item_count);
        s->last_logits = grown;
        s->last_logits_capacity = item_count;
    }

    int64_t row = 0;
    for (int64_t i = 0; i < item_count; i++) {
        int64_t first_position = kv_seq_length(items[i].seq);
        for (int64_t t = 0; t < items[i].count; t++, row++) {
            s->positions[row] = first_position + t;
            float *embedding = s->residual + row * n_embd;
            compute_weight_row(model->compute, &model->token_embedding, items[i].tokens[t], embedding);
            if (p->embedding_scale != 1.0f)
                for (int64_t j = 0; j < n_embd; j++)
                    embedding[j] *= p->embedding_scale;
        }
    }
    for (int64_t il = 0; il < p->layer_count; il++) {
        attention_block(model, s, items, item_count, il, count);
        feed_forward_block(model, s, il, count);
    }
    for (int64_t i = 0; i < item_count; i++)
        kv_seq_advance(items[i].seq, items[i].count);
    write_logits(model, s, items, item_count);
    return STRATA_OK;
}

void forward_release_windows(const strata_model *model, kv_seq *seq)
{
    const model_params *p = &model->params;
    /* The next token, at position `length`, sees keys from length - window + 1 on. */
    int64_t first_needed = kv_seq_length(seq) - p->sliding_window + 1;
    if (first_needed <= 0)
        return;
    for (int64_t il = 0; il < p->layer_count; il++)
        if (model->layers[il].sliding_window)
            kv_seq_drop_before(seq, (int32_t)il, first_needed);
}
