/* kv/policy/quest.c: Quest, query-aware block selection, "quest".
 *
 * From "Quest: Query-Aware Sparsity for Efficient Long-Context LLM
 * Inference" (Tang et al., ICML 2024): which tokens matter depends on the
 * query, so instead of evicting anything, keep every token and, at each
 * decode step, read only the blocks that can matter to this query. For each
 * block the channel-wise minimum and maximum of its keys bound every q . k
 * in it from above: sum_c max(q_c min_c, q_c max_c) >= q . k for each key k
 * of the block. Attention reads the blocks with the highest bound.
 *
 * The rule. Nothing is freed: every slot stays resident and the budget is a
 * READ budget, the most slots a decode step's attention reads per (layer,
 * KV head) table. The session's state keeps per table and per block the
 * min and max of its keys (2 x key_length floats per block, outside the
 * pool), recomputed for every block after a prompt and for the last block
 * after a decode step (the only one a decode step changes). At a step of
 * one new token, in a global layer at or above `dense_layers`, each block
 * but the table's last is scored by that bound for each query head of the
 * KV group, and the block's score is the largest of those (the bound on the
 * largest q . k any head of the group can reach in it; GQA shares the block
 * choice across the group, as the KV head is read once). The last block
 * (the newest, possibly partial, holding the new token) is always read; then
 * the best full blocks (ties: the older) as many as fit in budget minus the
 * last block's slots; a budget smaller than the last block reads the last
 * block alone. A budget of at least the table's slots reads everything, the
 * same attention as the full cache. Prompt chunks and appends of several
 * tokens read everything, as do sliding-window layers (already bounded) and
 * the first `dense_layers` layers (the paper leaves the first two layers
 * dense: their attention is not sparse enough to skip blocks).
 *
 * Statistics are NONE: the attention kernel sees a partial view whose slot
 * indices are not the table's, so it must not collect per-slot masses.
 *
 * Parameters:
 *   dense_layers  (default 2, the paper's) the first layers, by index, that always read everything. */
#include "kv/policy.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"

enum { QUEST_DENSE_LAYERS = 0 };

static const kv_policy_param quest_params[] = {
    {"dense_layers", 2, 0, 1 << 20, "the first layers (by index) that always read every block"},
};

typedef struct quest_table {
    float *bounds;       /* [capacity][2][key_length]: per block the channel-wise min, then max, of its keys */
    int64_t capacity;    /* blocks bounds has room for */
    int64_t summarized;  /* blocks whose bounds are current */
} quest_table;

typedef struct quest_state {
    int64_t table_count;
    int64_t key_length;      /* 0 until the first refresh: the sequence does not exist when the state is made */
    quest_table *tables;     /* [layer * kv_heads + head] */
    /* Scratch for select_blocks, grown by the hooks so that a step never allocates. */
    float *scores;           /* [scratch_blocks] */
    int64_t *order;          /* [scratch_blocks] */
    int64_t scratch_blocks;
} quest_state;

static void quest_destroy_state(void *opaque)
{
    quest_state *state = opaque;
    if (state == NULL)
        return;
    for (int64_t t = 0; state->tables != NULL && t < state->table_count; t++)
        free(state->tables[t].bounds);
    free(state->tables);
    free(state->scores);
    free(state->order);
    free(state);
}

/* An empty state for table_count tables. */
static quest_state *new_state(int64_t table_count)
{
    quest_state *state = calloc(1, sizeof *state);
    if (state == NULL)
        return NULL;
    state->table_count = table_count;
    state->tables = calloc((size_t)table_count, sizeof *state->tables);
    if (state->tables == NULL) {
        free(state);
        return NULL;
    }
    return state;
}

static strata_status quest_create_state(const kv_policy_view *view, void **out, strata_error *err)
{
    int64_t tables = (int64_t)view->layer_count * view->kv_head_count;
    *out = new_state(tables);
    if (*out == NULL)
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "quest: cannot allocate the state of %" PRId64 " tables",
                           tables);
    return STRATA_OK;
}

