/* tests/kv/test_seq_packed.c: sequences whose tables hold packed blocks.
 *
 * Packing full blocks (kv_seq_convert_block and the precision pass
 * kv_precision_apply) keeps every slot's position and score and its rows
 * within the packed type's error; it returns bytes to the pool; a block
 * shared with a fork is left to the fork. Compacting a table with packed
 * blocks (kv_seq_keep) keeps them packed and its partial last block in the
 * base type; a rewind that leaves a packed block partially filled is
 * followed by a copy into the base type before the next write. The precision
 * pass stops quietly when the pool has no room. kv_pool_check agrees after
 * every step. */
#include <inttypes.h>
#include <math.h>
#include <string.h>

#include "kv/pool.h"
#include "kv/precision.h"
#include "kv/seq.h"
#include "kv/kv_checks.h"
#include "test_util.h"

enum { WIDTH = 32, SLOTS = 16, LAYERS = 2, TOKENS = 70 };

static kv_pool *create_pool(int64_t pages)
{
    kv_pool_config config = {.block_tokens = SLOTS, .layer_count = LAYERS, .kv_head_count = 1,
                             .key_length = WIDTH, .value_length = WIDTH, .storage = KV_STORAGE_F32};
    config.budget_bytes = (uint64_t)pages * 4224; /* 2048 + 2048 + 64 + 64 = 4224 bytes a page */
    kv_pool *pool = NULL;
    strata_error error = {0};
    CHECK_MESSAGE(kv_pool_create(&config, &pool, &error) == STRATA_OK, "%s", error.message);
    CHECK(pool == NULL || kv_pool_block_bytes(pool) == 4224);
    return pool;
}

/* Element j of the key (value) at a position: smooth in j and position, in [-1, 1]. */
static float sample(int32_t layer, int64_t position, int32_t j, bool value)
{
    return (float)sin(0.37 * (double)position + 0.91 * j + (value ? 2.0 : 0.0) + layer);
}

static void append(kv_seq *seq, int64_t tokens)
{
    strata_error error = {0};
    CHECK_MESSAGE(kv_seq_reserve(seq, tokens, &error) == STRATA_OK, "%s", error.message);
    static float keys[TOKENS * WIDTH], values[TOKENS * WIDTH];
    int64_t positions[TOKENS], start = kv_seq_length(seq);
    for (int32_t layer = 0; layer < LAYERS; layer++) {
        for (int64_t t = 0; t < tokens; t++) {
            positions[t] = start + t;
            for (int32_t j = 0; j < WIDTH; j++) {
                keys[t * WIDTH + j] = sample(layer, start + t, j, false);
                values[t * WIDTH + j] = sample(layer, start + t, j, true);
            }
        }
        kv_seq_write(seq, layer, keys, values, tokens, positions);
    }
    kv_seq_advance(seq, tokens);
}

/* Checks that slot i of a table holds the token at `position`, rows within tolerance (0: exactly). */
static bool slot_is(const kv_seq *seq, int32_t layer, int64_t slot, int64_t position, double tolerance)
{
    kv_pool *pool = kv_seq_pool(seq);
    const kv_block_table *table = kv_seq_table(seq, layer, 0);
    kv_block_id block = table->blocks[slot / SLOTS];
    int32_t place = (int32_t)(slot % SLOTS);
    if (kv_block_positions_const(pool, block)[place] != position)
        return false;
    float key[WIDTH], value[WIDTH];
    kv_block_read_key(pool, block, place, key);
    kv_block_read_value(pool, block, place, value);
    for (int32_t j = 0; j < WIDTH; j++)
        if (fabs(key[j] - sample(layer, position, j, false)) > tolerance ||
            fabs(value[j] - sample(layer, position, j, true)) > tolerance)
            return false;
    return true;
}

/* Tolerances: rows span [-1, 1]; q8's step is at most 1/127, kivi2's at most 2/3 (halved by rounding),
 * doubled for a block quantized again after a keep. */
static double tolerance_of(kv_storage storage)
{
    switch (storage) {
    case KV_STORAGE_Q8: return 1.0 / 127;
    case KV_STORAGE_Q4: return 2.0 / 8;
    case KV_STORAGE_KIVI4: return 2.0 / 15;
    case KV_STORAGE_KIVI2: return 2.0 / 3;
    default: return 0;
    }
}

