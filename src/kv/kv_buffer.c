/* kv/kv_buffer.c: the contiguous per-sequence KV buffer. */
#include "kv/kv_buffer.h"

#include <stdlib.h>
#include <string.h>

#include "base/error.h"

strata_status kv_buffer_create(int64_t layer_count, int64_t kv_head_count, int64_t key_length,
                               int64_t value_length, int64_t capacity, kv_buffer **out,
                               strata_error *err)
{
    *out = NULL;
    kv_buffer *buffer = calloc(1, sizeof *buffer);
    if (buffer == NULL)
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "cannot allocate a KV buffer");
    *buffer = (kv_buffer){.layer_count = layer_count, .kv_head_count = kv_head_count,
                          .key_length = key_length, .value_length = value_length, .capacity = capacity};
    buffer->keys = calloc((size_t)layer_count, sizeof *buffer->keys);
    buffer->values = calloc((size_t)layer_count, sizeof *buffer->values);
    bool ok = buffer->keys != NULL && buffer->values != NULL;
    for (int64_t il = 0; ok && il < layer_count; il++) {
        buffer->keys[il] = malloc((size_t)(kv_head_count * capacity * key_length) * sizeof(float));
        buffer->values[il] = malloc((size_t)(kv_head_count * capacity * value_length) * sizeof(float));
        ok = buffer->keys[il] != NULL && buffer->values[il] != NULL;
    }
    if (!ok) {
        uint64_t bytes = (uint64_t)layer_count * kv_head_count * capacity * (key_length + value_length) * 4;
        kv_buffer_destroy(buffer);
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY,
                           "cannot allocate %llu bytes of KV cache for %lld positions; use a shorter context",
                           (unsigned long long)bytes, (long long)capacity);
    }
    *out = buffer;
    return STRATA_OK;
}

void kv_buffer_destroy(kv_buffer *buffer)
{
    if (buffer == NULL)
        return;
    for (int64_t il = 0; il < buffer->layer_count; il++) {
        if (buffer->keys != NULL)
            free(buffer->keys[il]);
        if (buffer->values != NULL)
            free(buffer->values[il]);
    }
    free(buffer->keys);
    free(buffer->values);
    free(buffer);
}

uint64_t kv_buffer_bytes(const kv_buffer *buffer)
{
    return (uint64_t)buffer->layer_count * (uint64_t)buffer->kv_head_count * (uint64_t)buffer->capacity *
           (uint64_t)(buffer->key_length + buffer->value_length) * sizeof(float);
}

void kv_buffer_store(kv_buffer *buffer, int64_t layer, const float *k, const float *v, int64_t tokens,
                     const int64_t *positions)
{
    int64_t heads = buffer->kv_head_count;
    for (int64_t t = 0; t < tokens; t++)
        for (int64_t h = 0; h < heads; h++) {
            memcpy(buffer->keys[layer] + (h * buffer->capacity + positions[t]) * buffer->key_length,
                   k + (t * heads + h) * buffer->key_length, (size_t)buffer->key_length * sizeof(float));
            memcpy(buffer->values[layer] + (h * buffer->capacity + positions[t]) * buffer->value_length,
                   v + (t * heads + h) * buffer->value_length, (size_t)buffer->value_length * sizeof(float));
        }
}
