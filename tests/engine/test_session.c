/* tests/engine/test_session.c: sessions over tiny random-weight models.
 *
 * The models come from tests/model/tiny_model.h: a 2-layer llama; a 7-layer
 * gemma3 with a sliding window of 4 (so most of its layers forget early
 * tokens within the prompts used here), q/k norms, post norms and
 * soft-capped logits; and a llama with F16 matrices and wide attention. The
 * cases check that the way tokens are fed does not change what comes out:
 * all at once, one at a time, in chunks, split by the session's own
 * 512-token chunking, or replayed after a rewind; that the thread count and
 * other sessions do not either; that errors (context full, bad tokens, zero
 * tokens, rewinding forward) leave the session usable; and the chat prompts
 * each architecture's format produces. Token sequences are pseudo-random
 * from fixed seeds, so every run feeds the same ones. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/tiny_model.h"
#include "strata.h"
#include "test_util.h"

/* Batched appends (4 tokens or more) multiply through the register-blocked
 * matrix-matrix kernel, single tokens through the dot kernels: both accumulate
 * in f32 (F16 weights are widened to f32 first), in different orders, so one
 * dot product of length k <= 256 may differ by a few units in the last place
 * (f32 epsilon 6e-8). Norms and softmax pass such differences on without
 * amplifying them much: the logits agree to a few 1e-7 of their largest
 * magnitude (measured: at most 7e-7). 1e-5 leaves a margin and still catches
 * any real change (a wrong position, window or KV slot moves logits by 1e-2
 * or more). */
static const double LOGIT_TOLERANCE = 1e-5;

enum { PROMPT_TOKENS = 24, LONG_PROMPT_TOKENS = 600 };

/* Opens a spec with a thread count; NULL (and a recorded failure) on error. */
static strata_model *open_model(const tiny_model_spec *spec, int threads)
{
    strata_model *model = NULL;
    strata_error err = {0};
    strata_status status = tiny_model_open(spec, threads, &model, &err);
    CHECK_MESSAGE(status == STRATA_OK, "%s: %s", spec->arch, err.message);
    return status == STRATA_OK ? model : NULL;
}

static strata_session *create_session(strata_model *model, int32_t context_length)
{
    strata_session *session = NULL;
    strata_error err = {0};
    strata_session_options options = {.context_length = context_length};
    strata_status status = strata_session_create(model, &options, &session, &err);
    CHECK_MESSAGE(status == STRATA_OK, "%s", err.message);
    return session;
}

/* A model and one session on it: both NULL (and a failure recorded) when
 * either could not be made. */
typedef struct fixture {
    strata_model *model;
    strata_session *session;
} fixture;

static fixture fixture_open(const tiny_model_spec *spec, int threads, int32_t context_length)
{
    fixture f = {.model = open_model(spec, threads)};
    if (f.model != NULL)
        f.session = create_session(f.model, context_length);
    if (f.session == NULL) {
        strata_model_close(f.model);
        f.model = NULL;
    }
    return f;
}

static void fixture_close(fixture *f)
{
    strata_session_destroy(f->session);
    strata_model_close(f->model);
}

/* Appends tokens and records a failure with the session's message if it fails. */
static bool append(strata_session *session, const int32_t *tokens, size_t count, bool all_logits)
{
    strata_error err = {0};
    strata_status status = strata_session_append(session, tokens, count, all_logits, &err);
    CHECK_MESSAGE(status == STRATA_OK, "append of %zu tokens: %s", count, err.message);
    return status == STRATA_OK;
}

static bool rewind_to(strata_session *session, size_t position)
{
    strata_error err = {0};
    strata_status status = strata_session_rewind(session, position, &err);
    CHECK_MESSAGE(status == STRATA_OK, "rewind to %zu: %s", position, err.message);
    return status == STRATA_OK;
}

