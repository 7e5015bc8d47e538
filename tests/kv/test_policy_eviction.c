/* tests/kv/test_policy_eviction.c: the eviction policies cake, windowkv and
 * lazy (kv/policy/cake.c, windowkv.c, lazy.c), on hand-computed inputs.
 *
 * Every case runs a policy's hooks on a real pool and sequence of up to 4
 * layers (layer 0 a sliding-window layer, left alone) of 2 KV heads, 16-slot
 * f32 blocks, with the statistics and slot arrays a session would give
 * (masses, squared masses, the policy's per-slot arrays; none for the
 * windowed layer), set by hand so that the kept slots can be worked out on
 * paper. A decode step appends one slot and adds that step's attention to
 * the masses, as the attention kernel does. Checked: CAKE's indicator mean +
 * gamma * variance (from the sums and the recovered pair count) keeps a
 * shifting key over a steady one, its layer budgets follow H^(1/tau1) *
 * V^(1/tau2), respect each layer's slots and sum to layers x budget, and a
 * decode step drops the slot that step attended least; WindowKV keeps whole
 * windows, chosen by the first layer of a group for the whole group, scores
 * a spike and an even window apart under "max" and "average", and never
 * exceeds the budget when the last window is short; LazyEviction records
 * recurrences and intervals, keeps the prompt whole, evicts only every W
 * steps by the paper's score, and moves its records with the slots. For the
 * three: a budget of at least the length changes nothing, a budget within
 * the window keeps the last slots, the same input gives the same slots, and
 * the pool gets back the blocks the compaction emptied. */
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "kv/policy.h"
#include "kv/pool.h"
#include "kv/seq.h"
#include "kv/kv_checks.h"
#include "test_util.h"

enum { MAX_LAYERS = 4, HEADS = 2, TABLES = MAX_LAYERS * HEADS, BLOCK = 16, KEY = 4, VALUE = 4, CAP = 128 };
enum { ARRAYS = KV_POLICY_MAX_SLOT_ARRAYS };

/* ---- fixture ----------------------------------------------------------- */

typedef struct fixture {
    kv_pool *pool;
    kv_seq *seq;
    int32_t layers;
    bool windowed[MAX_LAYERS];
    float mass_storage[TABLES][CAP];
    float squares_storage[TABLES][CAP];
    float array_storage[TABLES * ARRAYS][CAP];
    float *mass[TABLES];
    float *squares[TABLES];
    float *arrays[TABLES * ARRAYS];
    double params[KV_POLICY_MAX_PARAMS];
    kv_policy_view view;
    const kv_policy_ops *ops;
} fixture;

static bool is_global(const fixture *f, int32_t layer)
{
    return !f->windowed[layer];
}

/* Appends `tokens` slots at the next positions to every table and zeroes
 * their statistics and slot arrays, as the session does before a step. */
static void append(fixture *f, int64_t tokens)
{
    strata_error error = {0};
    float keys[CAP * HEADS * KEY], values[CAP * HEADS * VALUE];
    int64_t positions[CAP];
    int64_t first = kv_seq_length(f->seq);
    for (int64_t t = 0; t < tokens; t++)
        positions[t] = first + t;
    for (int64_t i = 0; i < tokens * HEADS * KEY; i++)
        keys[i] = values[i] = (float)i;
    CHECK_MESSAGE(kv_seq_reserve(f->seq, tokens, &error) == STRATA_OK, "%s", error.message);
    for (int32_t layer = 0; layer < f->layers; layer++) {
        for (int32_t head = 0; head < HEADS; head++) {
            int64_t table = layer * HEADS + head, slots = kv_seq_table(f->seq, layer, head)->slot_count;
            for (int64_t j = slots; j < slots + tokens && j < CAP; j++) {
                f->mass_storage[table][j] = f->squares_storage[table][j] = 0;
                for (int k = 0; k < ARRAYS; k++)
                    f->array_storage[table * ARRAYS + k][j] = 0;
            }
        }
        kv_seq_write(f->seq, layer, keys, values, tokens, positions);
    }
    kv_seq_advance(f->seq, tokens);
}

/* Builds a sequence of `prompt` slots in `layers` layers (layer 0 windowed
 * when windowed0) with all statistics zero, and the view for ops with params. */
static void fixture_init(fixture *f, int32_t layers, bool windowed0, const kv_policy_ops *ops, const char *params,
                         int64_t budget, int64_t prompt)
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
    config.budget_bytes = (size_t)(layers * HEADS * (CAP / BLOCK + 2)) * kv_pool_block_bytes(probe);
    kv_pool_destroy(probe);
    CHECK_MESSAGE(kv_pool_create(&config, &f->pool, &error) == STRATA_OK, "%s", error.message);
    CHECK_MESSAGE(kv_seq_create(f->pool, &f->seq, &error) == STRATA_OK, "%s", error.message);
    f->windowed[0] = windowed0;
    for (int32_t table = 0; table < layers * HEADS; table++) {
        bool global = is_global(f, table / HEADS);
        f->mass[table] = global ? f->mass_storage[table] : NULL;
        f->squares[table] = global ? f->squares_storage[table] : NULL;
        for (int k = 0; k < ARRAYS; k++)
            f->arrays[table * ARRAYS + k] = global ? f->array_storage[table * ARRAYS + k] : NULL;
    }
    append(f, prompt);
    f->ops = ops;
    CHECK_MESSAGE(kv_policy_parse_params(ops, params, f->params, &error) == STRATA_OK, "%s", error.message);
    f->view = (kv_policy_view){.seq = f->seq,
                               .layer_count = layers,
                               .kv_head_count = HEADS,
                               .layer_is_windowed = f->windowed,
                               .budget = budget,
                               .params = f->params,
                               .mass = f->mass,
                               .mass_squares = f->squares,
                               .slot_arrays = f->arrays,
                               .slot_array_count = ARRAYS,
                               .context_length = CAP};
}

