/* kv/policy/lazy.c: LazyEviction, "lazy".
 *
 * From "LazyEviction: Lagged KV Eviction with Attention Pattern Observation
 * for Efficient Long Reasoning" (Zhang, Zhang, Ma, Zhang and Guo, 2025): in
 * long reasoning outputs many tokens receive high attention again after
 * many steps of low attention (token importance recurrence), so evicting at
 * every step by the current or accumulated attention drops tokens that are
 * about to be needed again. LazyEviction watches every token's recurrences
 * and evicts only every W steps, the tokens least likely to recur. The rule
 * below is that of the authors' code (github.com/Halo-949/LazyEviction,
 * method Window_LAZY, with its defaults).
 *
 * Statistics ACCUMULATED: per (layer, KV head) table and per slot, the mass
 * every query so far put on it, summed over the query heads of the group.
 * A step's attention is the growth of that mass since the previous hook,
 * remembered per slot in a slot array. The paper's code keeps a copy of the
 * cache per query head and decides per query head; strata's tables are per
 * KV head, so a slot recurs at a step when the mean over the group's query
 * heads of the weight the step's query put on it is at least `alpha` (the
 * group's size is the step's total: each query head's weights sum to 1).
 * The growth is a difference of float sums, exact to about 6e-8 of the
 * slot's accumulated mass: far below alpha unless that mass is in the
 * thousands (an attention sink, which receives far more than alpha anyway).
 *
 * Per slot (slot arrays, compacted and forked with the table): the position
 * of the query at its last recurrence, and its largest recurrence interval
 * MRI (positions, which are decode steps during generation; exact as floats
 * up to 2^24). A slot's last recurrence starts at the prompt's last position
 * for the prompt's slots and at t - 1 for a slot added by the step at
 * position t (as the paper's code counts), its MRI at 0. At each decode step
 * at position t, a slot that recurs gets MRI = max(MRI, t - last) and
 * last = t.
 *
 * Eviction, every W decode steps after the prompt (the slots that arrived
 * since the prompt or the last check are counted per slot; when W have, the
 * check runs and the count restarts): a table holding more than the budget
 * B keeps its newest min(W, B) slots (still under observation) and the
 * B - min(W, B) others of highest
 *   score = 2 / (1 + e^(1 + gap / (MRI + 1e-5))) + (MRI > 0 ? 2 / (1 + e^(MRI - 1)) : 0),
 *   gap = t - last,
 * the paper's code's score: high while a slot is within its usual interval
 * since its last recurrence (gap small against MRI), near 0 once it is
 * overdue or never recurred, plus a bonus for short intervals (ties: the
 * older slot is kept). The prompt is kept whole until the first check, as
 * in the paper (its observation starts with the first generated token).
 * So between checks a table holds up to W - 1 slots more than B (after the
 * prompt: the whole prompt plus up to W - 1), and W is both the lag and the
 * recent window. A new prompt on the same session (a further multi-token
 * append) restarts the count; its slots start as the prompt's do.
 *
 * Parameters:
 *   window  (default 175, the paper's for MATH; 101 for GSM8K, 363 for AIME)
 *           W: decode steps between evictions and newest slots kept.
 *   alpha   (default 0.0001, the paper's) the weight at or above which a slot
 *           recurs at a step. */
#include "kv/policy.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>

#include "base/error.h"

enum { LAZY_WINDOW = 0, LAZY_ALPHA = 1 };
/* The slot arrays: the mass at the previous hook; the last recurrence's
 * position + 1 (0: not seen yet); the largest recurrence interval; 1 for a
 * slot present at the last check (or the prompt's end), 0 for one that came since. */
enum { LAZY_PREVIOUS_MASS = 0, LAZY_LAST = 1, LAZY_INTERVAL = 2, LAZY_SETTLED = 3, LAZY_SLOT_ARRAYS = 4 };

static const kv_policy_param lazy_params[] = {
    {"window", 175, 1, 1 << 20, "W: decode steps between evictions, and the newest slots each eviction keeps"},
    {"alpha", 0.0001, 0, 1, "attention weight (mean over the KV group's query heads) at which a slot recurs"},
};

