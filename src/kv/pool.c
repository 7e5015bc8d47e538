/* kv/pool.c: the KV block pool.
 *
 * One arena, allocated at create, holds every block. It is cut into pages
 * of one base block each (budget / page_bytes of them, rounded up to 64 so
 * each starts on a cache line). A page is free, holds one base block, or is
 * carved into as many packed blocks of one type as fit (at most
 * KV_PAGE_MAX_BLOCKS). A block id is page * KV_PAGE_MAX_BLOCKS + place.
 * Free pages sit on a stack; pages of each packed type with a free place
 * sit on a doubly linked list, so taking a packed block first fills pages
 * already carved for that type, and a page whose last block is released
 * goes back to the free stack. Used blocks carry a refcount and their owner
 * (layer, KV head). The used/shared counts and bytes are kept up to date on
 * every alloc, retain and release, so asking for usage costs nothing;
 * kv_pool_check recounts them from the per-block state to prove they agree.
 * Misuse of this API by strata itself (retaining a free block, releasing
 * below zero, an id out of range) is a broken invariant and asserts;
 * nothing here reads outside input.
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
#include "kv/packed.h"
#include "quant/kernels.h"

enum {
    KV_BLOCK_ALIGNMENT = 64,
    KV_MAX_BLOCK_TOKENS = 1 << 16,
    KV_MAX_VECTOR_LENGTH = 1 << 20,
    KV_PAGE_NONE = -1,
};

/* Where the sections of a block of one storage type lie. */
typedef struct kv_block_layout {
    uint64_t block_bytes;     /* 0: the pool cannot hold this type */
    uint64_t values_offset;
    uint64_t positions_offset;
    uint64_t scores_offset;
    int32_t per_page;         /* blocks of this type in one page */
} kv_block_layout;

struct kv_pool {
    kv_pool_config config;    /* block_tokens filled in */
    kv_block_layout layouts[KV_STORAGE_COUNT];
    uint64_t page_bytes;      /* = layouts[config.storage].block_bytes */
    int32_t capacity;         /* pages in the arena */
    unsigned char *arena_raw; /* what calloc returned */
    unsigned char *arena;     /* arena_raw aligned to KV_BLOCK_ALIGNMENT */
    int32_t *refcounts;       /* per block id; 0 when free */
    int32_t *owners;          /* per block id: layer * kv_head_count + kv_head while used */
    int8_t *page_types;       /* per page: its storage type, or -1 while free */
    uint32_t *page_used;      /* per page: bit i set when place i holds a used block */
    int32_t *page_next;       /* per page: links of its type's list of pages with a free place */
    int32_t *page_previous;
    int32_t partial_pages[KV_STORAGE_COUNT]; /* per type: first page of that list, or KV_PAGE_NONE */
    int32_t *free_stack;      /* free_stack[0 .. free_count) are the free pages */
    int32_t free_count;
    int64_t used_blocks;      /* maintained incrementally: refcount >= 1 */
    int64_t shared_blocks;    /* refcount >= 2 */
    uint64_t used_bytes;      /* bytes of the used blocks, by type */
    uint64_t shared_bytes;
    uint64_t partial_free_bytes; /* free places of carved pages */
    float *staging;           /* one block's rows as f32, for conversions between types */
};

static uint64_t round_up(uint64_t value, uint64_t multiple)
{
    return (value + multiple - 1) / multiple * multiple;
}

static int32_t page_of(kv_block_id block)
{
    return block / KV_PAGE_MAX_BLOCKS;
}

static int32_t place_of(kv_block_id block)
{
    return block % KV_PAGE_MAX_BLOCKS;
}

static void assert_block(const kv_pool *pool, kv_block_id block)
{
    (void)pool;
    (void)block;
    assert(block >= 0 && page_of(block) < pool->capacity);
}

static void assert_used(const kv_pool *pool, kv_block_id block)
{
    assert_block(pool, block);
    assert(pool->refcounts[block] > 0);
}

static const kv_block_layout *layout_of(const kv_pool *pool, kv_block_id block)
{
    return &pool->layouts[pool->page_types[page_of(block)]];
}

static unsigned char *block_base(const kv_pool *pool, kv_block_id block)
{
    assert_used(pool, block);
    return pool->arena + (uint64_t)page_of(block) * pool->page_bytes +
           (uint64_t)place_of(block) * layout_of(pool, block)->block_bytes;
}

