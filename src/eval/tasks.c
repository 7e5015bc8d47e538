/* eval/tasks.c: generating the synthetic long-context tasks (see tasks.h).
 *
 * A needle task starts from filler a little longer than the target. Then
 * the plan, drawn from the seed: an introduction, the needles (each a
 * sentence, with the depth it should sit at, as a share of the filler's
 * tokens) and the queries with their answers. Numbers, keys and variable
 * names are drawn again while they occur in the filler text, so the only
 * copy of an answer is the needle's. For a given number of filler sentences,
 * each needle goes to the sentence boundary closest to its depth, by the
 * sentences' own token counts; needles at the same boundary keep their
 * planned order, which keeps a variable chain in order. A search over the
 * number of sentences (a guess from the sentences' counts, a gallop from it,
 * a bisection) finds the longest prompt (context + first query) that the
 * counter puts at or under the target, counting whole prompts a handful of
 * times; if the whole filler fits, the haystack is asked for more.
 *
 * common_words has no needles: its context is a numbered word list whose
 * length is searched the same way (see the section on it below).
 *
 * The wording is ours; the task shapes follow RULER (Hsieh et al., 2024) and,
 * for multiturn, SCBench's shared-context multi-turn mode (Li et al., 2024). */
#include "eval/tasks.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"

enum {
    TARGET_TOKENS_MAX = 1 << 26,
    DRAW_ATTEMPTS = 10000,   /* tries for a value absent from the filler and from the other needles */
    FILLER_ATTEMPTS = 8,     /* rounds of asking the haystack for more filler */
    WORD_LIST_ROUNDS = 8,    /* rounds of re-estimating a word list's shape */
};

/* Keys are "adjective-noun" pairs of these words: 4096 of them. */
static const char *const key_adjectives[] = {
    "amber",  "bold",    "brave",  "bright", "calm",   "cheerful", "clever", "crimson",
    "curious", "dusty",  "eager",  "faint",  "fancy",  "fierce",  "fresh",   "fuzzy",
    "gentle", "glad",    "golden", "grumpy", "happy",  "hollow",  "humble",  "icy",
    "jagged", "jolly",   "keen",   "lively", "loyal",  "lucky",   "mellow",  "merry",
    "misty",  "nimble",  "noble",  "odd",    "pale",   "proud",   "quick",   "quiet",
    "rapid",  "rusty",   "shiny",  "silent", "sleepy", "smooth",  "solemn",  "spicy",
    "steady", "sticky",  "stormy", "sunny",  "swift",  "tame",    "tidy",    "tiny",
    "vivid",  "warm",    "wary",   "wild",   "witty",  "young",   "zesty",   "dainty",
};
static const char *const key_nouns[] = {
    "acorn",   "anvil",    "badger",  "banjo",    "beetle",  "biscuit", "bramble", "canyon",
    "caravan", "cobbler",  "coral",   "cupboard", "dune",    "ember",   "ferry",   "fjord",
    "gadget",  "galaxy",   "gazebo",  "geyser",   "hamlet",  "heron",   "hornet",  "iceberg",
    "jasmine", "kayak",    "kiosk",   "lagoon",   "lighthouse", "locket", "mammoth", "mango",
    "meteor",  "minnow",   "mosaic",  "nutmeg",   "oasis",   "otter",   "pagoda",  "panther",
    "pelican", "pinecone", "plum",    "quarry",   "quartz",  "radish",  "reef",    "sapphire",
    "scooter", "sparrow",  "squirrel", "tadpole", "teacup",  "thistle", "toucan",  "trumpet",
    "tundra",  "vase",     "volcano", "waffle",   "wombat",  "yak",     "zeppelin", "marmot",
};
enum {
    KEY_ADJECTIVE_COUNT = sizeof key_adjectives / sizeof key_adjectives[0],
    KEY_NOUN_COUNT = sizeof key_nouns / sizeof key_nouns[0],
};

/* ---- small helpers ------------------------------------------------------ */

/* Returns a newly allocated formatted string, or NULL when out of memory. */
static char *string_printf(const char *format, ...) STRATA_PRINTF(1, 2);
static char *string_printf(const char *format, ...)
{
    va_list args;
    va_start(args, format);
    int length = vsnprintf(NULL, 0, format, args);
    va_end(args);
    if (length < 0)
        return NULL;
    char *text = malloc((size_t)length + 1);
    if (text == NULL)
        return NULL;
    va_start(args, format);
    vsnprintf(text, (size_t)length + 1, format, args);
    va_end(args);
    return text;
}

/* A growing string; a failed allocation sets failed and later appends do nothing. */
typedef struct text_buffer {
    char *data;
    size_t length;
    size_t capacity;
    bool failed;
} text_buffer;

static void buffer_append(text_buffer *buffer, const char *text, size_t length)
{
    if (buffer->failed)
        return;
    if (buffer->length + length + 1 > buffer->capacity) {
        size_t next = buffer->capacity > 0 ? buffer->capacity * 2 : 4096;
        while (next < buffer->length + length + 1)
            next *= 2;
        char *grown = realloc(buffer->data, next);
        if (grown == NULL) {
            buffer->failed = true;
            return;
        }
        buffer->data = grown;
        buffer->capacity = next;
    }
    memcpy(buffer->data + buffer->length, text, length);
    buffer->length += length;
    buffer->data[buffer->length] = '\0';
}

static void buffer_append_string(text_buffer *buffer, const char *text)
{
    buffer_append(buffer, text, strlen(text));
}

/* Counts text with the caller's counter; a negative count becomes an error. */
static strata_status count_tokens(eval_token_counter counter, void *context, const char *text, size_t length,
                                  int64_t *out, strata_error *err)
{
    *out = counter(context, text, length);
    if (*out < 0)
        return strata_fail(err, STRATA_E_INTERNAL, "the token counter failed on a prompt of %zu bytes", length);
    return STRATA_OK;
}

/* Joins words as "a", "a and b" or "a, b and c". */
static char *join_words(const char *const *words, int32_t count)
{
    text_buffer buffer = {0};
    for (int32_t i = 0; i < count; i++) {
        if (i > 0)
            buffer_append_string(&buffer, i == count - 1 ? " and " : ", ");
        buffer_append_string(&buffer, words[i]);
    }
    if (buffer.failed) {
        free(buffer.data);
        return NULL;
    }
    return buffer.data;
}