/* Copies `rows` rows of logits of the last append into out (row r at out + r * TINY_VOCAB). */
static void copy_logits(const strata_session *session, size_t rows, float *out)
{
    for (size_t r = 0; r < rows; r++) {
        const float *logits = strata_session_logits(session, r);
        CHECK_MESSAGE(logits != NULL, "no logits for row %zu", r);
        if (logits != NULL)
            memcpy(out + r * TINY_VOCAB, logits, TINY_VOCAB * sizeof(float));
    }
}

/* Fills tokens with ids across the whole vocabulary from a fixed seed. */
static void random_tokens(int32_t *tokens, size_t count, uint64_t seed)
{
    for (size_t i = 0; i < count; i++)
        tokens[i] = (int32_t)((tiny_model_random(&seed) + 1.0f) * 0.5f * TINY_VOCAB) % TINY_VOCAB;
}

/* Returns max |a - b| over n values, relative to the largest |b|. */
static double relative_difference(const float *a, const float *b, size_t n)
{
    double largest = 0.0, difference = 0.0;
    for (size_t i = 0; i < n; i++) {
        largest = fmax(largest, fabs((double)b[i]));
        difference = fmax(difference, fabs((double)a[i] - (double)b[i]));
    }
    return largest > 0.0 ? difference / largest : difference;
}

static void check_close(const float *a, const float *b, size_t rows, const char *what, const char *model_name)
{
    for (size_t r = 0; r < rows; r++) {
        double difference = relative_difference(a + r * TINY_VOCAB, b + r * TINY_VOCAB, TINY_VOCAB);
        CHECK_MESSAGE(difference <= LOGIT_TOLERANCE, "%s, %s, row %zu: relative difference %.3g", model_name, what, r,
                      difference);
    }
}

static void check_identical(const float *a, const float *b, size_t rows, const char *what, const char *model_name)
{
    CHECK_MESSAGE(memcmp(a, b, rows * TINY_VOCAB * sizeof(float)) == 0, "%s: %s differ", model_name, what);
}

static bool all_finite(const float *logits, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(logits[i]))
            return false;
    return true;
}

/* The models most cases run on: llama, gemma3, and llama with F16 matrices
 * and attention wider than the FFN and four times the stream (4 heads of 64
 * over a 32-wide stream), so the matrix-matrix path dequantizes its widest
 * panel (attn_output, 256 columns) into scratch. */
static tiny_model_spec test_spec(int which)
{
    if (which == 0)
        return tiny_model_llama();
    if (which == 1)
        return tiny_model_gemma3();
    tiny_model_spec spec = tiny_model_llama();
    spec.name = "tiny llama f16", spec.key_length = 64, spec.matrix_type = TENSOR_F16, spec.seed = 4;
    return spec;
}

enum { TEST_SPECS = 3 };

/* Runs a case's body on a fresh session of each test model (context_length 0: the model's). */
static void for_each_model(int32_t context_length, void (*body)(const tiny_model_spec *spec, fixture *f))
{
    for (int s = 0; s < TEST_SPECS; s++) {
        tiny_model_spec spec = test_spec(s);
        fixture f = fixture_open(&spec, 1, context_length);
        if (f.session != NULL)
            body(&spec, &f);
        fixture_close(&f);
    }
}

static void feeding_styles_agree(const tiny_model_spec *spec, fixture *f)
{
    static const size_t chunks[] = {5, 3, 1, 7, 2, 6}; /* sums to PROMPT_TOKENS */
    strata_session *session = f->session;
    int32_t tokens[PROMPT_TOKENS];
    random_tokens(tokens, PROMPT_TOKENS, 11);
    float *batched = malloc(PROMPT_TOKENS * TINY_VOCAB * sizeof(float));
    float *single = malloc(PROMPT_TOKENS * TINY_VOCAB * sizeof(float));
    float *chunked = malloc(PROMPT_TOKENS * TINY_VOCAB * sizeof(float));
    if (append(session, tokens, PROMPT_TOKENS, true))
        copy_logits(session, PROMPT_TOKENS, batched);
    CHECK(all_finite(batched, PROMPT_TOKENS * TINY_VOCAB));
    rewind_to(session, 0);
    for (size_t i = 0; i < PROMPT_TOKENS; i++)
        if (append(session, tokens + i, 1, false))
            copy_logits(session, 1, single + i * TINY_VOCAB);
    rewind_to(session, 0);
    size_t done = 0;
    for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
        if (append(session, tokens + done, chunks[c], true))
            copy_logits(session, chunks[c], chunked + done * TINY_VOCAB);
        done += chunks[c];
    }
    CHECK(done == PROMPT_TOKENS && strata_session_length(session) == PROMPT_TOKENS);
    check_close(batched, single, PROMPT_TOKENS, "batched vs one at a time", spec->name);
    check_close(chunked, single, PROMPT_TOKENS, "chunked vs one at a time", spec->name);
    free(batched);
    free(single);
    free(chunked);
}

