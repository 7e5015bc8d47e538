/* kv/seq.c: sequence views: one block table per (layer, KV head) over the pool.
 *
 * Every operation that can fail decides first and changes second: reserve
 * counts every block it will take (new blocks plus copies of shared,
 * partially filled last blocks) and grows the table arrays before it takes
 * the first one, so a full pool or a failed allocation leaves the sequence
 * as it was; rewind checks every sliding-window table before it drops a
 * slot. What follows the checks cannot fail.
 *
 * Besides the public tables, a sequence remembers per table the position
 * below which a sliding window released its slots (or the prefix cache never
 * attached them): rewinding is only safe while the window the next token
 * needs is still there. It is a position, not a slot count, because
 * kv_seq_keep removes slots anywhere, after which slot i no longer holds
 * position first + i; slots a keep removed are the policy's choice and do not
 * count against a rewind. The table arrays grow by doubling, so appends
 * allocate only when a table outgrows every size it had before. */
#include "kv/seq.h"

#include <assert.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"

enum { KV_SEQ_MIN_TABLE_CAPACITY = 8 };

struct kv_seq {
    kv_pool *pool;
    int32_t layer_count;
    int32_t kv_head_count;
    int32_t block_tokens;
    int64_t length;            /* tokens appended; the next token's position */
    kv_block_table *tables;    /* [layer * kv_head_count + kv_head] */
    int64_t *window_floor;     /* per table: positions below it were released by a window or never attached */
    /* One block's slots as f32 rows, positions and scores, for kv_seq_keep's moves. */
    float *staging_keys;
    float *staging_values;
    int32_t *staging_positions;
    float *staging_scores;
};

static int64_t table_count(const kv_seq *seq)
{
    return (int64_t)seq->layer_count * seq->kv_head_count;
}

static kv_block_table *table_at(kv_seq *seq, int32_t layer, int32_t kv_head)
{
    assert(layer >= 0 && layer < seq->layer_count && kv_head >= 0 && kv_head < seq->kv_head_count);
    return &seq->tables[(int64_t)layer * seq->kv_head_count + kv_head];
}

/* Blocks holding at least one filled slot. */
static int32_t filled_blocks(const kv_seq *seq, const kv_block_table *table)
{
    return (int32_t)((table->slot_count + seq->block_tokens - 1) / seq->block_tokens);
}

static int32_t slot_position(const kv_seq *seq, const kv_block_table *table, int64_t slot)
{
    return kv_block_positions_const(seq->pool, table->blocks[slot / seq->block_tokens])[slot % seq->block_tokens];
}

/* New blocks a table needs so that `tokens` more slots fit after its filled ones. */
static int64_t table_new_blocks(const kv_seq *seq, const kv_block_table *table, int64_t tokens)
{
    int64_t room = (int64_t)table->block_count * seq->block_tokens - table->slot_count;
    return tokens <= room ? 0 : (tokens - room - 1) / seq->block_tokens + 1;
}

/* Whether the next write into a table lands in a partially filled block
 * someone else also holds, or one of a packed type (left partial by a
 * rewind): either is first replaced by a private copy in the base type. */
static bool table_needs_copy(const kv_seq *seq, const kv_block_table *table, int64_t tokens)
{
    if (tokens == 0 || table->slot_count % seq->block_tokens == 0)
        return false;
    kv_block_id last = table->blocks[table->slot_count / seq->block_tokens];
    return kv_pool_refcount(seq->pool, last) >= 2 ||
           kv_block_storage(seq->pool, last) != kv_pool_configuration(seq->pool)->storage;
}

