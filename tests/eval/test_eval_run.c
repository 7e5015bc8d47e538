/* tests/eval/test_eval_run.c: a tiny end-to-end run of the evaluation
 * harness on a tiny random-weight model: three tasks (one multi-turn), a
 * fidelity sample on real prose, four variants; the multi-turn sample also
 * asked as separate requests on the shared compressed context. The results file holds one
 * well-formed record per sample and variant, with the fields the report
 * reads; the full cache's fidelity against itself is exact (KL 0, top-1
 * agreement 1); every multi-turn record scores each turn; the summary CSV
 * has a row per group; a rerun computes nothing; a run interrupted in the
 * middle of a record is completed by the next one, the cut line dropped;
 * and bad options are refused with a sentence. The prose file comes from
 * scripts/fetch-prose.sh (run by scripts/setup.sh): without it the test
 * fails and says so. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "eval/eval.h"
#include "eval/haystack.h"
#include "model/tiny_model.h"
#include "test_util.h"

enum { SAMPLES = 2, VARIANTS = 4, RECORDS = (3 * SAMPLES + 1) * VARIANTS };

static strata_model *open_model(void)
{
    tiny_model_spec spec = tiny_model_llama();
    spec.context_length = 2048;
    spec.key_length = 32; /* packed precisions quantize rows in groups of 32 */
    strata_model *model = NULL;
    strata_error err = {0};
    strata_model_options options = {.threads = 2};
    CHECK_MESSAGE(tiny_model_open_with(&spec, &options, &model, &err) == STRATA_OK, "%s", err.message);
    return model;
}

static void options_for(eval_options *o, const char *out)
{
    eval_options_default(o);
    o->tasks = "passkey,multiturn,multirequest";
    o->lengths[0] = 1000; /* the tiny vocabulary spells most text byte by byte */
    o->samples = SAMPLES;
    o->policies = "full,h2o,snapkv,q8";
    o->budgets[0] = 64;
    o->max_answer_tokens = 8;
    o->fidelity_samples = 1;
    o->fidelity_positions = 24;
    o->fidelity_continuation = 12;
    o->out_path = out;
}

/* Counts the lines of a file, checking each is a JSON object with the fields the report reads. */
static int check_records(const char *path, int *full_fidelity, int *multiturn)
{
    FILE *file = fopen(path, "r");
    if (file == NULL)
        return -1;
    char line[65536];
    int count = 0;
    *full_fidelity = *multiturn = 0;
    while (fgets(line, sizeof line, file) != NULL) {
        json_error_t error;
        json_t *record = json_loads(line, 0, &error);
        CHECK_MESSAGE(json_is_object(record), "line %d: %s", count + 1, error.text);
        count++;
        if (record == NULL)
            continue;
        const char *fields[] = {"key", "kind", "variant", "policy", "budget", "length", "kv_bytes_prefill",
                                "kv_bytes_decode", "prefill_s", "decode_s"};
        for (size_t f = 0; f < sizeof fields / sizeof fields[0]; f++)
            CHECK_MESSAGE(json_object_get(record, fields[f]) != NULL, "line %d lacks %s", count, fields[f]);
        CHECK(json_integer_value(json_object_get(record, "kv_bytes_prefill")) > 0);
        const char *kind = json_string_value(json_object_get(record, "kind"));
        const char *variant = json_string_value(json_object_get(record, "variant"));
        if (kind != NULL && strcmp(kind, "fidelity") == 0 && variant != NULL && strcmp(variant, "full@0") == 0) {
            CHECK_MESSAGE(json_real_value(json_object_get(record, "kl_mean")) == 0.0, "full vs itself: KL %g",
                          json_real_value(json_object_get(record, "kl_mean")));
            CHECK(json_real_value(json_object_get(record, "top1_agreement")) == 1.0);
            (*full_fidelity)++;
        }
        const char *task = json_string_value(json_object_get(record, "task"));
        if (task != NULL && (strcmp(task, "multiturn") == 0 || strcmp(task, "multirequest") == 0)) {
            json_t *turns = json_object_get(record, "turn_scores");
            CHECK(json_array_size(turns) > 1 && json_array_size(turns) == json_array_size(json_object_get(record, "outputs")));
            (*multiturn)++;
        }
        json_decref(record);
    }
    fclose(file);
    return count;
}