static void fixture_free(fixture *f)
{
    kv_seq_destroy(f->seq);
    kv_pool_destroy(f->pool);
}

static void run_hook(fixture *f, bool decode)
{
    strata_error error = {0};
    strata_status (*hook)(const kv_policy_view *, strata_error *) =
        decode ? f->ops->on_decode_step : f->ops->on_prefill_end;
    if (hook != NULL)
        CHECK_MESSAGE(hook(&f->view, &error) == STRATA_OK, "%s: %s", f->ops->name, error.message);
}

static float *mass_of(fixture *f, int32_t layer, int32_t head)
{
    return f->mass_storage[layer * HEADS + head];
}

static float *squares_of(fixture *f, int32_t layer, int32_t head)
{
    return f->squares_storage[layer * HEADS + head];
}

static float *array_of(fixture *f, int32_t layer, int32_t head, int k)
{
    return f->array_storage[(layer * HEADS + head) * ARRAYS + k];
}

static int64_t slots_of(const fixture *f, int32_t layer, int32_t head)
{
    return kv_seq_table(f->seq, layer, head)->slot_count;
}

/* Every table of the windowed layer 0 holds every position, in order. */
static bool windowed_layer_is_intact(const fixture *f)
{
    int64_t all[CAP];
    int64_t n = position_range(all, 0, 0, kv_seq_length(f->seq) - 1);
    return kv_table_holds(f->seq, 0, 0, all, n) && kv_table_holds(f->seq, 0, 1, all, n);
}

static int64_t blocks_for(int64_t slots)
{
    return (slots + BLOCK - 1) / BLOCK;
}

/* ---- the registry ------------------------------------------------------ */

static void the_three_policies_are_registered_with_their_statistics_and_defaults(void)
{
    CHECK(kv_policy_find("cake") == &kv_policy_cake);
    CHECK(kv_policy_find("windowkv") == &kv_policy_windowkv);
    CHECK(kv_policy_find("lazy") == &kv_policy_lazy);
    CHECK(kv_policy_cake.statistics == KV_STATISTICS_OBSERVATION && kv_policy_cake.mass_squares);
    CHECK(kv_policy_cake.slot_arrays == 1 && kv_policy_cake.on_prefill_chunk == NULL);
    CHECK(kv_policy_windowkv.statistics == KV_STATISTICS_OBSERVATION && kv_policy_windowkv.on_decode_step == NULL);
    CHECK(kv_policy_lazy.statistics == KV_STATISTICS_ACCUMULATED && kv_policy_lazy.slot_arrays == 4);
    double values[KV_POLICY_MAX_PARAMS];
    CHECK(kv_policy_parse_params(&kv_policy_cake, NULL, values, NULL) == STRATA_OK);
    CHECK(kv_policy_param_value(&kv_policy_cake, values, "observation") == 32); /* the session reads it */
    CHECK(kv_policy_param_value(&kv_policy_cake, values, "kernel") == 5);
    CHECK(kv_policy_param_value(&kv_policy_cake, values, "gamma") == 200);
    CHECK(kv_policy_param_value(&kv_policy_cake, values, "tau1") == 1);
    CHECK(kv_policy_param_value(&kv_policy_cake, values, "tau2") == 1);
    CHECK(kv_policy_parse_params(&kv_policy_windowkv, NULL, values, NULL) == STRATA_OK);
    CHECK(kv_policy_param_value(&kv_policy_windowkv, values, "observation") == 32);
    CHECK(kv_policy_param_value(&kv_policy_windowkv, values, "window") == 8);
    CHECK(kv_policy_param_value(&kv_policy_windowkv, values, "group") == 8);
    CHECK(kv_policy_param_value(&kv_policy_windowkv, values, "strategy") == 0);
    CHECK(kv_policy_parse_params(&kv_policy_lazy, NULL, values, NULL) == STRATA_OK);
    CHECK(kv_policy_param_value(&kv_policy_lazy, values, "window") == 175);
    CHECK(kv_policy_param_value(&kv_policy_lazy, values, "alpha") == 0.0001);
}

/* ---- CAKE -------------------------------------------------------------- */

/* Window attention of N = 4 (query, head) pairs over 36 slots, slots 32..35
 * the window: slot 7 receives 0.25 from each pair (mean 0.25, variance 0);
 * slot 2 receives 0.2 from each (mean 0.2, variance 0); the shifting slot
 * (5 in head 0, 4 in head 1) receives 0.8 from one pair only (mean 0.2,
 * variance (0.64 - 0.8^2/4) / 3 = 0.16). The rest get 0.001 from one pair,
 * and the window what is left of the 4. */
