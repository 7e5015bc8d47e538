/* model/load.c: opening a GGUF model: hyperparameters from the architecture's
 * metadata keys, every weight checked for presence, shape and type, and the
 * tokenizer. Implements strata_model_open and the model accessors of strata.h. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/error.h"
#include "model/model.h"

typedef struct loader {
    strata_model *model;
    const char *path;
    char prefix[64]; /* "gemma3." */
    strata_error *err;
} loader;

/* Reads an integer key "<arch>.<suffix>"; *out keeps its default when absent
 * unless required. */
static strata_status read_integer(loader *l, const char *suffix, bool required, int64_t *out)
{
    char key[160];
    snprintf(key, sizeof key, "%s%s", l->prefix, suffix);
    uint64_t value = 0;
    bool found = false;
    strata_status status = gguf_get_uint(l->model->file, key, &value, &found, l->err);
    if (status != STRATA_OK)
        return status;
    if (!found)
        return required ? strata_fail(l->err, STRATA_E_FORMAT, "%s: required key '%s' is missing",
                                      l->path, key)
                        : STRATA_OK;
    if (value > (uint64_t)1 << 40)
        return strata_fail(l->err, STRATA_E_FORMAT, "%s: key '%s' = %llu is implausibly large",
                           l->path, key, (unsigned long long)value);
    *out = (int64_t)value;
    return STRATA_OK;
}

/* Reads a float key "<arch>.<suffix>"; *out keeps its default when absent. */
static strata_status read_float(loader *l, const char *suffix, float *out)
{
    char key[160];
    snprintf(key, sizeof key, "%s%s", l->prefix, suffix);
    double value = 0;
    bool found = false;
    strata_status status = gguf_get_float(l->model->file, key, &value, &found, l->err);
    if (status == STRATA_OK && found) {
        if (!isfinite(value))
            return strata_fail(l->err, STRATA_E_FORMAT, "%s: key '%s' is not a finite number",
                               l->path, key);
        *out = (float)value;
    }
    return status;
}