/* Makes room for `blocks` entries in a table's array; the table's content is unchanged either way. */
static strata_status table_grow(kv_block_table *table, int64_t blocks, strata_error *err)
{
    if (blocks <= table->block_capacity)
        return STRATA_OK;
    if (blocks > INT32_MAX)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                           "a KV block table cannot hold %" PRId64 " blocks (at most %" PRId32 ")", blocks, INT32_MAX);
    int64_t capacity = table->block_capacity < KV_SEQ_MIN_TABLE_CAPACITY ? KV_SEQ_MIN_TABLE_CAPACITY
                                                                         : table->block_capacity;
    while (capacity < blocks)
        capacity *= 2;
    if (capacity > INT32_MAX)
        capacity = INT32_MAX;
    kv_block_id *grown = realloc(table->blocks, (size_t)capacity * sizeof *grown);
    if (grown == NULL)
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "cannot grow a KV block table to %" PRId64 " blocks",
                           capacity);
    table->blocks = grown;
    table->block_capacity = (int32_t)capacity;
    return STRATA_OK;
}

/* Releases a table's blocks [keep, block_count). */
static void table_release_from(kv_seq *seq, kv_block_table *table, int32_t keep)
{
    for (int32_t b = keep; b < table->block_count; b++)
        kv_pool_release(seq->pool, table->blocks[b]);
    table->block_count = keep;
}

strata_status kv_seq_create(kv_pool *pool, kv_seq **out, strata_error *err)
{
    *out = NULL;
    const kv_pool_config *config = kv_pool_configuration(pool);
    kv_seq *seq = calloc(1, sizeof *seq);
    if (seq == NULL)
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "cannot allocate a KV sequence");
    *seq = (kv_seq){.pool = pool,
                    .layer_count = config->layer_count,
                    .kv_head_count = config->kv_head_count,
                    .block_tokens = config->block_tokens};
    seq->tables = calloc((size_t)table_count(seq), sizeof *seq->tables);
    seq->window_floor = calloc((size_t)table_count(seq), sizeof *seq->window_floor);
    size_t block_tokens = (size_t)config->block_tokens;
    seq->staging_keys = malloc(block_tokens * (size_t)config->key_length * sizeof(float));
    seq->staging_values = malloc(block_tokens * (size_t)config->value_length * sizeof(float));
    seq->staging_positions = malloc(block_tokens * sizeof(int32_t));
    seq->staging_scores = malloc(block_tokens * sizeof(float));
    if (seq->tables == NULL || seq->window_floor == NULL || seq->staging_keys == NULL ||
        seq->staging_values == NULL || seq->staging_positions == NULL || seq->staging_scores == NULL) {
        kv_seq_destroy(seq);
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "cannot allocate the %" PRId64 " block tables of a KV sequence",
                           table_count(seq));
    }
    *out = seq;
    return STRATA_OK;
}

void kv_seq_destroy(kv_seq *seq)
{
    if (seq == NULL)
        return;
    for (int64_t i = 0; seq->tables != NULL && i < table_count(seq); i++) {
        table_release_from(seq, &seq->tables[i], 0);
        free(seq->tables[i].blocks);
    }
    free(seq->tables);
    free(seq->window_floor);
    free(seq->staging_keys);
    free(seq->staging_values);
    free(seq->staging_positions);
    free(seq->staging_scores);
    free(seq);
}

strata_status kv_seq_fork(const kv_seq *parent, kv_seq **out, strata_error *err)
{
    *out = NULL;
    kv_seq *child = NULL;
    strata_status status = kv_seq_create(parent->pool, &child, err);
    for (int64_t i = 0; status == STRATA_OK && i < table_count(parent); i++)
        status = table_grow(&child->tables[i], filled_blocks(parent, &parent->tables[i]), err);
    if (status != STRATA_OK) {
        kv_seq_destroy(child);
        return status;
    }
    /* Only filled blocks are shared: the parent's reserved, empty ones stay its own. */
    for (int64_t i = 0; i < table_count(parent); i++) {
        const kv_block_table *from = &parent->tables[i];
        kv_block_table *to = &child->tables[i];
        to->block_count = filled_blocks(parent, from);
        to->slot_count = from->slot_count;
        for (int32_t b = 0; b < to->block_count; b++) {
            to->blocks[b] = from->blocks[b];
            kv_pool_retain(parent->pool, to->blocks[b]);
        }
        child->window_floor[i] = parent->window_floor[i];
    }
    child->length = parent->length;
    *out = child;
    return STRATA_OK;
}