static void set_shifting_and_steady_keys(fixture *f, int32_t layer)
{
    for (int32_t head = 0; head < HEADS; head++) {
        float *mass = mass_of(f, layer, head), *squares = squares_of(f, layer, head);
        int64_t shifting = head == 0 ? 5 : 4;
        double used = 0;
        for (int64_t j = 0; j < 32; j++) {
            mass[j] = 0.001f;
            squares[j] = 0.000001f;
        }
        mass[2] = 0.8f;
        squares[2] = 0.16f;
        mass[shifting] = 0.8f;
        squares[shifting] = 0.64f;
        mass[7] = 1.0f;
        squares[7] = 0.25f;
        for (int64_t j = 0; j < 32; j++)
            used += mass[j];
        for (int64_t j = 32; j < 36; j++) {
            mass[j] = (float)((4.0 - used) / 4.0);
            squares[j] = 0.1f;
        }
    }
}

static void cake_keeps_the_window_and_the_keys_of_highest_mean_plus_gamma_variance(void)
{
    /* One global layer: budget 6 = the 4-slot window + 2 chosen. */
    fixture f;
    fixture_init(&f, 2, true, &kv_policy_cake, "observation=4,kernel=1,gamma=0", 6, 36);
    set_shifting_and_steady_keys(&f, 1);
    int64_t free_before = kv_pool_free_blocks(f.pool);
    run_hook(&f, false);
    /* gamma 0: the means alone; 7 (0.25), then 2 and the shifting slot tie at 0.2: the older, 2. */
    int64_t want[CAP] = {2, 7};
    int64_t n = position_range(want, 2, 32, 35);
    CHECK(kv_table_holds(f.seq, 1, 0, want, n) && kv_table_holds(f.seq, 1, 1, want, n));
    CHECK(windowed_layer_is_intact(&f));
    CHECK(kv_pool_free_blocks(f.pool) == free_before + HEADS * (blocks_for(36) - blocks_for(6)));
    fixture_free(&f);

    /* gamma 1: the shifting slot scores 0.2 + 0.16, above 7 (0.25) and 2 (0.2). */
    fixture_init(&f, 2, true, &kv_policy_cake, "observation=4,kernel=1,gamma=1", 6, 36);
    set_shifting_and_steady_keys(&f, 1);
    run_hook(&f, false);
    int64_t want0[CAP] = {5, 7}, want1[CAP] = {4, 7};
    n = position_range(want0, 2, 32, 35);
    position_range(want1, 2, 32, 35);
    CHECK(kv_table_holds(f.seq, 1, 0, want0, n) && kv_table_holds(f.seq, 1, 1, want1, n));
    /* The statistics and the remembered mass moved with their slots. */
    CHECK(mass_of(&f, 1, 0)[0] == 0.8f && squares_of(&f, 1, 0)[0] == 0.64f && mass_of(&f, 1, 0)[1] == 1.0f);
    for (int64_t i = 0; i < n; i++)
        CHECK(array_of(&f, 1, 0, 0)[i] == mass_of(&f, 1, 0)[i] && array_of(&f, 1, 1, 0)[i] == mass_of(&f, 1, 1)[i]);
    CHECK(pool_is_consistent(f.pool));
    fixture_free(&f);
}

static void cake_pools_the_indicator_over_neighbouring_slots(void)
{
    /* kernel 3, gamma 0, means only (N = 4): slot 10 alone (0.3) against 20
     * and 21 together (0.2 each), the rest 0.00025. Pooled: 10 scores about
     * 0.100, 20 and 21 about 0.133: the pair wins, though 10 is the heaviest. */
    fixture f;
    fixture_init(&f, 2, true, &kv_policy_cake, "observation=4,kernel=3,gamma=0", 6, 36);
    for (int32_t head = 0; head < HEADS; head++) {
        float *mass = mass_of(&f, 1, head);
        double used = 0;
        for (int64_t j = 0; j < 32; j++)
            mass[j] = 0.001f;
        mass[10] = 1.2f;
        mass[20] = mass[21] = 0.8f;
        for (int64_t j = 0; j < 32; j++)
            used += mass[j];
        for (int64_t j = 32; j < 36; j++)
            mass[j] = (float)((4.0 - used) / 4.0);
    }
    run_hook(&f, false);
    int64_t want[CAP] = {20, 21};
    int64_t n = position_range(want, 2, 32, 35);
    CHECK(kv_table_holds(f.seq, 1, 0, want, n) && kv_table_holds(f.seq, 1, 1, want, n));
    fixture_free(&f);
}

/* Layers 1 and 2 of `prompt` slots with the same masses (so the same
 * entropy) and variances in the ratio ratio1 : ratio2: N = 4 pairs, every
 * slot m = 4 / prompt, s = m^2 / 4 + ratio * 0.01 (variance ratio * 0.01 / 3). */
