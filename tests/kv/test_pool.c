/* tests/kv/test_pool.c: the KV block pool.
 *
 * The pool's arithmetic (block bytes from the layout, capacity from the
 * budget, refusal of a budget that cannot give every (layer, KV head) one
 * block), allocation until STRATA_E_KV_FULL without harm to the blocks in
 * use, reference counts and the usage counters against kv_pool_check's
 * recount, slot copies, and the storage types' round trips: f32 exactly,
 * f16 and bf16 within half a unit in the last place, ties to even. Packed
 * blocks: pages carved for one packed type fill before a new page is taken,
 * a page returns when its last block does, the byte counters follow (and
 * kv_pool_check agrees at every step), and conversions between types keep
 * positions and stay within the packed type's error bound. */
#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "kv/packed.h"
#include "kv/pool.h"
#include "kv/kv_checks.h"
#include "test_util.h"

/* ---- helpers ----------------------------------------------------------- */

static kv_pool_config small_config(int32_t layers, int32_t heads, int32_t blocks_budget)
{
    /* f32, 4 slots of key 4 and value 3: 64 + 48 + 16 + 16 = 144 bytes, 192 rounded up. */
    return (kv_pool_config){.budget_bytes = (uint64_t)blocks_budget * 192,
                            .block_tokens = 4,
                            .layer_count = layers,
                            .kv_head_count = heads,
                            .key_length = 4,
                            .value_length = 3,
                            .storage = KV_STORAGE_F32};
}

static kv_pool *create_pool(const kv_pool_config *config)
{
    kv_pool *pool = NULL;
    strata_error error = {0};
    strata_status status = kv_pool_create(config, &pool, &error);
    CHECK_MESSAGE(status == STRATA_OK, "%s", error.message);
    return pool;
}

/* The value a test block holds at index i of a section (0 keys, 1 values, 2 positions, 3 scores). */
static float pattern(float tag, kv_block_id block, int32_t section, int32_t i)
{
    return tag * (float)(section + 1) + (float)block * 1000 + (float)i;
}

/* Fills every slot of a block with the pattern of a tag, or checks that it holds it. */
static bool fill_or_check_block(kv_pool *pool, kv_block_id block, float tag, bool fill)
{
    const kv_pool_config *config = kv_pool_configuration(pool);
    float *sections[4] = {kv_block_keys(pool, block), kv_block_values(pool, block), NULL, kv_block_scores(pool, block)};
    int32_t lengths[4] = {config->block_tokens * config->key_length, config->block_tokens * config->value_length,
                          config->block_tokens, config->block_tokens};
    int32_t *positions = kv_block_positions(pool, block);
    bool same = true;
    for (int32_t section = 0; section < 4; section++)
        for (int32_t i = 0; i < lengths[section]; i++) {
            float want = pattern(tag, block, section, i);
            if (fill && section == 2)
                positions[i] = (int32_t)want;
            else if (fill)
                sections[section][i] = want;
            else
                same &= section == 2 ? positions[i] == (int32_t)want : sections[section][i] == want;
        }
    return same;
}

static void fill_block(kv_pool *pool, kv_block_id block, float tag)
{
    fill_or_check_block(pool, block, tag, true);
}

static bool block_holds(kv_pool *pool, kv_block_id block, float tag)
{
    return fill_or_check_block(pool, block, tag, false);
}

static void check_usage(const kv_pool *pool, int64_t used, int64_t shared)
{
    kv_pool_usage usage;
    kv_pool_usage_get(pool, &usage);
    CHECK_MESSAGE(usage.used_blocks == used && usage.shared_blocks == shared,
                  "used %" PRId64 " (want %" PRId64 "), shared %" PRId64 " (want %" PRId64 ")", usage.used_blocks,
                  used, usage.shared_blocks, shared);
    CHECK(usage.free_blocks == usage.total_blocks - used);
    CHECK(usage.free_blocks == kv_pool_free_blocks(pool));
    CHECK(usage.total_blocks == kv_pool_capacity(pool));
    CHECK(usage.used_bytes == (uint64_t)used * usage.block_bytes);
    CHECK(usage.shared_bytes == (uint64_t)shared * usage.block_bytes);
    CHECK(usage.free_bytes == (uint64_t)usage.free_blocks * usage.block_bytes);
    pool_is_consistent(pool);
}

