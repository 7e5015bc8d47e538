/* kv/pool.h: the KV block pool.
 *
 * All KV memory of one backend lives here, under one byte budget, cut into
 * fixed-size blocks. A block holds block_tokens slots of ONE (layer, KV
 * head): for each slot its key, its value, its original position and room
 * for policy statistics. Blocks are reference-counted: a block shared by a
 * cached prefix and two sequences has refcount 3 and is read-only until the
 * last writer copies it (the sequence views do the copying). When no block
 * is free, kv_pool_alloc returns STRATA_E_KV_FULL and the caller decides
 * (evict cached prefixes, preempt, or report); the pool never exceeds its
 * budget.
 *
 * Every block has a storage type. The pool's base type (f32, f16 or bf16,
 * chosen at creation) is what new tokens are written in; packed low-bit
 * types (q8, q4, kivi4, kivi2: kv/packed.h) hold older tokens in fewer
 * bytes. Memory is cut into pages of one base block each; a page holds one
 * base block or several packed blocks of one type (as many as fit), so
 * packing a block really returns memory: a page is free again once all its
 * packed blocks are. Block ids name (page, place in the page).
 *
 * Block layout, in one contiguous stretch of the type's block bytes:
 *   keys      block_tokens * key_length   values of the storage type (packed: its sections)
 *   values    block_tokens * value_length values of the storage type
 *   positions block_tokens int32: the original position of each slot
 *   scores    block_tokens float: policy statistics (accumulated attention mass)
 * Rows of any type are read as f32 through kv_block_read_key/value and
 * written through kv_block_write_slots. */
#ifndef STRATA_KV_POOL_H
#define STRATA_KV_POOL_H

#include <stdbool.h>
#include <stdint.h>

#include "quant/types.h"
#include "strata.h"

typedef int32_t kv_block_id;
/* A block id is page * KV_PAGE_MAX_BLOCKS + its place in the page. */
enum { KV_BLOCK_NONE = -1, KV_DEFAULT_BLOCK_TOKENS = 16, KV_PAGE_MAX_BLOCKS = 16 };

typedef enum kv_storage {
    KV_STORAGE_F32 = 0,
    KV_STORAGE_F16,
    KV_STORAGE_BF16,
    /* Packed types (kv/packed.h); never a pool's base type. */
    KV_STORAGE_Q8,
    KV_STORAGE_Q4,
    KV_STORAGE_KIVI4,
    KV_STORAGE_KIVI2,
    KV_STORAGE_COUNT
} kv_storage;

typedef struct kv_pool_config {
    uint64_t budget_bytes;   /* all blocks together never exceed this */
    int32_t block_tokens;    /* slots per block; 0 means KV_DEFAULT_BLOCK_TOKENS */
    int32_t layer_count;
    int32_t kv_head_count;
    int32_t key_length;
    int32_t value_length;
    kv_storage storage;      /* the base type: f32, f16 or bf16 */
} kv_pool_config;

typedef struct kv_pool kv_pool;

/* Per-layer and per-head accounting, as counted by the pool. */
typedef struct kv_pool_usage {
    int64_t total_blocks;    /* pages: base blocks the budget holds */
    int64_t used_blocks;     /* blocks of any type with refcount >= 1 */
    int64_t shared_blocks;   /* refcount >= 2 */
    int64_t free_blocks;     /* whole free pages */
    uint64_t block_bytes;    /* bytes of a page (one base block) */
    uint64_t used_bytes;     /* the bytes of the used blocks, by their types */
    uint64_t shared_bytes;
    uint64_t free_bytes;     /* free pages plus the free packed blocks of partly used pages */
} kv_pool_usage;

/* Creates a pool; fails if the budget holds less than one block per (layer, KV head). */
strata_status kv_pool_create(const kv_pool_config *config, kv_pool **out, strata_error *err);
/* Destroys a pool and all its memory; accepts NULL. Blocks still referenced are freed too. */
void kv_pool_destroy(kv_pool *pool);

/* Returns the configuration the pool was created with (block_tokens filled in). */
const kv_pool_config *kv_pool_configuration(const kv_pool *pool);
/* Returns the bytes of one base block (a page). */
uint64_t kv_pool_block_bytes(const kv_pool *pool);
/* Returns the bytes of one block of the given storage type (0 if the pool cannot hold that type). */
uint64_t kv_pool_storage_block_bytes(const kv_pool *pool, kv_storage storage);
/* Returns the number of pages (base blocks) the budget holds. */
int64_t kv_pool_capacity(const kv_pool *pool);
/* Returns a bound on block ids: every id of this pool is below it. */
int64_t kv_pool_block_id_limit(const kv_pool *pool);
/* Returns the number of free pages: base blocks that can be taken. */
int64_t kv_pool_free_blocks(const kv_pool *pool);
/* Checks that blocks of a packed storage type fit this pool's rows (lengths
 * multiples of 32, smaller than a page); a message says why not. */
strata_status kv_pool_check_storage(const kv_pool *pool, kv_storage storage, strata_error *err);

/* Takes a free base block for (layer, kv_head) with refcount 1 and its slots
 * unset; STRATA_E_KV_FULL when no page is free. */
strata_status kv_pool_alloc(kv_pool *pool, int32_t layer, int32_t kv_head, kv_block_id *out, strata_error *err);
/* Takes a free block of the given storage type (one checked by
 * kv_pool_check_storage): a free place in a page of that type, else a free page. */
strata_status kv_pool_alloc_typed(kv_pool *pool, int32_t layer, int32_t kv_head, kv_storage storage,
                                  kv_block_id *out, strata_error *err);