static void batched_single_and_chunked_appends_agree(void)
{
    for_each_model(0, feeding_styles_agree);
}

static void rows_match_prefixes(const tiny_model_spec *spec, fixture *f)
{
    strata_session *session = f->session;
    int32_t tokens[PROMPT_TOKENS];
    random_tokens(tokens, PROMPT_TOKENS, 12);
    float *rows = malloc(PROMPT_TOKENS * TINY_VOCAB * sizeof(float));
    float last[TINY_VOCAB];
    if (append(session, tokens, PROMPT_TOKENS, true)) {
        copy_logits(session, PROMPT_TOKENS, rows);
        CHECK(strata_session_logits(session, PROMPT_TOKENS) == NULL);
        for (size_t length = 1; length <= PROMPT_TOKENS; length++) {
            rewind_to(session, 0);
            if (!append(session, tokens, length, false))
                break;
            CHECK(strata_session_logits(session, 1) == NULL);
            copy_logits(session, 1, last);
            check_close(rows + (length - 1) * TINY_VOCAB, last, 1, "all_logits row vs prefix", spec->name);
        }
    }
    free(rows);
}

static void all_logits_rows_are_the_last_logits_of_each_prefix(void)
{
    for_each_model(0, rows_match_prefixes);
}

static void replay_matches(const tiny_model_spec *spec, fixture *f)
{
    enum { PREFIX = 10, SUFFIX = 9, DETOUR = 20 };
    strata_session *session = f->session;
    int32_t tokens[PREFIX + SUFFIX], detour[DETOUR];
    random_tokens(tokens, PREFIX + SUFFIX, 13);
    random_tokens(detour, DETOUR, 14);
    float first[SUFFIX * TINY_VOCAB], replayed[SUFFIX * TINY_VOCAB], again[SUFFIX * TINY_VOCAB];
    float decoded[TINY_VOCAB], decoded_again[TINY_VOCAB];
    append(session, tokens, PREFIX, false);
    if (append(session, tokens + PREFIX, SUFFIX, true))
        copy_logits(session, SUFFIX, first);
    if (append(session, detour, 1, false))
        copy_logits(session, 1, decoded);

    /* Overwrite the suffix's KV slots with other tokens, then replay it. */
    rewind_to(session, PREFIX);
    CHECK(strata_session_length(session) == PREFIX);
    append(session, detour, DETOUR, false);
    rewind_to(session, PREFIX);
    if (append(session, tokens + PREFIX, SUFFIX, true))
        copy_logits(session, SUFFIX, replayed);
    if (append(session, detour, 1, false))
        copy_logits(session, 1, decoded_again);
    check_identical(first, replayed, SUFFIX, "suffix logits after rewind and replay", spec->name);
    check_identical(decoded, decoded_again, 1, "decode step after the replayed suffix", spec->name);

    rewind_to(session, 0);
    append(session, tokens, PREFIX, false);
    if (append(session, tokens + PREFIX, SUFFIX, true))
        copy_logits(session, SUFFIX, again);
    check_identical(first, again, SUFFIX, "suffix logits after rewinding to 0", spec->name);
}

