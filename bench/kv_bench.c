/* bench/kv_bench.c: benchmarks of the KV cache core, through the public API.
 *
 *   strata-kv-bench batch  [-m MODEL] [-t T] [--sequences 1,4,16] [--prompt 32] [--steps 64]
 *       decode tokens/s with N sequences in one batched step (each prefilled
 *       with its own prompt first); throughput should rise with N.
 *   strata-kv-bench fork   [-m MODEL] [-t T] [--parallel 16] [--prompt 4096] [--generate 32]
 *       KV bytes of P continuations of one prompt: forked (sharing the
 *       prompt's blocks) versus each prefilling its own copy.
 *   strata-kv-bench prefix [-m MODEL] [-t T] [--requests 32] [--system 2048] [--question 64]
 *       time to first token of R requests that share a system prompt and
 *       differ in their question, with the prefix cache on and off.
 *   strata-kv-bench policies [-m MODEL] [-t T] [--prompt 16384] [--budgets 2048,512] [--generate 32]
 *                            [--policies LIST] [--profile FILE] [--kv-type f32|f16|bf16]
 *       for the full cache, every KV policy at each budget, every precision
 *       alone (once: no budget) and a few compositions (POLICY+PRECISION) at
 *       each budget: KV bytes the session holds after the prompt and after
 *       decoding, and decode tokens/s. --policies picks the names instead;
 *       duo needs --profile (a file from `strata calibrate`) and says so
 *       in its row when it is missing.
 *
 * Tokens are drawn from the vocabulary with fixed seeds. Every mode prints
 * one line per measurement and, with --json, one JSON object per line. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "strata.h"

typedef struct bench_options {
    const char *mode;
    const char *model_path;
    int threads;
    int sequences[16];
    int sequence_counts;
    int prompt;
    int steps;
    int parallel;
    int generate;
    int requests;
    int system;
    int question;
    int budgets[8];
    int budget_count;
    const char *policies;  /* comma-separated names, or NULL: all */
    const char *profile;   /* head profile for duo, or NULL */
    strata_kv_type kv_type; /* the pool's base type */
    bool json;
} bench_options;

static double now_seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void random_tokens(int32_t *tokens, int count, int32_t vocab, uint64_t seed)
{
    for (int i = 0; i < count; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        tokens[i] = 3 + (int32_t)((seed >> 33) % (uint64_t)(vocab - 3)); /* skip pad/eos/bos */
    }
}

static int fail(const char *what, const strata_error *error)
{
    fprintf(stderr, "strata-kv-bench: %s: %s\n", what, error->message);
    return 1;
}

static int argmax(const float *logits, int32_t vocab)
{
    int best = 0;
    for (int i = 1; i < vocab; i++)
        if (logits[i] > logits[best])
            best = i;
    return best;
}

/* Decode throughput with N sequences per batched step. */
static int bench_batch(strata_model *model, const bench_options *o)
{
    int32_t vocab = strata_model_vocab_size(model);
    strata_error error = {0};
    for (int c = 0; c < o->sequence_counts; c++) {
        int n = o->sequences[c];
        strata_session **sessions = calloc((size_t)n, sizeof *sessions);
        int32_t *prompt = malloc((size_t)o->prompt * sizeof *prompt), *next = calloc((size_t)n, sizeof *next);
        const int32_t **pointers = calloc((size_t)n, sizeof *pointers);
        size_t *counts = calloc((size_t)n, sizeof *counts);
        strata_session_options session_options = {.context_length = o->prompt + o->steps + 1};
        for (int i = 0; i < n; i++) {
            if (strata_session_create(model, &session_options, &sessions[i], &error) != STRATA_OK)
                return fail("session", &error);
            random_tokens(prompt, o->prompt, vocab, 100 + (uint64_t)i);
            if (strata_session_append(sessions[i], prompt, (size_t)o->prompt, false, &error) != STRATA_OK)
                return fail("prefill", &error);
            next[i] = argmax(strata_session_logits(sessions[i], 0), vocab);
            pointers[i] = &next[i];
            counts[i] = 1;
        }
        double start = now_seconds();
        for (int step = 0; step < o->steps; step++) {
            if (strata_sessions_append(sessions, pointers, counts, (size_t)n, &error) != STRATA_OK)
                return fail("decode step", &error);
            for (int i = 0; i < n; i++)
                next[i] = argmax(strata_session_logits(sessions[i], 0), vocab);
        }
        double seconds = now_seconds() - start;
        double tokens_per_second = (double)n * o->steps / seconds;
        if (o->json)
            printf("{\"bench\": \"batch_decode\", \"sequences\": %d, \"steps\": %d, \"prompt\": %d, \"threads\": %d, "
                   "\"decode_tok_s\": %.2f}\n", n, o->steps, o->prompt, strata_model_threads(model), tokens_per_second);
        else
            printf("batch decode: %2d sequences x %d steps: %8.1f tok/s (%.1f ms per step)\n", n, o->steps,
                   tokens_per_second, seconds / o->steps * 1e3);
        for (int i = 0; i < n; i++)
            strata_session_destroy(sessions[i]);
        free(sessions);
        free(prompt);
        free(next);
        free(pointers);
        free(counts);
    }
    return 0;
}

