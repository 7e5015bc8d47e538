/* kv/policy/windowkv.c: WindowKV, "windowkv".
 *
 * From "WindowKV: Task-Adaptive Group-Wise KV Cache Window Selection for
 * Efficient LLM Inference" (2025; the details below follow the authors'
 * code, github.com/optim996/WindowKV): keeping single scattered tokens
 * breaks the phrases they belong to, so the cache keeps whole windows of
 * consecutive tokens, chosen by the attention the last prompt tokens (the
 * observation window) put on them; and since neighbouring layers choose
 * alike, a group of layers shares one choice, computed once.
 *
 * Statistics OBSERVATION: per (layer, KV head) table and per slot, the mass
 * the last `observation` prompt queries put on it, summed over the query
 * heads of the group.
 *
 * Once, at the end of the prompt (on_prefill_end), for a table of n slots
 * over the budget B:
 *   w = min(observation, B) last slots are kept (the observation window);
 *   the slots before them, [0, n - w), are cut into windows of `window`
 *   consecutive slots from slot 0 (the last one may be shorter);
 *   a window's score is, per KV head, the mean of its slots' masses
 *   (strategy 1, "average") or the mean of its top max(1, window/2) masses
 *   (strategy 0, "max"), summed over the KV heads of the layer that chooses
 *   (the paper's code: per query head, averaged over the heads);
 *   windows are taken by score (ties: the earlier window) while they fit in
 *   the B - w slots left, so a table never holds more than B.
 * The budget counts the window, as for kv/policy/snapkv.c; the paper's code
 * gives its budget to the slots before the window and keeps the window on
 * top, and it drops the ceil((n - w - budget) / window) lowest windows,
 * which keeps up to window - 1 slots more than its budget when the short
 * last window is among them.
 * Groups: the global layers, numbered 0..L-1 from the lowest (windowed layers
 * are left alone), form groups of `group` consecutive layers; the first
 * layer of a group chooses the windows for every table of the group, from
 * the masses of all its KV heads (as the paper's code, which scores a window
 * over every head of the first layer of the group and reuses the indices in
 * the other layers). The choice is by slot index, so it applies to tables
 * holding the same number of slots as the choosing layer; they always do
 * under this policy (it cuts every table of a group alike, and slots arrive
 * in every table together). A table with another slot count chooses from its
 * own masses.
 *
 * Not done: the paper picks the strategy per task with a trained classifier
 * (BERT) on the question ("max" with a 32-token observation window, or
 * "average" with 16); strata has no classifier, so the strategy is a
 * parameter. The paper's code also gives groups falling budgets (as
 * PyramidKV, kv/policy/pyramidkv.c); here every layer keeps the same budget.
 * Decode steps keep everything, as in the paper: the cache grows again.
 *
 * Parameters:
 *   observation  (default 32, the paper's for "max") last prompt queries whose
 *                attention scores the windows, and slots always kept; the
 *                session reads it by name.
 *   window       (default 8, the paper's) slots per window.
 *   group        (default 8, the paper's) global layers sharing one choice.
 *   strategy     (default 0) 0: "max" score, 1: "average" score. */
#include "kv/policy.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>

#include "base/error.h"

enum { WINDOWKV_OBSERVATION = 0, WINDOWKV_WINDOW = 1, WINDOWKV_GROUP = 2, WINDOWKV_STRATEGY = 3 };

static const kv_policy_param windowkv_params[] = {
    {"observation", 32, 1, 1 << 20, "last prompt queries whose attention scores the windows (slots always kept)"},
    {"window", 8, 1, 1 << 10, "consecutive slots per window: the unit kept or dropped"},
    {"group", 8, 1, 1 << 10, "consecutive global layers sharing the choice of their first layer"},
    {"strategy", 0, 0, 1, "window score: 0 mean of its top window/2 masses (max), 1 mean of its masses (average)"},
};

/* Scratch for one hook: window scores, order and flags, a group's choice and one table's own. */
typedef struct windowkv_scratch {
    float *scores;
    float *values;
    int64_t *order;
    bool *taken;
    int64_t *shared; /* the group's keep list */
    int64_t *own;    /* a keep list for a table with another slot count */
    const float **sources;
} windowkv_scratch;

