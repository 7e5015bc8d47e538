/* tests/engine/test_duo.c: head profiles and the duo policy.
 *
 * The profile reader takes a file `strata calibrate` writes (comments
 * anywhere after the header) and refuses, naming the file and the line,
 * anything else: a missing file, another header, a bad model line, counts
 * for another model, lines with too few, too many or non-finite scores, too
 * few or too many layer lines. Duo keeps every slot of the highest-scoring
 * global tables (as many as retrieval_ratio says) and sinks + recent slots
 * of the others, leaves sliding-window layers alone, and refuses to start
 * without a profile. Calibration itself gives scores in [0, 1], the same
 * for the same seed, 0 for window layers whose window cannot reach the
 * target, and round-trips through the file. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/calibrate.h"
#include "model/tiny_model.h"
#include "test_util.h"

enum { PROMPT = 60, DECODE = 6, BUDGET = 20 };

/* Writes text to a new temporary file; path gets its name. */
static bool write_temporary(const char *text, char *path, size_t capacity)
{
    snprintf(path, capacity, "/tmp/strata-test-duo-XXXXXX");
    int fd = mkstemp(path);
    FILE *file = fd >= 0 ? fdopen(fd, "w") : NULL;
    bool written = file != NULL && fputs(text, file) >= 0;
    if (file != NULL)
        written = fclose(file) == 0 && written;
    CHECK_MESSAGE(written, "cannot write %s", path);
    return written;
}

static void a_good_profile_is_read_with_its_comments(void)
{
    char path[64];
    if (!write_temporary("# strata head profile v1\n"
                         "# made by hand\n"
                         "model tiny_llama layers 2 kv_heads 2\r\n"
                         "0.5 0.25\n"
                         "\n"
                         "# between layers\n"
                         "  1e-3\t0  \n"
                         "# the end\n",
                         path, sizeof path))
        return;
    float *scores = NULL;
    strata_error err = {0};
    CHECK_MESSAGE(calibrate_read_profile(path, 2, 2, &scores, &err) == STRATA_OK, "%s", err.message);
    if (scores != NULL)
        CHECK(scores[0] == 0.5f && scores[1] == 0.25f && scores[2] == 1e-3f && scores[3] == 0.0f);
    free(scores);
    remove(path);
}