int64_t kv_seq_length(const kv_seq *seq)
{
    return seq->length;
}

kv_pool *kv_seq_pool(const kv_seq *seq)
{
    return seq->pool;
}

const kv_block_table *kv_seq_table(const kv_seq *seq, int32_t layer, int32_t kv_head)
{
    return table_at((kv_seq *)seq, layer, kv_head);
}

int64_t kv_seq_blocks_needed(const kv_seq *seq, int64_t tokens)
{
    assert(tokens >= 0);
    int64_t needed = 0;
    for (int64_t i = 0; i < table_count(seq); i++) {
        const kv_block_table *table = &seq->tables[i];
        int64_t table_needs = table_new_blocks(seq, table, tokens) + table_needs_copy(seq, table, tokens);
        needed = table_needs > INT64_MAX - needed ? INT64_MAX : needed + table_needs;
    }
    return needed;
}

strata_status kv_seq_reserve(kv_seq *seq, int64_t tokens, strata_error *err)
{
    if (tokens < 0)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT, "cannot reserve %" PRId64 " KV slots: a count is >= 0",
                           tokens);
    int64_t needed = kv_seq_blocks_needed(seq, tokens);
    int64_t free_blocks = kv_pool_free_blocks(seq->pool);
    if (needed > free_blocks)
        return strata_fail(err, STRATA_E_KV_FULL,
                           "KV pool is full: %" PRId64 " more tokens at length %" PRId64 " need %" PRId64
                           " free blocks, %" PRId64 " of %" PRId64 " are free",
                           tokens, seq->length, needed, free_blocks, kv_pool_capacity(seq->pool));
    for (int64_t i = 0; i < table_count(seq); i++) {
        kv_block_table *table = &seq->tables[i];
        strata_status status = table_grow(table, table->block_count + table_new_blocks(seq, table, tokens), err);
        if (status != STRATA_OK)
            return status;
    }
    /* From here on nothing can fail: the pool holds the blocks counted above. */
    for (int32_t layer = 0; layer < seq->layer_count; layer++)
        for (int32_t head = 0; head < seq->kv_head_count; head++) {
            kv_block_table *table = table_at(seq, layer, head);
            int64_t new_blocks = table_new_blocks(seq, table, tokens);
            strata_status status = STRATA_OK;
            if (table_needs_copy(seq, table, tokens)) {
                kv_block_id *shared = &table->blocks[table->slot_count / seq->block_tokens];
                kv_block_id copy;
                status = kv_pool_alloc(seq->pool, layer, head, &copy, err);
                assert(status == STRATA_OK);
                kv_pool_copy_slots(seq->pool, *shared, copy, (int32_t)(table->slot_count % seq->block_tokens));
                kv_pool_release(seq->pool, *shared);
                *shared = copy;
            }
            for (int64_t b = 0; b < new_blocks; b++) {
                status = kv_pool_alloc(seq->pool, layer, head, &table->blocks[table->block_count++], err);
                assert(status == STRATA_OK);
            }
            (void)status;
        }
    return STRATA_OK;
}

void kv_seq_write(kv_seq *seq, int32_t layer, const float *keys, const float *values, int64_t tokens,
                  const int64_t *positions)
{
    const kv_pool_config *config = kv_pool_configuration(seq->pool);
    int64_t key_stride = (int64_t)seq->kv_head_count * config->key_length;
    int64_t value_stride = (int64_t)seq->kv_head_count * config->value_length;
    uint64_t value_bytes = kv_storage_bytes(config->storage);
    for (int32_t head = 0; head < seq->kv_head_count; head++) {
        kv_block_table *table = table_at(seq, layer, head);
        for (int64_t t = 0; t < tokens; t++) {
            int64_t slot = table->slot_count + t;
            assert(slot / seq->block_tokens < table->block_count);
            kv_block_id block = table->blocks[slot / seq->block_tokens];
            assert(kv_pool_refcount(seq->pool, block) == 1 && kv_block_storage(seq->pool, block) == config->storage);
            int64_t i = slot % seq->block_tokens;
            kv_storage_store(config->storage,
                             (char *)kv_block_keys(seq->pool, block) + i * config->key_length * value_bytes,
                             keys + t * key_stride + (int64_t)head * config->key_length, config->key_length);
            kv_storage_store(config->storage,
                             (char *)kv_block_values(seq->pool, block) + i * config->value_length * value_bytes,
                             values + t * value_stride + (int64_t)head * config->value_length, config->value_length);
            kv_block_positions(seq->pool, block)[i] = (int32_t)positions[t];
            kv_block_scores(seq->pool, block)[i] = 0.0f;
        }
        table->slot_count += tokens;
    }
}

