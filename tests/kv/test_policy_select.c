/* tests/kv/test_policy_select.c: the policies that do more than choose slots
 * to keep: merge (kv/policy/merge.c) rewrites kept slots, quest
 * (kv/policy/quest.c) keeps everything and chooses blocks to read; and
 * kv_seq_overwrite_slot, through which merge writes.
 *
 * Every case runs on a real pool with 4-slot f32 blocks, 2-float keys and
 * values, and hand-made keys whose answer is worked out in the comments:
 * which evicted slot merges into which kept one, the mass-weighted key and
 * value, the summed masses, the threshold; a fork sharing the blocks keeps
 * its contents (copy-on-write, also when the compaction itself does not
 * copy the block); Quest's per-block bounds score blocks as the paper's
 * formula says, the maximum over a GQA group's query heads decides, the
 * last block is always read, a budget of at least the length reads all,
 * decode steps refresh the last block's bounds, and a fork's copy of the
 * state chooses alike. */
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

enum { LAYERS = 2, BLOCK = 4, DIM = 2, CAP = 32 };

typedef struct fixture {
    kv_pool *pool;
    kv_seq *seq;
    bool windowed[LAYERS];
    float mass_storage[LAYERS][CAP];
    float *mass[LAYERS];
    double params[KV_POLICY_MAX_PARAMS];
    kv_policy_view view;
    const kv_policy_ops *ops;
} fixture;

/* A pool of `blocks` blocks in all for 2 layers (layer 0 windowed) of one KV head. */
static void fixture_init(fixture *f, const kv_policy_ops *ops, const char *params, int64_t budget, int64_t blocks)
{
    memset(f, 0, sizeof *f);
    kv_pool_config config = {.block_tokens = BLOCK,
                             .layer_count = LAYERS,
                             .kv_head_count = 1,
                             .key_length = DIM,
                             .value_length = DIM,
                             .storage = KV_STORAGE_F32,
                             .budget_bytes = 1 << 20};
    strata_error error = {0};
    kv_pool *probe = NULL;
    CHECK_MESSAGE(kv_pool_create(&config, &probe, &error) == STRATA_OK, "%s", error.message);
    config.budget_bytes = (uint64_t)blocks * kv_pool_block_bytes(probe);
    kv_pool_destroy(probe);
    CHECK_MESSAGE(kv_pool_create(&config, &f->pool, &error) == STRATA_OK, "%s", error.message);
    CHECK_MESSAGE(kv_seq_create(f->pool, &f->seq, &error) == STRATA_OK, "%s", error.message);
    f->windowed[0] = true;
    f->mass[1] = f->mass_storage[1];
    f->ops = ops;
    CHECK_MESSAGE(kv_policy_parse_params(ops, params, f->params, &error) == STRATA_OK, "%s", error.message);
    f->view = (kv_policy_view){.seq = f->seq,
                               .layer_count = LAYERS,
                               .kv_head_count = 1,
                               .layer_is_windowed = f->windowed,
                               .budget = budget,
                               .params = f->params,
                               .mass = f->mass,
                               .context_length = CAP};
}

static void fixture_free(fixture *f)
{
    if (f->ops->destroy_state != NULL)
        f->ops->destroy_state(f->view.state);
    kv_seq_destroy(f->seq);
    kv_pool_destroy(f->pool);
}

/* Appends n slots with the given keys and values ([n][DIM] each) to both layers. */
static void append(fixture *f, const float *keys, const float *values, int64_t n)
{
    strata_error error = {0};
    int64_t positions[CAP];
    for (int64_t t = 0; t < n; t++)
        positions[t] = kv_seq_length(f->seq) + t;
    CHECK_MESSAGE(kv_seq_reserve(f->seq, n, &error) == STRATA_OK, "%s", error.message);
    for (int32_t layer = 0; layer < LAYERS; layer++)
        kv_seq_write(f->seq, layer, keys, values, n, positions);
    kv_seq_advance(f->seq, n);
}

/* Reads slot `slot` of a sequence's table of `layer`: its key, value and position. */
static void read_slot(const kv_seq *seq, int32_t layer, int64_t slot, float *key, float *value, int32_t *position)
{
    kv_pool *pool = kv_seq_pool(seq);
    kv_block_id block = kv_seq_table(seq, layer, 0)->blocks[slot / BLOCK];
    kv_block_read_key(pool, block, (int32_t)(slot % BLOCK), key);
    kv_block_read_value(pool, block, (int32_t)(slot % BLOCK), value);
    *position = kv_block_positions_const(pool, block)[slot % BLOCK];
}

