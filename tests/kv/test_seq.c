/* tests/kv/test_seq.c: sequence views over the KV block pool.
 *
 * Named cases pin down each behaviour on a small pool (2 layers, 2 KV heads,
 * 4 slots a block): what is written reads back through the block tables;
 * fork shares blocks and the first writer copies only a shared, partially
 * filled last block; rewind drops slots and blocks, and refuses to reach
 * into what a sliding window already dropped; drop_before frees exactly
 * the blocks wholly before a position; a reservation the pool cannot serve
 * fails with STRATA_E_KV_FULL and changes no sequence; attach shares cached
 * blocks; keep compacts one table to chosen slots, copying only the shared
 * blocks it writes, and later writes, rewinds and forks follow positions,
 * not slot indices. A randomized test then runs thousands of interleaved operations
 * on up to a dozen sequences over a pool small enough to fill often, and
 * after every one compares each sequence with a plain shadow model and each
 * block's refcount with the references counted from the tables. It prints
 * its seed; `test_seq SEED` or STRATA_TEST_SEED=SEED replays a run. */
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kv/pool.h"
#include "kv/seq.h"
#include "test_util.h"

enum { KEY = 4, VALUE = 3, SLOTS = 4, MAX_HEADS = 2, MAX_TOKENS = 64 };

/* ---- helpers ----------------------------------------------------------- */

/* A pool of `blocks` blocks of SLOTS f32 slots of key KEY and value VALUE. */
static kv_pool *create_pool(int32_t layers, int32_t heads, int64_t blocks)
{
    kv_pool_config config = {.block_tokens = SLOTS,
                             .layer_count = layers,
                             .kv_head_count = heads,
                             .key_length = KEY,
                             .value_length = VALUE,
                             .storage = KV_STORAGE_F32};
    kv_pool *probe = NULL, *pool = NULL;
    config.budget_bytes = (uint64_t)layers * heads * 4096;
    strata_error error = {0};
    CHECK_MESSAGE(kv_pool_create(&config, &probe, &error) == STRATA_OK, "%s", error.message);
    config.budget_bytes = (uint64_t)blocks * kv_pool_block_bytes(probe);
    kv_pool_destroy(probe);
    CHECK_MESSAGE(kv_pool_create(&config, &pool, &error) == STRATA_OK, "%s", error.message);
    return pool;
}

static kv_seq *create_seq(kv_pool *pool)
{
    kv_seq *seq = NULL;
    strata_error error = {0};
    CHECK_MESSAGE(kv_seq_create(pool, &seq, &error) == STRATA_OK, "%s", error.message);
    return seq;
}

static kv_seq *fork_seq(const kv_seq *parent)
{
    kv_seq *child = NULL;
    strata_error error = {0};
    CHECK_MESSAGE(kv_seq_fork(parent, &child, &error) == STRATA_OK, "%s", error.message);
    return child;
}

/* A distinctive value for element j of the key (or value) that write `tag`
 * stored for (layer, head) at a position: a 24-bit integer, exact in f32. */
static float sample(uint32_t tag, int32_t layer, int32_t head, int64_t position, int32_t j, bool value)
{
    uint32_t h = tag * 0x9e3779b1u ^ (uint32_t)layer * 0x85ebca6bu ^ (uint32_t)head * 0xc2b2ae35u ^
                 (uint32_t)position * 0x27d4eb2fu ^ (uint32_t)j * 0x165667b1u ^ (value ? 0x5bd1e995u : 0u);
    h ^= h >> 15;
    h *= 0x2c1b3c6du;
    h ^= h >> 12;
    return (float)(h & 0xffffffu);
}

/* Reserves tokens + extra slots, then writes `tokens` tokens of write `tag`
 * at the next positions into every layer and advances. */
static strata_status append(kv_seq *seq, uint32_t tag, int64_t tokens, int64_t extra, strata_error *error)
{
    strata_status status = kv_seq_reserve(seq, tokens + extra, error);
    if (status != STRATA_OK)
        return status;
    const kv_pool_config *config = kv_pool_configuration(kv_seq_pool(seq));
    int32_t heads = config->kv_head_count;
    static float keys[MAX_TOKENS * MAX_HEADS * KEY], values[MAX_TOKENS * MAX_HEADS * VALUE];
    int64_t positions[MAX_TOKENS];
    int64_t start = kv_seq_length(seq);
    for (int32_t layer = 0; layer < config->layer_count; layer++) {
        for (int64_t t = 0; t < tokens; t++) {
            positions[t] = start + t;
            for (int32_t h = 0; h < heads; h++) {
                for (int32_t j = 0; j < KEY; j++)
                    keys[(t * heads + h) * KEY + j] = sample(tag, layer, h, start + t, j, false);
                for (int32_t j = 0; j < VALUE; j++)
                    values[(t * heads + h) * VALUE + j] = sample(tag, layer, h, start + t, j, true);
            }
        }
        kv_seq_write(seq, layer, keys, values, tokens, positions);
    }
    kv_seq_advance(seq, tokens);
    return STRATA_OK;
}

static void append_ok(kv_seq *seq, uint32_t tag, int64_t tokens)
{
    strata_error error = {0};
    CHECK_MESSAGE(append(seq, tag, tokens, 0, &error) == STRATA_OK, "%s", error.message);
}

/* Whether slot `slot` of (layer, head) holds write tag's key and value for position. */
static bool slot_holds(const kv_seq *seq, int32_t layer, int32_t head, int64_t slot, uint32_t tag, int64_t position)
{
    const kv_block_table *table = kv_seq_table(seq, layer, head);
    if (slot >= table->slot_count || slot / SLOTS >= table->block_count)
        return false;
    kv_pool *pool = kv_seq_pool(seq);
    kv_block_id block = table->blocks[slot / SLOTS];
    int64_t i = slot % SLOTS;
    const float *keys = (const float *)kv_block_keys_const(pool, block) + i * KEY;
    const float *values = (const float *)kv_block_values_const(pool, block) + i * VALUE;
    bool same = kv_block_positions_const(pool, block)[i] == position;
    for (int32_t j = 0; j < KEY; j++)
        same &= keys[j] == sample(tag, layer, head, position, j, false);
    for (int32_t j = 0; j < VALUE; j++)
        same &= values[j] == sample(tag, layer, head, position, j, true);
    return same;
}

/* Whether slots first .. first + count of every table of a layer hold write
 * tag's tokens at positions first_position, first_position + 1, ... */
static bool slots_hold(const kv_seq *seq, int32_t layer, int64_t first, int64_t count, uint32_t tag,
                       int64_t first_position)
{
    bool same = true;
    for (int32_t head = 0; head < kv_pool_configuration(kv_seq_pool(seq))->kv_head_count; head++)
        for (int64_t s = 0; s < count; s++)
            same &= slot_holds(seq, layer, head, first + s, tag, first_position + s);
    return same;
}

/* A byte image of everything a sequence shows: lengths, block ids and every
 * filled slot's position, key, value and score. Freed by the caller. */