static bool windowkv_is_global(const kv_policy_view *view, int32_t layer)
{
    return view->layer_is_windowed == NULL || !view->layer_is_windowed[layer];
}

static int64_t windowkv_slots(const kv_policy_view *view, int32_t layer, int32_t head)
{
    return kv_seq_table(view->seq, layer, head)->slot_count;
}

static const float *windowkv_mass(const kv_policy_view *view, int32_t layer, int32_t head)
{
    return view->mass != NULL ? view->mass[(int64_t)layer * view->kv_head_count + head] : NULL;
}

static int by_value_descending(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x < y) - (x > y);
}

/* The score of the window of slots [first, first + length) in one mass array. */
static double windowkv_score(const float *mass, int64_t first, int64_t length, int64_t window, bool average,
                             float *values)
{
    int64_t taken = length;
    const float *from = mass + first;
    if (!average) { /* the mean of the window's top max(1, window/2) masses */
        int64_t top = window / 2 > 1 ? window / 2 : 1;
        taken = top < length ? top : length;
        for (int64_t i = 0; i < length; i++)
            values[i] = from[i];
        qsort(values, (size_t)length, sizeof *values, by_value_descending);
        from = values;
    }
    double sum = 0;
    for (int64_t i = 0; i < taken; i++)
        sum += from[i];
    return sum / (double)taken;
}

/* Writes into keep the slots that a table of `slots` slots keeps when the
 * masses sources[0..source_count) (one per KV head, scores summed) choose
 * its windows; returns how many. */
static int64_t windowkv_choose(const kv_policy_view *view, const float *const *sources, int32_t source_count,
                               int64_t slots, windowkv_scratch *scratch, int64_t *keep)
{
    int64_t observation = (int64_t)llround(view->params[WINDOWKV_OBSERVATION]);
    int64_t window = (int64_t)llround(view->params[WINDOWKV_WINDOW]);
    bool average = llround(view->params[WINDOWKV_STRATEGY]) != 0;
    int64_t recent = observation < view->budget ? observation : view->budget;
    int64_t before = slots - recent, room = view->budget - recent;
    int64_t windows = room > 0 ? (before + window - 1) / window : 0, count = 0;
    for (int64_t i = 0; i < windows; i++) {
        int64_t first = i * window, length = first + window <= before ? window : before - first;
        double score = 0;
        for (int32_t s = 0; s < source_count; s++)
            score += windowkv_score(sources[s], first, length, window, average, scratch->values);
        scratch->scores[i] = (float)score;
        scratch->taken[i] = false;
    }
    kv_policy_rank(scratch->scores, windows, scratch->order);
    for (int64_t r = 0; r < windows && room > 0; r++) { /* by score, each window that still fits */
        int64_t i = scratch->order[r], first = i * window;
        int64_t length = first + window <= before ? window : before - first;
        if (length <= room) {
            scratch->taken[i] = true;
            room -= length;
        }
    }
    for (int64_t j = 0; j < before && windows > 0; j++)
        if (scratch->taken[j / window])
            keep[count++] = j;
    for (int64_t j = before; j < slots; j++)
        keep[count++] = j;
    return count;
}

static void windowkv_scratch_free(windowkv_scratch *scratch)
{
    free(scratch->scores);
    free(scratch->values);
    free(scratch->order);
    free(scratch->taken);
    free(scratch->shared);
    free(scratch->own);
    free(scratch->sources);
}

/* Compresses the tables of the global layers layers[0..count), one group;
 * layers[0] chooses for the tables of its slot count. */
