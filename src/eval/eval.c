/* eval/eval.c: the evaluation harness (eval/eval.h).
 *
 * One run walks lengths, haystacks, tasks and samples in that order. For a
 * sample whose records are all in the output file already, nothing is
 * computed (resume). Otherwise the prompt (context + first query) is
 * prefilled once into a full-cache session keeping the statistics of its
 * last `observation` queries and of every query, and every variant is a
 * fork of it: plain for the full cache, compressed for a policy. A
 * variant's prefill time is the shared prefill plus its own compression;
 * its KV bytes are those its blocks take in the pool (blocks it still
 * shares with the full prefill count in full, as they would for a session
 * that read the prompt itself).
 *
 * Answers are greedy: at most max_answer_tokens tokens, ending at an
 * end-of-generation token or at a line break after some text. Multi-turn
 * samples append each later query after the previous answer, on the same
 * (compressed) cache, and score each turn.
 *
 * Records and the summary are written with jansson (ARCHITECTURE.md's JSON
 * library); each record is flushed as it is written, so an interrupted run
 * loses at most the sample in flight. */
#include "eval/eval.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/error.h"
#include "base/hash_map.h"
#include "eval/haystack.h"
#include "eval/tasks.h"

enum { EVAL_MAX_VARIANTS = 256, EVAL_MAX_NAMES = 64, EVAL_ANSWER_BYTES = 4096 };

typedef struct eval_variant {
    char name[160];   /* policy@budget */
    char policy[128];
    int64_t budget;   /* 0: none (the full cache, a precision alone) */
} eval_variant;

/* The keys of the records already written, for resuming. */
typedef struct record_keys {
    hash_map *map;
    char **keys;      /* owned copies, kept alive for the map */
    size_t count;
    size_t capacity;
} record_keys;

typedef struct eval_run_state {
    strata_model *model;
    const eval_options *options;
    eval_variant variants[EVAL_MAX_VARIANTS];
    int variant_count;
    record_keys done;
    FILE *out;
    int64_t units_total;  /* sample x variant pairs of the run */
    int64_t units_done;
    int64_t units_computed; /* of those, computed now (not resumed): the ETA's basis */
    double started;
} eval_run_state;

static double now_seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

void eval_options_default(eval_options *options)
{
    *options = (eval_options){
        .tasks = "all",
        .haystacks = "noise",
        .lengths = {4096},
        .length_count = 1,
        .depths = {0.0, 0.25, 0.5, 0.75, 1.0},
        .depth_count = 5,
        .samples = 10,
        .seed = 1,
        .policies = "full",
        .budgets = {1024},
        .budget_count = 1,
        .observation = 32,
        .max_answer_tokens = 32,
        .fidelity_positions = 256,
        .fidelity_continuation = 64,
    };
}

/* Splits a comma-separated list into at most `capacity` names (copies into storage). */
static int split_names(const char *text, char *storage, size_t storage_size, char **names, int capacity)
{
    snprintf(storage, storage_size, "%s", text != NULL ? text : "");
    int count = 0;
    char *save = NULL;
    for (char *name = strtok_r(storage, ", ", &save); name != NULL && count < capacity;
         name = strtok_r(NULL, ", ", &save))
        names[count++] = name;
    return count;
}

/* ---- record keys (resume) -------------------------------------------- */

static strata_status keys_add(record_keys *keys, const char *key, strata_error *err)
{
    int64_t ignored;
    if (hash_map_get(keys->map, key, strlen(key), &ignored))
        return STRATA_OK;
    if (keys->count == keys->capacity) {
        size_t capacity = keys->capacity > 0 ? keys->capacity * 2 : 256;
        char **grown = realloc(keys->keys, capacity * sizeof *grown);
        if (grown == NULL)
            return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "cannot remember %zu record keys", capacity);
        keys->keys = grown;
        keys->capacity = capacity;
    }
    char *copy = strdup(key);
    if (copy == NULL)
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "cannot remember a record key");
    keys->keys[keys->count++] = copy;
    return hash_map_put(keys->map, copy, strlen(copy), 1, err);
}

static bool keys_have(const record_keys *keys, const char *key)
{
    int64_t ignored;
    return hash_map_get(keys->map, key, strlen(key), &ignored);
}

static void keys_free(record_keys *keys)
{
    hash_map_destroy(keys->map);
    for (size_t i = 0; i < keys->count; i++)
        free(keys->keys[i]);
    free(keys->keys);
}

/* Calls visit for every record of a JSON lines file (none if it does not
 * exist) and sets *complete_bytes to the bytes of its complete lines. A
 * last line cut short (an interrupted run) is left out; any other line
 * that is not a JSON object is an error naming it. */