/* ---- arithmetic ---------------------------------------------------------- */

static void block_bytes_follow_the_layout_rounded_up_to_64(void)
{
    static const struct {
        int32_t block_tokens, key_length, value_length;
        kv_storage storage;
        uint64_t block_bytes;
    } cases[] = {
        /* keys + values + positions + scores, each of the first two padded to 4 bytes */
        {16, 8, 8, KV_STORAGE_F16, 640},      /* 256 + 256 + 64 + 64 */
        {16, 256, 256, KV_STORAGE_BF16, 16512}, /* 8192 + 8192 + 64 + 64 */
        {3, 3, 5, KV_STORAGE_F32, 128},       /* 36 + 60 + 12 + 12 = 120 */
        {1, 1, 1, KV_STORAGE_F16, 64},        /* 4 + 4 + 4 + 4 = 16 */
        {0, 64, 64, KV_STORAGE_F32, 8320},    /* default 16 slots: 4096 + 4096 + 64 + 64 */
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        kv_pool_config config = {.budget_bytes = 10 * cases[c].block_bytes + cases[c].block_bytes - 1,
                                 .block_tokens = cases[c].block_tokens,
                                 .layer_count = 2,
                                 .kv_head_count = 2,
                                 .key_length = cases[c].key_length,
                                 .value_length = cases[c].value_length,
                                 .storage = cases[c].storage};
        kv_pool *pool = create_pool(&config);
        if (pool == NULL)
            continue;
        CHECK_MESSAGE(kv_pool_block_bytes(pool) == cases[c].block_bytes, "case %zu: %" PRIu64 " bytes, want %" PRIu64,
                      c, kv_pool_block_bytes(pool), cases[c].block_bytes);
        CHECK_MESSAGE(kv_pool_capacity(pool) == 10, "case %zu: capacity %" PRId64, c, kv_pool_capacity(pool));
        CHECK(kv_pool_free_blocks(pool) == 10);
        int32_t expected_tokens = cases[c].block_tokens == 0 ? KV_DEFAULT_BLOCK_TOKENS : cases[c].block_tokens;
        CHECK(kv_pool_configuration(pool)->block_tokens == expected_tokens);
        kv_block_id block;
        CHECK(kv_pool_alloc(pool, 1, 1, &block, NULL) == STRATA_OK);
        /* Sections lie in the order of the layout, inside the block, aligned for their type. */
        const char *base = kv_block_keys(pool, block);
        CHECK(((uintptr_t)base % 64) == 0);
        CHECK((const char *)kv_block_values(pool, block) >=
              base + (uint64_t)expected_tokens * cases[c].key_length * kv_storage_bytes(cases[c].storage));
        CHECK((const char *)kv_block_scores(pool, block) + expected_tokens * sizeof(float) <=
              base + kv_pool_block_bytes(pool));
        CHECK((uintptr_t)kv_block_positions(pool, block) % sizeof(int32_t) == 0);
        kv_pool_destroy(pool);
    }
}

static void a_budget_too_small_for_one_block_per_layer_and_head_is_refused(void)
{
    kv_pool_config config = small_config(4, 2, 8);
    config.budget_bytes -= 1;
    kv_pool *pool = (kv_pool *)&config;
    strata_error error = {0};
    CHECK(kv_pool_create(&config, &pool, &error) == STRATA_E_INVALID_ARGUMENT);
    CHECK(pool == NULL);
    CHECK_MESSAGE(strstr(error.message, "7 blocks") != NULL && strstr(error.message, "8 needed") != NULL, "%s",
                  error.message);

    config = small_config(4, 2, 8);
    pool = create_pool(&config);
    CHECK(pool != NULL && kv_pool_capacity(pool) == 8);
    kv_pool_destroy(pool);
}