static void packing_keeps_slots_and_returns_bytes(void)
{
    const kv_storage types[] = {KV_STORAGE_Q8, KV_STORAGE_Q4, KV_STORAGE_KIVI4, KV_STORAGE_KIVI2};
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        kv_pool *pool = create_pool(40);
        kv_seq *seq = NULL;
        strata_error error = {0};
        if (pool == NULL || kv_seq_create(pool, &seq, &error) != STRATA_OK)
            return;
        append(seq, TOKENS); /* 4 full blocks and 6 slots per table */
        kv_pool_usage before, after;
        kv_pool_usage_get(pool, &before);
        /* residual 20: blocks whose newest position is below 50 are packed, i.e. blocks 0, 1, 2. */
        CHECK(kv_precision_apply(seq, types[t], 20, &error) == STRATA_OK);
        kv_pool_usage_get(pool, &after);
        uint64_t packed_bytes = kv_pool_storage_block_bytes(pool, types[t]);
        CHECK_MESSAGE(after.used_bytes == before.used_bytes - LAYERS * 3 * (4224 - packed_bytes),
                      "%s: %" PRIu64 " bytes used, %" PRIu64 " before", kv_storage_name(types[t]), after.used_bytes,
                      before.used_bytes);
        CHECK(after.free_bytes > before.free_bytes);
        for (int32_t layer = 0; layer < LAYERS; layer++) {
            const kv_block_table *table = kv_seq_table(seq, layer, 0);
            for (int32_t b = 0; b < 5; b++)
                CHECK(kv_block_storage(pool, table->blocks[b]) == (b < 3 ? types[t] : KV_STORAGE_F32));
            for (int64_t i = 0; i < TOKENS; i++)
                CHECK_MESSAGE(slot_is(seq, layer, i, i, i < 48 ? tolerance_of(types[t]) : 0),
                              "%s layer %d slot %" PRId64, kv_storage_name(types[t]), layer, i);
        }
        pool_is_consistent(pool);

        /* Keep: drop slot 5 and slots 40..44. Blocks 0..2 stay packed; the partial last block is f32. */
        int64_t keep[TOKENS], count = 0;
        for (int64_t i = 0; i < TOKENS; i++)
            if (i != 5 && (i < 40 || i > 44))
                keep[count++] = i;
        for (int32_t layer = 0; layer < LAYERS; layer++) {
            CHECK(kv_seq_keep(seq, layer, 0, keep, count, &error) == STRATA_OK);
            const kv_block_table *table = kv_seq_table(seq, layer, 0);
            CHECK(table->slot_count == count && count == 64);
            for (int32_t b = 0; b < 4; b++)
                CHECK(kv_block_storage(pool, table->blocks[b]) == (b < 3 ? types[t] : KV_STORAGE_F32));
            for (int64_t i = 0; i < count; i++)
                CHECK_MESSAGE(slot_is(seq, layer, i, keep[i], i < 48 ? 2 * tolerance_of(types[t]) : 0),
                              "%s after keep: layer %d slot %" PRId64, kv_storage_name(types[t]), layer, i);
        }
        pool_is_consistent(pool);

        /* Rewind into packed block 1: it is copied into f32 before the next write. */
        CHECK(kv_seq_rewind(seq, 21, NULL, &error) == STRATA_OK);
        const kv_block_table *table = kv_seq_table(seq, 0, 0);
        CHECK(table->slot_count == 20 && kv_block_storage(pool, table->blocks[1]) == types[t]);
        CHECK(kv_seq_blocks_needed(seq, 1) == LAYERS);
        append(seq, 1);
        CHECK(kv_block_storage(pool, table->blocks[1]) == KV_STORAGE_F32 && table->slot_count == 21);
        CHECK(slot_is(seq, 0, 20, 21, 0));
        CHECK(slot_is(seq, 0, 19, 20, 2 * tolerance_of(types[t])));
        pool_is_consistent(pool);
        kv_seq_destroy(seq);
        kv_pool_usage_get(pool, &after);
        CHECK(after.used_blocks == 0 && kv_pool_free_blocks(pool) == 40);
        kv_pool_destroy(pool);
    }
}

