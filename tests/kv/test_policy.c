/* tests/kv/test_policy.c: the KV compression policies (kv/policy/).
 *
 * Every case runs a policy's hooks on a real pool and sequence: 2 layers of
 * 2 KV heads, layer 0 a sliding-window layer, 16-slot f32 blocks, 100 slots
 * at positions 0..99, and hand-made attention masses (one float per slot of
 * each layer-1 table) whose answer is known. Checked: streaming keeps the
 * sinks and the most recent slots (and a plain window when the budget is
 * smaller than the sinks); h2o keeps the recent part plus the heaviest
 * others, and a decode step one slot over budget evicts exactly the lightest
 * non-recent slot; snapkv keeps the observation window plus the top slots by
 * pooled mass, where max pooling and clipped average pooling choose other
 * slots than raw mass would, and pooling never reads the window's mass;
 * tables within budget and the windowed layer are never touched; the masses
 * move with their slots; the pool gets back exactly the blocks the
 * compaction emptied; the same input gives the same kept slots. PyramidKV
 * runs on up to 5 layers (4 global): its layer budgets follow the formula
 * of kv/policy/pyramidkv.c (rounding and the clamp at the sequence length
 * included) and sum to layers x budget, each layer keeps what SnapKV keeps
 * with that layer's budget, and beta = 1 is SnapKV. */
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "kv/policy.h"
#include "kv/pool.h"
#include "kv/seq.h"
#include "kv/kv_checks.h"
#include "test_util.h"

/* Most cases use LAYERS layers; the PyramidKV cases up to MAX_LAYERS (layer 0 always windowed). */
enum { LAYERS = 2, MAX_LAYERS = 5, HEADS = 2, TABLES = MAX_LAYERS * HEADS, BLOCK = 16, KEY = 4, VALUE = 4 };
enum { PROMPT = 100, CAP = 128 };

extern const kv_policy_ops *const kv_policies[];
extern const int kv_policy_count;

/* ---- fixture ----------------------------------------------------------- */

typedef struct fixture {
    kv_pool *pool;
    kv_seq *seq;
    int32_t layers;
    bool windowed[MAX_LAYERS];
    float mass_storage[TABLES][CAP];
    float *mass[TABLES];
    float squares_storage[TABLES][CAP];
    float *squares[TABLES];
    float array_storage[TABLES * KV_POLICY_MAX_SLOT_ARRAYS][CAP];
    float *arrays[TABLES * KV_POLICY_MAX_SLOT_ARRAYS];
    float original[TABLES][CAP]; /* mass by position, to follow slots through a compaction */
    double params[KV_POLICY_MAX_PARAMS];
    float head_scores[TABLES]; /* all 0: for policies that rank tables by a head profile (duo) */
    kv_policy_view view;
    const kv_policy_ops *ops;
} fixture;

/* Writes `tokens` slots at the sequence's next positions into every table. */
static void append(fixture *f, int64_t tokens)
{
    strata_error error = {0};
    float keys[PROMPT * HEADS * KEY], values[PROMPT * HEADS * VALUE];
    int64_t positions[PROMPT];
    int64_t first = kv_seq_length(f->seq);
    for (int64_t t = 0; t < tokens; t++)
        positions[t] = first + t;
    for (int64_t i = 0; i < tokens * HEADS * KEY; i++)
        keys[i] = values[i] = (float)i;
    CHECK_MESSAGE(kv_seq_reserve(f->seq, tokens, &error) == STRATA_OK, "%s", error.message);
    for (int32_t layer = 0; layer < f->layers; layer++)
        kv_seq_write(f->seq, layer, keys, values, tokens, positions);
    kv_seq_advance(f->seq, tokens);
}

/* A small baseline mass, distinct per (head, position), far below the hand-set heavy slots. */
static float baseline(int32_t head, int64_t position)
{
    return 0.0001f * (float)position + 0.00001f * (float)head;
}

/* Builds the 100-slot sequence of `layers` layers, the masses of the global
 * tables (the same in every global layer) and the view for ops with param text. */