static strata_status quest_clone_state(const void *opaque, void **out, strata_error *err)
{
    const quest_state *from = opaque;
    quest_state *to = new_state(from->table_count);
    *out = NULL;
    bool ok = to != NULL;
    if (ok)
        to->key_length = from->key_length;
    if (ok && from->scratch_blocks > 0) {
        to->scores = malloc((size_t)from->scratch_blocks * sizeof *to->scores);
        to->order = malloc((size_t)from->scratch_blocks * sizeof *to->order);
        to->scratch_blocks = from->scratch_blocks;
        ok = to->scores != NULL && to->order != NULL;
    }
    for (int64_t t = 0; ok && t < from->table_count; t++) {
        const quest_table *a = &from->tables[t];
        if (a->bounds == NULL)
            continue;
        size_t bytes = (size_t)(a->capacity * 2 * from->key_length) * sizeof(float);
        to->tables[t] = (quest_table){.bounds = malloc(bytes), .capacity = a->capacity, .summarized = a->summarized};
        ok = to->tables[t].bounds != NULL;
        if (ok)
            memcpy(to->tables[t].bounds, a->bounds, bytes);
    }
    if (!ok) {
        quest_destroy_state(to);
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "quest: cannot copy the state of %" PRId64 " tables",
                           from->table_count);
    }
    *out = to;
    return STRATA_OK;
}

/* Whether a layer's blocks are chosen at all (else every block is read). */
static bool layer_selects(const kv_policy_view *view, int32_t layer)
{
    bool windowed = view->layer_is_windowed != NULL && view->layer_is_windowed[layer];
    return !windowed && layer >= (int64_t)llround(view->params[QUEST_DENSE_LAYERS]);
}

/* Grows a table's bounds to `blocks` blocks and the selection scratch to `blocks` + 1 (the next step may
 * open a block). */
static strata_status reserve_blocks(quest_state *state, quest_table *table, int64_t blocks, strata_error *err)
{
    if (blocks > table->capacity) {
        int64_t capacity = table->capacity > 0 ? table->capacity : 8;
        while (capacity < blocks)
            capacity *= 2;
        float *grown = realloc(table->bounds, (size_t)(capacity * 2 * state->key_length) * sizeof(float));
        if (grown == NULL)
            return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "quest: cannot allocate key bounds for %" PRId64
                               " blocks", capacity);
        table->bounds = grown;
        table->capacity = capacity;
    }
    if (blocks + 1 > state->scratch_blocks) {
        int64_t capacity = 2 * (blocks + 1);
        float *scores = realloc(state->scores, (size_t)capacity * sizeof *scores);
        if (scores != NULL)
            state->scores = scores;
        int64_t *order = realloc(state->order, (size_t)capacity * sizeof *order);
        if (order != NULL)
            state->order = order;
        if (scores == NULL || order == NULL)
            return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "quest: cannot allocate scores for %" PRId64 " blocks",
                               capacity);
        state->scratch_blocks = capacity;
    }
    return STRATA_OK;
}

/* Recomputes the key bounds of every global table's blocks from `all` ? 0 : the
 * first one not current or the last, to the table's end. */
static strata_status refresh(const kv_policy_view *view, bool all, strata_error *err)
{
    quest_state *state = view->state;
    if (state == NULL)
        return STRATA_OK; /* no session state (a bare hook call): nothing to keep */
    kv_pool *pool = kv_seq_pool(view->seq);
    const kv_pool_config *config = kv_pool_configuration(pool);
    state->key_length = config->key_length;
    const int64_t dk = state->key_length, block_tokens = config->block_tokens;
    float *key = malloc((size_t)dk * sizeof *key);
    if (key == NULL)
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "quest: cannot allocate a key row");
    strata_status status = STRATA_OK;
    for (int32_t layer = 0; layer < view->layer_count && status == STRATA_OK; layer++) {
        if (!layer_selects(view, layer))
            continue;
        for (int32_t head = 0; head < view->kv_head_count && status == STRATA_OK; head++) {
            const kv_block_table *table = kv_seq_table(view->seq, layer, head);
            quest_table *bounds = &state->tables[(int64_t)layer * view->kv_head_count + head];
            int64_t blocks = (table->slot_count + block_tokens - 1) / block_tokens;
            status = reserve_blocks(state, bounds, blocks, err);
            int64_t first = all ? 0 : bounds->summarized < blocks - 1 ? bounds->summarized : blocks - 1;
            for (int64_t b = first < 0 ? 0 : first; b < blocks && status == STRATA_OK; b++) {
                float *low = bounds->bounds + b * 2 * dk, *high = low + dk;
                int64_t end = (b + 1) * block_tokens < table->slot_count ? (b + 1) * block_tokens : table->slot_count;
                for (int64_t slot = b * block_tokens; slot < end; slot++) {
                    kv_block_read_key(pool, table->blocks[b], (int32_t)(slot - b * block_tokens), key);
                    for (int64_t c = 0; c < dk; c++) {
                        low[c] = slot == b * block_tokens || key[c] < low[c] ? key[c] : low[c];
                        high[c] = slot == b * block_tokens || key[c] > high[c] ? key[c] : high[c];
                    }
                }
            }
            if (status == STRATA_OK)
                bounds->summarized = blocks;
        }
    }
    free(key);
    return status;
}