/* Bytes of one block's key and value sections for a storage type. */
static void section_bytes(const kv_pool_config *config, kv_storage storage, uint64_t *key_bytes,
                          uint64_t *value_bytes)
{
    uint64_t tokens = (uint64_t)config->block_tokens;
    if (!kv_storage_is_packed(storage)) {
        *key_bytes = tokens * (uint64_t)config->key_length * kv_storage_bytes(storage);
        *value_bytes = tokens * (uint64_t)config->value_length * kv_storage_bytes(storage);
        return;
    }
    kv_packed_type type = (kv_packed_type)(storage - KV_STORAGE_Q8);
    *key_bytes = kv_packed_key_bytes(type, config->block_tokens, config->key_length);
    *value_bytes = kv_packed_value_bytes(type, config->block_tokens, config->value_length);
}

static kv_block_layout make_layout(const kv_pool_config *config, kv_storage storage)
{
    uint64_t key_bytes, value_bytes, tokens = (uint64_t)config->block_tokens;
    section_bytes(config, storage, &key_bytes, &value_bytes);
    kv_block_layout layout = {0};
    layout.values_offset = round_up(key_bytes, 4);
    layout.positions_offset = layout.values_offset + round_up(value_bytes, 4);
    layout.scores_offset = layout.positions_offset + tokens * sizeof(int32_t);
    layout.block_bytes = round_up(layout.scores_offset + tokens * sizeof(float), KV_BLOCK_ALIGNMENT);
    return layout;
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

/* Whether a packed type can live in this pool: rows in whole groups of 32, blocks smaller than a page. */
static bool packed_fits(const kv_pool_config *config, kv_storage storage, uint64_t page_bytes)
{
    if (config->key_length % KV_PACKED_GROUP != 0 || config->value_length % KV_PACKED_GROUP != 0)
        return false;
    return make_layout(config, storage).block_bytes < page_bytes;
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
    kv_block_layout base = make_layout(&filled, filled.storage);
    uint64_t page_bytes = base.block_bytes;

    /* Block ids are int32 (page * KV_PAGE_MAX_BLOCKS + place), so pages beyond that are simply not used. */
    uint64_t capacity = config->budget_bytes / page_bytes;
    if (capacity > INT32_MAX / KV_PAGE_MAX_BLOCKS)
        capacity = INT32_MAX / KV_PAGE_MAX_BLOCKS;
    int64_t tables = (int64_t)filled.layer_count * filled.kv_head_count;
    if ((int64_t)capacity < tables)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                           "KV budget of %" PRIu64 " bytes holds %" PRIu64 " blocks of %" PRIu64
                           " bytes, fewer than the %" PRId64 " needed for one block per layer and KV head (%" PRId32
                           " layers x %" PRId32 " heads)",
                           config->budget_bytes, capacity, page_bytes, tables, filled.layer_count,
                           filled.kv_head_count);

    kv_pool *pool = calloc(1, sizeof *pool);
    if (pool == NULL)
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "cannot allocate a KV pool");
    *pool = (kv_pool){.config = filled, .page_bytes = page_bytes, .capacity = (int32_t)capacity};
    for (int t = 0; t < KV_STORAGE_COUNT; t++) {
        pool->partial_pages[t] = KV_PAGE_NONE;
        kv_storage storage = (kv_storage)t;
        if (storage == filled.storage) {
            pool->layouts[t] = base;
            pool->layouts[t].per_page = 1;
        } else if (kv_storage_is_packed(storage) && packed_fits(&filled, storage, page_bytes)) {
            pool->layouts[t] = make_layout(&filled, storage);
            uint64_t per_page = page_bytes / pool->layouts[t].block_bytes;
            pool->layouts[t].per_page = (int32_t)(per_page < KV_PAGE_MAX_BLOCKS ? per_page : KV_PAGE_MAX_BLOCKS);
        }
    }
    size_t ids = (size_t)capacity * KV_PAGE_MAX_BLOCKS;
    /* calloc: a large arena comes zeroed from the system, touched only as blocks are used. */
    pool->arena_raw = calloc(1, (size_t)(capacity * page_bytes) + KV_BLOCK_ALIGNMENT);
    pool->refcounts = calloc(ids, sizeof *pool->refcounts);
    pool->owners = calloc(ids, sizeof *pool->owners);
    pool->page_types = malloc((size_t)capacity * sizeof *pool->page_types);
    pool->page_used = calloc((size_t)capacity, sizeof *pool->page_used);
    pool->page_next = malloc((size_t)capacity * sizeof *pool->page_next);
    pool->page_previous = malloc((size_t)capacity * sizeof *pool->page_previous);
    pool->free_stack = calloc((size_t)capacity, sizeof *pool->free_stack);
    pool->staging = malloc((size_t)filled.block_tokens * (size_t)(filled.key_length + filled.value_length) *
                           sizeof *pool->staging);
    if (pool->staging == NULL || pool->arena_raw == NULL || pool->refcounts == NULL || pool->owners == NULL || pool->page_types == NULL ||
        pool->page_used == NULL || pool->page_next == NULL || pool->page_previous == NULL ||
        pool->free_stack == NULL) {
        kv_pool_destroy(pool);
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY,
                           "cannot allocate the KV pool's %" PRIu64 " blocks of %" PRIu64 " bytes (%" PRIu64 " bytes)",
                           capacity, page_bytes, capacity * page_bytes);
    }
    uintptr_t raw = (uintptr_t)pool->arena_raw;
    pool->arena = pool->arena_raw + (round_up(raw, KV_BLOCK_ALIGNMENT) - raw);
    /* Stacked in reverse so the first allocations hand out pages 0, 1, 2, ... */
    for (int32_t i = 0; i < pool->capacity; i++) {
        pool->free_stack[i] = pool->capacity - 1 - i;
        pool->page_types[i] = -1;
        pool->page_next[i] = pool->page_previous[i] = KV_PAGE_NONE;
    }
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
    free(pool->page_types);
    free(pool->page_used);
    free(pool->page_next);
    free(pool->page_previous);
    free(pool->free_stack);
    free(pool->staging);
    free(pool);
}

