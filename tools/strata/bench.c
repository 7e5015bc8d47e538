/* tools/strata/bench.c: `strata bench`: prefill and decode speed, like
 * llama-bench's pp and tg tests.
 *
 * Prefill (pp): one batched append of n_prompt tokens into an empty session.
 * Decode (tg): n_gen single-token appends into an empty session, one after
 * the other. Tokens are drawn from the vocabulary with a fixed seed, as
 * llama-bench draws random tokens. Each test runs once to warm up, then
 * `repetitions` times; the median is reported. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "commands.h"
#include "options.h"
#include "strata.h"

static double now_seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int compare_doubles(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *values, int count)
{
    qsort(values, (size_t)count, sizeof *values, compare_doubles);
    return count % 2 == 1 ? values[count / 2] : 0.5 * (values[count / 2 - 1] + values[count / 2]);
}

/* Writes text as a JSON string literal (quotes, backslashes and control characters escaped). */
static void print_json_string(FILE *stream, const char *text)
{
    fputc('"', stream);
    for (const unsigned char *c = (const unsigned char *)text; *c != '\0'; c++) {
        if (*c == '"' || *c == '\\')
            fprintf(stream, "\\%c", *c);
        else if (*c < 0x20)
            fprintf(stream, "\\u%04x", *c);
        else
            fputc(*c, stream);
    }
    fputc('"', stream);
}

static void print_help(FILE *stream)
{
    fprintf(stream,
            "usage: strata bench [-m MODEL] [-t THREADS] [-p N_PROMPT] [-n N_GEN] [-r REPETITIONS] [--json]\n\n"
            "  -p N    prompt tokens for the prefill test (default 512; 0 skips it)\n"
            "  -n N    tokens for the decode test (default 128; 0 skips it)\n"
            "  -r N    measured repetitions after one warm-up; the median is reported (default 5)\n"
            "  --json  print one JSON object on stdout\n");
}

/* Times `repetitions` runs of appending n tokens, in one batch or one at a time. */
static strata_status time_appends(strata_model *model, const int32_t *tokens, long long n, bool one_at_a_time,
                                  int repetitions, double *seconds, strata_error *error)
{
    strata_session_options session_options = {.context_length = (int32_t)(n + 1)};
    for (int r = -1; r < repetitions; r++) {
        strata_session *session = NULL;
        strata_status status = strata_session_create(model, &session_options, &session, error);
        if (status != STRATA_OK)
            return status;
        double start = now_seconds();
        if (one_at_a_time)
            for (long long i = 0; i < n && status == STRATA_OK; i++)
                status = strata_session_append(session, &tokens[i], 1, false, error);
        else
            status = strata_session_append(session, tokens, (size_t)n, false, error);
        double elapsed = now_seconds() - start;
        strata_session_destroy(session);
        if (status != STRATA_OK)
            return status;
        if (r >= 0)
            seconds[r] = elapsed;
    }
    return STRATA_OK;
}

int command_bench(int argc, char **argv)
{
    const char *model_path = NULL;
    long long threads = 0, n_prompt = 512, n_gen = 128, repetitions = 5;
    bool json = false;
    for (int i = 1; i < argc; i++) {
        const char *flag = argv[i], *value = NULL;
#define VALUE() ((value = option_value("bench", argc, argv, &i)) != NULL)
        if (strcmp(flag, "-h") == 0 || strcmp(flag, "--help") == 0) {
            print_help(stdout);
            return 0;
        } else if (strcmp(flag, "-m") == 0 || strcmp(flag, "--model") == 0) {
            if (!VALUE()) return 2;
            model_path = value;
        } else if (strcmp(flag, "-t") == 0 || strcmp(flag, "--threads") == 0) {
            if (!VALUE() || !option_parse_integer("bench", flag, value, 1, 1024, &threads)) return 2;
        } else if (strcmp(flag, "-p") == 0 || strcmp(flag, "--n-prompt") == 0) {
            if (!VALUE() || !option_parse_integer("bench", flag, value, 0, 1 << 20, &n_prompt)) return 2;
        } else if (strcmp(flag, "-n") == 0 || strcmp(flag, "--n-gen") == 0) {
            if (!VALUE() || !option_parse_integer("bench", flag, value, 0, 1 << 20, &n_gen)) return 2;
        } else if (strcmp(flag, "-r") == 0 || strcmp(flag, "--repetitions") == 0) {
            if (!VALUE() || !option_parse_integer("bench", flag, value, 1, 1000, &repetitions)) return 2;
        } else if (strcmp(flag, "--json") == 0) {
            json = true;
        } else {
            fprintf(stderr, "strata bench: unknown option '%s' (see --help)\n", flag);
            return 2;
        }
#undef VALUE
    }
    char default_model[1024];
    if (model_path == NULL)
        model_path = option_default_model(default_model, sizeof default_model);

    strata_error error = {0};
    strata_model *model = NULL;
    strata_model_options model_options = {.threads = (int)threads};
    if (strata_model_open(model_path, &model_options, &model, &error) != STRATA_OK) {
        fprintf(stderr, "strata bench: %s\n", error.message);
        return 1;
    }
    long long count = n_prompt > n_gen ? n_prompt : n_gen;
    int32_t *tokens = malloc((size_t)(count > 0 ? count : 1) * sizeof *tokens);
    double *seconds = malloc((size_t)repetitions * sizeof *seconds);
    int exit_code = 1;
    if (tokens == NULL || seconds == NULL) {
        fprintf(stderr, "strata bench: out of memory\n");
        goto cleanup;
    }
    uint64_t state = 42;
    int32_t vocab = strata_model_vocab_size(model);
    for (long long i = 0; i < count; i++) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        tokens[i] = (int32_t)((state >> 33) % (uint64_t)vocab);
    }
    double prefill_tok_s = 0, decode_tok_s = 0;
    if (n_prompt > 0) {
        if (time_appends(model, tokens, n_prompt, false, (int)repetitions, seconds, &error) != STRATA_OK)
            goto fail;
        prefill_tok_s = (double)n_prompt / median(seconds, (int)repetitions);
    }
    if (n_gen > 0) {
        if (time_appends(model, tokens, n_gen, true, (int)repetitions, seconds, &error) != STRATA_OK)
            goto fail;
        decode_tok_s = (double)n_gen / median(seconds, (int)repetitions);
    }
    int used_threads = strata_model_threads(model);
    if (json) {
        printf("{\"engine\": \"strata\", \"model\": ");
        print_json_string(stdout, strata_model_name(model));
        printf(", \"model_path\": ");
        print_json_string(stdout, model_path);
        printf(", \"threads\": %d, \"n_prompt\": %lld, \"n_gen\": %lld, \"repetitions\": %lld, "
               "\"prefill_tok_s\": %.2f, \"decode_tok_s\": %.2f}\n",
               used_threads, n_prompt, n_gen, repetitions, prefill_tok_s, decode_tok_s);
    } else {
        printf("model: %s (%s)\nthreads: %d\n", strata_model_name(model), model_path, used_threads);
        if (n_prompt > 0)
            printf("pp%lld: %.2f tok/s (median of %lld)\n", n_prompt, prefill_tok_s, repetitions);
        if (n_gen > 0)
            printf("tg%lld: %.2f tok/s (median of %lld)\n", n_gen, decode_tok_s, repetitions);
    }
    exit_code = 0;
    goto cleanup;
fail:
    fprintf(stderr, "strata bench: %s\n", error.message);
cleanup:
    free(tokens);
    free(seconds);
    strata_model_close(model);
    return exit_code;
}
