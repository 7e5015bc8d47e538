/* kv/policy/merge.c: merging eviction, "merge" (D2O / KVMerger style).
 *
 * H2O (kv/policy/h2o.c) drops what it evicts; "D2O: Dynamic Discriminative
 * Operations for Efficient Long-Context Inference of Large Language Models"
 * (Wan et al., 2024) and "Model Tells You Where to Merge: Adaptive KV Cache
 * Merging for LLMs on Long-Context Tasks" (KVMerger, Wang et al., 2024)
 * observe that an evicted key is often nearly parallel to one that stays,
 * and fold it into that one instead, so the attention it would have drawn
 * is not lost but lands on its look-alike.
 *
 * The rule, per (layer, KV head) table over its budget, after the prompt and
 * after every decode step (statistics ACCUMULATED, as H2O):
 *   1. Keep what H2O keeps: the most recent round(budget * recent_ratio)
 *      slots and the others of highest accumulated attention mass (ties:
 *      the older slot) up to the budget.
 *   2. Each evicted slot e finds the kept slot c whose key is most similar by
 *      cosine similarity (ties: the older kept slot), compared with the kept
 *      keys as they were before this step's merges. If that similarity is at
 *      least `threshold` (a fixed threshold, not D2O's running EMA of
 *      similarities: the same input always merges the same way), e is merged
 *      into c; otherwise e is dropped as in H2O.
 *   3. A kept slot c with merged slots E becomes the average weighted by
 *      accumulated attention mass m:
 *          k_c <- (m_c k_c + sum_e m_e k_e) / (m_c + sum_e m_e),  v_c likewise,
 *          m_c <- m_c + sum_e m_e,
 *      (the plain mean if all those masses are 0). The weighted average is
 *      associative, so several slots merging into one give the same result
 *      in any order. The kept slot keeps its position: its key stays rotated
 *      for that position (keys are stored after RoPE, as in both papers'
 *      implementations). D2O's own weights come from similarities
 *      (exp(similarity) per merged key against e for the kept one); weighting
 *      by attention mass, as here, lets the more attended token dominate, the
 *      idea behind KVMerger's weights centred on its most attended token.
 * Merges are computed before the table is compacted (kv_policy_keep moves
 * slots) and written after it into the kept slots at their new indices (kept
 * slot number j of the keep list is slot j afterwards), through
 * kv_seq_overwrite_slot, which copies a block shared with a fork or the
 * prefix cache before writing it. Not done: D2O's per-layer budgets from
 * attention density (every global layer keeps `budget` slots).
 *
 * Cost: a step compares every evicted slot with every kept one, so the
 * prompt's compaction takes (slots - budget) x budget key dot products per
 * table; a decode step evicts one slot and takes budget of them.
 *
 * Parameters:
 *   recent_ratio  (default 0.5, as H2O) share of the budget kept for the most recent slots.
 *   threshold     (default 0.9) least cosine similarity at which an evicted slot is merged;
 *                 -1 merges every evicted slot, 1 only exact look-alikes. On Gemma 3 270M
 *                 (a 3,000-token prompt, 48 teacher-forced steps, budgets 512 and 128)
 *                 0.5 and 0.8 were further from the full cache than H2O, 0.9 and 0.95 as
 *                 close or closer: averaging keys that are not near-parallel misleads attention. */
#include "kv/policy.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"

enum { MERGE_RECENT_RATIO = 0, MERGE_THRESHOLD = 1 };

static const kv_policy_param merge_params[] = {
    {"recent_ratio", 0.5, 0, 1, "share of the budget kept for the most recent slots (the rest: heaviest)"},
    {"threshold", 0.9, -1, 1, "least cosine similarity of keys at which an evicted slot is merged into a kept one"},
};

/* Scratch for one step, sized for the largest table over budget. */
typedef struct merge_scratch {
    int64_t *order;        /* [slots] ranking of the older slots by mass */
    int64_t *keep;         /* [budget] kept slots, increasing */
    int64_t *target;       /* [slots] per slot: the keep rank it merges into, or -1 */
    int64_t *group_start;  /* [budget + 1] per keep rank: where its merged slots start in grouped */
    int64_t *grouped;      /* [slots] evicted slots grouped by target */
    float *keys;           /* [slots][key_length] every slot's key as f32 */
    float *inverse_norms;  /* [slots] 1 / |key|, 0 for a zero key */
    float *rows;           /* [budget][key_length + value_length] the merged rows */
    int64_t *row_of;       /* [budget] per keep rank: its row in rows, or -1 */
    float *row_mass;       /* [budget] per row: the merged slots' summed mass */
    float *value;          /* [value_length] one value row */
    double *sums;          /* [2][key_length + value_length] weighted and plain sums */
} merge_scratch;