/* One table's arrays. */
typedef struct lazy_table {
    const float *mass;
    float *previous, *last, *interval, *settled;
} lazy_table;

static bool lazy_is_global(const kv_policy_view *view, int32_t layer)
{
    return view->layer_is_windowed == NULL || !view->layer_is_windowed[layer];
}

static int64_t lazy_slots(const kv_policy_view *view, int32_t layer, int32_t head)
{
    return kv_seq_table(view->seq, layer, head)->slot_count;
}

/* Finds a global table's arrays; fails when the session did not give them. */
static strata_status lazy_table_of(const kv_policy_view *view, int32_t layer, int32_t head, lazy_table *out,
                                   strata_error *err)
{
    int64_t table = (int64_t)layer * view->kv_head_count + head;
    if (view->mass == NULL || view->mass[table] == NULL)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                           "lazy: no accumulated attention mass for layer %" PRId32 " KV head %" PRId32
                           " (the session must keep ACCUMULATED statistics)",
                           layer, head);
    if (view->slot_arrays == NULL || view->slot_array_count < LAZY_SLOT_ARRAYS)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                           "lazy: no slot arrays for layer %" PRId32 " KV head %" PRId32
                           " (the session must give the policy its %d slot arrays)",
                           layer, head, (int)LAZY_SLOT_ARRAYS);
    float *const *arrays = view->slot_arrays + table * view->slot_array_count;
    *out = (lazy_table){.mass = view->mass[table],
                        .previous = arrays[LAZY_PREVIOUS_MASS],
                        .last = arrays[LAZY_LAST],
                        .interval = arrays[LAZY_INTERVAL],
                        .settled = arrays[LAZY_SETTLED]};
    if (out->previous == NULL || out->last == NULL || out->interval == NULL || out->settled == NULL)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                           "lazy: a slot array of layer %" PRId32 " KV head %" PRId32 " is missing", layer, head);
    return STRATA_OK;
}

/* The paper's code's score: how likely a slot is to recur at position t. */
static float lazy_score(float last_plus_one, float interval, int64_t t)
{
    double gap = (double)t - ((double)last_plus_one - 1.0);
    if (gap < 0)
        gap = 0; /* a rewound sequence: its last recurrence is in the dropped future */
    double ratio = gap / ((double)interval + 1e-5);
    double recent = ratio > 700 ? 0.0 : 2.0 / (1.0 + exp(1.0 + ratio));
    double bonus = interval > 0 ? 2.0 / (1.0 + exp((double)interval - 1.0)) : 0.0;
    return (float)(recent + bonus);
}

/* The prompt is in: start its slots' records, remember the masses, restart the count. */
static strata_status lazy_prefill_end(const kv_policy_view *view, strata_error *err)
{
    int64_t t = kv_seq_length(view->seq) - 1; /* the prompt's last position */
    for (int32_t layer = 0; layer < view->layer_count; layer++)
        for (int32_t head = 0; lazy_is_global(view, layer) && head < view->kv_head_count; head++) {
            lazy_table table;
            strata_status status = lazy_table_of(view, layer, head, &table, err);
            if (status != STRATA_OK)
                return status;
            int64_t slots = lazy_slots(view, layer, head);
            for (int64_t j = 0; j < slots; j++) {
                if (table.last[j] == 0)
                    table.last[j] = (float)(t + 1);
                table.previous[j] = table.mass[j];
                table.settled[j] = 1;
            }
        }
    return STRATA_OK;
}

/* Keeps the newest min(W, budget) slots and the others of highest score. */
static strata_status lazy_evict(const kv_policy_view *view, int32_t layer, int32_t head, const lazy_table *table,
                                int64_t t, float *scores, int64_t *order, int64_t *keep, strata_error *err)
{
    int64_t window = (int64_t)llround(view->params[LAZY_WINDOW]);
    int64_t slots = lazy_slots(view, layer, head);
    int64_t recent = window < view->budget ? window : view->budget;
    int64_t older = slots - recent, chosen = view->budget - recent, count = 0;
    for (int64_t j = 0; j < older; j++)
        scores[j] = lazy_score(table->last[j], table->interval[j], t);
    kv_policy_rank(scores, older, order);
    for (int64_t i = 0; i < chosen; i++)
        keep[count++] = order[i];
    kv_policy_sort_indices(keep, count);
    for (int64_t j = older; j < slots; j++)
        keep[count++] = j;
    return kv_policy_keep(view, layer, head, keep, count, err);
}