static int count_lines(const char *path)
{
    FILE *file = fopen(path, "r");
    int lines = 0, c;
    while (file != NULL && (c = fgetc(file)) != EOF)
        lines += c == '\n';
    if (file != NULL)
        fclose(file);
    return lines;
}

static void a_tiny_run_writes_every_record_and_resumes(void)
{
    char prose[1024];
    strata_error err = {0};
    CHECK(eval_haystack_default_prose_path(prose, sizeof prose, &err) == STRATA_OK);
    CHECK_MESSAGE(access(prose, R_OK) == 0, "%s is missing: run scripts/fetch-prose.sh (scripts/setup.sh does)",
                  prose);
    strata_model *model = open_model();
    if (model == NULL)
        return;
    char directory[] = "/tmp/strata-eval-XXXXXX";
    CHECK(mkdtemp(directory) != NULL);
    char out[256], csv[256];
    snprintf(out, sizeof out, "%s/results.jsonl", directory);
    snprintf(csv, sizeof csv, "%s/results.csv", directory);
    eval_options o;
    options_for(&o, out);
    CHECK_MESSAGE(eval_run(model, &o, &err) == STRATA_OK, "%s", err.message);
    int full_fidelity = 0, multiturn = 0;
    CHECK_MESSAGE(check_records(out, &full_fidelity, &multiturn) == RECORDS, "%d records, want %d",
                  check_records(out, &full_fidelity, &multiturn), RECORDS);
    CHECK(full_fidelity == 1 && multiturn == 2 * SAMPLES * VARIANTS);
    /* The summary: a header and one row per (kind, task, haystack, length, variant). */
    CHECK_MESSAGE(count_lines(csv) == 1 + 4 * VARIANTS, "%d CSV lines", count_lines(csv));

    /* A rerun finds every record and computes nothing. */
    CHECK(eval_run(model, &o, &err) == STRATA_OK);
    CHECK(count_lines(out) == RECORDS);

    /* An interrupted run: the last record cut in the middle. The next run drops the cut line and redoes it. */
    FILE *file = fopen(out, "r+");
    CHECK(file != NULL);
    if (file != NULL) {
        fseek(file, 0, SEEK_END);
        long size = ftell(file);
        fclose(file);
        CHECK(truncate(out, size - 40) == 0);
    }
    CHECK(count_lines(out) == RECORDS - 1);
    CHECK_MESSAGE(eval_run(model, &o, &err) == STRATA_OK, "%s", err.message);
    CHECK_MESSAGE(check_records(out, &full_fidelity, &multiturn) == RECORDS, "after resuming: %d records",
                  check_records(out, &full_fidelity, &multiturn));

    /* Refused: an unknown task, an unknown policy, a length past the model's context; the file is unchanged. */
    eval_options bad = o;
    bad.tasks = "haystack_poetry";
    CHECK(eval_run(model, &bad, &err) == STRATA_E_INVALID_ARGUMENT && strstr(err.message, "passkey") != NULL);
    bad = o;
    bad.policies = "full,nonsense";
    CHECK(eval_run(model, &bad, &err) == STRATA_E_INVALID_ARGUMENT && strstr(err.message, "nonsense") != NULL);
    bad = o;
    bad.lengths[0] = 4096;
    CHECK(eval_run(model, &bad, &err) == STRATA_E_INVALID_ARGUMENT && strstr(err.message, "4096") != NULL);
    CHECK(count_lines(out) == RECORDS);

    remove(out);
    remove(csv);
    rmdir(directory);
    strata_model_close(model);
}

int main(void)
{
    RUN_CASE(a_tiny_run_writes_every_record_and_resumes);
    TEST_EXIT();
}