static unsigned char *snapshot(const kv_seq *seq, size_t *size)
{
    const kv_pool_config *config = kv_pool_configuration(kv_seq_pool(seq));
    size_t capacity = 1024, used = 0;
    unsigned char *image = malloc(capacity);
#define SNAPSHOT_PUT(pointer, bytes)                                                                                 \
    do {                                                                                                             \
        while (used + (bytes) > capacity)                                                                            \
            image = realloc(image, capacity *= 2);                                                                   \
        memcpy(image + used, (pointer), (bytes));                                                                    \
        used += (bytes);                                                                                             \
    } while (0)
    int64_t length = kv_seq_length(seq);
    SNAPSHOT_PUT(&length, sizeof length);
    kv_pool *pool = kv_seq_pool(seq);
    for (int32_t layer = 0; layer < config->layer_count; layer++)
        for (int32_t head = 0; head < config->kv_head_count; head++) {
            const kv_block_table *table = kv_seq_table(seq, layer, head);
            SNAPSHOT_PUT(&table->slot_count, sizeof table->slot_count);
            SNAPSHOT_PUT(&table->block_count, sizeof table->block_count);
            if (table->block_count > 0) /* a never-grown table has no array */
                SNAPSHOT_PUT(table->blocks, (size_t)table->block_count * sizeof *table->blocks);
            for (int64_t s = 0; s < table->slot_count; s++) {
                kv_block_id block = table->blocks[s / SLOTS];
                int64_t i = s % SLOTS;
                SNAPSHOT_PUT(kv_block_positions_const(pool, block) + i, sizeof(int32_t));
                SNAPSHOT_PUT((const float *)kv_block_keys_const(pool, block) + i * KEY, KEY * sizeof(float));
                SNAPSHOT_PUT((const float *)kv_block_values_const(pool, block) + i * VALUE, VALUE * sizeof(float));
                SNAPSHOT_PUT(kv_block_scores(pool, block) + i, sizeof(float));
            }
        }
#undef SNAPSHOT_PUT
    *size = used;
    return image;
}

static bool same_snapshot(const kv_seq *seq, const unsigned char *image, size_t size)
{
    size_t now_size;
    unsigned char *now = snapshot(seq, &now_size);
    bool same = now_size == size && memcmp(now, image, size) == 0;
    free(now);
    return same;
}

static bool pool_is_consistent(const kv_pool *pool)
{
    strata_error error = {0};
    strata_status status = kv_pool_check(pool, &error);
    CHECK_MESSAGE(status == STRATA_OK, "%s", error.message);
    return status == STRATA_OK;
}

/* ---- named cases --------------------------------------------------------- */

static void written_slots_read_back_through_the_tables(void)
{
    kv_pool *pool = create_pool(2, 2, 64);
    kv_seq *seq = create_seq(pool);
    CHECK(kv_seq_length(seq) == 0 && kv_seq_pool(seq) == pool);
    append_ok(seq, 1, 3);
    append_ok(seq, 2, 7);
    CHECK(kv_seq_length(seq) == 10);
    for (int32_t layer = 0; layer < 2; layer++) {
        for (int32_t head = 0; head < 2; head++) {
            const kv_block_table *table = kv_seq_table(seq, layer, head);
            CHECK(table->slot_count == 10 && table->block_count == 3 && table->block_capacity >= 3);
            for (int32_t b = 0; b < table->block_count; b++) {
                int32_t owner_layer, owner_head;
                kv_pool_block_owner(pool, table->blocks[b], &owner_layer, &owner_head);
                CHECK(owner_layer == layer && owner_head == head);
            }
        }
        CHECK_MESSAGE(slots_hold(seq, layer, 0, 3, 1, 0), "layer %d, first write", layer);
        CHECK_MESSAGE(slots_hold(seq, layer, 3, 7, 2, 3), "layer %d, second write", layer);
    }
    int64_t blocks = -1, shared = -1;
    kv_seq_usage(seq, &blocks, &shared);
    CHECK(blocks == 12 && shared == 0);
    CHECK(kv_pool_free_blocks(pool) == 64 - 12);
    pool_is_consistent(pool);
    kv_seq_destroy(seq);
    kv_seq_destroy(NULL);
    kv_pool_destroy(pool);
}

static void fork_then_write_copies_only_the_touched_block(void)
{
    kv_pool *pool = create_pool(2, 2, 64);
    kv_seq *parent = create_seq(pool);
    append_ok(parent, 1, 6); /* per table: one full block, one holding 2 of 4 slots */
    int64_t free_before = kv_pool_free_blocks(pool);
    kv_seq *child = fork_seq(parent);
    CHECK(kv_pool_free_blocks(pool) == free_before);
    CHECK(kv_seq_length(child) == 6);
    int64_t blocks, shared;
    kv_seq_usage(child, &blocks, &shared);
    CHECK(blocks == 8 && shared == 8);

    size_t parent_size;
    unsigned char *parent_image = snapshot(parent, &parent_size);
    CHECK(kv_seq_blocks_needed(child, 1) == 4); /* the copies of the partial blocks, nothing else */
    append_ok(child, 2, 1);
    CHECK(kv_pool_free_blocks(pool) == free_before - 4);
    CHECK(same_snapshot(parent, parent_image, parent_size));
    for (int32_t layer = 0; layer < 2; layer++) {
        for (int32_t head = 0; head < 2; head++) {
            const kv_block_table *p = kv_seq_table(parent, layer, head), *c = kv_seq_table(child, layer, head);
            CHECK(c->blocks[0] == p->blocks[0] && kv_pool_refcount(pool, c->blocks[0]) == 2);
            CHECK(c->blocks[1] != p->blocks[1]);
            CHECK(kv_pool_refcount(pool, c->blocks[1]) == 1 && kv_pool_refcount(pool, p->blocks[1]) == 1);
        }
        CHECK(slots_hold(child, layer, 0, 6, 1, 0) && slots_hold(child, layer, 6, 1, 2, 6));
    }
    /* The parent now holds its partial block alone: its next token needs nothing new. */
    CHECK(kv_seq_blocks_needed(parent, 1) == 0);
    append_ok(parent, 3, 2);
    CHECK(kv_pool_free_blocks(pool) == free_before - 4);
    CHECK(slots_hold(parent, 1, 6, 2, 3, 6) && slots_hold(child, 1, 6, 1, 2, 6));
    pool_is_consistent(pool);
    free(parent_image);
    kv_seq_destroy(child);
    kv_seq_destroy(parent);
    CHECK(kv_pool_free_blocks(pool) == 64);
    kv_pool_destroy(pool);
}

static void fork_of_a_full_last_block_shares_everything_and_each_next_write_takes_a_new_block(void)
{
    kv_pool *pool = create_pool(2, 2, 64);
    kv_seq *parent = create_seq(pool);
    append_ok(parent, 1, 8);
    int64_t free_before = kv_pool_free_blocks(pool);
    kv_seq *child = fork_seq(parent);
    CHECK(kv_seq_blocks_needed(child, 1) == 4 && kv_seq_blocks_needed(parent, 1) == 4);
    append_ok(child, 2, 1);
    CHECK(kv_pool_free_blocks(pool) == free_before - 4);
    append_ok(parent, 3, 1);
    CHECK(kv_pool_free_blocks(pool) == free_before - 8);
    for (int32_t layer = 0; layer < 2; layer++) {
        for (int32_t head = 0; head < 2; head++) {
            const kv_block_table *p = kv_seq_table(parent, layer, head), *c = kv_seq_table(child, layer, head);
            CHECK(p->block_count == 3 && c->block_count == 3);
            CHECK(p->blocks[0] == c->blocks[0] && p->blocks[1] == c->blocks[1] && p->blocks[2] != c->blocks[2]);
            CHECK(kv_pool_refcount(pool, p->blocks[1]) == 2);
        }
        CHECK(slots_hold(parent, layer, 0, 8, 1, 0) && slots_hold(parent, layer, 8, 1, 3, 8));
        CHECK(slots_hold(child, layer, 0, 8, 1, 0) && slots_hold(child, layer, 8, 1, 2, 8));
    }
    pool_is_consistent(pool);
    kv_seq_destroy(parent);
    kv_seq_destroy(child);
    kv_pool_destroy(pool);
}

