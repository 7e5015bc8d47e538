/* kv/kv_buffer.h: the plain per-sequence KV buffer of the first engine.
 *
 * For every layer, keys and values of every KV head for `capacity` positions,
 * in f32, laid out [kv_head][position][head_dim] so attention reads one
 * head's keys contiguously. This is the small interface the paged block pool
 * (kv/pool.c, next) replaces: the forward pass only writes new positions and
 * hands the buffer to attention. */
#ifndef STRATA_KV_KV_BUFFER_H
#define STRATA_KV_KV_BUFFER_H

#include <stdint.h>

#include "strata.h"

typedef struct kv_buffer {
    int64_t layer_count;
    int64_t kv_head_count;
    int64_t key_length;
    int64_t value_length;
    int64_t capacity;  /* positions */
    float **keys;      /* per layer: [kv_head][capacity][key_length] */
    float **values;    /* per layer: [kv_head][capacity][value_length] */
} kv_buffer;

/* Allocates a buffer for capacity positions of every layer. */
strata_status kv_buffer_create(int64_t layer_count, int64_t kv_head_count, int64_t key_length,
                               int64_t value_length, int64_t capacity, kv_buffer **out,
                               strata_error *err);
/* Frees a buffer; accepts NULL. */
void kv_buffer_destroy(kv_buffer *buffer);
/* Returns the bytes the buffer holds. */
uint64_t kv_buffer_bytes(const kv_buffer *buffer);
/* Stores the keys and values of `tokens` new positions of one layer: k is
 * [tokens][kv_heads * key_length], v likewise, position of token t is positions[t]. */
void kv_buffer_store(kv_buffer *buffer, int64_t layer, const float *k, const float *v, int64_t tokens,
                     const int64_t *positions);

#endif
