/* kv/policy/snapkv.c: SnapKV, "snapkv".
 *
 * From "SnapKV: LLM Knows What You are Looking for Before Generation" (Li et
 * al., 2024): the attention the last prompt tokens (the observation window,
 * usually the question) put on earlier keys predicts which keys generation
 * will attend to. The attention kernel sums, per (layer, KV head) and per
 * slot, the mass the last `observation` prompt queries put on it over the
 * query heads of the group (statistics OBSERVATION). Once, at the end of
 * the prefill, each table over its budget keeps its last `observation`
 * slots (the window itself) plus the budget - observation other slots of
 * highest pooled mass (ties: the older slot). Pooling is a 1-D max or
 * average over `kernel` neighbouring slots, so a chosen key brings its
 * neighbours and the cache keeps whole phrases rather than scattered tokens.
 * The pooling runs over the slots before the window only (the paper's code
 * pools attn[..., :-window]); at the edges it is clipped: the maximum or the
 * average of the slots in range (PyTorch's avg_pool1d would count the zero
 * padding). An even kernel covers kernel/2 slots before and kernel/2 - 1
 * after, as PyTorch's padding kernel/2 does. With a budget of at most
 * `observation` slots a table keeps its last `budget` slots. Decode steps
 * keep everything: the cache grows again after the prompt, as in the paper.
 * The choice itself, snapkv_compress (kv/policy/snapkv_select.h), takes a
 * budget per layer, so that PyramidKV (kv/policy/pyramidkv.c) shares it.
 *
 * Parameters:
 *   observation  (default 32; the paper uses 32..64) last prompt queries whose
 *                attention is summed, and slots always kept; the session reads
 *                it by name to collect the mass.
 *   kernel       (default 7; the paper uses 5..7) pooling width in slots.
 *   pooling      (default 0) 0: max pooling, 1: average pooling. */
#include "kv/policy.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>

#include "base/error.h"
#include "kv/policy/snapkv_select.h"

static const kv_policy_param snapkv_params[] = {
    {"observation", 32, 1, 1 << 20, "last prompt queries whose attention scores the keys (slots always kept)"},
    {"kernel", 7, 1, 1 << 10, "width of the 1-D pooling of the scores along the slots"},
    {"pooling", 0, 0, 1, "0: max pooling, 1: average pooling"},
};

/* pooled[i] = max or mean of mass[i - kernel/2 .. i + (kernel-1)/2], clipped to [0, n). */
static void snapkv_pool(const float *mass, int64_t n, int64_t kernel, bool average, float *pooled)
{
    int64_t before = kernel / 2, after = (kernel - 1) / 2;
    for (int64_t i = 0; i < n; i++) {
        int64_t first = i - before < 0 ? 0 : i - before;
        int64_t last = i + after >= n ? n - 1 : i + after;
        double sum = 0;
        float best = mass[first];
        for (int64_t j = first; j <= last; j++) {
            sum += mass[j];
            if (mass[j] > best)
                best = mass[j];
        }
        pooled[i] = average ? (float)(sum / (double)(last - first + 1)) : best;
    }
}

/* The budget of a layer's tables. */
static int64_t snapkv_layer_budget(const kv_policy_view *view, const int64_t *layer_budgets, int32_t layer)
{
    return layer_budgets != NULL ? layer_budgets[layer] : view->budget;
}

strata_status snapkv_compress(const kv_policy_view *view, const int64_t *layer_budgets, const char *policy,
                              strata_error *err)
{
    int64_t observation = (int64_t)llround(view->params[SNAPKV_OBSERVATION]);
    int64_t kernel = (int64_t)llround(view->params[SNAPKV_KERNEL]);
    bool average = llround(view->params[SNAPKV_POOLING]) != 0;
    if (kernel < 1)
        kernel = 1;

    int64_t most_slots = 0, most_kept = 1;
    for (int32_t layer = 0; layer < view->layer_count; layer++) {
        if (view->layer_is_windowed != NULL && view->layer_is_windowed[layer])
            continue;
        int64_t budget = snapkv_layer_budget(view, layer_budgets, layer);
        if (budget < 0)
            return strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                               "%s: the KV budget of layer %" PRId32 " is %" PRId64 ", below 0", policy, layer,
                               budget);
        for (int32_t head = 0; head < view->kv_head_count; head++) {
            int64_t slots = kv_seq_table(view->seq, layer, head)->slot_count;
            if (slots <= budget)
                continue;
            if (budget > observation &&
                (view->mass == NULL || view->mass[(int64_t)layer * view->kv_head_count + head] == NULL))
                return strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                                   "%s: no observation-window attention mass for layer %" PRId32
                                   " KV head %" PRId32 " (the session must keep OBSERVATION statistics)",
                                   policy, layer, head);
            if (slots > most_slots)
                most_slots = slots;
            if (budget > most_kept)
                most_kept = budget;
        }
    }
    if (most_slots == 0)
        return STRATA_OK;
    int64_t *order = malloc((size_t)most_slots * sizeof *order);
    float *pooled = malloc((size_t)most_slots * sizeof *pooled);
    int64_t *keep = malloc((size_t)most_kept * sizeof *keep);
    if (order == NULL || pooled == NULL || keep == NULL) {
        free(order);
        free(pooled);
        free(keep);
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "%s: cannot allocate scratch for %" PRId64 " slots",
                           policy, most_slots);
    }

    strata_status status = STRATA_OK;
    for (int32_t layer = 0; layer < view->layer_count && status == STRATA_OK; layer++) {
        if (view->layer_is_windowed != NULL && view->layer_is_windowed[layer])
            continue;
        int64_t budget = snapkv_layer_budget(view, layer_budgets, layer);
        int64_t window = observation < budget ? observation : budget;
        int64_t chosen = budget - window; /* slots chosen by pooled mass */
        for (int32_t head = 0; head < view->kv_head_count && status == STRATA_OK; head++) {
            int64_t slots = kv_seq_table(view->seq, layer, head)->slot_count;
            if (slots <= budget)
                continue;
            int64_t before_window = slots - window; /* candidates: slots [0, before_window) */
            int64_t count = 0;
            if (chosen > 0) {
                snapkv_pool(view->mass[(int64_t)layer * view->kv_head_count + head], before_window, kernel,
                            average, pooled);
                kv_policy_rank(pooled, before_window, order);
                for (int64_t i = 0; i < chosen; i++)
                    keep[count++] = order[i];
                kv_policy_sort_indices(keep, count);
            }
            for (int64_t i = before_window; i < slots; i++)
                keep[count++] = i;
            status = kv_policy_keep(view, layer, head, keep, count, err);
        }
    }
    free(order);
    free(pooled);
    free(keep);
    return status;
}

static strata_status snapkv_prefill_end(const kv_policy_view *view, strata_error *err)
{
    return snapkv_compress(view, NULL, "snapkv", err);
}

const kv_policy_ops kv_policy_snapkv = {
    .name = "snapkv",
    .summary = "keep keys most attended by the last prompt tokens, pooled (SnapKV, 2024)",
    .params = snapkv_params,
    .param_count = (int)(sizeof snapkv_params / sizeof snapkv_params[0]),
    .statistics = KV_STATISTICS_OBSERVATION,
    .on_prefill_end = snapkv_prefill_end,
    .on_decode_step = NULL,
};
