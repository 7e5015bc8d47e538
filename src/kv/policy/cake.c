/* kv/policy/cake.c: CAKE, "cake".
 *
 * From "CAKE: Cascading and Adaptive KV Cache Eviction with Layer
 * Preferences" (Qin, Cao, Lin, Hu, Fan, Cheng, Lin and Li; ICLR 2025):
 * layers differ in how widely their attention spreads (spatial dispersion)
 * and in how much it moves from query to query (temporal shift), so one
 * total budget is sliced among the layers by a preference score, and keys
 * are scored by the mean and the variance of the attention they receive, so
 * that a key whose importance shifts over the queries is not dropped for a
 * steadily mediocre one.
 *
 * Statistics OBSERVATION with mass_squares: per (layer, KV head) table and
 * per slot j, m_j = the sum of the probabilities p that the last
 * `observation` prompt queries put on j, over the query heads of the group,
 * and s_j = the sum of their squares p^2.
 *
 * Mean and variance from the two sums. The session hands over sums, not
 * counts; N, the number of (query, query head) pairs observed, is recovered
 * exactly from the masses themselves: every observed pair's probabilities
 * sum to 1 over the table's slots, so N = round(sum over all slots of m_j)
 * (observation x group heads, or fewer queries for a prompt shorter than the
 * window). Then, over those N samples,
 *   mean_j = m_j / N,   var_j = (s_j - m_j^2 / N) / (N - 1)   (0 when N < 2).
 * The paper's code takes, per query head, the mean and the (unbiased)
 * variance over the window's queries, then averages over the heads of the
 * group; the mean is the same, the variance here also counts how far the
 * group's heads differ from one another (per-head sums are not collected).
 *
 * What the policy does once, at the end of the prompt (on_prefill_end):
 *   w = min(observation, budget) last slots of every table are kept (the
 *   window, as in the paper's code), the other slots j < n - w are scored:
 *     indicator_j = mean_j + gamma * var_j,
 *   average-pooled over `kernel` neighbouring slots (clipped at the edges,
 *   as kv/policy/snapkv.c does; the paper's code pads with zeros).
 *   Per global layer l, over its KV heads (averaged) and its slots before
 *   the window:
 *     H_l = entropy of the layer's window attention: -sum a_j ln a_j with
 *           a_j = m_j / sum of m over those slots. The paper sums p ln p per
 *           query row; per-row probabilities are not collected, so this is
 *           the entropy of the rows' sum: equal when the queries attend
 *           alike, larger when they wander (it measures the same spread).
 *     V_l = sum over those slots of var_j (the paper: the variance over the
 *           window queries, summed over heads and keys).
 *     P_l = H_l^(1/tau1) * V_l^(1/tau2)   (all P_l zero: equal preferences)
 *   The total T = L * (budget - w) over the L global layers (so L * budget
 *   slots with the windows) is sliced in proportion to P_l; a layer cannot
 *   take more than the slots it has before its window (cap_l), and what a
 *   capped layer cannot take goes to the others, again in proportion to
 *   their preferences (water-filling; the paper's code spreads that excess
 *   evenly instead). Shares are rounded down, and the slots rounding left
 *   over go one each to the largest fractions (ties: the lower layer). When
 *   the caps sum to at most T every layer keeps everything. Each table then
 *   keeps its window plus its layer's share of highest pooled indicator
 *   (ties: the older slot).
 *
 * The cascade. The paper runs this during the prefill, layer by layer:
 * after layer l's attention, T is re-sliced among layers 0..l and each is
 * cut to its share, so the cache of the layers seen so far never exceeds T
 * while the prompt is read. strata's hooks run between prompt chunks, after
 * every layer has stored the chunk, and the window statistics exist only
 * once the prompt's last `observation` tokens have run, that is after the
 * last chunk: before it no preference can be measured and no slot scored.
 * So strata does not cascade (on_prefill_chunk is unused, and the prompt's
 * full cache exists for a moment, as for SnapKV) and computes the cascade's
 * final stage directly at on_prefill_end. The kept slots are the same: a
 * layer's share only falls as later layers join the slicing (adding a
 * layer lowers the water level), and the top k by a fixed score are
 * nested, so cutting in stages ends where one cut ends, up to the rounding
 * of shares to whole slots. Bounding the prefill's peak would need a hook
 * after each layer's attention inside the forward step.
 *
 * Decode steps, as the paper's code: every table stays at the size its
 * layer was given. After a step, if the global tables of a KV head hold more
 * than L * budget slots in all (each grew by one), each of those tables
 * (holding more than w slots) drops the one slot before its window that the
 * step's query attended least, the step's attention average-pooled over
 * `kernel` slots as above (ties: the newer slot goes). The step's attention
 * is the growth of m_j since the previous hook, kept per slot in a slot
 * array (the session adds decode queries to the observation sums).
 *
 * Parameters:
 *   observation  (default 32, the paper's window) last prompt queries whose
 *                attention is summed, and slots always kept; the session
 *                reads it by name.
 *   kernel       (default 5, the paper's code) width of the average pooling.
 *   gamma        (default 200, the paper's code) weight of the variance.
 *   tau1, tau2   (default 1 and 1, the paper's code when no tuned pair is
 *                given; its per-model tuned values range 0.4..2.3)
 *                temperatures of the entropy and the variance in P_l. */
