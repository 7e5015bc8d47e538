/* kv/pool.c: the KV block pool.
 *
 * One arena, allocated at create, holds every block: budget / block_bytes of
 * them, block_bytes rounded up to 64 so each block starts on a cache line.
 * Free blocks sit on a stack of block ids; used blocks carry a refcount and
 * their owner (layer, KV head). The used and shared counts are kept up to
 * date on every alloc, retain and release, so asking for usage costs
 * nothing; kv_pool_check recounts them from the per-block state to prove
 * they agree. Misuse of this API by strata itself (retaining a free block,
 * releasing below zero, an id out of range) is a broken invariant and
 * asserts; nothing here reads outside input.
 *
 * Inside a block the four sections (keys, values, positions, scores) follow
 * each other; the key and value sections are padded to 4 bytes so the int32
 * positions and float scores are aligned even for odd counts of halves. */
#include "kv/pool.h"

#include <assert.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "quant/kernels.h"

enum {
    KV_BLOCK_ALIGNMENT = 64,
    KV_MAX_BLOCK_TOKENS = 1 << 16,
    KV_MAX_VECTOR_LENGTH = 1 << 20,
};

struct kv_pool {
    kv_pool_config config;    /* block_tokens filled in */
    uint64_t block_bytes;
    uint64_t values_offset;   /* byte offsets of the sections inside a block */
    uint64_t positions_offset;
    uint64_t scores_offset;
    int32_t capacity;         /* blocks in the arena */
    unsigned char *arena_raw; /* what calloc returned */
    unsigned char *arena;     /* arena_raw aligned to KV_BLOCK_ALIGNMENT */
    int32_t *refcounts;       /* per block; 0 when free */
    int32_t *owners;          /* per block: layer * kv_head_count + kv_head while used */
    kv_block_id *free_stack;  /* free_stack[0 .. free_count) are the free blocks */
    int32_t free_count;
    int64_t used_blocks;      /* maintained incrementally: refcount >= 1 */
    int64_t shared_blocks;    /* refcount >= 2 */
};

static uint64_t round_up(uint64_t value, uint64_t multiple)
{
    return (value + multiple - 1) / multiple * multiple;
}

static void assert_block(const kv_pool *pool, kv_block_id block)
{
    (void)pool;
    (void)block;
    assert(block >= 0 && block < pool->capacity);
}

static void assert_used(const kv_pool *pool, kv_block_id block)
{
    assert_block(pool, block);
    assert(pool->refcounts[block] > 0);
}

static unsigned char *block_base(const kv_pool *pool, kv_block_id block)
{
    assert_used(pool, block);
    return pool->arena + (uint64_t)block * pool->block_bytes;
}

static strata_status check_dimension(const char *name, int32_t value, int32_t limit, strata_error *err)
{
    if (value < 1 || value > limit)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT, "KV pool: %s is %" PRId32 ", outside 1 .. %" PRId32,
                           name, value, limit);
    return STRATA_OK;
}

static strata_status check_config(const kv_pool_config *config, strata_error *err)
{
    strata_status status;
    if ((status = check_dimension("block_tokens", config->block_tokens, KV_MAX_BLOCK_TOKENS, err)) != STRATA_OK ||
        (status = check_dimension("layer_count", config->layer_count, INT32_MAX, err)) != STRATA_OK ||
        (status = check_dimension("kv_head_count", config->kv_head_count, INT32_MAX, err)) != STRATA_OK ||
        (status = check_dimension("key_length", config->key_length, KV_MAX_VECTOR_LENGTH, err)) != STRATA_OK ||
        (status = check_dimension("value_length", config->value_length, KV_MAX_VECTOR_LENGTH, err)) != STRATA_OK)
        return status;
    if (config->storage != KV_STORAGE_F32 && config->storage != KV_STORAGE_F16 && config->storage != KV_STORAGE_BF16)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                           "KV pool: storage type %d is not one of f32 (%d), f16 (%d), bf16 (%d)",
                           (int)config->storage, KV_STORAGE_F32, KV_STORAGE_F16, KV_STORAGE_BF16);
    return STRATA_OK;
}