const kv_pool_config *kv_pool_configuration(const kv_pool *pool)
{
    return &pool->config;
}

uint64_t kv_pool_block_bytes(const kv_pool *pool)
{
    return pool->page_bytes;
}

uint64_t kv_pool_storage_block_bytes(const kv_pool *pool, kv_storage storage)
{
    return (int)storage >= 0 && storage < KV_STORAGE_COUNT ? pool->layouts[storage].block_bytes : 0;
}

int64_t kv_pool_capacity(const kv_pool *pool)
{
    return pool->capacity;
}

int64_t kv_pool_block_id_limit(const kv_pool *pool)
{
    return (int64_t)pool->capacity * KV_PAGE_MAX_BLOCKS;
}

int64_t kv_pool_free_blocks(const kv_pool *pool)
{
    return pool->free_count;
}

strata_status kv_pool_check_storage(const kv_pool *pool, kv_storage storage, strata_error *err)
{
    if ((int)storage < 0 || storage >= KV_STORAGE_COUNT)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT, "KV storage type %d does not exist", (int)storage);
    if (storage == pool->config.storage || pool->layouts[storage].block_bytes > 0)
        return STRATA_OK;
    if (!kv_storage_is_packed(storage))
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                           "KV storage %s differs from the pool's %s: 16-bit and f32 blocks are the base type, "
                           "chosen when the model is opened (--kv-type)",
                           kv_storage_name(storage), kv_storage_name(pool->config.storage));
    if (pool->config.key_length % KV_PACKED_GROUP != 0 || pool->config.value_length % KV_PACKED_GROUP != 0)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                           "KV storage %s packs rows in groups of %d values; this model's keys have %" PRId32
                           " and values %" PRId32,
                           kv_storage_name(storage), KV_PACKED_GROUP, pool->config.key_length,
                           pool->config.value_length);
    return strata_fail(err, STRATA_E_INVALID_ARGUMENT, "KV storage %s saves nothing over the pool's %s blocks",
                       kv_storage_name(storage), kv_storage_name(pool->config.storage));
}

static void partial_list_add(kv_pool *pool, int32_t page)
{
    int type = pool->page_types[page];
    pool->page_previous[page] = KV_PAGE_NONE;
    pool->page_next[page] = pool->partial_pages[type];
    if (pool->partial_pages[type] != KV_PAGE_NONE)
        pool->page_previous[pool->partial_pages[type]] = page;
    pool->partial_pages[type] = page;
}

static void partial_list_remove(kv_pool *pool, int32_t page)
{
    int type = pool->page_types[page];
    if (pool->page_previous[page] != KV_PAGE_NONE)
        pool->page_next[pool->page_previous[page]] = pool->page_next[page];
    else
        pool->partial_pages[type] = pool->page_next[page];
    if (pool->page_next[page] != KV_PAGE_NONE)
        pool->page_previous[pool->page_next[page]] = pool->page_previous[page];
    pool->page_next[page] = pool->page_previous[page] = KV_PAGE_NONE;
}

static uint32_t full_mask(int32_t per_page)
{
    return per_page >= 32 ? UINT32_MAX : (1u << per_page) - 1u;
}

