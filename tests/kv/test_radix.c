/* tests/kv/test_radix.c: the prefix cache shares cached blocks instead of
 * copying them, matches only whole blocks of the same tokens in the same
 * namespace, honours sliding windows, evicts only unreferenced blocks and
 * only when asked (oldest first), and gives everything back on destroy.
 *
 * Sequences are filled with keys and values that are a function of the
 * tokens up to and including a position (as a model's would be), so a
 * sequence that attached cached blocks can be checked slot by slot against
 * what writing its tokens would have produced. Blocks hold 4 tokens here. */
#include <inttypes.h>
#include <string.h>
#include <time.h>

#include "kv/pool.h"
#include "kv/radix.h"
#include "kv/seq.h"
#include "test_util.h"

enum {
    B = 4,
    HEADS = 2,
    KEY_LENGTH = 3,
    VALUE_LENGTH = 2,
    MAX_LAYERS = 4,
    MAX_TOKENS = 64,
};

typedef struct fixture {
    kv_pool *pool;
    kv_radix *radix;
    int32_t layers;
    int64_t windows[MAX_LAYERS];
} fixture;

static const int64_t all_global[MAX_LAYERS] = {0};

/* Opens a pool of exactly `blocks` blocks and a cache over it. */
static void fixture_open(fixture *f, int32_t layers, const int64_t *windows, int64_t blocks)
{
    kv_pool_config config = {.budget_bytes = 1 << 20,
                             .block_tokens = B,
                             .layer_count = layers,
                             .kv_head_count = HEADS,
                             .key_length = KEY_LENGTH,
                             .value_length = VALUE_LENGTH,
                             .storage = KV_STORAGE_F32};
    strata_error error = {0};
    kv_pool *probe = NULL;
    CHECK(kv_pool_create(&config, &probe, &error) == STRATA_OK);
    config.budget_bytes = (uint64_t)blocks * kv_pool_block_bytes(probe);
    kv_pool_destroy(probe);
    *f = (fixture){.layers = layers};
    memcpy(f->windows, windows, (size_t)layers * sizeof *windows);
    CHECK(kv_pool_create(&config, &f->pool, &error) == STRATA_OK);
    CHECK(kv_pool_capacity(f->pool) == blocks);
    CHECK_MESSAGE(kv_radix_create(f->pool, f->windows, &f->radix, &error) == STRATA_OK, "%s", error.message);
}

/* Destroys the cache and checks it gave every block back to a consistent pool. */
static void fixture_close(fixture *f)
{
    kv_radix_destroy(f->radix);
    CHECK(kv_pool_free_blocks(f->pool) == kv_pool_capacity(f->pool));
    strata_error error = {0};
    CHECK_MESSAGE(kv_pool_check(f->pool, &error) == STRATA_OK, "%s", error.message);
    kv_pool_destroy(f->pool);
}

static uint64_t mix(uint64_t x)
{
    x ^= x >> 31;
    x *= 0x9E3779B97F4A7C15ull;
    x ^= x >> 29;
    return x;
}

/* The value a model would store for (layer, head, channel) of the key or
 * value at `position`: a function of tokens[0 .. position]. Small integers,
 * so f32 holds them exactly. */
static float expected_value(const int32_t *tokens, int64_t position, int32_t layer, int32_t head, int32_t channel,
                            int is_value)
{
    uint64_t hash = 1;
    for (int64_t p = 0; p <= position; p++)
        hash = mix(hash + (uint64_t)(uint32_t)tokens[p]);
    hash = mix(hash ^ ((uint64_t)layer << 40 | (uint64_t)head << 32 | (uint64_t)channel << 8 | (uint64_t)is_value));
    return (float)(hash & 0xFFFF);
}

/* Writes tokens[from .. to) into seq as a forward pass would, then lets the
 * sliding-window layers drop the blocks that left their window. */