strata_status kv_pool_create(const kv_pool_config *config, kv_pool **out, strata_error *err)
{
    *out = NULL;
    kv_pool_config filled = *config;
    if (filled.block_tokens == 0)
        filled.block_tokens = KV_DEFAULT_BLOCK_TOKENS;
    strata_status status = check_config(&filled, err);
    if (status != STRATA_OK)
        return status;

    uint64_t tokens = (uint64_t)filled.block_tokens;
    uint64_t value_bytes = kv_storage_bytes(filled.storage);
    uint64_t values_offset = round_up(tokens * (uint64_t)filled.key_length * value_bytes, 4);
    uint64_t positions_offset = values_offset + round_up(tokens * (uint64_t)filled.value_length * value_bytes, 4);
    uint64_t scores_offset = positions_offset + tokens * sizeof(int32_t);
    uint64_t block_bytes = round_up(scores_offset + tokens * sizeof(float), KV_BLOCK_ALIGNMENT);

    /* Block ids are int32, so a budget beyond INT32_MAX blocks is simply not used. */
    uint64_t capacity = config->budget_bytes / block_bytes;
    if (capacity > INT32_MAX)
        capacity = INT32_MAX;
    int64_t tables = (int64_t)filled.layer_count * filled.kv_head_count;
    if ((int64_t)capacity < tables)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                           "KV budget of %" PRIu64 " bytes holds %" PRIu64 " blocks of %" PRIu64
                           " bytes, fewer than the %" PRId64 " needed for one block per layer and KV head (%" PRId32
                           " layers x %" PRId32 " heads)",
                           config->budget_bytes, capacity, block_bytes, tables, filled.layer_count,
                           filled.kv_head_count);

    kv_pool *pool = calloc(1, sizeof *pool);
    if (pool == NULL)
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "cannot allocate a KV pool");
    *pool = (kv_pool){.config = filled,
                      .block_bytes = block_bytes,
                      .values_offset = values_offset,
                      .positions_offset = positions_offset,
                      .scores_offset = scores_offset,
                      .capacity = (int32_t)capacity};
    /* calloc: a large arena comes zeroed from the system, touched only as blocks are used. */
    pool->arena_raw = calloc(1, (size_t)(capacity * block_bytes) + KV_BLOCK_ALIGNMENT);
    pool->refcounts = calloc((size_t)capacity, sizeof *pool->refcounts);
    pool->owners = calloc((size_t)capacity, sizeof *pool->owners);
    pool->free_stack = calloc((size_t)capacity, sizeof *pool->free_stack);
    if (pool->arena_raw == NULL || pool->refcounts == NULL || pool->owners == NULL || pool->free_stack == NULL) {
        kv_pool_destroy(pool);
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY,
                           "cannot allocate the KV pool's %" PRIu64 " blocks of %" PRIu64 " bytes (%" PRIu64 " bytes)",
                           capacity, block_bytes, capacity * block_bytes);
    }
    uintptr_t raw = (uintptr_t)pool->arena_raw;
    pool->arena = pool->arena_raw + (round_up(raw, KV_BLOCK_ALIGNMENT) - raw);
    /* Stacked in reverse so the first allocations hand out blocks 0, 1, 2, ... */
    for (int32_t i = 0; i < pool->capacity; i++)
        pool->free_stack[i] = pool->capacity - 1 - i;
    pool->free_count = pool->capacity;
    *out = pool;
    return STRATA_OK;
}

void kv_pool_destroy(kv_pool *pool)
{
    if (pool == NULL)
        return;
    free(pool->arena_raw);
    free(pool->refcounts);
    free(pool->owners);
    free(pool->free_stack);
    free(pool);
}

const kv_pool_config *kv_pool_configuration(const kv_pool *pool)
{
    return &pool->config;
}

uint64_t kv_pool_block_bytes(const kv_pool *pool)
{
    return pool->block_bytes;
}

int64_t kv_pool_capacity(const kv_pool *pool)
{
    return pool->capacity;
}

int64_t kv_pool_free_blocks(const kv_pool *pool)
{
    return pool->free_count;
}

strata_status kv_pool_alloc(kv_pool *pool, int32_t layer, int32_t kv_head, kv_block_id *out, strata_error *err)
{
    assert(layer >= 0 && layer < pool->config.layer_count);
    assert(kv_head >= 0 && kv_head < pool->config.kv_head_count);
    *out = KV_BLOCK_NONE;
    if (pool->free_count == 0)
        return strata_fail(err, STRATA_E_KV_FULL,
                           "KV pool is full: all %" PRId32 " blocks of %" PRIu64 " bytes are in use (budget %" PRIu64
                           " bytes); no block for layer %" PRId32 ", KV head %" PRId32,
                           pool->capacity, pool->block_bytes, pool->config.budget_bytes, layer, kv_head);
    kv_block_id block = pool->free_stack[--pool->free_count];
    assert(pool->refcounts[block] == 0);
    pool->refcounts[block] = 1;
    pool->owners[block] = layer * pool->config.kv_head_count + kv_head;
    pool->used_blocks++;
    /* Unset slots: no position, no statistics. Keys and values are left as they are. */
    int32_t *positions = kv_block_positions(pool, block);
    for (int32_t i = 0; i < pool->config.block_tokens; i++)
        positions[i] = -1;
    memset(kv_block_scores(pool, block), 0, (size_t)pool->config.block_tokens * sizeof(float));
    *out = block;
    return STRATA_OK;
}