static void merge_scratch_free(merge_scratch *s)
{
    free(s->order);
    free(s->keep);
    free(s->target);
    free(s->group_start);
    free(s->grouped);
    free(s->keys);
    free(s->inverse_norms);
    free(s->rows);
    free(s->row_of);
    free(s->row_mass);
    free(s->value);
    free(s->sums);
}

static strata_status merge_scratch_alloc(merge_scratch *s, int64_t slots, int64_t budget, int64_t key_length,
                                         int64_t value_length, strata_error *err)
{
    size_t n = (size_t)slots, b = (size_t)(budget > 0 ? budget : 1), row = (size_t)(key_length + value_length);
    *s = (merge_scratch){
        .order = malloc(n * sizeof(int64_t)),
        .keep = malloc(b * sizeof(int64_t)),
        .target = malloc(n * sizeof(int64_t)),
        .group_start = malloc((b + 1) * sizeof(int64_t)),
        .grouped = malloc(n * sizeof(int64_t)),
        .keys = malloc(n * (size_t)key_length * sizeof(float)),
        .inverse_norms = malloc(n * sizeof(float)),
        .rows = malloc(b * row * sizeof(float)),
        .row_of = malloc(b * sizeof(int64_t)),
        .row_mass = malloc(b * sizeof(float)),
        .value = malloc((size_t)value_length * sizeof(float)),
        .sums = malloc(2 * row * sizeof(double)),
    };
    if (!s->order || !s->keep || !s->target || !s->group_start || !s->grouped || !s->keys || !s->inverse_norms ||
        !s->rows || !s->row_of || !s->row_mass || !s->value || !s->sums) {
        merge_scratch_free(s);
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "merge: cannot allocate scratch for %" PRId64 " slots",
                           slots);
    }
    return STRATA_OK;
}

/* Reads slot i's key or value row of a table as f32. */
static void read_row(kv_pool *pool, const kv_block_table *table, int32_t block_tokens, int64_t slot, bool value,
                     float *out)
{
    kv_block_id block = table->blocks[slot / block_tokens];
    if (value)
        kv_block_read_value(pool, block, (int32_t)(slot % block_tokens), out);
    else
        kv_block_read_key(pool, block, (int32_t)(slot % block_tokens), out);
}

