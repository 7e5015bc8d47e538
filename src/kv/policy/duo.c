/* kv/policy/duo.c: retrieval and streaming heads, "duo".
 *
 * From "DuoAttention: Efficient Long-Context LLM Inference with Retrieval
 * and Streaming Heads" (Xiao et al., 2024) and "RazorAttention: Efficient KV
 * Cache Compression Through Retrieval Heads" (Tang et al., 2024): only a
 * minority of heads ever read tokens far back (retrieval heads, which copy
 * from the context); the rest look at the first tokens (attention sinks) and
 * the recent ones (streaming heads). Which head is which is a property of
 * the model, measured once offline: here by `strata calibrate`, which scores
 * each (layer, KV head) by the attention it puts on the slot a copy task
 * must read (RazorAttention's induction criterion; DuoAttention instead
 * trains a gate per head) and writes a head profile (engine/calibrate.h)
 * the session loads into view->head_scores.
 *
 * Among the tables of the global layers, the round(retrieval_ratio * count)
 * of highest score (ties: the lower layer, then head) are retrieval heads
 * and keep every slot. Every other table is a streaming head: after the
 * prompt and after every decode step it keeps its first `sinks` slots and
 * its most recent budget - sinks, like the streaming policy. The budget thus
 * bounds the streaming heads only. RazorAttention's compensation token (the
 * mean of the dropped keys and values) is not built.
 *
 * Parameters:
 *   retrieval_ratio  (default 0.5) share of the global tables kept whole.
 *                    DuoAttention uses 25% for models with a KV head per
 *                    query head and 50% for grouped-query models, whose KV
 *                    heads each serve several query heads; strata's models
 *                    group their query heads, so 0.5.
 *   sinks            (default 4) leading slots a streaming head keeps; when
 *                    the budget is at most `sinks` it keeps the last
 *                    `budget` slots and no sinks (as streaming does). */
#include "kv/policy.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>

#include "base/error.h"

enum { DUO_RETRIEVAL_RATIO = 0, DUO_SINKS = 1 };

static const kv_policy_param duo_params[] = {
    {"retrieval_ratio", 0.5, 0, 1, "share of the global (layer, KV head) tables, highest scores first, kept whole"},
    {"sinks", 4, 0, 1 << 20, "leading slots (attention sinks) a streaming head keeps"},
};

/* Marks retrieval[table] for the highest-scoring global tables. */
static strata_status choose_retrieval_heads(const kv_policy_view *view, bool *retrieval, strata_error *err)
{
    int64_t tables = (int64_t)view->layer_count * view->kv_head_count, global = 0;
    float *scores = calloc((size_t)tables, sizeof *scores);
    int64_t *table_of = malloc((size_t)tables * sizeof *table_of);
    int64_t *order = malloc((size_t)tables * sizeof *order);
    if (scores == NULL || table_of == NULL || order == NULL) {
        free(scores);
        free(table_of);
        free(order);
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "duo: cannot allocate the ranking of %" PRId64 " tables",
                           tables);
    }
    for (int64_t t = 0; t < tables; t++) {
        retrieval[t] = false;
        if (view->layer_is_windowed != NULL && view->layer_is_windowed[t / view->kv_head_count])
            continue;
        scores[global] = view->head_scores[t];
        table_of[global++] = t;
    }
    kv_policy_rank(scores, global, order);
    int64_t kept = (int64_t)llround(view->params[DUO_RETRIEVAL_RATIO] * (double)global);
    for (int64_t i = 0; i < kept && i < global; i++)
        retrieval[table_of[order[i]]] = true;
    free(scores);
    free(table_of);
    free(order);
    return STRATA_OK;
}

/* Compacts every streaming head over the budget to sinks + the most recent. */
static strata_status duo_apply(const kv_policy_view *view, strata_error *err)
{
    if (view->head_scores == NULL)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                           "duo: the session has no head profile (make one with `strata calibrate`)");
    if (view->budget < 0)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT, "duo: the KV budget is %" PRId64 ", below 0",
                           view->budget);
    int64_t sinks = (int64_t)llround(view->params[DUO_SINKS]);

    int64_t tables = (int64_t)view->layer_count * view->kv_head_count;
    bool *retrieval = malloc((size_t)tables * sizeof *retrieval);
    int64_t *keep = malloc((size_t)(view->budget > 0 ? view->budget : 1) * sizeof *keep);
    strata_status status = retrieval == NULL || keep == NULL
        ? strata_fail(err, STRATA_E_OUT_OF_MEMORY, "duo: cannot allocate a keep list of %" PRId64 " slots",
                      view->budget)
        : choose_retrieval_heads(view, retrieval, err);
    for (int64_t t = 0; t < tables && status == STRATA_OK; t++) {
        int32_t layer = (int32_t)(t / view->kv_head_count), head = (int32_t)(t % view->kv_head_count);
        if (retrieval[t] || (view->layer_is_windowed != NULL && view->layer_is_windowed[layer]))
            continue;
        if (kv_seq_table(view->seq, layer, head)->slot_count > view->budget)
            status = kv_policy_keep_sinks_and_recent(view, layer, head, sinks, keep, err);
    }
    free(retrieval);
    free(keep);
    return status;
}

const kv_policy_ops kv_policy_duo = {
    .name = "duo",
    .summary = "retrieval heads (from `strata calibrate`) keep everything, streaming heads keep sinks and the "
               "most recent (DuoAttention / RazorAttention, 2024)",
    .params = duo_params,
    .param_count = (int)(sizeof duo_params / sizeof duo_params[0]),
    .statistics = KV_STATISTICS_NONE,
    .head_profile = true,
    .on_prefill_end = duo_apply,
    .on_decode_step = duo_apply,
};