static strata_status read_params(loader *l)
{
    model_params *p = &l->model->params;
    const gguf_value *feed_forward = NULL;
    char key[160];
    p->rms_epsilon = 1e-5f;
    p->rope_base = 10000.0f;
    p->rope_frequency_scale = 1.0f;
    strata_status status = STRATA_OK;
    if (status == STRATA_OK) status = read_integer(l, "embedding_length", true, &p->embedding_length);
    if (status == STRATA_OK) status = read_integer(l, "block_count", true, &p->layer_count);
    if (status == STRATA_OK) status = read_integer(l, "attention.head_count", true, &p->head_count);
    if (status != STRATA_OK)
        return status;
    if (p->embedding_length <= 0 || p->layer_count <= 0 || p->head_count <= 0 || p->layer_count > 4096)
        return strata_fail(l->err, STRATA_E_FORMAT,
                           "%s: embedding_length %lld, block_count %lld and head_count %lld must be positive "
                           "(block_count at most 4096)",
                           l->path, (long long)p->embedding_length, (long long)p->layer_count,
                           (long long)p->head_count);
    p->kv_head_count = p->head_count;
    p->key_length = p->embedding_length / p->head_count;
    p->context_length = 2048;
    p->max_feed_forward_length = 0;
    if (status == STRATA_OK) status = read_integer(l, "attention.head_count_kv", false, &p->kv_head_count);
    if (status == STRATA_OK) status = read_integer(l, "attention.key_length", false, &p->key_length);
    p->value_length = p->key_length;
    if (status == STRATA_OK) status = read_integer(l, "attention.value_length", false, &p->value_length);
    if (status == STRATA_OK) status = read_integer(l, "context_length", false, &p->context_length);
    p->rotated_dims = p->key_length;
    if (status == STRATA_OK) status = read_integer(l, "rope.dimension_count", false, &p->rotated_dims);
    if (status == STRATA_OK) status = read_integer(l, "attention.sliding_window", false, &p->sliding_window);
    if (status == STRATA_OK) status = read_float(l, "attention.layer_norm_rms_epsilon", &p->rms_epsilon);
    if (status == STRATA_OK) status = read_float(l, "rope.freq_base", &p->rope_base);
    if (status == STRATA_OK) status = read_float(l, "final_logit_softcapping", &p->final_logit_soft_cap);
    p->rope_base_local = l->model->arch->local_rope_base;
    p->sliding_window_period = l->model->arch->sliding_window_period;
    if (status == STRATA_OK) status = read_float(l, "rope.freq_base_swa", &p->rope_base_local);
    /* attention.sliding_window_pattern is a period here; a per-layer array of
     * bools (newer converters) is read layer by layer in bind_layer. */
    char pattern_key[160];
    snprintf(pattern_key, sizeof pattern_key, "%sattention.sliding_window_pattern", l->prefix);
    const gguf_value *pattern = gguf_find(l->model->file, pattern_key);
    if (status == STRATA_OK && pattern != NULL && pattern->type != GGUF_TYPE_ARRAY)
        status = read_integer(l, "attention.sliding_window_pattern", false, &p->sliding_window_period);
    if (status != STRATA_OK)
        return status;
    if (p->kv_head_count <= 0 || p->head_count % p->kv_head_count != 0)
        return strata_fail(l->err, STRATA_E_FORMAT,
                           "%s: head_count %lld is not a multiple of head_count_kv %lld", l->path,
                           (long long)p->head_count, (long long)p->kv_head_count);
    if (p->key_length <= 0 || p->value_length <= 0 || p->key_length > 4096 || p->value_length > 4096 ||
        p->rotated_dims <= 0 || p->rotated_dims > p->key_length || p->rotated_dims % 2 != 0)
        return strata_fail(l->err, STRATA_E_FORMAT,
                           "%s: head sizes (key %lld, value %lld, rotated %lld) are inconsistent",
                           l->path, (long long)p->key_length, (long long)p->value_length,
                           (long long)p->rotated_dims);
    if (p->context_length <= 0)
        p->context_length = 2048;
    if (p->context_length > INT32_MAX)
        p->context_length = INT32_MAX; /* positions are int32 in the public API */

    /* rope.scaling: linear is a frequency scale; other kinds are not supported yet. */
    snprintf(key, sizeof key, "%srope.scaling.type", l->prefix);
    gguf_string scaling = {0};
    bool found = false;
    status = gguf_get_string(l->model->file, key, &scaling, &found, l->err);
    if (status != STRATA_OK)
        return status;
    float factor = 1.0f;
    status = read_float(l, "rope.scaling.factor", &factor);
    if (status != STRATA_OK)
        return status;
    bool linear = found && scaling.length == 6 && memcmp(scaling.data, "linear", 6) == 0;
    bool none = !found || (scaling.length == 4 && memcmp(scaling.data, "none", 4) == 0);
    if (linear && !(factor > 0.0f))
        return strata_fail(l->err, STRATA_E_FORMAT, "%s: linear RoPE scaling needs a factor > 0, got %g",
                           l->path, factor);
    if (linear)
        p->rope_frequency_scale = 1.0f / factor;
    else if (!none)
        return strata_fail(l->err, STRATA_E_UNSUPPORTED,
                           "%s: RoPE scaling '%.*s' is not supported yet (supported: none, linear)",
                           l->path, (int)(scaling.length > 32 ? 32 : scaling.length), scaling.data);

    /* feed_forward_length may be one number or one per layer. */
    snprintf(key, sizeof key, "%sfeed_forward_length", l->prefix);
    feed_forward = gguf_find(l->model->file, key);
    if (feed_forward == NULL)
        return strata_fail(l->err, STRATA_E_FORMAT, "%s: required key '%s' is missing", l->path, key);
    p->attention_scale = 1.0f / sqrtf((float)p->key_length);
    /* Gemma 3 27B (62 layers) was trained with query_pre_attn_scalar = n_embd / n_head
     * rather than the head size; its GGUF has no key for it, so llama.cpp and
     * strata recognize it by its depth. */
    if (l->model->arch == &arch_gemma3 && p->layer_count == 62)
        p->attention_scale = 1.0f / sqrtf((float)(p->embedding_length / p->head_count));
    p->embedding_scale = l->model->arch->scale_embeddings ? sqrtf((float)p->embedding_length) : 1.0f;
    return STRATA_OK;
}