static strata_status quest_prefill_end(const kv_policy_view *view, strata_error *err)
{
    return refresh(view, true, err);
}

static strata_status quest_decode_step(const kv_policy_view *view, strata_error *err)
{
    return refresh(view, false, err);
}

/* Writes 0 .. blocks - 1 into chosen: read everything. */
static int64_t choose_all(int64_t blocks, int64_t *chosen)
{
    for (int64_t b = 0; b < blocks; b++)
        chosen[b] = b;
    return blocks;
}

static int64_t quest_select_blocks(const kv_policy_view *view, int32_t layer, int32_t kv_head, const float *queries,
                                   int64_t group, int64_t *chosen)
{
    const quest_state *state = view->state;
    const kv_block_table *table = kv_seq_table(view->seq, layer, kv_head);
    int64_t block_tokens = kv_pool_configuration(kv_seq_pool(view->seq))->block_tokens;
    int64_t blocks = (table->slot_count + block_tokens - 1) / block_tokens;
    if (state == NULL || !layer_selects(view, layer) || view->budget >= table->slot_count || blocks <= 1)
        return choose_all(blocks, chosen);
    const quest_table *bounds = &state->tables[(int64_t)layer * view->kv_head_count + kv_head];
    int64_t candidates = blocks - 1; /* every block but the last, all full */
    if (bounds->summarized < candidates || state->scratch_blocks < candidates)
        return choose_all(blocks, chosen); /* bounds not known (no hook ran since): read everything */
    int64_t last_slots = table->slot_count - candidates * block_tokens;
    int64_t room = view->budget - last_slots;
    int64_t picked = room > 0 ? room / block_tokens : 0;
    picked = picked < candidates ? picked : candidates;

    const int64_t dk = state->key_length;
    for (int64_t b = 0; b < candidates; b++) {
        const float *low = bounds->bounds + b * 2 * dk, *high = low + dk;
        float best = -INFINITY;
        for (int64_t g = 0; g < group; g++) {
            const float *q = queries + g * dk;
            float bound = 0.0f;
            for (int64_t c = 0; c < dk; c++) {
                float a = q[c] * low[c], z = q[c] * high[c];
                bound += a > z ? a : z;
            }
            best = bound > best ? bound : best;
        }
        state->scores[b] = best;
    }
    kv_policy_rank(state->scores, candidates, state->order);
    for (int64_t i = 0; i < picked; i++)
        chosen[i] = state->order[i];
    kv_policy_sort_indices(chosen, picked);
    chosen[picked] = blocks - 1;
    return picked + 1;
}

const kv_policy_ops kv_policy_quest = {
    .name = "quest",
    .summary = "keep everything; each decode step reads the blocks whose key bounds score highest for its query "
               "(Quest, 2024)",
    .params = quest_params,
    .param_count = (int)(sizeof quest_params / sizeof quest_params[0]),
    .statistics = KV_STATISTICS_NONE,
    .on_prefill_end = quest_prefill_end,
    .on_decode_step = quest_decode_step,
    .create_state = quest_create_state,
    .destroy_state = quest_destroy_state,
    .clone_state = quest_clone_state,
    .select_blocks = quest_select_blocks,
};