static strata_status windowkv_group(const kv_policy_view *view, const int32_t *layers, int32_t count,
                                    windowkv_scratch *scratch, strata_error *err)
{
    int32_t chooser = layers[0];
    int64_t chooser_slots = windowkv_slots(view, chooser, 0);
    int32_t source_count = 0;
    for (int32_t head = 0; head < view->kv_head_count; head++)
        if (windowkv_slots(view, chooser, head) == chooser_slots)
            scratch->sources[source_count++] = windowkv_mass(view, chooser, head);
    int64_t shared_count = -1; /* chosen on first use */
    strata_status status = STRATA_OK;
    for (int32_t i = 0; i < count && status == STRATA_OK; i++)
        for (int32_t head = 0; head < view->kv_head_count && status == STRATA_OK; head++) {
            int64_t slots = windowkv_slots(view, layers[i], head);
            if (slots <= view->budget)
                continue;
            if (slots == chooser_slots) {
                if (shared_count < 0)
                    shared_count = windowkv_choose(view, scratch->sources, source_count, slots, scratch,
                                                   scratch->shared);
                status = kv_policy_keep(view, layers[i], head, scratch->shared, shared_count, err);
            } else {
                const float *own[1] = {windowkv_mass(view, layers[i], head)};
                int64_t own_count = windowkv_choose(view, own, 1, slots, scratch, scratch->own);
                status = kv_policy_keep(view, layers[i], head, scratch->own, own_count, err);
            }
        }
    return status;
}

static strata_status windowkv_prefill_end(const kv_policy_view *view, strata_error *err)
{
    if (view->budget < 0)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT, "windowkv: the KV budget is %" PRId64 ", below 0",
                           view->budget);
    int64_t observation = (int64_t)llround(view->params[WINDOWKV_OBSERVATION]);
    int32_t group = (int32_t)llround(view->params[WINDOWKV_GROUP]);
    int64_t most_slots = 0;
    for (int32_t layer = 0; layer < view->layer_count; layer++)
        for (int32_t head = 0; windowkv_is_global(view, layer) && head < view->kv_head_count; head++)
            if (windowkv_slots(view, layer, head) > most_slots)
                most_slots = windowkv_slots(view, layer, head);
    if (most_slots <= view->budget)
        return STRATA_OK;
    /* Any global layer may choose for its group: with windows to choose, every one needs masses. */
    for (int32_t layer = 0; layer < view->layer_count && view->budget > observation; layer++)
        for (int32_t head = 0; windowkv_is_global(view, layer) && head < view->kv_head_count; head++)
            if (windowkv_mass(view, layer, head) == NULL)
                return strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                                   "windowkv: no observation-window attention mass for layer %" PRId32
                                   " KV head %" PRId32 " (the session must keep OBSERVATION statistics)",
                                   layer, head);
    windowkv_scratch scratch = {
        .scores = malloc((size_t)most_slots * sizeof(float)),
        .values = malloc((size_t)most_slots * sizeof(float)),
        .order = malloc((size_t)most_slots * sizeof(int64_t)),
        .taken = malloc((size_t)most_slots * sizeof(bool)),
        .shared = malloc((size_t)most_slots * sizeof(int64_t)),
        .own = malloc((size_t)most_slots * sizeof(int64_t)),
        .sources = malloc((size_t)view->kv_head_count * sizeof(const float *)),
    };
    int32_t *globals = malloc((size_t)view->layer_count * sizeof *globals);
    strata_status status = STRATA_OK;
    if (scratch.scores == NULL || scratch.values == NULL || scratch.order == NULL || scratch.taken == NULL ||
        scratch.shared == NULL || scratch.own == NULL || scratch.sources == NULL || globals == NULL)
        status = strata_fail(err, STRATA_E_OUT_OF_MEMORY, "windowkv: cannot allocate scratch for %" PRId64 " slots",
                             most_slots);
    int32_t global_count = 0;
    for (int32_t layer = 0; status == STRATA_OK && layer < view->layer_count; layer++)
        if (windowkv_is_global(view, layer))
            globals[global_count++] = layer;
    for (int32_t first = 0; status == STRATA_OK && first < global_count; first += group) {
        int32_t count = global_count - first < group ? global_count - first : group;
        status = windowkv_group(view, globals + first, count, &scratch, err);
    }
    free(globals);
    windowkv_scratch_free(&scratch);
    return status;
}

const kv_policy_ops kv_policy_windowkv = {
    .name = "windowkv",
    .summary = "keep whole windows of consecutive keys by observation attention, shared by groups of layers "
               "(WindowKV, 2025)",
    .params = windowkv_params,
    .param_count = (int)(sizeof windowkv_params / sizeof windowkv_params[0]),
    .statistics = KV_STATISTICS_OBSERVATION,
    .on_prefill_end = windowkv_prefill_end,
    .on_decode_step = NULL,
};