/* Compacts one table to budget slots, merging evicted slots into kept ones. */
static strata_status merge_table(const kv_policy_view *view, merge_scratch *s, int32_t layer, int32_t head,
                                 int64_t recent, strata_error *err)
{
    kv_pool *pool = kv_seq_pool(view->seq);
    const kv_pool_config *config = kv_pool_configuration(pool);
    const int64_t dk = config->key_length, dv = config->value_length, width = dk + dv;
    const kv_block_table *table = kv_seq_table(view->seq, layer, head);
    const int64_t slots = table->slot_count, budget = view->budget;
    float *mass = view->mass[(int64_t)layer * view->kv_head_count + head];

    /* 1. H2O's choice. */
    int64_t older = slots - recent, count = 0;
    kv_policy_rank(mass, older, s->order);
    for (int64_t i = 0; i < budget - recent; i++)
        s->keep[count++] = s->order[i];
    kv_policy_sort_indices(s->keep, count);
    for (int64_t i = older; i < slots; i++)
        s->keep[count++] = i;

    /* 2. Each evicted slot's most similar kept slot. */
    for (int64_t i = 0; i < slots; i++) {
        float *key = s->keys + i * dk;
        read_row(pool, table, config->block_tokens, i, false, key);
        double norm = 0;
        for (int64_t c = 0; c < dk; c++)
            norm += (double)key[c] * key[c];
        s->inverse_norms[i] = norm > 0 ? (float)(1.0 / sqrt(norm)) : 0.0f;
        s->target[i] = -1;
    }
    const double threshold = view->params[MERGE_THRESHOLD];
    for (int64_t i = 0, j = 0; i < slots; i++) {
        if (j < count && s->keep[j] == i) {
            j++;
            continue; /* kept */
        }
        double best = -INFINITY;
        int64_t best_rank = -1;
        for (int64_t r = 0; r < count; r++) {
            const float *a = s->keys + i * dk, *b = s->keys + s->keep[r] * dk;
            double dot = 0;
            for (int64_t c = 0; c < dk; c++)
                dot += (double)a[c] * b[c];
            double similarity = dot * s->inverse_norms[i] * s->inverse_norms[s->keep[r]];
            if (similarity > best) {
                best = similarity;
                best_rank = r;
            }
        }
        if (best_rank >= 0 && best >= threshold)
            s->target[i] = best_rank;
    }

    /* 3. The merged rows, grouped by the kept slot they go to (a counting sort). */
    memset(s->group_start, 0, (size_t)(count + 1) * sizeof *s->group_start);
    for (int64_t i = 0; i < slots; i++)
        if (s->target[i] >= 0)
            s->group_start[s->target[i] + 1]++;
    for (int64_t r = 0; r < count; r++)
        s->group_start[r + 1] += s->group_start[r];
    for (int64_t i = 0; i < slots; i++) /* increasing i: each group lists its slots in order */
        if (s->target[i] >= 0)
            s->grouped[s->group_start[s->target[i]]++] = i;
    for (int64_t r = count; r > 0; r--) /* the increments moved each start to the next group's */
        s->group_start[r] = s->group_start[r - 1];
    s->group_start[0] = 0;

    int64_t rows = 0;
    for (int64_t r = 0; r < count; r++) {
        s->row_of[r] = -1;
        int64_t first = s->group_start[r], end = s->group_start[r + 1];
        if (first == end)
            continue;
        double *weighted = s->sums, *plain = s->sums + width, total = 0;
        memset(s->sums, 0, 2 * (size_t)width * sizeof *s->sums);
        for (int64_t g = first - 1; g < end; g++) { /* first - 1: the kept slot itself */
            int64_t slot = g < first ? s->keep[r] : s->grouped[g];
            double m = mass[slot];
            read_row(pool, table, config->block_tokens, slot, true, s->value);
            const float *key = s->keys + slot * dk;
            for (int64_t c = 0; c < dk; c++) {
                weighted[c] += m * key[c];
                plain[c] += key[c];
            }
            for (int64_t c = 0; c < dv; c++) {
                weighted[dk + c] += m * s->value[c];
                plain[dk + c] += s->value[c];
            }
            total += m;
        }
        float *row = s->rows + rows * width;
        for (int64_t c = 0; c < width; c++)
            row[c] = total > 0 ? (float)(weighted[c] / total) : (float)(plain[c] / (double)(end - first + 1));
        s->row_mass[rows] = (float)total;
        s->row_of[r] = rows++;
    }

    /* 4. Compact, then write the merged rows and masses where their kept slots now are. */
    strata_status status = kv_policy_keep(view, layer, head, s->keep, count, err);
    for (int64_t r = 0; r < count && status == STRATA_OK; r++)
        if (s->row_of[r] >= 0) {
            const float *row = s->rows + s->row_of[r] * width;
            status = kv_seq_overwrite_slot(view->seq, layer, head, r, row, row + dk, err);
            if (status == STRATA_OK)
                mass[r] = s->row_mass[s->row_of[r]];
        }
    return status;
}

static strata_status merge_apply(const kv_policy_view *view, strata_error *err)
{
    if (view->budget < 0)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT, "merge: the KV budget is %" PRId64 ", below 0",
                           view->budget);
    int64_t recent = (int64_t)llround((double)view->budget * view->params[MERGE_RECENT_RATIO]);
    recent = recent > view->budget ? view->budget : recent < 0 ? 0 : recent;

    int64_t most_slots;
    strata_status status = kv_policy_largest_table(view, view->budget, true, "merge", &most_slots, err);
    if (status != STRATA_OK || most_slots <= view->budget)
        return status;
    const kv_pool_config *config = kv_pool_configuration(kv_seq_pool(view->seq));
    merge_scratch scratch;
    status = merge_scratch_alloc(&scratch, most_slots, view->budget, config->key_length, config->value_length, err);
    if (status != STRATA_OK)
        return status;
    for (int32_t layer = 0; layer < view->layer_count && status == STRATA_OK; layer++) {
        if (view->layer_is_windowed != NULL && view->layer_is_windowed[layer])
            continue;
        for (int32_t head = 0; head < view->kv_head_count && status == STRATA_OK; head++)
            if (kv_seq_table(view->seq, layer, head)->slot_count > view->budget)
                status = merge_table(view, &scratch, layer, head, recent, err);
    }
    merge_scratch_free(&scratch);
    return status;
}

const kv_policy_ops kv_policy_merge = {
    .name = "merge",
    .summary = "H2O's choice, evicted tokens merged into their most similar kept token (D2O, KVMerger, 2024)",
    .params = merge_params,
    .param_count = (int)(sizeof merge_params / sizeof merge_params[0]),
    .statistics = KV_STATISTICS_ACCUMULATED,
    .on_prefill_end = merge_apply,
    .on_decode_step = merge_apply,
};