/* ---- plans -------------------------------------------------------------- */

/* A needle task before the haystack: what goes around it and into it. */
typedef struct task_plan {
    const char *intro;      /* opens the context; ends with "\n\n" */
    int32_t needle_count;
    char **needles;         /* each a sentence */
    double *fractions;      /* where each goes: the share of filler tokens before it */
    int32_t query_count;
    eval_query *queries;
    /* drawn values, to keep them distinct: keys, numbers, variable names */
    int32_t drawn_count;
    char **drawn;
} task_plan;

static void free_queries(eval_query *queries, int32_t count)
{
    for (int32_t q = 0; queries != NULL && q < count; q++) {
        free(queries[q].text);
        for (int32_t a = 0; queries[q].answers != NULL && a < queries[q].answer_count; a++)
            free(queries[q].answers[a]);
        free(queries[q].answers);
    }
    free(queries);
}

static void plan_free(task_plan *plan)
{
    for (int32_t i = 0; plan->needles != NULL && i < plan->needle_count; i++)
        free(plan->needles[i]);
    free(plan->needles);
    free(plan->fractions);
    free_queries(plan->queries, plan->query_count);
    for (int32_t i = 0; i < plan->drawn_count; i++)
        free(plan->drawn[i]);
    free(plan->drawn);
    *plan = (task_plan){0};
}

static strata_status out_of_memory(strata_error *err)
{
    return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "out of memory generating an evaluation task");
}

/* Allocates room for the needles, their depths, the queries and the drawn values. */
static strata_status plan_allocate(task_plan *plan, int32_t needles, int32_t queries, int32_t drawn,
                                   strata_error *err)
{
    plan->needles = calloc((size_t)needles, sizeof *plan->needles);
    plan->fractions = calloc((size_t)needles, sizeof *plan->fractions);
    plan->queries = calloc((size_t)queries, sizeof *plan->queries);
    plan->drawn = calloc((size_t)drawn, sizeof *plan->drawn);
    plan->needle_count = needles;
    plan->query_count = queries;
    if (plan->needles == NULL || plan->fractions == NULL || plan->queries == NULL || plan->drawn == NULL)
        return out_of_memory(err);
    return STRATA_OK;
}

/* Gives query index room for count answers and the score kind all. */
static strata_status plan_query(task_plan *plan, int32_t index, int32_t count, strata_error *err)
{
    eval_query *query = &plan->queries[index];
    query->answers = calloc((size_t)count, sizeof *query->answers);
    if (query->answers == NULL)
        return out_of_memory(err);
    query->answer_count = count;
    query->score = EVAL_SCORE_ALL;
    return STRATA_OK;
}

/* Whether a candidate is already drawn or occurs in the filler. */
static bool is_taken(const task_plan *plan, const char *filler, const char *candidate)
{
    for (int32_t i = 0; i < plan->drawn_count; i++)
        if (strstr(plan->drawn[i], candidate) != NULL || strstr(candidate, plan->drawn[i]) != NULL)
            return true;
    return strstr(filler, candidate) != NULL;
}

typedef enum draw_kind { DRAW_KEY, DRAW_NUMBER_5, DRAW_NUMBER_7, DRAW_VARIABLE } draw_kind;

/* Draws a key, a number or a variable name absent from the filler and the
 * plan's other draws; *out points at the plan's copy. */
static strata_status draw(task_plan *plan, eval_random *random, const char *filler, draw_kind kind,
                          const char **out, strata_error *err)
{
    for (int attempt = 0; attempt < DRAW_ATTEMPTS; attempt++) {
        char candidate[64];
        switch (kind) {
        case DRAW_KEY:
            snprintf(candidate, sizeof candidate, "%s-%s",
                     key_adjectives[eval_random_below(random, KEY_ADJECTIVE_COUNT)],
                     key_nouns[eval_random_below(random, KEY_NOUN_COUNT)]);
            break;
        case DRAW_NUMBER_5:
            snprintf(candidate, sizeof candidate, "%" PRIu64, 10000 + eval_random_below(random, 90000));
            break;
        case DRAW_NUMBER_7:
            snprintf(candidate, sizeof candidate, "%" PRIu64, 1000000 + eval_random_below(random, 9000000));
            break;
        case DRAW_VARIABLE:
            for (int i = 0; i < 5; i++)
                candidate[i] = (char)('A' + eval_random_below(random, 26));
            candidate[5] = '\0';
            break;
        }
        if (is_taken(plan, filler, candidate))
            continue;
        char *copy = string_printf("%s", candidate);
        if (copy == NULL)
            return out_of_memory(err);
        plan->drawn[plan->drawn_count++] = copy;
        *out = copy;
        return STRATA_OK;
    }
    return strata_fail(err, STRATA_E_INTERNAL,
                       "no value absent from the haystack was found in %d draws; the haystack is unusual",
                       DRAW_ATTEMPTS);
}

/* Sets needle index to text (taking it) at depth fraction. */
static strata_status set_needle(task_plan *plan, int32_t index, char *text, double fraction, strata_error *err)
{
    if (text == NULL)
        return out_of_memory(err);
    plan->needles[index] = text;
    plan->fractions[index] = fraction;
    return STRATA_OK;
}

static strata_status set_string(char **slot, char *text, strata_error *err)
{
    if (text == NULL)
        return out_of_memory(err);
    *slot = text;
    return STRATA_OK;
}

/* The intro avoids the words "pass key is": a base model completing the cue
 * "The pass key is" would copy the intro's continuation instead of the key. */
static const char passkey_intro[] =
    "Somewhere in the text below there is a secret pass key. Find it and remember it: "
    "you will be asked for it at the end.\n\n";
static const char numbers_intro[] =
    "Some secret numbers are hidden in the text below. Memorize them: "
    "you will be asked about them afterwards.\n\n";
static const char variables_intro[] =
    "Variable assignments are hidden in the text below. Memorize them and follow "
    "the chains: you will be asked about them afterwards.\n\n";
static const char words_intro[] =
    "Below is a numbered list of words. Some of the words come up far more often than the others.\n\n";

