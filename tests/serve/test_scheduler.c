/* tests/serve/test_scheduler.c: the serving scheduler on a tiny random model.
 *
 * Requests served together (continuous batching, chunked prefill, forks for
 * n choices) produce exactly what each produces alone at temperature 0; a
 * pool far too small for the load still finishes every request, by
 * preemption and recompute, with the same outputs; a running stream keeps
 * decoding while a long prompt is read in chunks; cancellation returns the
 * KV at once; stop strings cut the text; bad requests are refused with the
 * reason. Prompts are pseudo-random from fixed seeds. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/tiny_model.h"
#include "serve/scheduler.h"
#include "test_util.h"

enum { CONTEXT = 1024, MAX_TEXT = 8192 };

typedef struct served {
    char text[SERVE_MAX_CHOICES][MAX_TEXT];
    size_t length[SERVE_MAX_CHOICES];
    serve_finish finish[SERVE_MAX_CHOICES];
    serve_usage usage;
    int32_t choices;
    bool done;
} served;

/* A tiny Llama whose pool holds pool_blocks blocks (0: the default). */
static strata_model *open_model(int64_t pool_blocks)
{
    tiny_model_spec spec = tiny_model_llama();
    spec.context_length = CONTEXT;
    spec.key_length = 32; /* rows as long as the packed KV types' groups */
    strata_model *model = NULL;
    strata_error err = {0};
    strata_model_options options = {.threads = 2};
    CHECK_MESSAGE(tiny_model_open_with(&spec, &options, &model, &err) == STRATA_OK, "%s", err.message);
    if (model == NULL || pool_blocks == 0)
        return model;
    strata_kv_stats stats;
    strata_model_kv_stats(model, &stats);
    strata_model_close(model);
    options.kv_memory_bytes = (uint64_t)pool_blocks * stats.block_bytes;
    model = NULL;
    CHECK_MESSAGE(tiny_model_open_with(&spec, &options, &model, &err) == STRATA_OK, "%s", err.message);
    return model;
}

static serve_scheduler *open_scheduler(strata_model *model, int32_t batch_tokens)
{
    serve_scheduler_options options = {.max_batch_tokens = batch_tokens, .context_length = CONTEXT};
    serve_scheduler *scheduler = NULL;
    strata_error err = {0};
    CHECK_MESSAGE(serve_scheduler_create(model, &options, &scheduler, &err) == STRATA_OK, "%s", err.message);
    return scheduler;
}

static void make_prompt(int32_t *prompt, size_t count, uint64_t seed)
{
    random_state = seed;
    prompt[0] = 1; /* BOS */
    for (size_t i = 1; i < count; i++)
        prompt[i] = 3 + (int32_t)(random_u64() % (TINY_VOCAB - 3));
}

static serve_request_spec greedy_spec(const int32_t *prompt, size_t count, int32_t max_tokens)
{
    serve_request_spec spec = {.prompt = prompt, .prompt_count = count, .choices = 1, .max_tokens = max_tokens,
                               .sampling = strata_sampler_defaults(), .ignore_eos = true};
    return spec;
}

/* Moves a poll's updates into out. */
static void absorb(served *out, serve_poll_result *result)
{
    out->choices = result->choices;
    for (int32_t i = 0; i < result->choices; i++) {
        serve_choice_update *update = &result->updates[i];
        if (update->text != NULL && out->length[i] + update->text_length < MAX_TEXT) {
            memcpy(out->text[i] + out->length[i], update->text, update->text_length);
            out->length[i] += update->text_length;
        }
        free(update->text);
        out->finish[i] = update->finish;
    }
    out->usage = result->usage;
    out->done = result->done;
}

/* Polls until the request is done (or a minute passes). */
static void wait_done(serve_request *request, served *out)
{
    for (int i = 0; i < 600 && !out->done; i++) {
        serve_poll_result result;
        serve_request_poll(request, 100, &result);
        absorb(out, &result);
    }
    CHECK(out->done);
}

/* Serves one request on a scheduler of its own: the unloaded reference. */
static void serve_alone(strata_model *model, const serve_request_spec *spec, served *out)
{
    memset(out, 0, sizeof *out);
    serve_scheduler *scheduler = open_scheduler(model, 0);
    serve_request *request = NULL;
    strata_error err = {0};
    CHECK_MESSAGE(serve_submit(scheduler, spec, &request, &err) == STRATA_OK, "%s", err.message);
    if (request != NULL)
        wait_done(request, out);
    serve_request_release(request);
    serve_scheduler_destroy(scheduler);
}