static void rewind_then_replay_is_bitwise_identical(void)
{
    /* The rewinds below go back 20 tokens: the tiny gemma3 gets a 16-token
     * window here so its window layers still hold what position 10 needs
     * (rewinding past a released window is refused: see the next case). */
    for (int s = 0; s < TEST_SPECS; s++) {
        tiny_model_spec spec = test_spec(s);
        if (spec.sliding_window > 0)
            spec.sliding_window = 16;
        fixture f = fixture_open(&spec, 1, 0);
        if (f.session != NULL)
            replay_matches(&spec, &f);
        fixture_close(&f);
    }
}

/* Sliding-window layers release blocks the window has left: a rewind that
 * would need them is refused with a message and changes nothing, while a
 * rewind the window still covers, or to 0, works. */
static void rewind_past_a_released_window_is_refused(void)
{
    tiny_model_spec spec = tiny_model_gemma3(); /* window 4, blocks of 16 */
    fixture f = fixture_open(&spec, 1, 0);
    if (f.session == NULL)
        return;
    int32_t tokens[40];
    random_tokens(tokens, 40, 21);
    append(f.session, tokens, 40, false);
    strata_error err = {0};
    CHECK(strata_session_rewind(f.session, 10, &err) == STRATA_E_INVALID_ARGUMENT);
    CHECK(strata_session_length(f.session) == 40);
    CHECK_MESSAGE(strstr(err.message, "window") != NULL, "message: %s", err.message);
    CHECK(strata_session_rewind(f.session, 38, &err) == STRATA_OK);
    CHECK(append(f.session, tokens + 38, 2, false));
    rewind_to(f.session, 0);
    CHECK(append(f.session, tokens, 40, false));
    fixture_close(&f);
}

static void rewinding_past_the_length_is_refused(void)
{
    tiny_model_spec spec = tiny_model_llama();
    fixture f = fixture_open(&spec, 1, 0);
    strata_session *session = f.session;
    int32_t tokens[10];
    random_tokens(tokens, 10, 15);
    if (session != NULL && append(session, tokens, 10, false)) {
        strata_error err = {0};
        CHECK(strata_session_rewind(session, 11, &err) == STRATA_E_INVALID_ARGUMENT);
        CHECK_MESSAGE(strstr(err.message, "11") != NULL, "%s", err.message);
        CHECK(strata_session_length(session) == 10);
        CHECK(strata_session_rewind(session, 10, &err) == STRATA_OK);
        CHECK(strata_session_length(session) == 10);
        CHECK(strata_session_rewind(session, 3, &err) == STRATA_OK);
        CHECK(strata_session_length(session) == 3);
        CHECK(strata_session_rewind(session, 4, &err) == STRATA_E_INVALID_ARGUMENT);
    }
    fixture_close(&f);
}

enum { SMALL_CONTEXT = 16 };

/* f's session is the reference; a second session on the same model has an
 * append refused before it makes the same appends. */
static void refused_append_changes_nothing(const tiny_model_spec *spec, fixture *f)
{
    int32_t tokens[SMALL_CONTEXT + 1];
    random_tokens(tokens, SMALL_CONTEXT + 1, 16);
    float expected[TINY_VOCAB], actual[TINY_VOCAB];
    strata_session *session = create_session(f->model, SMALL_CONTEXT);
    if (session == NULL)
        return;
    append(f->session, tokens, 10, false);
    if (append(f->session, tokens + 10, 6, false))
        copy_logits(f->session, 1, expected);

    append(session, tokens, 10, false);
    strata_error err = {0};
    CHECK(strata_session_append(session, tokens + 10, 7, false, &err) == STRATA_E_CONTEXT_FULL);
    CHECK_MESSAGE(strstr(err.message, "16") != NULL, "%s", err.message);
    CHECK(strata_session_length(session) == 10);
    /* The refused append computed nothing: what follows is what it would have been. */
    if (append(session, tokens + 10, 6, false))
        copy_logits(session, 1, actual);
    check_identical(expected, actual, 1, "logits after a refused append", spec->name);
    CHECK(strata_session_length(session) == SMALL_CONTEXT);
    CHECK(strata_session_append(session, tokens + 16, 1, false, &err) == STRATA_E_CONTEXT_FULL);
    CHECK(strata_session_length(session) == SMALL_CONTEXT);
    strata_session_destroy(session);
}