strata_status kv_pool_alloc_typed(kv_pool *pool, int32_t layer, int32_t kv_head, kv_storage storage,
                                  kv_block_id *out, strata_error *err)
{
    assert(layer >= 0 && layer < pool->config.layer_count);
    assert(kv_head >= 0 && kv_head < pool->config.kv_head_count);
    assert((int)storage >= 0 && storage < KV_STORAGE_COUNT && pool->layouts[storage].block_bytes > 0);
    *out = KV_BLOCK_NONE;
    const kv_block_layout *layout = &pool->layouts[storage];
    int32_t page = pool->partial_pages[storage];
    if (page == KV_PAGE_NONE) {
        if (pool->free_count == 0)
            return strata_fail(err, STRATA_E_KV_FULL,
                               "KV pool is full: all %" PRId32 " blocks of %" PRIu64 " bytes are in use (budget %" PRIu64
                               " bytes); no %s block for layer %" PRId32 ", KV head %" PRId32,
                               pool->capacity, pool->page_bytes, pool->config.budget_bytes, kv_storage_name(storage),
                               layer, kv_head);
        page = pool->free_stack[--pool->free_count];
        assert(pool->page_types[page] == -1 && pool->page_used[page] == 0);
        pool->page_types[page] = (int8_t)storage;
        if (layout->per_page > 1) {
            partial_list_add(pool, page);
            pool->partial_free_bytes += (uint64_t)layout->per_page * layout->block_bytes;
        }
    }
    int32_t place = 0;
    while (pool->page_used[page] & (1u << place))
        place++;
    assert(place < layout->per_page);
    pool->page_used[page] |= 1u << place;
    if (layout->per_page > 1) {
        pool->partial_free_bytes -= layout->block_bytes;
        if (pool->page_used[page] == full_mask(layout->per_page))
            partial_list_remove(pool, page);
    }
    kv_block_id block = page * KV_PAGE_MAX_BLOCKS + place;
    assert(pool->refcounts[block] == 0);
    pool->refcounts[block] = 1;
    pool->owners[block] = layer * pool->config.kv_head_count + kv_head;
    pool->used_blocks++;
    pool->used_bytes += layout->block_bytes;
    /* Unset slots: no position, no statistics. Keys and values are left as they are. */
    int32_t *positions = kv_block_positions(pool, block);
    for (int32_t i = 0; i < pool->config.block_tokens; i++)
        positions[i] = -1;
    memset(kv_block_scores(pool, block), 0, (size_t)pool->config.block_tokens * sizeof(float));
    *out = block;
    return STRATA_OK;
}

strata_status kv_pool_alloc(kv_pool *pool, int32_t layer, int32_t kv_head, kv_block_id *out, strata_error *err)
{
    return kv_pool_alloc_typed(pool, layer, kv_head, pool->config.storage, out, err);
}

kv_storage kv_block_storage(const kv_pool *pool, kv_block_id block)
{
    assert_used(pool, block);
    return (kv_storage)pool->page_types[page_of(block)];
}

uint64_t kv_block_bytes(const kv_pool *pool, kv_block_id block)
{
    assert_used(pool, block);
    return layout_of(pool, block)->block_bytes;
}

void kv_pool_retain(kv_pool *pool, kv_block_id block)
{
    assert_used(pool, block);
    if (++pool->refcounts[block] == 2) {
        pool->shared_blocks++;
        pool->shared_bytes += layout_of(pool, block)->block_bytes;
    }
}

