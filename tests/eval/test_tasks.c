/* tests/eval/test_tasks.c: the task generators and their haystacks.
 *
 * Every task kind on both haystacks, over a grid of seeds, depths and target
 * lengths, with a word counter standing in for a tokenizer: the same spec
 * gives a byte-identical sample, another seed a different one; every answer
 * is in the context, where the needle offsets say; the first queried needle
 * sits at the asked depth; the prompt (context + first query) counts at most
 * the target and misses it by little; multi-turn samples carry one answer per
 * turn; common_words' answers really are its most frequent words; variable
 * chains appear in order. Also: names, spec checks, the haystacks' filler.
 *
 * The prose haystack is a file fetched by scripts/fetch-prose.sh (setup.sh
 * runs it). When it is missing this test FAILS, naming the script: a silent
 * skip would leave half the grid untested. */
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "eval/haystack.h"
#include "eval/tasks.h"
#include "test_util.h"

/* ---- helpers ----------------------------------------------------------- */

/* The stand-in tokenizer: one token per run of non-space bytes. */
static int64_t count_words(void *context, const char *text, size_t length)
{
    int64_t *calls = context;
    if (calls != NULL)
        (*calls)++;
    int64_t words = 0;
    bool in_word = false;
    for (size_t i = 0; i < length; i++) {
        bool space = text[i] == ' ' || text[i] == '\n' || text[i] == '\t' || text[i] == '\r';
        if (!space && !in_word)
            words++;
        in_word = !space;
    }
    return words;
}

static int64_t count_string_words(const char *text)
{
    return count_words(NULL, text, strlen(text));
}

static eval_haystack *noise;
static eval_haystack *prose; /* NULL when the file is missing (a failure already recorded) */

static eval_haystack *haystack_of(eval_haystack_kind kind)
{
    return kind == EVAL_HAYSTACK_NOISE ? noise : prose;
}

static bool generate(const eval_task_spec *spec, eval_haystack_kind kind, eval_sample *sample)
{
    strata_error error = {0};
    strata_status status = eval_task_generate(spec, haystack_of(kind), count_words, NULL, sample, &error);
    CHECK_MESSAGE(status == STRATA_OK, "%s on %s, seed %" PRIu64 ", depth %.2f, %" PRId64 " tokens: %s",
                  eval_task_kind_name(spec->kind), eval_haystack_kind_name(kind), spec->seed, spec->depth,
                  spec->target_tokens, error.message);
    return status == STRATA_OK;
}

static bool same_samples(const eval_sample *a, const eval_sample *b)
{
    if (a->context_length != b->context_length || memcmp(a->context, b->context, a->context_length) != 0 ||
        a->query_count != b->query_count || a->needle_count != b->needle_count ||
        a->prompt_tokens != b->prompt_tokens)
        return false;
    for (int32_t i = 0; i < a->needle_count; i++)
        if (a->needle_offsets[i] != b->needle_offsets[i])
            return false;
    for (int32_t q = 0; q < a->query_count; q++) {
        if (strcmp(a->queries[q].text, b->queries[q].text) != 0 ||
            a->queries[q].answer_count != b->queries[q].answer_count)
            return false;
        for (int32_t k = 0; k < a->queries[q].answer_count; k++)
            if (strcmp(a->queries[q].answers[k], b->queries[q].answers[k]) != 0)
                return false;
    }
    return true;
}

/* How each kind's needle 0 begins, to check that the offsets point at needles. */
static const char *const needle_openings[EVAL_TASK_KIND_COUNT] = {
    [EVAL_TASK_PASSKEY] = "The pass key is ",
    [EVAL_TASK_NIAH_SINGLE] = "The secret number for ",
    [EVAL_TASK_NIAH_MULTIKEY] = "The secret number for ",
    [EVAL_TASK_NIAH_MULTIVALUE] = "One of the secret numbers for ",
    [EVAL_TASK_NIAH_MULTIQUERY] = "The secret number for ",
    [EVAL_TASK_VARIABLE_TRACKING] = "VAR ",
    [EVAL_TASK_COMMON_WORDS] = NULL,
    [EVAL_TASK_MULTITURN] = "The secret number for ",
    [EVAL_TASK_MULTIREQUEST] = "The secret number for ",
};