static strata_status read_records(const char *path,
                                  strata_status (*visit)(json_t *record, void *context, strata_error *err),
                                  void *context, int64_t *complete_bytes, strata_error *err)
{
    *complete_bytes = 0;
    FILE *file = fopen(path, "r");
    if (file == NULL)
        return errno == ENOENT ? STRATA_OK
                               : strata_fail(err, STRATA_E_IO, "%s: cannot read: %s", path, strerror(errno));
    char *line = NULL;
    size_t capacity = 0;
    ssize_t length;
    int64_t number = 0;
    strata_status status = STRATA_OK;
    while (status == STRATA_OK && (length = getline(&line, &capacity, file)) > 0) {
        number++;
        if (line[length - 1] != '\n')
            break; /* cut short: not counted, redone by the next run */
        json_error_t error;
        json_t *record = length > 1 ? json_loadb(line, (size_t)length, 0, &error) : NULL;
        if (length > 1 && (record == NULL || !json_is_object(record)))
            status = strata_fail(err, STRATA_E_FORMAT, "%s:%" PRId64 ": not a JSON record (%s)", path, number,
                                 record == NULL ? error.text : "not an object");
        if (status == STRATA_OK && record != NULL)
            status = visit(record, context, err);
        json_decref(record);
        *complete_bytes += length;
    }
    free(line);
    fclose(file);
    return status;
}

static strata_status remember_key(json_t *record, void *context, strata_error *err)
{
    const char *key = json_string_value(json_object_get(record, "key"));
    return key != NULL ? keys_add(context, key, err) : STRATA_OK;
}

/* ---- variants ------------------------------------------------------------ */

/* Whether a policy name takes no budget: the full cache, or a precision alone (not "mixed"). */
static bool budget_free(const char *policy)
{
    if (strcmp(policy, "full") == 0)
        return true;
    char storage[128], *names[16];
    int count = split_names(strata_kv_precisions(), storage, sizeof storage, names, 16);
    for (int i = 0; i < count; i++)
        if (strcmp(names[i], policy) == 0)
            return strcmp(policy, "mixed") != 0;
    return false;
}

/* Builds the variants (policy x budget) and checks that each is a session the model accepts. */
static strata_status make_variants(eval_run_state *state, strata_error *err)
{
    const eval_options *o = state->options;
    char storage[1024], *names[EVAL_MAX_NAMES];
    int count = split_names(o->policies, storage, sizeof storage, names, EVAL_MAX_NAMES);
    if (count == 0)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT, "no KV policy to evaluate (give --policies)");
    for (int i = 0; i < count; i++) {
        bool free_of_budget = budget_free(names[i]);
        int budgets = free_of_budget ? 1 : o->budget_count;
        if (budgets == 0)
            return strata_fail(err, STRATA_E_INVALID_ARGUMENT, "KV policy '%s' needs a budget (give --budgets)",
                               names[i]);
        for (int b = 0; b < budgets; b++) {
            if (state->variant_count == EVAL_MAX_VARIANTS)
                return strata_fail(err, STRATA_E_INVALID_ARGUMENT, "more than %d variants", EVAL_MAX_VARIANTS);
            eval_variant *v = &state->variants[state->variant_count++];
            v->budget = free_of_budget ? 0 : o->budgets[b];
            snprintf(v->policy, sizeof v->policy, "%s", names[i]);
            snprintf(v->name, sizeof v->name, "%s@%" PRId64, names[i], v->budget);
            /* Refused options (unknown names, parameters, a missing profile) stop the run before it starts. */
            strata_session_options check = {.context_length = 64, .kv_policy = v->policy,
                                            .kv_budget_tokens = v->budget, .kv_policy_params = o->policy_params,
                                            .kv_head_profile = o->head_profile};
            strata_session *probe = NULL;
            strata_status status = strata_session_create(state->model, &check, &probe, err);
            strata_session_destroy(probe);
            if (status != STRATA_OK)
                return strata_error_prefix(err, "variant %s: ", v->name);
        }
    }
    return STRATA_OK;
}

/* Forks the variant from the full prefill: a plain fork for the full cache. */
static strata_status fork_variant(const eval_run_state *state, const eval_variant *variant,
                                  const strata_session *keeper, strata_session **out, strata_error *err)
{
    if (strcmp(variant->policy, "full") == 0)
        return strata_session_fork(keeper, out, err);
    strata_session_options options = {.kv_policy = variant->policy, .kv_budget_tokens = variant->budget,
                                      .kv_policy_params = state->options->policy_params,
                                      .kv_head_profile = state->options->head_profile};
    return strata_session_fork_compressed(keeper, &options, out, err);
}

/* ---- helpers over the public API ------------------------------------------ */

static int64_t count_tokens(void *context, const char *text, size_t length)
{
    int32_t *tokens = NULL;
    size_t count = 0;
    strata_error err = {0};
    if (strata_tokenize(context, text, length, false, false, &tokens, &count, &err) != STRATA_OK)
        return (int64_t)length; /* a bound: a token covers at least one byte */
    free(tokens);
    return (int64_t)count;
}