static void rewind_drops_slots_and_blocks_and_positions_continue_from_there(void)
{
    kv_pool *pool = create_pool(2, 2, 64);
    kv_seq *seq = create_seq(pool);
    strata_error error = {0};
    CHECK(append(seq, 1, 10, 8, &error) == STRATA_OK); /* 10 slots, room for 18: 5 blocks a table */
    CHECK(kv_pool_free_blocks(pool) == 64 - 20);
    /* Statistics a policy accumulated stay with the kept slots; rewritten slots start from zero. */
    const kv_block_table *statistics_table = kv_seq_table(seq, 0, 1);
    for (int32_t b = 0; b < 3; b++)
        for (int32_t i = 0; i < SLOTS; i++)
            kv_block_scores(pool, statistics_table->blocks[b])[i] = 1.5f;
    CHECK(kv_seq_rewind(seq, 11, NULL, &error) == STRATA_E_INVALID_ARGUMENT);
    CHECK(strstr(error.message, "11") != NULL);
    CHECK(kv_seq_rewind(seq, -1, NULL, NULL) == STRATA_E_INVALID_ARGUMENT);
    CHECK(kv_seq_length(seq) == 10 && kv_pool_free_blocks(pool) == 64 - 20);

    CHECK(kv_seq_rewind(seq, 5, NULL, &error) == STRATA_OK);
    CHECK(kv_seq_length(seq) == 5);
    for (int32_t layer = 0; layer < 2; layer++)
        for (int32_t head = 0; head < 2; head++) {
            const kv_block_table *table = kv_seq_table(seq, layer, head);
            CHECK(table->slot_count == 5 && table->block_count == 2); /* reserved blocks went too */
        }
    CHECK(kv_pool_free_blocks(pool) == 64 - 8);
    append_ok(seq, 2, 3);
    for (int32_t layer = 0; layer < 2; layer++)
        CHECK(slots_hold(seq, layer, 0, 5, 1, 0) && slots_hold(seq, layer, 5, 3, 2, 5));
    for (int64_t s = 0; s < 8; s++)
        CHECK(kv_block_scores(pool, statistics_table->blocks[s / SLOTS])[s % SLOTS] == (s < 5 ? 1.5f : 0.0f));
    CHECK(kv_seq_rewind(seq, 0, NULL, &error) == STRATA_OK);
    CHECK(kv_pool_free_blocks(pool) == 64);
    pool_is_consistent(pool);
    kv_seq_destroy(seq);
    kv_pool_destroy(pool);
}

static void rewinding_into_a_shared_block_then_writing_copies_it(void)
{
    kv_pool *pool = create_pool(2, 2, 64);
    kv_seq *parent = create_seq(pool);
    append_ok(parent, 1, 8);
    kv_seq *child = fork_seq(parent);
    int64_t free_before = kv_pool_free_blocks(pool);
    CHECK(kv_seq_rewind(child, 6, NULL, NULL) == STRATA_OK);
    CHECK(kv_pool_free_blocks(pool) == free_before); /* the half-dropped block is still the parent's too */
    CHECK(kv_seq_blocks_needed(child, 1) == 4);
    append_ok(child, 2, 1);
    CHECK(kv_pool_free_blocks(pool) == free_before - 4);
    for (int32_t layer = 0; layer < 2; layer++) {
        CHECK(slots_hold(parent, layer, 0, 8, 1, 0));
        CHECK(slots_hold(child, layer, 0, 6, 1, 0) && slots_hold(child, layer, 6, 1, 2, 6));
        CHECK(kv_seq_table(child, layer, 1)->blocks[1] != kv_seq_table(parent, layer, 1)->blocks[1]);
    }
    pool_is_consistent(pool);
    kv_seq_destroy(parent);
    kv_seq_destroy(child);
    kv_pool_destroy(pool);
}

static void drop_before_releases_exactly_the_blocks_wholly_before_the_position(void)
{
    kv_pool *pool = create_pool(2, 2, 64);
    kv_seq *seq = create_seq(pool);
    append_ok(seq, 1, 14); /* blocks hold positions 0-3, 4-7, 8-11, 12-13 */
    int64_t free_before = kv_pool_free_blocks(pool);
    kv_seq_drop_before(seq, 1, 9); /* 8-11 still has 9, 10, 11 */
    CHECK(kv_pool_free_blocks(pool) == free_before + 4);
    for (int32_t head = 0; head < 2; head++) {
        CHECK(kv_seq_table(seq, 0, head)->slot_count == 14);
        CHECK(kv_seq_table(seq, 1, head)->slot_count == 6 && kv_seq_table(seq, 1, head)->block_count == 2);
    }
    CHECK(slots_hold(seq, 0, 0, 14, 1, 0) && slots_hold(seq, 1, 0, 6, 1, 8));
    CHECK(kv_seq_length(seq) == 14);

    kv_seq_drop_before(seq, 1, 12);
    CHECK(kv_pool_free_blocks(pool) == free_before + 6);
    /* The partial last block stays even when all of it lies before the position. */
    kv_seq_drop_before(seq, 1, 100);
    CHECK(kv_pool_free_blocks(pool) == free_before + 6);
    CHECK(kv_seq_table(seq, 1, 0)->slot_count == 2 && slots_hold(seq, 1, 0, 2, 1, 12));
    append_ok(seq, 2, 3);
    CHECK(slots_hold(seq, 1, 0, 2, 1, 12) && slots_hold(seq, 1, 2, 3, 2, 14));
    CHECK(slots_hold(seq, 0, 0, 14, 1, 0) && slots_hold(seq, 0, 14, 3, 2, 14));
    pool_is_consistent(pool);
    kv_seq_destroy(seq);
    CHECK(kv_pool_free_blocks(pool) == 64);
    kv_pool_destroy(pool);
}

