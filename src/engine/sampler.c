/* engine/sampler.c: choosing the next token from logits.
 *
 * Order of operations, as llama.cpp's default chain applies them: repetition
 * penalty over the recent window, then (unless greedy) top-k, top-p
 * (nucleus) and min-p on the untempered distribution, then temperature on
 * what is left, and a draw with a seeded xoshiro256** generator, so a seed
 * reproduces a run exactly.
 * Implements the strata_sampler_* functions of strata.h. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "strata.h"

typedef struct candidate {
    int32_t token;
    float logit;
} candidate;

struct strata_sampler {
    strata_sampler_options options;
    int32_t vocab_size;
    candidate *candidates;
    double *weights;       /* per candidate, reused every call */
    int32_t *recent;       /* ring of the last repetition_window tokens */
    int32_t recent_count;
    int32_t recent_next;
    uint64_t state[4];
};

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rotate_left(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t next_random(strata_sampler *s)
{
    uint64_t *q = s->state;
    uint64_t result = rotate_left(q[1] * 5, 7) * 9;
    uint64_t t = q[1] << 17;
    q[2] ^= q[0];
    q[3] ^= q[1];
    q[1] ^= q[2];
    q[0] ^= q[3];
    q[2] ^= t;
    q[3] = rotate_left(q[3], 45);
    return result;
}

/* A uniform float in [0, 1). */
static double next_uniform(strata_sampler *s)
{
    return (double)(next_random(s) >> 11) * (1.0 / 9007199254740992.0);
}

strata_sampler_options strata_sampler_defaults(void)
{
    return (strata_sampler_options){.temperature = 0.0f, .top_k = 0, .top_p = 1.0f, .min_p = 0.0f,
                                    .repetition_penalty = 1.0f, .repetition_window = 64, .seed = 0};
}

strata_status strata_sampler_create(const strata_sampler_options *options, int32_t vocab_size,
                                    strata_sampler **out, strata_error *err)
{
    *out = NULL;
    if (options->temperature < 0.0f || !isfinite(options->temperature))
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT, "temperature %g must be >= 0", options->temperature);
    if (options->top_k < 0)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT, "top-k %d must be >= 0", options->top_k);
    if (!(options->top_p > 0.0f && options->top_p <= 1.0f))
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT, "top-p %g must be in (0, 1]", options->top_p);
    if (!(options->min_p >= 0.0f && options->min_p <= 1.0f))
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT, "min-p %g must be in [0, 1]", options->min_p);
    if (!(options->repetition_penalty > 0.0f) || !isfinite(options->repetition_penalty))
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT, "repetition penalty %g must be > 0",
                           options->repetition_penalty);
    if (options->repetition_window < 0 || options->repetition_window > (1 << 20))
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT, "repetition window %d must be in 0..1048576",
                           options->repetition_window);
    if (vocab_size <= 0)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT, "vocabulary size %d must be positive", vocab_size);
    strata_sampler *s = calloc(1, sizeof *s);
    if (s == NULL)
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "cannot allocate a sampler");
    s->options = *options;
    s->vocab_size = vocab_size;
    s->candidates = malloc((size_t)vocab_size * sizeof *s->candidates);
    s->weights = malloc((size_t)vocab_size * sizeof *s->weights);
    s->recent = malloc((size_t)(options->repetition_window > 0 ? options->repetition_window : 1) * sizeof(int32_t));
    if (s->candidates == NULL || s->weights == NULL || s->recent == NULL) {
        strata_sampler_destroy(s);
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "cannot allocate sampler buffers for %d tokens", vocab_size);
    }
    uint64_t seed = options->seed;
    for (int i = 0; i < 4; i++)
        s->state[i] = splitmix64(&seed);
    *out = s;
    return STRATA_OK;
}

void strata_sampler_destroy(strata_sampler *sampler)
{
    if (sampler == NULL)
        return;
    free(sampler->candidates);
    free(sampler->weights);
    free(sampler->recent);
    free(sampler);
}

void strata_sampler_accept(strata_sampler *s, int32_t token)
{
    int32_t window = s->options.repetition_window;
    if (window <= 0)
        return;
    s->recent[s->recent_next] = token;
    s->recent_next = (s->recent_next + 1) % window;
    if (s->recent_count < window)
        s->recent_count++;
}