void kv_seq_advance(kv_seq *seq, int64_t tokens)
{
    assert(tokens >= 0);
    seq->length += tokens;
}

/* Checks that rewinding to `position` keeps, in every sliding-window table,
 * the slots position - window + 1 .. position - 1 the next token attends to. */
static strata_status check_rewind_window(kv_seq *seq, int64_t position, const int64_t *window_by_layer,
                                         strata_error *err)
{
    for (int32_t layer = 0; window_by_layer != NULL && layer < seq->layer_count; layer++) {
        int64_t window = window_by_layer[layer];
        int64_t first_needed = position - window + 1 > 0 ? position - window + 1 : 0;
        if (window <= 0 || first_needed >= position)
            continue;
        for (int32_t head = 0; head < seq->kv_head_count; head++) {
            int64_t floor = seq->window_floor[(int64_t)layer * seq->kv_head_count + head];
            if (first_needed < floor)
                return strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                                   "cannot rewind to position %" PRId64 ": layer %" PRId32 " (sliding window %" PRId64
                                   ") KV head %" PRId32 " dropped the slots before position %" PRId64
                                   ", the window needs positions %" PRId64 " .. %" PRId64,
                                   position, layer, window, head, floor, first_needed, position - 1);
        }
    }
    return STRATA_OK;
}

strata_status kv_seq_rewind(kv_seq *seq, int64_t position, const int64_t *window_by_layer, strata_error *err)
{
    if (position < 0 || position > seq->length)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                           "cannot rewind a KV sequence to position %" PRId64 ": it holds 0 .. %" PRId64, position,
                           seq->length);
    strata_status status = check_rewind_window(seq, position, window_by_layer, err);
    if (status != STRATA_OK)
        return status;
    for (int64_t i = 0; i < table_count(seq); i++) {
        kv_block_table *table = &seq->tables[i];
        while (table->slot_count > 0 && slot_position(seq, table, table->slot_count - 1) >= position)
            table->slot_count--;
        table_release_from(seq, table, filled_blocks(seq, table));
        /* Every position below the rewind point that the table lacks is gone for good. */
        if (seq->window_floor[i] > position)
            seq->window_floor[i] = position;
    }
    seq->length = position;
    return STRATA_OK;
}

/* Whether every slot of a full block lies before min_position. */
static bool block_before(const kv_seq *seq, kv_block_id block, int64_t min_position)
{
    const int32_t *positions = kv_block_positions_const(seq->pool, block);
    for (int32_t i = 0; i < seq->block_tokens; i++)
        if (positions[i] >= min_position)
            return false;
    return true;
}