static void rewinding_into_a_dropped_sliding_window_range_fails_and_changes_nothing(void)
{
    const int64_t windows[2] = {0, 6};
    kv_pool *pool = create_pool(2, 2, 64);
    kv_seq *seq = create_seq(pool);
    append_ok(seq, 1, 20);
    kv_seq_drop_before(seq, 1, 20 - 6 + 1); /* drops positions 0 .. 11: the first kept is 12 */
    size_t size;
    unsigned char *image = snapshot(seq, &size);
    int64_t free_before = kv_pool_free_blocks(pool);
    strata_error error = {0};
    /* Position 16 needs 11 .. 15 in layer 1. */
    CHECK(kv_seq_rewind(seq, 16, windows, &error) == STRATA_E_INVALID_ARGUMENT);
    CHECK_MESSAGE(strstr(error.message, "layer 1") != NULL && strstr(error.message, "12") != NULL, "%s",
                  error.message);
    CHECK(same_snapshot(seq, image, size) && kv_pool_free_blocks(pool) == free_before);
    /* Position 17 needs 12 .. 16: all there. */
    CHECK(kv_seq_rewind(seq, 17, windows, &error) == STRATA_OK);
    CHECK(kv_seq_length(seq) == 17 && kv_seq_table(seq, 1, 0)->slot_count == 5);
    /* Position 0 needs nothing; neither does anything when no windows are given. */
    CHECK(kv_seq_rewind(seq, 3, NULL, &error) == STRATA_OK);
    CHECK(kv_seq_table(seq, 1, 1)->slot_count == 0 && kv_seq_table(seq, 0, 1)->slot_count == 3);
    CHECK(kv_seq_rewind(seq, 2, windows, &error) == STRATA_E_INVALID_ARGUMENT);
    CHECK(kv_seq_rewind(seq, 0, windows, &error) == STRATA_OK);
    pool_is_consistent(pool);
    free(image);
    kv_seq_destroy(seq);
    kv_pool_destroy(pool);
}

static void destroying_every_sequence_returns_every_block(void)
{
    kv_pool *pool = create_pool(2, 2, 64);
    kv_seq *a = create_seq(pool);
    strata_error error = {0};
    CHECK(append(a, 1, 7, 5, &error) == STRATA_OK);
    kv_seq *b = fork_seq(a);
    kv_seq *c = fork_seq(b);
    append_ok(b, 2, 3);
    kv_seq_drop_before(c, 0, 4);
    CHECK(kv_seq_rewind(c, 5, NULL, NULL) == STRATA_OK);
    append_ok(c, 3, 9);
    kv_seq *empty = create_seq(pool);
    CHECK(kv_pool_free_blocks(pool) < 64);
    kv_seq_destroy(b);
    kv_seq_destroy(a);
    kv_seq_destroy(empty);
    kv_seq_destroy(c);
    CHECK(kv_pool_free_blocks(pool) == 64);
    kv_pool_usage usage;
    kv_pool_usage_get(pool, &usage);
    CHECK(usage.used_blocks == 0 && usage.shared_blocks == 0);
    pool_is_consistent(pool);
    kv_pool_destroy(pool);
}

static void reserving_past_the_budget_fails_and_leaves_every_sequence_intact(void)
{
    kv_pool *pool = create_pool(2, 2, 24);
    kv_seq *a = create_seq(pool);
    append_ok(a, 1, 6);
    kv_seq *b = fork_seq(a);
    append_ok(b, 2, 1);
    kv_seq *c = create_seq(pool);
    append_ok(c, 3, 5);
    kv_seq *d = fork_seq(c); /* shares c's partial block */
    CHECK(kv_pool_free_blocks(pool) == 24 - 8 - 4 - 8);
    kv_seq *all[4] = {a, b, c, d};
    unsigned char *images[4];
    size_t sizes[4];
    for (int i = 0; i < 4; i++)
        images[i] = snapshot(all[i], &sizes[i]);

    strata_error error = {0};
    CHECK(kv_seq_reserve(a, 100, &error) == STRATA_E_KV_FULL);
    CHECK(error.status == STRATA_E_KV_FULL);
    CHECK_MESSAGE(strstr(error.message, "100 more tokens") != NULL && strstr(error.message, "4 of 24") != NULL, "%s",
                  error.message);
    /* d's next 3 tokens fit its partial blocks but need their 4 copies: one short. */
    kv_block_id taken;
    CHECK(kv_pool_alloc(pool, 0, 0, &taken, NULL) == STRATA_OK);
    CHECK(kv_seq_blocks_needed(d, 3) == 4);
    CHECK(kv_seq_reserve(d, 3, &error) == STRATA_E_KV_FULL);
    CHECK(kv_seq_reserve(d, -1, &error) == STRATA_E_INVALID_ARGUMENT);
    for (int i = 0; i < 4; i++)
        CHECK_MESSAGE(same_snapshot(all[i], images[i], sizes[i]), "sequence %d changed", i);
    CHECK(kv_pool_free_blocks(pool) == 3);
    pool_is_consistent(pool);

    kv_pool_release(pool, taken);
    append_ok(d, 4, 3);
    CHECK(kv_pool_free_blocks(pool) == 0);
    CHECK(same_snapshot(c, images[2], sizes[2]));
    CHECK(slots_hold(d, 1, 0, 5, 3, 0) && slots_hold(d, 1, 5, 3, 4, 5));
    for (int i = 0; i < 4; i++) {
        free(images[i]);
        kv_seq_destroy(all[i]);
    }
    CHECK(kv_pool_free_blocks(pool) == 24);
    kv_pool_destroy(pool);
}

static void attach_shares_cached_blocks(void)
{
    kv_pool *pool = create_pool(2, 2, 64);
    kv_seq *source = create_seq(pool);
    append_ok(source, 1, 9);
    /* Layer 0 gets both full blocks; layer 1 (a sliding window) only the second. */
    const kv_block_id *blocks[4];
    int32_t counts[4];
    for (int32_t layer = 0; layer < 2; layer++)
        for (int32_t head = 0; head < 2; head++) {
            blocks[layer * 2 + head] = kv_seq_table(source, layer, head)->blocks + layer;
            counts[layer * 2 + head] = 2 - layer;
        }
    kv_seq *seq = create_seq(pool);
    int64_t free_before = kv_pool_free_blocks(pool);
    strata_error error = {0};
    CHECK_MESSAGE(kv_seq_attach(seq, blocks, counts, 8, &error) == STRATA_OK, "%s", error.message);
    CHECK(kv_pool_free_blocks(pool) == free_before);
    CHECK(kv_seq_length(seq) == 8);
    CHECK(kv_seq_table(seq, 0, 1)->slot_count == 8 && kv_seq_table(seq, 1, 1)->slot_count == 4);
    CHECK(kv_pool_refcount(pool, kv_seq_table(source, 0, 0)->blocks[0]) == 2);
    CHECK(kv_pool_refcount(pool, kv_seq_table(source, 1, 0)->blocks[0]) == 1);
    CHECK(kv_pool_refcount(pool, kv_seq_table(source, 1, 0)->blocks[1]) == 2);
    /* Attaching twice, or more blocks than tokens, is refused. */
    CHECK(kv_seq_attach(seq, blocks, counts, 8, &error) == STRATA_E_INVALID_ARGUMENT);
    kv_seq *other = create_seq(pool);
    CHECK(kv_seq_attach(other, blocks, counts, 7, &error) == STRATA_E_INVALID_ARGUMENT);
    CHECK(kv_seq_length(other) == 0 && kv_pool_free_blocks(pool) == free_before);
    kv_seq_destroy(other);

    kv_seq_destroy(source);
    CHECK(kv_seq_blocks_needed(seq, 1) == 4); /* full shared blocks: new ones, no copies */
    append_ok(seq, 2, 1);
    CHECK(slots_hold(seq, 0, 0, 8, 1, 0) && slots_hold(seq, 0, 8, 1, 2, 8));
    CHECK(slots_hold(seq, 1, 0, 4, 1, 4) && slots_hold(seq, 1, 4, 1, 2, 8));
    /* Layer 1 holds positions 4 .. 8: a window of 3 at position 6 needs 4 and 5, at 5 it needs 3. */
    const int64_t windows[2] = {0, 3};
    CHECK(kv_seq_rewind(seq, 5, windows, &error) == STRATA_E_INVALID_ARGUMENT);
    CHECK(kv_seq_rewind(seq, 6, windows, &error) == STRATA_OK);
    pool_is_consistent(pool);
    kv_seq_destroy(seq);
    CHECK(kv_pool_free_blocks(pool) == 64);
    kv_pool_destroy(pool);
}