static void configurations_outside_their_range_are_refused(void)
{
    kv_pool_config base = small_config(2, 2, 16);
    kv_pool_config bad[6];
    for (int i = 0; i < 6; i++)
        bad[i] = base;
    bad[0].block_tokens = -1;
    bad[1].layer_count = 0;
    bad[2].kv_head_count = -3;
    bad[3].key_length = 0;
    bad[4].value_length = 1 << 30;
    bad[5].storage = (kv_storage)7;
    for (int i = 0; i < 6; i++) {
        kv_pool *pool = NULL;
        strata_error error = {0};
        CHECK_MESSAGE(kv_pool_create(&bad[i], &pool, &error) == STRATA_E_INVALID_ARGUMENT, "case %d", i);
        CHECK(pool == NULL);
        CHECK_MESSAGE(error.message[0] != '\0', "case %d has no message", i);
    }
    kv_pool_destroy(NULL);
}

/* ---- allocation and reference counts ----------------------------------- */

static void alloc_until_full_then_kv_full_harms_nothing(void)
{
    kv_pool_config config = small_config(3, 2, 20);
    kv_pool *pool = create_pool(&config);
    if (pool == NULL)
        return;
    kv_block_id ids[20];
    for (int32_t i = 0; i < 20; i++) {
        kv_block_id block = KV_BLOCK_NONE;
        int32_t layer = i % 3, head = (i / 3) % 2;
        CHECK(kv_pool_alloc(pool, layer, head, &block, NULL) == STRATA_OK);
        CHECK(block >= 0 && block < kv_pool_block_id_limit(pool));
        if (block < 0 || block >= kv_pool_block_id_limit(pool))
            return;
        for (int32_t j = 0; j < i; j++)
            CHECK_MESSAGE(ids[j] != block, "block %" PRId32 " handed out twice", block);
        ids[i] = block;
        CHECK(kv_pool_refcount(pool, block) == 1);
        int32_t owner_layer = -1, owner_head = -1;
        kv_pool_block_owner(pool, block, &owner_layer, &owner_head);
        CHECK(owner_layer == layer && owner_head == head);
        /* A fresh block's slots are unset. */
        for (int32_t s = 0; s < 4; s++)
            CHECK(kv_block_positions_const(pool, block)[s] == -1 && kv_block_scores(pool, block)[s] == 0.0f);
        fill_block(pool, block, 7.0f);
    }
    check_usage(pool, 20, 0);

    kv_block_id block = 3;
    strata_error error = {0};
    CHECK(kv_pool_alloc(pool, 2, 1, &block, &error) == STRATA_E_KV_FULL);
    CHECK(block == KV_BLOCK_NONE);
    CHECK(error.status == STRATA_E_KV_FULL);
    CHECK_MESSAGE(strstr(error.message, "20 blocks") != NULL && strstr(error.message, "layer 2") != NULL, "%s",
                  error.message);
    check_usage(pool, 20, 0);
    for (int32_t i = 0; i < 20; i++)
        CHECK_MESSAGE(block_holds(pool, ids[i], 7.0f), "block %" PRId32 " changed by a failed alloc", ids[i]);

    kv_pool_release(pool, ids[11]);
    CHECK(kv_pool_alloc(pool, 0, 0, &block, NULL) == STRATA_OK);
    CHECK(block == ids[11]);
    for (int32_t i = 0; i < 20; i++)
        kv_pool_release(pool, ids[i]);
    check_usage(pool, 0, 0);
    kv_pool_destroy(pool);
}