/* Reads feed_forward_length for one layer (scalar or per-layer array). */
static strata_status read_feed_forward_length(loader *l, int64_t layer, int64_t *out)
{
    char key[160];
    snprintf(key, sizeof key, "%sfeed_forward_length", l->prefix);
    const gguf_value *value = gguf_find(l->model->file, key);
    if (value->type != GGUF_TYPE_ARRAY) {
        int64_t length = 0;
        strata_status status = read_integer(l, "feed_forward_length", true, &length);
        *out = length;
        return status;
    }
    if ((uint64_t)layer >= value->as.array.count)
        return strata_fail(l->err, STRATA_E_FORMAT, "%s: '%s' has %llu entries, fewer than the %lld layers",
                           l->path, key, (unsigned long long)value->as.array.count,
                           (long long)l->model->params.layer_count);
    const uint8_t *data = value->as.array.data;
    switch (value->as.array.element_type) {
    case GGUF_TYPE_UINT32: case GGUF_TYPE_INT32: {
        uint32_t entry;
        memcpy(&entry, data + 4 * layer, 4);
        *out = value->as.array.element_type == GGUF_TYPE_INT32 ? (int32_t)entry : (int64_t)entry;
        return STRATA_OK;
    }
    case GGUF_TYPE_UINT64: case GGUF_TYPE_INT64: {
        int64_t entry;
        memcpy(&entry, data + 8 * layer, 8);
        *out = entry;
        return STRATA_OK;
    }
    default:
        return strata_fail(l->err, STRATA_E_FORMAT, "%s: '%s' is an array of %s, expected integers",
                           l->path, key, gguf_value_type_name(value->as.array.element_type));
    }
}

/* Finds a tensor and checks its dims; NULL (no error) when optional and absent. */
static strata_status find_tensor(loader *l, const char *name, int64_t cols, int64_t rows, bool required,
                                 const gguf_tensor **out)
{
    *out = gguf_tensor_find(l->model->file, name);
    if (*out == NULL)
        return required ? strata_fail(l->err, STRATA_E_FORMAT, "%s: tensor '%s' is missing", l->path, name)
                        : STRATA_OK;
    const gguf_tensor *t = *out;
    int64_t actual_rows = (int64_t)(t->ne[1] * t->ne[2] * t->ne[3]);
    if ((int64_t)t->ne[0] != cols || actual_rows != rows)
        return strata_fail(l->err, STRATA_E_FORMAT,
                           "%s: tensor '%s' has dims %llu x %llu, expected %lld x %lld", l->path, name,
                           (unsigned long long)t->ne[0], (unsigned long long)actual_rows,
                           (long long)cols, (long long)rows);
    const tensor_type_info *info = tensor_type_lookup(t->type);
    if (info == NULL || !info->computable)
        return strata_fail(l->err, STRATA_E_UNSUPPORTED, "%s: tensor '%s' has type %s, which strata cannot compute with yet",
                           l->path, name, tensor_type_name(t->type));
    return STRATA_OK;
}

static strata_status bind_matrix(loader *l, const char *name, int64_t cols, int64_t rows, bool required,
                                 weight_matrix *out)
{
    const gguf_tensor *t;
    strata_status status = find_tensor(l, name, cols, rows, required, &t);
    if (status != STRATA_OK || t == NULL)
        return status;
    *out = (weight_matrix){.data = t->data, .type = t->type, .rows = rows, .cols = cols,
                           .row_bytes = tensor_row_bytes(t->type, (uint64_t)cols)};
    return STRATA_OK;
}

/* Binds a 1-D f32 tensor of n values (norm weights, biases). */
static strata_status bind_vector(loader *l, const char *name, int64_t n, bool required, const float **out)
{
    const gguf_tensor *t;
    *out = NULL;
    strata_status status = find_tensor(l, name, n, 1, required, &t);
    if (status != STRATA_OK || t == NULL)
        return status;
    if (t->type != TENSOR_F32)
        return strata_fail(l->err, STRATA_E_UNSUPPORTED, "%s: tensor '%s' has type %s; vectors must be F32",
                           l->path, name, tensor_type_name(t->type));
    *out = t->data;
    return STRATA_OK;
}