/* Decodes `generate` greedy tokens in each session, batched. */
static int decode_all(strata_session **sessions, int n, int generate, int32_t vocab, strata_error *error)
{
    int32_t *next = calloc((size_t)n, sizeof *next);
    const int32_t **pointers = calloc((size_t)n, sizeof *pointers);
    size_t *counts = calloc((size_t)n, sizeof *counts);
    int status = 0;
    for (int step = 0; step < generate && status == 0; step++) {
        for (int i = 0; i < n; i++) {
            /* Different continuations: sequence i takes the (i+1)-th... simply offset the argmax. */
            next[i] = (argmax(strata_session_logits(sessions[i], 0), vocab) + i) % vocab;
            pointers[i] = &next[i];
            counts[i] = 1;
        }
        if (strata_sessions_append(sessions, pointers, counts, (size_t)n, error) != STRATA_OK)
            status = 1;
    }
    free(next);
    free(pointers);
    free(counts);
    return status;
}

/* KV bytes of P continuations: forked from one prefill versus P prefills. */
static int bench_fork(strata_model *model, const bench_options *o)
{
    int32_t vocab = strata_model_vocab_size(model);
    int n = o->parallel;
    strata_error error = {0};
    int32_t *prompt = malloc((size_t)o->prompt * sizeof *prompt);
    random_tokens(prompt, o->prompt, vocab, 7);
    strata_session **sessions = calloc((size_t)n, sizeof *sessions);
    strata_session_options session_options = {.context_length = o->prompt + o->generate + 1};
    uint64_t used[2];
    double seconds[2];
    for (int copied = 0; copied <= 1; copied++) {
        double start = now_seconds();
        for (int i = 0; i < n; i++) {
            if (copied || i == 0) {
                if (strata_session_create(model, &session_options, &sessions[i], &error) != STRATA_OK ||
                    strata_session_append(sessions[i], prompt, (size_t)o->prompt, false, &error) != STRATA_OK)
                    return fail("prefill", &error);
            } else if (strata_session_fork(sessions[0], &sessions[i], &error) != STRATA_OK) {
                return fail("fork", &error);
            }
        }
        if (decode_all(sessions, n, o->generate, vocab, &error) != 0)
            return fail("decode", &error);
        seconds[copied] = now_seconds() - start;
        strata_kv_stats stats;
        strata_model_kv_stats(model, &stats);
        used[copied] = stats.used_bytes;
        for (int i = 0; i < n; i++)
            strata_session_destroy(sessions[i]);
    }
    if (o->json)
        printf("{\"bench\": \"fork\", \"parallel\": %d, \"prompt\": %d, \"generate\": %d, \"shared_kv_bytes\": %llu, "
               "\"copied_kv_bytes\": %llu, \"shared_seconds\": %.3f, \"copied_seconds\": %.3f}\n",
               n, o->prompt, o->generate, (unsigned long long)used[0], (unsigned long long)used[1], seconds[0],
               seconds[1]);
    else
        printf("%d continuations of a %d-token prompt (+%d tokens each): KV %.1f MiB shared vs %.1f MiB copied "
               "(%.1fx less); %.2f s vs %.2f s\n",
               n, o->prompt, o->generate, used[0] / 1048576.0, used[1] / 1048576.0, (double)used[1] / (double)used[0],
               seconds[0], seconds[1]);
    free(prompt);
    free(sessions);
    return 0;
}