static void refcounts_follow_retain_and_release(void)
{
    kv_pool_config config = small_config(1, 1, 4);
    kv_pool *pool = create_pool(&config);
    if (pool == NULL)
        return;
    kv_block_id a, b;
    CHECK(kv_pool_alloc(pool, 0, 0, &a, NULL) == STRATA_OK);
    CHECK(kv_pool_alloc(pool, 0, 0, &b, NULL) == STRATA_OK);
    check_usage(pool, 2, 0);
    kv_pool_retain(pool, a);
    kv_pool_retain(pool, a);
    CHECK(kv_pool_refcount(pool, a) == 3);
    check_usage(pool, 2, 1);
    kv_pool_retain(pool, b);
    check_usage(pool, 2, 2);
    kv_pool_release(pool, a);
    CHECK(kv_pool_refcount(pool, a) == 2);
    check_usage(pool, 2, 2);
    kv_pool_release(pool, a);
    check_usage(pool, 2, 1);
    kv_pool_release(pool, a);
    CHECK(kv_pool_refcount(pool, a) == 0);
    check_usage(pool, 1, 1);
    kv_pool_release(pool, b);
    kv_pool_release(pool, b);
    check_usage(pool, 0, 0);
    CHECK(kv_pool_free_blocks(pool) == 4);
    kv_pool_destroy(pool);
}

static void usage_by_owner_counts_used_blocks_per_layer_and_head(void)
{
    kv_pool_config config = small_config(3, 2, 12);
    kv_pool *pool = create_pool(&config);
    if (pool == NULL)
        return;
    const int32_t owners[][2] = {{0, 0}, {0, 1}, {0, 1}, {2, 1}, {2, 0}, {2, 1}, {2, 1}};
    kv_block_id blocks[7];
    for (int i = 0; i < 7; i++)
        CHECK(kv_pool_alloc(pool, owners[i][0], owners[i][1], &blocks[i], NULL) == STRATA_OK);
    kv_pool_retain(pool, blocks[0]); /* a shared block counts once */
    kv_pool_release(pool, blocks[2]);
    int64_t by_layer[3], by_layer_head[6];
    kv_pool_usage_by_owner(pool, by_layer, by_layer_head);
    const int64_t want_layer[3] = {2, 0, 4}, want_layer_head[6] = {1, 1, 0, 0, 1, 3};
    CHECK(memcmp(by_layer, want_layer, sizeof by_layer) == 0);
    CHECK(memcmp(by_layer_head, want_layer_head, sizeof by_layer_head) == 0);
    kv_pool_usage_by_owner(pool, NULL, by_layer_head);
    kv_pool_usage_by_owner(pool, by_layer, NULL);
    CHECK(memcmp(by_layer, want_layer, sizeof by_layer) == 0);
    check_usage(pool, 6, 1);
    kv_pool_destroy(pool); /* blocks still referenced go with the pool */
}

static void copy_slots_copies_the_first_slots_and_nothing_else(void)
{
    kv_pool_config config = small_config(2, 1, 4);
    kv_pool *pool = create_pool(&config);
    if (pool == NULL)
        return;
    kv_block_id from, to;
    CHECK(kv_pool_alloc(pool, 1, 0, &from, NULL) == STRATA_OK);
    CHECK(kv_pool_alloc(pool, 1, 0, &to, NULL) == STRATA_OK);
    fill_block(pool, from, 1.0f);
    fill_block(pool, to, 2.0f);
    float want_keys[16], want_values[12];
    int32_t want_positions[4];
    float want_scores[4];
    memcpy(want_keys, kv_block_keys(pool, to), sizeof want_keys);
    memcpy(want_values, kv_block_values(pool, to), sizeof want_values);
    memcpy(want_positions, kv_block_positions(pool, to), sizeof want_positions);
    memcpy(want_scores, kv_block_scores(pool, to), sizeof want_scores);
    memcpy(want_keys, kv_block_keys(pool, from), 3 * 4 * sizeof(float));
    memcpy(want_values, kv_block_values(pool, from), 3 * 3 * sizeof(float));
    memcpy(want_positions, kv_block_positions(pool, from), 3 * sizeof(int32_t));
    memcpy(want_scores, kv_block_scores(pool, from), 3 * sizeof(float));

    kv_pool_copy_slots(pool, from, to, 3);
    CHECK(memcmp(kv_block_keys_const(pool, to), want_keys, sizeof want_keys) == 0);
    CHECK(memcmp(kv_block_values_const(pool, to), want_values, sizeof want_values) == 0);
    CHECK(memcmp(kv_block_positions_const(pool, to), want_positions, sizeof want_positions) == 0);
    CHECK(memcmp(kv_block_scores(pool, to), want_scores, sizeof want_scores) == 0);
    CHECK(block_holds(pool, from, 1.0f));
    kv_pool_copy_slots(pool, from, to, 4);
    CHECK(memcmp(kv_block_keys(pool, to), kv_block_keys(pool, from), (size_t)kv_pool_block_bytes(pool)) == 0);
    kv_pool_destroy(pool);
}