void kv_seq_drop_before(kv_seq *seq, int32_t layer, int64_t min_position)
{
    for (int32_t head = 0; head < seq->kv_head_count; head++) {
        kv_block_table *table = table_at(seq, layer, head);
        /* Only full blocks go: the room reserved after a partial last block
         * was counted from its free slots. */
        int64_t full_blocks = table->slot_count / seq->block_tokens;
        int32_t dropped = 0;
        while (dropped < full_blocks && block_before(seq, table->blocks[dropped], min_position))
            dropped++;
        if (dropped == 0)
            continue;
        /* Slots are in increasing position order, so the last dropped slot bounds them all. */
        int64_t last = kv_block_positions_const(seq->pool, table->blocks[dropped - 1])[seq->block_tokens - 1];
        int64_t *floor = &seq->window_floor[(int64_t)layer * seq->kv_head_count + head];
        if (*floor < last + 1)
            *floor = last + 1;
        for (int32_t b = 0; b < dropped; b++)
            kv_pool_release(seq->pool, table->blocks[b]);
        memmove(table->blocks, table->blocks + dropped, (size_t)(table->block_count - dropped) * sizeof *table->blocks);
        table->block_count -= dropped;
        table->slot_count -= (int64_t)dropped * seq->block_tokens;
    }
}

/* The storage type destination block d of a compacted table gets: the type
 * of the block that held index d before (so packed blocks stay packed and
 * the base-type tail stays in the base type), except that a partially
 * filled last block is in the base type, the only type appended to. */
static kv_storage keep_storage(const kv_seq *seq, const kv_block_table *table, int32_t d, int32_t new_blocks,
                               int64_t count)
{
    if (d == new_blocks - 1 && count % seq->block_tokens != 0)
        return kv_pool_configuration(seq->pool)->storage;
    return kv_block_storage(seq->pool, table->blocks[d]);
}