static bool near(float a, double b)
{
    return fabs((double)a - b) <= 1e-5 * (1.0 + fabs(b));
}

/* Whether a table holds exactly these slots: positions, keys and values ([count][DIM]). */
static bool table_is(const kv_seq *seq, int32_t layer, const int32_t *positions, const double *keys,
                     const double *values, int64_t count)
{
    bool same = kv_seq_table(seq, layer, 0)->slot_count == count;
    for (int64_t i = 0; same && i < count; i++) {
        float key[DIM], value[DIM];
        int32_t position;
        read_slot(seq, layer, i, key, value, &position);
        same = position == positions[i];
        for (int c = 0; c < DIM; c++)
            same = same && near(key[c], keys[i * DIM + c]) && near(value[c], values[i * DIM + c]);
        if (!same)
            fprintf(stderr, "  layer %d slot %" PRId64 ": position %d key (%g, %g) value (%g, %g)\n", layer, i,
                    position, key[0], key[1], value[0], value[1]);
    }
    return same;
}

/* ---- merge ------------------------------------------------------------- */

/* Eight slots; budget 5 with recent_ratio 0.4: the recent 6, 7 and the three
 * heaviest of 0..5 (0, 3, 5) stay; 1, 2 and 4 are evicted.
 *   slot  key        value   mass
 *   0     (1, 0)     (1, 1)  5
 *   1     (0, 2)     (2, 0)  0.1   cos with 3 = 1: merges into 3
 *   2     (2, 0.2)   (3, 3)  1     cos with 0 = 0.995 (with 5: 0.774): merges into 0
 *   3     (0, 1)     (4, 4)  4
 *   4     (-1, 0)    (5, 5)  0.3   best cos 0 (with 3 and 7): below 0.5, dropped
 *   5     (1, 1)     (6, 6)  3
 *   6     (0.5,-0.5) (7, 7)  0
 *   7     (0, -1)    (8, 8)  0 */
static const float merge_keys[] = {1, 0, 0, 2, 2, 0.2f, 0, 1, -1, 0, 1, 1, 0.5f, -0.5f, 0, -1};
static const float merge_values[] = {1, 1, 2, 0, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8};
static const float merge_masses[] = {5, 0.1f, 1, 4, 0.3f, 3, 0, 0};

static void merge_fixture(fixture *f, const char *params)
{
    fixture_init(f, &kv_policy_merge, params, 5, 16);
    append(f, merge_keys, merge_values, 8);
    memcpy(f->mass[1], merge_masses, sizeof merge_masses);
}

static void merge_folds_evicted_slots_into_their_most_similar_kept_slots_weighted_by_mass(void)
{
    fixture f;
    merge_fixture(&f, "recent_ratio=0.4,threshold=0.5");
    strata_error error = {0};
    CHECK_MESSAGE(kv_policy_merge.on_prefill_end(&f.view, &error) == STRATA_OK, "%s", error.message);
    /* Slot 0 takes 2: (5 (1,0) + 1 (2,0.2)) / 6 and (5 (1,1) + 1 (3,3)) / 6, mass 6.
     * Slot 3 takes 1: (4 (0,1) + 0.1 (0,2)) / 4.1 and (4 (4,4) + 0.1 (2,0)) / 4.1, mass 4.1. */
    const int32_t positions[] = {0, 3, 5, 6, 7};
    const double keys[] = {7.0 / 6, 0.2 / 6, 0, 4.2 / 4.1, 1, 1, 0.5, -0.5, 0, -1};
    const double values[] = {8.0 / 6, 8.0 / 6, 16.2 / 4.1, 16.0 / 4.1, 6, 6, 7, 7, 8, 8};
    CHECK(table_is(f.seq, 1, positions, keys, values, 5));
    const double masses[] = {6, 4.1, 3, 0, 0};
    for (int i = 0; i < 5; i++)
        CHECK_MESSAGE(near(f.mass[1][i], masses[i]), "slot %d has mass %g, want %g", i, f.mass[1][i], masses[i]);
    /* The windowed layer is left alone. */
    const int32_t all[] = {0, 1, 2, 3, 4, 5, 6, 7};
    double original_keys[16], original_values[16];
    for (int i = 0; i < 16; i++) {
        original_keys[i] = merge_keys[i];
        original_values[i] = merge_values[i];
    }
    CHECK(table_is(f.seq, 0, all, original_keys, original_values, 8));
    CHECK(pool_is_consistent(f.pool));
    fixture_free(&f);
}

