/* tests/engine/test_sampler.c: greedy picks the maximum, a seed reproduces a
 * run, top-k 1 is greedy, min-p and top-p cut the tail, the repetition
 * penalty pushes recent tokens down, and bad options are refused. */
#include <math.h>
#include <stdlib.h>

#include "strata.h"
#include "test_util.h"

enum { VOCAB = 1000 };

static void fill_logits(float *logits, unsigned seed)
{
    for (int i = 0; i < VOCAB; i++) {
        seed = seed * 1103515245u + 12345u;
        logits[i] = (float)((seed >> 8) % 1000) / 100.0f;
    }
}

static int argmax(const float *logits)
{
    int best = 0;
    for (int i = 1; i < VOCAB; i++)
        if (logits[i] > logits[best])
            best = i;
    return best;
}

static strata_sampler *make(strata_sampler_options options)
{
    strata_sampler *sampler = NULL;
    strata_error error;
    CHECK(strata_sampler_create(&options, VOCAB, &sampler, &error) == STRATA_OK);
    return sampler;
}

static void greedy_picks_the_largest_logit(void)
{
    float logits[VOCAB];
    fill_logits(logits, 1);
    strata_sampler *sampler = make(strata_sampler_defaults());
    CHECK(strata_sampler_sample(sampler, logits) == argmax(logits));
    strata_sampler_destroy(sampler);
}

static void same_seed_same_tokens_other_seed_other_tokens(void)
{
    float logits[VOCAB];
    for (int i = 0; i < VOCAB; i++)
        logits[i] = 0.0f; /* uniform: the draw alone decides */
    strata_sampler_options options = strata_sampler_defaults();
    options.temperature = 1.0f;
    options.seed = 7;
    strata_sampler *a = make(options), *b = make(options);
    options.seed = 8;
    strata_sampler *c = make(options);
    int same = 0, differ = 0;
    for (int i = 0; i < 50; i++) {
        int x = strata_sampler_sample(a, logits), y = strata_sampler_sample(b, logits), z = strata_sampler_sample(c, logits);
        same += x == y;
        differ += x != z;
    }
    CHECK(same == 50);
    CHECK(differ > 40);
    strata_sampler_destroy(a);
    strata_sampler_destroy(b);
    strata_sampler_destroy(c);
}

static void top_k_one_is_greedy(void)
{
    float logits[VOCAB];
    fill_logits(logits, 3);
    strata_sampler_options options = strata_sampler_defaults();
    options.temperature = 5.0f;
    options.top_k = 1;
    strata_sampler *sampler = make(options);
    for (int i = 0; i < 20; i++)
        CHECK(strata_sampler_sample(sampler, logits) == argmax(logits));
    strata_sampler_destroy(sampler);
}

static void min_p_and_top_p_keep_only_the_head(void)
{
    float logits[VOCAB];
    for (int i = 0; i < VOCAB; i++)
        logits[i] = -10.0f;
    logits[10] = 5.0f;
    logits[20] = 4.5f; /* probability ratio to the best: e^-0.5 = 0.61 */
    strata_sampler_options options = strata_sampler_defaults();
    options.temperature = 1.0f;
    options.min_p = 0.7f; /* keeps only token 10 */
    strata_sampler *sampler = make(options);
    for (int i = 0; i < 50; i++)
        CHECK(strata_sampler_sample(sampler, logits) == 10);
    strata_sampler_destroy(sampler);
    options.min_p = 0.0f;
    options.top_p = 0.5f; /* token 10 alone holds > 50% */
    sampler = make(options);
    for (int i = 0; i < 50; i++)
        CHECK(strata_sampler_sample(sampler, logits) == 10);
    strata_sampler_destroy(sampler);
}

static void repetition_penalty_demotes_recent_tokens(void)
{
    float logits[VOCAB];
    for (int i = 0; i < VOCAB; i++)
        logits[i] = 0.0f;
    logits[1] = 2.0f;
    logits[2] = 1.5f;
    strata_sampler_options options = strata_sampler_defaults();
    options.repetition_penalty = 2.0f; /* 2.0 / 2 = 1.0 < 1.5 */
    strata_sampler *sampler = make(options);
    strata_sampler_accept(sampler, 1);
    CHECK(strata_sampler_sample(sampler, logits) == 2);
    strata_sampler_destroy(sampler);
}

static void bad_options_are_refused_with_a_message(void)
{
    strata_sampler_options options = strata_sampler_defaults();
    strata_sampler *sampler = NULL;
    strata_error error = {0};
    options.top_p = 0.0f;
    CHECK(strata_sampler_create(&options, VOCAB, &sampler, &error) == STRATA_E_INVALID_ARGUMENT);
    CHECK(sampler == NULL && error.message[0] != '\0');
    options = strata_sampler_defaults();
    options.temperature = -1.0f;
    CHECK(strata_sampler_create(&options, VOCAB, &sampler, &error) == STRATA_E_INVALID_ARGUMENT);
    options = strata_sampler_defaults();
    CHECK(strata_sampler_create(&options, 0, &sampler, &error) == STRATA_E_INVALID_ARGUMENT);
}

int main(void)
{
    RUN_CASE(greedy_picks_the_largest_logit);
    RUN_CASE(same_seed_same_tokens_other_seed_other_tokens);
    RUN_CASE(top_k_one_is_greedy);
    RUN_CASE(min_p_and_top_p_keep_only_the_head);
    RUN_CASE(repetition_penalty_demotes_recent_tokens);
    RUN_CASE(bad_options_are_refused_with_a_message);
    TEST_EXIT();
}