strata_status kv_seq_keep(kv_seq *seq, int32_t layer, int32_t kv_head, const int64_t *keep, int64_t count,
                          strata_error *err)
{
    if (layer < 0 || layer >= seq->layer_count || kv_head < 0 || kv_head >= seq->kv_head_count)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                           "cannot compact KV table of layer %" PRId32 " KV head %" PRId32 ": the sequence has %" PRId32
                           " layers of %" PRId32 " KV heads",
                           layer, kv_head, seq->layer_count, seq->kv_head_count);
    kv_block_table *table = table_at(seq, layer, kv_head);
    int64_t slots = table->slot_count;
    if (count < 0 || count > slots || (count > 0 && keep == NULL))
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                           "cannot keep %" PRId64 " slots of layer %" PRId32 " KV head %" PRId32
                           ", which holds %" PRId64 " slots",
                           count, layer, kv_head, slots);
    for (int64_t j = 0; j < count; j++)
        if (keep[j] < 0 || keep[j] >= slots || (j > 0 && keep[j] <= keep[j - 1]))
            return strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                               "cannot keep slot %" PRId64 " (entry %" PRId64 ") of layer %" PRId32 " KV head %" PRId32
                               ": slots to keep are increasing and below the table's %" PRId64 " slots",
                               keep[j], j, layer, kv_head, slots);
    if (count == slots)
        return STRATA_OK; /* increasing and in range: keep[j] == j for every j */

    const int32_t block_tokens = seq->block_tokens;
    /* keep[j] >= j, so every slot from the first that moves on moves too:
     * destination slots [first_moved, count) are written, those before stay. */
    int64_t first_moved = 0;
    while (first_moved < count && keep[first_moved] == first_moved)
        first_moved++;
    int32_t old_blocks = filled_blocks(seq, table);
    int32_t new_blocks = (int32_t)((count + block_tokens - 1) / block_tokens);
    int32_t reserved = table->block_count - old_blocks;
    int32_t first_written = first_moved < count ? (int32_t)(first_moved / block_tokens) : new_blocks;
    /* A written destination block someone else also holds, or whose storage
     * type changes, is replaced by a fresh block. (A shared block left
     * unwritten as a partially filled last block is copied by the next
     * kv_seq_reserve, as after a rewind.) Each fresh block takes at most one
     * free page. */
    int64_t needed = 0;
    for (int32_t d = first_written; d < new_blocks; d++)
        needed += kv_pool_refcount(seq->pool, table->blocks[d]) >= 2 ||
                  kv_block_storage(seq->pool, table->blocks[d]) != keep_storage(seq, table, d, new_blocks, count);
    int64_t free_blocks = kv_pool_free_blocks(seq->pool);
    if (needed > free_blocks)
        return strata_fail(err, STRATA_E_KV_FULL,
                           "KV pool is full: keeping %" PRId64 " of %" PRId64 " slots of layer %" PRId32
                           " KV head %" PRId32 " copies %" PRId64 " shared blocks, %" PRId64 " of %" PRId64
                           " blocks are free",
                           count, slots, layer, kv_head, needed, free_blocks, kv_pool_capacity(seq->pool));

    /* From here on nothing can fail. Destination block d only reads source
     * slots keep[j] >= j >= d * block_tokens, which live in old blocks >= d,
     * and slot j is written after every source before it was read (moving
     * forward in increasing order never overwrites a slot still to be read;
     * an old block replaced by a copy is no longer a source). Slots whose
     * sources all have the destination's type, a per-token one, move as
     * bytes; otherwise the destination's slots are gathered as f32 rows and
     * encoded whole: rows of per-token types come back exactly as they were
     * (decoding and encoding again is the identity), and kivi keys, quantized
     * per channel over a block, are quantized again over its new slots. */
    const kv_pool_config *config = kv_pool_configuration(seq->pool);
    for (int32_t d = first_written; d < new_blocks; d++) {
        int64_t begin = (int64_t)d * block_tokens;
        int64_t end = begin + block_tokens < count ? begin + block_tokens : count;
        kv_block_id old = table->blocks[d], to = old;
        kv_storage storage = keep_storage(seq, table, d, new_blocks, count);
        /* Slots of per-token types move as bytes when every source block has the destination's type. */
        bool as_bytes = kv_storage_rows_movable(storage);
        for (int64_t j = begin; j < end && as_bytes; j++)
            as_bytes = kv_block_storage(seq->pool, table->blocks[keep[j] / block_tokens]) == storage;
        if (kv_pool_refcount(seq->pool, old) >= 2 || kv_block_storage(seq->pool, old) != storage) {
            strata_status status = kv_pool_alloc_typed(seq->pool, layer, kv_head, storage, &to, err);
            assert(status == STRATA_OK);
            (void)status;
        }
        if (as_bytes) {
            int64_t unmoved = (first_moved < end ? first_moved : end) - begin;
            if (to != old && unmoved > 0)
                kv_pool_copy_slots(seq->pool, old, to, (int32_t)unmoved);
            for (int64_t j = first_moved > begin ? first_moved : begin; j < end; j++)
                kv_pool_move_slot(seq->pool, table->blocks[keep[j] / block_tokens], (int32_t)(keep[j] % block_tokens),
                                  to, (int32_t)(j % block_tokens));
        } else {
            for (int64_t j = begin; j < end; j++) {
                kv_block_id from = table->blocks[keep[j] / block_tokens];
                int32_t from_slot = (int32_t)(keep[j] % block_tokens);
                kv_block_read_key(seq->pool, from, from_slot, seq->staging_keys + (j - begin) * config->key_length);
                kv_block_read_value(seq->pool, from, from_slot,
                                    seq->staging_values + (j - begin) * config->value_length);
                seq->staging_positions[j - begin] = kv_block_positions_const(seq->pool, from)[from_slot];
                seq->staging_scores[j - begin] = kv_block_scores(seq->pool, from)[from_slot];
            }
            int32_t filled = (int32_t)(end - begin);
            kv_block_write_slots(seq->pool, to, seq->staging_keys, seq->staging_values, filled);
            memcpy(kv_block_positions(seq->pool, to), seq->staging_positions, (size_t)filled * sizeof(int32_t));
            memcpy(kv_block_scores(seq->pool, to), seq->staging_scores, (size_t)filled * sizeof(float));
        }
        if (to != old) {
            kv_pool_release(seq->pool, old);
            table->blocks[d] = to;
        }
    }
    for (int32_t b = new_blocks; b < old_blocks; b++)
        kv_pool_release(seq->pool, table->blocks[b]);
    /* Reserved, still empty blocks stay reserved, after the kept ones. */
    memmove(table->blocks + new_blocks, table->blocks + old_blocks, (size_t)reserved * sizeof *table->blocks);
    table->block_count = new_blocks + reserved;
    table->slot_count = count;
    return STRATA_OK;
}