static strata_status plan_passkey(const eval_task_spec *spec, eval_random *random, const char *filler,
                                  task_plan *plan, strata_error *err)
{
    const char *key = NULL;
    strata_status status = plan_allocate(plan, 1, 1, 1, err);
    if (status == STRATA_OK)
        status = draw(plan, random, filler, DRAW_NUMBER_5, &key, err);
    if (status == STRATA_OK)
        status = set_needle(plan, 0, string_printf("The pass key is %s. Remember it: %s is the pass key.", key, key),
                            spec->depth, err);
    if (status == STRATA_OK)
        status = plan_query(plan, 0, 1, err);
    if (status == STRATA_OK)
        status = set_string(&plan->queries[0].text, string_printf("\n\nWhat is the pass key? The pass key is"), err);
    if (status == STRATA_OK)
        status = set_string(&plan->queries[0].answers[0], string_printf("%s", key), err);
    plan->intro = passkey_intro;
    return status;
}

/* The question about one key, as asked by niah_single, niah_multikey and each turn of multiturn. */
static char *single_key_question(const char *key)
{
    return string_printf("\n\nQuestion: What is the secret number for %s in the text above?\n"
                         "Answer: The secret number for %s is",
                         key, key);
}

/* Draws count keys with one number each: needle i holds keys[i] (needle 0 at
 * the spec's depth, the others at random depths). */
static strata_status plan_keyed_needles(const eval_task_spec *spec, eval_random *random, const char *filler,
                                        task_plan *plan, int32_t count, const char **keys, const char **values,
                                        strata_error *err)
{
    strata_status status = STRATA_OK;
    for (int32_t i = 0; i < count && status == STRATA_OK; i++) {
        status = draw(plan, random, filler, DRAW_KEY, &keys[i], err);
        if (status == STRATA_OK)
            status = draw(plan, random, filler, DRAW_NUMBER_7, &values[i], err);
        if (status == STRATA_OK) {
            double fraction = i == 0 ? spec->depth : eval_random_unit(random);
            status = set_needle(plan, i, string_printf("The secret number for %s is %s.", keys[i], values[i]),
                                fraction, err);
        }
    }
    plan->intro = numbers_intro;
    return status;
}

/* needle_count keyed needles; query t asks for key t alone, for `turns` queries. */
static strata_status plan_key_questions(const eval_task_spec *spec, eval_random *random, const char *filler,
                                        int32_t turns, task_plan *plan, strata_error *err)
{
    int32_t count = spec->needle_count;
    const char **keys = calloc((size_t)count, sizeof *keys);
    const char **values = calloc((size_t)count, sizeof *values);
    strata_status status = keys != NULL && values != NULL ? STRATA_OK : out_of_memory(err);
    if (status == STRATA_OK)
        status = plan_allocate(plan, count, turns, 2 * count, err);
    if (status == STRATA_OK)
        status = plan_keyed_needles(spec, random, filler, plan, count, keys, values, err);
    for (int32_t t = 0; t < turns && status == STRATA_OK; t++) {
        status = plan_query(plan, t, 1, err);
        if (status == STRATA_OK)
            status = set_string(&plan->queries[t].text, single_key_question(keys[t]), err);
        if (status == STRATA_OK)
            status = set_string(&plan->queries[t].answers[0], string_printf("%s", values[t]), err);
    }
    free(keys);
    free(values);
    return status;
}

/* niah_single and niah_multikey: needle 0's key is asked, the others distract. */
static strata_status plan_niah_keys(const eval_task_spec *spec, eval_random *random, const char *filler,
                                    task_plan *plan, strata_error *err)
{
    return plan_key_questions(spec, random, filler, 1, plan, err);
}

/* niah_multivalue: one key, needle_count numbers, all asked for. */
static strata_status plan_niah_multivalue(const eval_task_spec *spec, eval_random *random, const char *filler,
                                          task_plan *plan, strata_error *err)
{
    int32_t count = spec->needle_count;
    const char *key = NULL;
    strata_status status = plan_allocate(plan, count, 1, count + 1, err);
    if (status == STRATA_OK)
        status = draw(plan, random, filler, DRAW_KEY, &key, err);
    if (status == STRATA_OK)
        status = plan_query(plan, 0, count, err);
    for (int32_t i = 0; i < count && status == STRATA_OK; i++) {
        const char *value = NULL;
        status = draw(plan, random, filler, DRAW_NUMBER_7, &value, err);
        if (status == STRATA_OK)
            status = set_needle(plan, i, string_printf("One of the secret numbers for %s is %s.", key, value),
                                i == 0 ? spec->depth : eval_random_unit(random), err);
        if (status == STRATA_OK)
            status = set_string(&plan->queries[0].answers[i], string_printf("%s", value), err);
    }
    if (status == STRATA_OK)
        status = set_string(&plan->queries[0].text,
                            string_printf("\n\nQuestion: What are all the secret numbers for %s in the text above?\n"
                                          "Answer: The secret numbers for %s are",
                                          key, key),
                            err);
    plan->intro = numbers_intro;
    return status;
}

/* niah_multiquery: needle_count keys; the first query_count are asked in one question. */
static strata_status plan_niah_multiquery(const eval_task_spec *spec, eval_random *random, const char *filler,
                                          task_plan *plan, strata_error *err)
{
    int32_t count = spec->needle_count, asked = spec->query_count;
    const char **keys = calloc((size_t)count, sizeof *keys);
    const char **values = calloc((size_t)count, sizeof *values);
    char *list = NULL;
    strata_status status = keys != NULL && values != NULL ? STRATA_OK : out_of_memory(err);
    if (status == STRATA_OK)
        status = plan_allocate(plan, count, 1, 2 * count, err);
    if (status == STRATA_OK)
        status = plan_keyed_needles(spec, random, filler, plan, count, keys, values, err);
    if (status == STRATA_OK)
        status = plan_query(plan, 0, asked, err);
    for (int32_t i = 0; i < asked && status == STRATA_OK; i++)
        status = set_string(&plan->queries[0].answers[i], string_printf("%s", values[i]), err);
    if (status == STRATA_OK) {
        list = join_words(keys, asked);
        status = list != NULL ? STRATA_OK : out_of_memory(err);
    }
    if (status == STRATA_OK)
        status = set_string(&plan->queries[0].text,
                            string_printf("\n\nQuestion: What are the secret numbers for %s in the text above?\n"
                                          "Answer: The secret numbers for %s are",
                                          list, list),
                            err);
    free(list);
    free(keys);
    free(values);
    return status;
}