static void set_layer_variances(fixture *f, int64_t prompt, double ratio1, double ratio2)
{
    for (int32_t layer = 1; layer <= 2; layer++)
        for (int32_t head = 0; head < HEADS; head++)
            for (int64_t j = 0; j < prompt; j++) {
                float m = (float)(4.0 / (double)prompt);
                mass_of(f, layer, head)[j] = m;
                squares_of(f, layer, head)[j] = m * m / 4 + (float)((layer == 1 ? ratio1 : ratio2) * 0.01);
            }
}

static void cake_slices_the_total_budget_by_layer_preference(void)
{
    static const struct {
        const char *params;
        int64_t prompt, budget;
        double ratio1, ratio2;
        int64_t want1, want2; /* slots of layers 1 and 2 */
    } cases[] = {
        /* Window 4, T = 2 x 8 = 16; P = H V, V 3 : 1: shares 12 and 4. */
        {"observation=4,kernel=1", 20, 12, 3, 1, 16, 8},
        /* tau2 0.5: P ~ V^2, 9 : 1: shares 14.4 and 1.6, rounded 14 and 1, the last slot to the larger
         * fraction (layer 2, 0.6): 14 and 2. */
        {"observation=4,kernel=1,tau2=0.5", 20, 12, 3, 1, 18, 6},
        /* tau1 has no say when the entropies are equal. */
        {"observation=4,kernel=1,tau1=0.3", 20, 12, 3, 1, 16, 8},
        /* 12 slots, window 4: at most 8 before it. T = 12: layer 1's 9 is capped at 8; layer 2 gets 4. */
        {"observation=4,kernel=1", 12, 10, 3, 1, 12, 8},
        /* Equal preferences: the budget each. */
        {"observation=4,kernel=1", 20, 12, 1, 1, 12, 12},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        fixture f;
        fixture_init(&f, 3, true, &kv_policy_cake, cases[c].params, cases[c].budget, cases[c].prompt);
        set_layer_variances(&f, cases[c].prompt, cases[c].ratio1, cases[c].ratio2);
        run_hook(&f, false);
        for (int32_t head = 0; head < HEADS; head++) {
            CHECK_MESSAGE(slots_of(&f, 1, head) == cases[c].want1, "case %zu: layer 1 holds %" PRId64 ", want %" PRId64,
                          c, slots_of(&f, 1, head), cases[c].want1);
            CHECK_MESSAGE(slots_of(&f, 2, head) == cases[c].want2, "case %zu: layer 2 holds %" PRId64 ", want %" PRId64,
                          c, slots_of(&f, 2, head), cases[c].want2);
        }
        if (cases[c].want1 < cases[c].prompt)
            CHECK(cases[c].want1 + cases[c].want2 == 2 * cases[c].budget); /* the total is respected, exactly */
        /* Equal indicators: the oldest slots before the window, then the window. */
        int64_t want[CAP];
        int64_t n = position_range(want, position_range(want, 0, 0, cases[c].want2 - 5), cases[c].prompt - 4,
                               cases[c].prompt - 1);
        CHECK(kv_table_holds(f.seq, 2, 0, want, n));
        CHECK(windowed_layer_is_intact(&f));
        CHECK(pool_is_consistent(f.pool));
        fixture_free(&f);
    }
}

static void cake_decode_steps_drop_the_slot_the_step_attended_least(void)
{
    fixture f;
    fixture_init(&f, 2, true, &kv_policy_cake, "observation=4,kernel=1,gamma=0", 6, 36);
    set_shifting_and_steady_keys(&f, 1);
    run_hook(&f, false); /* keeps 2, 7, 32..35 in both heads */
    /* The step's query (position 36, slot 6) puts 0.5 on position 2, 0.1 on
     * 7, 0.3 on 32 (the slots before the window), the rest on the window. */
    append(&f, 1);
    for (int32_t head = 0; head < HEADS; head++) {
        float *mass = mass_of(&f, 1, head);
        mass[0] += 0.5f;
        mass[1] += 0.1f;
        mass[2] += 0.3f;
        for (int64_t j = 3; j < 7; j++)
            mass[j] += 0.025f;
    }
    run_hook(&f, true);
    int64_t want[CAP] = {2};
    int64_t n = position_range(want, 1, 32, 36);
    CHECK(kv_table_holds(f.seq, 1, 0, want, n) && kv_table_holds(f.seq, 1, 1, want, n));
    CHECK(windowed_layer_is_intact(&f));
    fixture_free(&f);
}

static void cake_with_a_budget_within_the_window_keeps_the_last_slots(void)
{
    fixture f;
    fixture_init(&f, 3, true, &kv_policy_cake, "observation=8", 5, 36);
    set_layer_variances(&f, 36, 3, 1);
    run_hook(&f, false);
    int64_t want[CAP];
    int64_t n = position_range(want, 0, 31, 35);
    for (int32_t layer = 1; layer <= 2; layer++)
        CHECK(kv_table_holds(f.seq, layer, 0, want, n) && kv_table_holds(f.seq, layer, 1, want, n));
    append(&f, 1); /* a decode step: each table keeps its last 5 */
    run_hook(&f, true);
    n = position_range(want, 0, 32, 36);
    CHECK(kv_table_holds(f.seq, 1, 0, want, n) && kv_table_holds(f.seq, 2, 1, want, n));
    fixture_free(&f);
}