strata_status kv_seq_attach(kv_seq *seq, const kv_block_id *const *blocks, const int32_t *counts, int64_t tokens,
                            strata_error *err)
{
    if (seq->length != 0)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                           "cannot attach cached KV blocks to a sequence of length %" PRId64 ": it must be empty",
                           seq->length);
    for (int32_t layer = 0; layer < seq->layer_count; layer++)
        for (int32_t head = 0; head < seq->kv_head_count; head++) {
            int64_t i = (int64_t)layer * seq->kv_head_count + head;
            if (counts[i] < 0 || (int64_t)counts[i] * seq->block_tokens > tokens || seq->tables[i].slot_count != 0)
                return strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                                   "cannot attach %" PRId32 " KV blocks of %" PRId32 " tokens to layer %" PRId32
                                   " KV head %" PRId32 " as %" PRId64 " tokens (table holds %" PRId64 " slots)",
                                   counts[i], seq->block_tokens, layer, head, tokens, seq->tables[i].slot_count);
        }
    for (int64_t i = 0; i < table_count(seq); i++) {
        strata_status status = table_grow(&seq->tables[i], (int64_t)seq->tables[i].block_count + counts[i], err);
        if (status != STRATA_OK)
            return status;
    }
    for (int64_t i = 0; i < table_count(seq); i++) {
        kv_block_table *table = &seq->tables[i];
        /* Blocks reserved before the attach stay, after the attached ones. */
        memmove(table->blocks + counts[i], table->blocks, (size_t)table->block_count * sizeof *table->blocks);
        for (int32_t b = 0; b < counts[i]; b++) {
            kv_block_id block = blocks[i][b];
            int32_t owner_layer, owner_head;
            kv_pool_block_owner(seq->pool, block, &owner_layer, &owner_head);
            assert((int64_t)owner_layer * seq->kv_head_count + owner_head == i);
            (void)owner_layer;
            (void)owner_head;
            kv_pool_retain(seq->pool, block);
            table->blocks[b] = block;
        }
        table->block_count += counts[i];
        table->slot_count = (int64_t)counts[i] * seq->block_tokens;
        /* As before, an empty table has lost every position before `tokens`; a
         * nonempty one counts as holding everything from its first slot on. */
        seq->window_floor[i] = table->slot_count == 0 ? tokens : slot_position(seq, table, 0);
    }
    seq->length = tokens;
    return STRATA_OK;
}

void kv_seq_usage(const kv_seq *seq, int64_t *blocks, int64_t *shared_blocks)
{
    int64_t count = 0, shared = 0;
    for (int64_t i = 0; i < table_count(seq); i++)
        for (int32_t b = 0; b < seq->tables[i].block_count; b++) {
            count++;
            shared += kv_pool_refcount(seq->pool, seq->tables[i].blocks[b]) >= 2;
        }
    if (blocks != NULL)
        *blocks = count;
    if (shared_blocks != NULL)
        *shared_blocks = shared;
}