/* Returns a used block's storage type. */
kv_storage kv_block_storage(const kv_pool *pool, kv_block_id block);
/* Returns a used block's bytes (those of its storage type). */
uint64_t kv_block_bytes(const kv_pool *pool, kv_block_id block);
/* Adds a reference to a used block. */
void kv_pool_retain(kv_pool *pool, kv_block_id block);
/* Drops a reference; the block returns to the free list at zero. */
void kv_pool_release(kv_pool *pool, kv_block_id block);
/* Returns a block's reference count (0 when free). */
int32_t kv_pool_refcount(const kv_pool *pool, kv_block_id block);
/* Returns the layer and KV head a used block belongs to. */
void kv_pool_block_owner(const kv_pool *pool, kv_block_id block, int32_t *layer, int32_t *kv_head);

/* Returns the block's keys: block_tokens * key_length values of the storage type (base
 * types; packed types: the packed key section). */
void *kv_block_keys(kv_pool *pool, kv_block_id block);
/* Returns the block's values: block_tokens * value_length values of the storage type. */
void *kv_block_values(kv_pool *pool, kv_block_id block);
/* Returns the block's per-slot original positions. */
int32_t *kv_block_positions(kv_pool *pool, kv_block_id block);
/* Returns the block's per-slot policy statistics. */
float *kv_block_scores(kv_pool *pool, kv_block_id block);
/* Read-only views of the same, for attention. */
const void *kv_block_keys_const(const kv_pool *pool, kv_block_id block);
const void *kv_block_values_const(const kv_pool *pool, kv_block_id block);
const int32_t *kv_block_positions_const(const kv_pool *pool, kv_block_id block);

/* Copies the first `slots` slots of block `from` into block `to` (same layer
 * and head; the types may differ: rows are converted through f32, and a
 * packed `to` is encoded from those slots). */
void kv_pool_copy_slots(kv_pool *pool, kv_block_id from, kv_block_id to, int32_t slots);
/* Returns whether a storage type keeps every slot's key and value in rows
 * of their own (all but kivi, whose keys share per-channel scales across
 * the block): such slots move between blocks of the type as bytes. */
bool kv_storage_rows_movable(kv_storage storage);
/* Copies one slot (key and value rows, position, score) between two blocks of
 * one movable storage type, as bytes; the slots may be in the same block. */
void kv_pool_move_slot(kv_pool *pool, kv_block_id from, int32_t from_slot, kv_block_id to, int32_t to_slot);
/* Reads slot's key row as f32 into out (key_length floats), any storage type. */
void kv_block_read_key(const kv_pool *pool, kv_block_id block, int32_t slot, float *out);
/* Reads slot's value row as f32 into out (value_length floats), any storage type. */
void kv_block_read_value(const kv_pool *pool, kv_block_id block, int32_t slot, float *out);
/* Writes the first `slots` slots' keys ([slots][key_length]) and values of a
 * block from f32 in the block's storage type (a packed block is encoded
 * whole: its earlier contents are replaced). Positions and scores are not touched. */
void kv_block_write_slots(kv_pool *pool, kv_block_id block, const float *keys, const float *values, int32_t slots);

/* Writes n values of f32 into a slot range of the storage type (dst has storage type). */
void kv_storage_store(kv_storage storage, void *dst, const float *src, int64_t n);
/* Reads n values of the storage type as f32. */
void kv_storage_load(kv_storage storage, const void *src, float *dst, int64_t n);
/* Returns the bytes of one value of the storage type. */
uint32_t kv_storage_bytes(kv_storage storage);
/* Returns "f32", "f16", "bf16", "q8", "q4", "kivi4" or "kivi2". */
const char *kv_storage_name(kv_storage storage);
/* Finds a storage type by name; false if there is none. */
bool kv_storage_find(const char *name, kv_storage *out);
/* Returns whether the type is a packed (low-bit) type. */
bool kv_storage_is_packed(kv_storage storage);

/* Reads row `slot` of a block's key or value section as width f32 values
 * (the same type as compute's attention_row_reader). */
typedef void (*kv_row_reader)(const void *section, int64_t slot, int64_t width, int64_t block_tokens, float *out);
/* Returns the reader of key rows of a storage type; NULL for f32 (rows read in place). */
kv_row_reader kv_storage_key_reader(kv_storage storage);
/* Returns the reader of value rows of a storage type; NULL for f32. */
kv_row_reader kv_storage_value_reader(kv_storage storage);
/* Returns the quant/ tensor type whose row kernels read the type's key rows
 * where they lie (f32, f16, bf16, q8 = Q8_0, q4 = Q4_0), or
 * TENSOR_TYPE_LIMIT when keys are not stored in rows (kivi: per channel). */
tensor_type kv_storage_key_tensor_type(kv_storage storage);

/* Fills usage with the pool's counts. */
void kv_pool_usage_get(const kv_pool *pool, kv_pool_usage *usage);
/* Counts used blocks by layer (layer_count entries) and by (layer, head)
 * (layer_count * kv_head_count entries); either may be NULL. */
void kv_pool_usage_by_owner(const kv_pool *pool, int64_t *blocks_by_layer, int64_t *blocks_by_layer_head);
/* Adds up the bytes of used blocks by (layer, head) (layer_count * kv_head_count entries). */
void kv_pool_bytes_by_owner(const kv_pool *pool, uint64_t *bytes_by_layer_head);
/* Recounts everything from the per-block state and checks the free list,
 * refcounts and counters agree; returns STRATA_E_INTERNAL naming the first
 * disagreement. For tests and debugging. */
strata_status kv_pool_check(const kv_pool *pool, strata_error *err);

#endif