/* The checks every sample passes, whatever its kind. */
static void check_sample(const eval_task_spec *spec, eval_haystack_kind kind, const eval_sample *sample)
{
    const char *name = eval_task_kind_name(spec->kind);
    const char *hay = eval_haystack_kind_name(kind);
    CHECK_MESSAGE(strlen(sample->context) == sample->context_length, "%s/%s: context length", name, hay);
    CHECK_MESSAGE(sample->query_count >= 1, "%s/%s: no query", name, hay);
    CHECK(sample->haystack == kind);

    /* Token count: recounted, at most the target, and close to it. */
    size_t prompt_length = sample->context_length + strlen(sample->queries[0].text);
    char *prompt = malloc(prompt_length + 1);
    memcpy(prompt, sample->context, sample->context_length);
    strcpy(prompt + sample->context_length, sample->queries[0].text);
    int64_t tokens = count_words(NULL, prompt, prompt_length);
    free(prompt);
    CHECK_MESSAGE(tokens == sample->prompt_tokens, "%s/%s: prompt counts %" PRId64 ", sample says %" PRId64, name,
                  hay, tokens, sample->prompt_tokens);
    /* Within one filler sentence (prose pieces are at most 400 bytes, about
     * 70 words) or, for common_words, a few list items. */
    int64_t slack = 80 + spec->target_tokens / 50;
    CHECK_MESSAGE(tokens <= spec->target_tokens && spec->target_tokens - tokens <= slack,
                  "%s/%s seed %" PRIu64 ": prompt of %" PRId64 " words for a target of %" PRId64, name, hay,
                  spec->seed, tokens, spec->target_tokens);

    /* Every answer in the context; queries start apart and end with a cue. */
    for (int32_t q = 0; q < sample->query_count; q++) {
        const eval_query *query = &sample->queries[q];
        CHECK_MESSAGE(strncmp(query->text, "\n\n", 2) == 0, "%s/%s: query %d does not start with a blank line",
                      name, hay, (int)q);
        size_t length = strlen(query->text);
        CHECK_MESSAGE(length > 0 && query->text[length - 1] != ' ' && query->text[length - 1] != '\n',
                      "%s/%s: query %d ends with whitespace", name, hay, (int)q);
        CHECK(query->score == EVAL_SCORE_ALL);
        CHECK(query->answer_count >= 1);
        for (int32_t a = 0; a < query->answer_count; a++) {
            CHECK_MESSAGE(strstr(sample->context, query->answers[a]) != NULL,
                          "%s/%s seed %" PRIu64 ": answer '%s' of query %d is not in the context", name, hay,
                          spec->seed, query->answers[a], (int)q);
            /* A perfect answer scores 1, an empty one 0. */
            CHECK(eval_sample_score(sample, q, query->answers[a]) > 0.0);
        }
        CHECK(eval_sample_score(sample, q, "") == 0.0);
    }

    /* Offsets point at the needles. */
    for (int32_t i = 0; i < sample->needle_count; i++) {
        int64_t offset = sample->needle_offsets[i];
        CHECK_MESSAGE(offset >= 0 && (size_t)offset < sample->context_length, "%s/%s: needle %d at %" PRId64,
                      name, hay, (int)i, offset);
        if (offset < 0 || (size_t)offset >= sample->context_length)
            continue;
        const char *opening = needle_openings[spec->kind];
        if (opening != NULL)
            CHECK_MESSAGE(strncmp(sample->context + offset, opening, strlen(opening)) == 0,
                          "%s/%s: needle %d reads '%.40s'", name, hay, (int)i, sample->context + offset);
        else
            CHECK_MESSAGE(strncmp(sample->context + offset, sample->queries[0].answers[i],
                                  strlen(sample->queries[0].answers[i])) == 0,
                          "%s/%s: common word %d reads '%.20s'", name, hay, (int)i, sample->context + offset);
    }
    /* The first queried needle holds the first answer. */
    if (spec->kind != EVAL_TASK_COMMON_WORDS && spec->kind != EVAL_TASK_VARIABLE_TRACKING) {
        const char *needle = sample->context + sample->needle_offsets[0];
        const char *end = strchr(needle, '.');
        const char *answer = strstr(needle, sample->queries[0].answers[0]);
        CHECK_MESSAGE(answer != NULL && end != NULL && answer < end,
                      "%s/%s: needle 0 '%.60s' lacks answer '%s'", name, hay, needle,
                      sample->queries[0].answers[0]);
    }
}