/* Gives every filled slot of (layer, head) a score derived from its position. */
static void score_slots(kv_seq *seq, int32_t layer, int32_t head)
{
    const kv_block_table *table = kv_seq_table(seq, layer, head);
    kv_pool *pool = kv_seq_pool(seq);
    for (int64_t s = 0; s < table->slot_count; s++) {
        kv_block_id block = table->blocks[s / SLOTS];
        kv_block_scores(pool, block)[s % SLOTS] = 0.5f + (float)kv_block_positions_const(pool, block)[s % SLOTS];
    }
}

static float slot_score(const kv_seq *seq, int32_t layer, int32_t head, int64_t slot)
{
    const kv_block_table *table = kv_seq_table(seq, layer, head);
    return kv_block_scores(kv_seq_pool(seq), table->blocks[slot / SLOTS])[slot % SLOTS];
}

static void keep_ok(kv_seq *seq, int32_t layer, int32_t head, const int64_t *keep, int64_t count)
{
    strata_error error = {0};
    CHECK_MESSAGE(kv_seq_keep(seq, layer, head, keep, count, &error) == STRATA_OK, "%s", error.message);
}

static void keeping_every_other_slot_packs_the_kept_slots_and_returns_the_emptied_block(void)
{
    kv_pool *pool = create_pool(2, 2, 64);
    kv_seq *seq = create_seq(pool);
    append_ok(seq, 1, 10); /* per table: blocks of 4, 4 and 2 slots */
    score_slots(seq, 1, 0);
    int64_t free_before = kv_pool_free_blocks(pool);
    static const int64_t keep[] = {0, 2, 4, 6, 8};
    keep_ok(seq, 1, 0, keep, 5);
    CHECK(kv_pool_free_blocks(pool) == free_before + 1);
    const kv_block_table *table = kv_seq_table(seq, 1, 0);
    CHECK(table->slot_count == 5 && table->block_count == 2);
    for (int64_t j = 0; j < 5; j++) {
        CHECK_MESSAGE(slot_holds(seq, 1, 0, j, 1, 2 * j), "slot %" PRId64, j);
        CHECK(slot_score(seq, 1, 0, j) == 0.5f + (float)(2 * j));
    }
    CHECK(kv_seq_length(seq) == 10);
    CHECK(slots_hold(seq, 0, 0, 10, 1, 0));
    for (int64_t s = 0; s < 10; s++)
        CHECK(slot_holds(seq, 1, 1, s, 1, s));
    pool_is_consistent(pool);
    kv_seq_destroy(seq);
    CHECK(kv_pool_free_blocks(pool) == 64);
    kv_pool_destroy(pool);
}

static void keeping_nothing_empties_the_table_and_returns_its_blocks(void)
{
    kv_pool *pool = create_pool(2, 2, 64);
    kv_seq *seq = create_seq(pool);
    append_ok(seq, 1, 10);
    int64_t free_before = kv_pool_free_blocks(pool);
    keep_ok(seq, 0, 1, NULL, 0);
    CHECK(kv_pool_free_blocks(pool) == free_before + 3);
    CHECK(kv_seq_table(seq, 0, 1)->slot_count == 0 && kv_seq_table(seq, 0, 1)->block_count == 0);
    CHECK(kv_seq_length(seq) == 10);
    /* The emptied table fills again from the next position on. */
    append_ok(seq, 2, 1);
    CHECK(kv_seq_table(seq, 0, 1)->slot_count == 1 && slot_holds(seq, 0, 1, 0, 2, 10));
    CHECK(slots_hold(seq, 1, 0, 10, 1, 0) && slots_hold(seq, 1, 10, 1, 2, 10));
    pool_is_consistent(pool);
    kv_seq_destroy(seq);
    kv_pool_destroy(pool);
}

static void keeping_every_slot_changes_nothing(void)
{
    kv_pool *pool = create_pool(2, 2, 64);
    kv_seq *seq = create_seq(pool);
    append_ok(seq, 1, 10);
    size_t size;
    unsigned char *image = snapshot(seq, &size);
    int64_t free_before = kv_pool_free_blocks(pool);
    static const int64_t keep[] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
    keep_ok(seq, 0, 0, keep, 10);
    CHECK(same_snapshot(seq, image, size) && kv_pool_free_blocks(pool) == free_before);
    free(image);
    kv_seq_destroy(seq);
    kv_pool_destroy(pool);
}

static void keeping_on_a_fork_copies_the_shared_blocks_it_writes_and_leaves_the_other_sequence_intact(void)
{
    kv_pool *pool = create_pool(2, 2, 64);
    kv_seq *parent = create_seq(pool);
    append_ok(parent, 1, 10);
    score_slots(parent, 1, 1);
    kv_seq *child = fork_seq(parent);
    size_t size;
    unsigned char *image = snapshot(parent, &size);
    int64_t free_before = kv_pool_free_blocks(pool);
    static const int64_t keep[] = {1, 2, 3, 5, 9};
    keep_ok(child, 1, 1, keep, 5);
    /* Both written blocks are fresh copies; the emptied third block stays the parent's. */
    CHECK(kv_pool_free_blocks(pool) == free_before - 2);
    CHECK(same_snapshot(parent, image, size));
    const kv_block_table *p = kv_seq_table(parent, 1, 1), *c = kv_seq_table(child, 1, 1);
    CHECK(c->slot_count == 5 && c->block_count == 2);
    for (int32_t b = 0; b < 3; b++)
        CHECK(kv_pool_refcount(pool, p->blocks[b]) == 1);
    for (int32_t b = 0; b < 2; b++)
        CHECK(kv_pool_refcount(pool, c->blocks[b]) == 1 && c->blocks[b] != p->blocks[b]);
    for (int64_t j = 0; j < 5; j++)
        CHECK(slot_holds(child, 1, 1, j, 1, keep[j]) && slot_score(child, 1, 1, j) == 0.5f + (float)keep[j]);

    /* Keeping a prefix writes nothing: the blocks stay shared until a write copies the partial one. */
    static const int64_t prefix[] = {0, 1, 2, 3, 4};
    free_before = kv_pool_free_blocks(pool);
    keep_ok(child, 0, 0, prefix, 5);
    p = kv_seq_table(parent, 0, 0);
    c = kv_seq_table(child, 0, 0);
    CHECK(kv_pool_free_blocks(pool) == free_before);
    CHECK(c->block_count == 2 && c->blocks[0] == p->blocks[0] && c->blocks[1] == p->blocks[1]);
    CHECK(kv_pool_refcount(pool, p->blocks[1]) == 2 && kv_pool_refcount(pool, p->blocks[2]) == 1);
    append_ok(child, 2, 1);
    CHECK(same_snapshot(parent, image, size));
    CHECK(slots_hold(child, 0, 0, 5, 1, 0) && slot_holds(child, 0, 0, 5, 2, 10));
    pool_is_consistent(pool);
    free(image);
    kv_seq_destroy(child);
    kv_seq_destroy(parent);
    CHECK(kv_pool_free_blocks(pool) == 64);
    kv_pool_destroy(pool);
}