/* ---- WindowKV ---------------------------------------------------------- */

/* A small mass, distinct per position, far below the hand-set windows. */
static float small(int64_t position)
{
    return 0.0001f * (float)position;
}

static void windowkv_keeps_whole_windows_chosen_by_the_first_layer_of_the_group(void)
{
    /* 40 slots, window 8 (32..39), budget 16: room for two 4-slot windows of the 8 in [0, 32). */
    for (int grouped = 0; grouped < 2; grouped++) {
        fixture f;
        fixture_init(&f, 3, true, &kv_policy_windowkv,
                     grouped ? "observation=8,window=4,group=2" : "observation=8,window=4,group=1", 16, 40);
        for (int32_t layer = 1; layer <= 2; layer++)
            for (int32_t head = 0; head < HEADS; head++)
                for (int64_t p = 0; p < 40; p++)
                    mass_of(&f, layer, head)[p] = small(p);
        /* Layer 1: window 6 (24..27) in both heads scores 2, window 3 (12..15) in head 0 scores 1,
         * window 1 (4..7) in head 1 scores 0.5. */
        for (int64_t p = 24; p < 28; p++)
            mass_of(&f, 1, 0)[p] = mass_of(&f, 1, 1)[p] = 1.0f;
        for (int64_t p = 12; p < 16; p++)
            mass_of(&f, 1, 0)[p] = 1.0f;
        for (int64_t p = 4; p < 8; p++)
            mass_of(&f, 1, 1)[p] = 0.5f;
        /* Layer 2 on its own would take windows 0 (0..3) and 5 (20..23). */
        for (int64_t p = 0; p < 4; p++)
            mass_of(&f, 2, 0)[p] = mass_of(&f, 2, 1)[p] = 1.0f;
        for (int64_t p = 20; p < 24; p++)
            mass_of(&f, 2, 0)[p] = 0.7f;
        int64_t free_before = kv_pool_free_blocks(f.pool);
        run_hook(&f, false);
        int64_t first[CAP], second[CAP];
        int64_t n = position_range(first, position_range(first, position_range(first, 0, 12, 15), 24, 27), 32, 39);
        CHECK(kv_table_holds(f.seq, 1, 0, first, n) && kv_table_holds(f.seq, 1, 1, first, n));
        if (grouped) { /* the group shares layer 1's choice */
            CHECK(kv_table_holds(f.seq, 2, 0, first, n) && kv_table_holds(f.seq, 2, 1, first, n));
        } else {
            position_range(second, position_range(second, position_range(second, 0, 0, 3), 20, 23), 32, 39);
            CHECK(kv_table_holds(f.seq, 2, 0, second, n) && kv_table_holds(f.seq, 2, 1, second, n));
        }
        CHECK(windowed_layer_is_intact(&f));
        CHECK(kv_pool_free_blocks(f.pool) == free_before + 2 * HEADS * (blocks_for(40) - blocks_for(16)));
        CHECK(pool_is_consistent(f.pool));
        append(&f, 1); /* decode steps keep everything */
        run_hook(&f, true);
        CHECK(slots_of(&f, 1, 0) == 17 && slots_of(&f, 2, 1) == 17);
        fixture_free(&f);
    }
}

static void windowkv_max_and_average_strategies_score_a_spike_and_an_even_window_apart(void)
{
    /* 24 slots, window 8, budget 12: one 4-slot window of the four in [0, 16).
     * Window 1 (4..7) is one spike of 1: max (top 2) 0.5, average 0.25.
     * Window 2 (8..11) is 0.3 everywhere: max 0.3, average 0.3. */
    for (int strategy = 0; strategy < 2; strategy++) {
        fixture f;
        fixture_init(&f, 2, true, &kv_policy_windowkv,
                     strategy == 0 ? "observation=8,window=4,strategy=0" : "observation=8,window=4,strategy=1", 12,
                     24);
        for (int32_t head = 0; head < HEADS; head++) {
            mass_of(&f, 1, head)[4] = 1.0f;
            for (int64_t p = 8; p < 12; p++)
                mass_of(&f, 1, head)[p] = 0.3f;
        }
        run_hook(&f, false);
        int64_t want[CAP];
        int64_t n = position_range(want, position_range(want, 0, strategy == 0 ? 4 : 8, strategy == 0 ? 7 : 11), 16, 23);
        CHECK_MESSAGE(kv_table_holds(f.seq, 1, 0, want, n) && kv_table_holds(f.seq, 1, 1, want, n), "strategy %d", strategy);
        fixture_free(&f);
    }
}