/* multiturn: needle_count keys; turn t asks for key t, one turn per asked key. */
static strata_status plan_multiturn(const eval_task_spec *spec, eval_random *random, const char *filler,
                                    task_plan *plan, strata_error *err)
{
    return plan_key_questions(spec, random, filler, spec->query_count, plan, err);
}

static int compare_doubles(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* variable_tracking: chain_count chains of needle_count variables, each
 * chain's value copied along it; chain 0 is asked about. Chain 0 starts at
 * the spec's depth with the rest of it after; other chains anywhere, in order. */
static strata_status plan_variable_tracking(const eval_task_spec *spec, eval_random *random, const char *filler,
                                            task_plan *plan, strata_error *err)
{
    int32_t length = spec->needle_count, chains = spec->chain_count;
    const char **names = calloc((size_t)length, sizeof *names);
    strata_status status = names != NULL ? STRATA_OK : out_of_memory(err);
    if (status == STRATA_OK)
        status = plan_allocate(plan, length * chains, 1, (length + 1) * chains, err);
    if (status == STRATA_OK)
        status = plan_query(plan, 0, length, err);
    const char *asked_value = NULL;
    for (int32_t c = 0; c < chains && status == STRATA_OK; c++) {
        const char *value = NULL;
        status = draw(plan, random, filler, DRAW_NUMBER_5, &value, err);
        for (int32_t v = 0; v < length && status == STRATA_OK; v++)
            status = draw(plan, random, filler, DRAW_VARIABLE, &names[v], err);
        if (status != STRATA_OK)
            break;
        /* Depths along the chain, in order. */
        double *fractions = plan->fractions + (size_t)c * (size_t)length;
        double low = c == 0 ? spec->depth : 0.0;
        for (int32_t v = 0; v < length; v++)
            fractions[v] = low + (1.0 - low) * eval_random_unit(random);
        qsort(fractions, (size_t)length, sizeof *fractions, compare_doubles);
        if (c == 0)
            fractions[0] = spec->depth;
        for (int32_t v = 0; v < length && status == STRATA_OK; v++) {
            char *text = v == 0 ? string_printf("VAR %s = %s.", names[0], value)
                                : string_printf("VAR %s = VAR %s.", names[v], names[v - 1]);
            status = set_needle(plan, c * length + v, text, fractions[v], err);
            if (status == STRATA_OK && c == 0)
                status = set_string(&plan->queries[0].answers[v], string_printf("%s", names[v]), err);
        }
        if (c == 0)
            asked_value = value;
    }
    if (status == STRATA_OK)
        status = set_string(&plan->queries[0].text,
                            string_printf("\n\nQuestion: Which variables are given the value %s, directly or "
                                          "through other variables, in the text above?\n"
                                          "Answer: Following the assignments, the variables given the value %s are:",
                                          asked_value, asked_value),
                            err);
    free(names);
    plan->intro = variables_intro;
    return status;
}

/* ---- the task table ----------------------------------------------------- */

typedef strata_status (*task_plan_function)(const eval_task_spec *spec, eval_random *random, const char *filler,
                                            task_plan *plan, strata_error *err);

/* What each kind is and takes. Counts: needles in [needles_min, needles_max];
 * query_count is used only where asks_keys (default: every key) and
 * chain_count only where chains_default > 0. */
typedef struct task_ops {
    const char *name;
    const char *summary;
    int32_t needles_min, needles_max, needles_default;
    bool asks_keys;
    int32_t chains_default;
    task_plan_function plan; /* NULL: the word-list generator */
} task_ops;

static const task_ops task_table[EVAL_TASK_KIND_COUNT] = {
    [EVAL_TASK_PASSKEY] = {"passkey", "a 5-digit pass key in the haystack; asked for it", 1, 1, 1, false, 0,
                           plan_passkey},
    [EVAL_TASK_NIAH_SINGLE] = {"niah_single", "one key with a 7-digit number; asked for the number", 1, 1, 1,
                               false, 0, plan_niah_keys},
    [EVAL_TASK_NIAH_MULTIKEY] = {"niah_multikey", "several keys with a number each; asked for one key's number",
                                 2, 64, 4, false, 0, plan_niah_keys},
    [EVAL_TASK_NIAH_MULTIVALUE] = {"niah_multivalue", "one key with several numbers; asked for all of them", 2, 64,
                                   4, false, 0, plan_niah_multivalue},
    [EVAL_TASK_NIAH_MULTIQUERY] = {"niah_multiquery",
                                   "several keys with a number each; asked for several keys' numbers at once", 2,
                                   64, 4, true, 0, plan_niah_multiquery},
    [EVAL_TASK_VARIABLE_TRACKING] = {"variable_tracking",
                                     "chains of variable assignments; asked which variables hold a value", 2, 64, 5,
                                     false, 1, plan_variable_tracking},
    [EVAL_TASK_COMMON_WORDS] = {"common_words", "a numbered word list; asked for its most frequent words", 1, 64, 10,
                                false, 0, NULL},
    [EVAL_TASK_MULTITURN] = {"multiturn",
                             "several keys with a number each; one key asked per turn on the same context", 1, 64,
                             4, true, 0, plan_multiturn},
    [EVAL_TASK_MULTIREQUEST] = {"multirequest",
                                "multiturn's keys; one request per key, each its own session on the shared "
                                "compressed context",
                                1, 64, 4, true, 0, plan_multiturn},
};

const char *eval_task_kind_name(eval_task_kind kind)
{
    return (unsigned)kind < EVAL_TASK_KIND_COUNT ? task_table[kind].name : "unknown";
}

const char *eval_task_kind_summary(eval_task_kind kind)
{
    return (unsigned)kind < EVAL_TASK_KIND_COUNT ? task_table[kind].summary : "unknown task";
}

const char *eval_task_kind_names(void)
{
    return "passkey, niah_single, niah_multikey, niah_multivalue, niah_multiquery, variable_tracking, "
           "common_words, multiturn, multirequest";
}

strata_status eval_task_kind_find(const char *name, eval_task_kind *out, strata_error *err)
{
    for (int kind = 0; kind < EVAL_TASK_KIND_COUNT; kind++)
        if (name != NULL && strcmp(name, task_table[kind].name) == 0) {
            *out = (eval_task_kind)kind;
            return STRATA_OK;
        }
    return strata_fail(err, STRATA_E_INVALID_ARGUMENT, "unknown task '%s'; the tasks are: %s",
                       name != NULL ? name : "(null)", eval_task_kind_names());
}

/* Checks a spec and fills in the kind's defaults. */
static strata_status resolve_spec(const eval_task_spec *spec, eval_task_spec *resolved, strata_error *err)
{
    if ((unsigned)spec->kind >= EVAL_TASK_KIND_COUNT)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT, "task kind %d is not one of: %s", (int)spec->kind,
                           eval_task_kind_names());
    const task_ops *ops = &task_table[spec->kind];
    *resolved = *spec;
    if (spec->target_tokens < 1 || spec->target_tokens > TARGET_TOKENS_MAX)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT, "%s: a target of %" PRId64 " tokens is outside 1..%d",
                           ops->name, spec->target_tokens, TARGET_TOKENS_MAX);
    if (!(spec->depth >= 0.0 && spec->depth <= 1.0))
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT, "%s: depth %g is outside 0..1", ops->name, spec->depth);
    if (resolved->needle_count == 0)
        resolved->needle_count = ops->needles_default;
    if (resolved->needle_count < ops->needles_min || resolved->needle_count > ops->needles_max)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT, "%s takes %d to %d needles; %d were asked for",
                           ops->name, ops->needles_min, ops->needles_max, (int)resolved->needle_count);
    if (ops->asks_keys) {
        if (resolved->query_count == 0)
            resolved->query_count = resolved->needle_count;
        if (resolved->query_count < 1 || resolved->query_count > resolved->needle_count)
            return strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                               "%s asks about 1 to %d keys (its needle count); %d were asked for", ops->name,
                               (int)resolved->needle_count, (int)resolved->query_count);
    } else if (resolved->query_count != 0) {
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT, "%s has no query count to set (%d was given)",
                           ops->name, (int)resolved->query_count);
    }
    if (ops->chains_default > 0) {
        if (resolved->chain_count == 0)
            resolved->chain_count = ops->chains_default;
        if (resolved->chain_count < 1 || resolved->chain_count > 16)
            return strata_fail(err, STRATA_E_INVALID_ARGUMENT, "%s takes 1 to 16 chains; %d were asked for",
                               ops->name, (int)resolved->chain_count);
    } else if (resolved->chain_count != 0) {
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT, "%s has no chain count to set (%d was given)",
                           ops->name, (int)resolved->chain_count);
    }
    return STRATA_OK;
}