static strata_status lazy_decode_step(const kv_policy_view *view, strata_error *err)
{
    if (view->budget < 0)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT, "lazy: the KV budget is %" PRId64 ", below 0",
                           view->budget);
    int64_t window = (int64_t)llround(view->params[LAZY_WINDOW]);
    double alpha = view->params[LAZY_ALPHA];
    int64_t t = kv_seq_length(view->seq) - 1; /* the step's query */
    int64_t most_slots = 1;
    for (int32_t layer = 0; layer < view->layer_count; layer++)
        for (int32_t head = 0; lazy_is_global(view, layer) && head < view->kv_head_count; head++)
            if (lazy_slots(view, layer, head) > most_slots)
                most_slots = lazy_slots(view, layer, head);
    float *scores = NULL;
    int64_t *order = NULL, *keep = NULL;
    strata_status status = STRATA_OK;
    for (int32_t layer = 0; layer < view->layer_count && status == STRATA_OK; layer++) {
        if (!lazy_is_global(view, layer))
            continue;
        for (int32_t head = 0; head < view->kv_head_count && status == STRATA_OK; head++) {
            lazy_table table;
            if ((status = lazy_table_of(view, layer, head, &table, err)) != STRATA_OK)
                break;
            int64_t slots = lazy_slots(view, layer, head), arrived = 0;
            double total = 0;
            for (int64_t j = 0; j < slots; j++)
                total += (double)table.mass[j] - (double)table.previous[j];
            double group = llround(total) > 1 ? (double)llround(total) : 1.0; /* the step's query heads */
            for (int64_t j = 0; j < slots; j++) {
                if (table.last[j] == 0) /* came with this step: last recurrence t - 1 (0 for position 0) */
                    table.last[j] = (float)(t > 0 ? t : 1);
                double weight = ((double)table.mass[j] - (double)table.previous[j]) / group;
                table.previous[j] = table.mass[j];
                if (weight >= alpha) {
                    float interval = (float)t - (table.last[j] - 1.0f);
                    if (interval > table.interval[j])
                        table.interval[j] = interval;
                    table.last[j] = (float)(t + 1);
                }
                arrived += table.settled[j] == 0 ? 1 : 0;
            }
            if (arrived < window)
                continue;
            /* The W-th step since the last check: evict if over budget, then restart the count. */
            if (slots > view->budget) {
                if (scores == NULL) {
                    scores = malloc((size_t)most_slots * sizeof *scores);
                    order = malloc((size_t)most_slots * sizeof *order);
                    keep = malloc((size_t)most_slots * sizeof *keep);
                    if (scores == NULL || order == NULL || keep == NULL) {
                        status = strata_fail(err, STRATA_E_OUT_OF_MEMORY,
                                             "lazy: cannot allocate scratch for %" PRId64 " slots", most_slots);
                        break;
                    }
                }
                status = lazy_evict(view, layer, head, &table, t, scores, order, keep, err);
            }
            for (int64_t j = 0; status == STRATA_OK && j < lazy_slots(view, layer, head); j++)
                table.settled[j] = 1;
        }
    }
    free(scores);
    free(order);
    free(keep);
    return status;
}

const kv_policy_ops kv_policy_lazy = {
    .name = "lazy",
    .summary = "evict every W steps the tokens least likely to recur, by recurrence intervals (LazyEviction, 2025)",
    .params = lazy_params,
    .param_count = (int)(sizeof lazy_params / sizeof lazy_params[0]),
    .statistics = KV_STATISTICS_ACCUMULATED,
    .slot_arrays = LAZY_SLOT_ARRAYS,
    .on_prefill_end = lazy_prefill_end,
    .on_decode_step = lazy_decode_step,
};