static void windowkv_never_exceeds_the_budget_when_the_last_window_is_short(void)
{
    /* 38 slots, window 8 (30..37): windows of 4 over [0, 30), the last one
     * (28, 29) of 2. Budget 14: room for 6. By score: window 2 (8..11), then
     * window 4 (16..19) does not fit the 2 left, then the short window fits. */
    fixture f;
    fixture_init(&f, 2, true, &kv_policy_windowkv, "observation=8,window=4,strategy=1", 14, 38);
    for (int32_t head = 0; head < HEADS; head++) {
        float *mass = mass_of(&f, 1, head);
        for (int64_t p = 0; p < 38; p++)
            mass[p] = small(p);
        for (int64_t p = 8; p < 12; p++)
            mass[p] = 1.0f;
        for (int64_t p = 16; p < 20; p++)
            mass[p] = 0.9f;
        mass[28] = mass[29] = 0.8f;
    }
    run_hook(&f, false);
    int64_t want[CAP];
    int64_t n = position_range(want, position_range(want, position_range(want, 0, 8, 11), 28, 29), 30, 37);
    CHECK(n == 14);
    CHECK(kv_table_holds(f.seq, 1, 0, want, n) && kv_table_holds(f.seq, 1, 1, want, n));
    fixture_free(&f);
}

static void windowkv_with_a_budget_within_the_window_keeps_the_last_slots(void)
{
    fixture f;
    fixture_init(&f, 3, true, &kv_policy_windowkv, "observation=8,window=4", 6, 40);
    mass_of(&f, 1, 0)[3] = 9;
    run_hook(&f, false);
    int64_t want[CAP];
    int64_t n = position_range(want, 0, 34, 39);
    for (int32_t layer = 1; layer <= 2; layer++)
        CHECK(kv_table_holds(f.seq, layer, 0, want, n) && kv_table_holds(f.seq, layer, 1, want, n));
    fixture_free(&f);
}

/* ---- LazyEviction ------------------------------------------------------ */

enum { LAZY_LAST = 1, LAZY_INTERVAL = 2, LAZY_SETTLED = 3 };

/* A decode step: one slot, and the step's attention added to layer 1's
 * masses, both heads alike: `heavy` on the slots at the given table indices,
 * the rest of the group's total (2 query heads) spread evenly on the others. */
static void lazy_step(fixture *f, const int64_t *heavy_slots, int heavy_count, float heavy)
{
    append(f, 1);
    for (int32_t head = 0; head < HEADS; head++) {
        float *mass = mass_of(f, 1, head);
        int64_t slots = slots_of(f, 1, head);
        float rest = (2.0f - heavy * (float)heavy_count) / (float)(slots - heavy_count);
        for (int64_t j = 0; j < slots; j++) {
            bool is_heavy = false;
            for (int i = 0; i < heavy_count; i++)
                is_heavy |= heavy_slots[i] == j;
            mass[j] += is_heavy ? heavy : rest;
        }
    }
    run_hook(f, true);
}

static void lazy_tracks_recurrences_and_evicts_every_window_steps_by_the_papers_score(void)
{
    /* Prompt 0..9, W = 2, alpha 0.1 (of a group mean; 0.6 of 2 heads is 0.3); budgets 6 and 4. */
    for (int64_t budget = 6; budget >= 4; budget -= 2) {
        fixture f;
        fixture_init(&f, 2, true, &kv_policy_lazy, "window=2,alpha=0.1", budget, 10);
        for (int32_t head = 0; head < HEADS; head++)
            for (int64_t p = 0; p < 10; p++)
                mass_of(&f, 1, head)[p] = 0.5f + small(p); /* the prompt's own attention: not a recurrence */
        run_hook(&f, false);
        int64_t want[CAP];
        int64_t n = position_range(want, 0, 0, 9);
        CHECK(kv_table_holds(f.seq, 1, 0, want, n)); /* the prompt stays whole */
        CHECK(array_of(&f, 1, 0, LAZY_LAST)[4] == 10 && array_of(&f, 1, 0, LAZY_SETTLED)[4] == 1);

        /* Step 1 (position 10): slots 2, 5 and the new 10 recur; last 9 -> 10, interval 1. No check yet. */
        const int64_t step1[] = {2, 5, 10};
        lazy_step(&f, step1, 3, 0.6f);
        n = position_range(want, 0, 0, 10);
        CHECK(kv_table_holds(f.seq, 1, 0, want, n));
        CHECK(array_of(&f, 1, 0, LAZY_INTERVAL)[5] == 1 && array_of(&f, 1, 0, LAZY_LAST)[5] == 11);
        CHECK(array_of(&f, 1, 0, LAZY_INTERVAL)[4] == 0 && array_of(&f, 1, 0, LAZY_LAST)[4] == 10);

        /* Step 2 (position 11): 2 (interval 1), 7 (interval 11 - 9 = 2) and the new 11 recur. The
         * second step runs the check: keep 10 and 11 (the newest W) and the best of 0..9 at t = 11:
         *   2: 2/(1+e^1) + 2/(1+e^0) = 1.538 (gap 0, MRI 1);  5: 2/(1+e^2) + 1 = 1.238 (gap 1, MRI 1);
         *   7: 2/(1+e^1) + 2/(1+e^1) = 1.076 (gap 0, MRI 2);  the rest never recurred: 0, oldest first.
         * Budget 6 keeps 2, 5, 7 and 0; budget 4 keeps 2 and 5: the short interval's bonus puts 5,
         * last seen a step ago, before 7, seen now. */
        const int64_t step2[] = {2, 7, 11};
        lazy_step(&f, step2, 3, 0.6f);
        const int64_t kept6[] = {0, 2, 5, 7, 10, 11}, kept4[] = {2, 5, 10, 11};
        const int64_t *kept = budget == 6 ? kept6 : kept4;
        CHECK(kv_table_holds(f.seq, 1, 0, kept, budget) && kv_table_holds(f.seq, 1, 1, kept, budget));
        /* The records moved with their slots: interval and last recurrence by position. */
        for (int64_t i = 0; i < budget; i++) {
            int64_t p = kept[i];
            float interval = p == 7 ? 2 : p == 0 ? 0 : 1;
            float last = p == 0 ? 9 : p == 5 || p == 10 ? 10 : 11;
            CHECK_MESSAGE(array_of(&f, 1, 1, LAZY_INTERVAL)[i] == interval &&
                              array_of(&f, 1, 1, LAZY_LAST)[i] == last + 1,
                          "position %" PRId64 ": interval %g last %g", p, array_of(&f, 1, 1, LAZY_INTERVAL)[i],
                          array_of(&f, 1, 1, LAZY_LAST)[i] - 1);
            CHECK(array_of(&f, 1, 1, LAZY_SETTLED)[i] == 1);
            CHECK(array_of(&f, 1, 1, 0)[i] == mass_of(&f, 1, 1)[i]); /* the remembered mass too */
        }
        CHECK(windowed_layer_is_intact(&f));

        /* Steps 3 and 4: one slot over after step 3 (no check), back to the budget at step 4,
         * the newest two (12, 13) kept. */
        const int64_t none[] = {0};
        lazy_step(&f, none, 0, 0);
        CHECK(slots_of(&f, 1, 0) == budget + 1);
        lazy_step(&f, none, 0, 0);
        CHECK(slots_of(&f, 1, 0) == budget && slots_of(&f, 1, 1) == budget);
        int64_t positions[CAP];
        kv_table_positions(f.seq, 1, 0, positions);
        CHECK(positions[budget - 2] == 12 && positions[budget - 1] == 13);
        CHECK(pool_is_consistent(f.pool));
        fixture_free(&f);
    }
}