#include "kv/policy.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"

enum { CAKE_OBSERVATION = 0, CAKE_KERNEL = 1, CAKE_GAMMA = 2, CAKE_TAU1 = 3, CAKE_TAU2 = 4 };
enum { CAKE_PREVIOUS_MASS = 0, CAKE_SLOT_ARRAYS = 1 }; /* the slot array: m_j at the previous hook */

static const kv_policy_param cake_params[] = {
    {"observation", 32, 1, 1 << 20, "last prompt queries whose attention scores keys and layers (slots always kept)"},
    {"kernel", 5, 1, 1 << 10, "width of the average pooling of the scores along the slots"},
    {"gamma", 200, 0, 1e9, "weight of the variance in the eviction indicator mean + gamma * variance"},
    {"tau1", 1, 0.01, 100, "temperature of the entropy in the layer preference H^(1/tau1) * V^(1/tau2)"},
    {"tau2", 1, 0.01, 100, "temperature of the variance in the layer preference"},
};

/* Scratch for one hook, sized for the largest table. */
typedef struct cake_scratch {
    float *scores;
    float *pooled;
    int64_t *order;
    int64_t *keep;
} cake_scratch;

static bool cake_is_global(const kv_policy_view *view, int32_t layer)
{
    return view->layer_is_windowed == NULL || !view->layer_is_windowed[layer];
}

static int64_t cake_table(const kv_policy_view *view, int32_t layer, int32_t head)
{
    return (int64_t)layer * view->kv_head_count + head;
}

static int64_t cake_slots(const kv_policy_view *view, int32_t layer, int32_t head)
{
    return kv_seq_table(view->seq, layer, head)->slot_count;
}

/* The slots always kept at the end of every table. */
static int64_t cake_window(const kv_policy_view *view)
{
    int64_t observation = (int64_t)llround(view->params[CAKE_OBSERVATION]);
    return observation < view->budget ? observation : view->budget;
}

static float *cake_previous_mass(const kv_policy_view *view, int64_t table)
{
    if (view->slot_arrays == NULL || view->slot_array_count < CAKE_SLOT_ARRAYS)
        return NULL;
    return view->slot_arrays[table * view->slot_array_count + CAKE_PREVIOUS_MASS];
}

static void cake_scratch_free(cake_scratch *scratch)
{
    free(scratch->scores);
    free(scratch->pooled);
    free(scratch->order);
    free(scratch->keep);
}

static strata_status cake_scratch_init(const kv_policy_view *view, cake_scratch *scratch, strata_error *err)
{
    int64_t most = 1;
    for (int32_t layer = 0; layer < view->layer_count; layer++)
        for (int32_t head = 0; cake_is_global(view, layer) && head < view->kv_head_count; head++)
            if (cake_slots(view, layer, head) > most)
                most = cake_slots(view, layer, head);
    scratch->scores = malloc((size_t)most * sizeof *scratch->scores);
    scratch->pooled = malloc((size_t)most * sizeof *scratch->pooled);
    scratch->order = malloc((size_t)most * sizeof *scratch->order);
    scratch->keep = malloc((size_t)most * sizeof *scratch->keep);
    if (scratch->scores == NULL || scratch->pooled == NULL || scratch->order == NULL || scratch->keep == NULL) {
        cake_scratch_free(scratch);
        *scratch = (cake_scratch){0};
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "cake: cannot allocate scratch for %" PRId64 " slots", most);
    }
    return STRATA_OK;
}