/* Submits every spec at once and waits for all. */
static void serve_together(serve_scheduler *scheduler, const serve_request_spec *specs, int count, served *out)
{
    serve_request *requests[32] = {0};
    for (int i = 0; i < count; i++) {
        memset(&out[i], 0, sizeof out[i]);
        strata_error err = {0};
        CHECK_MESSAGE(serve_submit(scheduler, &specs[i], &requests[i], &err) == STRATA_OK, "%s", err.message);
    }
    for (int i = 0; i < count; i++)
        if (requests[i] != NULL)
            wait_done(requests[i], &out[i]);
    for (int i = 0; i < count; i++)
        serve_request_release(requests[i]);
}

static void check_same_output(const served *got, const served *want, int index)
{
    for (int32_t c = 0; c < want->choices; c++) {
        CHECK_MESSAGE(got->length[c] == want->length[c] && memcmp(got->text[c], want->text[c], want->length[c]) == 0,
                      "request %d choice %d: %zu bytes served together, %zu alone", index, c, got->length[c],
                      want->length[c]);
        CHECK_MESSAGE(got->finish[c] == want->finish[c], "request %d choice %d: finish %d vs %d alone", index, c,
                      got->finish[c], want->finish[c]);
    }
}

enum { REQUESTS = 8 };

/* Prompts of different lengths (some longer than a step's budget) and lengths of output. */
static void make_requests(int32_t prompts[REQUESTS][300], serve_request_spec *specs)
{
    for (int i = 0; i < REQUESTS; i++) {
        size_t length = 20 + (size_t)i * 37;
        make_prompt(prompts[i], length, 100 + (uint64_t)i);
        specs[i] = greedy_spec(prompts[i], length, 6 + i * 3);
    }
}

static void batched_requests_match_each_served_alone(void)
{
    strata_model *model = open_model(0);
    if (model == NULL)
        return;
    static int32_t prompts[REQUESTS][300];
    serve_request_spec specs[REQUESTS];
    make_requests(prompts, specs);
    static served alone[REQUESTS], together[REQUESTS];
    for (int i = 0; i < REQUESTS; i++)
        serve_alone(model, &specs[i], &alone[i]);
    serve_scheduler *scheduler = open_scheduler(model, 64); /* prompts span several steps */
    serve_together(scheduler, specs, REQUESTS, together);
    for (int i = 0; i < REQUESTS; i++) {
        check_same_output(&together[i], &alone[i], i);
        CHECK(together[i].usage.prompt_tokens == (int64_t)specs[i].prompt_count);
        CHECK(together[i].usage.completion_tokens == specs[i].max_tokens);
        CHECK(together[i].finish[0] == SERVE_FINISH_LENGTH);
    }
    serve_metrics metrics;
    serve_scheduler_metrics(scheduler, &metrics);
    CHECK(metrics.requests_by_finish[SERVE_FINISH_LENGTH] == REQUESTS);
    CHECK(metrics.running == 0 && metrics.waiting == 0);
    CHECK(metrics.time_to_first_token.total == REQUESTS);
    uint64_t gaps = 0;
    for (int i = 0; i < REQUESTS; i++)
        gaps += (uint64_t)specs[i].max_tokens - 1;
    CHECK_MESSAGE(metrics.time_per_output_token.total == gaps, "%llu token gaps observed, %llu made",
                  (unsigned long long)metrics.time_per_output_token.total, (unsigned long long)gaps);
    serve_scheduler_destroy(scheduler);
    strata_model_close(model);
}

static void a_pool_too_small_preempts_and_still_matches(void)
{
    strata_model *reference_model = open_model(0);
    /* 2 layers x 2 KV heads: 4 blocks per 16 tokens. 80 blocks hold about 300 tokens in all; the load grows
     * to about 1,000. */
    strata_model *model = open_model(80);
    if (model == NULL || reference_model == NULL)
        return;
    /* Short prompts, long answers: admission fits them, their growth does not. */
    static int32_t prompts[REQUESTS][300];
    serve_request_spec specs[REQUESTS];
    for (int i = 0; i < REQUESTS; i++) {
        size_t length = 16 + (size_t)i * 5;
        make_prompt(prompts[i], length, 200 + (uint64_t)i);
        specs[i] = greedy_spec(prompts[i], length, 60 + i * 10);
    }
    static served alone[REQUESTS], together[REQUESTS];
    for (int i = 0; i < REQUESTS; i++)
        serve_alone(reference_model, &specs[i], &alone[i]);
    serve_scheduler *scheduler = open_scheduler(model, 32);
    serve_together(scheduler, specs, REQUESTS, together);
    for (int i = 0; i < REQUESTS; i++)
        check_same_output(&together[i], &alone[i], i);
    serve_metrics metrics;
    serve_scheduler_metrics(scheduler, &metrics);
    CHECK_MESSAGE(metrics.preemptions > 0, "no preemption in a pool of 80 blocks");
    CHECK(metrics.requests_by_finish[SERVE_FINISH_LENGTH] == REQUESTS);
    serve_scheduler_destroy(scheduler);
    strata_model_close(model);
    strata_model_close(reference_model);
}