/* ---- fitting a needle task to its target ------------------------------- */

/* Where each needle goes for a context of the filler's first sentence_count sentences. */
typedef struct needle_layout {
    int64_t *boundary;  /* per needle: insert before this sentence (sentence_count: after the last) */
    int32_t *order;     /* needles by (boundary, index) */
} needle_layout;

/* The boundary k in [0, count] whose token prefix cumulative[k] is closest to target. */
static int64_t closest_boundary(const int64_t *cumulative, int64_t count, double target)
{
    int64_t low = 0, high = count; /* the first k with cumulative[k] >= target lies in [low, high] */
    while (low < high) {
        int64_t middle = low + (high - low) / 2;
        if ((double)cumulative[middle] < target)
            low = middle + 1;
        else
            high = middle;
    }
    if (low > 0 && target - (double)cumulative[low - 1] <= (double)cumulative[low] - target)
        return low - 1;
    return low;
}

/* Builds the context for sentence_count filler sentences into buffer and
 * records each needle's offset. */
static void assemble_context(const task_plan *plan, const eval_filler *filler, const int64_t *cumulative,
                             int64_t sentence_count, needle_layout *layout, text_buffer *buffer,
                             int64_t *needle_offsets)
{
    buffer->length = 0;
    buffer_append_string(buffer, plan->intro);
    for (int32_t i = 0; i < plan->needle_count; i++) {
        layout->boundary[i] =
            closest_boundary(cumulative, sentence_count, plan->fractions[i] * (double)cumulative[sentence_count]);
        /* insertion sort by (boundary, index): the counts are small */
        int32_t j = i;
        while (j > 0 && layout->boundary[layout->order[j - 1]] > layout->boundary[i]) {
            layout->order[j] = layout->order[j - 1];
            j--;
        }
        layout->order[j] = i;
    }
    size_t end = sentence_count > 0 ? filler->sentences[sentence_count - 1].offset +
                                          filler->sentences[sentence_count - 1].length
                                    : 0;
    size_t copied = 0;
    for (int32_t k = 0; k < plan->needle_count; k++) {
        int32_t i = layout->order[k];
        int64_t boundary = layout->boundary[i];
        if (boundary < sentence_count) {
            size_t start = filler->sentences[boundary].offset;
            buffer_append(buffer, filler->text + copied, start - copied);
            copied = start;
            needle_offsets[i] = (int64_t)buffer->length;
            buffer_append_string(buffer, plan->needles[i]);
            buffer_append_string(buffer, " ");
        } else {
            buffer_append(buffer, filler->text + copied, end - copied);
            copied = end;
            if (buffer->length > strlen(plan->intro))
                buffer_append_string(buffer, " ");
            needle_offsets[i] = (int64_t)buffer->length;
            buffer_append_string(buffer, plan->needles[i]);
        }
    }
    buffer_append(buffer, filler->text + copied, end - copied);
}

/* Counts the prompt (context + first query) of sentence_count filler sentences. */
static strata_status count_needle_prompt(const task_plan *plan, const eval_filler *filler,
                                         const int64_t *cumulative, int64_t sentence_count, needle_layout *layout,
                                         text_buffer *buffer, int64_t *needle_offsets, eval_token_counter counter,
                                         void *counter_context, int64_t *tokens, strata_error *err)
{
    assemble_context(plan, filler, cumulative, sentence_count, layout, buffer, needle_offsets);
    size_t context_length = buffer->length;
    buffer_append_string(buffer, plan->queries[0].text);
    if (buffer->failed)
        return out_of_memory(err);
    strata_status status = count_tokens(counter, counter_context, buffer->data, buffer->length, tokens, err);
    buffer->length = context_length;
    buffer->data[context_length] = '\0';
    return status;
}