static strata_status bind_layer(loader *l, int64_t il)
{
    strata_model *m = l->model;
    const model_params *p = &m->params;
    layer_weights *layer = &m->layers[il];
    int64_t n_embd = p->embedding_length;
    int64_t q_width = p->head_count * p->key_length;
    int64_t k_width = p->kv_head_count * p->key_length;
    int64_t v_width = p->kv_head_count * p->value_length;
    int64_t attention_width = p->head_count * p->value_length;
    strata_status status = read_feed_forward_length(l, il, &layer->feed_forward_length);
    if (status != STRATA_OK)
        return status;
    int64_t ff = layer->feed_forward_length;
    if (ff <= 0 || ff > ((int64_t)1 << 20))
        return strata_fail(l->err, STRATA_E_FORMAT, "%s: layer %lld has feed_forward_length %lld",
                           l->path, (long long)il, (long long)ff);
    if (ff > m->params.max_feed_forward_length)
        m->params.max_feed_forward_length = ff;
    char name[96];
#define LAYER_TENSOR(suffix) (snprintf(name, sizeof name, "blk.%lld." suffix, (long long)il), name)
    const arch_descriptor *arch = m->arch;
    if (status == STRATA_OK) status = bind_vector(l, LAYER_TENSOR("attn_norm.weight"), n_embd, true, &layer->attention_norm);
    if (status == STRATA_OK) status = bind_matrix(l, LAYER_TENSOR("attn_q.weight"), n_embd, q_width, true, &layer->query);
    if (status == STRATA_OK) status = bind_matrix(l, LAYER_TENSOR("attn_k.weight"), n_embd, k_width, true, &layer->key);
    if (status == STRATA_OK) status = bind_matrix(l, LAYER_TENSOR("attn_v.weight"), n_embd, v_width, true, &layer->value);
    if (status == STRATA_OK) status = bind_matrix(l, LAYER_TENSOR("attn_output.weight"), attention_width, n_embd, true, &layer->output);
    if (status == STRATA_OK) status = bind_vector(l, LAYER_TENSOR("attn_q.bias"), q_width, false, &layer->query_bias);
    if (status == STRATA_OK) status = bind_vector(l, LAYER_TENSOR("attn_k.bias"), k_width, false, &layer->key_bias);
    if (status == STRATA_OK) status = bind_vector(l, LAYER_TENSOR("attn_v.bias"), v_width, false, &layer->value_bias);
    if (status == STRATA_OK) status = bind_vector(l, LAYER_TENSOR("attn_q_norm.weight"), p->key_length, arch->qk_norm, &layer->query_norm);
    if (status == STRATA_OK) status = bind_vector(l, LAYER_TENSOR("attn_k_norm.weight"), p->key_length, arch->qk_norm, &layer->key_norm);
    if (status == STRATA_OK) status = bind_vector(l, LAYER_TENSOR("post_attention_norm.weight"), n_embd, arch->post_norms, &layer->post_attention_norm);
    if (status == STRATA_OK) status = bind_vector(l, LAYER_TENSOR("ffn_norm.weight"), n_embd, true, &layer->ffn_norm);
    if (status == STRATA_OK) status = bind_matrix(l, LAYER_TENSOR("ffn_gate.weight"), n_embd, ff, true, &layer->gate);
    if (status == STRATA_OK) status = bind_matrix(l, LAYER_TENSOR("ffn_up.weight"), n_embd, ff, true, &layer->up);
    if (status == STRATA_OK) status = bind_matrix(l, LAYER_TENSOR("ffn_down.weight"), ff, n_embd, true, &layer->down);
    if (status == STRATA_OK) status = bind_vector(l, LAYER_TENSOR("post_ffw_norm.weight"), n_embd, arch->post_norms, &layer->post_ffn_norm);
#undef LAYER_TENSOR
    int64_t period = p->sliding_window_period;
    layer->sliding_window = p->sliding_window > 0 && period > 0 && il % period != period - 1;
    char pattern_key[160];
    snprintf(pattern_key, sizeof pattern_key, "%sattention.sliding_window_pattern", l->prefix);
    const gguf_value *pattern = gguf_find(m->file, pattern_key);
    if (pattern != NULL && pattern->type == GGUF_TYPE_ARRAY) {
        if (pattern->as.array.element_type != GGUF_TYPE_BOOL || pattern->as.array.count < (uint64_t)p->layer_count)
            return strata_fail(l->err, STRATA_E_FORMAT,
                               "%s: '%s' must be a number or one bool per layer (%lld layers)", l->path,
                               pattern_key, (long long)p->layer_count);
        layer->sliding_window = p->sliding_window > 0 && ((const uint8_t *)pattern->as.array.data)[il] != 0;
    }
    layer->rope_base = layer->sliding_window ? p->rope_base_local : p->rope_base;
    return status;
}