static strata_status write_tokens(fixture *f, kv_seq *seq, const int32_t *tokens, int64_t from, int64_t to)
{
    int64_t n = to - from;
    strata_error error = {0};
    strata_status status = kv_seq_reserve(seq, n, &error);
    if (status != STRATA_OK)
        return status;
    float keys[MAX_TOKENS * HEADS * KEY_LENGTH], values[MAX_TOKENS * HEADS * VALUE_LENGTH];
    int64_t positions[MAX_TOKENS];
    for (int32_t layer = 0; layer < f->layers; layer++) {
        for (int64_t t = 0; t < n; t++) {
            positions[t] = from + t;
            for (int32_t head = 0; head < HEADS; head++) {
                for (int32_t c = 0; c < KEY_LENGTH; c++)
                    keys[(t * HEADS + head) * KEY_LENGTH + c] = expected_value(tokens, from + t, layer, head, c, 0);
                for (int32_t c = 0; c < VALUE_LENGTH; c++)
                    values[(t * HEADS + head) * VALUE_LENGTH + c] =
                        expected_value(tokens, from + t, layer, head, c, 1);
            }
        }
        kv_seq_write(seq, layer, keys, values, n, positions);
    }
    kv_seq_advance(seq, n);
    for (int32_t layer = 0; layer < f->layers; layer++)
        if (f->windows[layer] > 0 && to - f->windows[layer] + 1 > 0)
            kv_seq_drop_before(seq, layer, to - f->windows[layer] + 1);
    return STRATA_OK;
}

/* A new sequence holding tokens[0 .. count). */
static kv_seq *sequence_of(fixture *f, const int32_t *tokens, int64_t count)
{
    kv_seq *seq = NULL;
    strata_error error = {0};
    CHECK(kv_seq_create(f->pool, &seq, &error) == STRATA_OK);
    CHECK(write_tokens(f, seq, tokens, 0, count) == STRATA_OK);
    return seq;
}

/* Checks every slot of seq holds what writing tokens would have put there,
 * in position order, and that each layer keeps the positions the next token
 * attends to (all for a global layer, the last `window` for a sliding one). */
static bool sequence_matches(fixture *f, const kv_seq *seq, const int32_t *tokens)
{
    int64_t length = kv_seq_length(seq);
    bool ok = true;
    for (int32_t layer = 0; layer < f->layers; layer++)
        for (int32_t head = 0; head < HEADS; head++) {
            const kv_block_table *table = kv_seq_table(seq, layer, head);
            int64_t first = table->slot_count == 0 ? length : kv_block_positions_const(f->pool, table->blocks[0])[0];
            int64_t needed = f->windows[layer] == 0 ? 0 : length - f->windows[layer] + 1;
            if (first + table->slot_count != length || first > (needed > 0 ? needed : 0)) {
                fprintf(stderr, "layer %d head %d holds positions %" PRId64 " .. %" PRId64 " of %" PRId64 "\n", layer,
                        head, first, first + table->slot_count, length);
                ok = false;
                continue;
            }
            for (int64_t i = 0; i < table->slot_count && ok; i++) {
                kv_block_id block = table->blocks[i / B];
                int64_t slot = i % B, position = first + i;
                const float *keys = (const float *)kv_block_keys_const(f->pool, block) + slot * KEY_LENGTH;
                const float *values = (const float *)kv_block_values_const(f->pool, block) + slot * VALUE_LENGTH;
                ok = kv_block_positions_const(f->pool, block)[slot] == position;
                for (int32_t c = 0; c < KEY_LENGTH; c++)
                    ok = ok && keys[c] == expected_value(tokens, position, layer, head, c, 0);
                for (int32_t c = 0; c < VALUE_LENGTH; c++)
                    ok = ok && values[c] == expected_value(tokens, position, layer, head, c, 1);
                if (!ok)
                    fprintf(stderr, "layer %d head %d position %" PRId64 " holds the wrong key or value\n", layer,
                            head, position);
            }
        }
    return ok;
}

/* Attaches the cached prefix of tokens to a new sequence; returns the tokens attached. */
static int64_t attach(fixture *f, uint64_t namespace_id, const int32_t *tokens, int64_t count, int64_t max_tokens,
                      kv_seq **seq)
{
    strata_error error = {0};
    int64_t attached = -1;
    CHECK(kv_seq_create(f->pool, seq, &error) == STRATA_OK);
    CHECK_MESSAGE(kv_radix_attach_prefix(f->radix, namespace_id, tokens, count, max_tokens, *seq, &attached,
                                         &error) == STRATA_OK,
                  "%s", error.message);
    CHECK(kv_seq_length(*seq) == attached);
    CHECK(sequence_matches(f, *seq, tokens));
    return attached;
}

