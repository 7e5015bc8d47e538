/* compute/cpu/attention.h: causal attention that reads keys and values
 * through block tables.
 *
 * For each KV head the caller describes its cache as a view: a list of
 * blocks of block_tokens slots (all full but the last), each with its keys,
 * values and the original position of every slot. The kernel reads the
 * blocks where they are (no copy into a contiguous buffer), in any storage
 * type: f32 rows are read in place, any other block comes with a row reader
 * that converts one row to f32 into a per-thread buffer of one row as it is
 * read (16-bit types, packed low-bit types: the KV store provides them), and
 * masks by the recorded positions: a new token at position p sees a slot at
 * position p' iff p' <= p and, for a sliding window w, p - p' < w. So the
 * same kernel serves full caches, windows that dropped their oldest blocks,
 * and views of different lengths per head.
 *
 * On request it also adds, per slot, the attention mass that chosen queries
 * put on it (summed over the query heads of the slot's KV group): the
 * statistic eviction policies read. */
#ifndef STRATA_COMPUTE_CPU_ATTENTION_H
#define STRATA_COMPUTE_CPU_ATTENTION_H

#include <stdint.h>

#include "compute/cpu/compute.h"

/* Reads row `slot` of a block's key or value section as width f32 values into out. */
typedef void (*attention_row_reader)(const void *section, int64_t slot, int64_t width, int64_t block_tokens,
                                     float *out);

typedef struct attention_kv_view {
    const void *const *keys;         /* per block: its key section */
    const void *const *values;       /* per block: its value section */
    const int32_t *const *positions; /* per block: block_tokens positions */
    /* Per block, how to read its rows; a NULL array or a NULL entry: rows of
     * head_dim (value_dim) f32 values, read in place. */
    const attention_row_reader *key_readers;
    const attention_row_reader *value_readers;
    /* Per block, the quant/ tensor type whose dot kernels read its key rows
     * where they are (row s at s * tensor_row_bytes(type, head_dim) of the
     * key section: f32, f16, bf16, q8_0, q4_0), so decode dots queries with
     * packed keys dequantized in registers; TENSOR_TYPE_LIMIT: read them
     * through key_readers. A NULL array: each block through its key reader,
     * or in place as f32 where it has none. */
    const tensor_type *key_types;
    int64_t slot_count;              /* filled slots */
} attention_kv_view;

typedef struct attention_args {
    const float *queries;     /* [tokens][heads * head_dim] */
    float *output;            /* [tokens][heads * value_dim] */
    const int64_t *positions; /* position of each new token */
    int64_t tokens;
    int64_t heads;
    int64_t kv_heads;
    int64_t head_dim;
    int64_t value_dim;
    int64_t block_tokens;
    int64_t window;           /* 0: none */
    float scale;              /* multiplies q . k */
    const attention_kv_view *views; /* kv_heads views */
    /* Optional statistics: NULL, or for each KV head an array of
     * views[h].slot_count floats to which the probability mass that the
     * queries of tokens [mass_first_token, tokens) put on each slot is added. */
    float *const *slot_mass;
    int64_t mass_first_token;
    /* Optional, with slot_mass: the squares of those probabilities, added alike. */
    float *const *slot_mass_squares;
    /* Optional, alone or with slot_mass: like slot_mass, for every token (from the first). */
    float *const *slot_mass_all;
} attention_args;

/* Computes softmax(q . k * scale) . v for every (token, head), spread over the threads. */
void compute_attention(compute_context *context, const attention_args *args);
/* Returns the per-thread scratch floats compute_attention needs when every view
 * holds at most max_slots slots. */
int64_t compute_attention_scratch_floats(int64_t heads, int64_t kv_heads, int64_t head_dim, int64_t value_dim,
                                         int64_t block_tokens, int64_t max_slots);

#endif