/* Moves the plan's queries into the sample. */
static void take_queries(task_plan *plan, eval_sample *sample)
{
    sample->queries = plan->queries;
    sample->query_count = plan->query_count;
    plan->queries = NULL;
    plan->query_count = 0;
}

static strata_status generate_needle_task(const eval_task_spec *spec, const eval_haystack *haystack,
                                          eval_token_counter counter, void *counter_context, eval_sample *sample,
                                          strata_error *err)
{
    const task_ops *ops = &task_table[spec->kind];
    eval_filler filler = {0};
    task_plan plan = {0};
    int64_t *cumulative = NULL;
    needle_layout layout = {0};
    text_buffer buffer = {0};
    strata_status status = STRATA_OK;
    int64_t filler_tokens = spec->target_tokens + spec->target_tokens / 16 + 32;
    int64_t tokens = 0, fitted = -1;
    for (int attempt = 0; attempt < FILLER_ATTEMPTS && fitted < 0 && status == STRATA_OK; attempt++) {
        eval_filler_free(&filler);
        plan_free(&plan);
        free(cumulative);
        free(layout.boundary);
        free(layout.order);
        free(sample->needle_offsets);
        layout = (needle_layout){0};
        sample->needle_offsets = NULL;
        status = eval_haystack_text(haystack, spec->seed, filler_tokens, counter, counter_context, &filler, err);
        if (status != STRATA_OK)
            break;
        /* The plan's draws start from the seed every round, mixed apart from
         * the haystack's and by kind: all kinds of one seed share their filler,
         * not their keys and numbers. */
        eval_random random = {spec->seed ^ 0xbb67ae8584caa73bull ^ ((uint64_t)spec->kind + 1) * 0x9e3779b97f4a7c15ull};
        status = ops->plan(spec, &random, filler.text, &plan, err);
        if (status != STRATA_OK)
            break;
        cumulative = malloc(((size_t)filler.sentence_count + 1) * sizeof *cumulative);
        layout.boundary = malloc((size_t)plan.needle_count * sizeof *layout.boundary);
        layout.order = malloc((size_t)plan.needle_count * sizeof *layout.order);
        sample->needle_offsets = malloc((size_t)plan.needle_count * sizeof *sample->needle_offsets);
        if (cumulative == NULL || layout.boundary == NULL || layout.order == NULL || sample->needle_offsets == NULL) {
            status = out_of_memory(err);
            break;
        }
        cumulative[0] = 0;
        for (int64_t s = 0; s < filler.sentence_count; s++)
            cumulative[s + 1] = cumulative[s] + filler.sentences[s].tokens;

        /* The task's own text, without any haystack, must fit. */
        int64_t all = filler.sentence_count, fixed = 0;
        status = count_needle_prompt(&plan, &filler, cumulative, 0, &layout, &buffer, sample->needle_offsets,
                                     counter, counter_context, &fixed, err);
        if (status != STRATA_OK)
            break;
        if (fixed > spec->target_tokens) {
            status = strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                                 "%s: a target of %" PRId64 " tokens is below the %" PRId64
                                 " tokens of the task's own text without any haystack",
                                 ops->name, spec->target_tokens, fixed);
            break;
        }
        /* Guess from the sentences' own counts, gallop from the guess until
         * low (fits) and high (does not) bracket the answer, then bisect: a
         * handful of counts of the whole prompt rather than log2(sentences). */
        int64_t guess = 0;
        while (guess < all && fixed + cumulative[guess + 1] <= spec->target_tokens)
            guess++;
        int64_t low = -1, high = -1;
        status = count_needle_prompt(&plan, &filler, cumulative, guess, &layout, &buffer, sample->needle_offsets,
                                     counter, counter_context, &tokens, err);
        if (status == STRATA_OK && tokens <= spec->target_tokens) {
            low = guess;
            for (int64_t step = 1; status == STRATA_OK && high < 0 && low < all; step *= 2) {
                int64_t probe = low + step < all ? low + step : all;
                status = count_needle_prompt(&plan, &filler, cumulative, probe, &layout, &buffer,
                                             sample->needle_offsets, counter, counter_context, &tokens, err);
                if (tokens <= spec->target_tokens)
                    low = probe;
                else
                    high = probe;
            }
        } else if (status == STRATA_OK) {
            high = guess;
            /* 0 sentences fit (checked above), so this ends. */
            for (int64_t step = 1; status == STRATA_OK && low < 0; step *= 2) {
                int64_t probe = high - step > 0 ? high - step : 0;
                status = count_needle_prompt(&plan, &filler, cumulative, probe, &layout, &buffer,
                                             sample->needle_offsets, counter, counter_context, &tokens, err);
                if (tokens <= spec->target_tokens)
                    low = probe;
                else
                    high = probe;
            }
        }
        if (status != STRATA_OK)
            break;
        if (high < 0) {
            /* The whole filler fits: ask for more. */
            filler_tokens += filler_tokens / 2 + (spec->target_tokens - tokens) + 64;
            continue;
        }
        while (high - low > 1 && status == STRATA_OK) {
            int64_t middle = low + (high - low) / 2;
            status = count_needle_prompt(&plan, &filler, cumulative, middle, &layout, &buffer,
                                         sample->needle_offsets, counter, counter_context, &tokens, err);
            if (tokens <= spec->target_tokens)
                low = middle;
            else
                high = middle;
        }
        fitted = low;
    }
    if (status == STRATA_OK && fitted < 0)
        status = strata_fail(err, STRATA_E_INTERNAL,
                             "%s: %d rounds of haystack (the last of %" PRId64 " sentences) never reached the target "
                             "of %" PRId64 " tokens by the counter",
                             ops->name, FILLER_ATTEMPTS, filler.sentence_count, spec->target_tokens);
    if (status == STRATA_OK)
        status = count_needle_prompt(&plan, &filler, cumulative, fitted, &layout, &buffer, sample->needle_offsets,
                                     counter, counter_context, &tokens, err);
    if (status == STRATA_OK) {
        sample->context = buffer.data;
        sample->context_length = buffer.length;
        buffer.data = NULL;
        sample->needle_count = plan.needle_count;
        sample->prompt_tokens = tokens;
        sample->filler_sentences = fitted;
        take_queries(&plan, sample);
    }
    free(buffer.data);
    free(cumulative);
    free(layout.boundary);
    free(layout.order);
    plan_free(&plan);
    eval_filler_free(&filler);
    return status;
}