/* ---- storage types ----------------------------------------------------- */

static float from_bits(uint32_t bits)
{
    float value;
    memcpy(&value, &bits, sizeof value);
    return value;
}

static void storage_types_round_trip_within_their_rounding(void)
{
    enum { N = 4099 };
    static float source[N], loaded[N];
    static uint16_t stored[2 * N];
    uint64_t state = 12345;
    for (int i = 0; i < N; i++) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        int exponent = (int)((state >> 59) % 29) - 14; /* 2^-14 .. 2^15: the f16 normal range */
        float mantissa = (float)((state >> 33) & 0xffffff) / (float)(1 << 24) + 1.0f;
        source[i] = ldexpf(mantissa, exponent) * ((state >> 32) & 1 ? -1.0f : 1.0f);
    }
    source[0] = 0.0f;
    source[1] = -0.0f;
    static const struct {
        kv_storage storage;
        float relative_error; /* half a unit in the last place */
    } types[] = {{KV_STORAGE_F32, 0.0f}, {KV_STORAGE_F16, 0x1p-11f}, {KV_STORAGE_BF16, 0x1p-8f}};
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        kv_storage_store(types[t].storage, stored, source, N);
        kv_storage_load(types[t].storage, stored, loaded, N);
        int bad = 0;
        for (int i = 0; i < N; i++)
            bad += !(fabsf(loaded[i] - source[i]) <= types[t].relative_error * fabsf(source[i]));
        CHECK_MESSAGE(bad == 0, "%s: %d of %d values off by more than half an ulp", kv_storage_name(types[t].storage),
                      bad, N);
        CHECK(signbit(loaded[1]));
    }

    /* bf16 ties go to the even neighbour; NaN stays NaN; overflow rounds to infinity. */
    static const struct {
        uint32_t in;
        uint16_t out;
    } bf16_cases[] = {
        {0x3f808000u, 0x3f80}, /* 1 + 2^-8: halfway between 1 and 1 + 2^-7, 1 is even */
        {0x3f818000u, 0x3f82}, /* 1 + 3 * 2^-8: halfway, 1 + 2^-6 is even */
        {0x3f808001u, 0x3f81}, /* just above halfway */
        {0x3f807fffu, 0x3f80}, /* just below halfway */
        {0x7f7fffffu, 0x7f80}, /* FLT_MAX rounds to infinity */
        {0xff800000u, 0xff80}, /* -infinity */
        {0x00000001u, 0x0000}, /* the smallest subnormal rounds to zero */
    };
    for (size_t c = 0; c < sizeof bf16_cases / sizeof bf16_cases[0]; c++) {
        float in = from_bits(bf16_cases[c].in);
        uint16_t out = 0;
        kv_storage_store(KV_STORAGE_BF16, &out, &in, 1);
        CHECK_MESSAGE(out == bf16_cases[c].out, "bf16 of 0x%08" PRIx32 " is 0x%04x, want 0x%04x", bf16_cases[c].in,
                      out, bf16_cases[c].out);
    }
    float nan_in[2] = {from_bits(0x7fc00000u), from_bits(0xff800001u)}, nan_out[2];
    uint16_t nan_stored[2];
    kv_storage_store(KV_STORAGE_BF16, nan_stored, nan_in, 2);
    kv_storage_load(KV_STORAGE_BF16, nan_stored, nan_out, 2);
    CHECK(isnan(nan_out[0]) && isnan(nan_out[1]));

    CHECK(kv_storage_bytes(KV_STORAGE_F32) == 4 && kv_storage_bytes(KV_STORAGE_F16) == 2 &&
          kv_storage_bytes(KV_STORAGE_BF16) == 2);
    CHECK(strcmp(kv_storage_name(KV_STORAGE_F32), "f32") == 0 && strcmp(kv_storage_name(KV_STORAGE_F16), "f16") == 0 &&
          strcmp(kv_storage_name(KV_STORAGE_BF16), "bf16") == 0);
}