static void keeping_when_the_pool_lacks_the_copies_fails_and_changes_nothing(void)
{
    kv_pool *pool = create_pool(2, 2, 9);
    kv_seq *parent = create_seq(pool);
    append_ok(parent, 1, 8);
    kv_seq *child = fork_seq(parent);
    kv_block_id taken;
    CHECK(kv_pool_alloc(pool, 0, 0, &taken, NULL) == STRATA_OK);
    size_t parent_size, child_size;
    unsigned char *parent_image = snapshot(parent, &parent_size), *child_image = snapshot(child, &child_size);
    static const int64_t keep[] = {1, 3, 5, 7};
    strata_error error = {0};
    CHECK(kv_seq_keep(child, 0, 0, keep, 4, &error) == STRATA_E_KV_FULL);
    CHECK_MESSAGE(strstr(error.message, "0 of 9") != NULL, "%s", error.message);
    CHECK(same_snapshot(parent, parent_image, parent_size) && same_snapshot(child, child_image, child_size));
    CHECK(kv_pool_free_blocks(pool) == 0);
    pool_is_consistent(pool);

    kv_pool_release(pool, taken);
    keep_ok(child, 0, 0, keep, 4);
    CHECK(kv_pool_free_blocks(pool) == 0);
    CHECK(same_snapshot(parent, parent_image, parent_size));
    for (int64_t j = 0; j < 4; j++)
        CHECK(slot_holds(child, 0, 0, j, 1, keep[j]));
    pool_is_consistent(pool);
    free(parent_image);
    free(child_image);
    kv_seq_destroy(child);
    kv_seq_destroy(parent);
    kv_pool_destroy(pool);
}

static void invalid_keep_lists_are_refused_and_change_nothing(void)
{
    kv_pool *pool = create_pool(2, 2, 64);
    kv_seq *seq = create_seq(pool);
    append_ok(seq, 1, 10);
    size_t size;
    unsigned char *image = snapshot(seq, &size);
    static const struct {
        int32_t layer, head;
        int64_t keep[3];
        int64_t count;
    } cases[] = {
        {0, 0, {2, 1, 3}, 3},  /* decreasing */
        {0, 0, {1, 1, 3}, 3},  /* repeated */
        {0, 0, {0, 10, 0}, 2}, /* past the last slot */
        {0, 0, {-1, 0, 0}, 1}, /* negative */
        {0, 0, {0, 1, 2}, 11}, /* more than the table holds */
        {0, 0, {0, 1, 2}, -1}, /* negative count */
        {2, 0, {0, 1, 2}, 1},  /* no such layer */
        {0, -1, {0, 1, 2}, 1}, /* no such head */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        strata_error error = {0};
        CHECK_MESSAGE(kv_seq_keep(seq, cases[i].layer, cases[i].head, cases[i].keep, cases[i].count, &error) ==
                              STRATA_E_INVALID_ARGUMENT && error.message[0] != '\0',
                      "case %zu", i);
    }
    CHECK(kv_seq_keep(seq, 0, 0, NULL, 1, NULL) == STRATA_E_INVALID_ARGUMENT);
    CHECK(same_snapshot(seq, image, size));
    free(image);
    kv_seq_destroy(seq);
    kv_pool_destroy(pool);
}

static void after_a_keep_writing_rewinding_and_forking_follow_positions(void)
{
    kv_pool *pool = create_pool(2, 2, 64);
    kv_seq *seq = create_seq(pool);
    append_ok(seq, 1, 10);
    static const int64_t keep[] = {0, 2, 4, 6, 8};
    for (int32_t layer = 0; layer < 2; layer++)
        for (int32_t head = 0; head < 2; head++)
            keep_ok(seq, layer, head, keep, 5);
    append_ok(seq, 2, 3); /* positions 10 .. 12 land in slots 5 .. 7 */
    for (int32_t layer = 0; layer < 2; layer++)
        for (int32_t head = 0; head < 2; head++) {
            for (int64_t j = 0; j < 5; j++)
                CHECK(slot_holds(seq, layer, head, j, 1, 2 * j));
            CHECK(kv_seq_table(seq, layer, head)->slot_count == 8);
        }
    CHECK(slots_hold(seq, 1, 5, 3, 2, 10));

    /* Rewinding to 5 drops positions 6, 8 and 10 .. 12. The sliding-window
     * layer lacks 1 and 3, but a keep removed those, not the window. */
    strata_error error = {0};
    static const int64_t windows[2] = {0, 4};
    CHECK_MESSAGE(kv_seq_rewind(seq, 5, windows, &error) == STRATA_OK, "%s", error.message);
    CHECK(kv_seq_length(seq) == 5);
    for (int32_t head = 0; head < 2; head++) {
        const kv_block_table *table = kv_seq_table(seq, 0, head);
        CHECK(table->slot_count == 3 && table->block_count == 1);
        for (int64_t j = 0; j < 3; j++)
            CHECK(slot_holds(seq, 0, head, j, 1, 2 * j));
    }
    append_ok(seq, 3, 2); /* positions 5, 6 in slots 3, 4 */
    CHECK(slots_hold(seq, 0, 3, 2, 3, 5) && slots_hold(seq, 1, 3, 2, 3, 5));

    kv_seq *child = fork_seq(seq);
    size_t size;
    unsigned char *image = snapshot(seq, &size);
    append_ok(child, 4, 1); /* position 7 in slot 5 */
    CHECK(same_snapshot(seq, image, size));
    for (int32_t head = 0; head < 2; head++) {
        for (int64_t j = 0; j < 3; j++)
            CHECK(slot_holds(child, 1, head, j, 1, 2 * j));
        CHECK(slot_holds(child, 1, head, 3, 3, 5) && slot_holds(child, 1, head, 5, 4, 7));
    }
    pool_is_consistent(pool);
    free(image);
    kv_seq_destroy(child);
    kv_seq_destroy(seq);
    CHECK(kv_pool_free_blocks(pool) == 64);
    kv_pool_destroy(pool);
}

/* ---- randomized: many sequences against a shadow model ------------------- */

enum {
    STRESS_LAYERS = 3,
    STRESS_HEADS = 2,
    STRESS_TABLES = STRESS_LAYERS * STRESS_HEADS,
    STRESS_BLOCKS = 160,
    STRESS_LIVE = 12,
    STRESS_OPERATIONS = 4000,
    STRESS_WINDOW = 6, /* layer 2 is a sliding-window layer */
};

static const int64_t stress_windows[STRESS_LAYERS] = {0, 0, STRESS_WINDOW};

typedef struct shadow_slot {
    int64_t position;
    uint32_t tag;
} shadow_slot;