static int by_logit_descending(const void *a, const void *b)
{
    const candidate *x = a, *y = b;
    if (x->logit != y->logit)
        return x->logit < y->logit ? 1 : -1;
    return x->token - y->token; /* ties: lower id first, for determinism */
}

/* Moves the k best candidates to the front, sorted. */
static void keep_top(candidate *c, int32_t count, int32_t k)
{
    /* Partial selection: a full sort of 262144 candidates every token is wasteful. */
    int32_t kept = 0;
    float threshold = -INFINITY;
    for (int32_t i = 0; i < count; i++) {
        if (kept < k || c[i].logit > threshold) {
            if (kept < k)
                c[kept++] = c[i];
            else {
                int32_t worst = 0;
                for (int32_t j = 1; j < kept; j++)
                    if (by_logit_descending(&c[j], &c[worst]) > 0)
                        worst = j;
                c[worst] = c[i];
            }
            threshold = INFINITY;
            for (int32_t j = 0; j < kept; j++)
                if (c[j].logit < threshold)
                    threshold = c[j].logit;
        }
    }
    qsort(c, (size_t)kept, sizeof *c, by_logit_descending);
}

int32_t strata_sampler_sample(strata_sampler *s, const float *logits)
{
    const strata_sampler_options *o = &s->options;
    candidate *c = s->candidates;
    int32_t count = s->vocab_size;
    for (int32_t i = 0; i < count; i++)
        c[i] = (candidate){.token = i, .logit = logits[i]};
    if (o->repetition_penalty != 1.0f)
        for (int32_t i = 0; i < s->recent_count; i++) {
            candidate *r = &c[s->recent[i]];
            if (r->logit == logits[r->token]) /* penalize each distinct token once */
                r->logit = r->logit > 0 ? r->logit / o->repetition_penalty : r->logit * o->repetition_penalty;
        }
    int32_t chosen;
    if (o->temperature <= 0.0f) {
        chosen = 0;
        for (int32_t i = 1; i < count; i++)
            if (c[i].logit > c[chosen].logit)
                chosen = i;
        chosen = c[chosen].token;
    } else {
        if (o->top_k > 0 && o->top_k < count) {
            keep_top(c, count, o->top_k);
            count = o->top_k;
        } else {
            /* Without top-k, sorting all 262144 candidates each token is slow; tokens
             * more than 30 (times the temperature, if above 1) below the best have weight < e^-30 each, so
             * dropping them first changes no probability by more than 1e-7. */
            float best = c[0].logit;
            for (int32_t i = 1; i < count; i++)
                if (c[i].logit > best)
                    best = c[i].logit;
            float floor = best - 30.0f * (o->temperature > 1.0f ? o->temperature : 1.0f);
            int32_t kept = 0;
            for (int32_t i = 0; i < count; i++)
                if (c[i].logit >= floor)
                    c[kept++] = c[i];
            count = kept;
            qsort(c, (size_t)count, sizeof *c, by_logit_descending);
        }
        double max_logit = c[0].logit, sum = 0.0;
        double *weights = s->weights;
        for (int32_t i = 0; i < count; i++)
            weights[i] = exp((double)c[i].logit - max_logit); /* temperature 1 for the filters */
        int32_t kept = count;
        if (o->top_p < 1.0f) {
            double total = 0.0, running = 0.0;
            for (int32_t i = 0; i < count; i++)
                total += weights[i];
            for (int32_t i = 0; i < count; i++) {
                running += weights[i];
                if (running >= o->top_p * total) {
                    kept = i + 1;
                    break;
                }
            }
        }
        if (o->min_p > 0.0f) /* drop tokens below min_p times the best one's probability */
            for (int32_t i = 1; i < kept; i++)
                if (weights[i] < o->min_p * weights[0]) {
                    kept = i;
                    break;
                }
        for (int32_t i = 0; i < kept; i++) {
            weights[i] = exp(((double)c[i].logit - max_logit) / o->temperature);
            sum += weights[i];
        }
        double target = next_uniform(s) * sum, running = 0.0;
        chosen = c[kept - 1].token;
        for (int32_t i = 0; i < kept; i++) {
            running += weights[i];
            if (target < running) {
                chosen = c[i].token;
                break;
            }
        }
    }
    strata_sampler_accept(s, chosen);
    return chosen;
}