static void appending_past_the_context_fails_and_keeps_the_session(void)
{
    for_each_model(SMALL_CONTEXT, refused_append_changes_nothing);
}

static void session_context_must_fit_the_model(void)
{
    tiny_model_spec spec = tiny_model_llama();
    strata_model *model = open_model(&spec, 1);
    if (model == NULL)
        return;
    strata_session *session = (strata_session *)model; /* not NULL: a failed create must clear it */
    strata_error err = {0};
    strata_session_options options = {.context_length = 65};
    CHECK(strata_session_create(model, &options, &session, &err) == STRATA_E_INVALID_ARGUMENT);
    CHECK(session == NULL);
    CHECK_MESSAGE(strstr(err.message, "65") != NULL && strstr(err.message, "64") != NULL, "%s", err.message);
    options.context_length = -1;
    CHECK(strata_session_create(model, &options, &session, &err) == STRATA_E_INVALID_ARGUMENT);
    CHECK(session == NULL);
    CHECK(strata_session_create(model, NULL, &session, &err) == STRATA_OK);
    int32_t tokens[64];
    random_tokens(tokens, 64, 17);
    if (session != NULL)
        append(session, tokens, 64, false); /* the default context is the model's */
    strata_session_destroy(session);
    strata_model_close(model);
}

static void tokens_outside_the_vocabulary_are_refused(void)
{
    static const struct {
        int32_t tokens[3];
        size_t count;
        const char *named;
    } bad[] = {
        {{-1}, 1, "-1"},
        {{TINY_VOCAB}, 1, "266"},
        {{5, 7, TINY_VOCAB + 1000}, 3, "1266"},
        {{INT32_MIN, 0}, 2, "-2147483648"},
    };
    tiny_model_spec spec = tiny_model_llama();
    fixture f = fixture_open(&spec, 1, 0);
    strata_session *session = f.session;
    if (session == NULL)
        return;
    int32_t prefix[4] = {1, 259, 260, 261};
    append(session, prefix, 4, false);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        strata_error err = {0};
        CHECK_MESSAGE(strata_session_append(session, bad[i].tokens, bad[i].count, false, &err) ==
                          STRATA_E_INVALID_ARGUMENT,
                      "case %zu", i);
        CHECK_MESSAGE(strstr(err.message, bad[i].named) != NULL, "\"%s\" does not name %s", err.message,
                      bad[i].named);
        CHECK(strata_session_length(session) == 4);
    }
    int32_t last = TINY_VOCAB - 1;
    append(session, &last, 1, false);
    CHECK(strata_session_length(session) == 5);
    fixture_close(&f);
}

static void appending_zero_tokens_is_refused(void)
{
    tiny_model_spec spec = tiny_model_llama();
    fixture f = fixture_open(&spec, 1, 0);
    strata_session *session = f.session;
    if (session != NULL) {
        int32_t token = 259;
        strata_error err = {0};
        CHECK(strata_session_append(session, &token, 0, false, &err) == STRATA_E_INVALID_ARGUMENT);
        CHECK(err.message[0] != '\0');
        CHECK(strata_session_length(session) == 0);
    }
    fixture_close(&f);
}

/* Feeds the same steps to a session and records every logit it returns:
 * a batched prompt, a few decode steps and a batch of 3 (the single-token path). */