/* A block shared with a fork stays the fork's as it was: packing makes a private packed copy. */
static void packing_a_shared_block_leaves_the_other_sequence_alone(void)
{
    kv_pool *pool = create_pool(40);
    kv_seq *seq = NULL, *fork = NULL;
    strata_error error = {0};
    if (pool == NULL || kv_seq_create(pool, &seq, &error) != STRATA_OK)
        return;
    append(seq, 32);
    CHECK(kv_seq_fork(seq, &fork, &error) == STRATA_OK);
    CHECK(kv_precision_apply(seq, KV_STORAGE_KIVI2, 0, &error) == STRATA_OK);
    for (int32_t layer = 0; layer < LAYERS; layer++)
        for (int64_t i = 0; i < 32; i++) {
            CHECK(slot_is(fork, layer, i, i, 0));
            CHECK(slot_is(seq, layer, i, i, tolerance_of(KV_STORAGE_KIVI2)));
        }
    CHECK(kv_block_storage(pool, kv_seq_table(fork, 0, 0)->blocks[0]) == KV_STORAGE_F32);
    CHECK(kv_pool_refcount(pool, kv_seq_table(fork, 0, 0)->blocks[0]) == 1);
    pool_is_consistent(pool);
    kv_seq_destroy(fork);
    kv_seq_destroy(seq);
    kv_pool_destroy(pool);
}

/* With no free page and no page carved for the type, packing stops and changes nothing. */
static void packing_in_a_full_pool_stops_quietly(void)
{
    kv_pool *pool = create_pool(2 * 3); /* exactly 3 blocks per layer */
    kv_seq *seq = NULL;
    strata_error error = {0};
    if (pool == NULL || kv_seq_create(pool, &seq, &error) != STRATA_OK)
        return;
    append(seq, 48);
    CHECK(kv_pool_free_blocks(pool) == 0);
    CHECK(kv_precision_apply(seq, KV_STORAGE_Q8, 0, &error) == STRATA_OK);
    for (int32_t b = 0; b < 3; b++)
        CHECK(kv_block_storage(pool, kv_seq_table(seq, 0, 0)->blocks[b]) == KV_STORAGE_F32);
    for (int64_t i = 0; i < 48; i++)
        CHECK(slot_is(seq, 1, i, i, 0));
    pool_is_consistent(pool);
    kv_seq_destroy(seq);
    kv_pool_destroy(pool);
}

/* Overwriting a slot of a packed block (merging policies do) re-encodes the
 * block: the new rows come back within the type's error, the other slots too,
 * and a block shared with a fork is copied first, still packed. */
static void overwriting_a_packed_slot_reencodes_its_block(void)
{
    kv_pool *pool = create_pool(40);
    kv_seq *seq = NULL, *fork = NULL;
    strata_error error = {0};
    if (pool == NULL || kv_seq_create(pool, &seq, &error) != STRATA_OK)
        return;
    append(seq, 40);
    CHECK(kv_precision_apply(seq, KV_STORAGE_KIVI4, 0, &error) == STRATA_OK);
    CHECK(kv_seq_fork(seq, &fork, &error) == STRATA_OK);
    float key[WIDTH], value[WIDTH];
    for (int32_t j = 0; j < WIDTH; j++) {
        key[j] = sample(0, 3, j, false); /* slot 5 takes position 3's rows */
        value[j] = sample(0, 3, j, true);
    }
    kv_block_id shared = kv_seq_table(seq, 0, 0)->blocks[0];
    CHECK(kv_seq_overwrite_slot(seq, 0, 0, 5, key, value, &error) == STRATA_OK);
    kv_block_id copy = kv_seq_table(seq, 0, 0)->blocks[0];
    CHECK(copy != shared && kv_block_storage(pool, copy) == KV_STORAGE_KIVI4);
    CHECK(kv_seq_table(fork, 0, 0)->blocks[0] == shared);
    double tolerance = 2 * tolerance_of(KV_STORAGE_KIVI4);
    float got[WIDTH];
    kv_block_read_key(pool, copy, 5, got);
    for (int32_t j = 0; j < WIDTH; j++)
        CHECK(fabs(got[j] - key[j]) <= tolerance);
    CHECK(kv_block_positions_const(pool, copy)[5] == 5); /* the position stays */
    for (int64_t i = 0; i < 16; i++)
        if (i != 5) {
            CHECK(slot_is(seq, 0, i, i, tolerance));
            CHECK(slot_is(fork, 0, i, i, tolerance_of(KV_STORAGE_KIVI4)));
        }
    pool_is_consistent(pool);
    kv_seq_destroy(fork);
    kv_seq_destroy(seq);
    kv_pool_destroy(pool);
}

int main(void)
{
    RUN_CASE(packing_keeps_slots_and_returns_bytes);
    RUN_CASE(packing_a_shared_block_leaves_the_other_sequence_alone);
    RUN_CASE(packing_in_a_full_pool_stops_quietly);
    RUN_CASE(overwriting_a_packed_slot_reencodes_its_block);
    TEST_EXIT();
}