static int32_t argmax(const float *values, int32_t count)
{
    int32_t best = 0;
    for (int32_t i = 1; i < count; i++)
        if (values[i] > values[best])
            best = i;
    return best;
}

/* Generates a greedy answer into text (NUL-terminated): at most max tokens,
 * ending at end of generation or at a line break after some text. */
static strata_status greedy_answer(strata_session *session, const strata_model *model, int max, char *text,
                                   size_t capacity, int64_t *generated, strata_error *err)
{
    int32_t vocab = strata_model_vocab_size(model);
    size_t used = 0;
    text[0] = '\0';
    for (int i = 0; i < max; i++) {
        int32_t token = argmax(strata_session_logits(session, 0), vocab);
        if (strata_token_is_end_of_generation(model, token))
            break;
        char piece[256];
        size_t length = strata_token_to_text(model, token, piece, sizeof piece);
        length = length < sizeof piece ? length : sizeof piece;
        bool has_text = false;
        for (size_t j = 0; j < used && !has_text; j++)
            has_text = text[j] != ' ' && text[j] != '\n';
        if (has_text && memchr(piece, '\n', length) != NULL)
            break;
        if (used + length < capacity) {
            memcpy(text + used, piece, length);
            used += length;
            text[used] = '\0';
        }
        strata_status status = strata_session_append(session, &token, 1, false, err);
        if (status != STRATA_OK)
            return status;
        (*generated)++;
    }
    return STRATA_OK;
}

/* Tokenizes text and appends it to a session. */
static strata_status append_text(strata_session *session, const strata_model *model, const char *text, bool bos,
                                 strata_error *err)
{
    int32_t *tokens = NULL;
    size_t count = 0;
    strata_status status = strata_tokenize(model, text, strlen(text), bos, false, &tokens, &count, err);
    if (status == STRATA_OK && count > 0)
        status = strata_session_append(session, tokens, count, false, err);
    free(tokens);
    return status;
}

/* Writes one record as a line and flushes it. */
static strata_status write_record(eval_run_state *state, json_t *record, strata_error *err)
{
    char *line = json_dumps(record, JSON_COMPACT | JSON_ENSURE_ASCII);
    if (line == NULL)
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "cannot format a result record");
    int written = fprintf(state->out, "%s\n", line);
    free(line);
    if (written < 0 || fflush(state->out) != 0)
        return strata_fail(err, STRATA_E_IO, "%s: cannot write: %s", state->options->out_path, strerror(errno));
    return keys_add(&state->done, json_string_value(json_object_get(record, "key")), err);
}

static void show_progress(eval_run_state *state, const char *what)
{
    if (!state->options->progress)
        return;
    double elapsed = now_seconds() - state->started;
    int64_t left = state->units_total - state->units_done;
    double eta = state->units_computed > 0 ? elapsed / (double)state->units_computed * (double)left : 0.0;
    int width = 30, filled = state->units_total > 0 ? (int)(width * state->units_done / state->units_total) : width;
    fprintf(stderr, "\r[%.*s%*s] %" PRId64 "/%" PRId64 " %-32.32s ETA %dm%02ds ", filled,
            "##############################", width - filled, "", state->units_done, state->units_total, what,
            (int)(eta / 60), (int)fmod(eta, 60));
    fflush(stderr);
}

/* ---- task samples -------------------------------------------------------- */

static void record_key(char *key, size_t size, const char *kind, const char *task, const char *haystack,
                       int64_t length, double depth, int sample, const char *variant)
{
    snprintf(key, size, "%s|%s|%s|%" PRId64 "|%.4g|%d|%s", kind, task, haystack, length, depth, sample, variant);
}

/* A record's identity: what was measured, on which variant. */
static json_t *record_start(const char *key, const char *kind, const char *task, const char *haystack, int64_t length,
                            int sample, const eval_variant *variant)
{
    json_t *record = json_object();
    json_object_set_new(record, "key", json_string_nocheck(key));
    json_object_set_new(record, "kind", json_string(kind));
    json_object_set_new(record, "task", json_string(task));
    json_object_set_new(record, "haystack", json_string(haystack));
    json_object_set_new(record, "length", json_integer(length));
    json_object_set_new(record, "sample", json_integer(sample));
    json_object_set_new(record, "policy", json_string(variant->policy));
    json_object_set_new(record, "budget", json_integer(variant->budget));
    json_object_set_new(record, "variant", json_string(variant->name));
    return record;
}

/* A record's cost columns: KV bytes after the prompt and after decoding, and the times. */
static void record_costs(json_t *record, uint64_t bytes_prefill, uint64_t bytes_decode, double shared_prefill_s,
                         double compress_s, double decode_s)
{
    json_object_set_new(record, "kv_bytes_prefill", json_integer((json_int_t)bytes_prefill));
    json_object_set_new(record, "kv_bytes_decode", json_integer((json_int_t)bytes_decode));
    json_object_set_new(record, "shared_prefill_s", json_real(shared_prefill_s));
    json_object_set_new(record, "compress_s", json_real(compress_s));
    json_object_set_new(record, "prefill_s", json_real(shared_prefill_s + compress_s));
    json_object_set_new(record, "decode_s", json_real(decode_s));
}