/* Attaches into a throwaway sequence: how many tokens would be served. */
static int64_t probe_match(fixture *f, uint64_t namespace_id, const int32_t *tokens, int64_t count, int64_t max_tokens)
{
    kv_seq *seq = NULL;
    int64_t attached = attach(f, namespace_id, tokens, count, max_tokens, &seq);
    kv_seq_destroy(seq);
    return attached;
}

static void insert(fixture *f, uint64_t namespace_id, const int32_t *tokens, int64_t count, const kv_seq *seq)
{
    strata_error error = {0};
    CHECK_MESSAGE(kv_radix_insert(f->radix, namespace_id, tokens, count, seq, &error) == STRATA_OK, "%s",
                  error.message);
}

static kv_radix_stats stats_of(const fixture *f)
{
    kv_radix_stats stats;
    kv_radix_stats_get(f->radix, &stats);
    return stats;
}

static int64_t used_blocks(const fixture *f)
{
    return kv_pool_capacity(f->pool) - kv_pool_free_blocks(f->pool);
}

static const int32_t sixteen_tokens[16] = {5, 9, 2, 7, 11, 3, 3, 8, 1, 4, 6, 10, 12, 2, 9, 5};

/* Opens a two-layer, all-global fixture of 64 blocks and caches the first
 * count of sixteen_tokens under namespace 1; returns the sequence that wrote them. */
static kv_seq *open_with_cached_prefix(fixture *f, int64_t count)
{
    fixture_open(f, 2, all_global, 64);
    kv_seq *seq = sequence_of(f, sixteen_tokens, count);
    insert(f, 1, sixteen_tokens, count, seq);
    return seq;
}

static void second_sequence_with_the_same_prefix_attaches_the_cached_blocks(void)
{
    fixture f;
    kv_seq *first = open_with_cached_prefix(&f, 14);
    int64_t used = used_blocks(&f);

    kv_seq *second = NULL;
    CHECK(attach(&f, 1, sixteen_tokens, 14, 13, &second) == 12);
    CHECK(used_blocks(&f) == used);
    for (int32_t layer = 0; layer < 2; layer++)
        for (int32_t head = 0; head < HEADS; head++) {
            const kv_block_table *mine = kv_seq_table(second, layer, head);
            const kv_block_table *theirs = kv_seq_table(first, layer, head);
            CHECK(mine->block_count == 3 && mine->slot_count == 12);
            for (int32_t i = 0; i < 3 && i < mine->block_count; i++) {
                CHECK(mine->blocks[i] == theirs->blocks[i]);
                CHECK(kv_pool_refcount(f.pool, mine->blocks[i]) == 3); /* cache, first, second */
            }
        }
    /* The second sequence goes on computing its own tail. */
    CHECK(write_tokens(&f, second, sixteen_tokens, 12, 14) == STRATA_OK);
    CHECK(sequence_matches(&f, second, sixteen_tokens));
    kv_seq_destroy(first);
    kv_seq_destroy(second);
    fixture_close(&f);
}

static void partial_block_tails_are_not_cached(void)
{
    fixture f;
    kv_seq *seq = open_with_cached_prefix(&f, 7);
    CHECK(stats_of(&f).nodes == 1);
    /* A count past the sequence's length caches no more than it holds. */
    insert(&f, 1, sixteen_tokens, 16, seq);
    CHECK(stats_of(&f).nodes == 1);
    CHECK(probe_match(&f, 1, sixteen_tokens, 16, 16) == 4);
    kv_seq_destroy(seq);
    fixture_close(&f);
}

static void max_tokens_bounds_the_match(void)
{
    fixture f;
    kv_seq *seq = open_with_cached_prefix(&f, 16);
    const struct {
        int64_t max_tokens, attached;
    } cases[] = {{16, 16}, {100, 16}, {15, 12}, {12, 12}, {11, 8}, {4, 4}, {3, 0}, {0, 0}, {-5, 0}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int64_t attached = probe_match(&f, 1, sixteen_tokens, 16, cases[i].max_tokens);
        CHECK_MESSAGE(attached == cases[i].attached, "max_tokens %" PRId64 " attached %" PRId64,
                      cases[i].max_tokens, attached);
    }
    /* The tokens given bound it too. */
    CHECK(probe_match(&f, 1, sixteen_tokens, 9, 100) == 8);
    kv_seq_destroy(seq);
    fixture_close(&f);
}