void kv_pool_retain(kv_pool *pool, kv_block_id block)
{
    assert_used(pool, block);
    if (++pool->refcounts[block] == 2)
        pool->shared_blocks++;
}

void kv_pool_release(kv_pool *pool, kv_block_id block)
{
    assert_used(pool, block);
    int32_t refcount = --pool->refcounts[block];
    if (refcount == 1)
        pool->shared_blocks--;
    if (refcount == 0) {
        pool->used_blocks--;
        assert(pool->free_count < pool->capacity);
        pool->free_stack[pool->free_count++] = block;
    }
}

int32_t kv_pool_refcount(const kv_pool *pool, kv_block_id block)
{
    assert_block(pool, block);
    return pool->refcounts[block];
}

void kv_pool_block_owner(const kv_pool *pool, kv_block_id block, int32_t *layer, int32_t *kv_head)
{
    assert_used(pool, block);
    *layer = pool->owners[block] / pool->config.kv_head_count;
    *kv_head = pool->owners[block] % pool->config.kv_head_count;
}

void *kv_block_keys(kv_pool *pool, kv_block_id block)
{
    return block_base(pool, block);
}

void *kv_block_values(kv_pool *pool, kv_block_id block)
{
    return block_base(pool, block) + pool->values_offset;
}

int32_t *kv_block_positions(kv_pool *pool, kv_block_id block)
{
    return (int32_t *)(void *)(block_base(pool, block) + pool->positions_offset);
}

float *kv_block_scores(kv_pool *pool, kv_block_id block)
{
    return (float *)(void *)(block_base(pool, block) + pool->scores_offset);
}

const void *kv_block_keys_const(const kv_pool *pool, kv_block_id block)
{
    return block_base(pool, block);
}

const void *kv_block_values_const(const kv_pool *pool, kv_block_id block)
{
    return block_base(pool, block) + pool->values_offset;
}

const int32_t *kv_block_positions_const(const kv_pool *pool, kv_block_id block)
{
    return (const int32_t *)(const void *)(block_base(pool, block) + pool->positions_offset);
}

void kv_pool_copy_slots(kv_pool *pool, kv_block_id from, kv_block_id to, int32_t slots)
{
    unsigned char *source = block_base(pool, from);
    unsigned char *target = block_base(pool, to);
    assert(from != to);
    assert(pool->owners[from] == pool->owners[to]);
    assert(slots >= 0 && slots <= pool->config.block_tokens);
    uint64_t value_bytes = kv_storage_bytes(pool->config.storage);
    uint64_t section_bytes[4][2] = {
        /* offset of the section, bytes of one slot in it */
        {0, (uint64_t)pool->config.key_length * value_bytes},
        {pool->values_offset, (uint64_t)pool->config.value_length * value_bytes},
        {pool->positions_offset, sizeof(int32_t)},
        {pool->scores_offset, sizeof(float)},
    };
    for (int s = 0; s < 4; s++)
        memcpy(target + section_bytes[s][0], source + section_bytes[s][0], (size_t)(section_bytes[s][1] * slots));
}

/* bfloat16 is the top half of a float; rounding to nearest even adds 0x7fff
 * plus the lowest kept bit before truncating. NaNs stay NaN (quieted) rather
 * than rounding into infinity. */
