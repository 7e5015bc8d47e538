/* kv/policy/h2o.c: H2O, the Heavy-Hitter Oracle, "h2o".
 *
 * From "H2O: Heavy-Hitter Oracle for Efficient Generative Inference of Large
 * Language Models" (Zhang et al., 2023): a small set of tokens (heavy
 * hitters) receives most of the attention mass accumulated over all queries,
 * and keeping them together with the most recent tokens preserves quality
 * at a fraction of the cache. The attention kernel accumulates, per (layer,
 * KV head) and per slot, the mass every query so far (prompt and decode
 * steps) put on it (statistics ACCUMULATED). After the prompt and after
 * every decode step, each table over its budget keeps its most recent
 * round(budget * recent_ratio) slots plus the other slots of highest
 * accumulated mass (ties: the older slot) up to the budget. At a decode
 * step the table is one slot over budget, so exactly the lightest slot
 * outside the recent part is evicted, as in the paper's greedy algorithm.
 *
 * Parameters:
 *   recent_ratio  (default 0.5, the paper's even split) share of the budget
 *                 given to the most recent slots; the rest goes to heavy hitters. */
#include "kv/policy.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>

#include "base/error.h"

enum { H2O_RECENT_RATIO = 0 };

static const kv_policy_param h2o_params[] = {
    {"recent_ratio", 0.5, 0, 1, "share of the budget kept for the most recent slots (the rest: heaviest)"},
};

static strata_status h2o_apply(const kv_policy_view *view, strata_error *err)
{
    if (view->budget < 0)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT, "h2o: the KV budget is %" PRId64 ", below 0",
                           view->budget);
    int64_t recent = (int64_t)llround((double)view->budget * view->params[H2O_RECENT_RATIO]);
    if (recent > view->budget)
        recent = view->budget;
    if (recent < 0)
        recent = 0;
    int64_t heavy = view->budget - recent;

    /* One scratch allocation per step, sized for the largest table to compact. */
    int64_t most_slots;
    strata_status status = kv_policy_largest_table(view, view->budget, true, "h2o", &most_slots, err);
    if (status != STRATA_OK)
        return status;
    if (most_slots <= view->budget)
        return STRATA_OK;
    int64_t *order = malloc((size_t)most_slots * sizeof *order);
    int64_t *keep = malloc((size_t)(view->budget > 0 ? view->budget : 1) * sizeof *keep);
    if (order == NULL || keep == NULL) {
        free(order);
        free(keep);
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "h2o: cannot allocate scratch for %" PRId64 " slots",
                           most_slots);
    }

    for (int32_t layer = 0; layer < view->layer_count && status == STRATA_OK; layer++) {
        if (view->layer_is_windowed != NULL && view->layer_is_windowed[layer])
            continue;
        for (int32_t head = 0; head < view->kv_head_count && status == STRATA_OK; head++) {
            int64_t slots = kv_seq_table(view->seq, layer, head)->slot_count;
            if (slots <= view->budget)
                continue;
            const float *mass = view->mass[(int64_t)layer * view->kv_head_count + head];
            int64_t older = slots - recent; /* candidates for heavy hitters: slots [0, older) */
            kv_policy_rank(mass, older, order);
            int64_t count = 0;
            for (int64_t i = 0; i < heavy; i++)
                keep[count++] = order[i];
            kv_policy_sort_indices(keep, count);
            for (int64_t i = older; i < slots; i++)
                keep[count++] = i;
            status = kv_policy_keep(view, layer, head, keep, count, err);
        }
    }
    free(order);
    free(keep);
    return status;
}

const kv_policy_ops kv_policy_h2o = {
    .name = "h2o",
    .summary = "keep the most recent tokens and the heaviest by accumulated attention (H2O, 2023)",
    .params = h2o_params,
    .param_count = (int)(sizeof h2o_params / sizeof h2o_params[0]),
    .statistics = KV_STATISTICS_ACCUMULATED,
    .on_prefill_end = h2o_apply,
    .on_decode_step = h2o_apply,
};