/* pooled[i] = mean of scores[i - kernel/2 .. i + (kernel-1)/2], clipped to [0, n). */
static void cake_pool(const float *scores, int64_t n, int64_t kernel, float *pooled)
{
    int64_t before = kernel / 2, after = (kernel - 1) / 2;
    for (int64_t i = 0; i < n; i++) {
        int64_t first = i - before < 0 ? 0 : i - before;
        int64_t last = i + after >= n ? n - 1 : i + after;
        double sum = 0;
        for (int64_t j = first; j <= last; j++)
            sum += scores[j];
        pooled[i] = (float)(sum / (double)(last - first + 1));
    }
}

/* N: the (query, query head) pairs summed into a table's masses. */
static int64_t cake_observed_pairs(const float *mass, int64_t slots)
{
    double total = 0;
    for (int64_t j = 0; j < slots; j++)
        total += mass[j];
    return (int64_t)llround(total);
}

/* The variance of slot j's probability over the n observed pairs. */
static double cake_variance(double mass, double squares, int64_t n)
{
    if (n < 2)
        return 0.0;
    double variance = (squares - mass * mass / (double)n) / (double)(n - 1);
    return variance > 0.0 ? variance : 0.0;
}

/* Entropy and summed variance of one table's slots [0, before). */
static void cake_table_preference(const float *mass, const float *squares, int64_t slots, int64_t before,
                                  double *entropy, double *variance)
{
    int64_t n = cake_observed_pairs(mass, slots);
    double total = 0, spread = 0;
    for (int64_t j = 0; j < before; j++) {
        total += mass[j];
        spread += cake_variance(mass[j], squares[j], n);
    }
    double sum = 0;
    for (int64_t j = 0; total > 0 && j < before; j++)
        if (mass[j] > 0) {
            double a = mass[j] / total;
            sum -= a * log(a);
        }
    *entropy = sum;
    *variance = spread;
}

/* Slices total among the layers in proportion to preference[l], none above
 * cap[l] (the caps sum to more than total), into whole slots in share[l], as
 * the top of the file says; exact and capped are scratch of `layers` entries. */
static void cake_slice(const double *preference, const int64_t *cap, int32_t layers, int64_t total, int64_t *share,
                       double *exact, bool *capped)
{
    for (int32_t l = 0; l < layers; l++)
        capped[l] = cap[l] == 0;
    /* Water-filling: a layer whose proportional share reaches its cap keeps
     * the cap, and the rest is sliced again among the others. */
    bool changed = true;
    while (changed) {
        changed = false;
        double left = (double)total, weights = 0;
        int32_t open = 0;
        for (int32_t l = 0; l < layers; l++) {
            if (capped[l])
                left -= (double)cap[l];
            else {
                weights += preference[l];
                open++;
            }
        }
        for (int32_t l = 0; l < layers; l++) {
            if (capped[l]) {
                exact[l] = (double)cap[l];
                continue;
            }
            exact[l] = weights > 0 ? left * preference[l] / weights : left / (double)open;
            if (exact[l] >= (double)cap[l]) {
                capped[l] = true;
                changed = true;
            }
        }
    }
    int64_t given = 0;
    for (int32_t l = 0; l < layers; l++) {
        share[l] = (int64_t)floor(exact[l]);
        share[l] = share[l] < 0 ? 0 : share[l] > cap[l] ? cap[l] : share[l];
        given += share[l];
    }
    /* The slots the rounding left over, one each: largest fraction first (ties: the lower layer). */
    while (given < total) {
        int32_t best = -1;
        double best_fraction = -1;
        for (int32_t l = 0; l < layers; l++) {
            double fraction = exact[l] - (double)share[l];
            if (share[l] < cap[l] && fraction > best_fraction) {
                best = l;
                best_fraction = fraction;
            }
        }
        share[best]++;
        given++;
        exact[best] = (double)share[best];
    }
}

/* Keeps the window and the `chosen` slots of highest pooled score before it. */
static strata_status cake_keep_top(const kv_policy_view *view, int32_t layer, int32_t head, int64_t window,
                                   int64_t chosen, cake_scratch *scratch, strata_error *err)
{
    int64_t slots = cake_slots(view, layer, head);
    int64_t kernel = (int64_t)llround(view->params[CAKE_KERNEL]);
    int64_t kept_window = window < slots ? window : slots;
    int64_t before = slots - kept_window;
    if (chosen > before)
        chosen = before;
    int64_t count = 0;
    if (chosen > 0) {
        cake_pool(scratch->scores, before, kernel, scratch->pooled);
        kv_policy_rank(scratch->pooled, before, scratch->order);
        for (int64_t i = 0; i < chosen; i++)
            scratch->keep[count++] = scratch->order[i];
        kv_policy_sort_indices(scratch->keep, count);
    }
    for (int64_t i = before; i < slots; i++)
        scratch->keep[count++] = i;
    if (count == slots)
        return STRATA_OK;
    return kv_policy_keep(view, layer, head, scratch->keep, count, err);
}