/* ---- packed blocks -------------------------------------------------------- */

/* A uniform number in [0, 1). */
static double random_unit(void)
{
    return (double)(random_u64() >> 11) * 0x1p-53;
}

static kv_pool_config packed_config(int32_t pages)
{
    /* f32, 16 slots of key and value 64: 4096 + 4096 + 64 + 64 = 8320 bytes a page. */
    kv_pool_config config = {.block_tokens = 16, .layer_count = 2, .kv_head_count = 1, .key_length = 64,
                             .value_length = 64, .storage = KV_STORAGE_F32};
    config.budget_bytes = (uint64_t)pages * 8320;
    return config;
}

static void packed_blocks_share_pages_and_return_them(void)
{
    kv_pool_config config = packed_config(6);
    kv_pool *pool = create_pool(&config);
    if (pool == NULL)
        return;
    CHECK(kv_pool_block_bytes(pool) == 8320);
    const kv_storage types[] = {KV_STORAGE_Q8, KV_STORAGE_Q4, KV_STORAGE_KIVI4, KV_STORAGE_KIVI2};
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        kv_storage type = types[t];
        strata_error error = {0};
        CHECK_MESSAGE(kv_pool_check_storage(pool, type, &error) == STRATA_OK, "%s", error.message);
        uint64_t bytes = kv_pool_storage_block_bytes(pool, type);
        /* Sections from kv/packed.h, then positions and scores, rounded up to 64. */
        uint64_t expected = kv_packed_key_bytes((kv_packed_type)(type - KV_STORAGE_Q8), 16, 64) +
                            kv_packed_value_bytes((kv_packed_type)(type - KV_STORAGE_Q8), 16, 64) + 64 + 64;
        expected = (expected + 63) / 64 * 64;
        CHECK_MESSAGE(bytes == expected && bytes < 8320 / 2, "%s: %" PRIu64 " bytes, want %" PRIu64,
                      kv_storage_name(type), bytes, expected);
        int32_t per_page = (int32_t)(8320 / bytes) < KV_PAGE_MAX_BLOCKS ? (int32_t)(8320 / bytes) : KV_PAGE_MAX_BLOCKS;
        /* Fill two pages and one more block: three pages taken, the counters exact. */
        kv_block_id blocks[3 * KV_PAGE_MAX_BLOCKS];
        int32_t count = 2 * per_page + 1;
        for (int32_t i = 0; i < count; i++) {
            CHECK(kv_pool_alloc_typed(pool, i % 2, 0, type, &blocks[i], NULL) == STRATA_OK);
            CHECK(kv_block_storage(pool, blocks[i]) == type && kv_block_bytes(pool, blocks[i]) == bytes);
            int64_t pages_taken = i / per_page + 1;
            CHECK_MESSAGE(kv_pool_free_blocks(pool) == 6 - pages_taken, "%s block %d: %" PRId64 " pages free",
                          kv_storage_name(type), i, kv_pool_free_blocks(pool));
            pool_is_consistent(pool);
        }
        kv_pool_usage usage;
        kv_pool_usage_get(pool, &usage);
        CHECK(usage.used_blocks == count && usage.used_bytes == (uint64_t)count * bytes);
        CHECK(usage.free_bytes == 3 * 8320 + (uint64_t)(per_page - 1) * bytes);
        uint64_t by_owner[2];
        kv_pool_bytes_by_owner(pool, by_owner);
        CHECK(by_owner[0] + by_owner[1] == usage.used_bytes && by_owner[0] == (uint64_t)((count + 1) / 2) * bytes);
        /* A base block still takes a whole page of its own. */
        kv_block_id base;
        CHECK(kv_pool_alloc(pool, 0, 0, &base, NULL) == STRATA_OK && kv_pool_free_blocks(pool) == 2);
        kv_pool_release(pool, base);
        /* Releasing a block of a full page puts the page back on its list: the next block lands there. */
        kv_block_id freed = blocks[0];
        kv_pool_release(pool, freed);
        CHECK(kv_pool_alloc_typed(pool, 0, 0, type, &blocks[0], NULL) == STRATA_OK);
        CHECK(blocks[0] == freed && kv_pool_free_blocks(pool) == 3);
        for (int32_t i = 0; i < count; i++) {
            kv_pool_release(pool, blocks[i]);
            pool_is_consistent(pool);
        }
        kv_pool_usage_get(pool, &usage);
        CHECK(kv_pool_free_blocks(pool) == 6 && usage.used_bytes == 0 && usage.free_bytes == 6 * 8320);
    }
    kv_pool_destroy(pool);
}