static void run_fixed_steps(strata_model *model, float *out)
{
    int32_t tokens[PROMPT_TOKENS];
    random_tokens(tokens, PROMPT_TOKENS, 18);
    strata_session *session = create_session(model, 0);
    if (session == NULL)
        return;
    if (append(session, tokens, 17, true))
        copy_logits(session, 17, out);
    for (size_t i = 17; i < 21; i++)
        if (append(session, tokens + i, 1, false))
            copy_logits(session, 1, out + i * TINY_VOCAB);
    if (append(session, tokens + 21, 3, true))
        copy_logits(session, 3, out + 21 * TINY_VOCAB);
    strata_session_destroy(session);
}

static void thread_count_does_not_change_results(void)
{
    float *one = calloc(PROMPT_TOKENS * TINY_VOCAB, sizeof(float));
    float *two = calloc(PROMPT_TOKENS * TINY_VOCAB, sizeof(float));
    for (int s = 0; s < TEST_SPECS; s++) {
        tiny_model_spec spec = test_spec(s);
        strata_model *single_threaded = open_model(&spec, 1);
        strata_model *two_threads = open_model(&spec, 2);
        if (single_threaded != NULL && two_threads != NULL) {
            CHECK(strata_model_threads(two_threads) == 2);
            run_fixed_steps(single_threaded, one);
            run_fixed_steps(two_threads, two);
            check_identical(one, two, PROMPT_TOKENS, "logits with 1 and 2 threads", spec.name);
        }
        strata_model_close(single_threaded);
        strata_model_close(two_threads);
    }
    free(one);
    free(two);
}

static void two_sessions_of_one_model_do_not_interfere(void)
{
    int32_t a[PROMPT_TOKENS], b[PROMPT_TOKENS];
    random_tokens(a, PROMPT_TOKENS, 19);
    random_tokens(b, PROMPT_TOKENS, 20);
    float alone[TINY_VOCAB], interleaved[TINY_VOCAB];
    tiny_model_spec spec = tiny_model_gemma3();
    fixture f = fixture_open(&spec, 2, 0);
    strata_session *first = f.session;
    strata_session *second = f.model != NULL ? create_session(f.model, 32) : NULL;
    if (second != NULL) {
        append(first, a, 12, false);
        if (append(first, a + 12, 12, false))
            copy_logits(first, 1, alone);
        rewind_to(first, 0);
        append(first, a, 12, false);
        append(second, b, PROMPT_TOKENS, true);
        if (append(first, a + 12, 12, false))
            copy_logits(first, 1, interleaved);
        check_identical(alone, interleaved, 1, "logits with another session in between", spec.name);
    }
    strata_session_destroy(second);
    fixture_close(&f);
}

static void a_prompt_longer_than_a_chunk_matches_two_appends(void)
{
    enum { SPLIT = 300 };
    int32_t *tokens = malloc(LONG_PROMPT_TOKENS * sizeof *tokens);
    float *whole = malloc((size_t)LONG_PROMPT_TOKENS * TINY_VOCAB * sizeof(float));
    float *split = malloc((size_t)LONG_PROMPT_TOKENS * TINY_VOCAB * sizeof(float));
    float last[TINY_VOCAB];
    random_tokens(tokens, LONG_PROMPT_TOKENS, 21);
    for (int s = 0; s < TEST_SPECS; s++) {
        tiny_model_spec spec = test_spec(s);
        spec.context_length = 640;
        fixture f = fixture_open(&spec, 2, 0);
        strata_session *session = f.session;
        if (session == NULL)
            continue;
        /* One append the session cuts at 512, against two cut at 300. */
        if (append(session, tokens, LONG_PROMPT_TOKENS, false))
            copy_logits(session, 1, last);
        rewind_to(session, 0);
        if (append(session, tokens, LONG_PROMPT_TOKENS, true))
            copy_logits(session, LONG_PROMPT_TOKENS, whole);
        rewind_to(session, 0);
        if (append(session, tokens, SPLIT, true))
            copy_logits(session, SPLIT, split);
        if (append(session, tokens + SPLIT, LONG_PROMPT_TOKENS - SPLIT, true))
            copy_logits(session, LONG_PROMPT_TOKENS - SPLIT, split + SPLIT * TINY_VOCAB);
        CHECK(strata_session_length(session) == LONG_PROMPT_TOKENS);
        check_close(whole, split, LONG_PROMPT_TOKENS, "one long append vs two", spec.name);
        check_close(last, split + (LONG_PROMPT_TOKENS - 1) * TINY_VOCAB, 1, "last logits of one long append",
                    spec.name);
        fixture_close(&f);
    }
    free(tokens);
    free(whole);
    free(split);
}