static void fixture_init_layers(fixture *f, int32_t layers, const kv_policy_ops *ops, const char *params,
                                int64_t budget)
{
    memset(f, 0, sizeof *f);
    f->layers = layers;
    kv_pool_config config = {.block_tokens = BLOCK,
                             .layer_count = layers,
                             .kv_head_count = HEADS,
                             .key_length = KEY,
                             .value_length = VALUE,
                             .storage = KV_STORAGE_F32,
                             .budget_bytes = 1 << 20};
    strata_error error = {0};
    kv_pool *probe = NULL;
    CHECK_MESSAGE(kv_pool_create(&config, &probe, &error) == STRATA_OK, "%s", error.message);
    config.budget_bytes = 96 * kv_pool_block_bytes(probe);
    kv_pool_destroy(probe);
    CHECK_MESSAGE(kv_pool_create(&config, &f->pool, &error) == STRATA_OK, "%s", error.message);
    CHECK_MESSAGE(kv_seq_create(f->pool, &f->seq, &error) == STRATA_OK, "%s", error.message);
    append(f, PROMPT);

    f->windowed[0] = true;
    for (int32_t table = 0; table < layers * HEADS; table++) {
        f->mass[table] = table / HEADS == 0 ? NULL : f->mass_storage[table]; /* none for the windowed layer */
        f->squares[table] = table / HEADS == 0 ? NULL : f->squares_storage[table];
        for (int k = 0; k < ops->slot_arrays; k++)
            f->arrays[table * ops->slot_arrays + k] =
                table / HEADS == 0 ? NULL : f->array_storage[table * KV_POLICY_MAX_SLOT_ARRAYS + k];
        for (int64_t p = 0; p < CAP; p++)
            f->mass_storage[table][p] = baseline(table % HEADS, p);
    }
    f->ops = ops;
    CHECK_MESSAGE(kv_policy_parse_params(ops, params, f->params, &error) == STRATA_OK, "%s", error.message);
    f->view = (kv_policy_view){.seq = f->seq,
                               .layer_count = layers,
                               .kv_head_count = HEADS,
                               .layer_is_windowed = f->windowed,
                               .budget = budget,
                               .params = f->params,
                               .mass = f->mass,
                               .mass_squares = ops->mass_squares ? f->squares : NULL,
                               .slot_arrays = ops->slot_arrays > 0 ? f->arrays : NULL,
                               .slot_array_count = ops->slot_arrays,
                               .head_scores = f->head_scores};
}

static void fixture_init(fixture *f, const kv_policy_ops *ops, const char *params, int64_t budget)
{
    fixture_init_layers(f, LAYERS, ops, params, budget);
}

static void fixture_free(fixture *f)
{
    kv_seq_destroy(f->seq);
    kv_pool_destroy(f->pool);
}

/* Sets the mass of a layer-1 head's slot at a position (before any compaction: slot == position). */
static void set_mass(fixture *f, int32_t head, int64_t position, float mass)
{
    f->mass[HEADS + head][position] = mass;
}

/* Sets the same mass in every global layer's table of a head, by position. */
static void set_mass_everywhere(fixture *f, int32_t head, int64_t position, float mass)
{
    for (int32_t layer = 1; layer < f->layers; layer++)
        f->mass[layer * HEADS + head][position] = mass;
}

/* Remembers every mass by position, to check after a compaction where it went. */
static void remember_masses(fixture *f)
{
    memcpy(f->original, f->mass_storage, sizeof f->original);
}

static strata_status run_hook(fixture *f, bool decode)
{
    strata_error error = {0};
    strata_status (*hook)(const kv_policy_view *, strata_error *) =
        decode ? f->ops->on_decode_step : f->ops->on_prefill_end;
    if (hook == NULL)
        return STRATA_OK;
    strata_status status = hook(&f->view, &error);
    CHECK_MESSAGE(status == STRATA_OK, "%s", error.message);
    return status;
}

/* The windowed layer holds every position of the sequence, in order. */
static bool windowed_layer_is_intact(const fixture *f)
{
    int64_t all[CAP];
    int64_t n = position_range(all, 0, 0, kv_seq_length(f->seq) - 1);
    return kv_table_holds(f->seq, 0, 0, all, n) && kv_table_holds(f->seq, 0, 1, all, n);
}