static void choices_are_forks_of_one_prompt(void)
{
    strata_model *model = open_model(0);
    if (model == NULL)
        return;
    int32_t prompt[40];
    make_prompt(prompt, 40, 7);
    serve_request_spec single = greedy_spec(prompt, 40, 12);
    served one, three;
    serve_alone(model, &single, &one);
    serve_request_spec spec = single;
    spec.choices = 3;
    serve_alone(model, &spec, &three);
    CHECK(three.choices == 3);
    for (int32_t c = 0; c < 3; c++)
        CHECK_MESSAGE(three.length[c] == one.length[0] && memcmp(three.text[c], one.text[0], one.length[0]) == 0,
                      "greedy choice %d differs from the single answer", c);
    CHECK(three.usage.completion_tokens == 36);
    /* Sampled choices use seeds seed, seed + 1, ...: not all alike, and each repeatable. */
    spec.sampling.temperature = 1.5f;
    spec.sampling.seed = 11;
    served first, again;
    serve_alone(model, &spec, &first);
    serve_alone(model, &spec, &again);
    bool differ = false;
    for (int32_t c = 0; c < 3; c++) {
        CHECK(first.length[c] == again.length[c] && memcmp(first.text[c], again.text[c], first.length[c]) == 0);
        differ |= first.length[c] != first.length[0] || memcmp(first.text[c], first.text[0], first.length[0]) != 0;
    }
    CHECK_MESSAGE(differ, "three sampled choices came out identical");
    strata_model_close(model);
}

static void a_stream_keeps_decoding_while_a_long_prompt_is_read(void)
{
    strata_model *model = open_model(0);
    if (model == NULL)
        return;
    serve_scheduler *scheduler = open_scheduler(model, 16);
    static int32_t short_prompt[20], long_prompt[900];
    make_prompt(short_prompt, 20, 1);
    make_prompt(long_prompt, 900, 2);
    serve_request_spec running_spec = greedy_spec(short_prompt, 20, 20), long_spec = greedy_spec(long_prompt, 900, 4);
    serve_request *running = NULL, *reading = NULL;
    strata_error err = {0};
    CHECK(serve_submit(scheduler, &running_spec, &running, &err) == STRATA_OK);
    served running_out = {0}, reading_out = {0};
    /* Once the first request streams, the long prompt arrives: 900 tokens are 60 steps of 15. */
    for (int i = 0; i < 100 && running_out.length[0] == 0 && !running_out.done; i++) {
        serve_poll_result result;
        serve_request_poll(running, 100, &result);
        absorb(&running_out, &result);
    }
    CHECK(serve_submit(scheduler, &long_spec, &reading, &err) == STRATA_OK);
    wait_done(running, &running_out);
    serve_poll_result result;
    serve_request_poll(reading, 0, &result);
    absorb(&reading_out, &result);
    CHECK_MESSAGE(reading_out.length[0] == 0 && !reading_out.done,
                  "the long prompt was read before the running stream's 20 tokens were out");
    wait_done(reading, &reading_out);
    CHECK(running_out.usage.completion_tokens == 20 && reading_out.usage.completion_tokens == 4);
    serve_request_release(running);
    serve_request_release(reading);
    serve_scheduler_destroy(scheduler);
    strata_model_close(model);
}

