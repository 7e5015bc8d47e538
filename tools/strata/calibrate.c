/* tools/strata/calibrate.c: `strata calibrate`: measure which (layer, KV
 * head) tables of a model retrieve from far back, and write the head profile
 * the `duo` KV policy reads (--kv-profile FILE).
 *
 * The data is synthetic (engine/calibrate.c): random words, repeated once;
 * a table's score is the attention mass it puts on the slot the copy must
 * read. The profile goes to the file; a summary of the scores to stderr. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "commands.h"
#include "engine/calibrate.h"
#include "model/model.h"
#include "options.h"
#include "strata.h"

static void print_help(FILE *stream)
{
    fprintf(stream,
            "usage: strata calibrate [-m MODEL] [-o FILE] [options]\n\n"
            "Scores every (layer, KV head) of the model by how much it retrieves from far\n"
            "back: random words repeated once; while the second copy is read, the score is\n"
            "the attention a head puts on the word after the current word's first occurrence\n"
            "(mean over queries and samples, per query head: 0..1). Writes the head profile\n"
            "`strata generate --kv-policy duo --kv-profile FILE` needs.\n\n"
            "  -m, --model FILE    GGUF model (default: the fetched Gemma 3 270M)\n"
            "  -o, --output FILE   head profile to write (default: head-profile.txt)\n"
            "  -t, --threads N     compute threads (default: one per core)\n"
            "      --samples N     random sequences, run as one batch (default 8, at most %d)\n"
            "      --length L      tokens per sequence: two copies of L/2 words (default 1024)\n"
            "      --seed S        seed of the random words (default 1)\n",
            CALIBRATE_MAX_SAMPLES);
}

static double now_seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

int command_calibrate(int argc, char **argv)
{
    const char *model_path = NULL, *output = "head-profile.txt";
    long long threads = 0, samples = 8, length = 1024, seed = 1;
    for (int i = 1; i < argc; i++) {
        const char *flag = argv[i];
        const char *value = NULL;
#define VALUE() ((value = option_value("calibrate", argc, argv, &i)) != NULL)
        if (strcmp(flag, "-h") == 0 || strcmp(flag, "--help") == 0) {
            print_help(stdout);
            return 0;
        } else if (strcmp(flag, "-m") == 0 || strcmp(flag, "--model") == 0) {
            if (!VALUE()) return 2;
            model_path = value;
        } else if (strcmp(flag, "-o") == 0 || strcmp(flag, "--output") == 0) {
            if (!VALUE()) return 2;
            output = value;
        } else if (strcmp(flag, "-t") == 0 || strcmp(flag, "--threads") == 0) {
            if (!VALUE() || !option_parse_integer("calibrate", flag, value, 1, 1024, &threads)) return 2;
        } else if (strcmp(flag, "--samples") == 0) {
            if (!VALUE() || !option_parse_integer("calibrate", flag, value, 1, CALIBRATE_MAX_SAMPLES, &samples))
                return 2;
        } else if (strcmp(flag, "--length") == 0) {
            if (!VALUE() || !option_parse_integer("calibrate", flag, value, 4, 1 << 20, &length)) return 2;
        } else if (strcmp(flag, "--seed") == 0) {
            if (!VALUE() || !option_parse_integer("calibrate", flag, value, 0, INT64_MAX, &seed)) return 2;
        } else {
            fprintf(stderr, "strata calibrate: unknown option '%s' (see --help)\n", flag);
            return 2;
        }
#undef VALUE
    }
    char default_model[1024];
    if (model_path == NULL)
        model_path = option_default_model(default_model, sizeof default_model);

    strata_error error = {0};
    strata_model *model = NULL;
    float *scores = NULL;
    int exit_code = 1;
    strata_model_options model_options = {.threads = (int)threads};
    double start = now_seconds();
    if (strata_model_open(model_path, &model_options, &model, &error) != STRATA_OK)
        goto fail;
    const model_params *p = &model->params;
    scores = calloc((size_t)(p->layer_count * p->kv_head_count), sizeof *scores);
    if (scores == NULL) {
        fprintf(stderr, "strata calibrate: cannot allocate %lld scores\n", (long long)(p->layer_count * p->kv_head_count));
        goto cleanup;
    }
    fprintf(stderr, "strata: %s (%s), %lld layers x %lld KV heads; %lld samples of %lld tokens\n",
            strata_model_name(model), strata_model_architecture(model), (long long)p->layer_count,
            (long long)p->kv_head_count, samples, length);
    calibrate_options options = {.samples = (int32_t)samples, .length = (int32_t)length, .seed = (uint64_t)seed};
    if (calibrate_run(model, &options, scores, &error) != STRATA_OK)
        goto fail;

    char comment[1024];
    int used = snprintf(comment, sizeof comment,
                        "strata calibrate: %lld samples of %lld tokens (two copies of %lld random words), seed %lld\n"
                        "score: attention mass on the slot after the current word's first occurrence, per query\n"
                        "head, mean over the second copy's queries and the samples (0..1)\n"
                        "global layers:",
                        samples, length, length / 2, seed);
    for (int64_t il = 0; il < p->layer_count && used > 0 && (size_t)used < sizeof comment; il++)
        if (!model->layers[il].sliding_window)
            used += snprintf(comment + used, sizeof comment - (size_t)used, " %lld", (long long)il);
    if (calibrate_write_profile(output, model, comment, scores, &error) != STRATA_OK)
        goto fail;

    fprintf(stderr, "strata calibrate: wrote %s in %.1f s; scores by layer (* global):\n", output,
            now_seconds() - start);
    for (int64_t il = 0; il < p->layer_count; il++) {
        fprintf(stderr, "  layer %2lld%s", (long long)il, model->layers[il].sliding_window ? " " : "*");
        for (int64_t h = 0; h < p->kv_head_count; h++)
            fprintf(stderr, " %.4f", scores[il * p->kv_head_count + h]);
        fputc('\n', stderr);
    }
    exit_code = 0;
    goto cleanup;
fail:
    fprintf(stderr, "strata calibrate: %s\n", error.message);
cleanup:
    free(scores);
    strata_model_close(model);
    return exit_code;
}