static uint16_t f32_to_bf16(float value)
{
    uint32_t bits;
    memcpy(&bits, &value, sizeof bits);
    if ((bits & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((bits >> 16) | 0x0040u);
    bits += 0x7fffu + ((bits >> 16) & 1u);
    return (uint16_t)(bits >> 16);
}

/* The 16-bit storage types: conversions from and to f32, by storage type. */
static const struct {
    uint16_t (*from_f32)(float value);
    float (*to_f32)(uint16_t half);
} half_types[] = {
    [KV_STORAGE_F16] = {quant_f32_to_f16, quant_f16_to_f32},
    [KV_STORAGE_BF16] = {f32_to_bf16, quant_bf16_to_f32},
};

void kv_storage_store(kv_storage storage, void *dst, const float *src, int64_t n)
{
    if (storage == KV_STORAGE_F32) {
        memcpy(dst, src, (size_t)n * sizeof(float));
        return;
    }
    assert(storage == KV_STORAGE_F16 || storage == KV_STORAGE_BF16);
    uint16_t *halves = dst;
    for (int64_t i = 0; i < n; i++)
        halves[i] = half_types[storage].from_f32(src[i]);
}

void kv_storage_load(kv_storage storage, const void *src, float *dst, int64_t n)
{
    if (storage == KV_STORAGE_F32) {
        memcpy(dst, src, (size_t)n * sizeof(float));
        return;
    }
    assert(storage == KV_STORAGE_F16 || storage == KV_STORAGE_BF16);
    const uint16_t *halves = src;
    for (int64_t i = 0; i < n; i++)
        dst[i] = half_types[storage].to_f32(halves[i]);
}

uint32_t kv_storage_bytes(kv_storage storage)
{
    return storage == KV_STORAGE_F32 ? 4 : 2;
}

const char *kv_storage_name(kv_storage storage)
{
    switch (storage) {
    case KV_STORAGE_F32: return "f32";
    case KV_STORAGE_F16: return "f16";
    case KV_STORAGE_BF16: return "bf16";
    }
    return "unknown";
}

void kv_pool_usage_get(const kv_pool *pool, kv_pool_usage *usage)
{
    int64_t free_blocks = pool->free_count;
    *usage = (kv_pool_usage){
        .total_blocks = pool->capacity,
        .used_blocks = pool->used_blocks,
        .shared_blocks = pool->shared_blocks,
        .free_blocks = free_blocks,
        .block_bytes = pool->block_bytes,
        .used_bytes = (uint64_t)pool->used_blocks * pool->block_bytes,
        .shared_bytes = (uint64_t)pool->shared_blocks * pool->block_bytes,
        .free_bytes = (uint64_t)free_blocks * pool->block_bytes,
    };
}

void kv_pool_usage_by_owner(const kv_pool *pool, int64_t *blocks_by_layer, int64_t *blocks_by_layer_head)
{
    int32_t heads = pool->config.kv_head_count;
    if (blocks_by_layer != NULL)
        memset(blocks_by_layer, 0, (size_t)pool->config.layer_count * sizeof *blocks_by_layer);
    if (blocks_by_layer_head != NULL)
        memset(blocks_by_layer_head, 0, (size_t)pool->config.layer_count * heads * sizeof *blocks_by_layer_head);
    for (int32_t block = 0; block < pool->capacity; block++) {
        if (pool->refcounts[block] == 0)
            continue;
        if (blocks_by_layer != NULL)
            blocks_by_layer[pool->owners[block] / heads]++;
        if (blocks_by_layer_head != NULL)
            blocks_by_layer_head[pool->owners[block]]++;
    }
}

strata_status kv_pool_check(const kv_pool *pool, strata_error *err)
{
    int64_t used = 0, shared = 0;
    int64_t tables = (int64_t)pool->config.layer_count * pool->config.kv_head_count;
    for (int32_t block = 0; block < pool->capacity; block++) {
        int32_t refcount = pool->refcounts[block];
        if (refcount < 0)
            return strata_fail(err, STRATA_E_INTERNAL, "KV pool: block %" PRId32 " has refcount %" PRId32, block,
                               refcount);
        if (refcount > 0 && (pool->owners[block] < 0 || pool->owners[block] >= tables))
            return strata_fail(err, STRATA_E_INTERNAL,
                               "KV pool: used block %" PRId32 " has owner %" PRId32 ", outside 0 .. %" PRId64, block,
                               pool->owners[block], tables - 1);
        used += refcount >= 1;
        shared += refcount >= 2;
    }
    if (used != pool->used_blocks || shared != pool->shared_blocks)
        return strata_fail(err, STRATA_E_INTERNAL,
                           "KV pool: counters say %" PRId64 " used and %" PRId64
                           " shared blocks, the blocks say %" PRId64 " and %" PRId64,
                           pool->used_blocks, pool->shared_blocks, used, shared);
    if (pool->free_count != pool->capacity - used)
        return strata_fail(err, STRATA_E_INTERNAL,
                           "KV pool: %" PRId32 " blocks on the free list, but %" PRId64 " of %" PRId32 " are unused",
                           pool->free_count, pool->capacity - used, pool->capacity);
    unsigned char *seen = calloc((size_t)pool->capacity, 1);
    if (seen == NULL)
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "KV pool check: cannot allocate %" PRId32 " marks",
                           pool->capacity);
    strata_status status = STRATA_OK;
    for (int32_t i = 0; i < pool->free_count && status == STRATA_OK; i++) {
        kv_block_id block = pool->free_stack[i];
        if (block < 0 || block >= pool->capacity)
            status = strata_fail(err, STRATA_E_INTERNAL,
                                 "KV pool: free list entry %" PRId32 " is block %" PRId32 ", outside 0 .. %" PRId32, i,
                                 block, pool->capacity - 1);
        else if (pool->refcounts[block] != 0)
            status = strata_fail(err, STRATA_E_INTERNAL,
                                 "KV pool: block %" PRId32 " is on the free list with refcount %" PRId32, block,
                                 pool->refcounts[block]);
        else if (seen[block]++)
            status = strata_fail(err, STRATA_E_INTERNAL, "KV pool: block %" PRId32 " is on the free list twice",
                                 block);
    }
    free(seen);
    return status;
}