/* After a compaction mass[i] is the mass remembered for the position now at slot i. */
static bool masses_follow_slots(const fixture *f)
{
    bool same = true;
    int64_t got[CAP];
    for (int32_t head = 0; head < HEADS; head++) {
        int64_t n = kv_table_positions(f->seq, 1, head, got);
        for (int64_t i = 0; i < n; i++)
            same &= f->mass[HEADS + head][i] == f->original[HEADS + head][got[i]];
    }
    return same;
}

/* Blocks holding `slots` slots. */
static int64_t blocks_for(int64_t slots)
{
    return (slots + BLOCK - 1) / BLOCK;
}

/* ---- cases ------------------------------------------------------------- */

static void the_registry_lists_each_policy_once_and_full_is_the_identity(void)
{
    /* Order-free (several policies are added at once): full comes first, these are found, no name twice. */
    const char *names[] = {"full", "streaming", "h2o", "snapkv", "pyramidkv", "duo", "merge", "quest"};
    CHECK(kv_policy_count >= 6 && kv_policies[0] == &kv_policy_full);
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        CHECK_MESSAGE(kv_policy_find(names[i]) != NULL && strcmp(kv_policy_find(names[i])->name, names[i]) == 0,
                      "%s", names[i]);
    for (int i = 0; i < kv_policy_count; i++)
        for (int j = i + 1; j < kv_policy_count; j++)
            CHECK_MESSAGE(strcmp(kv_policies[i]->name, kv_policies[j]->name) != 0, "%s twice", kv_policies[i]->name);
    CHECK(kv_policy_find("nonesuch") == NULL);
    CHECK(kv_policy_full.on_prefill_end == NULL && kv_policy_full.on_decode_step == NULL);
    CHECK(kv_policy_full.statistics == KV_STATISTICS_NONE && kv_policy_full.param_count == 0);
    CHECK(kv_policy_streaming.statistics == KV_STATISTICS_NONE);
    CHECK(kv_policy_h2o.statistics == KV_STATISTICS_ACCUMULATED);
    CHECK(kv_policy_snapkv.statistics == KV_STATISTICS_OBSERVATION);
    CHECK(kv_policy_snapkv.on_decode_step == NULL); /* decode steps keep everything */
    CHECK(kv_policy_pyramidkv.statistics == KV_STATISTICS_OBSERVATION);
    CHECK(kv_policy_pyramidkv.on_decode_step == NULL);
    for (int i = 0; i < kv_policy_count; i++) {
        CHECK(kv_policies[i]->summary != NULL && kv_policies[i]->param_count <= KV_POLICY_MAX_PARAMS);
        double values[KV_POLICY_MAX_PARAMS];
        CHECK(kv_policy_parse_params(kv_policies[i], NULL, values, NULL) == STRATA_OK);
    }
    double values[KV_POLICY_MAX_PARAMS];
    CHECK(kv_policy_parse_params(&kv_policy_snapkv, NULL, values, NULL) == STRATA_OK);
    CHECK(kv_policy_param_value(&kv_policy_snapkv, values, "observation") == 32);
    CHECK(kv_policy_param_value(&kv_policy_snapkv, values, "kernel") == 7);
    CHECK(kv_policy_param_value(&kv_policy_snapkv, values, "pooling") == 0);
    CHECK(kv_policy_parse_params(&kv_policy_pyramidkv, NULL, values, NULL) == STRATA_OK);
    CHECK(kv_policy_param_value(&kv_policy_pyramidkv, values, "observation") == 32); /* the session reads it */
    CHECK(kv_policy_param_value(&kv_policy_pyramidkv, values, "kernel") == 7);
    CHECK(kv_policy_param_value(&kv_policy_pyramidkv, values, "pooling") == 0);
    CHECK(kv_policy_param_value(&kv_policy_pyramidkv, values, "beta") == 20);
    CHECK(kv_policy_parse_params(&kv_policy_streaming, NULL, values, NULL) == STRATA_OK && values[0] == 4);
    CHECK(kv_policy_parse_params(&kv_policy_h2o, NULL, values, NULL) == STRATA_OK && values[0] == 0.5);
}