static void lazy_with_a_window_of_at_least_the_budget_keeps_the_newest_slots(void)
{
    fixture f;
    fixture_init(&f, 2, true, &kv_policy_lazy, "window=4", 3, 40);
    run_hook(&f, false);
    CHECK(slots_of(&f, 1, 0) == 40);
    int64_t free_before = kv_pool_free_blocks(f.pool);
    const int64_t none[] = {0};
    for (int step = 0; step < 4; step++)
        lazy_step(&f, none, 0, 0);
    int64_t want[CAP];
    int64_t n = position_range(want, 0, 41, 43);
    CHECK(kv_table_holds(f.seq, 1, 0, want, n) && kv_table_holds(f.seq, 1, 1, want, n));
    CHECK(kv_pool_free_blocks(f.pool) == free_before + HEADS * (blocks_for(44) - blocks_for(3)));
    CHECK(windowed_layer_is_intact(&f));
    fixture_free(&f);
}

/* ---- all three --------------------------------------------------------- */

static const kv_policy_ops *const policies[] = {&kv_policy_cake, &kv_policy_windowkv, &kv_policy_lazy};
static const char *const policy_params[] = {"observation=8", "observation=8,window=4", "window=2"};
enum { POLICIES = 3 };

/* Plausible statistics: per table, masses of 4 pairs spread irregularly, with squares. */
static void set_irregular_statistics(fixture *f, int64_t slots)
{
    for (int32_t layer = 0; layer < f->layers; layer++)
        for (int32_t head = 0; is_global(f, layer) && head < HEADS; head++) {
            double total = 0;
            for (int64_t p = 0; p < slots; p++)
                total += (double)((p * 7919 + head * 31 + layer * 17) % 13 + 1);
            for (int64_t p = 0; p < slots; p++) {
                float m = (float)(4.0 * ((p * 7919 + head * 31 + layer * 17) % 13 + 1) / total);
                mass_of(f, layer, head)[p] = m;
                squares_of(f, layer, head)[p] = m * m * (float)((p % 3) + 1) / 4;
            }
        }
}

static void a_budget_of_at_least_the_length_changes_nothing(void)
{
    const int64_t budgets[] = {40, 41, 1000};
    for (int i = 0; i < POLICIES; i++)
        for (int b = 0; b < 3; b++) {
            fixture f;
            fixture_init(&f, 4, true, policies[i], policy_params[i], budgets[b], 40);
            set_irregular_statistics(&f, 40);
            int64_t free_before = kv_pool_free_blocks(f.pool);
            run_hook(&f, false);
            int64_t all[CAP];
            int64_t n = position_range(all, 0, 0, 39);
            for (int32_t layer = 1; layer < 4; layer++)
                CHECK_MESSAGE(kv_table_holds(f.seq, layer, 0, all, n) && kv_table_holds(f.seq, layer, 1, all, n), "%s, budget %" PRId64,
                              policies[i]->name, budgets[b]);
            if (budgets[b] > 40) {
                for (int step = 0; step < 4; step++) { /* within budget 41 only the first; no eviction either way */
                    if (budgets[b] == 41 && step > 0)
                        break;
                    append(&f, 1);
                    run_hook(&f, true);
                }
                n = position_range(all, 0, 0, kv_seq_length(f.seq) - 1);
                for (int32_t layer = 1; layer < 4; layer++)
                    CHECK_MESSAGE(kv_table_holds(f.seq, layer, 0, all, n) && kv_table_holds(f.seq, layer, 1, all, n),
                                  "%s, budget %" PRId64 " after decoding", policies[i]->name, budgets[b]);
            }
            CHECK(kv_pool_free_blocks(f.pool) <= free_before);
            CHECK(windowed_layer_is_intact(&f));
            fixture_free(&f);
        }
}