static void packed_types_are_refused_where_they_do_not_fit(void)
{
    kv_pool_config config = small_config(1, 1, 4); /* keys of 4, values of 3: no whole group of 32 */
    kv_pool *pool = create_pool(&config);
    if (pool == NULL)
        return;
    strata_error error = {0};
    CHECK(kv_pool_check_storage(pool, KV_STORAGE_Q8, &error) == STRATA_E_INVALID_ARGUMENT);
    CHECK_MESSAGE(strstr(error.message, "32") != NULL, "%s", error.message);
    CHECK(kv_pool_check_storage(pool, KV_STORAGE_F16, &error) == STRATA_E_INVALID_ARGUMENT);
    CHECK(kv_pool_check_storage(pool, KV_STORAGE_F32, &error) == STRATA_OK);
    kv_storage found;
    CHECK(kv_storage_find("kivi2", &found) && found == KV_STORAGE_KIVI2 && kv_storage_is_packed(found));
    CHECK(!kv_storage_find("q3", &found) && !kv_storage_is_packed(KV_STORAGE_BF16));
    kv_pool_destroy(pool);
}

/* Copying between types converts through f32: positions and scores move
 * exactly, rows come back within the packed type's bound, and packing the
 * packed rows again gives them back unchanged for per-token types. */