static void a_threshold_of_one_merges_only_parallel_keys_and_minus_one_merges_everything(void)
{
    fixture f;
    merge_fixture(&f, "recent_ratio=0.4,threshold=1");
    strata_error error = {0};
    CHECK(kv_policy_merge.on_prefill_end(&f.view, &error) == STRATA_OK);
    const int32_t positions[] = {0, 3, 5, 6, 7};
    const double keys[] = {1, 0, 0, 4.2 / 4.1, 1, 1, 0.5, -0.5, 0, -1}; /* only slot 1 (cos exactly 1) merges */
    const double values[] = {1, 1, 16.2 / 4.1, 16.0 / 4.1, 6, 6, 7, 7, 8, 8};
    CHECK(table_is(f.seq, 1, positions, keys, values, 5));
    CHECK(near(f.mass[1][0], 5) && near(f.mass[1][1], 4.1));
    fixture_free(&f);

    /* threshold -1: slot 4 merges too, into slot 3 (cos 0, tied with slot 7: the older kept slot wins):
     * (4 (0,1) + 0.1 (0,2) + 0.3 (-1,0)) / 4.4 and (4 (4,4) + 0.1 (2,0) + 0.3 (5,5)) / 4.4. */
    merge_fixture(&f, "recent_ratio=0.4,threshold=-1");
    CHECK(kv_policy_merge.on_prefill_end(&f.view, &error) == STRATA_OK);
    const double all_keys[] = {7.0 / 6, 0.2 / 6, -0.3 / 4.4, 4.2 / 4.4, 1, 1, 0.5, -0.5, 0, -1};
    const double all_values[] = {8.0 / 6, 8.0 / 6, 17.7 / 4.4, 17.5 / 4.4, 6, 6, 7, 7, 8, 8};
    CHECK(table_is(f.seq, 1, positions, all_keys, all_values, 5));
    CHECK(near(f.mass[1][1], 4.4));
    fixture_free(&f);
}

static void zero_masses_merge_as_a_plain_mean(void)
{
    fixture f;
    merge_fixture(&f, "recent_ratio=0.4,threshold=0.5");
    /* Slots 5 and 3 outweigh the others, then slot 0 (ties: the older): the same keep list.
     * Slot 0's merge set {0, 2} has mass 0: the plain mean, ((1,0) + (2,0.2)) / 2 and ((1,1) + (3,3)) / 2. */
    const float masses[] = {0, 0, 0, 2e-30f, 0, 3e-30f, 0, 0};
    memcpy(f.mass[1], masses, sizeof masses);
    strata_error error = {0};
    CHECK(kv_policy_merge.on_prefill_end(&f.view, &error) == STRATA_OK);
    const int32_t positions[] = {0, 3, 5, 6, 7};
    const double keys[] = {1.5, 0.1, 0, 1, 1, 1, 0.5, -0.5, 0, -1}; /* slot 1 merges into 3 with weight 0 */
    const double values[] = {2, 2, 4, 4, 6, 6, 7, 7, 8, 8};
    CHECK(table_is(f.seq, 1, positions, keys, values, 5));
    CHECK(f.mass[1][0] == 0 && f.mass[1][1] == 2e-30f);
    fixture_free(&f);
}