static void streaming_keeps_the_sinks_and_the_most_recent_slots_and_frees_the_emptied_blocks(void)
{
    fixture f;
    fixture_init(&f, &kv_policy_streaming, NULL, 20);
    int64_t free_before = kv_pool_free_blocks(f.pool);
    run_hook(&f, false);
    int64_t want[CAP];
    int64_t n = position_range(want, position_range(want, 0, 0, 3), 84, 99);
    CHECK(kv_table_holds(f.seq, 1, 0, want, n) && kv_table_holds(f.seq, 1, 1, want, n));
    CHECK(windowed_layer_is_intact(&f));
    CHECK(kv_pool_free_blocks(f.pool) == free_before + HEADS * (blocks_for(PROMPT) - blocks_for(20)));

    /* A decode step: the new slot enters, the oldest non-sink leaves. */
    append(&f, 1);
    free_before = kv_pool_free_blocks(f.pool);
    run_hook(&f, true);
    n = position_range(want, position_range(want, 0, 0, 3), 85, 100);
    CHECK(kv_table_holds(f.seq, 1, 0, want, n) && kv_table_holds(f.seq, 1, 1, want, n));
    CHECK(windowed_layer_is_intact(&f));
    CHECK(kv_pool_free_blocks(f.pool) == free_before);
    CHECK(pool_is_consistent(f.pool));
    fixture_free(&f);
}

static void streaming_with_a_budget_below_the_sinks_keeps_a_plain_window(void)
{
    fixture f;
    fixture_init(&f, &kv_policy_streaming, "sinks=4", 3);
    run_hook(&f, false);
    int64_t want[CAP];
    int64_t n = position_range(want, 0, 97, 99);
    CHECK(kv_table_holds(f.seq, 1, 0, want, n) && kv_table_holds(f.seq, 1, 1, want, n));
    fixture_free(&f);

    fixture_init(&f, &kv_policy_streaming, "sinks=2", 0); /* a budget of nothing empties the tables */
    int64_t free_before = kv_pool_free_blocks(f.pool);
    run_hook(&f, false);
    CHECK(kv_table_holds(f.seq, 1, 0, want, 0) && kv_table_holds(f.seq, 1, 1, want, 0));
    CHECK(windowed_layer_is_intact(&f));
    CHECK(kv_pool_free_blocks(f.pool) == free_before + HEADS * blocks_for(PROMPT));
    CHECK(pool_is_consistent(f.pool));
    fixture_free(&f);
}

static void h2o_keeps_the_recent_half_and_the_heaviest_others_then_evicts_the_lightest_per_step(void)
{
    fixture f;
    fixture_init(&f, &kv_policy_h2o, NULL, 10); /* 5 recent (95..99) + 5 heavy */
    /* Head 0: 95 is heavy but recent at the prefill; 17 is the lightest heavy hitter. */
    const int64_t heavy0[] = {3, 17, 42, 60, 77, 95};
    const float mass0[] = {9, 5.1f, 7, 8, 6, 5.5f};
    /* Head 1: 94 is the sixth heaviest, left out; 95 has only its baseline. */
    const int64_t heavy1[] = {5, 6, 7, 88, 89, 94};
    const float mass1[] = {9, 8, 7, 6, 5, 4.5f};
    for (int i = 0; i < 6; i++) {
        set_mass(&f, 0, heavy0[i], mass0[i]);
        set_mass(&f, 1, heavy1[i], mass1[i]);
    }
    set_mass(&f, 0, 99, 50); /* recent slots are kept whatever their mass */
    remember_masses(&f);
    int64_t free_before = kv_pool_free_blocks(f.pool);
    run_hook(&f, false);
    const int64_t kept0[] = {3, 17, 42, 60, 77, 95, 96, 97, 98, 99};
    const int64_t kept1[] = {5, 6, 7, 88, 89, 95, 96, 97, 98, 99};
    CHECK(kv_table_holds(f.seq, 1, 0, kept0, 10) && kv_table_holds(f.seq, 1, 1, kept1, 10));
    CHECK(masses_follow_slots(&f));
    CHECK(windowed_layer_is_intact(&f));
    CHECK(kv_pool_free_blocks(f.pool) == free_before + HEADS * (blocks_for(PROMPT) - blocks_for(10)));

    /* A decode step: slot 100 arrives (mass at index 10), 95 leaves the recent
     * part; the lightest non-recent slot goes: 17 in head 0, 95 in head 1. */
    append(&f, 1);
    for (int32_t head = 0; head < HEADS; head++) {
        f.mass[HEADS + head][10] = 0.5f;
        f.original[HEADS + head][100] = 0.5f;
    }
    free_before = kv_pool_free_blocks(f.pool);
    run_hook(&f, true);
    const int64_t step0[] = {3, 42, 60, 77, 95, 96, 97, 98, 99, 100};
    const int64_t step1[] = {5, 6, 7, 88, 89, 96, 97, 98, 99, 100};
    CHECK(kv_table_holds(f.seq, 1, 0, step0, 10) && kv_table_holds(f.seq, 1, 1, step1, 10));
    CHECK(masses_follow_slots(&f));
    CHECK(windowed_layer_is_intact(&f));
    CHECK(kv_pool_free_blocks(f.pool) == free_before);
    CHECK(pool_is_consistent(f.pool));
    fixture_free(&f);
}