static void copies_between_types_convert_rows_within_the_bound(void)
{
    kv_pool_config config = packed_config(8);
    kv_pool *pool = create_pool(&config);
    if (pool == NULL)
        return;
    const kv_storage types[] = {KV_STORAGE_Q8, KV_STORAGE_Q4, KV_STORAGE_KIVI4, KV_STORAGE_KIVI2};
    float keys[16 * 64], values[16 * 64], row[64];
    for (int i = 0; i < 16 * 64; i++) {
        keys[i] = (float)(random_unit() * 4 - 2);
        values[i] = (float)(random_unit() * 2 - 1);
    }
    kv_block_id base;
    CHECK(kv_pool_alloc(pool, 1, 0, &base, NULL) == STRATA_OK);
    kv_block_write_slots(pool, base, keys, values, 16);
    for (int32_t s = 0; s < 16; s++) {
        kv_block_positions(pool, base)[s] = 100 + 3 * s;
        kv_block_scores(pool, base)[s] = (float)s / 4;
    }
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        kv_packed_type packed = (kv_packed_type)(types[t] - KV_STORAGE_Q8);
        kv_block_id block, again, back;
        CHECK(kv_pool_alloc_typed(pool, 1, 0, types[t], &block, NULL) == STRATA_OK);
        kv_pool_copy_slots(pool, base, block, 16);
        int bad = 0;
        for (int32_t s = 0; s < 16; s++) {
            CHECK(kv_block_positions_const(pool, block)[s] == 100 + 3 * s &&
                  kv_block_scores(pool, block)[s] == (float)s / 4);
            kv_block_read_value(pool, block, s, row);
            for (int j = 0; j < 64; j++) {
                float lo = 1e30f, hi = -1e30f; /* the value's group: 32 channels of its row */
                for (int k = j / 32 * 32; k < j / 32 * 32 + 32; k++) {
                    lo = fminf(lo, values[s * 64 + k]);
                    hi = fmaxf(hi, values[s * 64 + k]);
                }
                bad += fabs(row[j] - values[s * 64 + j]) > kv_packed_error_bound(packed, lo, hi, values[s * 64 + j]);
            }
            kv_block_read_key(pool, block, s, row);
            for (int j = 0; j < 64; j++) {
                float lo = 1e30f, hi = -1e30f; /* per token: the row's group; kivi: the channel over the block */
                bool per_token = kv_packed_per_token(packed, KV_PACKED_KEYS);
                for (int k = 0; k < 32; k++) {
                    float x = per_token ? keys[s * 64 + j / 32 * 32 + k] : keys[(k % 16) * 64 + j];
                    lo = fminf(lo, x);
                    hi = fmaxf(hi, x);
                }
                bad += fabs(row[j] - keys[s * 64 + j]) > kv_packed_error_bound(packed, lo, hi, keys[s * 64 + j]);
            }
        }
        CHECK_MESSAGE(bad == 0, "%s: %d values outside the bound", kv_storage_name(types[t]), bad);
        /* Packed to base and to packed again: the same rows (per-token types re-encode to the same codes). */
        CHECK(kv_pool_alloc(pool, 1, 0, &back, NULL) == STRATA_OK);
        CHECK(kv_pool_alloc_typed(pool, 1, 0, types[t], &again, NULL) == STRATA_OK);
        kv_pool_copy_slots(pool, block, back, 16);
        kv_pool_copy_slots(pool, back, again, 16);
        float first[64], second[64];
        int changed = 0;
        for (int32_t s = 0; s < 16; s++) {
            kv_block_read_key(pool, block, s, first);
            kv_block_read_key(pool, again, s, second);
            changed += memcmp(first, second, sizeof first) != 0;
            kv_block_read_value(pool, block, s, first);
            kv_block_read_value(pool, again, s, second);
            changed += memcmp(first, second, sizeof first) != 0;
        }
        CHECK_MESSAGE(changed == 0, "%s: %d rows changed by packing them again", kv_storage_name(types[t]), changed);
        kv_pool_release(pool, block);
        kv_pool_release(pool, again);
        kv_pool_release(pool, back);
        pool_is_consistent(pool);
    }
    kv_pool_release(pool, base);
    kv_pool_destroy(pool);
}

int main(void)
{
    RUN_CASE(block_bytes_follow_the_layout_rounded_up_to_64);
    RUN_CASE(a_budget_too_small_for_one_block_per_layer_and_head_is_refused);
    RUN_CASE(configurations_outside_their_range_are_refused);
    RUN_CASE(alloc_until_full_then_kv_full_harms_nothing);
    RUN_CASE(refcounts_follow_retain_and_release);
    RUN_CASE(usage_by_owner_counts_used_blocks_per_layer_and_head);
    RUN_CASE(copy_slots_copies_the_first_slots_and_nothing_else);
    RUN_CASE(storage_types_round_trip_within_their_rounding);
    RUN_CASE(packed_blocks_share_pages_and_return_them);
    RUN_CASE(packed_types_are_refused_where_they_do_not_fit);
    RUN_CASE(copies_between_types_convert_rows_within_the_bound);
    TEST_EXIT();
}