static void a_different_token_in_block_k_limits_the_match_to_k_blocks(void)
{
    fixture f;
    kv_seq *seq = open_with_cached_prefix(&f, 16);
    for (int32_t k = 0; k < 4; k++)
        for (int32_t slot = 0; slot < B; slot++) {
            int32_t tokens[16];
            memcpy(tokens, sixteen_tokens, sizeof tokens);
            tokens[k * B + slot] += 100;
            int64_t attached = probe_match(&f, 1, tokens, 16, 16);
            CHECK_MESSAGE(attached == k * B, "changed token %d, attached %" PRId64, k * B + slot, attached);
        }
    kv_seq_destroy(seq);
    fixture_close(&f);
}

static void namespace_isolation(void)
{
    fixture f;
    kv_seq *seq = open_with_cached_prefix(&f, 16);
    CHECK(probe_match(&f, 2, sixteen_tokens, 16, 16) == 0);
    CHECK(stats_of(&f).hit_tokens == 0);
    CHECK(probe_match(&f, 1, sixteen_tokens, 16, 16) == 16);
    /* The same tokens cached under the other namespace are separate entries. */
    kv_seq *other = sequence_of(&f, sixteen_tokens, 16);
    insert(&f, 2, sixteen_tokens, 16, other);
    CHECK(stats_of(&f).nodes == 8);
    kv_seq *served = NULL;
    CHECK(attach(&f, 2, sixteen_tokens, 16, 16, &served) == 16);
    CHECK(kv_seq_table(served, 0, 0)->blocks[0] == kv_seq_table(other, 0, 0)->blocks[0]);
    CHECK(kv_seq_table(served, 0, 0)->blocks[0] != kv_seq_table(seq, 0, 0)->blocks[0]);
    kv_seq_destroy(served);
    kv_seq_destroy(other);
    kv_seq_destroy(seq);
    fixture_close(&f);
}

static void eviction_happens_only_on_request_and_only_to_unreferenced_blocks(void)
{
    fixture f;
    kv_seq *seq = open_with_cached_prefix(&f, 16); /* 4 pool blocks per token block */
    CHECK(kv_pool_free_blocks(f.pool) == 48);
    CHECK(kv_radix_evict(f.radix, 48) == 0); /* already free: nothing asked */
    CHECK(kv_radix_evict(f.radix, 64) == 0); /* every block is in use by seq */
    CHECK(kv_radix_evictable_blocks(f.radix) == 0);
    CHECK(stats_of(&f).nodes == 4);
    CHECK(kv_pool_refcount(f.pool, kv_seq_table(seq, 1, 1)->blocks[3]) == 2);

    kv_seq_destroy(seq);
    CHECK(kv_pool_free_blocks(f.pool) == 48); /* the cache keeps them */
    CHECK(kv_radix_evictable_blocks(f.radix) == 16);
    CHECK(kv_radix_evict(f.radix, 48) == 0);
    CHECK(kv_radix_evict(f.radix, 52) == 4); /* one token block: the deepest */
    CHECK(stats_of(&f).nodes == 3);

    kv_seq *reader = NULL;
    CHECK(attach(&f, 1, sixteen_tokens, 16, 16, &reader) == 12);
    CHECK(kv_radix_evict(f.radix, 64) == 0); /* the reader holds the rest */
    CHECK(kv_radix_evictable_blocks(f.radix) == 0);
    kv_seq_destroy(reader);
    CHECK(kv_radix_evictable_blocks(f.radix) == 12);
    CHECK(kv_radix_evict(f.radix, 64) == 12);
    CHECK(stats_of(&f).nodes == 0);
    CHECK(kv_pool_free_blocks(f.pool) == 64);
    fixture_close(&f);
}