/* What a sequence should hold, as plain arrays. */
typedef struct shadow_seq {
    kv_seq *seq; /* NULL when this entry is not live */
    int64_t length;
    int64_t slot_count[STRESS_TABLES];
    int64_t floor[STRESS_TABLES]; /* positions below it were released by drop_before */
    shadow_slot slots[STRESS_TABLES][STRESS_BLOCKS * SLOTS];
} shadow_seq;

static shadow_seq shadows[STRESS_LIVE];

static int64_t random_below(int64_t limit)
{
    return (int64_t)(random_u64() % (uint64_t)limit);
}

static int random_live(bool live)
{
    int start = (int)random_below(STRESS_LIVE);
    for (int i = 0; i < STRESS_LIVE; i++)
        if ((shadows[(start + i) % STRESS_LIVE].seq != NULL) == live)
            return (start + i) % STRESS_LIVE;
    return -1;
}

static void shadow_drop_before(shadow_seq *shadow, int32_t layer, int64_t min_position)
{
    for (int32_t head = 0; head < STRESS_HEADS; head++) {
        int32_t t = layer * STRESS_HEADS + head;
        shadow_slot *slots = shadow->slots[t];
        for (;;) {
            bool whole_block_before = shadow->slot_count[t] >= SLOTS;
            for (int32_t i = 0; whole_block_before && i < SLOTS; i++)
                whole_block_before = slots[i].position < min_position;
            if (!whole_block_before)
                break;
            if (shadow->floor[t] < slots[SLOTS - 1].position + 1)
                shadow->floor[t] = slots[SLOTS - 1].position + 1;
            shadow->slot_count[t] -= SLOTS;
            memmove(slots, slots + SLOTS, (size_t)shadow->slot_count[t] * sizeof *slots);
        }
    }
}

/* Whether the shadow says a rewind to position must be refused. */
static bool shadow_rewind_refused(const shadow_seq *shadow, int64_t position)
{
    for (int32_t layer = 0; layer < STRESS_LAYERS; layer++) {
        int64_t window = stress_windows[layer];
        int64_t first_needed = position - window + 1 > 0 ? position - window + 1 : 0;
        if (window == 0 || first_needed >= position)
            continue;
        for (int32_t head = 0; head < STRESS_HEADS; head++) {
            int32_t t = layer * STRESS_HEADS + head;
            if (first_needed < shadow->floor[t])
                return true;
        }
    }
    return false;
}

typedef struct stress_counts {
    int64_t appends, kv_full, forks, rewinds, rewinds_refused, drops, keeps, keeps_full, destroys;
} stress_counts;

/* Runs one random operation on the sequences and their shadows; returns its name. */
static const char *stress_step(kv_pool *pool, uint32_t tag, stress_counts *counts)
{
    int live = random_live(true), free_entry = random_live(false);
    int64_t choice = random_below(100);
    strata_error error = {0};
    if (live < 0 || (choice < 10 && free_entry >= 0)) {
        shadow_seq *shadow = &shadows[free_entry];
        memset(shadow, 0, sizeof *shadow);
        shadow->seq = create_seq(pool);
        return "create";
    }
    shadow_seq *shadow = &shadows[live];
    /* Under pressure, preempt now and then (as a scheduler would), so the pool
     * keeps moving between full and free instead of staying full. */
    if (kv_pool_free_blocks(pool) < STRESS_BLOCKS / 4 && random_below(3) == 0)
        choice = 99;
    if (choice < 55) {
        int64_t tokens = 1 + random_below(40);
        int64_t extra = random_below(3) == 0 ? random_below(6) : 0;
        int64_t needed = kv_seq_blocks_needed(shadow->seq, tokens + extra);
        int64_t free_before = kv_pool_free_blocks(pool);
        strata_status status = append(shadow->seq, tag, tokens, extra, &error);
        counts->appends++;
        if (needed > free_before) {
            CHECK_MESSAGE(status == STRATA_E_KV_FULL && error.message[0] != '\0', "needed %" PRId64 " of %" PRId64,
                          needed, free_before);
            counts->kv_full++;
            return "append (pool full)";
        }
        CHECK_MESSAGE(status == STRATA_OK, "%s", error.message);
        CHECK(kv_pool_free_blocks(pool) == free_before - needed);
        for (int32_t t = 0; t < STRESS_TABLES; t++)
            for (int64_t i = 0; i < tokens; i++)
                shadow->slots[t][shadow->slot_count[t]++] = (shadow_slot){shadow->length + i, tag};
        shadow->length += tokens;
        /* As the engine would: move the window past what the next token no longer sees. */
        if (random_below(2) == 0) {
            kv_seq_drop_before(shadow->seq, 2, shadow->length - STRESS_WINDOW + 1);
            shadow_drop_before(shadow, 2, shadow->length - STRESS_WINDOW + 1);
        }
        return "append";
    }
    if (choice < 65 && free_entry >= 0) {
        shadow_seq *child = &shadows[free_entry];
        *child = *shadow;
        child->seq = fork_seq(shadow->seq);
        counts->forks++;
        return "fork";
    }
    if (choice < 80) {
        int64_t position = random_below(shadow->length + 1);
        bool refused = shadow_rewind_refused(shadow, position);
        strata_status status = kv_seq_rewind(shadow->seq, position, stress_windows, &error);
        CHECK_MESSAGE(status == (refused ? STRATA_E_INVALID_ARGUMENT : STRATA_OK), "rewind to %" PRId64 ": %s",
                      position, error.message);
        counts->rewinds++;
        if (refused) {
            counts->rewinds_refused++;
            return "rewind (refused)";
        }
        for (int32_t t = 0; t < STRESS_TABLES; t++) {
            while (shadow->slot_count[t] > 0 && shadow->slots[t][shadow->slot_count[t] - 1].position >= position)
                shadow->slot_count[t]--;
            if (shadow->floor[t] > position)
                shadow->floor[t] = position;
        }
        shadow->length = position;
        return "rewind";
    }
    if (choice < 84) {
        int32_t layer = (int32_t)random_below(STRESS_LAYERS);
        int64_t min_position = random_below(shadow->length + 2);
        kv_seq_drop_before(shadow->seq, layer, min_position);
        shadow_drop_before(shadow, layer, min_position);
        counts->drops++;
        return "drop_before";
    }
    if (choice < 92) {
        int32_t t = (int32_t)random_below(STRESS_TABLES), layer = t / STRESS_HEADS, head = t % STRESS_HEADS;
        static int64_t keep[STRESS_BLOCKS * SLOTS];
        int64_t slots = shadow->slot_count[t], count = 0, odds = 1 + random_below(4);
        for (int64_t s = 0; s < slots; s++)
            if (random_below(4) < odds)
                keep[count++] = s;
        /* The copies it takes: every written block someone else also holds. */
        const kv_block_table *table = kv_seq_table(shadow->seq, layer, head);
        int64_t first_moved = 0, needed = 0;
        while (first_moved < count && keep[first_moved] == first_moved)
            first_moved++;
        for (int64_t b = first_moved / SLOTS; first_moved < count && b < (count + SLOTS - 1) / SLOTS; b++)
            needed += kv_pool_refcount(pool, table->blocks[b]) >= 2;
        int64_t free_before = kv_pool_free_blocks(pool);
        size_t size;
        unsigned char *image = snapshot(shadow->seq, &size);
        strata_status status = kv_seq_keep(shadow->seq, layer, head, keep, count, &error);
        counts->keeps++;
        if (needed > free_before) {
            CHECK_MESSAGE(status == STRATA_E_KV_FULL, "keep needing %" PRId64 " of %" PRId64 ": %s", needed,
                          free_before, error.message);
            CHECK(same_snapshot(shadow->seq, image, size));
            free(image);
            counts->keeps_full++;
            return "keep (pool full)";
        }
        free(image);
        CHECK_MESSAGE(status == STRATA_OK, "%s", error.message);
        for (int64_t j = 0; j < count; j++)
            shadow->slots[t][j] = shadow->slots[t][keep[j]];
        shadow->slot_count[t] = count;
        return "keep";
    }
    kv_seq_destroy(shadow->seq);
    shadow->seq = NULL;
    counts->destroys++;
    return "destroy";
}