static int compare_doubles(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Time to first token of R requests sharing a system prompt, cache off then on. */
static int bench_prefix(strata_model *model, const bench_options *o)
{
    int32_t vocab = strata_model_vocab_size(model);
    int length = o->system + o->question;
    int32_t *tokens = malloc((size_t)length * sizeof *tokens);
    double *ttft = malloc((size_t)o->requests * sizeof *ttft);
    strata_error error = {0};
    double medians[2], totals[2];
    for (int cache = 0; cache <= 1; cache++) {
        strata_session_options session_options = {.context_length = length + 1, .prefix_cache = cache == 1,
                                                  .cache_namespace = 42};
        random_tokens(tokens, o->system, vocab, 11);
        double total_start = now_seconds();
        size_t cached = 0;
        for (int r = 0; r < o->requests; r++) {
            random_tokens(tokens + o->system, o->question, vocab, 1000 + (uint64_t)r);
            double start = now_seconds();
            strata_session *session = NULL;
            if (strata_session_create(model, &session_options, &session, &error) != STRATA_OK ||
                strata_session_append(session, tokens, (size_t)length, false, &error) != STRATA_OK)
                return fail("request", &error);
            (void)argmax(strata_session_logits(session, 0), vocab);
            ttft[r] = now_seconds() - start;
            cached += strata_session_cached_tokens(session);
            strata_session_destroy(session);
        }
        totals[cache] = now_seconds() - total_start;
        qsort(ttft, (size_t)o->requests, sizeof *ttft, compare_doubles);
        medians[cache] = ttft[o->requests / 2];
        if (!o->json)
            printf("prefix cache %-3s: %d requests of %d+%d tokens: median TTFT %.1f ms, total %.2f s, "
                   "%zu prompt tokens served from the cache\n",
                   cache ? "on" : "off", o->requests, o->system, o->question, medians[cache] * 1e3, totals[cache],
                   cached);
    }
    if (o->json)
        printf("{\"bench\": \"prefix\", \"requests\": %d, \"system\": %d, \"question\": %d, "
               "\"ttft_ms_cache_off\": %.2f, \"ttft_ms_cache_on\": %.2f, \"speedup\": %.2f}\n",
               o->requests, o->system, o->question, medians[0] * 1e3, medians[1] * 1e3, medians[0] / medians[1]);
    else
        printf("median TTFT speed-up with the prefix cache: %.1fx\n", medians[0] / medians[1]);
    free(tokens);
    free(ttft);
    return 0;
}

typedef struct policy_result {
    uint64_t bytes_after_prompt;
    uint64_t bytes_after_decode;
    double prefill_seconds;
    double decode_tok_s;
} policy_result;

/* One policy run: prefill, measure the session's KV, decode greedily, measure again. */
static int policy_run(strata_model *model, const bench_options *o, const int32_t *prompt, const char *policy,
                      int budget, policy_result *result)
{
    int32_t vocab = strata_model_vocab_size(model);
    strata_error error = {0};
    strata_session_options session_options = {.context_length = o->prompt + o->generate + 1, .kv_policy = policy,
                                              .kv_budget_tokens = budget, .kv_head_profile = o->profile};
    strata_session *session = NULL;
    if (strata_session_create(model, &session_options, &session, &error) != STRATA_OK)
        return fail(policy, &error);
    double start = now_seconds();
    if (strata_session_append(session, prompt, (size_t)o->prompt, false, &error) != STRATA_OK)
        return fail("prefill", &error);
    result->prefill_seconds = now_seconds() - start;
    result->bytes_after_prompt = strata_session_kv_bytes(session, NULL);
    start = now_seconds();
    for (int i = 0; i < o->generate; i++) {
        int32_t next = argmax(strata_session_logits(session, 0), vocab);
        if (strata_session_append(session, &next, 1, false, &error) != STRATA_OK)
            return fail("decode", &error);
    }
    result->decode_tok_s = o->generate / (now_seconds() - start);
    result->bytes_after_decode = strata_session_kv_bytes(session, NULL);
    strata_session_destroy(session);
    return 0;
}

static void print_policy_result(const bench_options *o, const char *policy, int budget, const policy_result *r)
{
    if (o->json)
        printf("{\"bench\": \"policy\", \"policy\": \"%s\", \"budget\": %d, \"prompt\": %d, \"generate\": %d, "
               "\"kv_bytes_after_prompt\": %llu, \"kv_bytes_after_decode\": %llu, \"prefill_s\": %.2f, "
               "\"decode_tok_s\": %.2f}\n",
               policy, budget, o->prompt, o->generate, (unsigned long long)r->bytes_after_prompt,
               (unsigned long long)r->bytes_after_decode, r->prefill_seconds, r->decode_tok_s);
    else
        printf("| %-14s | %6d | %10.1f | %10.1f | %8.1f | %8.2f |\n", policy, budget,
               r->bytes_after_prompt / 1048576.0, r->bytes_after_decode / 1048576.0, r->decode_tok_s,
               r->prefill_seconds);
    fflush(stdout);
}

/* Compositions measured besides every policy and precision alone. */
static const char *const composed_policies = "snapkv+kivi4,h2o+kivi2,pyramidkv+q8,streaming+q4,snapkv+mixed";

/* Whether a name is a precision alone (its budget does not matter). */
static bool precision_alone(const char *name)
{
    char list[128];
    snprintf(list, sizeof list, "%s", strata_kv_precisions());
    char *save = NULL;
    for (char *precision = strtok_r(list, ", ", &save); precision != NULL; precision = strtok_r(NULL, ", ", &save))
        if (strcmp(precision, name) == 0 && strcmp(name, "mixed") != 0)
            return true;
    return false;
}

/* The full cache and every policy at each budget, on one random prompt. */
static int bench_policies(strata_model *model, const bench_options *o)
{
    int32_t vocab = strata_model_vocab_size(model);
    int32_t *prompt = malloc((size_t)o->prompt * sizeof *prompt);
    random_tokens(prompt, o->prompt, vocab, 77);
    if (!o->json)
        printf("%d-token prompt, %d decoded tokens; budget = slots per (layer, KV head) of the global layers\n"
               "| policy         | budget | KV MiB after prompt | KV MiB after decoding | decode tok/s | prefill s |\n"
               "|---|---:|---:|---:|---:|---:|\n",
               o->prompt, o->generate);
    char names[1024];
    if (o->policies != NULL)
        snprintf(names, sizeof names, "%s", o->policies);
    else
        snprintf(names, sizeof names, "%s,%s,%s", strata_kv_policies(), strata_kv_precisions(), composed_policies);
    policy_result result;
    int status = 0;
    /* Budget-free rows first (the full cache, precisions alone), then each budget. */
    for (int b = -1; b < o->budget_count && status == 0; b++) {
        char list[1024];
        snprintf(list, sizeof list, "%s", names);
        char *save = NULL;
        for (char *name = strtok_r(list, ", ", &save); name != NULL && status == 0; name = strtok_r(NULL, ", ", &save)) {
            bool budget_free = strcmp(name, "full") == 0 || precision_alone(name);
            if (budget_free != (b < 0))
                continue;
            if (strcmp(name, "duo") == 0 && o->profile == NULL) {
                printf("| %-14s | %6d | duo needs --profile FILE (from strata calibrate) |\n", name, o->budgets[b]);
                continue;
            }
            int budget = b < 0 ? 0 : o->budgets[b];
            status = policy_run(model, o, prompt, name, budget, &result);
            if (status == 0)
                print_policy_result(o, name, budget, &result);
        }
    }
    free(prompt);
    return status;
}

static bool parse_int(const char *text, int minimum, int *out)
{
    char *end = NULL;
    long value = strtol(text, &end, 10);
    if (end == text || *end != '\0' || value < minimum || value > 1 << 20) {
        fprintf(stderr, "strata-kv-bench: '%s' is not a whole number >= %d\n", text, minimum);
        return false;
    }
    *out = (int)value;
    return true;
}

int main(int argc, char **argv)
{
    bench_options o = {.threads = 0, .sequences = {1, 4, 16}, .sequence_counts = 3, .prompt = 32, .steps = 64,
                       .parallel = 16, .generate = 32, .requests = 32, .system = 2048, .question = 64,
                       .budgets = {2048, 512}, .budget_count = 2};
    int prompt_for_fork = 4096;
    bool prompt_given = false;
    if (argc < 2 || (strcmp(argv[1], "batch") != 0 && strcmp(argv[1], "fork") != 0 && strcmp(argv[1], "prefix") != 0 &&
                     strcmp(argv[1], "policies") != 0)) {
        fprintf(stderr, "usage: strata-kv-bench batch|fork|prefix|policies [options] (see the top of bench/kv_bench.c)\n");
        return 2;
    }
    o.mode = argv[1];
    for (int i = 2; i < argc; i++) {
        const char *flag = argv[i], *value = i + 1 < argc ? argv[i + 1] : NULL;
        bool ok = value != NULL;
        if (strcmp(flag, "--json") == 0) {
            o.json = true;
            continue;
        } else if (strcmp(flag, "-m") == 0 && ok) {
            o.model_path = value;
        } else if (strcmp(flag, "-t") == 0 && ok) {
            ok = parse_int(value, 1, &o.threads);
        } else if (strcmp(flag, "--sequences") == 0 && ok) {
            o.sequence_counts = 0;
            char *copy = strdup(value), *save = NULL;
            for (char *part = strtok_r(copy, ",", &save); part != NULL && ok && o.sequence_counts < 16;
                 part = strtok_r(NULL, ",", &save))
                ok = parse_int(part, 1, &o.sequences[o.sequence_counts++]);
            free(copy);
        } else if (strcmp(flag, "--budgets") == 0 && ok) {
            o.budget_count = 0;
            char *copy = strdup(value), *save = NULL;
            for (char *part = strtok_r(copy, ",", &save); part != NULL && ok && o.budget_count < 8;
                 part = strtok_r(NULL, ",", &save))
                ok = parse_int(part, 1, &o.budgets[o.budget_count++]);
            free(copy);
        } else if (strcmp(flag, "--policies") == 0 && ok) {
            o.policies = value;
        } else if (strcmp(flag, "--profile") == 0 && ok) {
            o.profile = value;
        } else if (strcmp(flag, "--kv-type") == 0 && ok) {
            ok = strcmp(value, "f32") == 0 || strcmp(value, "f16") == 0 || strcmp(value, "bf16") == 0;
            o.kv_type = strcmp(value, "f16") == 0 ? STRATA_KV_F16 : strcmp(value, "bf16") == 0 ? STRATA_KV_BF16 : STRATA_KV_F32;
        } else if (strcmp(flag, "--prompt") == 0 && ok) {
            ok = parse_int(value, 2, &o.prompt);
            prompt_given = true;
        } else if (strcmp(flag, "--steps") == 0 && ok) {
            ok = parse_int(value, 1, &o.steps);
        } else if (strcmp(flag, "--parallel") == 0 && ok) {
            ok = parse_int(value, 1, &o.parallel);
        } else if (strcmp(flag, "--generate") == 0 && ok) {
            ok = parse_int(value, 1, &o.generate);
        } else if (strcmp(flag, "--requests") == 0 && ok) {
            ok = parse_int(value, 1, &o.requests);
        } else if (strcmp(flag, "--system") == 0 && ok) {
            ok = parse_int(value, 1, &o.system);
        } else if (strcmp(flag, "--question") == 0 && ok) {
            ok = parse_int(value, 1, &o.question);
        } else {
            fprintf(stderr, "strata-kv-bench: unknown or incomplete option '%s'\n", flag);
            return 2;
        }
        if (!ok)
            return 2;
        i++;
    }
    if (strcmp(o.mode, "fork") == 0 && !prompt_given)
        o.prompt = prompt_for_fork;
    if (strcmp(o.mode, "policies") == 0 && !prompt_given)
        o.prompt = 16384;
    char default_model[1024];
    if (o.model_path == NULL) {
        const char *cache = getenv("STRATA_CACHE"), *home = getenv("HOME");
        if (cache != NULL && cache[0] != '\0')
            snprintf(default_model, sizeof default_model, "%s/models/gemma-3-270m-q4_k_m.gguf", cache);
        else
            snprintf(default_model, sizeof default_model, "%s/.cache/strata/models/gemma-3-270m-q4_k_m.gguf",
                     home != NULL ? home : ".");
        o.model_path = default_model;
    }
    strata_error error = {0};
    strata_model *model = NULL;
    strata_model_options model_options = {.threads = o.threads, .kv_type = o.kv_type};
    if (strata_model_open(o.model_path, &model_options, &model, &error) != STRATA_OK)
        return fail(o.model_path, &error);
    int status = strcmp(o.mode, "batch") == 0    ? bench_batch(model, &o)
               : strcmp(o.mode, "fork") == 0     ? bench_fork(model, &o)
               : strcmp(o.mode, "policies") == 0 ? bench_policies(model, &o)
                                                 : bench_prefix(model, &o);
    strata_model_close(model);
    return status;
}