static void bad_profiles_are_refused_naming_the_file_and_the_problem(void)
{
    static const struct {
        const char *name;
        const char *text; /* NULL: the file does not exist */
        const char *message;
    } cases[] = {
        {"missing_file", NULL, "cannot open"},
        {"empty_file", "", "line 1 is not"},
        {"another_header", "# strata head profile v2\nmodel m layers 2 kv_heads 2\n1 2\n3 4\n", "line 1 is not"},
        {"no_model_line", "# strata head profile v1\n1 2\n3 4\n", "line 2 should read 'model NAME"},
        {"model_line_with_more", "# strata head profile v1\nmodel m layers 2 kv_heads 2 more\n1 2\n3 4\n",
         "line 2 should read"},
        {"other_layer_count", "# strata head profile v1\nmodel m layers 3 kv_heads 2\n1 2\n3 4\n5 6\n",
         "is for 3 layers x 2 KV heads, but the model has 2 x 2"},
        {"other_head_count", "# strata head profile v1\nmodel m layers 2 kv_heads 1\n1\n3\n",
         "is for 2 layers x 1 KV heads"},
        {"too_few_scores", "# strata head profile v1\nmodel m layers 2 kv_heads 2\n1 2\n3\n", "line 4 (layer 1)"},
        {"too_many_scores", "# strata head profile v1\nmodel m layers 2 kv_heads 2\n1 2 3\n4 5\n", "line 3 (layer 0)"},
        {"not_a_number", "# strata head profile v1\nmodel m layers 2 kv_heads 2\n1 x\n3 4\n", "line 3 (layer 0)"},
        {"not_finite", "# strata head profile v1\nmodel m layers 2 kv_heads 2\n1 2\nnan 4\n", "line 4 (layer 1)"},
        {"too_few_layers", "# strata head profile v1\nmodel m layers 2 kv_heads 2\n1 2\n", "ends after 1 of its 2"},
        {"too_many_layers", "# strata head profile v1\nmodel m layers 2 kv_heads 2\n1 2\n3 4\n5 6\n",
         "line 5 follows the last"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        char path[64] = "/tmp/strata-test-duo-no-such-file";
        if (cases[c].text != NULL && !write_temporary(cases[c].text, path, sizeof path))
            continue;
        float *scores = (float *)&scores; /* anything but NULL: the reader must reset it */
        strata_error err = {0};
        strata_status status = calibrate_read_profile(path, 2, 2, &scores, &err);
        CHECK_MESSAGE(status == STRATA_E_INVALID_ARGUMENT && scores == NULL, "%s: status %d", cases[c].name,
                      (int)status);
        CHECK_MESSAGE(strstr(err.message, path) != NULL && strstr(err.message, cases[c].message) != NULL,
                      "%s: the message names the file and says '%s': %s", cases[c].name, cases[c].message,
                      err.message);
        if (cases[c].text != NULL)
            remove(path);
    }
}

static strata_model *open_model(tiny_model_spec spec)
{
    spec.context_length = 256;
    strata_model *model = NULL;
    strata_error err = {0};
    strata_model_options options = {.threads = 2};
    CHECK_MESSAGE(tiny_model_open_with(&spec, &options, &model, &err) == STRATA_OK, "%s", err.message);
    return model;
}

/* Runs PROMPT tokens and DECODE steps through duo with this profile and
 * parameters; slots gets the slots per table (-1 where the session failed). */
static void run_duo(strata_model *model, const char *profile, const char *params, int64_t budget, int64_t *slots,
                    int64_t tables)
{
    for (int64_t t = 0; t < tables; t++)
        slots[t] = -1;
    char path[64];
    if (!write_temporary(profile, path, sizeof path))
        return;
    strata_session *session = NULL;
    strata_error err = {0};
    strata_session_options options = {.kv_policy = "duo", .kv_budget_tokens = budget, .kv_policy_params = params,
                                      .kv_head_profile = path};
    CHECK_MESSAGE(strata_session_create(model, &options, &session, &err) == STRATA_OK, "%s", err.message);
    remove(path); /* read once, at creation */
    int32_t tokens[PROMPT + DECODE];
    for (int i = 0; i < PROMPT + DECODE; i++)
        tokens[i] = 3 + (i * 37) % (TINY_VOCAB - 3);
    bool ran = session != NULL && strata_session_append(session, tokens, PROMPT, false, &err) == STRATA_OK;
    for (int i = 0; ran && i < DECODE; i++)
        ran = strata_session_append(session, &tokens[PROMPT + i], 1, false, &err) == STRATA_OK;
    CHECK_MESSAGE(ran, "%s", err.message);
    if (ran)
        strata_session_kv_slots(session, slots);
    strata_session_destroy(session);
}

static void duo_keeps_every_slot_of_the_highest_scoring_tables(void)
{
    strata_model *model = open_model(tiny_model_llama()); /* 2 layers x 2 KV heads, all global */
    if (model == NULL)
        return;
    static const char profile[] = "# strata head profile v1\nmodel tiny layers 2 kv_heads 2\n0.9 0.1\n0.2 0.8\n";
    static const struct {
        const char *params;
        bool whole[4]; /* tables that keep every slot */
    } cases[] = {
        {NULL, {true, false, false, true}}, /* retrieval_ratio 0.5: the best two of four */
        {"retrieval_ratio=0.25", {true, false, false, false}},
        {"retrieval_ratio=0.75", {true, false, true, true}},
        {"retrieval_ratio=0", {false, false, false, false}},
        {"retrieval_ratio=1", {true, true, true, true}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int64_t slots[4];
        run_duo(model, profile, cases[c].params, BUDGET, slots, 4);
        for (int t = 0; t < 4; t++)
            CHECK_MESSAGE(slots[t] == (cases[c].whole[t] ? PROMPT + DECODE : BUDGET),
                          "%s: table %d holds %lld slots", cases[c].params != NULL ? cases[c].params : "defaults", t,
                          (long long)slots[t]);
    }
    strata_model_close(model);
}

/* Window layers score high in this profile, but duo ranks global tables
 * only (one, layer 5) and leaves the window layers to their window. */
static void duo_ranks_global_tables_only_and_leaves_windows_alone(void)
{
    strata_model *model = open_model(tiny_model_gemma3()); /* 7 layers x 2 KV heads; layer 5 global, window 4 */
    if (model == NULL)
        return;
    static const char profile[] = "# strata head profile v1\nmodel tiny layers 7 kv_heads 2\n"
                                  "1 1\n1 1\n1 1\n1 1\n1 1\n0.1 0.3\n1 1\n";
    int64_t slots[14], full[14];
    run_duo(model, profile, "retrieval_ratio=0.5", 8, slots, 14);
    run_duo(model, profile, "retrieval_ratio=1", 8, full, 14);
    CHECK_MESSAGE(slots[10] == 8 && slots[11] == PROMPT + DECODE, "layer 5 holds %lld and %lld slots",
                  (long long)slots[10], (long long)slots[11]);
    for (int t = 0; t < 14; t++)
        if (t / 2 != 5)
            CHECK_MESSAGE(slots[t] == full[t] && slots[t] < PROMPT, "window table %d holds %lld slots, %lld when "
                          "every global table is kept whole", t, (long long)slots[t], (long long)full[t]);
    strata_model_close(model);
}

static void duo_without_a_profile_is_refused_pointing_to_calibrate(void)
{
    strata_model *model = open_model(tiny_model_llama());
    if (model == NULL)
        return;
    strata_session *session = NULL;
    strata_error err = {0};
    strata_session_options options = {.kv_policy = "duo", .kv_budget_tokens = BUDGET};
    CHECK(strata_session_create(model, &options, &session, &err) == STRATA_E_INVALID_ARGUMENT && session == NULL);
    CHECK_MESSAGE(strstr(err.message, "strata calibrate") != NULL, "%s", err.message);
    options.kv_head_profile = "/tmp/strata-test-duo-no-such-profile";
    CHECK(strata_session_create(model, &options, &session, &err) == STRATA_E_INVALID_ARGUMENT && session == NULL);
    CHECK_MESSAGE(strstr(err.message, "no-such-profile") != NULL, "%s", err.message);
    strata_model_close(model);
}

/* On the tiny Gemma 3 (7 words in its vocabulary: copies of 6), the target
 * lies 5 back, beyond the window of 4: window layers score exactly 0. */
static void calibration_scores_lie_in_0_1_and_windows_that_cannot_reach_score_0(void)
{
    strata_model *model = open_model(tiny_model_gemma3());
    if (model == NULL)
        return;
    float first[14], second[14];
    strata_error err = {0};
    calibrate_options options = {.samples = 3, .length = 12, .seed = 7};
    CHECK_MESSAGE(calibrate_run(model, &options, first, &err) == STRATA_OK, "%s", err.message);
    CHECK_MESSAGE(calibrate_run(model, &options, second, &err) == STRATA_OK, "%s", err.message);
    CHECK(memcmp(first, second, sizeof first) == 0);
    for (int t = 0; t < 14; t++) {
        CHECK_MESSAGE(first[t] >= 0.0f && first[t] <= 1.0f, "table %d scores %g", t, first[t]);
        if (t / 2 != 5)
            CHECK_MESSAGE(first[t] == 0.0f, "window table %d scores %g", t, first[t]);
        else
            CHECK_MESSAGE(first[t] > 0.0f, "global table %d scores %g", t, first[t]);
    }
    options.length = 16; /* copies of 8 distinct words: the vocabulary has 7 */
    CHECK(calibrate_run(model, &options, first, &err) == STRATA_E_INVALID_ARGUMENT);
    CHECK_MESSAGE(strstr(err.message, "at most 14") != NULL, "%s", err.message);
    strata_model_close(model);
}

static void a_written_profile_reads_back(void)
{
    strata_model *model = open_model(tiny_model_gemma3());
    if (model == NULL)
        return;
    float scores[14], *read = NULL;
    for (int t = 0; t < 14; t++)
        scores[t] = (float)t / 16.0f;
    char path[64];
    if (!write_temporary("", path, sizeof path))
        return;
    strata_error err = {0};
    CHECK_MESSAGE(calibrate_write_profile(path, model, "two\nlines", scores, &err) == STRATA_OK, "%s", err.message);
    CHECK_MESSAGE(calibrate_read_profile(path, 7, 2, &read, &err) == STRATA_OK, "%s", err.message);
    if (read != NULL)
        CHECK(memcmp(scores, read, sizeof scores) == 0); /* sixteenths print exactly */
    free(read);
    char text[512] = {0};
    FILE *file = fopen(path, "r");
    if (file != NULL) {
        CHECK(fread(text, 1, sizeof text - 1, file) > 0);
        fclose(file);
    }
    const char *expected = "# strata head profile v1\n# two\n# lines\nmodel tiny_gemma3 layers 7 kv_heads 2\n";
    CHECK_MESSAGE(strncmp(text, expected, strlen(expected)) == 0, "%s", text);
    remove(path);
    strata_model_close(model);
}

int main(void)
{
    RUN_CASE(a_good_profile_is_read_with_its_comments);
    RUN_CASE(bad_profiles_are_refused_naming_the_file_and_the_problem);
    RUN_CASE(duo_keeps_every_slot_of_the_highest_scoring_tables);
    RUN_CASE(duo_ranks_global_tables_only_and_leaves_windows_alone);
    RUN_CASE(duo_without_a_profile_is_refused_pointing_to_calibrate);
    RUN_CASE(calibration_scores_lie_in_0_1_and_windows_that_cannot_reach_score_0);
    RUN_CASE(a_written_profile_reads_back);
    TEST_EXIT();
}