/* Returns the logits of every token of a fixed prompt, fed in one append. */
static bool prompt_logits(const tiny_model_spec *spec, float *out)
{
    int32_t tokens[PROMPT_TOKENS];
    random_tokens(tokens, PROMPT_TOKENS, 22);
    fixture f = fixture_open(spec, 1, 0);
    bool ok = f.session != NULL && append(f.session, tokens, PROMPT_TOKENS, true);
    if (ok)
        copy_logits(f.session, PROMPT_TOKENS, out);
    fixture_close(&f);
    return ok;
}

/* Gemma 3 (4B and larger) declares linear RoPE scaling for its global layers
 * only: llama.cpp rotates sliding-window layers with base 10000 and scale 1
 * (rope_freq_scale_train_swa). With 5 layers every gemma3 layer slides, so
 * the scaling must change nothing; with a 6th, global layer it must. */
static void gemma3_scales_rope_only_on_global_layers(void)
{
    float *plain = malloc(PROMPT_TOKENS * TINY_VOCAB * sizeof(float));
    float *scaled = malloc(PROMPT_TOKENS * TINY_VOCAB * sizeof(float));
    for (int64_t layers = 5; layers <= 6; layers++) {
        tiny_model_spec spec = tiny_model_gemma3();
        spec.block_count = layers;
        bool ok = prompt_logits(&spec, plain);
        spec.rope_scaling = "linear", spec.rope_scaling_factor = 8.0f;
        ok = ok && prompt_logits(&spec, scaled);
        bool same = memcmp(plain, scaled, PROMPT_TOKENS * TINY_VOCAB * sizeof(float)) == 0;
        CHECK_MESSAGE(!ok || same == (layers == 5), "%lld layers: linear RoPE scaling %s the logits",
                      (long long)layers, same ? "did not change" : "changed");
    }
    free(plain);
    free(scaled);
}

/* The tiny model of an architecture: gemma3, qwen2, else llama. */
static tiny_model_spec spec_of_architecture(const char *arch)
{
    return strcmp(arch, "gemma3") == 0 ? tiny_model_gemma3() : strcmp(arch, "qwen2") == 0 ? tiny_model_qwen2()
                                                                                         : tiny_model_llama();
}

/* Builds a chat prompt and compares it with the expected text. */
static void check_chat_prompt(const strata_model *model, const char *system_message, const char *expected)
{
    char *prompt = NULL;
    strata_error err = {0};
    strata_status status = strata_chat_prompt(model, system_message, "Hi there", &prompt, &err);
    CHECK_MESSAGE(status == STRATA_OK, "%s", err.message);
    CHECK_MESSAGE(prompt != NULL && strcmp(prompt, expected) == 0, "%s: got \"%s\"",
                  strata_model_architecture(model), prompt != NULL ? prompt : "(null)");
    free(prompt);
}