/* Runs one variant on a prefilled sample and writes its record. */
static strata_status run_task_variant(eval_run_state *state, const eval_sample *sample, const char *key,
                                      const eval_variant *variant, const strata_session *keeper,
                                      double shared_prefill_s, int64_t context_tokens, int index, strata_error *err)
{
    const eval_options *o = state->options;
    strata_session *session = NULL;
    double start = now_seconds();
    strata_status status = fork_variant(state, variant, keeper, &session, err);
    if (status != STRATA_OK)
        return strata_error_prefix(err, "%s: ", variant->name);
    double compress_s = now_seconds() - start;
    uint64_t bytes_prefill = strata_session_kv_bytes(session, NULL);
    json_t *turn_scores = json_array(), *outputs = json_array(), *answers = json_array();
    double decode_s = 0, score_sum = 0;
    int64_t generated = 0;
    char *text = malloc(EVAL_ANSWER_BYTES);
    if (text == NULL)
        status = strata_fail(err, STRATA_E_OUT_OF_MEMORY, "cannot allocate an answer buffer");
    /* Multi-request: each question in its own session, a fork of the compressed context. */
    bool requests = sample->spec.kind == EVAL_TASK_MULTIREQUEST;
    uint64_t bytes_decode = 0;
    for (int32_t q = 0; q < sample->query_count && status == STRATA_OK; q++) {
        start = now_seconds();
        strata_session *asking = session;
        if (requests)
            status = strata_session_fork(session, &asking, err);
        if (status == STRATA_OK && (q > 0 || requests))
            status = append_text(asking, state->model, sample->queries[q].text, false, err);
        if (status == STRATA_OK)
            status = greedy_answer(asking, state->model, o->max_answer_tokens, text, EVAL_ANSWER_BYTES, &generated,
                                   err);
        decode_s += now_seconds() - start;
        if (requests && asking != NULL) { /* the largest of the requests' sessions */
            uint64_t bytes = strata_session_kv_bytes(asking, NULL);
            bytes_decode = bytes > bytes_decode ? bytes : bytes_decode;
            strata_session_destroy(asking);
        }
        if (status != STRATA_OK)
            break;
        double score = eval_sample_score(sample, q, text);
        score_sum += score;
        json_array_append_new(turn_scores, json_real(score));
        json_array_append_new(outputs, json_string_nocheck(text));
        json_t *expected = json_array();
        for (int32_t a = 0; a < sample->queries[q].answer_count; a++)
            json_array_append_new(expected, json_string_nocheck(sample->queries[q].answers[a]));
        json_array_append_new(answers, expected);
    }
    if (!requests)
        bytes_decode = strata_session_kv_bytes(session, NULL);
    strata_session_destroy(session);
    free(text);
    if (status != STRATA_OK) {
        json_decref(turn_scores);
        json_decref(outputs);
        json_decref(answers);
        return strata_error_prefix(err, "%s: ", variant->name);
    }
    json_t *record = record_start(key, "task", eval_task_kind_name(sample->spec.kind),
                                  eval_haystack_kind_name(sample->haystack), sample->spec.target_tokens, index, variant);
    json_object_set_new(record, "context_tokens", json_integer(context_tokens));
    json_object_set_new(record, "depth", json_real(sample->spec.depth));
    json_object_set_new(record, "seed", json_integer((json_int_t)(state->options->seed & INT64_MAX)));
    json_object_set_new(record, "turn_scores", turn_scores);
    json_object_set_new(record, "score", json_real(score_sum / sample->query_count));
    json_object_set_new(record, "outputs", outputs);
    json_object_set_new(record, "answers", answers);
    record_costs(record, bytes_prefill, bytes_decode, shared_prefill_s, compress_s, decode_s);
    json_object_set_new(record, "decode_tokens", json_integer(generated));
    status = write_record(state, record, err);
    json_decref(record);
    return status;
}