/* Checks the pool, every refcount against the tables and every sequence against its shadow. */
static bool stress_invariants_hold(kv_pool *pool)
{
    int failures_before = test_failures;
    pool_is_consistent(pool);
    static int32_t references[STRESS_BLOCKS * KV_PAGE_MAX_BLOCKS];
    memset(references, 0, sizeof references);
    for (int s = 0; s < STRESS_LIVE; s++) {
        const shadow_seq *shadow = &shadows[s];
        if (shadow->seq == NULL)
            continue;
        CHECK_MESSAGE(kv_seq_length(shadow->seq) == shadow->length, "sequence %d length %" PRId64 ", want %" PRId64, s,
                      kv_seq_length(shadow->seq), shadow->length);
        for (int32_t layer = 0; layer < STRESS_LAYERS; layer++)
            for (int32_t head = 0; head < STRESS_HEADS; head++) {
                int32_t t = layer * STRESS_HEADS + head;
                const kv_block_table *table = kv_seq_table(shadow->seq, layer, head);
                CHECK_MESSAGE(table->slot_count == shadow->slot_count[t],
                              "sequence %d layer %d head %d: %" PRId64 " slots, want %" PRId64, s, layer, head,
                              table->slot_count, shadow->slot_count[t]);
                CHECK(table->block_count >= (table->slot_count + SLOTS - 1) / SLOTS);
                for (int32_t b = 0; b < table->block_count; b++) {
                    int32_t owner_layer, owner_head;
                    references[table->blocks[b]]++;
                    kv_pool_block_owner(pool, table->blocks[b], &owner_layer, &owner_head);
                    CHECK(owner_layer == layer && owner_head == head);
                }
                for (int64_t i = 0; i < shadow->slot_count[t] && i < table->slot_count; i++)
                    CHECK_MESSAGE(slot_holds(shadow->seq, layer, head, i, shadow->slots[t][i].tag,
                                             shadow->slots[t][i].position),
                                  "sequence %d layer %d head %d slot %" PRId64 " (position %" PRId64 ")", s, layer,
                                  head, i, shadow->slots[t][i].position);
            }
    }
    for (kv_block_id b = 0; b < kv_pool_block_id_limit(pool); b++)
        CHECK_MESSAGE(kv_pool_refcount(pool, b) == references[b], "block %d: refcount %d, %d references", b,
                      kv_pool_refcount(pool, b), references[b]);
    return test_failures == failures_before;
}

static uint64_t stress_seed;

static void random_operations_keep_every_sequence_equal_to_its_shadow(void)
{
    random_state = stress_seed;
    kv_pool *pool = create_pool(STRESS_LAYERS, STRESS_HEADS, STRESS_BLOCKS);
    if (pool == NULL)
        return;
    memset(shadows, 0, sizeof shadows);
    stress_counts counts = {0};
    for (int op = 0; op < STRESS_OPERATIONS; op++) {
        const char *name = stress_step(pool, (uint32_t)op + 1, &counts);
        if (!stress_invariants_hold(pool)) {
            fprintf(stderr, "after operation %d (%s), seed %" PRIu64 "\n", op, name, stress_seed);
            break;
        }
    }
    for (int s = 0; s < STRESS_LIVE; s++) {
        kv_seq_destroy(shadows[s].seq);
        shadows[s].seq = NULL;
    }
    CHECK_MESSAGE(kv_pool_free_blocks(pool) == STRESS_BLOCKS, "%" PRId64 " of %d blocks free after destroying all",
                  kv_pool_free_blocks(pool), STRESS_BLOCKS);
    stress_invariants_hold(pool);
    fprintf(stderr,
            "  %" PRId64 " appends (%" PRId64 " found the pool full), %" PRId64 " forks, %" PRId64 " rewinds (%" PRId64
            " refused), %" PRId64 " drops, %" PRId64 " keeps (%" PRId64 " found the pool full), %" PRId64
            " destroys\n",
            counts.appends, counts.kv_full, counts.forks, counts.rewinds, counts.rewinds_refused, counts.drops,
            counts.keeps, counts.keeps_full, counts.destroys);
    CHECK(counts.kv_full > 0 && counts.rewinds_refused > 0);
    kv_pool_destroy(pool);
}

int main(int argc, char **argv)
{
    const char *seed_text = argc > 1 ? argv[1] : getenv("STRATA_TEST_SEED");
    stress_seed = seed_text != NULL ? strtoull(seed_text, NULL, 0) : (uint64_t)time(NULL);
    fprintf(stderr, "seed %" PRIu64 " (replay: test_seq %" PRIu64 " or STRATA_TEST_SEED=%" PRIu64 ")\n", stress_seed,
            stress_seed, stress_seed);

    RUN_CASE(written_slots_read_back_through_the_tables);
    RUN_CASE(fork_then_write_copies_only_the_touched_block);
    RUN_CASE(fork_of_a_full_last_block_shares_everything_and_each_next_write_takes_a_new_block);
    RUN_CASE(rewind_drops_slots_and_blocks_and_positions_continue_from_there);
    RUN_CASE(rewinding_into_a_shared_block_then_writing_copies_it);
    RUN_CASE(drop_before_releases_exactly_the_blocks_wholly_before_the_position);
    RUN_CASE(rewinding_into_a_dropped_sliding_window_range_fails_and_changes_nothing);
    RUN_CASE(destroying_every_sequence_returns_every_block);
    RUN_CASE(reserving_past_the_budget_fails_and_leaves_every_sequence_intact);
    RUN_CASE(attach_shares_cached_blocks);
    RUN_CASE(keeping_every_other_slot_packs_the_kept_slots_and_returns_the_emptied_block);
    RUN_CASE(keeping_nothing_empties_the_table_and_returns_its_blocks);
    RUN_CASE(keeping_every_slot_changes_nothing);
    RUN_CASE(keeping_on_a_fork_copies_the_shared_blocks_it_writes_and_leaves_the_other_sequence_intact);
    RUN_CASE(keeping_when_the_pool_lacks_the_copies_fails_and_changes_nothing);
    RUN_CASE(invalid_keep_lists_are_refused_and_change_nothing);
    RUN_CASE(after_a_keep_writing_rewinding_and_forking_follow_positions);
    RUN_CASE(random_operations_keep_every_sequence_equal_to_its_shadow);
    TEST_EXIT();
}