static void eviction_takes_the_least_recently_used_first(void)
{
    fixture f;
    fixture_open(&f, 2, all_global, 64);
    int32_t prompts[3][8];
    for (int32_t p = 0; p < 3; p++) {
        memcpy(prompts[p], sixteen_tokens, sizeof prompts[p]);
        prompts[p][0] = 50 + p;
        kv_seq *seq = sequence_of(&f, prompts[p], 8);
        insert(&f, 1, prompts[p], 8, seq);
        kv_seq_destroy(seq);
    }
    CHECK(probe_match(&f, 1, prompts[0], 8, 8) == 8); /* prompt 0 is now the most recent */
    int64_t free_blocks = kv_pool_free_blocks(f.pool);
    /* Two token blocks' worth: prompt 1 entirely, leaf then parent. */
    CHECK(kv_radix_evict(f.radix, free_blocks + 8) == 8);
    CHECK(probe_match(&f, 1, prompts[1], 8, 8) == 0);
    CHECK(probe_match(&f, 1, prompts[2], 8, 8) == 8);
    CHECK(probe_match(&f, 1, prompts[0], 8, 8) == 8);
    /* Prompt 2 is now the older; its leaf goes before its first block. */
    free_blocks = kv_pool_free_blocks(f.pool);
    CHECK(kv_radix_evict(f.radix, free_blocks + 1) == 4);
    CHECK(probe_match(&f, 1, prompts[2], 8, 8) == 4);
    CHECK(probe_match(&f, 1, prompts[0], 8, 8) == 8);
    fixture_close(&f);
}

static void sliding_window_usability(void)
{
    /* Layer 1 sees the last 6 positions. After 24 tokens it has dropped
     * positions 0 .. 15 (blocks 0 .. 3); block 4 (16 .. 19) holds 19, still
     * in the window. */
    fixture f;
    const int64_t windows[2] = {0, 6};
    fixture_open(&f, 2, windows, 128);
    int32_t tokens[24];
    for (int32_t i = 0; i < 24; i++)
        tokens[i] = 3 + i % 5 + i / 7;
    kv_seq *long_seq = sequence_of(&f, tokens, 24);
    CHECK(kv_seq_table(long_seq, 1, 0)->block_count == 2);
    insert(&f, 1, tokens, 24, long_seq);
    CHECK(stats_of(&f).nodes == 6);

    /* Next token at 20 needs 15 .. 19: block 3 is gone, and so is every
     * earlier block some shorter prefix would need. */
    CHECK(probe_match(&f, 1, tokens, 24, 23) == 0);
    /* Next token at 24 needs 19 .. 23: blocks 4 and 5, both kept. */
    kv_seq *served = NULL;
    CHECK(attach(&f, 1, tokens, 24, 24, &served) == 24);
    CHECK(kv_seq_table(served, 0, 1)->block_count == 6);
    CHECK(kv_seq_table(served, 1, 1)->block_count == 2);
    CHECK(kv_seq_table(served, 1, 1)->blocks[0] == kv_seq_table(long_seq, 1, 1)->blocks[0]);
    kv_seq_destroy(served);

    /* A short sequence still holding blocks 0 and 1 fills them in. */
    kv_seq *short_seq = sequence_of(&f, tokens, 8);
    insert(&f, 1, tokens, 8, short_seq);
    CHECK(stats_of(&f).nodes == 6);
    CHECK(stats_of(&f).inserted_blocks == 6);
    kv_seq_destroy(short_seq);
    /* Up to 20 the best is now 2 blocks: next token at 8 needs 3 .. 7. */
    CHECK(probe_match(&f, 1, tokens, 24, 23) == 8);
    CHECK(probe_match(&f, 1, tokens, 24, 12) == 8);
    CHECK(probe_match(&f, 1, tokens, 24, 24) == 24);
    kv_seq_destroy(long_seq);
    fixture_close(&f);
}

static void stats_count_lookups_hits_inserts_evictions_and_nodes(void)
{
    fixture f;
    kv_seq *seq = open_with_cached_prefix(&f, 13);
    insert(&f, 1, sixteen_tokens, 13, seq); /* again: nothing new */
    CHECK(probe_match(&f, 1, sixteen_tokens, 13, 12) == 12);
    CHECK(probe_match(&f, 1, sixteen_tokens, 13, 8) == 8);
    CHECK(probe_match(&f, 3, sixteen_tokens, 13, 12) == 0);
    kv_seq_destroy(seq);
    CHECK(kv_radix_evict(f.radix, 64) == 12);
    kv_radix_stats stats = stats_of(&f);
    CHECK(stats.lookups == 3);
    CHECK(stats.hit_tokens == 20);
    CHECK(stats.inserted_blocks == 3);
    CHECK(stats.evicted_blocks == 12);
    CHECK(stats.nodes == 0);
    fixture_close(&f);
}