/* Remembers every global table's mass, so the next hook sees a step's growth. */
static void cake_remember_mass(const kv_policy_view *view)
{
    for (int32_t layer = 0; layer < view->layer_count; layer++)
        for (int32_t head = 0; cake_is_global(view, layer) && head < view->kv_head_count; head++) {
            int64_t table = cake_table(view, layer, head);
            float *previous = cake_previous_mass(view, table);
            if (previous != NULL && view->mass != NULL && view->mass[table] != NULL)
                memcpy(previous, view->mass[table], (size_t)cake_slots(view, layer, head) * sizeof(float));
        }
}

/* Checks that every global table has what the hooks read. */
static strata_status cake_check_view(const kv_policy_view *view, bool squares, strata_error *err)
{
    for (int32_t layer = 0; layer < view->layer_count; layer++)
        for (int32_t head = 0; cake_is_global(view, layer) && head < view->kv_head_count; head++) {
            int64_t table = cake_table(view, layer, head);
            if (view->mass == NULL || view->mass[table] == NULL ||
                (squares && (view->mass_squares == NULL || view->mass_squares[table] == NULL)))
                return strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                                   "cake: no observation-window attention %s for layer %" PRId32 " KV head %" PRId32
                                   " (the session must keep OBSERVATION statistics with mass_squares)",
                                   squares ? "mass and squared mass" : "mass", layer, head);
            if (cake_previous_mass(view, table) == NULL)
                return strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                                   "cake: no slot array for layer %" PRId32 " KV head %" PRId32
                                   " (the session must give the policy its %d slot array)",
                                   layer, head, (int)CAKE_SLOT_ARRAYS);
        }
    return STRATA_OK;
}

/* Fills scratch->scores[0..before) with a table's indicator mean + gamma * variance. */
static void cake_indicator(const kv_policy_view *view, int64_t table, int64_t slots, int64_t before,
                           cake_scratch *scratch)
{
    const float *mass = view->mass[table], *squares = view->mass_squares[table];
    int64_t n = cake_observed_pairs(mass, slots);
    double gamma = view->params[CAKE_GAMMA];
    for (int64_t j = 0; j < before; j++) {
        double mean = n > 0 ? mass[j] / (double)n : 0.0;
        scratch->scores[j] = (float)(mean + gamma * cake_variance(mass[j], squares[j], n));
    }
}

/* The layer preferences P_l of the global layers (0 for windowed ones). */
static void cake_preferences(const kv_policy_view *view, int64_t window, double *preference)
{
    double tau1 = view->params[CAKE_TAU1], tau2 = view->params[CAKE_TAU2];
    for (int32_t layer = 0; layer < view->layer_count; layer++) {
        preference[layer] = 0;
        if (!cake_is_global(view, layer))
            continue;
        double entropy = 0, variance = 0;
        for (int32_t head = 0; head < view->kv_head_count; head++) {
            int64_t table = cake_table(view, layer, head), slots = cake_slots(view, layer, head);
            int64_t before = slots > window ? slots - window : 0;
            double h = 0, v = 0;
            cake_table_preference(view->mass[table], view->mass_squares[table], slots, before, &h, &v);
            entropy += h / view->kv_head_count;
            variance += v / view->kv_head_count;
        }
        double p = pow(entropy, 1.0 / tau1) * pow(variance, 1.0 / tau2);
        preference[layer] = isfinite(p) && p > 0 ? p : 0;
    }
}

/* Slices the budget among the global layers and cuts each to its share;
 * cap, share, preference, exact and capped are scratch per layer. */