/* The seed of one sample: the run's seed mixed with what the sample is. */
static uint64_t sample_seed(uint64_t seed, int kind, int haystack, int64_t length, int index)
{
    uint64_t x = seed ^ ((uint64_t)kind << 48) ^ ((uint64_t)haystack << 40) ^ ((uint64_t)length << 8) ^ (uint64_t)index;
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* Generates, prefills and runs every variant of one sample (unless all its records exist). */
static strata_status run_sample(eval_run_state *state, const eval_haystack *haystack, eval_task_kind kind,
                                int64_t length, int index, strata_error *err)
{
    const eval_options *o = state->options;
    double depth = o->depths[index % o->depth_count];
    const char *task = eval_task_kind_name(kind), *haystack_name = eval_haystack_kind_name(eval_haystack_kind_of(haystack));
    char keys[EVAL_MAX_VARIANTS][256];
    int missing = 0;
    for (int v = 0; v < state->variant_count; v++) {
        record_key(keys[v], sizeof keys[v], "task", task, haystack_name, length, depth, index, state->variants[v].name);
        missing += !keys_have(&state->done, keys[v]);
    }
    if (missing == 0) {
        state->units_done += state->variant_count;
        show_progress(state, "resumed");
        return STRATA_OK;
    }
    eval_task_spec spec = {.kind = kind, .target_tokens = length, .depth = depth,
                           .seed = sample_seed(o->seed, (int)kind, (int)eval_haystack_kind_of(haystack), length, index)};
    eval_sample sample = {0};
    strata_status status = eval_task_generate(&spec, haystack, count_tokens, state->model, &sample, err);
    if (status != STRATA_OK)
        return strata_error_prefix(err, "%s sample %d at %" PRId64 " tokens: ", task, index, length);
    /* The prompt: context and first query (multi-request: the context alone, each request asks its own);
     * room for every later query and answer. */
    bool requests = kind == EVAL_TASK_MULTIREQUEST;
    size_t prompt_length = sample.context_length + (requests ? 0 : strlen(sample.queries[0].text));
    char *prompt = malloc(prompt_length + 1);
    int32_t *tokens = NULL;
    size_t count = 0;
    if (prompt == NULL)
        status = strata_fail(err, STRATA_E_OUT_OF_MEMORY, "cannot allocate a prompt of %zu bytes", prompt_length);
    if (status == STRATA_OK) {
        memcpy(prompt, sample.context, sample.context_length);
        strcpy(prompt + sample.context_length, requests ? "" : sample.queries[0].text);
        status = strata_tokenize(state->model, prompt, prompt_length, true, false, &tokens, &count, err);
    }
    free(prompt);
    int64_t context = (int64_t)count + (int64_t)sample.query_count * (o->max_answer_tokens + 1) + 16;
    for (int32_t q = requests ? 0 : 1; q < sample.query_count; q++)
        context += count_tokens(state->model, sample.queries[q].text, strlen(sample.queries[q].text));
    strata_session *keeper = NULL;
    strata_session_options keeping = {.context_length = (int32_t)context, .kv_statistics_window = o->observation};
    if (status == STRATA_OK)
        status = strata_session_create(state->model, &keeping, &keeper, err);
    double start = now_seconds();
    if (status == STRATA_OK)
        status = strata_session_append(keeper, tokens, count, false, err);
    double shared_prefill_s = now_seconds() - start;
    free(tokens);
    for (int v = 0; v < state->variant_count && status == STRATA_OK; v++) {
        if (!keys_have(&state->done, keys[v])) {
            status = run_task_variant(state, &sample, keys[v], &state->variants[v], keeper, shared_prefill_s,
                                      (int64_t)count, index, err);
            state->units_computed++;
        }
        state->units_done++;
        show_progress(state, keys[v]);
    }
    strata_session_destroy(keeper);
    eval_sample_free(&sample);
    return status;
}

/* ---- fidelity --------------------------------------------------------------- */

/* Mean KL(reference || other) over rows of vocab logits. */
static double mean_kl(const float *reference, const float *other, int64_t rows, int32_t vocab)
{
    double total = 0;
    for (int64_t r = 0; r < rows; r++) {
        const float *p = reference + r * vocab, *q = other + r * vocab;
        double p_max = p[argmax(p, vocab)], q_max = q[argmax(q, vocab)], p_sum = 0, q_sum = 0;
        for (int32_t i = 0; i < vocab; i++) {
            p_sum += exp((double)p[i] - p_max);
            q_sum += exp((double)q[i] - q_max);
        }
        double p_log = p_max + log(p_sum), q_log = q_max + log(q_sum), kl = 0;
        for (int32_t i = 0; i < vocab; i++) {
            double log_p = (double)p[i] - p_log, log_q = (double)q[i] - q_log;
            kl += exp(log_p) * (log_p - log_q);
        }
        total += kl > 0 ? kl : 0; /* rounding can make an identical row's sum a hair below zero */
    }
    return total / (double)rows;
}

/* Appends tokens with every position's logits and copies them out (rows x vocab). */
static strata_status teacher_forced_logits(strata_session *session, const int32_t *tokens, int64_t rows,
                                           int32_t vocab, float *out, strata_error *err)
{
    strata_status status = strata_session_append(session, tokens, (size_t)rows, true, err);
    for (int64_t r = 0; r < rows && status == STRATA_OK; r++)
        memcpy(out + r * vocab, strata_session_logits(session, (size_t)r), (size_t)vocab * sizeof(float));
    return status;
}

/* One fidelity sample: real prose of `length` tokens, then every variant against the full cache. */
static strata_status run_fidelity_sample(eval_run_state *state, const eval_haystack *prose, int64_t length, int index,
                                         strata_error *err)
{
    const eval_options *o = state->options;
    char keys[EVAL_MAX_VARIANTS][256];
    int missing = 0;
    for (int v = 0; v < state->variant_count; v++) {
        record_key(keys[v], sizeof keys[v], "fidelity", "fidelity", "prose", length, 0, index, state->variants[v].name);
        missing += !keys_have(&state->done, keys[v]);
    }
    if (missing == 0) {
        state->units_done += state->variant_count;
        show_progress(state, "resumed");
        return STRATA_OK;
    }
    int64_t positions = o->fidelity_positions, continuation = o->fidelity_continuation;
    int32_t vocab = strata_model_vocab_size(state->model);
    eval_filler filler = {0};
    int32_t *tokens = NULL;
    size_t count = 0;
    strata_status status = eval_haystack_text(prose, sample_seed(o->seed, 99, 1, length, index),
                                              length + positions + 64, count_tokens, state->model, &filler, err);
    if (status == STRATA_OK)
        status = strata_tokenize(state->model, filler.text, filler.length, true, false, &tokens, &count, err);
    eval_filler_free(&filler);
    if (status == STRATA_OK && (int64_t)count < length + positions)
        status = strata_fail(err, STRATA_E_INTERNAL, "fidelity prose of %zu tokens, %" PRId64 " wanted", count,
                             length + positions);
    float *reference = malloc((size_t)positions * (size_t)vocab * sizeof(float));
    float *logits = malloc((size_t)positions * (size_t)vocab * sizeof(float));
    int32_t *greedy = malloc((size_t)continuation * sizeof(int32_t));
    if (status == STRATA_OK && (reference == NULL || logits == NULL || greedy == NULL))
        status = strata_fail(err, STRATA_E_OUT_OF_MEMORY, "cannot allocate %" PRId64 " rows of logits", positions);
    strata_session *keeper = NULL, *full = NULL;
    strata_session_options keeping = {.context_length = (int32_t)(length + positions + continuation + 1),
                                      .kv_statistics_window = o->observation};
    if (status == STRATA_OK)
        status = strata_session_create(state->model, &keeping, &keeper, err);
    double start = now_seconds();
    if (status == STRATA_OK)
        status = strata_session_append(keeper, tokens, (size_t)length, false, err);
    double shared_prefill_s = now_seconds() - start;
    /* The full cache's distributions over the teacher-forced positions, and its greedy continuation. */
    if (status == STRATA_OK && (status = strata_session_fork(keeper, &full, err)) == STRATA_OK)
        status = teacher_forced_logits(full, tokens + length, positions, vocab, reference, err);
    strata_session_destroy(full);
    full = NULL;
    if (status == STRATA_OK && (status = strata_session_fork(keeper, &full, err)) == STRATA_OK)
        for (int64_t i = 0; i < continuation && status == STRATA_OK; i++) {
            greedy[i] = argmax(strata_session_logits(full, 0), vocab);
            status = strata_session_append(full, &greedy[i], 1, false, err);
        }
    strata_session_destroy(full);
    for (int v = 0; v < state->variant_count && status == STRATA_OK; v++) {
        if (keys_have(&state->done, keys[v])) {
            state->units_done++;
            continue;
        }
        const eval_variant *variant = &state->variants[v];
        strata_session *session = NULL, *follower = NULL;
        start = now_seconds();
        status = fork_variant(state, variant, keeper, &session, err);
        double compress_s = now_seconds() - start;
        uint64_t bytes_prefill = status == STRATA_OK ? strata_session_kv_bytes(session, NULL) : 0;
        if (status == STRATA_OK)
            status = teacher_forced_logits(session, tokens + length, positions, vocab, logits, err);
        double kl = status == STRATA_OK ? mean_kl(reference, logits, positions, vocab) : 0;
        /* Top-1 agreement along the full cache's greedy continuation, one decode step at a time. */
        int64_t agree = 0;
        start = now_seconds();
        if (status == STRATA_OK)
            status = fork_variant(state, variant, keeper, &follower, err);
        for (int64_t i = 0; i < continuation && status == STRATA_OK; i++) {
            agree += argmax(strata_session_logits(follower, 0), vocab) == greedy[i];
            status = strata_session_append(follower, &greedy[i], 1, false, err);
        }
        double decode_s = now_seconds() - start;
        uint64_t bytes_decode = status == STRATA_OK ? strata_session_kv_bytes(follower, NULL) : 0;
        strata_session_destroy(session);
        strata_session_destroy(follower);
        if (status != STRATA_OK) {
            status = strata_error_prefix(err, "fidelity %s: ", variant->name);
            break;
        }
        json_t *record = record_start(keys[v], "fidelity", "fidelity", "prose", length, index, variant);
        json_object_set_new(record, "seed", json_integer((json_int_t)(o->seed & INT64_MAX)));
        json_object_set_new(record, "kl_mean", json_real(kl));
        json_object_set_new(record, "top1_agreement", json_real((double)agree / (double)continuation));
        json_object_set_new(record, "positions", json_integer(positions));
        json_object_set_new(record, "continuation", json_integer(continuation));
        record_costs(record, bytes_prefill, bytes_decode, shared_prefill_s, compress_s, decode_s);
        status = write_record(state, record, err);
        json_decref(record);
        state->units_computed++;
        state->units_done++;
        show_progress(state, keys[v]);
    }
    strata_session_destroy(keeper);
    free(tokens);
    free(reference);
    free(logits);
    free(greedy);
    return status;
}

/* ---- the run ---------------------------------------------------------------- */

strata_status eval_run(strata_model *model, const eval_options *options, strata_error *err)
{
    const eval_options *o = options;
    if (o->out_path == NULL)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT, "no output file for the results (give --out)");
    if (o->length_count < 1 || o->samples < 0 || o->depth_count < 1 || o->max_answer_tokens < 1 ||
        o->observation < 1 || (o->fidelity_samples > 0 && (o->fidelity_positions < 1 || o->fidelity_continuation < 1)))
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                           "eval needs at least one length and depth, samples >= 0, answers of >= 1 token, an "
                           "observation window >= 1 and, for fidelity, >= 1 position and continuation token");
    for (int l = 0; l < o->length_count; l++)
        if (o->lengths[l] < 64 || o->lengths[l] + 1024 > strata_model_context_length(model))
            return strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                               "context length %" PRId64 " is outside 64..%d (the model's context less 1024 for the "
                               "queries and answers)",
                               o->lengths[l], strata_model_context_length(model) - 1024);
    eval_task_kind kinds[EVAL_TASK_KIND_COUNT];
    int kind_count = 0;
    char task_storage[512], *task_names[EVAL_MAX_NAMES];
    int task_count = split_names(o->tasks, task_storage, sizeof task_storage, task_names, EVAL_MAX_NAMES);
    for (int i = 0; i < task_count; i++) {
        if (strcmp(task_names[i], "all") == 0) {
            for (int k = 0; k < EVAL_TASK_KIND_COUNT; k++)
                kinds[kind_count++] = (eval_task_kind)k;
            break;
        }
        strata_status status = eval_task_kind_find(task_names[i], &kinds[kind_count], err);
        if (status != STRATA_OK)
            return status;
        kind_count += kind_count < EVAL_TASK_KIND_COUNT;
    }
    eval_haystack *haystacks[EVAL_HAYSTACK_KIND_COUNT] = {0}, *prose = NULL;
    int haystack_count = 0;
    char haystack_storage[128], *haystack_names[4];
    int names = split_names(o->haystacks, haystack_storage, sizeof haystack_storage, haystack_names, 4);
    eval_run_state *state = calloc(1, sizeof *state);
    if (state == NULL)
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "cannot allocate the run's state");
    *state = (eval_run_state){.model = model, .options = o, .started = now_seconds()};
    strata_status status = hash_map_create(1024, &state->done.map, err);
    for (int i = 0; i < names && status == STRATA_OK && haystack_count < EVAL_HAYSTACK_KIND_COUNT; i++) {
        eval_haystack_kind kind;
        status = eval_haystack_kind_find(haystack_names[i], &kind, err);
        if (status == STRATA_OK)
            status = eval_haystack_open(kind, o->prose_path, &haystacks[haystack_count++], err);
    }
    if (status == STRATA_OK && o->fidelity_samples > 0)
        status = eval_haystack_open(EVAL_HAYSTACK_PROSE, o->prose_path, &prose, err);
    if (status == STRATA_OK)
        status = make_variants(state, err);
    int64_t complete_bytes = 0;
    if (status == STRATA_OK)
        status = read_records(o->out_path, remember_key, &state->done, &complete_bytes, err);
    /* Drop a last line an interrupted run left cut short, so appended records start on a line of their own. */
    if (status == STRATA_OK && complete_bytes > 0 && truncate(o->out_path, (off_t)complete_bytes) != 0)
        status = strata_fail(err, STRATA_E_IO, "%s: cannot cut its unfinished last line: %s", o->out_path,
                             strerror(errno));
    if (status == STRATA_OK && (state->out = fopen(o->out_path, "a")) == NULL)
        status = strata_fail(err, STRATA_E_IO, "%s: cannot open for appending: %s", o->out_path, strerror(errno));
    state->units_total = ((int64_t)o->length_count * haystack_count * kind_count * o->samples +
                          (int64_t)o->length_count * o->fidelity_samples) * state->variant_count;
    for (int l = 0; l < o->length_count && status == STRATA_OK; l++) {
        for (int h = 0; h < haystack_count && status == STRATA_OK; h++)
            for (int k = 0; k < kind_count && status == STRATA_OK; k++)
                for (int s = 0; s < o->samples && status == STRATA_OK; s++)
                    status = run_sample(state, haystacks[h], kinds[k], o->lengths[l], s, err);
        for (int s = 0; s < o->fidelity_samples && status == STRATA_OK; s++)
            status = run_fidelity_sample(state, prose, o->lengths[l], s, err);
    }
    if (o->progress)
        fputc('\n', stderr);
    if (state->out != NULL && fclose(state->out) != 0 && status == STRATA_OK)
        status = strata_fail(err, STRATA_E_IO, "%s: cannot write: %s", o->out_path, strerror(errno));
    if (status == STRATA_OK) {
        char csv[4096];
        if (o->csv_path == NULL) {
            const char *dot = strrchr(o->out_path, '.');
            size_t stem = dot != NULL && strchr(dot, '/') == NULL ? (size_t)(dot - o->out_path) : strlen(o->out_path);
            snprintf(csv, sizeof csv, "%.*s.csv", (int)stem, o->out_path);
        }
        status = eval_write_summary(o->out_path, o->csv_path != NULL ? o->csv_path : csv, err);
    }
    for (int h = 0; h < haystack_count; h++)
        eval_haystack_close(haystacks[h]);
    eval_haystack_close(prose);
    keys_free(&state->done);
    free(state);
    return status;
}