void kv_pool_release(kv_pool *pool, kv_block_id block)
{
    assert_used(pool, block);
    const kv_block_layout *layout = layout_of(pool, block);
    int32_t refcount = --pool->refcounts[block];
    if (refcount == 1) {
        pool->shared_blocks--;
        pool->shared_bytes -= layout->block_bytes;
    }
    if (refcount != 0)
        return;
    pool->used_blocks--;
    pool->used_bytes -= layout->block_bytes;
    int32_t page = page_of(block);
    bool was_full = pool->page_used[page] == full_mask(layout->per_page);
    pool->page_used[page] &= ~(1u << place_of(block));
    if (layout->per_page > 1) {
        pool->partial_free_bytes += layout->block_bytes;
        if (was_full)
            partial_list_add(pool, page);
    }
    if (pool->page_used[page] == 0) {
        if (layout->per_page > 1) {
            partial_list_remove(pool, page);
            pool->partial_free_bytes -= (uint64_t)layout->per_page * layout->block_bytes;
        }
        pool->page_types[page] = -1;
        assert(pool->free_count < pool->capacity);
        pool->free_stack[pool->free_count++] = page;
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
    return block_base(pool, block) + layout_of(pool, block)->values_offset;
}

int32_t *kv_block_positions(kv_pool *pool, kv_block_id block)
{
    return (int32_t *)(void *)(block_base(pool, block) + layout_of(pool, block)->positions_offset);
}

float *kv_block_scores(kv_pool *pool, kv_block_id block)
{
    return (float *)(void *)(block_base(pool, block) + layout_of(pool, block)->scores_offset);
}

const void *kv_block_keys_const(const kv_pool *pool, kv_block_id block)
{
    return block_base(pool, block);
}

const void *kv_block_values_const(const kv_pool *pool, kv_block_id block)
{
    return block_base(pool, block) + layout_of(pool, block)->values_offset;
}

const int32_t *kv_block_positions_const(const kv_pool *pool, kv_block_id block)
{
    return (const int32_t *)(const void *)(block_base(pool, block) + layout_of(pool, block)->positions_offset);
}

void kv_block_read_key(const kv_pool *pool, kv_block_id block, int32_t slot, float *out)
{
    kv_row_reader reader = kv_storage_key_reader(kv_block_storage(pool, block));
    int32_t width = pool->config.key_length;
    const float *keys = kv_block_keys_const(pool, block);
    if (reader == NULL)
        memcpy(out, keys + (size_t)slot * (size_t)width, (size_t)width * sizeof(float));
    else
        reader(keys, slot, width, pool->config.block_tokens, out);
}

void kv_block_read_value(const kv_pool *pool, kv_block_id block, int32_t slot, float *out)
{
    kv_row_reader reader = kv_storage_value_reader(kv_block_storage(pool, block));
    int32_t width = pool->config.value_length;
    const float *values = kv_block_values_const(pool, block);
    if (reader == NULL)
        memcpy(out, values + (size_t)slot * (size_t)width, (size_t)width * sizeof(float));
    else
        reader(values, slot, width, pool->config.block_tokens, out);
}

bool kv_storage_rows_movable(kv_storage storage)
{
    return storage != KV_STORAGE_KIVI4 && storage != KV_STORAGE_KIVI2;
}

void kv_pool_move_slot(kv_pool *pool, kv_block_id from, int32_t from_slot, kv_block_id to, int32_t to_slot)
{
    kv_storage storage = kv_block_storage(pool, from);
    assert(storage == kv_block_storage(pool, to) && kv_storage_rows_movable(storage));
    if (from == to && from_slot == to_slot)
        return;
    /* Every movable type's key and value rows are rows of a quant/ tensor type. */
    tensor_type type = kv_storage_key_tensor_type(storage);
    uint64_t key_bytes = tensor_row_bytes(type, (uint64_t)pool->config.key_length);
    uint64_t value_bytes = tensor_row_bytes(type, (uint64_t)pool->config.value_length);
    memmove((unsigned char *)kv_block_keys(pool, to) + (uint64_t)to_slot * key_bytes,
            (const unsigned char *)kv_block_keys_const(pool, from) + (uint64_t)from_slot * key_bytes, key_bytes);
    memmove((unsigned char *)kv_block_values(pool, to) + (uint64_t)to_slot * value_bytes,
            (const unsigned char *)kv_block_values_const(pool, from) + (uint64_t)from_slot * value_bytes, value_bytes);
    kv_block_positions(pool, to)[to_slot] = kv_block_positions_const(pool, from)[from_slot];
    kv_block_scores(pool, to)[to_slot] = kv_block_scores(pool, from)[from_slot];
}

void kv_block_write_slots(kv_pool *pool, kv_block_id block, const float *keys, const float *values, int32_t slots)
{
    kv_storage storage = kv_block_storage(pool, block);
    const kv_pool_config *c = &pool->config;
    assert(slots >= 0 && slots <= c->block_tokens);
    if (kv_storage_is_packed(storage)) {
        kv_packed_encode_block((kv_packed_type)(storage - KV_STORAGE_Q8), c->block_tokens, c->key_length,
                               c->value_length, keys, values, slots, kv_block_keys(pool, block),
                               kv_block_values(pool, block));
        return;
    }
    kv_storage_store(storage, kv_block_keys(pool, block), keys, (int64_t)slots * c->key_length);
    kv_storage_store(storage, kv_block_values(pool, block), values, (int64_t)slots * c->value_length);
}

void kv_pool_copy_slots(kv_pool *pool, kv_block_id from, kv_block_id to, int32_t slots)
{
    assert(from != to);
    assert(pool->owners[from] == pool->owners[to]);
    assert(slots >= 0 && slots <= pool->config.block_tokens);
    const kv_block_layout *source_layout = layout_of(pool, from), *target_layout = layout_of(pool, to);
    unsigned char *source = block_base(pool, from);
    unsigned char *target = block_base(pool, to);
    memcpy(target + target_layout->positions_offset, source + source_layout->positions_offset,
           (size_t)slots * sizeof(int32_t));
    memcpy(target + target_layout->scores_offset, source + source_layout->scores_offset,
           (size_t)slots * sizeof(float));
    kv_storage from_storage = kv_block_storage(pool, from), to_storage = kv_block_storage(pool, to);
    if (from_storage == to_storage && !kv_storage_is_packed(from_storage)) {
        uint64_t value_bytes = kv_storage_bytes(from_storage);
        memcpy(target, source, (size_t)((uint64_t)pool->config.key_length * value_bytes * (uint64_t)slots));
        memcpy(target + target_layout->values_offset, source + source_layout->values_offset,
               (size_t)((uint64_t)pool->config.value_length * value_bytes * (uint64_t)slots));
        return;
    }
    if (from_storage == to_storage && slots == pool->config.block_tokens) {
        memcpy(target, source, (size_t)source_layout->positions_offset); /* a whole packed block: as it is */
        return;
    }
    /* Through f32: decoded rows, encoded again in the target's type. */
    int32_t key_length = pool->config.key_length, value_length = pool->config.value_length;
    float *keys = pool->staging, *values = keys + (size_t)slots * (size_t)key_length;
    for (int32_t i = 0; i < slots; i++) {
        kv_block_read_key(pool, from, i, keys + (size_t)i * (size_t)key_length);
        kv_block_read_value(pool, from, i, values + (size_t)i * (size_t)value_length);
    }
    kv_block_write_slots(pool, to, keys, values, slots);
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
    assert(!kv_storage_is_packed(storage));
    return storage == KV_STORAGE_F32 ? 4 : 2;
}

static const char *const storage_names[KV_STORAGE_COUNT] = {
    [KV_STORAGE_F32] = "f32",   [KV_STORAGE_F16] = "f16",     [KV_STORAGE_BF16] = "bf16", [KV_STORAGE_Q8] = "q8",
    [KV_STORAGE_Q4] = "q4",     [KV_STORAGE_KIVI4] = "kivi4", [KV_STORAGE_KIVI2] = "kivi2",
};

const char *kv_storage_name(kv_storage storage)
{
    return (int)storage >= 0 && storage < KV_STORAGE_COUNT ? storage_names[storage] : "unknown";
}

bool kv_storage_find(const char *name, kv_storage *out)
{
    for (int t = 0; t < KV_STORAGE_COUNT; t++)
        if (strcmp(storage_names[t], name) == 0) {
            *out = (kv_storage)t;
            return true;
        }
    return false;
}

bool kv_storage_is_packed(kv_storage storage)
{
    return storage >= KV_STORAGE_Q8 && storage < KV_STORAGE_COUNT;
}

/* Row readers for attention. Rows that are rows of a quant/ tensor type
 * (f16, bf16, q8 = Q8_0, q4 = Q4_0, kivi4 values = Q4_1) go through the
 * selected SIMD dequantize kernel; kivi keys (per channel) and kivi2 values
 * through kv/packed.c. */
static void read_tensor_row(tensor_type type, const void *section, int64_t slot, int64_t width, float *out)
{
    const unsigned char *row = (const unsigned char *)section + (uint64_t)slot * tensor_row_bytes(type, (uint64_t)width);
    quant_kernels_selected()->dequantize[type](row, out, width);
}

/* The readers of rows that are rows of a quant/ tensor type. */
#define TENSOR_ROW_READER(name, type)                                                                     \
    static void name(const void *section, int64_t slot, int64_t width, int64_t block_tokens, float *out) \
    {                                                                                                     \
        (void)block_tokens;                                                                               \
        read_tensor_row(type, section, slot, width, out);                                                 \
    }
TENSOR_ROW_READER(read_f16_row, TENSOR_F16)
TENSOR_ROW_READER(read_bf16_row, TENSOR_BF16)
TENSOR_ROW_READER(read_q8_row, TENSOR_Q8_0)
TENSOR_ROW_READER(read_q4_row, TENSOR_Q4_0)
TENSOR_ROW_READER(read_kivi4_value_row, TENSOR_Q4_1)

static void read_kivi4_key_row(const void *section, int64_t slot, int64_t width, int64_t block_tokens, float *out)
{
    kv_packed_decode_key(KV_PACKED_KIVI4, (int32_t)block_tokens, (int32_t)width, section, (int32_t)slot, out);
}

static void read_kivi2_key_row(const void *section, int64_t slot, int64_t width, int64_t block_tokens, float *out)
{
    kv_packed_decode_key(KV_PACKED_KIVI2, (int32_t)block_tokens, (int32_t)width, section, (int32_t)slot, out);
}

static void read_kivi2_value_row(const void *section, int64_t slot, int64_t width, int64_t block_tokens, float *out)
{
    kv_packed_decode_value(KV_PACKED_KIVI2, (int32_t)block_tokens, (int32_t)width, section, (int32_t)slot, out);
}

static const struct {
    kv_row_reader key;
    kv_row_reader value;
} row_readers[KV_STORAGE_COUNT] = {
    [KV_STORAGE_F32] = {NULL, NULL},
    [KV_STORAGE_F16] = {read_f16_row, read_f16_row},
    [KV_STORAGE_BF16] = {read_bf16_row, read_bf16_row},
    [KV_STORAGE_Q8] = {read_q8_row, read_q8_row},
    [KV_STORAGE_Q4] = {read_q4_row, read_q4_row},
    [KV_STORAGE_KIVI4] = {read_kivi4_key_row, read_kivi4_value_row},
    [KV_STORAGE_KIVI2] = {read_kivi2_key_row, read_kivi2_value_row},
};

tensor_type kv_storage_key_tensor_type(kv_storage storage)
{
    static const tensor_type types[KV_STORAGE_COUNT] = {
        [KV_STORAGE_F32] = TENSOR_F32,     [KV_STORAGE_F16] = TENSOR_F16,         [KV_STORAGE_BF16] = TENSOR_BF16,
        [KV_STORAGE_Q8] = TENSOR_Q8_0,     [KV_STORAGE_Q4] = TENSOR_Q4_0,         [KV_STORAGE_KIVI4] = TENSOR_TYPE_LIMIT,
        [KV_STORAGE_KIVI2] = TENSOR_TYPE_LIMIT,
    };
    return types[storage];
}

kv_row_reader kv_storage_key_reader(kv_storage storage)
{
    return row_readers[storage].key;
}

kv_row_reader kv_storage_value_reader(kv_storage storage)
{
    return row_readers[storage].value;
}

void kv_pool_usage_get(const kv_pool *pool, kv_pool_usage *usage)
{
    int64_t free_blocks = pool->free_count;
    *usage = (kv_pool_usage){
        .total_blocks = pool->capacity,
        .used_blocks = pool->used_blocks,
        .shared_blocks = pool->shared_blocks,
        .free_blocks = free_blocks,
        .block_bytes = pool->page_bytes,
        .used_bytes = pool->used_bytes,
        .shared_bytes = pool->shared_bytes,
        .free_bytes = (uint64_t)free_blocks * pool->page_bytes + pool->partial_free_bytes,
    };
}

/* Runs the statement that follows for every used block id `block`. */
#define FOR_EACH_USED_BLOCK(pool, block)                                                                         \
    for (int32_t page_ = 0; page_ < (pool)->capacity; page_++)                                                  \
        for (kv_block_id block = page_ * KV_PAGE_MAX_BLOCKS; block < (page_ + 1) * KV_PAGE_MAX_BLOCKS; block++) \
            if ((pool)->refcounts[block] != 0)

void kv_pool_usage_by_owner(const kv_pool *pool, int64_t *blocks_by_layer, int64_t *blocks_by_layer_head)
{
    int32_t heads = pool->config.kv_head_count;
    if (blocks_by_layer != NULL)
        memset(blocks_by_layer, 0, (size_t)pool->config.layer_count * sizeof *blocks_by_layer);
    if (blocks_by_layer_head != NULL)
        memset(blocks_by_layer_head, 0, (size_t)pool->config.layer_count * heads * sizeof *blocks_by_layer_head);
    FOR_EACH_USED_BLOCK(pool, block) {
        if (blocks_by_layer != NULL)
            blocks_by_layer[pool->owners[block] / heads]++;
        if (blocks_by_layer_head != NULL)
            blocks_by_layer_head[pool->owners[block]]++;
    }
}

void kv_pool_bytes_by_owner(const kv_pool *pool, uint64_t *bytes_by_layer_head)
{
    memset(bytes_by_layer_head, 0,
           (size_t)pool->config.layer_count * pool->config.kv_head_count * sizeof *bytes_by_layer_head);
    FOR_EACH_USED_BLOCK(pool, block)
        bytes_by_layer_head[pool->owners[block]] += layout_of(pool, block)->block_bytes;
}

strata_status kv_pool_check(const kv_pool *pool, strata_error *err)
{
    int64_t used = 0, shared = 0, used_pages = 0;
    uint64_t used_bytes = 0, shared_bytes = 0, partial_free_bytes = 0;
    int64_t tables = (int64_t)pool->config.layer_count * pool->config.kv_head_count;
    for (int32_t page = 0; page < pool->capacity; page++) {
        int type = pool->page_types[page];
        uint32_t marks = 0;
        for (int32_t place = 0; place < KV_PAGE_MAX_BLOCKS; place++) {
            kv_block_id block = page * KV_PAGE_MAX_BLOCKS + place;
            int32_t refcount = pool->refcounts[block];
            if (refcount < 0)
                return strata_fail(err, STRATA_E_INTERNAL, "KV pool: block %" PRId32 " has refcount %" PRId32, block,
                                   refcount);
            if (refcount == 0)
                continue;
            if (type < 0 || place >= pool->layouts[type].per_page)
                return strata_fail(err, STRATA_E_INTERNAL,
                                   "KV pool: used block %" PRId32 " lies in page %" PRId32 " of type %d outside its places",
                                   block, page, type);
            if (pool->owners[block] < 0 || pool->owners[block] >= tables)
                return strata_fail(err, STRATA_E_INTERNAL,
                                   "KV pool: used block %" PRId32 " has owner %" PRId32 ", outside 0 .. %" PRId64,
                                   block, pool->owners[block], tables - 1);
            marks |= 1u << place;
            used++;
            used_bytes += pool->layouts[type].block_bytes;
            if (refcount >= 2) {
                shared++;
                shared_bytes += pool->layouts[type].block_bytes;
            }
        }
        if (marks != pool->page_used[page])
            return strata_fail(err, STRATA_E_INTERNAL, "KV pool: page %" PRId32 " marks %#x used, its blocks say %#x",
                               page, pool->page_used[page], marks);
        if ((type >= 0) != (marks != 0))
            return strata_fail(err, STRATA_E_INTERNAL, "KV pool: page %" PRId32 " has type %d and used marks %#x",
                               page, type, marks);
        if (type >= 0) {
            used_pages++;
            int32_t per_page = pool->layouts[type].per_page;
            if (per_page > 1)
                partial_free_bytes += (uint64_t)(per_page - __builtin_popcount(marks)) * pool->layouts[type].block_bytes;
        }
    }
    if (used != pool->used_blocks || shared != pool->shared_blocks || used_bytes != pool->used_bytes ||
        shared_bytes != pool->shared_bytes || partial_free_bytes != pool->partial_free_bytes)
        return strata_fail(err, STRATA_E_INTERNAL,
                           "KV pool: counters say %" PRId64 " used and %" PRId64 " shared blocks (%" PRIu64 " and %" PRIu64
                           " bytes, %" PRIu64 " free in carved pages), the blocks say %" PRId64 " and %" PRId64
                           " (%" PRIu64 ", %" PRIu64 ", %" PRIu64 ")",
                           pool->used_blocks, pool->shared_blocks, pool->used_bytes, pool->shared_bytes,
                           pool->partial_free_bytes, used, shared, used_bytes, shared_bytes, partial_free_bytes);
    if (pool->free_count != pool->capacity - used_pages)
        return strata_fail(err, STRATA_E_INTERNAL,
                           "KV pool: %" PRId32 " pages on the free list, but %" PRId64 " of %" PRId32 " are unused",
                           pool->free_count, pool->capacity - used_pages, pool->capacity);
    unsigned char *seen = calloc((size_t)pool->capacity, 1);
    if (seen == NULL)
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "KV pool check: cannot allocate %" PRId32 " marks",
                           pool->capacity);
    strata_status status = STRATA_OK;
    for (int32_t i = 0; i < pool->free_count && status == STRATA_OK; i++) {
        int32_t page = pool->free_stack[i];
        if (page < 0 || page >= pool->capacity)
            status = strata_fail(err, STRATA_E_INTERNAL,
                                 "KV pool: free list entry %" PRId32 " is page %" PRId32 ", outside 0 .. %" PRId32, i,
                                 page, pool->capacity - 1);
        else if (pool->page_types[page] != -1)
            status = strata_fail(err, STRATA_E_INTERNAL, "KV pool: page %" PRId32 " is on the free list in use", page);
        else if (seen[page]++)
            status = strata_fail(err, STRATA_E_INTERNAL, "KV pool: page %" PRId32 " is on the free list twice", page);
    }
    /* Each type's list of pages with a free place holds exactly its carved, not full pages. */
    for (int type = 0; type < KV_STORAGE_COUNT && status == STRATA_OK; type++) {
        int64_t listed = 0, expected = 0;
        for (int32_t page = pool->partial_pages[type]; page != KV_PAGE_NONE && status == STRATA_OK;
             page = pool->page_next[page]) {
            if (pool->page_types[page] != type || pool->page_used[page] == full_mask(pool->layouts[type].per_page) ||
                ++listed > pool->capacity)
                status = strata_fail(err, STRATA_E_INTERNAL, "KV pool: page %" PRId32 " is wrongly on the %s list",
                                     page, kv_storage_name((kv_storage)type));
        }
        for (int32_t page = 0; page < pool->capacity; page++)
            expected += pool->page_types[page] == type && pool->layouts[type].per_page > 1 &&
                        pool->page_used[page] != full_mask(pool->layouts[type].per_page);
        if (status == STRATA_OK && listed != expected)
            status = strata_fail(err, STRATA_E_INTERNAL,
                                 "KV pool: %" PRId64 " pages on the %s list, %" PRId64 " have a free place", listed,
                                 kv_storage_name((kv_storage)type), expected);
    }
    free(seen);
    return status;
}