static void h2o_with_recent_ratio_one_keeps_only_the_most_recent(void)
{
    fixture f;
    fixture_init(&f, &kv_policy_h2o, "recent_ratio=1", 10);
    set_mass(&f, 0, 3, 100);
    run_hook(&f, false);
    int64_t want[CAP];
    int64_t n = position_range(want, 0, 90, 99);
    CHECK(kv_table_holds(f.seq, 1, 0, want, n) && kv_table_holds(f.seq, 1, 1, want, n));
    fixture_free(&f);
}

static void h2o_without_masses_is_an_error_and_changes_nothing(void)
{
    fixture f;
    fixture_init(&f, &kv_policy_h2o, NULL, 10);
    f.mass[HEADS + 1] = NULL;
    strata_error error = {0};
    CHECK(kv_policy_h2o.on_prefill_end(&f.view, &error) == STRATA_E_INVALID_ARGUMENT);
    CHECK(strstr(error.message, "layer 1 KV head 1") != NULL);
    int64_t all[CAP];
    int64_t n = position_range(all, 0, 0, PROMPT - 1);
    CHECK(kv_table_holds(f.seq, 1, 0, all, n) && kv_table_holds(f.seq, 1, 1, all, n));
    fixture_free(&f);
}

static void snapkv_keeps_the_window_and_the_top_max_pooled_slots(void)
{
    fixture f;
    fixture_init(&f, &kv_policy_snapkv, "observation=8,kernel=3,pooling=0", 11); /* window 92..99 + 3 */
    /* Raw mass would choose 50, 20, 70 (head 0); max pooling spreads the
     * spike at 50 over 49..51, which then fill the three places. */
    set_mass(&f, 0, 50, 10);
    set_mass(&f, 0, 20, 6);
    set_mass(&f, 0, 70, 5);
    set_mass(&f, 1, 30, 10);
    set_mass(&f, 1, 80, 6);
    /* The window's own mass is large; were it pooled, slot 91 would be chosen. */
    for (int64_t p = 92; p < PROMPT; p++) {
        set_mass(&f, 0, p, 100);
        set_mass(&f, 1, p, 100);
    }
    remember_masses(&f);
    int64_t free_before = kv_pool_free_blocks(f.pool);
    run_hook(&f, false);
    int64_t want[CAP];
    int64_t n = position_range(want, position_range(want, 0, 49, 51), 92, 99);
    CHECK(kv_table_holds(f.seq, 1, 0, want, n));
    n = position_range(want, position_range(want, 0, 29, 31), 92, 99);
    CHECK(kv_table_holds(f.seq, 1, 1, want, n));
    CHECK(masses_follow_slots(&f));
    CHECK(windowed_layer_is_intact(&f));
    CHECK(kv_pool_free_blocks(f.pool) == free_before + HEADS * (blocks_for(PROMPT) - blocks_for(11)));

    /* Decode steps keep everything: the cache grows again. */
    append(&f, 1);
    run_hook(&f, true);
    CHECK(kv_seq_table(f.seq, 1, 0)->slot_count == 12 && kv_seq_table(f.seq, 1, 1)->slot_count == 12);
    CHECK(pool_is_consistent(f.pool));
    fixture_free(&f);
}