/* ---- summary ------------------------------------------------------------------ */

typedef struct summary_group {
    char name[320];   /* kind,task,haystack,length,variant */
    int64_t records;
    double score, kl, top1, bytes_prefill, bytes_decode, prefill_s, decode_s;
} summary_group;

typedef struct summary {
    summary_group *groups;
    size_t count;
    size_t capacity;
} summary;

static double number(json_t *record, const char *field)
{
    return json_number_value(json_object_get(record, field));
}

static strata_status add_to_summary(json_t *record, void *context, strata_error *err)
{
    summary *sum = context;
    const char *kind = json_string_value(json_object_get(record, "kind"));
    const char *task = json_string_value(json_object_get(record, "task"));
    const char *haystack = json_string_value(json_object_get(record, "haystack"));
    const char *variant = json_string_value(json_object_get(record, "variant"));
    if (kind == NULL || task == NULL || haystack == NULL || variant == NULL)
        return STRATA_OK; /* not a record of ours */
    char name[320];
    snprintf(name, sizeof name, "%s,%s,%s,%" PRId64 ",%s", kind, task, haystack,
             (int64_t)json_integer_value(json_object_get(record, "length")), variant);
    size_t g = 0;
    while (g < sum->count && strcmp(sum->groups[g].name, name) != 0)
        g++;
    if (g == sum->count) {
        if (sum->count == sum->capacity) {
            size_t capacity = sum->capacity > 0 ? sum->capacity * 2 : 64;
            summary_group *grown = realloc(sum->groups, capacity * sizeof *grown);
            if (grown == NULL)
                return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "cannot summarize %zu groups", capacity);
            sum->groups = grown;
            sum->capacity = capacity;
        }
        sum->groups[sum->count++] = (summary_group){0};
        snprintf(sum->groups[g].name, sizeof sum->groups[g].name, "%s", name);
    }
    summary_group *group = &sum->groups[g];
    group->records++;
    group->score += number(record, "score");
    group->kl += number(record, "kl_mean");
    group->top1 += number(record, "top1_agreement");
    group->bytes_prefill += number(record, "kv_bytes_prefill");
    group->bytes_decode += number(record, "kv_bytes_decode");
    group->prefill_s += number(record, "prefill_s");
    group->decode_s += number(record, "decode_s");
    return STRATA_OK;
}