static void chat_prompts_follow_the_model_format(void)
{
    static const char *const chatml_template =
        "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
        "<|im_end|>\n{% endfor %}<|im_start|>assistant\n";
    static const struct {
        const char *arch;
        const char *chat_template;
        strata_chat_format format;
        const char *plain;       /* user message only */
        const char *with_system; /* system "Be brief." too */
    } formats[] = {
        {"gemma3", NULL, STRATA_CHAT_GEMMA,
         "<start_of_turn>user\nHi there<end_of_turn>\n<start_of_turn>model\n",
         "<start_of_turn>user\nBe brief.\n\nHi there<end_of_turn>\n<start_of_turn>model\n"},
        {"qwen2", NULL, STRATA_CHAT_CHATML,
         "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
         "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n"
         "<|im_start|>assistant\n"},
        {"llama", NULL, STRATA_CHAT_LLAMA3,
         "<|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>"
         "<|start_header_id|>assistant<|end_header_id|>\n\n",
         "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
         "<|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>"
         "<|start_header_id|>assistant<|end_header_id|>\n\n"},
        {"llama", chatml_template, STRATA_CHAT_CHATML,
         "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
         "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n"
         "<|im_start|>assistant\n"},
    };
    for (size_t i = 0; i < sizeof formats / sizeof formats[0]; i++) {
        tiny_model_spec spec = spec_of_architecture(formats[i].arch);
        spec.chat_template = formats[i].chat_template;
        strata_model *model = open_model(&spec, 1);
        if (model == NULL)
            continue;
        CHECK_MESSAGE(strata_model_chat_format(model) == formats[i].format, "case %zu", i);
        check_chat_prompt(model, NULL, formats[i].plain);
        check_chat_prompt(model, "Be brief.", formats[i].with_system);
        strata_model_close(model);
    }
}

/* A conversation: system text, a user turn, an answer and a second user turn. */
static void chat_conversations_keep_their_turns(void)
{
    static const strata_chat_message conversation[] = {
        {"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello."}, {"user", "Bye"}};
    static const struct {
        const char *arch;
        const char *expected;
    } formats[] = {
        {"gemma3", "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello.<end_of_turn>\n"
                   "<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n"},
        {"qwen2", "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
                  "Hello.<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n"},
        {"llama", "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
                  "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
                  "<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>"
                  "<|start_header_id|>user<|end_header_id|>\n\nBye<|eot_id|>"
                  "<|start_header_id|>assistant<|end_header_id|>\n\n"},
    };
    for (size_t i = 0; i < sizeof formats / sizeof formats[0]; i++) {
        tiny_model_spec spec = spec_of_architecture(formats[i].arch);
        strata_model *model = open_model(&spec, 1);
        if (model == NULL)
            continue;
        char *prompt = NULL;
        strata_error err = {0};
        CHECK_MESSAGE(strata_chat_prompt_messages(model, conversation, 4, &prompt, &err) == STRATA_OK, "%s",
                      err.message);
        CHECK_MESSAGE(prompt != NULL && strcmp(prompt, formats[i].expected) == 0, "%s: got \"%s\"", formats[i].arch,
                      prompt != NULL ? prompt : "(null)");
        free(prompt);
        strata_chat_message wrong = {"tool", "x"};
        CHECK(strata_chat_prompt_messages(model, &wrong, 1, &prompt, &err) == STRATA_E_INVALID_ARGUMENT);
        CHECK_MESSAGE(strstr(err.message, "tool") != NULL, "%s", err.message);
        strata_model_close(model);
    }
}

int main(void)
{
    RUN_CASE(batched_single_and_chunked_appends_agree);
    RUN_CASE(all_logits_rows_are_the_last_logits_of_each_prefix);
    RUN_CASE(rewind_then_replay_is_bitwise_identical);
    RUN_CASE(rewind_past_a_released_window_is_refused);
    RUN_CASE(rewinding_past_the_length_is_refused);
    RUN_CASE(appending_past_the_context_fails_and_keeps_the_session);
    RUN_CASE(session_context_must_fit_the_model);
    RUN_CASE(tokens_outside_the_vocabulary_are_refused);
    RUN_CASE(appending_zero_tokens_is_refused);
    RUN_CASE(thread_count_does_not_change_results);
    RUN_CASE(two_sessions_of_one_model_do_not_interfere);
    RUN_CASE(a_prompt_longer_than_a_chunk_matches_two_appends);
    RUN_CASE(gemma3_scales_rope_only_on_global_layers);
    RUN_CASE(chat_prompts_follow_the_model_format);
    RUN_CASE(chat_conversations_keep_their_turns);
    TEST_EXIT();
}