static void merging_in_a_fork_leaves_the_sequence_it_shares_blocks_with_unchanged(void)
{
    /* Case 1, the first fixture's keep list: compaction moves slots into block 0 and copies it itself. */
    fixture f;
    merge_fixture(&f, "recent_ratio=0.4,threshold=0.5");
    strata_error error = {0};
    kv_seq *parent = f.seq, *child = NULL;
    CHECK(kv_seq_fork(parent, &child, &error) == STRATA_OK);
    f.view.seq = child;
    CHECK_MESSAGE(kv_policy_merge.on_prefill_end(&f.view, &error) == STRATA_OK, "%s", error.message);
    const int32_t all[] = {0, 1, 2, 3, 4, 5, 6, 7};
    double keys[16], values[16];
    for (int i = 0; i < 16; i++) {
        keys[i] = merge_keys[i];
        values[i] = merge_values[i];
    }
    CHECK(table_is(parent, 1, all, keys, values, 8));
    CHECK(kv_seq_table(child, 1, 0)->slot_count == 5);
    kv_seq_destroy(child);
    CHECK(pool_is_consistent(f.pool));
    fixture_free(&f);

    /* Case 2: budget 5, recent_ratio 0.2: recent 7 and the four heaviest 0..3 stay, so block 0
     * is not touched by the compaction; slot 4, its key made (3, 0), merges into slot 0, and
     * overwriting slot 0 must copy the shared block 0 first. */
    merge_fixture(&f, "recent_ratio=0.2,threshold=0.5");
    const float masses[] = {2, 2, 2, 2, 1.5f, 0, 0, 0};
    memcpy(f.mass[1], masses, sizeof masses);
    parent = f.seq;
    float key4[DIM] = {3, 0}, value4[DIM] = {5, 5};
    CHECK(kv_seq_overwrite_slot(parent, 1, 0, 4, key4, value4, &error) == STRATA_OK); /* not shared yet */
    keys[8] = 3;
    CHECK(kv_seq_fork(parent, &child, &error) == STRATA_OK);
    kv_block_id shared = kv_seq_table(parent, 1, 0)->blocks[0];
    f.view.seq = child;
    CHECK_MESSAGE(kv_policy_merge.on_prefill_end(&f.view, &error) == STRATA_OK, "%s", error.message);
    CHECK(table_is(parent, 1, all, keys, values, 8));
    CHECK(kv_seq_table(parent, 1, 0)->blocks[0] == shared);
    CHECK(kv_seq_table(child, 1, 0)->blocks[0] != shared && kv_pool_refcount(f.pool, shared) == 1);
    /* Slot 0 takes 4 and 6 (cos 0.707, tied with slot 7: the older wins; mass 0):
     * (2 (1,0) + 1.5 (3,0)) / 3.5 = (6.5/3.5, 0), value (2 (1,1) + 1.5 (5,5)) / 3.5.
     * Slot 5 merges into 2 with mass 0: slot 2 is unchanged. */
    const int32_t kept[] = {0, 1, 2, 3, 7};
    const double kept_keys[] = {6.5 / 3.5, 0, 0, 2, 2, 0.2, 0, 1, 0, -1};
    const double kept_values[] = {9.5 / 3.5, 9.5 / 3.5, 2, 0, 3, 3, 4, 4, 8, 8};
    CHECK(table_is(child, 1, kept, kept_keys, kept_values, 5));
    kv_seq_destroy(child);
    CHECK(pool_is_consistent(f.pool));
    fixture_free(&f);
}

static void overwriting_a_shared_slot_copies_its_block_and_a_full_pool_changes_nothing(void)
{
    fixture f;
    fixture_init(&f, &kv_policy_merge, NULL, 5, 6); /* 6 blocks: 2 layers x 2 blocks, 2 free */
    append(&f, merge_keys, merge_values, 8);
    strata_error error = {0};
    kv_seq *child = NULL;
    CHECK(kv_seq_fork(f.seq, &child, &error) == STRATA_OK);
    const float key[DIM] = {9, 9}, value[DIM] = {-9, -9};
    CHECK_MESSAGE(kv_seq_overwrite_slot(child, 1, 0, 5, key, value, &error) == STRATA_OK, "%s", error.message);
    float got_key[DIM], got_value[DIM];
    int32_t position;
    read_slot(child, 1, 5, got_key, got_value, &position);
    CHECK(got_key[0] == 9 && got_value[1] == -9 && position == 5);
    read_slot(child, 1, 4, got_key, got_value, &position); /* the copy holds the block's other slots */
    CHECK(got_key[0] == -1 && got_value[0] == 5 && position == 4);
    read_slot(f.seq, 1, 5, got_key, got_value, &position);
    CHECK(got_key[0] == 1 && got_value[0] == 6 && position == 5);
    CHECK(kv_pool_free_blocks(f.pool) == 1);

    /* One free block left; take it, then a shared block cannot be copied. */
    CHECK(kv_seq_overwrite_slot(child, 1, 0, 0, key, value, &error) == STRATA_OK);
    CHECK(kv_pool_free_blocks(f.pool) == 0);
    CHECK(kv_seq_overwrite_slot(child, 0, 0, 0, key, value, &error) == STRATA_E_KV_FULL);
    read_slot(child, 0, 0, got_key, got_value, &position);
    CHECK(got_key[0] == 1 && got_value[0] == 1);
    CHECK(kv_seq_overwrite_slot(child, 1, 0, 8, key, value, &error) == STRATA_E_INVALID_ARGUMENT);
    CHECK(strstr(error.message, "holds 8 slots") != NULL);
    kv_seq_destroy(child);
    CHECK(pool_is_consistent(f.pool));
    fixture_free(&f);
}