/* ---- common_words ------------------------------------------------------- *
 *
 * The context is a numbered list, one word per line. needle_count common
 * words appear `common` times each and `m` other words `rare` times each, in
 * an order shuffled by the seed; the answer is the common words. The shape
 * (common, rare) comes from an estimate of how many items fit, L: common
 * words take about 30% of the items and rare words the rest, spread over the
 * whole vocabulary (so rare is 1 for short lists and grows for long ones),
 * and common is at least rare + 1. With the shape fixed, the token count
 * grows with m, and a binary search over m finds the longest list that
 * fits; if the estimate of L was off so that no m lands close, L is
 * re-estimated from the tokens per item measured and the search runs again. */

typedef struct word_list_shape {
    int32_t common_count; /* needle_count */
    int64_t common;       /* occurrences of each common word */
    int64_t rare;         /* occurrences of each other word */
    int64_t rare_max;     /* words available for the others */
} word_list_shape;

static word_list_shape word_list_shape_for(int32_t common_count, int64_t vocabulary, int64_t items)
{
    word_list_shape shape = {.common_count = common_count, .rare_max = vocabulary - common_count};
    shape.common = (int64_t)llround(0.3 * (double)items / common_count);
    if (shape.common < 2)
        shape.common = 2;
    shape.rare = (int64_t)ceil(0.7 * (double)items / (double)shape.rare_max);
    if (shape.rare < 1)
        shape.rare = 1;
    if (shape.common <= shape.rare)
        shape.common = shape.rare + 1;
    return shape;
}

/* Builds the list of shape with rare_count other words into buffer; counts
 * the prompt when counting, records first occurrences when offsets is not NULL. */
static strata_status word_list_prompt(const eval_task_spec *spec, const char *const *words, const int64_t *chosen,
                                      const word_list_shape *shape, int64_t rare_count, const char *query,
                                      text_buffer *buffer, int64_t *offsets, eval_token_counter counter,
                                      void *counter_context, int64_t *tokens, int64_t *item_count, strata_error *err)
{
    int64_t common_items = shape->common_count * shape->common;
    int64_t items = common_items + rare_count * shape->rare;
    int64_t *list = malloc((size_t)(items > 0 ? items : 1) * sizeof *list);
    if (list == NULL)
        return out_of_memory(err);
    /* chosen[0 .. common_count) are the common words, the next rare_count the others. */
    int64_t n = 0;
    for (int64_t w = 0; w < shape->common_count; w++)
        for (int64_t k = 0; k < shape->common; k++)
            list[n++] = chosen[w];
    for (int64_t w = 0; w < rare_count; w++)
        for (int64_t k = 0; k < shape->rare; k++)
            list[n++] = chosen[shape->common_count + w];
    eval_random random = {spec->seed ^ 0x3c6ef372fe94f82bull ^ (uint64_t)rare_count * 0x9e3779b97f4a7c15ull};
    for (int64_t i = items - 1; i > 0; i--) {
        int64_t j = (int64_t)eval_random_below(&random, (uint64_t)i + 1);
        int64_t swap = list[i];
        list[i] = list[j];
        list[j] = swap;
    }
    if (offsets != NULL)
        for (int32_t w = 0; w < shape->common_count; w++)
            offsets[w] = -1;
    buffer->length = 0;
    buffer_append_string(buffer, words_intro);
    for (int64_t i = 0; i < items; i++) {
        char number[32];
        snprintf(number, sizeof number, "%s%" PRId64 ". ", i > 0 ? "\n" : "", i + 1);
        buffer_append_string(buffer, number);
        if (offsets != NULL)
            for (int32_t w = 0; w < shape->common_count; w++)
                if (offsets[w] < 0 && list[i] == chosen[w])
                    offsets[w] = (int64_t)buffer->length;
        buffer_append_string(buffer, words[list[i]]);
    }
    free(list);
    size_t context_length = buffer->length;
    buffer_append_string(buffer, query);
    if (buffer->failed)
        return out_of_memory(err);
    strata_status status = count_tokens(counter, counter_context, buffer->data, buffer->length, tokens, err);
    buffer->length = context_length;
    buffer->data[context_length] = '\0';
    *item_count = items;
    return status;
}