/* ---- the grid ------------------------------------------------------------ */

static const int64_t grid_targets[] = {400, 2500, 9000};
static const double grid_depths[] = {0.0, 0.1, 0.5, 0.9, 1.0};
static const uint64_t grid_seeds[] = {1, 2, 977};

static void every_kind_on_every_haystack_passes_the_sample_checks(void)
{
    for (int kind = 0; kind < EVAL_TASK_KIND_COUNT; kind++)
        for (int hay = 0; hay < EVAL_HAYSTACK_KIND_COUNT; hay++) {
            if (haystack_of((eval_haystack_kind)hay) == NULL)
                continue; /* the missing file already failed the run */
            for (size_t t = 0; t < sizeof grid_targets / sizeof grid_targets[0]; t++)
                for (size_t d = 0; d < sizeof grid_depths / sizeof grid_depths[0]; d++) {
                    eval_task_spec spec = {.kind = (eval_task_kind)kind,
                                           .target_tokens = grid_targets[t],
                                           .depth = grid_depths[d],
                                           .seed = grid_seeds[(t + d) % 3]};
                    eval_sample sample = {0};
                    if (generate(&spec, (eval_haystack_kind)hay, &sample))
                        check_sample(&spec, (eval_haystack_kind)hay, &sample);
                    eval_sample_free(&sample);
                }
        }
}

static void same_spec_gives_the_same_sample_and_another_seed_another(void)
{
    for (int kind = 0; kind < EVAL_TASK_KIND_COUNT; kind++)
        for (int hay = 0; hay < EVAL_HAYSTACK_KIND_COUNT; hay++) {
            if (haystack_of((eval_haystack_kind)hay) == NULL)
                continue;
            eval_task_spec spec = {.kind = (eval_task_kind)kind, .target_tokens = 1500, .depth = 0.3, .seed = 42};
            eval_sample first = {0}, again = {0}, other = {0};
            bool made = generate(&spec, (eval_haystack_kind)hay, &first) &&
                        generate(&spec, (eval_haystack_kind)hay, &again);
            spec.seed = 43;
            made = made && generate(&spec, (eval_haystack_kind)hay, &other);
            if (made) {
                CHECK_MESSAGE(same_samples(&first, &again), "%s/%s: two samples of seed 42 differ",
                              eval_task_kind_name(spec.kind), eval_haystack_kind_name((eval_haystack_kind)hay));
                CHECK_MESSAGE(strcmp(first.context, other.context) != 0, "%s/%s: seeds 42 and 43 give one context",
                              eval_task_kind_name(spec.kind), eval_haystack_kind_name((eval_haystack_kind)hay));
                CHECK_MESSAGE(strcmp(first.queries[0].answers[0], other.queries[0].answers[0]) != 0,
                              "%s/%s: seeds 42 and 43 give one answer", eval_task_kind_name(spec.kind),
                              eval_haystack_kind_name((eval_haystack_kind)hay));
            }
            eval_sample_free(&first);
            eval_sample_free(&again);
            eval_sample_free(&other);
        }
}

/* needle offset / context length is the depth, give or take the text around
 * the haystack (introduction, query-free context end, other needles) and a sentence. */
