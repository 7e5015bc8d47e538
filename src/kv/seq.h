/* kv/seq.h: sequence views into the KV block pool.
 *
 * A sequence owns, for every (layer, KV head), a block table: the list of
 * pool blocks holding that head's keys and values, in append order. All
 * blocks of a table but the last are full; slot i of the table is slot
 * i % B of block i / B (B = block_tokens). Each slot records its original
 * position, so a table need not start at position 0 (sliding-window layers
 * drop whole leading blocks as the window moves) and tables of different
 * layers and heads may have different lengths (that is how compression
 * policies return real memory: kv_seq_keep compacts a table to chosen slots,
 * so slot index and position need not correspond; positions only increase
 * along a table).
 *
 * Writing happens in two steps so a full pool never leaves a sequence half
 * written: kv_seq_reserve(seq, n) makes room for n more slots in every table
 * at once (allocating blocks and copying a shared, partially filled last
 * block: copy-on-write), or fails with STRATA_E_KV_FULL changing nothing;
 * then kv_seq_write fills one layer's slots, which cannot fail. Fork shares
 * every block (refcounts up); the first writer of a shared partial block
 * copies it. */
#ifndef STRATA_KV_SEQ_H
#define STRATA_KV_SEQ_H

#include <stdint.h>

#include "kv/pool.h"
#include "strata.h"

typedef struct kv_block_table {
    kv_block_id *blocks;    /* blocks[0 .. block_count) */
    int32_t block_count;    /* may exceed ceil(slot_count / B) by reserved, still empty blocks */
    int32_t block_capacity; /* allocated entries of blocks */
    int64_t slot_count;     /* filled slots */
} kv_block_table;

typedef struct kv_seq kv_seq;

/* Creates an empty sequence over pool (the pool must outlive it). */
strata_status kv_seq_create(kv_pool *pool, kv_seq **out, strata_error *err);
/* Releases every block of the sequence and frees it; accepts NULL. */
void kv_seq_destroy(kv_seq *seq);
/* Creates a sequence sharing all of parent's filled blocks (copy-on-write). */
strata_status kv_seq_fork(const kv_seq *parent, kv_seq **out, strata_error *err);

/* Returns the number of tokens appended (the position the next token gets). */
int64_t kv_seq_length(const kv_seq *seq);
/* Returns the pool the sequence lives in. */
kv_pool *kv_seq_pool(const kv_seq *seq);
/* Returns the block table of (layer, kv_head). */
const kv_block_table *kv_seq_table(const kv_seq *seq, int32_t layer, int32_t kv_head);

/* Makes room for `tokens` more slots in every table; STRATA_E_KV_FULL (and
 * no change) when the pool lacks the blocks. Needed blocks include a copy of
 * any shared, partially filled last block. */
strata_status kv_seq_reserve(kv_seq *seq, int64_t tokens, strata_error *err);
/* Returns how many free blocks kv_seq_reserve(seq, tokens) would take. */
int64_t kv_seq_blocks_needed(const kv_seq *seq, int64_t tokens);
/* Appends `tokens` slots to every head of one layer: keys is [tokens][kv_heads * key_length],
 * values likewise, positions[t] the position of token t. Room must have been reserved. */
void kv_seq_write(kv_seq *seq, int32_t layer, const float *keys, const float *values, int64_t tokens,
                  const int64_t *positions);
/* Marks `tokens` more tokens as appended once every layer has been written. */
void kv_seq_advance(kv_seq *seq, int64_t tokens);

/* Drops every slot whose position is >= position in every table and releases
 * the blocks left empty (reserved ones too); the length becomes position.
 * Fails (changing nothing) if a sliding-window table already dropped slots
 * that position - window + 1 .. position - 1 would need: pass window 0 to skip the check. */
strata_status kv_seq_rewind(kv_seq *seq, int64_t position, const int64_t *window_by_layer, strata_error *err);
/* Releases the leading blocks of one layer's tables whose every slot has a
 * position below min_position (a sliding window moved past them). */
void kv_seq_drop_before(kv_seq *seq, int32_t layer, int64_t min_position);

/* Keeps only the slots keep[0..count) (increasing slot indices) of the table of
 * (layer, kv_head), in order, packed into the first blocks; the blocks left
 * empty return to the pool. Slots keep their recorded positions and scores.
 * The length does not change (the next token still gets position length).
 * Reserved, still empty blocks after the last slot stay reserved, but free
 * slots of the old last block are not kept as room: call it between steps
 * (after kv_seq_advance), not between kv_seq_reserve and kv_seq_write.
 * Blocks shared with other sequences or the prefix cache are never written:
 * each one that would be is replaced by a fresh copy; a destination block
 * keeps the storage type of the block that had its index (a partially filled
 * last one is in the base type), so moving slots into a kivi block quantizes
 * its keys again over its new slots; STRATA_E_KV_FULL (and
 * no change) when the pool lacks the blocks for that, and
 * STRATA_E_INVALID_ARGUMENT (and no change) for a bad keep list. Slots
 * removed here do not count against kv_seq_rewind's window check. */
strata_status kv_seq_keep(kv_seq *seq, int32_t layer, int32_t kv_head, const int64_t *keep, int64_t count,
                          strata_error *err);

/* Replaces the sequence's (empty) tables' beginnings with shared blocks: for
 * each (layer, head), blocks[layer * kv_heads + head] is an array of
 * counts[layer * kv_heads + head] full blocks (retained here), and the length
 * becomes `tokens`. Used by the prefix cache. */
strata_status kv_seq_attach(kv_seq *seq, const kv_block_id *const *blocks, const int32_t *counts, int64_t tokens,
                            strata_error *err);

/* Counts the blocks this sequence references and how many of those are shared (refcount >= 2). */
void kv_seq_usage(const kv_seq *seq, int64_t *blocks, int64_t *shared_blocks);

/* Replaces the key and value of one filled slot of the table of (layer,
 * kv_head) (key_length and value_length floats, stored in the block's type;
 * position and score stay). A block shared with other sequences or the
 * prefix cache is first replaced by a private copy (STRATA_E_KV_FULL, and no
 * change, when the pool has no block for it). In a packed block the new
 * rows are quantized with the block's other slots again (kivi keys share
 * per-channel scales across the block). */
strata_status kv_seq_overwrite_slot(kv_seq *seq, int32_t layer, int32_t kv_head, int64_t slot, const float *key,
                                    const float *value, strata_error *err);

/* Replaces full block block_index of the table of (layer, kv_head) by a
 * block of another storage type holding the same slots (a packed type saves
 * memory; the old block is released, so a block shared with others stays
 * theirs). STRATA_E_KV_FULL, and no change, when the pool has no room. */
strata_status kv_seq_convert_block(kv_seq *seq, int32_t layer, int32_t kv_head, int32_t block_index,
                                   kv_storage storage, strata_error *err);
/* Adds up the bytes of the blocks the sequence references, by their types:
 * per table (layer * kv_heads + head; may be NULL), in all, and of those
 * shared (refcount >= 2); either total may be NULL. */
void kv_seq_usage_bytes(const kv_seq *seq, uint64_t *bytes_by_table, uint64_t *bytes, uint64_t *shared_bytes);

#endif
