/* kv/policy/streaming.c: StreamingLLM, "streaming".
 *
 * From "Efficient Streaming Language Models with Attention Sinks" (Xiao et
 * al., 2023): the first few tokens of a sequence receive a large share of
 * every query's attention whatever their content (attention sinks), so a
 * cache that keeps them plus a window of the most recent tokens stays
 * stable far past the window, while a plain sliding window collapses once
 * the sinks leave it. Per (layer, KV head) table over its budget, this
 * policy keeps the first `sinks` slots and the most recent budget - sinks
 * slots after every chunk of a prompt (so a prompt of any length is read
 * with at most the budget plus one chunk of 512 slots per table: the stream
 * never holds more, and later chunks attend to the sinks and the recent
 * window, as the paper's streaming setting does), after the prompt and after
 * every decode step; it needs no statistics. Keys keep their original positions (strata does not
 * re-rotate them to cache positions as the paper's variant does).
 *
 * Parameters:
 *   sinks  (default 4, as in the paper) leading slots always kept.
 * When the budget is at most `sinks`, the policy keeps the last `budget`
 * slots and no sinks: the most recent tokens carry the local context the
 * next token depends on, and a cache of sinks alone cannot generate. */
#include "kv/policy.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>

#include "base/error.h"

enum { STREAMING_SINKS = 0 };

static const kv_policy_param streaming_params[] = {
    {"sinks", 4, 0, 1 << 20, "leading slots (attention sinks) always kept"},
};

/* Compacts every global table over the budget to sinks + the most recent. */
static strata_status streaming_apply(const kv_policy_view *view, strata_error *err)
{
    if (view->budget < 0)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT, "streaming: the KV budget is %" PRId64 ", below 0",
                           view->budget);
    int64_t sinks = (int64_t)llround(view->params[STREAMING_SINKS]);

    int64_t *keep = NULL;
    if (view->budget > 0) {
        keep = malloc((size_t)view->budget * sizeof *keep);
        if (keep == NULL)
            return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "streaming: cannot allocate a keep list of %" PRId64
                               " slots", view->budget);
    }
    strata_status status = STRATA_OK;
    for (int32_t layer = 0; layer < view->layer_count && status == STRATA_OK; layer++) {
        if (view->layer_is_windowed != NULL && view->layer_is_windowed[layer])
            continue;
        for (int32_t head = 0; head < view->kv_head_count && status == STRATA_OK; head++) {
            if (kv_seq_table(view->seq, layer, head)->slot_count > view->budget)
                status = kv_policy_keep_sinks_and_recent(view, layer, head, sinks, keep, err);
        }
    }
    free(keep);
    return status;
}

const kv_policy_ops kv_policy_streaming = {
    .name = "streaming",
    .summary = "keep the first tokens (attention sinks) and the most recent (StreamingLLM, 2023)",
    .params = streaming_params,
    .param_count = (int)(sizeof streaming_params / sizeof streaming_params[0]),
    .statistics = KV_STATISTICS_NONE,
    .on_prefill_chunk = streaming_apply,
    .on_prefill_end = streaming_apply,
    .on_decode_step = streaming_apply,
};