strata_status eval_write_summary(const char *jsonl_path, const char *csv_path, strata_error *err)
{
    summary sum = {0};
    int64_t complete_bytes;
    strata_status status = read_records(jsonl_path, add_to_summary, &sum, &complete_bytes, err);
    FILE *csv = status == STRATA_OK ? fopen(csv_path, "w") : NULL;
    if (status == STRATA_OK && csv == NULL)
        status = strata_fail(err, STRATA_E_IO, "%s: cannot write: %s", csv_path, strerror(errno));
    if (csv != NULL) {
        fprintf(csv, "kind,task,haystack,length,variant,records,score,kl_mean,top1_agreement,kv_mib_prefill,"
                     "kv_mib_decode,prefill_s,decode_s\n");
        for (size_t g = 0; g < sum.count; g++) {
            const summary_group *group = &sum.groups[g];
            double n = (double)group->records;
            fprintf(csv, "%s,%" PRId64 ",%.4f,%.5f,%.4f,%.3f,%.3f,%.3f,%.3f\n", group->name, group->records,
                    group->score / n, group->kl / n, group->top1 / n, group->bytes_prefill / n / 1048576.0,
                    group->bytes_decode / n / 1048576.0, group->prefill_s / n, group->decode_s / n);
        }
        if (fclose(csv) != 0)
            status = strata_fail(err, STRATA_E_IO, "%s: cannot write: %s", csv_path, strerror(errno));
    }
    free(sum.groups);
    return status;
}