strata_status kv_seq_overwrite_slot(kv_seq *seq, int32_t layer, int32_t kv_head, int64_t slot, const float *key,
                                    const float *value, strata_error *err)
{
    if (layer < 0 || layer >= seq->layer_count || kv_head < 0 || kv_head >= seq->kv_head_count)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                           "cannot overwrite a KV slot of layer %" PRId32 " KV head %" PRId32
                           ": the sequence has %" PRId32 " layers of %" PRId32 " KV heads",
                           layer, kv_head, seq->layer_count, seq->kv_head_count);
    kv_block_table *table = table_at(seq, layer, kv_head);
    if (slot < 0 || slot >= table->slot_count)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                           "cannot overwrite slot %" PRId64 " of layer %" PRId32 " KV head %" PRId32
                           ", which holds %" PRId64 " slots",
                           slot, layer, kv_head, table->slot_count);
    const kv_pool_config *config = kv_pool_configuration(seq->pool);
    int32_t index = (int32_t)(slot / seq->block_tokens);
    kv_block_id block = table->blocks[index];
    kv_storage storage = kv_block_storage(seq->pool, block);
    int64_t filled = table->slot_count - (int64_t)index * seq->block_tokens;
    int32_t slots = (int32_t)(filled < seq->block_tokens ? filled : seq->block_tokens);
    if (kv_pool_refcount(seq->pool, block) >= 2) {
        /* Copy-on-write: the other holders keep the old block as it is. */
        kv_block_id copy;
        strata_status status = kv_pool_alloc_typed(seq->pool, layer, kv_head, storage, &copy, err);
        if (status != STRATA_OK)
            return status;
        kv_pool_copy_slots(seq->pool, block, copy, slots);
        kv_pool_release(seq->pool, block);
        table->blocks[index] = block = copy;
    }
    int32_t place = (int32_t)(slot % seq->block_tokens);
    if (kv_storage_is_packed(storage)) {
        /* A packed block is encoded whole (kivi keys share scales across its slots): decode, replace, encode. */
        for (int32_t i = 0; i < slots; i++) {
            kv_block_read_key(seq->pool, block, i, seq->staging_keys + (int64_t)i * config->key_length);
            kv_block_read_value(seq->pool, block, i, seq->staging_values + (int64_t)i * config->value_length);
        }
        memcpy(seq->staging_keys + (int64_t)place * config->key_length, key, (size_t)config->key_length * sizeof(float));
        memcpy(seq->staging_values + (int64_t)place * config->value_length, value,
               (size_t)config->value_length * sizeof(float));
        kv_block_write_slots(seq->pool, block, seq->staging_keys, seq->staging_values, slots);
        return STRATA_OK;
    }
    uint64_t value_bytes = kv_storage_bytes(storage);
    kv_storage_store(storage, (char *)kv_block_keys(seq->pool, block) + place * config->key_length * value_bytes, key,
                     config->key_length);
    kv_storage_store(storage, (char *)kv_block_values(seq->pool, block) + place * config->value_length * value_bytes,
                     value, config->value_length);
    return STRATA_OK;
}

strata_status kv_seq_convert_block(kv_seq *seq, int32_t layer, int32_t kv_head, int32_t block_index,
                                   kv_storage storage, strata_error *err)
{
    kv_block_table *table = table_at(seq, layer, kv_head);
    assert(block_index >= 0 && ((int64_t)block_index + 1) * seq->block_tokens <= table->slot_count);
    kv_block_id old = table->blocks[block_index], converted;
    if (kv_block_storage(seq->pool, old) == storage)
        return STRATA_OK;
    strata_status status = kv_pool_alloc_typed(seq->pool, layer, kv_head, storage, &converted, err);
    if (status != STRATA_OK)
        return status;
    kv_pool_copy_slots(seq->pool, old, converted, seq->block_tokens);
    kv_pool_release(seq->pool, old);
    table->blocks[block_index] = converted;
    return STRATA_OK;
}

void kv_seq_usage_bytes(const kv_seq *seq, uint64_t *bytes_by_table, uint64_t *bytes, uint64_t *shared_bytes)
{
    uint64_t total = 0, shared = 0;
    for (int64_t i = 0; i < table_count(seq); i++) {
        const kv_block_table *table = &seq->tables[i];
        uint64_t table_bytes = 0;
        for (int32_t b = 0; b < table->block_count; b++) {
            uint64_t block_bytes = kv_block_bytes(seq->pool, table->blocks[b]);
            table_bytes += block_bytes;
            if (kv_pool_refcount(seq->pool, table->blocks[b]) >= 2)
                shared += block_bytes;
        }
        if (bytes_by_table != NULL)
            bytes_by_table[i] = table_bytes;
        total += table_bytes;
    }
    if (bytes != NULL)
        *bytes = total;
    if (shared_bytes != NULL)
        *shared_bytes = shared;
}