static void destroy_releases_every_cached_block(void)
{
    fixture f;
    const int64_t windows[3] = {0, 5, 0};
    fixture_open(&f, 3, windows, 128);
    kv_seq *seq = sequence_of(&f, sixteen_tokens, 16);
    insert(&f, 1, sixteen_tokens, 16, seq);
    insert(&f, 2, sixteen_tokens, 11, seq);
    kv_seq_destroy(seq);
    /* A sequence still reading cached blocks keeps them past the cache. */
    kv_seq *reader = NULL;
    CHECK(attach(&f, 1, sixteen_tokens, 16, 16, &reader) == 16);
    kv_radix_destroy(f.radix);
    f.radix = NULL;
    CHECK(kv_pool_refcount(f.pool, kv_seq_table(reader, 0, 0)->blocks[0]) == 1);
    CHECK(sequence_matches(&f, reader, sixteen_tokens));
    kv_seq_destroy(reader);
    fixture_close(&f);
}

/* ---- Randomized ---- */

typedef struct live_sequence {
    kv_seq *seq;
    uint64_t namespace_id;
    int32_t tokens[MAX_TOKENS];
} live_sequence;

typedef struct inserted_prefix {
    uint64_t namespace_id;
    int64_t tokens;
    int32_t ids[MAX_TOKENS];
} inserted_prefix;

/* A linear congruential step over tests/test_util.h's random_state. */
static uint32_t random_below(uint32_t limit)
{
    random_state = random_state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(random_state >> 33) % limit;
}

/* True when some prefix inserted under namespace_id starts with tokens[0 .. length). */
static bool was_inserted(const inserted_prefix *inserted, int64_t count, uint64_t namespace_id,
                         const int32_t *tokens, int64_t length)
{
    for (int64_t i = 0; i < count; i++)
        if (inserted[i].namespace_id == namespace_id && inserted[i].tokens >= length &&
            memcmp(inserted[i].ids, tokens, (size_t)length * sizeof *tokens) == 0)
            return true;
    return false;
}

/* Computes live's tokens[from .. to), evicting cached blocks if the pool is
 * short, as a scheduler would; drops the sequence if it is still short. */
static void compute_or_drop(fixture *f, live_sequence *live, int64_t from, int64_t to)
{
    if (write_tokens(f, live->seq, live->tokens, from, to) == STRATA_OK)
        return;
    kv_radix_evict(f->radix, kv_seq_blocks_needed(live->seq, to - from));
    if (write_tokens(f, live->seq, live->tokens, from, to) == STRATA_OK)
        return;
    kv_seq_destroy(live->seq);
    live->seq = NULL;
}

/* Starts a sequence from the cache and computes the rest of its tokens. */
static void start_sequence(fixture *f, live_sequence *live, int64_t count, const inserted_prefix *inserted,
                           int64_t inserted_count)
{
    int64_t attached = attach(f, live->namespace_id, live->tokens, count, count - 1, &live->seq);
    CHECK(attached % B == 0 && attached <= count - 1);
    CHECK(attached == 0 || was_inserted(inserted, inserted_count, live->namespace_id, live->tokens, attached));
    compute_or_drop(f, live, attached, count);
}