static void cancelling_returns_the_kv(void)
{
    strata_model *model = open_model(0);
    if (model == NULL)
        return;
    serve_scheduler *scheduler = open_scheduler(model, 0);
    int32_t prompt[100];
    make_prompt(prompt, 100, 5);
    serve_request_spec spec = greedy_spec(prompt, 100, 800);
    serve_request *request = NULL;
    strata_error err = {0};
    CHECK(serve_submit(scheduler, &spec, &request, &err) == STRATA_OK);
    served out = {0};
    for (int i = 0; i < 100 && out.length[0] == 0; i++) {
        serve_poll_result result;
        serve_request_poll(request, 100, &result);
        absorb(&out, &result);
    }
    serve_request_cancel(request);
    wait_done(request, &out);
    CHECK(out.finish[0] == SERVE_FINISH_CANCELLED);
    CHECK(serve_scheduler_wait_idle(scheduler, 5000));
    serve_metrics metrics;
    serve_scheduler_metrics(scheduler, &metrics);
    strata_kv_stats stats;
    strata_model_kv_stats(model, &stats);
    /* Only the prefix cache keeps blocks: the prompt's full blocks, at most. */
    CHECK_MESSAGE(stats.used_blocks <= stats.prefix_cached_blocks * 4, "%lld blocks in use after cancelling",
                  (long long)stats.used_blocks);
    CHECK(metrics.requests_by_finish[SERVE_FINISH_CANCELLED] == 1 && metrics.running == 0);
    serve_request_release(request);
    serve_scheduler_destroy(scheduler);
    strata_model_close(model);
}

static void a_stop_string_cuts_the_text(void)
{
    strata_model *model = open_model(0);
    if (model == NULL)
        return;
    int32_t prompt[30];
    make_prompt(prompt, 30, 9);
    serve_request_spec spec = greedy_spec(prompt, 30, 40);
    served full;
    serve_alone(model, &spec, &full);
    CHECK(full.length[0] > 12);
    if (full.length[0] <= 12)
        return;
    /* A stop string from the middle of the unstopped text: the answer ends right before its first match. */
    char stop[4];
    memcpy(stop, full.text[0] + 10, 3);
    stop[3] = '\0';
    size_t first = (size_t)((char *)memmem(full.text[0], full.length[0], stop, 3) - full.text[0]);
    spec.stops[0] = stop;
    spec.stop_count = 1;
    served cut;
    serve_alone(model, &spec, &cut);
    CHECK_MESSAGE(cut.length[0] == first && memcmp(cut.text[0], full.text[0], first) == 0,
                  "stopped text of %zu bytes, want the first %zu", cut.length[0], first);
    CHECK(cut.finish[0] == SERVE_FINISH_STOP);
    strata_model_close(model);
}

static void bad_requests_are_refused_with_the_reason(void)
{
    strata_model *model = open_model(20);
    if (model == NULL)
        return;
    serve_scheduler *scheduler = open_scheduler(model, 0);
    static int32_t prompt[CONTEXT];
    make_prompt(prompt, CONTEXT, 3);
    serve_request *request = NULL;
    strata_error err = {0};
    serve_request_spec spec = greedy_spec(prompt, 1000, 100);
    CHECK(serve_submit(scheduler, &spec, &request, &err) == STRATA_E_INVALID_ARGUMENT && request == NULL);
    CHECK_MESSAGE(strstr(err.message, "context") != NULL, "%s", err.message);
    spec = greedy_spec(prompt, 400, 10); /* 100 blocks: more than the pool's 20 */
    CHECK(serve_submit(scheduler, &spec, &request, &err) == STRATA_E_INVALID_ARGUMENT);
    CHECK_MESSAGE(strstr(err.message, "pool") != NULL, "%s", err.message);
    spec = greedy_spec(prompt, 10, 10);
    spec.session.kv_policy = "no-such-policy";
    CHECK(serve_submit(scheduler, &spec, &request, &err) == STRATA_E_INVALID_ARGUMENT);
    CHECK_MESSAGE(strstr(err.message, "no-such-policy") != NULL, "%s", err.message);
    spec = greedy_spec(prompt, 10, 10);
    spec.session.kv_policy = "snapkv+kivi4"; /* no budget: it would keep everything */
    CHECK(serve_submit(scheduler, &spec, &request, &err) == STRATA_E_INVALID_ARGUMENT);
    CHECK_MESSAGE(strstr(err.message, "kv_budget") != NULL, "%s", err.message);
    spec.session.kv_policy = "kivi4"; /* a precision alone needs none */
    CHECK_MESSAGE(serve_submit(scheduler, &spec, &request, &err) == STRATA_OK, "%s", err.message);
    serve_request_release(request);
    request = NULL;
    spec = greedy_spec(prompt, 10, 10);
    spec.choices = SERVE_MAX_CHOICES + 1;
    CHECK(serve_submit(scheduler, &spec, &request, &err) == STRATA_E_INVALID_ARGUMENT);
    serve_scheduler_start_draining(scheduler);
    spec = greedy_spec(prompt, 10, 10);
    CHECK(serve_submit(scheduler, &spec, &request, &err) == STRATA_E_UNSUPPORTED);
    serve_metrics metrics;
    serve_scheduler_metrics(scheduler, &metrics);
    CHECK(metrics.requests_rejected == 6);
    serve_scheduler_destroy(scheduler);
    strata_model_close(model);
}

