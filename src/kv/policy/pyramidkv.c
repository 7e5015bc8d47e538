/* kv/policy/pyramidkv.c: PyramidKV, "pyramidkv".
 *
 * From "PyramidKV: Dynamic KV Cache Compression based on Pyramidal
 * Information Funneling" (Cai et al., 2024): lower layers spread their
 * attention over the whole prompt, higher layers focus it on a few keys, so
 * lower layers get more of the cache and higher layers less. Scores and
 * choice are SnapKV's (kv/policy/snapkv.c, through snapkv_compress): the
 * last `observation` slots kept, the rest of a layer's budget by pooled
 * observation-window mass. Only the budget differs per layer. Once, at the
 * end of the prefill; decode steps keep everything, as in SnapKV.
 *
 * The budgets, as the paper's code computes them. With L global (not
 * windowed) layers, numbered i = 0..L-1 from the lowest, B = view->budget,
 * n the most slots in a global table, w = min(observation, B) the window
 * and C = B - w the slots chosen by mass in an average layer:
 *
 *   c_min = max(1, floor(C / beta))      (0 when C is 0)
 *   c_max = 2C - c_min
 *   if c_max > n - w:  c_max = n - w, c_min = 2C - c_max
 *                      (the lowest layers cannot keep more than there is;
 *                      what they cannot use goes to the highest)
 *   x_i   = c_max - (c_max - c_min) * i / (L - 1)      (x_0 = C when L = 1)
 *   c_i   = floor(x_i), except that the first r layers whose x_i has a
 *           fraction round up, r = L*C - sum of floor(x_i)
 *   budget of layer i = w + c_i
 *
 * x_i runs arithmetically from c_max down to c_min and is symmetric about
 * C, so the budgets sum to exactly L * B and decrease from the lowest global
 * layer to the highest; each keeps at least its window plus c_min slots.
 * When n <= B nothing changes (every c_i would be at least n - w). beta = 1
 * gives every layer B: SnapKV exactly.
 *
 * Parameters: observation, kernel, pooling as SnapKV, and
 *   beta  (default 20, the paper's) the slope: the highest layer chooses
 *         about 1/beta of the average layer's slots by mass. */
#include "kv/policy.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>

#include "base/error.h"
#include "kv/policy/snapkv_select.h"

enum { PYRAMIDKV_BETA = 3 };

static const kv_policy_param pyramidkv_params[] = {
    {"observation", 32, 1, 1 << 20, "last prompt queries whose attention scores the keys (slots always kept)"},
    {"kernel", 7, 1, 1 << 10, "width of the 1-D pooling of the scores along the slots"},
    {"pooling", 0, 0, 1, "0: max pooling, 1: average pooling"},
    {"beta", 20, 1, 1 << 20, "slope: the highest layer chooses about 1/beta of the average layer's slots"},
};

/* Fills budgets[layer] for the global layers by the formula above; n > B. */
static void pyramidkv_budgets(const kv_policy_view *view, int64_t n, int64_t *budgets)
{
    int64_t observation = (int64_t)llround(view->params[SNAPKV_OBSERVATION]);
    double beta = view->params[PYRAMIDKV_BETA];
    int64_t layers = 0;
    for (int32_t layer = 0; layer < view->layer_count; layer++)
        if (view->layer_is_windowed == NULL || !view->layer_is_windowed[layer])
            layers++;
    int64_t window = observation < view->budget ? observation : view->budget;
    int64_t average = view->budget - window; /* C */
    int64_t low = average == 0 ? 0 : (int64_t)floor((double)average / beta);
    if (average > 0 && low < 1)
        low = 1;
    int64_t high = 2 * average - low;
    if (high > n - window) {
        high = n - window;
        low = 2 * average - high;
    }
    int64_t span = high - low, steps = layers - 1;
    int64_t floor_sum = 0;
    int64_t i = 0;
    for (int32_t layer = 0; layer < view->layer_count; layer++) {
        if (view->layer_is_windowed != NULL && view->layer_is_windowed[layer])
            continue;
        int64_t drop = steps == 0 ? high - average : (span * i + steps - 1) / steps; /* ceil(span*i/steps) */
        budgets[layer] = high - drop;
        floor_sum += budgets[layer];
        i++;
    }
    int64_t missing = layers * average - floor_sum; /* the fractions floor dropped */
    i = 0;
    for (int32_t layer = 0; layer < view->layer_count && missing > 0; layer++) {
        if (view->layer_is_windowed != NULL && view->layer_is_windowed[layer])
            continue;
        if (steps > 0 && span * i % steps != 0) {
            budgets[layer]++;
            missing--;
        }
        i++;
    }
    for (int32_t layer = 0; layer < view->layer_count; layer++)
        budgets[layer] += window;
}

static strata_status pyramidkv_prefill_end(const kv_policy_view *view, strata_error *err)
{
    if (view->budget < 0)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT, "pyramidkv: the KV budget is %" PRId64 ", below 0",
                           view->budget);
    int64_t most_slots;
    strata_status status = kv_policy_largest_table(view, view->budget, false, "pyramidkv", &most_slots, err);
    if (status != STRATA_OK || most_slots <= view->budget)
        return status;
    int64_t *budgets = calloc((size_t)view->layer_count, sizeof *budgets);
    if (budgets == NULL)
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "pyramidkv: cannot allocate budgets for %" PRId32 " layers",
                           view->layer_count);
    pyramidkv_budgets(view, most_slots, budgets);
    status = snapkv_compress(view, budgets, "pyramidkv", err);
    free(budgets);
    return status;
}

const kv_policy_ops kv_policy_pyramidkv = {
    .name = "pyramidkv",
    .summary = "SnapKV's choice with layer budgets falling from the lowest layer to the highest (PyramidKV, 2024)",
    .params = pyramidkv_params,
    .param_count = (int)(sizeof pyramidkv_params / sizeof pyramidkv_params[0]),
    .statistics = KV_STATISTICS_OBSERVATION,
    .on_prefill_end = pyramidkv_prefill_end,
    .on_decode_step = NULL,
};