/* One randomized run over three layers with the given windows. */
static void randomized_run(const int64_t *windows, uint64_t seed)
{
    random_state = seed;
    fixture f;
    fixture_open(&f, 3, windows, 240);
    enum { LIVE = 6, INSERTED = 4096, STEPS = 3000 };
    live_sequence live[LIVE] = {0};
    static inserted_prefix inserted[INSERTED];
    int64_t inserted_count = 0;
    const int32_t stems[3][16] = {{1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2, 3, 1},
                                  {2, 2, 2, 2, 1, 1, 1, 1, 2, 2, 2, 2, 1, 1, 1, 1},
                                  {3, 1, 3, 1, 3, 1, 3, 1, 2, 2, 3, 3, 1, 1, 2, 2}};
    strata_error error = {0};

    for (int step = 0; step < STEPS; step++) {
        live_sequence *pick = &live[random_below(LIVE)];
        uint32_t operation = random_below(10);
        if (operation < 4 && pick->seq == NULL) {
            /* Mostly a shared stem, then random tokens from a tiny vocabulary. */
            int64_t count = 1 + random_below(MAX_TOKENS - 16);
            const int32_t *stem = stems[random_below(3)];
            for (int64_t i = 0; i < count; i++)
                pick->tokens[i] = i < 16 && random_below(16) != 0 ? stem[i] : (int32_t)random_below(3) + 1;
            pick->namespace_id = random_below(2);
            start_sequence(&f, pick, count, inserted, inserted_count);
        } else if (operation < 6 && pick->seq != NULL) {
            int64_t count = random_below((uint32_t)kv_seq_length(pick->seq) + 1);
            insert(&f, pick->namespace_id, pick->tokens, count, pick->seq);
            if (inserted_count < INSERTED) {
                inserted[inserted_count] = (inserted_prefix){.namespace_id = pick->namespace_id, .tokens = count};
                memcpy(inserted[inserted_count++].ids, pick->tokens, (size_t)count * sizeof *pick->tokens);
            }
        } else if (operation < 8 && pick->seq != NULL) {
            kv_seq_destroy(pick->seq);
            pick->seq = NULL;
        } else if (operation == 8) {
            kv_radix_evict(f.radix, kv_pool_free_blocks(f.pool) + 1 + random_below(24));
        } else if (pick->seq != NULL && kv_seq_length(pick->seq) < MAX_TOKENS) {
            /* Decode a few more tokens. */
            int64_t length = kv_seq_length(pick->seq);
            int64_t more = 1 + random_below((uint32_t)(MAX_TOKENS - length < 5 ? MAX_TOKENS - length : 5));
            for (int64_t i = length; i < length + more; i++)
                pick->tokens[i] = (int32_t)random_below(3) + 1;
            compute_or_drop(&f, pick, length, length + more);
        }
        CHECK_MESSAGE(kv_pool_check(f.pool, &error) == STRATA_OK, "step %d: %s", step, error.message);
        for (int i = 0; i < LIVE; i++)
            if (live[i].seq != NULL)
                CHECK_MESSAGE(sequence_matches(&f, live[i].seq, live[i].tokens), "step %d, sequence %d", step, i);
        if (test_failures > 0)
            break;
    }
    kv_radix_stats stats = stats_of(&f);
    fprintf(stderr, "  %" PRId64 " lookups, %" PRId64 " hit tokens, %" PRId64 " inserted and %" PRId64
                    " evicted blocks, %" PRId64 " nodes\n",
            stats.lookups, stats.hit_tokens, stats.inserted_blocks, stats.evicted_blocks, stats.nodes);
    CHECK(stats.lookups > 0 && stats.evicted_blocks > 0);
    for (int i = 0; i < LIVE; i++)
        kv_seq_destroy(live[i].seq);
    kv_radix_evict(f.radix, kv_pool_capacity(f.pool));
    CHECK(stats_of(&f).nodes == 0);
    CHECK(kv_pool_free_blocks(f.pool) == kv_pool_capacity(f.pool));
    fixture_close(&f);
}

static void randomized_inserts_attaches_destroys_and_evictions_keep_contents_right(void)
{
    const char *seed_text = getenv("STRATA_TEST_SEED");
    uint64_t seed = seed_text != NULL ? strtoull(seed_text, NULL, 10) : (uint64_t)time(NULL);
    fprintf(stderr, "randomized seed %" PRIu64 " (replay with STRATA_TEST_SEED=%" PRIu64 ")\n", seed, seed);
    /* All global layers share the most; a small sliding window drops blocks
     * before they are inserted and makes most matches back off. */
    const int64_t window_sets[][3] = {{0, 0, 0}, {0, 6, 0}, {9, 0, 5}};
    for (size_t i = 0; i < sizeof window_sets / sizeof window_sets[0] && test_failures == 0; i++)
        randomized_run(window_sets[i], seed + i);
}

int main(void)
{
    RUN_CASE(second_sequence_with_the_same_prefix_attaches_the_cached_blocks);
    RUN_CASE(partial_block_tails_are_not_cached);
    RUN_CASE(max_tokens_bounds_the_match);
    RUN_CASE(a_different_token_in_block_k_limits_the_match_to_k_blocks);
    RUN_CASE(namespace_isolation);
    RUN_CASE(eviction_happens_only_on_request_and_only_to_unreferenced_blocks);
    RUN_CASE(eviction_takes_the_least_recently_used_first);
    RUN_CASE(sliding_window_usability);
    RUN_CASE(stats_count_lookups_hits_inserts_evictions_and_nodes);
    RUN_CASE(destroy_releases_every_cached_block);
    RUN_CASE(randomized_inserts_attaches_destroys_and_evictions_keep_contents_right);
    TEST_EXIT();
}