static void snapkv_average_pooling_is_clipped_at_the_edges_and_prefers_clusters(void)
{
    fixture f;
    fixture_init(&f, &kv_policy_snapkv, "observation=8,kernel=3,pooling=1", 10); /* window + 2 */
    /* Raw mass would choose 0 (7) and 60 (5, the first of three). Averaged
     * over 3: slot 61 scores 5, slot 0 (clipped to 2 slots) 3.5, slots 60 and
     * 62 about 3.34; zero padding would have given slot 0 only 2.33 and 60
     * its place. */
    for (int32_t head = 0; head < HEADS; head++) {
        set_mass(&f, head, 0, 7);
        set_mass(&f, head, 60, 5);
        set_mass(&f, head, 61, 5);
        set_mass(&f, head, 62, 5);
    }
    remember_masses(&f);
    run_hook(&f, false);
    int64_t want[CAP] = {0, 61};
    int64_t n = position_range(want, 2, 92, 99);
    CHECK(kv_table_holds(f.seq, 1, 0, want, n) && kv_table_holds(f.seq, 1, 1, want, n));
    CHECK(masses_follow_slots(&f));
    CHECK(windowed_layer_is_intact(&f));
    fixture_free(&f);
}

static void snapkv_with_a_budget_within_the_window_keeps_the_last_slots(void)
{
    fixture f;
    fixture_init(&f, &kv_policy_snapkv, "observation=8", 5);
    set_mass(&f, 0, 10, 100);
    run_hook(&f, false);
    int64_t want[CAP];
    int64_t n = position_range(want, 0, 95, 99);
    CHECK(kv_table_holds(f.seq, 1, 0, want, n) && kv_table_holds(f.seq, 1, 1, want, n));
    fixture_free(&f);
}

static void a_budget_of_at_least_the_slot_count_changes_nothing(void)
{
    /* Budget 100: the prefill is within it. Budgets 101 and 1000: so is the decode step after. */
    const int64_t budgets[] = {PROMPT, PROMPT + 1, 1000};
    for (int i = 0; i < kv_policy_count; i++)
        for (int b = 0; b < 3; b++) {
            fixture f;
            fixture_init(&f, kv_policies[i], NULL, budgets[b]);
            set_mass(&f, 0, 40, 9);
            remember_masses(&f);
            int64_t free_before = kv_pool_free_blocks(f.pool);
            int64_t all[CAP];
            run_hook(&f, false);
            int64_t n = position_range(all, 0, 0, PROMPT - 1);
            CHECK_MESSAGE(kv_table_holds(f.seq, 1, 0, all, n) && kv_table_holds(f.seq, 1, 1, all, n), "%s, budget %" PRId64,
                          kv_policies[i]->name, budgets[b]);
            CHECK(kv_pool_free_blocks(f.pool) == free_before);
            if (budgets[b] > PROMPT) {
                append(&f, 1);
                free_before = kv_pool_free_blocks(f.pool);
                run_hook(&f, true);
                n = position_range(all, 0, 0, PROMPT);
                CHECK_MESSAGE(kv_table_holds(f.seq, 1, 0, all, n) && kv_table_holds(f.seq, 1, 1, all, n), "%s, budget %" PRId64,
                              kv_policies[i]->name, budgets[b]);
                CHECK(kv_pool_free_blocks(f.pool) == free_before);
            }
            CHECK(memcmp(f.mass_storage, f.original, sizeof f.original) == 0);
            CHECK(windowed_layer_is_intact(&f));
            fixture_free(&f);
        }
}

static void the_same_input_twice_keeps_the_same_slots(void)
{
    for (int i = 0; i < kv_policy_count; i++) {
        int64_t kept[2][TABLES][CAP], counts[2][TABLES];
        for (int run = 0; run < 2; run++) {
            fixture f;
            fixture_init(&f, kv_policies[i], NULL, 24);
            for (int64_t p = 0; p < PROMPT; p++) /* an irregular pattern with ties */
                for (int32_t head = 0; head < HEADS; head++)
                    set_mass(&f, head, p, (float)((p * 7919 + head * 31) % 13));
            run_hook(&f, false);
            append(&f, 1);
            run_hook(&f, true);
            for (int32_t table = 0; table < LAYERS * HEADS; table++)
                counts[run][table] = kv_table_positions(f.seq, table / HEADS, table % HEADS, kept[run][table]);
            fixture_free(&f);
        }
        for (int32_t table = 0; table < LAYERS * HEADS; table++) {
            CHECK_MESSAGE(counts[0][table] == counts[1][table], "%s", kv_policies[i]->name);
            CHECK_MESSAGE(memcmp(kept[0][table], kept[1][table], (size_t)counts[0][table] * sizeof(int64_t)) == 0,
                          "%s", kv_policies[i]->name);
        }
    }
}

