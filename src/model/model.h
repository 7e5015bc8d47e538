/* model/model.h: a loaded model: hyperparameters, weights bound to the mapped
 * GGUF file, tokenizer and compute context.
 *
 * model_load reads the architecture's keys, checks that every tensor the
 * descriptor needs exists with the shape the hyperparameters imply and a
 * computable type, and keeps pointers into the mapping: weights are never
 * copied or converted. */
#ifndef STRATA_MODEL_MODEL_H
#define STRATA_MODEL_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "compute/cpu/compute.h"
#include "format/gguf.h"
#include "kv/pool.h"
#include "kv/radix.h"
#include "model/arch.h"
#include "strata.h"
#include "tokenize/tokenizer.h"

typedef struct model_params {
    int64_t vocab_size;
    int64_t embedding_length;   /* n_embd */
    int64_t layer_count;
    int64_t head_count;
    int64_t kv_head_count;
    int64_t key_length;         /* head size of q and k */
    int64_t value_length;       /* head size of v */
    int64_t context_length;
    int64_t rotated_dims;       /* rope.dimension_count */
    int64_t sliding_window;     /* 0: none */
    int64_t max_feed_forward_length;
    float rms_epsilon;
    float rope_base;            /* of global layers */
    float rope_base_local;      /* of sliding-window layers */
    int64_t sliding_window_period; /* 0: all layers global; p: layer il is global iff il % p == p - 1 */
    float rope_frequency_scale; /* 1 / linear scaling factor */
    float attention_scale;      /* multiplies q . k */
    float embedding_scale;      /* multiplies embeddings (1 unless the arch scales them) */
    float final_logit_soft_cap; /* 0: none */
} model_params;

typedef struct layer_weights {
    const float *attention_norm;
    weight_matrix query, key, value, output;
    const float *query_bias, *key_bias, *value_bias; /* NULL when absent */
    const float *query_norm, *key_norm;              /* qk_norm architectures */
    const float *post_attention_norm;                /* post_norms architectures */
    const float *ffn_norm;
    weight_matrix gate, up, down;
    const float *post_ffn_norm;
    int64_t feed_forward_length;
    bool sliding_window;   /* this layer attends to a window, not the whole context */
    float rope_base;
} layer_weights;

struct strata_model {
    gguf_file *file;
    const arch_descriptor *arch;
    model_params params;
    layer_weights *layers;
    weight_matrix token_embedding;
    weight_matrix output;     /* token_embedding when tied */
    const float *output_norm;
    const float *rope_frequency_factors; /* rotated_dims / 2 values, or NULL */
    int64_t *window_by_layer;  /* per layer: its sliding window, 0 for global layers */
    tokenizer *tokenizer;
    compute_context *compute;
    kv_pool *kv_pool;          /* all KV memory of every session of this model */
    kv_radix *prefix_cache;    /* cached prompt prefixes, in that pool */
    char name[128];
};

#endif