static void a_policy_request_runs_beside_full_cache_ones(void)
{
    strata_model *model = open_model(0);
    if (model == NULL)
        return;
    int32_t prompt[200];
    make_prompt(prompt, 200, 13);
    serve_request_spec specs[2] = {greedy_spec(prompt, 200, 8), greedy_spec(prompt, 200, 8)};
    specs[1].session.kv_policy = "snapkv";
    specs[1].session.kv_budget_tokens = 64;
    served alone[2], together[2];
    serve_alone(model, &specs[0], &alone[0]);
    serve_alone(model, &specs[1], &alone[1]);
    serve_scheduler *scheduler = open_scheduler(model, 48);
    serve_together(scheduler, specs, 2, together);
    check_same_output(&together[0], &alone[0], 0);
    check_same_output(&together[1], &alone[1], 1);
    serve_scheduler_destroy(scheduler);
    strata_model_close(model);
}

/* One sequence at a time: A, then B and C queued behind it. First come,
 * first served runs B next; prefix-aware runs C, which shares A's prompt
 * start (cached), before B. */
static void prefix_aware_order_runs_a_shared_prefix_first(void)
{
    strata_model *model = open_model(0);
    if (model == NULL)
        return;
    for (int aware = 0; aware < 2; aware++) {
        serve_scheduler_options options = {.max_running = 1, .prefix_aware = aware == 1, .context_length = CONTEXT};
        serve_scheduler *scheduler = NULL;
        strata_error err = {0};
        CHECK(serve_scheduler_create(model, &options, &scheduler, &err) == STRATA_OK);
        if (scheduler == NULL)
            break;
        int32_t a[64], b[64], c[64];
        make_prompt(a, 64, 31);
        make_prompt(b, 64, 32);
        make_prompt(c, 64, 33);
        memcpy(c, a, 48 * sizeof *c); /* C shares A's first three blocks */
        serve_request_spec specs[3] = {greedy_spec(a, 64, 30), greedy_spec(b, 64, 600), greedy_spec(c, 64, 600)};
        serve_request *requests[3] = {0};
        for (int i = 0; i < 3; i++)
            CHECK(serve_submit(scheduler, &specs[i], &requests[i], &err) == STRATA_OK);
        /* One at a time: when the request expected second is done, the third has at most begun. */
        int second = aware ? 2 : 1, third = aware ? 1 : 2;
        served out[3] = {0};
        if (requests[0] != NULL && requests[second] != NULL && requests[third] != NULL) {
            wait_done(requests[0], &out[0]);
            wait_done(requests[second], &out[second]);
            serve_poll_result result;
            serve_request_poll(requests[third], 0, &result);
            absorb(&out[third], &result);
            CHECK_MESSAGE(!out[third].done, "%s: request %d finished before request %d",
                          aware ? "prefix-aware" : "first come, first served", third, second);
            wait_done(requests[third], &out[third]);
            if (aware)
                CHECK_MESSAGE(out[2].usage.cached_tokens == 48, "%lld cached", (long long)out[2].usage.cached_tokens);
        }
        for (int i = 0; i < 3; i++)
            serve_request_release(requests[i]);
        serve_scheduler_destroy(scheduler);
    }
    strata_model_close(model);
}

int main(void)
{
    RUN_CASE(batched_requests_match_each_served_alone);
    RUN_CASE(a_pool_too_small_preempts_and_still_matches);
    RUN_CASE(choices_are_forks_of_one_prompt);
    RUN_CASE(a_stream_keeps_decoding_while_a_long_prompt_is_read);
    RUN_CASE(cancelling_returns_the_kv);
    RUN_CASE(a_stop_string_cuts_the_text);
    RUN_CASE(bad_requests_are_refused_with_the_reason);
    RUN_CASE(a_policy_request_runs_beside_full_cache_ones);
    RUN_CASE(prefix_aware_order_runs_a_shared_prefix_first);
    TEST_EXIT();
}
