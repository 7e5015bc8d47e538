/* engine/forward.h: the generic forward pass over a batch of new tokens.
 *
 * forward_run takes the new tokens of one sequence (a prefill chunk or a
 * single decode token), runs every layer as described by the model's
 * architecture descriptor, stores the new keys and values in the sequence's
 * KV buffer and writes the logits of the positions asked for. */
#ifndef STRATA_ENGINE_FORWARD_H
#define STRATA_ENGINE_FORWARD_H

#include <stdbool.h>
#include <stdint.h>

#include "kv/kv_buffer.h"
#include "model/model.h"

/* Activations of one step, sized for at most max_tokens new tokens. */
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
} forward_scratch;

/* Allocates scratch for up to max_tokens tokens per step of this model. */
strata_status forward_scratch_create(const strata_model *model, int64_t max_tokens,
                                     forward_scratch **out, strata_error *err);
/* Frees scratch; accepts NULL. */
void forward_scratch_destroy(forward_scratch *scratch);

/* Runs tokens[0..count) at positions first_position.. through the model.
 * Writes logits for every token into logits ([count][vocab]) when all_logits,
 * else only the last token's ([vocab]); none when logits is NULL. count <= scratch->max_tokens, and the
 * KV buffer must have room for first_position + count positions. */
void forward_run(strata_model *model, kv_buffer *kv, forward_scratch *scratch, const int32_t *tokens,
                 int64_t count, int64_t first_position, bool all_logits, float *logits);

#endif