static strata_status generate_common_words(const eval_task_spec *spec, const eval_haystack *haystack,
                                           eval_token_counter counter, void *counter_context, eval_sample *sample,
                                           strata_error *err)
{
    int32_t common_count = spec->needle_count;
    int64_t vocabulary = 0;
    const char *const *words = eval_haystack_words(haystack, &vocabulary);
    if (vocabulary < 2 * (int64_t)common_count)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                           "common_words: the %s haystack has %" PRId64 " words, fewer than twice the %d asked for",
                           eval_haystack_kind_name(eval_haystack_kind_of(haystack)), vocabulary, (int)common_count);
    /* A seeded order of the whole vocabulary: the common words first. */
    int64_t *chosen = malloc((size_t)vocabulary * sizeof *chosen);
    eval_query *query = calloc(1, sizeof *query);
    sample->needle_offsets = calloc((size_t)common_count, sizeof *sample->needle_offsets);
    text_buffer buffer = {0};
    strata_status status = STRATA_OK;
    if (chosen == NULL || query == NULL || sample->needle_offsets == NULL)
        status = out_of_memory(err);
    if (status == STRATA_OK) {
        eval_random random = {spec->seed ^ 0xa54ff53a5f1d36f1ull};
        for (int64_t i = 0; i < vocabulary; i++)
            chosen[i] = i;
        for (int64_t i = vocabulary - 1; i > 0; i--) {
            int64_t j = (int64_t)eval_random_below(&random, (uint64_t)i + 1);
            int64_t swap = chosen[i];
            chosen[i] = chosen[j];
            chosen[j] = swap;
        }
        query->text = string_printf("\n\nQuestion: Which %d words come up most often in the list above?\n"
                                    "Answer: The %d words that come up most often in the list are:",
                                    (int)common_count, (int)common_count);
        query->answers = calloc((size_t)common_count, sizeof *query->answers);
        query->answer_count = common_count;
        query->score = EVAL_SCORE_ALL;
        if (query->text == NULL || query->answers == NULL)
            status = out_of_memory(err);
        for (int32_t w = 0; w < common_count && status == STRATA_OK; w++)
            status = set_string(&query->answers[w], string_printf("%s", words[chosen[w]]), err);
    }

    /* Estimate the items that fit from a list of one round of every common word. */
    int64_t tokens = 0, items = 0, best = -1, best_items = 0;
    word_list_shape shape = {0}, best_shape = {0};
    int64_t estimate = 0, shortest_tokens = 0;
    if (status == STRATA_OK) {
        word_list_shape probe = {.common_count = common_count, .common = 1, .rare = 1, .rare_max = 0};
        int64_t empty_tokens = 0;
        status = word_list_prompt(spec, words, chosen, &(word_list_shape){.common_count = 0}, 0, query->text,
                                  &buffer, NULL, counter, counter_context, &empty_tokens, &items, err);
        if (status == STRATA_OK)
            status = word_list_prompt(spec, words, chosen, &probe, 0, query->text, &buffer, NULL, counter,
                                      counter_context, &tokens, &items, err);
        double per_item = (double)(tokens - empty_tokens) / (double)common_count;
        if (per_item < 1.0)
            per_item = 1.0;
        estimate = (int64_t)((double)(spec->target_tokens - empty_tokens) / per_item);
        if (estimate < 1)
            estimate = 1;
    }
    for (int round = 0; round < WORD_LIST_ROUNDS && status == STRATA_OK; round++) {
        shape = word_list_shape_for(common_count, vocabulary, estimate);
        int64_t low_tokens = 0, high_tokens = 0, high_items = 0;
        status = word_list_prompt(spec, words, chosen, &shape, 0, query->text, &buffer, NULL, counter,
                                  counter_context, &low_tokens, &items, err);
        if (status != STRATA_OK)
            break;
        if (low_tokens > spec->target_tokens) {
            shortest_tokens = low_tokens;
            if (shape.common <= 2)
                break; /* even the shortest list is too long */
            estimate = estimate * 3 / 4;
            continue;
        }
        status = word_list_prompt(spec, words, chosen, &shape, shape.rare_max, query->text, &buffer, NULL, counter,
                                  counter_context, &high_tokens, &high_items, err);
        if (status != STRATA_OK)
            break;
        int64_t low = 0, high = shape.rare_max;
        if (high_tokens <= spec->target_tokens) {
            low = high; /* every word fits: the shape needs more occurrences */
        } else {
            while (high - low > 1 && status == STRATA_OK) {
                int64_t middle = low + (high - low) / 2;
                status = word_list_prompt(spec, words, chosen, &shape, middle, query->text, &buffer, NULL, counter,
                                          counter_context, &tokens, &items, err);
                if (tokens <= spec->target_tokens)
                    low = middle;
                else
                    high = middle;
            }
        }
        if (status != STRATA_OK)
            break;
        status = word_list_prompt(spec, words, chosen, &shape, low, query->text, &buffer, NULL, counter,
                                  counter_context, &tokens, &items, err);
        if (status == STRATA_OK && tokens <= spec->target_tokens && tokens > best) {
            best = tokens;
            best_shape = shape;
            best_items = low;
        }
        /* Close enough: the next rare word would not fit, and the rare words do not run out. */
        if (low < shape.rare_max || round == WORD_LIST_ROUNDS - 1)
            break;
        double per_item = items > 0 ? (double)tokens / (double)items : 1.0;
        int64_t next = (int64_t)((double)spec->target_tokens / (per_item > 0 ? per_item : 1.0));
        estimate = next > estimate ? next : estimate + estimate / 4 + 1;
    }
    if (status == STRATA_OK && best < 0)
        status = strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                             "common_words: a target of %" PRId64 " tokens is below the shortest list of %d words "
                             "repeated twice (%" PRId64 " tokens)",
                             spec->target_tokens, (int)common_count, shortest_tokens);
    if (status == STRATA_OK)
        status = word_list_prompt(spec, words, chosen, &best_shape, best_items, query->text, &buffer,
                                  sample->needle_offsets, counter, counter_context, &tokens, &items, err);
    if (status == STRATA_OK) {
        sample->context = buffer.data;
        sample->context_length = buffer.length;
        buffer.data = NULL;
        sample->needle_count = common_count;
        sample->queries = query;
        sample->query_count = 1;
        query = NULL;
        sample->prompt_tokens = tokens;
        sample->filler_sentences = items;
    }
    free_queries(query, 1);
    free(buffer.data);
    free(chosen);
    return status;
}

/* ---- the public entry points ------------------------------------------- */

strata_status eval_task_generate(const eval_task_spec *spec, const eval_haystack *haystack,
                                 eval_token_counter counter, void *counter_context, eval_sample *out,
                                 strata_error *err)
{
    *out = (eval_sample){0};
    if (spec == NULL || haystack == NULL || counter == NULL)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                           "eval_task_generate needs a spec, a haystack and a token counter");
    eval_task_spec resolved;
    strata_status status = resolve_spec(spec, &resolved, err);
    if (status != STRATA_OK)
        return status;
    out->spec = resolved;
    out->haystack = eval_haystack_kind_of(haystack);
    if (task_table[resolved.kind].plan != NULL)
        status = generate_needle_task(&resolved, haystack, counter, counter_context, out, err);
    else
        status = generate_common_words(&resolved, haystack, counter, counter_context, out, err);
    if (status != STRATA_OK)
        eval_sample_free(out);
    return status;
}

void eval_sample_free(eval_sample *sample)
{
    if (sample == NULL)
        return;
    free(sample->context);
    free_queries(sample->queries, sample->query_count);
    free(sample->needle_offsets);
    *sample = (eval_sample){0};
}

double eval_sample_score(const eval_sample *sample, int32_t query, const char *output)
{
    if (sample == NULL || query < 0 || query >= sample->query_count)
        return 0.0;
    const eval_query *q = &sample->queries[query];
    return eval_score(q->score, output, (const char *const *)q->answers, q->answer_count);
}