/* ---- quest ------------------------------------------------------------- */

/* Four full blocks and a partial last one (18 slots), keys by block:
 *   0: (1,0) (0,1) (0.5,0.5) (1,1)      min (0,0)   max (1,1)
 *   1: (-2,0) (-1,-1) (-2,-1) (-1,0)    min (-2,-1) max (-1,0)
 *   2: (3,-3) (2,-2) (3,-2) (2,-3)      min (2,-3)  max (3,-2)
 *   3: (0,3) (-1,2) (0,2) (-1,3)        min (-1,2)  max (0,3)
 *   4: (5,5) (5,5)
 * Scores sum_c max(q_c min_c, q_c max_c):
 *   q (1,0):   1, -1, 3, 0     -> 2, 0, 3, 1
 *   q (0,1):   1, 0, -2, 3     -> 3, 0, 1, 2
 *   q (-1,-1): 0, 3, 1, -1     -> 1, 2, 0, 3 */
static const float quest_keys[] = {1, 0,  0,  1,  0.5f, 0.5f, 1,  1,  -2, 0,  -1, -1, -2, -1, -1, 0, 3, -3,
                                   2, -2, 3,  -2, 2,    -3,   0,  3,  -1, 2,  0,  2,  -1, 3,  5,  5,  5, 5};

static void quest_fixture(fixture *f, const char *params, int64_t budget)
{
    fixture_init(f, &kv_policy_quest, params, budget, 16);
    strata_error error = {0};
    CHECK(kv_policy_quest.create_state(&f->view, &f->view.state, &error) == STRATA_OK);
    append(f, quest_keys, quest_keys, 18);
    CHECK(kv_policy_quest.on_prefill_end(&f->view, &error) == STRATA_OK);
}

/* Whether select_blocks on layer `layer` with these queries chooses exactly want[0..count). */
static bool chooses(const fixture *f, int32_t layer, const float *queries, int64_t group, const int64_t *want,
                    int64_t count)
{
    int64_t chosen[CAP];
    int64_t n = kv_policy_quest.select_blocks(&f->view, layer, 0, queries, group, chosen);
    bool same = n == count;
    for (int64_t i = 0; same && i < n; i++)
        same = chosen[i] == want[i];
    if (!same) {
        fprintf(stderr, "  budget %" PRId64 " chose", f->view.budget);
        for (int64_t i = 0; i < n; i++)
            fprintf(stderr, " %" PRId64, chosen[i]);
        fprintf(stderr, "\n");
    }
    return same;
}

static void quest_reads_the_blocks_of_highest_key_bound_and_always_the_last(void)
{
    fixture f;
    quest_fixture(&f, "dense_layers=0", 6); /* the last block's 2 slots + one block */
    const float right[] = {1, 0}, up[] = {0, 1}, down_left[] = {-1, -1};
    CHECK(chooses(&f, 1, right, 1, (int64_t[]){2, 4}, 2));
    CHECK(chooses(&f, 1, up, 1, (int64_t[]){3, 4}, 2));
    CHECK(chooses(&f, 1, down_left, 1, (int64_t[]){1, 4}, 2));
    f.view.budget = 9; /* room for 7 more slots: still one block */
    CHECK(chooses(&f, 1, right, 1, (int64_t[]){2, 4}, 2));
    f.view.budget = 10; /* two blocks, in increasing order */
    CHECK(chooses(&f, 1, right, 1, (int64_t[]){0, 2, 4}, 3));
    CHECK(chooses(&f, 1, down_left, 1, (int64_t[]){1, 2, 4}, 3));
    f.view.budget = 17;
    CHECK(chooses(&f, 1, right, 1, (int64_t[]){0, 2, 3, 4}, 4));
    f.view.budget = 1; /* below the last block's 2 slots: the last block alone */
    CHECK(chooses(&f, 1, right, 1, (int64_t[]){4}, 1));
    f.view.budget = 0;
    CHECK(chooses(&f, 1, up, 1, (int64_t[]){4}, 1));
    fixture_free(&f);
}

static void quest_scores_a_gqa_group_by_its_largest_head(void)
{
    fixture f;
    quest_fixture(&f, "dense_layers=0", 6);
    /* Heads (1,0) and (0,1): per block the larger score is 1, 0, 3, 3; the tie between 2 and 3
     * goes to the older block. (Summed, 2, -1, 1, 3, block 3 would win.) */
    const float group[] = {1, 0, 0, 1};
    CHECK(chooses(&f, 1, group, 2, (int64_t[]){2, 4}, 2));
    f.view.budget = 10;
    CHECK(chooses(&f, 1, group, 2, (int64_t[]){2, 3, 4}, 3));
    fixture_free(&f);
}