static strata_status bind_weights(loader *l)
{
    strata_model *m = l->model;
    model_params *p = &m->params;
    const gguf_tensor *embedding = gguf_tensor_find(m->file, "token_embd.weight");
    if (embedding == NULL)
        return strata_fail(l->err, STRATA_E_FORMAT, "%s: tensor 'token_embd.weight' is missing", l->path);
    p->vocab_size = (int64_t)embedding->ne[1];
    strata_status status = bind_matrix(l, "token_embd.weight", p->embedding_length, p->vocab_size, true,
                                       &m->token_embedding);
    if (status == STRATA_OK)
        status = bind_vector(l, "output_norm.weight", p->embedding_length, true, &m->output_norm);
    m->output = m->token_embedding;
    if (status == STRATA_OK)
        status = bind_matrix(l, "output.weight", p->embedding_length, p->vocab_size, false, &m->output);
    if (status == STRATA_OK)
        status = bind_vector(l, "rope_freqs.weight", p->rotated_dims / 2, false, &m->rope_frequency_factors);
    if (status != STRATA_OK)
        return status;
    m->layers = calloc((size_t)p->layer_count, sizeof *m->layers);
    if (m->layers == NULL)
        return strata_fail(l->err, STRATA_E_OUT_OF_MEMORY, "cannot allocate %lld layers", (long long)p->layer_count);
    for (int64_t il = 0; il < p->layer_count && status == STRATA_OK; il++)
        status = bind_layer(l, il);
    return status;
}

/* The default KV budget: four full contexts (capped at 32768 tokens each),
 * but never more than a quarter of the machine's memory. */
static uint64_t default_kv_budget(const model_params *p, uint64_t bytes_per_token)
{
    int64_t context = p->context_length < 32768 ? p->context_length : 32768;
    uint64_t wanted = 4 * (uint64_t)context * bytes_per_token;
    long pages = sysconf(_SC_PHYS_PAGES), page_size = sysconf(_SC_PAGESIZE);
    if (pages > 0 && page_size > 0) {
        uint64_t quarter = (uint64_t)pages * (uint64_t)page_size / 4;
        if (wanted > quarter)
            wanted = quarter;
    }
    return wanted;
}

/* Creates the model's KV pool and prefix cache. */
static strata_status create_kv(loader *l, const strata_model_options *options)
{
    strata_model *m = l->model;
    const model_params *p = &m->params;
    kv_storage storage = KV_STORAGE_F32;
    if (options != NULL && options->kv_type == STRATA_KV_F16)
        storage = KV_STORAGE_F16;
    else if (options != NULL && options->kv_type == STRATA_KV_BF16)
        storage = KV_STORAGE_BF16;
    else if (options != NULL && options->kv_type != STRATA_KV_F32)
        return strata_fail(l->err, STRATA_E_INVALID_ARGUMENT, "KV type %d is not one of f32, f16, bf16",
                           (int)options->kv_type);
    uint64_t bytes_per_token = (uint64_t)p->layer_count * (uint64_t)p->kv_head_count *
                               ((uint64_t)(p->key_length + p->value_length) * kv_storage_bytes(storage) + 8);
    kv_pool_config config = {
        .budget_bytes = options != NULL && options->kv_memory_bytes > 0 ? options->kv_memory_bytes
                                                                         : default_kv_budget(p, bytes_per_token),
        .block_tokens = KV_DEFAULT_BLOCK_TOKENS,
        .layer_count = (int32_t)p->layer_count,
        .kv_head_count = (int32_t)p->kv_head_count,
        .key_length = (int32_t)p->key_length,
        .value_length = (int32_t)p->value_length,
        .storage = storage,
    };
    strata_status status = kv_pool_create(&config, &m->kv_pool, l->err);
    if (status != STRATA_OK)
        return status;
    m->window_by_layer = calloc((size_t)p->layer_count, sizeof *m->window_by_layer);
    if (m->window_by_layer == NULL)
        return strata_fail(l->err, STRATA_E_OUT_OF_MEMORY, "cannot allocate %lld layer windows", (long long)p->layer_count);
    for (int64_t il = 0; il < p->layer_count; il++)
        m->window_by_layer[il] = m->layers[il].sliding_window ? p->sliding_window : 0;
    return kv_radix_create(m->kv_pool, m->window_by_layer, &m->prefix_cache, l->err);
}