static strata_status cake_compress(const kv_policy_view *view, int64_t window, int64_t *cap, int64_t *share,
                                   double *preference, double *exact, bool *capped, strata_error *err)
{
    /* Per global layer, in order: its cap (slots before the window), preference and share. */
    cake_preferences(view, window, preference);
    int32_t globals = 0;
    int64_t caps = 0;
    for (int32_t layer = 0; layer < view->layer_count; layer++) {
        if (!cake_is_global(view, layer))
            continue;
        int64_t most = 0;
        for (int32_t head = 0; head < view->kv_head_count; head++)
            if (cake_slots(view, layer, head) - window > most)
                most = cake_slots(view, layer, head) - window;
        cap[globals] = most;
        preference[globals] = preference[layer];
        caps += most;
        globals++;
    }
    int64_t total = (int64_t)globals * (view->budget - window);
    if (caps <= total)
        return STRATA_OK; /* every layer keeps everything */
    cake_slice(preference, cap, globals, total, share, exact, capped);
    cake_scratch scratch = {0};
    strata_status status = cake_scratch_init(view, &scratch, err);
    int32_t g = 0;
    for (int32_t layer = 0; layer < view->layer_count && status == STRATA_OK; layer++) {
        if (!cake_is_global(view, layer))
            continue;
        int64_t chosen = share[g++];
        for (int32_t head = 0; head < view->kv_head_count && status == STRATA_OK; head++) {
            int64_t table = cake_table(view, layer, head), slots = cake_slots(view, layer, head);
            if (chosen > 0 && slots > window)
                cake_indicator(view, table, slots, slots - window, &scratch);
            status = cake_keep_top(view, layer, head, window, chosen, &scratch, err);
        }
    }
    cake_scratch_free(&scratch);
    return status;
}

static strata_status cake_prefill_end(const kv_policy_view *view, strata_error *err)
{
    if (view->budget < 0)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT, "cake: the KV budget is %" PRId64 ", below 0",
                           view->budget);
    strata_status status = cake_check_view(view, true, err);
    if (status != STRATA_OK)
        return status;
    size_t layers = (size_t)view->layer_count;
    int64_t *cap = calloc(layers, sizeof *cap), *share = calloc(layers, sizeof *share);
    double *preference = calloc(layers, sizeof *preference), *exact = calloc(layers, sizeof *exact);
    bool *capped = calloc(layers, sizeof *capped);
    if (cap == NULL || share == NULL || preference == NULL || exact == NULL || capped == NULL)
        status = strata_fail(err, STRATA_E_OUT_OF_MEMORY, "cake: cannot allocate budgets for %" PRId32 " layers",
                             view->layer_count);
    else
        status = cake_compress(view, cake_window(view), cap, share, preference, exact, capped, err);
    free(cap);
    free(share);
    free(preference);
    free(exact);
    free(capped);
    if (status == STRATA_OK)
        cake_remember_mass(view);
    return status;
}

static strata_status cake_decode_step(const kv_policy_view *view, strata_error *err)
{
    if (view->budget < 0)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT, "cake: the KV budget is %" PRId64 ", below 0",
                           view->budget);
    strata_status status = cake_check_view(view, false, err);
    if (status != STRATA_OK)
        return status;
    int64_t window = cake_window(view);
    int32_t globals = 0;
    for (int32_t layer = 0; layer < view->layer_count; layer++)
        globals += cake_is_global(view, layer) ? 1 : 0;
    cake_scratch scratch = {0};
    for (int32_t head = 0; head < view->kv_head_count && status == STRATA_OK; head++) {
        /* Each table of the head grew by one: over the total, each drops one. */
        int64_t held = 0;
        for (int32_t layer = 0; layer < view->layer_count; layer++)
            held += cake_is_global(view, layer) ? cake_slots(view, layer, head) : 0;
        if (held <= (int64_t)globals * view->budget)
            continue;
        if (scratch.keep == NULL && (status = cake_scratch_init(view, &scratch, err)) != STRATA_OK)
            break;
        for (int32_t layer = 0; layer < view->layer_count && status == STRATA_OK; layer++) {
            if (!cake_is_global(view, layer))
                continue;
            int64_t table = cake_table(view, layer, head), slots = cake_slots(view, layer, head);
            if (slots <= window)
                continue;
            int64_t before = slots - window;
            const float *mass = view->mass[table], *previous = cake_previous_mass(view, table);
            for (int64_t j = 0; j < before; j++)
                scratch.scores[j] = mass[j] - previous[j]; /* this step's attention */
            status = cake_keep_top(view, layer, head, window, before - 1, &scratch, err);
        }
    }
    cake_scratch_free(&scratch);
    if (status == STRATA_OK)
        cake_remember_mass(view);
    return status;
}

const kv_policy_ops kv_policy_cake = {
    .name = "cake",
    .summary = "layer budgets by attention entropy and variance, keys by mean + gamma * variance (CAKE, 2025)",
    .params = cake_params,
    .param_count = (int)(sizeof cake_params / sizeof cake_params[0]),
    .statistics = KV_STATISTICS_OBSERVATION,
    .mass_squares = true,
    .slot_arrays = CAKE_SLOT_ARRAYS,
    .on_prefill_end = cake_prefill_end,
    .on_decode_step = cake_decode_step,
};