/* An irregular mass pattern with ties, the same in every global layer. */
static void set_irregular_masses(fixture *f)
{
    for (int64_t p = 0; p < PROMPT; p++)
        for (int32_t head = 0; head < HEADS; head++)
            set_mass_everywhere(f, head, p, (float)((p * 7919 + head * 31) % 13));
}

static void pyramidkv_layer_budgets_fall_arithmetically_and_sum_to_layers_times_the_budget(void)
{
    /* Layer 0 is windowed; want[i] is the budget of global layer i + 1. */
    static const struct {
        int32_t layers;
        const char *params;
        int64_t budget;
        int64_t want[MAX_LAYERS - 1];
    } cases[] = {
        /* w 8, C 16, c_min 4, c_max 28: c = 28, 20, 12, 4. */
        {5, "observation=8,beta=4", 24, {36, 28, 20, 12}},
        /* c_min 5, c_max 27: x = 27, 19.67, 12.33, 5; one fraction rounds up, the first. */
        {5, "observation=8,beta=3", 24, {35, 28, 20, 13}},
        /* beta 20: c_min floor(16/20) = 0, raised to 1; c_max 31: c = 31, 21, 11, 1. */
        {5, "observation=8", 24, {39, 29, 19, 9}},
        /* C 52, c_max 102 > n - w = 92: c_max 92, c_min 12; x = 92, 65.33, 38.67, 12. */
        {5, "observation=8", 60, {100, 74, 46, 20}},
        /* A budget within the window: every layer keeps its last 20 slots. */
        {5, "observation=32", 20, {20, 20, 20, 20}},
        /* Three global layers: c = 28, 16, 4. */
        {4, "observation=8,beta=4", 24, {36, 24, 12}},
        /* One global layer keeps the budget, as SnapKV. */
        {2, "observation=8,beta=4", 24, {24}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        fixture f;
        fixture_init_layers(&f, cases[c].layers, &kv_policy_pyramidkv, cases[c].params, cases[c].budget);
        set_irregular_masses(&f);
        int64_t free_before = kv_pool_free_blocks(f.pool);
        run_hook(&f, false);
        int64_t sum = 0, freed = 0;
        for (int32_t layer = 1; layer < cases[c].layers; layer++) {
            int64_t want = cases[c].want[layer - 1];
            for (int32_t head = 0; head < HEADS; head++) {
                int64_t got = kv_seq_table(f.seq, layer, head)->slot_count;
                CHECK_MESSAGE(got == want, "case %zu layer %d head %d: %" PRId64 " slots, want %" PRId64, c, layer,
                              head, got, want);
            }
            if (layer > 1)
                CHECK(want <= cases[c].want[layer - 2]); /* never rising */
            sum += want;
            freed += HEADS * (blocks_for(PROMPT) - blocks_for(want));
        }
        CHECK_MESSAGE(sum == (cases[c].layers - 1) * cases[c].budget, "case %zu", c);
        CHECK(windowed_layer_is_intact(&f));
        CHECK(kv_pool_free_blocks(f.pool) == free_before + freed);
        CHECK(pool_is_consistent(f.pool));

        append(&f, 1); /* decode steps keep everything */
        run_hook(&f, true);
        for (int32_t layer = 1; layer < cases[c].layers; layer++)
            CHECK(kv_seq_table(f.seq, layer, 0)->slot_count == cases[c].want[layer - 1] + 1);
        fixture_free(&f);
    }
}

/* Whether layer `layer` of a and b holds the same positions in every head. */
static bool same_layer(const fixture *a, const fixture *b, int32_t layer)
{
    int64_t want[CAP];
    bool same = true;
    for (int32_t head = 0; head < HEADS; head++) {
        int64_t n = kv_table_positions(b->seq, layer, head, want);
        same &= kv_table_holds(a->seq, layer, head, want, n);
    }
    return same;
}

static void pyramidkv_chooses_in_each_layer_what_snapkv_chooses_with_that_layers_budget(void)
{
    const int64_t budgets[] = {35, 28, 20, 13}; /* of observation=8,beta=3, budget 24 */
    fixture pyramid;
    fixture_init_layers(&pyramid, 5, &kv_policy_pyramidkv, "observation=8,kernel=3,beta=3", 24);
    set_irregular_masses(&pyramid);
    set_mass_everywhere(&pyramid, 0, 50, 20); /* a spike max pooling spreads over 49..51 */
    run_hook(&pyramid, false);
    for (int32_t layer = 1; layer < 5; layer++) {
        fixture snap;
        fixture_init_layers(&snap, 5, &kv_policy_snapkv, "observation=8,kernel=3", budgets[layer - 1]);
        set_irregular_masses(&snap);
        set_mass_everywhere(&snap, 0, 50, 20);
        run_hook(&snap, false);
        CHECK_MESSAGE(same_layer(&pyramid, &snap, layer), "layer %d", layer);
        fixture_free(&snap);
    }
    CHECK(windowed_layer_is_intact(&pyramid));
    fixture_free(&pyramid);

    /* beta = 1 gives every layer the same budget: SnapKV's choice everywhere, average pooling too. */
    fixture flat, snap;
    fixture_init_layers(&flat, 5, &kv_policy_pyramidkv, "observation=8,kernel=5,pooling=1,beta=1", 24);
    fixture_init_layers(&snap, 5, &kv_policy_snapkv, "observation=8,kernel=5,pooling=1", 24);
    set_irregular_masses(&flat);
    set_irregular_masses(&snap);
    remember_masses(&flat);
    run_hook(&flat, false);
    run_hook(&snap, false);
    for (int32_t layer = 1; layer < 5; layer++) {
        CHECK_MESSAGE(same_layer(&flat, &snap, layer), "layer %d", layer);
        CHECK(kv_seq_table(flat.seq, layer, 0)->slot_count == 24);
    }
    CHECK(masses_follow_slots(&flat));
    fixture_free(&flat);
    fixture_free(&snap);
}

static void pyramidkv_with_a_budget_of_at_least_the_slot_count_changes_nothing_in_any_layer(void)
{
    const int64_t budgets[] = {PROMPT, PROMPT + 1, 1000};
    for (int b = 0; b < 3; b++) {
        fixture f;
        fixture_init_layers(&f, 5, &kv_policy_pyramidkv, "observation=8", budgets[b]);
        set_irregular_masses(&f);
        int64_t free_before = kv_pool_free_blocks(f.pool);
        run_hook(&f, false);
        for (int32_t layer = 0; layer < 5; layer++)
            for (int32_t head = 0; head < HEADS; head++)
                CHECK(kv_seq_table(f.seq, layer, head)->slot_count == PROMPT);
        CHECK(kv_pool_free_blocks(f.pool) == free_before);
        fixture_free(&f);
    }
}

int main(void)
{
    RUN_CASE(the_registry_lists_each_policy_once_and_full_is_the_identity);
    RUN_CASE(streaming_keeps_the_sinks_and_the_most_recent_slots_and_frees_the_emptied_blocks);
    RUN_CASE(streaming_with_a_budget_below_the_sinks_keeps_a_plain_window);
    RUN_CASE(h2o_keeps_the_recent_half_and_the_heaviest_others_then_evicts_the_lightest_per_step);
    RUN_CASE(h2o_with_recent_ratio_one_keeps_only_the_most_recent);
    RUN_CASE(h2o_without_masses_is_an_error_and_changes_nothing);
    RUN_CASE(snapkv_keeps_the_window_and_the_top_max_pooled_slots);
    RUN_CASE(snapkv_average_pooling_is_clipped_at_the_edges_and_prefers_clusters);
    RUN_CASE(snapkv_with_a_budget_within_the_window_keeps_the_last_slots);
    RUN_CASE(pyramidkv_layer_budgets_fall_arithmetically_and_sum_to_layers_times_the_budget);
    RUN_CASE(pyramidkv_chooses_in_each_layer_what_snapkv_chooses_with_that_layers_budget);
    RUN_CASE(pyramidkv_with_a_budget_of_at_least_the_slot_count_changes_nothing_in_any_layer);
    RUN_CASE(a_budget_of_at_least_the_slot_count_changes_nothing);
    RUN_CASE(the_same_input_twice_keeps_the_same_slots);
    TEST_EXIT();
}