strata_status strata_model_open(const char *path, const strata_model_options *options,
                                strata_model **out, strata_error *err)
{
    *out = NULL;
    strata_model *model = calloc(1, sizeof *model);
    if (model == NULL)
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "cannot allocate a model");
    loader l = {.model = model, .path = path, .err = err};
    strata_status status = gguf_open(path, &model->file, err);
    gguf_string architecture = {0};
    bool found = false;
    if (status == STRATA_OK)
        status = gguf_get_string(model->file, "general.architecture", &architecture, &found, err);
    if (status == STRATA_OK && !found)
        status = strata_fail(err, STRATA_E_FORMAT, "%s: key 'general.architecture' is missing", path);
    if (status == STRATA_OK) {
        model->arch = arch_find(architecture.data, architecture.length);
        if (model->arch == NULL) {
            char names[128];
            arch_list_names(names, sizeof names);
            status = strata_fail(err, STRATA_E_UNSUPPORTED,
                                 "%s: architecture '%.*s' is not supported (supported: %s)", path,
                                 (int)(architecture.length > 64 ? 64 : architecture.length),
                                 architecture.data, names);
        }
    }
    if (status == STRATA_OK) {
        snprintf(l.prefix, sizeof l.prefix, "%s.", model->arch->name);
        status = read_params(&l);
    }
    if (status == STRATA_OK)
        status = bind_weights(&l);
    if (status == STRATA_OK) {
        status = tokenizer_load(model->file, &model->tokenizer, err);
        if (status != STRATA_OK)
            strata_error_prefix(err, "%s: ", path);
    }
    if (status == STRATA_OK && tokenizer_vocab_size(model->tokenizer) < model->params.vocab_size)
        status = strata_fail(err, STRATA_E_FORMAT, "%s: the tokenizer has %lld tokens, fewer than the %lld embedding rows",
                             path, (long long)tokenizer_vocab_size(model->tokenizer),
                             (long long)model->params.vocab_size);
    if (status == STRATA_OK) {
        const model_params *p = &model->params;
        int64_t widest = p->max_feed_forward_length;
        if (p->embedding_length > widest)
            widest = p->embedding_length;
        if (p->head_count * p->value_length > widest)
            widest = p->head_count * p->value_length;
        int64_t scratch = (PANEL_ROWS + 1) * widest; /* matmul panels; attention reserves its own */
        status = compute_context_create(options != NULL ? options->threads : 0, scratch, &model->compute, err);
    }
    if (status == STRATA_OK)
        status = create_kv(&l, options);
    if (status == STRATA_OK) {
        gguf_string name = {0};
        found = false;
        if (gguf_get_string(model->file, "general.name", &name, &found, NULL) == STRATA_OK && found)
            snprintf(model->name, sizeof model->name, "%.*s", (int)(name.length > 120 ? 120 : name.length), name.data);
        else
            snprintf(model->name, sizeof model->name, "%s", model->arch->name);
    }
    if (status != STRATA_OK) {
        strata_model_close(model);
        return status;
    }
    *out = model;
    return STRATA_OK;
}

void strata_model_close(strata_model *model)
{
    if (model == NULL)
        return;
    kv_radix_destroy(model->prefix_cache);
    kv_pool_destroy(model->kv_pool);
    free(model->window_by_layer);
    compute_context_destroy(model->compute);
    tokenizer_destroy(model->tokenizer);
    free(model->layers);
    gguf_close(model->file);
    free(model);
}

const char *strata_model_architecture(const strata_model *model)
{
    return model->arch->name;
}

int32_t strata_model_vocab_size(const strata_model *model)
{
    return (int32_t)model->params.vocab_size;
}

int32_t strata_model_context_length(const strata_model *model)
{
    return (int32_t)model->params.context_length;
}

const char *strata_model_name(const strata_model *model)
{
    return model->name;
}

int strata_model_threads(const strata_model *model)
{
    return model->compute->thread_count;
}