static void first_needle_sits_at_the_asked_depth(void)
{
    static const double depths[] = {0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0};
    for (int kind = 0; kind < EVAL_TASK_KIND_COUNT; kind++) {
        if (kind == EVAL_TASK_COMMON_WORDS)
            continue; /* a word list has no depth */
        for (int hay = 0; hay < EVAL_HAYSTACK_KIND_COUNT; hay++) {
            if (haystack_of((eval_haystack_kind)hay) == NULL)
                continue;
            for (size_t d = 0; d < sizeof depths / sizeof depths[0]; d++) {
                eval_task_spec spec = {.kind = (eval_task_kind)kind, .target_tokens = 6000, .depth = depths[d],
                                       .seed = 7 + d};
                eval_sample sample = {0};
                if (generate(&spec, (eval_haystack_kind)hay, &sample)) {
                    double at = (double)sample.needle_offsets[0] / (double)sample.context_length;
                    CHECK_MESSAGE(fabs(at - depths[d]) <= 0.04, "%s/%s: depth %.2f asked, needle at %.3f",
                                  eval_task_kind_name(spec.kind), eval_haystack_kind_name((eval_haystack_kind)hay),
                                  depths[d], at);
                }
                eval_sample_free(&sample);
            }
        }
    }
}

static void multiturn_has_one_distinct_answer_per_turn(void)
{
    for (int hay = 0; hay < EVAL_HAYSTACK_KIND_COUNT; hay++) {
        if (haystack_of((eval_haystack_kind)hay) == NULL)
            continue;
        eval_task_spec spec = {.kind = EVAL_TASK_MULTITURN, .target_tokens = 3000, .depth = 0.4, .seed = 5,
                               .needle_count = 6, .query_count = 5};
        eval_sample sample = {0};
        if (generate(&spec, (eval_haystack_kind)hay, &sample)) {
            CHECK(sample.query_count == 5);
            CHECK(sample.needle_count == 6);
            for (int32_t q = 0; q < sample.query_count; q++) {
                CHECK(sample.queries[q].answer_count == 1);
                CHECK(strstr(sample.context, sample.queries[q].answers[0]) != NULL);
                /* The needle of turn q holds its answer and its key is in the question. */
                const char *needle = sample.context + sample.needle_offsets[q];
                const char *key = needle + strlen("The secret number for ");
                size_t key_length = strcspn(key, " ");
                CHECK(strncmp(key + key_length, " is ", 4) == 0);
                CHECK(strncmp(key + key_length + 4, sample.queries[q].answers[0],
                              strlen(sample.queries[q].answers[0])) == 0);
                char key_copy[64] = {0};
                memcpy(key_copy, key, key_length < 63 ? key_length : 63);
                CHECK_MESSAGE(strstr(sample.queries[q].text, key_copy) != NULL, "turn %d asks '%s'", (int)q,
                              sample.queries[q].text);
                for (int32_t r = 0; r < q; r++)
                    CHECK(strcmp(sample.queries[q].answers[0], sample.queries[r].answers[0]) != 0);
            }
        }
        eval_sample_free(&sample);
    }
}