static void a_budget_of_nothing_or_one_empties_or_keeps_one(void)
{
    for (int i = 0; i < 2; i++) /* cake and windowkv cut at the prompt's end */
        for (int64_t budget = 0; budget <= 1; budget++) {
            fixture f;
            fixture_init(&f, 3, true, policies[i], policy_params[i], budget, 40);
            set_irregular_statistics(&f, 40);
            run_hook(&f, false);
            int64_t want[CAP] = {39};
            for (int32_t layer = 1; layer <= 2; layer++)
                CHECK_MESSAGE(kv_table_holds(f.seq, layer, 0, want, budget) && kv_table_holds(f.seq, layer, 1, want, budget),
                              "%s, budget %" PRId64, policies[i]->name, budget);
            CHECK(pool_is_consistent(f.pool));
            fixture_free(&f);
        }
}

static void the_same_input_twice_keeps_the_same_slots(void)
{
    for (int i = 0; i < POLICIES; i++) {
        int64_t kept[2][TABLES][CAP], counts[2][TABLES];
        for (int run = 0; run < 2; run++) {
            fixture f;
            fixture_init(&f, 4, true, policies[i], policy_params[i], 12, 40);
            set_irregular_statistics(&f, 40);
            run_hook(&f, false);
            for (int step = 0; step < 3; step++) {
                append(&f, 1);
                run_hook(&f, true);
            }
            for (int32_t table = 0; table < 4 * HEADS; table++)
                counts[run][table] = kv_table_positions(f.seq, table / HEADS, table % HEADS, kept[run][table]);
            fixture_free(&f);
        }
        for (int32_t table = 0; table < 4 * HEADS; table++) {
            CHECK_MESSAGE(counts[0][table] == counts[1][table], "%s", policies[i]->name);
            CHECK_MESSAGE(memcmp(kept[0][table], kept[1][table], (size_t)counts[0][table] * sizeof(int64_t)) == 0,
                          "%s", policies[i]->name);
        }
    }
}

static void missing_statistics_are_an_error_that_changes_nothing(void)
{
    for (int i = 0; i < POLICIES; i++) {
        fixture f;
        fixture_init(&f, 2, true, policies[i], policy_params[i], 12, 40);
        f.view.mass = NULL;
        f.view.slot_arrays = NULL;
        strata_error error = {0};
        strata_status (*hook)(const kv_policy_view *, strata_error *) =
            policies[i] == &kv_policy_lazy ? policies[i]->on_decode_step : policies[i]->on_prefill_end;
        CHECK_MESSAGE(hook(&f.view, &error) == STRATA_E_INVALID_ARGUMENT, "%s", policies[i]->name);
        CHECK_MESSAGE(strstr(error.message, policies[i]->name) != NULL, "%s: %s", policies[i]->name, error.message);
        CHECK(slots_of(&f, 1, 0) == 40 && slots_of(&f, 1, 1) == 40);
        fixture_free(&f);
    }
}

int main(void)
{
    RUN_CASE(the_three_policies_are_registered_with_their_statistics_and_defaults);
    RUN_CASE(cake_keeps_the_window_and_the_keys_of_highest_mean_plus_gamma_variance);
    RUN_CASE(cake_pools_the_indicator_over_neighbouring_slots);
    RUN_CASE(cake_slices_the_total_budget_by_layer_preference);
    RUN_CASE(cake_decode_steps_drop_the_slot_the_step_attended_least);
    RUN_CASE(cake_with_a_budget_within_the_window_keeps_the_last_slots);
    RUN_CASE(windowkv_keeps_whole_windows_chosen_by_the_first_layer_of_the_group);
    RUN_CASE(windowkv_max_and_average_strategies_score_a_spike_and_an_even_window_apart);
    RUN_CASE(windowkv_never_exceeds_the_budget_when_the_last_window_is_short);
    RUN_CASE(windowkv_with_a_budget_within_the_window_keeps_the_last_slots);
    RUN_CASE(lazy_tracks_recurrences_and_evicts_every_window_steps_by_the_papers_score);
    RUN_CASE(lazy_with_a_window_of_at_least_the_budget_keeps_the_newest_slots);
    RUN_CASE(a_budget_of_at_least_the_length_changes_nothing);
    RUN_CASE(a_budget_of_nothing_or_one_empties_or_keeps_one);
    RUN_CASE(the_same_input_twice_keeps_the_same_slots);
    RUN_CASE(missing_statistics_are_an_error_that_changes_nothing);
    TEST_EXIT();
}
