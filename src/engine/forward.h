/* engine/forward.h: the generic forward pass over one batch step.
 *
 * A step takes several sequences, each with its own new tokens (a prefill
 * chunk or a single decode token, mixed freely). All new tokens go through
 * every projection and feed-forward matrix as one matrix product; attention
 * runs per sequence through that sequence's block tables; logits are
 * computed only for the positions asked for. */
#ifndef STRATA_ENGINE_FORWARD_H
#define STRATA_ENGINE_FORWARD_H

#include <stdbool.h>
#include <stdint.h>

#include "compute/cpu/attention.h"
#include "kv/seq.h"
#include "model/model.h"

/* One sequence's part of a step. */
typedef struct forward_item {
    kv_seq *seq;              /* its KV; the new tokens take positions kv_seq_length(seq)... */
    const int32_t *tokens;
    int64_t count;
    bool all_logits;          /* logits for every new token, else for the last one only */
    float *logits;            /* [count or 1][vocab]; NULL: no logits */
    /* Optional statistics for a KV policy: per table (layer * kv_heads + head)
     * an array the attention mass of this item's tokens [mass_first_token,
     * count) is added to, slot by slot; entries of windowed layers are NULL.
     * NULL: none collected. */
    float *const *slot_mass;
    int64_t mass_first_token;
    float *const *slot_mass_squares; /* optional, like slot_mass: the squared probabilities */
    float *const *slot_mass_all;     /* optional, like slot_mass but from every token */
    /* Optional, for an item of one token: its policy chooses per (layer, KV
     * head) which blocks attention reads (kv/policy.h); NULL: every block.
     * Excludes slot_mass (a partial view's slot indices are not the table's). */
    const struct kv_block_selection *selection;
} forward_item;

/* Activations of one step, sized for at most max_tokens new tokens in all. */
typedef struct forward_scratch {
    int64_t max_tokens;
    float *residual;   /* [tokens][n_embd] */
    float *normed;     /* [tokens][n_embd] */
    float *query;      /* [tokens][heads * key_length] */
    float *key;        /* [tokens][kv_heads * key_length] */
    float *value;      /* [tokens][kv_heads * value_length] */
    float *attention;  /* [tokens][heads * value_length] */
    float *projected;  /* [tokens][n_embd] */
    float *gate;       /* [tokens][feed_forward_length] */
    float *up;         /* [tokens][feed_forward_length] */
    int64_t *positions;
    /* Block pointers handed to attention, per KV head, grown as tables grow. */
    attention_kv_view *views;
    const void **view_keys;
    const void **view_values;
    const int32_t **view_positions;
    attention_row_reader *view_key_readers;   /* per block: how to read its rows (NULL: f32) */
    attention_row_reader *view_value_readers;
    tensor_type *view_key_types;              /* per block: the tensor type of its key rows */
    int64_t view_block_capacity; /* per KV head */
    /* Blocks an item's selection chose, per KV head: [kv_heads][chosen_capacity] and their counts. */
    int64_t *chosen;
    int64_t *chosen_counts;
    int64_t chosen_capacity;
    /* Logits of the items that want only their last token's, computed together. */
    float *last_logits;          /* [last_logits_capacity][vocab] */
    int64_t last_logits_capacity;
} forward_scratch;

/* Allocates scratch for up to max_tokens new tokens per step of this model. */
strata_status forward_scratch_create(const strata_model *model, int64_t max_tokens, forward_scratch **out,
                                     strata_error *err);
/* Frees scratch; accepts NULL. */
void forward_scratch_destroy(forward_scratch *scratch);

/* Runs one step. First reserves KV room in every item's sequence (an item
 * whose reservation fails makes the step fail with STRATA_E_KV_FULL before
 * any computation; sequences reserved earlier in the list keep their empty
 * reserved blocks, which later steps use). The items' tokens must add up to
 * at most scratch->max_tokens. */
strata_status forward_step(strata_model *model, forward_scratch *scratch, const forward_item *items,
                           int64_t item_count, strata_error *err);

/* Releases the blocks of sliding-window layers that no later token can see
 * (whole blocks only: a window keeps at most window + block_tokens - 1 slots). */
void forward_release_windows(const strata_model *model, kv_seq *seq);

#endif