static int compare_strings(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Parses the numbered list and checks the answers are strictly the most frequent words. */
static void common_words_answers_are_the_most_frequent(void)
{
    for (int hay = 0; hay < EVAL_HAYSTACK_KIND_COUNT; hay++) {
        if (haystack_of((eval_haystack_kind)hay) == NULL)
            continue;
        static const int64_t targets[] = {300, 2000, 20000};
        for (size_t t = 0; t < sizeof targets / sizeof targets[0]; t++) {
            eval_task_spec spec = {.kind = EVAL_TASK_COMMON_WORDS, .target_tokens = targets[t], .seed = 11 + t};
            eval_sample sample = {0};
            if (!generate(&spec, (eval_haystack_kind)hay, &sample)) {
                eval_sample_free(&sample);
                continue;
            }
            /* Read the list, lines "N. word", then count each word's copies in sorted order. */
            char **listed = calloc((size_t)sample.context_length, sizeof *listed);
            int64_t items = 0, expected_number = 1;
            for (const char *line = strchr(sample.context, '\n'); line != NULL; line = strchr(line + 1, '\n')) {
                if (line[1] < '0' || line[1] > '9')
                    continue;
                char *end = NULL;
                long number = strtol(line + 1, &end, 10);
                if (end == line + 1 || strncmp(end, ". ", 2) != 0)
                    continue;
                CHECK(number == expected_number);
                expected_number++;
                const char *word = end + 2;
                size_t length = strcspn(word, "\n");
                listed[items] = malloc(length + 1);
                memcpy(listed[items], word, length);
                listed[items][length] = '\0';
                items++;
            }
            CHECK(items == sample.filler_sentences);
            qsort(listed, (size_t)items, sizeof *listed, compare_strings);
            const eval_query *query = &sample.queries[0];
            CHECK(query->answer_count == 10);
            int64_t least_common = INT64_MAX, most_other = 0;
            for (int64_t i = 0; i < items;) {
                int64_t j = i + 1;
                while (j < items && strcmp(listed[i], listed[j]) == 0)
                    j++;
                bool answer = false;
                for (int32_t a = 0; a < query->answer_count; a++)
                    answer |= strcmp(listed[i], query->answers[a]) == 0;
                if (answer && j - i < least_common)
                    least_common = j - i;
                if (!answer && j - i > most_other)
                    most_other = j - i;
                i = j;
            }
            for (int64_t i = 0; i < items; i++)
                free(listed[i]);
            free(listed);
            CHECK_MESSAGE(least_common > most_other && least_common >= 2,
                          "%s, %" PRId64 " words: answers appear at least %" PRId64 " times, another word %" PRId64,
                          eval_haystack_kind_name((eval_haystack_kind)hay), targets[t], least_common, most_other);
            eval_sample_free(&sample);
        }
    }
}

static void variable_chains_are_in_order_and_fully_asked(void)
{
    for (int hay = 0; hay < EVAL_HAYSTACK_KIND_COUNT; hay++) {
        if (haystack_of((eval_haystack_kind)hay) == NULL)
            continue;
        eval_task_spec spec = {.kind = EVAL_TASK_VARIABLE_TRACKING, .target_tokens = 4000, .depth = 0.2,
                               .seed = 3, .needle_count = 4, .chain_count = 3};
        eval_sample sample = {0};
        if (generate(&spec, (eval_haystack_kind)hay, &sample)) {
            CHECK(sample.needle_count == 12);
            CHECK(sample.queries[0].answer_count == 4);
            for (int32_t c = 0; c < 3; c++)
                for (int32_t v = 1; v < 4; v++)
                    CHECK(sample.needle_offsets[c * 4 + v] > sample.needle_offsets[c * 4 + v - 1]);
            /* Needle v of chain 0 assigns answer v, from answer v - 1. */
            for (int32_t v = 0; v < 4; v++) {
                char expected[64];
                if (v == 0)
                    snprintf(expected, sizeof expected, "VAR %s = ", sample.queries[0].answers[0]);
                else
                    snprintf(expected, sizeof expected, "VAR %s = VAR %s.", sample.queries[0].answers[v],
                             sample.queries[0].answers[v - 1]);
                CHECK_MESSAGE(strncmp(sample.context + sample.needle_offsets[v], expected, strlen(expected)) == 0,
                              "chain 0, variable %d: '%.30s'", (int)v, sample.context + sample.needle_offsets[v]);
            }
        }
        eval_sample_free(&sample);
    }
}

/* A long prompt is found with one count per filler sentence (about 6% more
 * sentences than are kept) and a handful of whole-prompt counts. */
static void long_target_fits_with_few_counter_calls(void)
{
    eval_task_spec spec = {.kind = EVAL_TASK_NIAH_MULTIKEY, .target_tokens = 100000, .depth = 0.5, .seed = 9};
    for (int hay = 0; hay < EVAL_HAYSTACK_KIND_COUNT; hay++) {
        if (haystack_of((eval_haystack_kind)hay) == NULL)
            continue;
        int64_t calls = 0;
        eval_sample sample = {0};
        strata_error error = {0};
        strata_status status =
            eval_task_generate(&spec, haystack_of((eval_haystack_kind)hay), count_words, &calls, &sample, &error);
        CHECK_MESSAGE(status == STRATA_OK, "%s", error.message);
        if (status == STRATA_OK) {
            check_sample(&spec, (eval_haystack_kind)hay, &sample);
            CHECK_MESSAGE(calls <= sample.filler_sentences * 11 / 10 + 64, "%" PRId64 " counter calls for %" PRId64
                          " sentences kept", calls, sample.filler_sentences);
        }
        eval_sample_free(&sample);
    }
}

/* A counter that adds a start token to every call, as a tokenizer asked for
 * BOS would: the sentences' counts then add up to more than the prompt's,
 * the first filler falls short and the generator must ask for more. */
static int64_t count_words_and_a_start_token(void *context, const char *text, size_t length)
{
    return count_words(context, text, length) + 1;
}

static void counter_with_a_start_token_still_lands_on_the_target(void)
{
    for (int kind = 0; kind < EVAL_TASK_KIND_COUNT; kind++)
        for (int hay = 0; hay < EVAL_HAYSTACK_KIND_COUNT; hay++) {
            if (haystack_of((eval_haystack_kind)hay) == NULL)
                continue;
            eval_task_spec spec = {.kind = (eval_task_kind)kind, .target_tokens = 5000, .depth = 0.6, .seed = 8};
            eval_sample sample = {0};
            strata_error error = {0};
            strata_status status = eval_task_generate(&spec, haystack_of((eval_haystack_kind)hay),
                                                      count_words_and_a_start_token, NULL, &sample, &error);
            CHECK_MESSAGE(status == STRATA_OK, "%s", error.message);
            if (status == STRATA_OK) {
                int64_t words = count_string_words(sample.context) + count_string_words(sample.queries[0].text);
                CHECK(sample.prompt_tokens == words + 1);
                CHECK_MESSAGE(sample.prompt_tokens <= 5000 && sample.prompt_tokens >= 5000 - 180,
                              "%s/%s: %" PRId64 " tokens", eval_task_kind_name(spec.kind),
                              eval_haystack_kind_name((eval_haystack_kind)hay), sample.prompt_tokens);
            }
            eval_sample_free(&sample);
        }
}

/* The noise sample of a fixed spec, hashed: a change of wording, generator or
 * layout shows here (and must be a deliberate one). */
static void noise_passkey_sample_is_stable(void)
{
    eval_task_spec spec = {.kind = EVAL_TASK_PASSKEY, .target_tokens = 200, .depth = 0.5, .seed = 2026};
    eval_sample sample = {0};
    if (generate(&spec, EVAL_HAYSTACK_NOISE, &sample)) {
        uint64_t hash = 0xcbf29ce484222325ull; /* FNV-1a */
        for (size_t i = 0; i < sample.context_length; i++)
            hash = (hash ^ (unsigned char)sample.context[i]) * 0x100000001b3ull;
        CHECK_MESSAGE(hash == 0x9592578233e3a960ull, "context hash %016" PRIx64 ", answer %s:\n%s", hash,
                      sample.queries[0].answers[0], sample.context);
    }
    eval_sample_free(&sample);
}

/* ---- names and specs ---------------------------------------------------- */

static void names_round_trip_and_unknown_names_list_them_all(void)
{
    for (int kind = 0; kind < EVAL_TASK_KIND_COUNT; kind++) {
        eval_task_kind found = EVAL_TASK_KIND_COUNT;
        CHECK(eval_task_kind_find(eval_task_kind_name((eval_task_kind)kind), &found, NULL) == STRATA_OK);
        CHECK(found == (eval_task_kind)kind);
        CHECK(strstr(eval_task_kind_names(), eval_task_kind_name((eval_task_kind)kind)) != NULL);
        CHECK(strlen(eval_task_kind_summary((eval_task_kind)kind)) > 10);
    }
    strata_error error = {0};
    eval_task_kind found;
    CHECK(eval_task_kind_find("niah", &found, &error) == STRATA_E_INVALID_ARGUMENT);
    CHECK(strstr(error.message, "'niah'") != NULL && strstr(error.message, "variable_tracking") != NULL);
    eval_haystack_kind hay;
    CHECK(eval_haystack_kind_find("prose", &hay, NULL) == STRATA_OK && hay == EVAL_HAYSTACK_PROSE);
    CHECK(eval_haystack_kind_find("noise", &hay, NULL) == STRATA_OK && hay == EVAL_HAYSTACK_NOISE);
    CHECK(eval_haystack_kind_find("essay", &hay, &error) == STRATA_E_INVALID_ARGUMENT);
    CHECK(strstr(error.message, "noise, prose") != NULL);
}

typedef struct bad_spec_case {
    const char *name;
    eval_task_spec spec;
    const char *message_part;
} bad_spec_case;

static void bad_specs_are_refused_with_a_reason(void)
{
    static const bad_spec_case cases[] = {
        {"depth_above_one", {.kind = EVAL_TASK_PASSKEY, .target_tokens = 500, .depth = 1.5}, "depth"},
        {"depth_not_a_number", {.kind = EVAL_TASK_PASSKEY, .target_tokens = 500, .depth = NAN}, "depth"},
        {"zero_target", {.kind = EVAL_TASK_PASSKEY, .target_tokens = 0}, "target"},
        {"passkey_with_three_needles", {.kind = EVAL_TASK_PASSKEY, .target_tokens = 500, .needle_count = 3},
         "needles"},
        {"multiquery_asking_more_keys_than_hidden",
         {.kind = EVAL_TASK_NIAH_MULTIQUERY, .target_tokens = 500, .needle_count = 3, .query_count = 4}, "keys"},
        {"query_count_on_a_single_query_task",
         {.kind = EVAL_TASK_NIAH_SINGLE, .target_tokens = 500, .query_count = 2}, "query count"},
        {"chains_on_a_needle_task", {.kind = EVAL_TASK_NIAH_MULTIKEY, .target_tokens = 500, .chain_count = 2},
         "chain"},
        {"unknown_kind", {.kind = EVAL_TASK_KIND_COUNT, .target_tokens = 500}, "passkey"},
        {"target_below_the_task_text", {.kind = EVAL_TASK_NIAH_MULTIVALUE, .target_tokens = 20}, "below"},
        {"word_list_target_too_short", {.kind = EVAL_TASK_COMMON_WORDS, .target_tokens = 30}, "below"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        eval_sample sample = {0};
        strata_error error = {0};
        strata_status status = eval_task_generate(&cases[i].spec, noise, count_words, NULL, &sample, &error);
        CHECK_MESSAGE(status == STRATA_E_INVALID_ARGUMENT, "%s: status %d", cases[i].name, (int)status);
        CHECK_MESSAGE(strstr(error.message, cases[i].message_part) != NULL, "%s: '%s'", cases[i].name,
                      error.message);
        CHECK(sample.context == NULL && sample.queries == NULL);
        eval_sample_free(&sample);
    }
}

/* ---- haystacks ---------------------------------------------------------- */

static void filler_is_whole_sentences_from_a_seeded_start(void)
{
    for (int hay = 0; hay < EVAL_HAYSTACK_KIND_COUNT; hay++) {
        eval_haystack *haystack = haystack_of((eval_haystack_kind)hay);
        if (haystack == NULL)
            continue;
        eval_filler a = {0}, b = {0};
        strata_error error = {0};
        CHECK(eval_haystack_text(haystack, 1, 3000, count_words, NULL, &a, &error) == STRATA_OK);
        CHECK(eval_haystack_text(haystack, 2, 3000, count_words, NULL, &b, &error) == STRATA_OK);
        CHECK(a.tokens >= 3000 && b.tokens >= 3000);
        int64_t sum = 0;
        for (int64_t s = 0; s < a.sentence_count; s++) {
            const eval_sentence *sentence = &a.sentences[s];
            sum += sentence->tokens;
            CHECK(sentence->offset + sentence->length <= a.length);
            CHECK(sentence->length <= 400);
            /* The separator before it: none, " " or "\n\n". */
            size_t previous_end = s == 0 ? 0 : a.sentences[s - 1].offset + a.sentences[s - 1].length;
            const char *separator = s == 0 ? "" : sentence->paragraph_start ? "\n\n" : " ";
            CHECK(sentence->offset - previous_end == strlen(separator));
            CHECK(strncmp(a.text + previous_end, separator, strlen(separator)) == 0);
            CHECK(a.text[sentence->offset] != ' ' && a.text[sentence->offset + sentence->length - 1] != ' ');
        }
        CHECK(sum == a.tokens);
        CHECK(count_string_words(a.text) == a.tokens);
        if (hay == EVAL_HAYSTACK_PROSE)
            CHECK_MESSAGE(strncmp(a.text, b.text, 200) != 0, "prose fillers of seeds 1 and 2 start alike");
        eval_filler_free(&a);
        eval_filler_free(&b);
    }
}

static void prose_haystack_is_the_book(void)
{
    if (prose == NULL)
        return;
    CHECK_MESSAGE(eval_haystack_paragraph_count(prose) > 1000, "%" PRId64 " paragraphs",
                  eval_haystack_paragraph_count(prose));
    int64_t count = 0;
    const char *const *words = eval_haystack_words(prose, &count);
    CHECK_MESSAGE(count > 2000, "%" PRId64 " words", count);
    for (int64_t i = 1; i < count; i++)
        CHECK(strcmp(words[i - 1], words[i]) < 0);
}

static void missing_prose_file_names_the_fetch_script(void)
{
    eval_haystack *haystack = NULL;
    strata_error error = {0};
    CHECK(eval_haystack_open(EVAL_HAYSTACK_PROSE, "/nonexistent/debian-handbook.txt", &haystack, &error) ==
          STRATA_E_IO);
    CHECK(haystack == NULL);
    CHECK(strstr(error.message, "scripts/fetch-prose.sh") != NULL);
    eval_haystack_close(NULL);
}

int main(void)
{
    strata_error error = {0};
    if (eval_haystack_open(EVAL_HAYSTACK_NOISE, NULL, &noise, &error) != STRATA_OK) {
        fprintf(stderr, "cannot open the noise haystack: %s\n", error.message);
        return 1;
    }
    if (eval_haystack_open(EVAL_HAYSTACK_PROSE, NULL, &prose, &error) != STRATA_OK) {
        fprintf(stderr,
                "FAIL: the prose haystack is missing: %s\n"
                "      run scripts/fetch-prose.sh (scripts/setup.sh does) and run this test again\n",
                error.message);
        test_failures++;
        prose = NULL;
    }
    RUN_CASE(names_round_trip_and_unknown_names_list_them_all);
    RUN_CASE(bad_specs_are_refused_with_a_reason);
    RUN_CASE(missing_prose_file_names_the_fetch_script);
    RUN_CASE(filler_is_whole_sentences_from_a_seeded_start);
    RUN_CASE(prose_haystack_is_the_book);
    RUN_CASE(every_kind_on_every_haystack_passes_the_sample_checks);
    RUN_CASE(same_spec_gives_the_same_sample_and_another_seed_another);
    RUN_CASE(first_needle_sits_at_the_asked_depth);
    RUN_CASE(multiturn_has_one_distinct_answer_per_turn);
    RUN_CASE(common_words_answers_are_the_most_frequent);
    RUN_CASE(variable_chains_are_in_order_and_fully_asked);
    RUN_CASE(long_target_fits_with_few_counter_calls);
    RUN_CASE(counter_with_a_start_token_still_lands_on_the_target);
    RUN_CASE(noise_passkey_sample_is_stable);
    eval_haystack_close(noise);
    eval_haystack_close(prose);
    TEST_EXIT();
}