static void quest_reads_everything_with_a_budget_of_the_length_or_where_it_does_not_select(void)
{
    fixture f;
    quest_fixture(&f, "dense_layers=0", 18);
    const float right[] = {1, 0};
    const int64_t all[] = {0, 1, 2, 3, 4};
    CHECK(chooses(&f, 1, right, 1, all, 5));
    f.view.budget = 1000;
    CHECK(chooses(&f, 1, right, 1, all, 5));
    f.view.budget = 6;
    CHECK(chooses(&f, 0, right, 1, all, 5)); /* layer 0 is a sliding-window layer */
    f.params[0] = 2;                         /* dense_layers=2: layer 1 reads everything too */
    CHECK(chooses(&f, 1, right, 1, all, 5));
    void *state = f.view.state;
    f.params[0] = 0;
    f.view.state = NULL; /* no state (bounds never computed): everything */
    CHECK(chooses(&f, 1, right, 1, all, 5));
    f.view.state = state;
    /* Quest frees nothing and the hooks never change the table. */
    CHECK(kv_seq_table(f.seq, 1, 0)->slot_count == 18);
    fixture_free(&f);

    fixture_init(&f, &kv_policy_quest, "dense_layers=0", 6, 16); /* hooks without a state do nothing */
    append(&f, quest_keys, quest_keys, 18);
    strata_error error = {0};
    CHECK(kv_policy_quest.on_prefill_end(&f.view, &error) == STRATA_OK);
    CHECK(chooses(&f, 1, right, 1, all, 5));
    fixture_free(&f);
}

static void quest_decode_steps_refresh_the_last_blocks_bounds_and_a_fork_copies_them(void)
{
    fixture f;
    quest_fixture(&f, "dense_layers=0", 5); /* the last block's slots + at most one block */
    strata_error error = {0};
    const float far[] = {-5, -5, -5, -5}, origin[] = {0, 0};
    /* Slots 18, 19 fill block 4 with (-5,-5): its bounds become min (-5,-5) max (5,5). */
    for (int i = 0; i < 2; i++) {
        append(&f, far + 2 * i, far + 2 * i, 1);
        CHECK(kv_policy_quest.on_decode_step(&f.view, &error) == STRATA_OK);
    }
    append(&f, origin, origin, 1); /* slot 20 opens block 5 */
    CHECK(kv_policy_quest.on_decode_step(&f.view, &error) == STRATA_OK);
    /* q (-1,-1): block 4 scores 5 + 5 = 10, above block 1's 3 (stale bounds of (5,5) alone: -10). */
    const float down_left[] = {-1, -1};
    CHECK(chooses(&f, 1, down_left, 1, (int64_t[]){4, 5}, 2));

    void *copy = NULL;
    CHECK(kv_policy_quest.clone_state(f.view.state, &copy, &error) == STRATA_OK);
    kv_policy_quest.destroy_state(f.view.state);
    f.view.state = copy;
    CHECK(chooses(&f, 1, down_left, 1, (int64_t[]){4, 5}, 2));
    f.view.budget = 9;
    CHECK(chooses(&f, 1, down_left, 1, (int64_t[]){1, 4, 5}, 3));
    fixture_free(&f);
}

int main(void)
{
    RUN_CASE(merge_folds_evicted_slots_into_their_most_similar_kept_slots_weighted_by_mass);
    RUN_CASE(a_threshold_of_one_merges_only_parallel_keys_and_minus_one_merges_everything);
    RUN_CASE(zero_masses_merge_as_a_plain_mean);
    RUN_CASE(merging_in_a_fork_leaves_the_sequence_it_shares_blocks_with_unchanged);
    RUN_CASE(overwriting_a_shared_slot_copies_its_block_and_a_full_pool_changes_nothing);
    RUN_CASE(quest_reads_the_blocks_of_highest_key_bound_and_always_the_last);
    RUN_CASE(quest_scores_a_gqa_group_by_its_largest_head);
    RUN_CASE(quest_reads_everything_with_a_budget_of_the_length_or_where_it_does_not_select);
    RUN_CASE(quest_decode_steps_refresh_the_last_blocks_bounds_and_a_fork_copies_them);
    TEST_EXIT();
}
