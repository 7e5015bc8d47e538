/* serve/scheduler.c: continuous batching, chunked prefill and preemption
 * over the KV pool (the design is in scheduler.h).
 *
 * A request is one or more sequences (its choices). A sequence owns its
 * tokens (the prompt, then what it generated), a sampler and, while it
 * runs, a session holding the KV of the tokens computed so far. Choice 0
 * reads the prompt; the other choices are forks of it made when the prompt
 * is read, sharing its KV copy-on-write. Every step the engine thread takes:
 *   1. cancellations: sessions destroyed, blocks back to the pool;
 *   2. admission, oldest first: a session is created, the longest cached
 *      prefix attached, and the sequence runs if the pool can hold the rest
 *      of its prompt beside what running prompts still need (cached prefixes
 *      nobody holds are evicted to make room);
 *   3. one batched step: a token for every decoding sequence, then prompt
 *      chunks, oldest first, up to max_batch_tokens;
 *   4. when the pool is full, the newest sequence is preempted (its session
 *      destroyed, its tokens kept) and the step is tried again without it;
 *   5. sampling, stop strings and text for every sequence that has logits.
 * Text goes to the request's per-choice buffer, under the scheduler's lock,
 * where serve_request_poll collects it. */
#include "serve/scheduler.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/error.h"

enum { ADMISSION_RETRY_STEPS = 16, PREFIX_GROUP_TOKENS = 16 };
enum { DEFAULT_BATCH_TOKENS = 256, MAX_BATCH_TOKENS = 512, DEFAULT_MAX_RUNNING = 64, DEFAULT_CONTEXT = 8192 };

typedef enum sequence_state { SEQUENCE_WAITING, SEQUENCE_RUNNING, SEQUENCE_FINISHED } sequence_state;

typedef struct serve_sequence {
    serve_request *request;
    int32_t choice;
    sequence_state state;
    strata_session *session; /* while running */
    strata_sampler *sampler;
    int32_t *tokens;         /* the prompt, then the generated tokens: [request->capacity] */
    size_t known;            /* tokens in tokens[] */
    size_t computed;         /* tokens whose KV the session holds */
    size_t prefill_length;   /* the tokens this admission's prompt phase reads: known at admission */
    int32_t generated;
    uint64_t admitted_order; /* larger: admitted later (preempted first) */
    double last_token_at;    /* when it sampled its last token */
    char *text;              /* generated text: engine thread only */
    size_t text_length, text_capacity;
    size_t emitted;          /* bytes of text handed to the request's buffer */
    serve_finish finish;
} serve_sequence;

struct serve_request {
    serve_scheduler *scheduler;
    int references;          /* the caller's and, while it is held, the scheduler's */
    uint64_t order;
    size_t prompt_count;
    size_t capacity;         /* prompt + max_tokens */
    int32_t max_tokens;
    int32_t choice_count;
    bool ignore_eos;
    char *stops[SERVE_MAX_STOPS];
    size_t stop_lengths[SERVE_MAX_STOPS];
    int32_t stop_count;
    strata_sampler_options sampling;
    strata_session_options session_options;
    char *kv_policy, *kv_policy_params, *kv_head_profile; /* copies the session options point to */
    bool compresses;         /* a policy or precision: the prefix cache is not used */
    serve_sequence *sequences[SERVE_MAX_CHOICES]; /* choice 0 from the start, the others once forked */
    bool forked;
    bool cancel_requested;
    bool held;               /* the scheduler still holds it (not every choice has finished) */
    /* Output, under the scheduler's lock */
    char *pending[SERVE_MAX_CHOICES];
    size_t pending_length[SERVE_MAX_CHOICES], pending_capacity[SERVE_MAX_CHOICES];
    serve_finish finishes[SERVE_MAX_CHOICES];
    bool finish_reported[SERVE_MAX_CHOICES];
    bool pending_failed;     /* an output buffer could not grow: the request ends with an error */
    serve_usage usage;
    char error[STRATA_ERROR_MESSAGE_BYTES];
    pthread_cond_t changed;
    double arrival, first_token_at;
    bool cached_recorded;
    serve_request *next_done; /* in the scheduler's list of finished requests it still references */
};

struct serve_scheduler {
    strata_model *model;
    int32_t max_batch_tokens, max_running, context_length;
    bool prefix_aware;
    int32_t last_prefix[PREFIX_GROUP_TOKENS]; /* the first tokens of the last admitted prompt (prefix-aware order) */
    bool has_last_prefix;
    uint64_t pool_bytes;
    pthread_mutex_t lock;
    pthread_cond_t work;     /* new request, cancellation or stop */
    pthread_cond_t idle;     /* a request finished */
    pthread_t engine;
    bool engine_started, stopping, draining;
    serve_sequence **waiting; /* front first */
    size_t waiting_count, waiting_capacity;
    serve_sequence **running; /* in admission order */
    size_t running_count, running_capacity;
    serve_request **requests; /* held by the scheduler */
    size_t request_count, request_capacity;
    uint64_t next_order;
    /* Admission turned the queue's front away: it is tried again once a session has gone (or after
     * ADMISSION_RETRY_STEPS steps: windows and policies also free blocks), not at every step. */
    serve_sequence *blocked;
    uint64_t sessions_ended, blocked_at_sessions_ended, steps_since_blocked;
    serve_request *done;      /* finished requests whose scheduler reference is dropped between steps */
    serve_metrics metrics;
    /* Step scratch: engine thread only */
    strata_step_item *items;
    serve_sequence **item_sequences;
};

const char *serve_finish_name(serve_finish finish)
{
    switch (finish) {
    case SERVE_FINISH_STOP:
        return "stop";
    case SERVE_FINISH_LENGTH:
        return "length";
    case SERVE_FINISH_CANCELLED:
        return "cancelled";
    case SERVE_FINISH_ERROR:
        return "error";
    case SERVE_FINISH_NONE:
        break;
    }
    return NULL;
}

static double now_seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* The CLOCK_MONOTONIC time timeout_ms from now, for pthread_cond_timedwait. */
static struct timespec deadline_after(int timeout_ms)
{
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += timeout_ms / 1000;
    deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    return deadline;
}

/* Grows *array (of pointers) to hold one more; false when out of memory. */
static bool grow_pointer_array(void *array, size_t count, size_t *capacity)
{
    void ***items = array;
    if (count < *capacity)
        return true;
    size_t grown_capacity = *capacity == 0 ? 16 : *capacity * 2;
    void **grown = realloc(*items, grown_capacity * sizeof *grown);
    if (grown == NULL)
        return false;
    *items = grown;
    *capacity = grown_capacity;
    return true;
}

static void remove_pointer(void **array, size_t *count, const void *item)
{
    for (size_t i = 0; i < *count; i++)
        if (array[i] == item) {
            memmove(&array[i], &array[i + 1], (*count - i - 1) * sizeof *array);
            (*count)--;
            return;
        }
}

/* ---- Histograms ---- */

static void histogram_init(serve_histogram *histogram, const double *bounds)
{
    memset(histogram, 0, sizeof *histogram);
    memcpy(histogram->bounds, bounds, sizeof histogram->bounds);
}

static void histogram_observe(serve_histogram *histogram, double value)
{
    int bucket = 0;
    while (bucket < SERVE_HISTOGRAM_BUCKETS && value > histogram->bounds[bucket])
        bucket++;
    histogram->counts[bucket]++;
    histogram->sum += value;
    histogram->total++;
}

/* ---- Requests ---- */

static void sequence_destroy(serve_sequence *sequence)
{
    if (sequence == NULL)
        return;
    strata_session_destroy(sequence->session);
    strata_sampler_destroy(sequence->sampler);
    free(sequence->tokens);
    free(sequence->text);
    free(sequence);
}

static void request_free(serve_request *request)
{
    for (int32_t i = 0; i < SERVE_MAX_CHOICES; i++) {
        sequence_destroy(request->sequences[i]);
        free(request->pending[i]);
    }
    for (int32_t i = 0; i < request->stop_count; i++)
        free(request->stops[i]);
    free(request->kv_policy);
    free(request->kv_policy_params);
    free(request->kv_head_profile);
    pthread_cond_destroy(&request->changed);
    free(request);
}

/* Drops one reference; the last one frees. Called with the lock held. */
static void request_unreference(serve_request *request)
{
    if (--request->references == 0)
        request_free(request);
}

static char *copy_string(const char *text, bool *failed)
{
    if (text == NULL)
        return NULL;
    char *copy = strdup(text);
    if (copy == NULL)
        *failed = true;
    return copy;
}

/* A new sequence for choice of request with tokens[0..known) and its own sampler. */
static strata_status sequence_create(serve_request *request, int32_t choice, const int32_t *tokens, size_t known,
                                     serve_sequence **out, strata_error *err)
{
    *out = NULL;
    serve_sequence *sequence = calloc(1, sizeof *sequence);
    if (sequence == NULL || (sequence->tokens = malloc(request->capacity * sizeof *sequence->tokens)) == NULL) {
        free(sequence);
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "cannot allocate a sequence of %zu tokens",
                           request->capacity);
    }
    sequence->request = request;
    sequence->choice = choice;
    memcpy(sequence->tokens, tokens, known * sizeof *tokens);
    sequence->known = known;
    strata_sampler_options sampling = request->sampling;
    sampling.seed += (uint64_t)choice;
    strata_status status = strata_sampler_create(&sampling, strata_model_vocab_size(request->scheduler->model),
                                                 &sequence->sampler, err);
    if (status != STRATA_OK) {
        sequence_destroy(sequence);
        return status;
    }
    if (sampling.repetition_penalty != 1.0f)
        for (size_t i = 0; i < known; i++)
            strata_sampler_accept(sequence->sampler, tokens[i]);
    *out = sequence;
    return STRATA_OK;
}

/* True when name is one of a comma-separated list ("q8, q4, ..."). */
static bool name_in_list(const char *name, size_t length, const char *list)
{
    for (const char *at = list; *at != '\0';) {
        size_t item = strcspn(at, ",");
        if (item == length && strncmp(at, name, length) == 0)
            return true;
        at += item;
        at += strspn(at, ", ");
    }
    return false;
}

/* A policy that evicts, merges or selects needs a budget; without one it would silently keep everything. */
static strata_status check_policy_budget(const strata_session_options *session, strata_error *err)
{
    const char *policy = session->kv_policy;
    if (policy == NULL || session->kv_budget_tokens > 0 || session->kv_budget_ratio > 0.0f)
        return STRATA_OK;
    size_t first = strcspn(policy, "+");
    bool full = first == 4 && strncmp(policy, "full", 4) == 0;
    bool precision_alone = policy[first] == '\0' && name_in_list(policy, first, strata_kv_precisions()) &&
                           strncmp(policy, "mixed", first) != 0;
    if (full || precision_alone)
        return STRATA_OK;
    return strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                       "KV policy '%s' keeps a budget of tokens per (layer, KV head): give kv_budget (tokens, or a "
                       "share of the prompt such as \"25%%\")",
                       policy);
}

/* Checks the spec against the model, the context and the pool. */
static strata_status check_spec(const serve_scheduler *scheduler, const serve_request_spec *spec, strata_error *err)
{
    int32_t vocab = strata_model_vocab_size(scheduler->model);
    if (spec->prompt_count == 0)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT, "the prompt is empty");
    for (size_t i = 0; i < spec->prompt_count; i++)
        if (spec->prompt[i] < 0 || spec->prompt[i] >= vocab)
            return strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                               "prompt token %d at index %zu is outside the vocabulary (0..%d)", spec->prompt[i], i,
                               vocab - 1);
    if (spec->choices < 1 || spec->choices > SERVE_MAX_CHOICES)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT, "n is %d; it must be 1..%d", spec->choices,
                           SERVE_MAX_CHOICES);
    if (spec->max_tokens < 0)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT, "max_tokens is %d; it must be at least 1",
                           spec->max_tokens);
    size_t wanted = spec->prompt_count + (size_t)(spec->max_tokens > 0 ? spec->max_tokens : 1);
    if (wanted > (size_t)scheduler->context_length)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                           "the prompt has %zu tokens and max_tokens asks for %d more: %zu tokens exceed the "
                           "context of %d tokens",
                           spec->prompt_count, spec->max_tokens > 0 ? spec->max_tokens : 1, wanted,
                           scheduler->context_length);
    uint64_t prompt_bytes = strata_model_kv_bytes_for_tokens(scheduler->model, (int64_t)spec->prompt_count);
    if (prompt_bytes > scheduler->pool_bytes)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                           "the prompt's %zu tokens need %.1f MiB of KV, more than the whole pool of %.1f MiB "
                           "(start the server with a larger --kv-mem)",
                           spec->prompt_count, (double)prompt_bytes / 1048576.0,
                           (double)scheduler->pool_bytes / 1048576.0);
    if (spec->stop_count < 0 || spec->stop_count > SERVE_MAX_STOPS)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT, "%d stop strings; at most %d", spec->stop_count,
                           SERVE_MAX_STOPS);
    for (int32_t i = 0; i < spec->stop_count; i++)
        if (spec->stops[i] == NULL || spec->stops[i][0] == '\0')
            return strata_fail(err, STRATA_E_INVALID_ARGUMENT, "stop string %d is empty", i);
    strata_status status = strata_session_options_check(scheduler->model, &spec->session, err);
    return status == STRATA_OK ? check_policy_budget(&spec->session, err) : status;
}

/* Builds a request from a checked spec, with choice 0's sequence. */
static strata_status request_create(serve_scheduler *scheduler, const serve_request_spec *spec, serve_request **out,
                                    strata_error *err)
{
    serve_request *request = calloc(1, sizeof *request);
    if (request == NULL)
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "cannot allocate a request");
    pthread_condattr_t attributes;
    pthread_condattr_init(&attributes);
    pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC);
    pthread_cond_init(&request->changed, &attributes);
    pthread_condattr_destroy(&attributes);
    request->scheduler = scheduler;
    request->references = 1;
    request->prompt_count = spec->prompt_count;
    request->max_tokens = spec->max_tokens > 0 ? spec->max_tokens
                                               : scheduler->context_length - (int32_t)spec->prompt_count;
    request->capacity = spec->prompt_count + (size_t)request->max_tokens;
    request->choice_count = spec->choices;
    request->ignore_eos = spec->ignore_eos;
    request->sampling = spec->sampling;
    bool failed = false;
    for (int32_t i = 0; i < spec->stop_count; i++) {
        request->stops[i] = copy_string(spec->stops[i], &failed);
        request->stop_lengths[i] = request->stops[i] != NULL ? strlen(request->stops[i]) : 0;
    }
    request->stop_count = spec->stop_count;
    request->session_options = spec->session;
    request->session_options.kv_policy = request->kv_policy = copy_string(spec->session.kv_policy, &failed);
    request->session_options.kv_policy_params = request->kv_policy_params =
        copy_string(spec->session.kv_policy_params, &failed);
    request->session_options.kv_head_profile = request->kv_head_profile =
        copy_string(spec->session.kv_head_profile, &failed);
    request->session_options.context_length = (int32_t)request->capacity;
    request->session_options.kv_statistics_window = 0;
    const char *policy = spec->session.kv_policy;
    request->compresses = policy != NULL && strcmp(policy, "full") != 0;
    request->session_options.prefix_cache = !request->compresses;
    request->arrival = now_seconds();
    strata_status status = failed ? strata_fail(err, STRATA_E_OUT_OF_MEMORY, "cannot copy a request's strings")
                                  : sequence_create(request, 0, spec->prompt, spec->prompt_count,
                                                    &request->sequences[0], err);
    if (status != STRATA_OK) {
        request_free(request);
        return status;
    }
    *out = request;
    return STRATA_OK;
}

strata_status serve_submit(serve_scheduler *scheduler, const serve_request_spec *spec, serve_request **out,
                           strata_error *err)
{
    *out = NULL;
    serve_request *request = NULL;
    strata_status status = check_spec(scheduler, spec, err);
    if (status == STRATA_OK)
        status = request_create(scheduler, spec, &request, err);
    pthread_mutex_lock(&scheduler->lock);
    if (status == STRATA_OK && scheduler->draining)
        status = strata_fail(err, STRATA_E_UNSUPPORTED, "the server is shutting down and takes no new requests");
    if (status == STRATA_OK && (!grow_pointer_array(&scheduler->requests, scheduler->request_count,
                                                    &scheduler->request_capacity) ||
                                !grow_pointer_array(&scheduler->waiting, scheduler->waiting_count,
                                                    &scheduler->waiting_capacity)))
        status = strata_fail(err, STRATA_E_OUT_OF_MEMORY, "cannot queue a request");
    if (status != STRATA_OK) {
        scheduler->metrics.requests_rejected++;
        pthread_mutex_unlock(&scheduler->lock);
        if (request != NULL)
            request_free(request);
        return status;
    }
    request->order = scheduler->next_order++;
    request->references = 2; /* the caller's and the scheduler's */
    request->held = true;
    scheduler->requests[scheduler->request_count++] = request;
    scheduler->waiting[scheduler->waiting_count++] = request->sequences[0];
    pthread_cond_signal(&scheduler->work);
    pthread_mutex_unlock(&scheduler->lock);
    *out = request;
    return STRATA_OK;
}

void serve_request_cancel(serve_request *request)
{
    serve_scheduler *scheduler = request->scheduler;
    pthread_mutex_lock(&scheduler->lock);
    if (request->held && !request->cancel_requested) {
        request->cancel_requested = true;
        pthread_cond_signal(&scheduler->work);
    }
    pthread_mutex_unlock(&scheduler->lock);
}

void serve_request_release(serve_request *request)
{
    if (request == NULL)
        return;
    serve_scheduler *scheduler = request->scheduler;
    pthread_mutex_lock(&scheduler->lock);
    if (request->held && !request->cancel_requested) {
        request->cancel_requested = true;
        pthread_cond_signal(&scheduler->work);
    }
    request_unreference(request);
    pthread_mutex_unlock(&scheduler->lock);
}

/* Moves what the request produced into result. Called with the lock held. */
static bool collect_updates(serve_request *request, serve_poll_result *result)
{
    bool any = false;
    result->choices = request->choice_count;
    result->done = !request->held;
    for (int32_t i = 0; i < request->choice_count; i++) {
        serve_choice_update *update = &result->updates[i];
        *update = (serve_choice_update){.finish = request->finishes[i]};
        if (request->pending_length[i] > 0) {
            update->text = request->pending[i];
            update->text_length = request->pending_length[i];
            request->pending[i] = NULL;
            request->pending_length[i] = request->pending_capacity[i] = 0;
            any = true;
        }
        if (request->finishes[i] != SERVE_FINISH_NONE && !request->finish_reported[i]) {
            request->finish_reported[i] = true;
            update->finished_now = true;
            any = true;
        }
    }
    result->usage = request->usage;
    snprintf(result->error, sizeof result->error, "%s", request->error);
    return any || result->done;
}

void serve_request_poll(serve_request *request, int timeout_ms, serve_poll_result *result)
{
    serve_scheduler *scheduler = request->scheduler;
    struct timespec deadline = deadline_after(timeout_ms);
    pthread_mutex_lock(&scheduler->lock);
    while (!collect_updates(request, result))
        if (pthread_cond_timedwait(&request->changed, &scheduler->lock, &deadline) == ETIMEDOUT) {
            collect_updates(request, result);
            break;
        }
    pthread_mutex_unlock(&scheduler->lock);
}

/* ---- Output (engine thread, lock held where said) ---- */

/* Appends bytes to the choice's output buffer. Lock held. */
static void publish_text(serve_request *request, int32_t choice, const char *text, size_t length)
{
    if (length == 0)
        return;
    size_t needed = request->pending_length[choice] + length + 1;
    if (needed > request->pending_capacity[choice]) {
        size_t capacity = needed * 2;
        char *grown = realloc(request->pending[choice], capacity);
        if (grown == NULL) {
            request->pending_failed = true;
            return;
        }
        request->pending[choice] = grown;
        request->pending_capacity[choice] = capacity;
    }
    memcpy(request->pending[choice] + request->pending_length[choice], text, length);
    request->pending_length[choice] += length;
    request->pending[choice][request->pending_length[choice]] = '\0';
}

/* Bytes at the end of text that could still grow into a stop string or
 * finish a UTF-8 character: held back until the next token decides. */
static size_t held_back_bytes(const serve_sequence *sequence)
{
    const serve_request *request = sequence->request;
    size_t length = sequence->text_length, hold = 0;
    for (int32_t s = 0; s < request->stop_count; s++)
        for (size_t k = request->stop_lengths[s] - 1; k > hold; k--)
            if (k <= length && memcmp(sequence->text + length - k, request->stops[s], k) == 0) {
                hold = k;
                break;
            }
    /* An incomplete UTF-8 character at the end: its lead byte says how long it will be. */
    for (size_t back = 1; back <= 3 && back <= length; back++) {
        unsigned char byte = (unsigned char)sequence->text[length - back];
        if ((byte & 0xC0) == 0x80)
            continue; /* a continuation byte: look further back */
        size_t expected = byte >= 0xF0 ? 4 : byte >= 0xE0 ? 3 : byte >= 0xC0 ? 2 : 1;
        if (expected > back && back > hold)
            hold = back;
        break;
    }
    return hold;
}

/* Appends a token's text and looks for a stop string in what it could complete; false when out of memory. */
static bool sequence_add_text(serve_sequence *sequence, const char *piece, size_t length)
{
    if (sequence->text_length + length + 1 > sequence->text_capacity) {
        size_t capacity = (sequence->text_length + length + 1) * 2;
        char *grown = realloc(sequence->text, capacity);
        if (grown == NULL)
            return false;
        sequence->text = grown;
        sequence->text_capacity = capacity;
    }
    size_t before = sequence->text_length;
    memcpy(sequence->text + before, piece, length);
    sequence->text_length += length;
    sequence->text[sequence->text_length] = '\0';
    const serve_request *request = sequence->request;
    size_t cut = sequence->text_length;
    for (int32_t s = 0; s < request->stop_count; s++) {
        size_t stop_length = request->stop_lengths[s];
        /* Only a match ending in the new bytes is new; text before them was searched already. */
        size_t from = before + 1 > stop_length ? before + 1 - stop_length : 0;
        char *match = memmem(sequence->text + from, sequence->text_length - from, request->stops[s], stop_length);
        if (match != NULL && (size_t)(match - sequence->text) < cut)
            cut = (size_t)(match - sequence->text);
    }
    if (cut < sequence->text_length) {
        sequence->text_length = cut;
        sequence->text[cut] = '\0';
        sequence->finish = SERVE_FINISH_STOP;
    }
    return true;
}

/* ---- The running set (engine thread, lock held) ---- */

static void sequence_release_session(serve_scheduler *scheduler, serve_sequence *sequence)
{
    if (sequence->session != NULL)
        scheduler->sessions_ended++;
    if (scheduler->blocked == sequence)
        scheduler->blocked = NULL;
    strata_session_destroy(sequence->session);
    sequence->session = NULL;
    sequence->computed = 0;
}

/* Ends the request once every choice has finished: usage, metrics, waiters. */
static void request_check_done(serve_scheduler *scheduler, serve_request *request)
{
    for (int32_t i = 0; i < request->choice_count; i++)
        if (request->finishes[i] == SERVE_FINISH_NONE)
            return;
    double done_at = now_seconds();
    serve_metrics *metrics = &scheduler->metrics;
    metrics->requests_by_finish[request->finishes[0]]++;
    if (request->first_token_at > 0)
        histogram_observe(&metrics->time_to_first_token, request->first_token_at - request->arrival);
    histogram_observe(&metrics->request_latency, done_at - request->arrival);
    request->held = false;
    remove_pointer((void **)scheduler->requests, &scheduler->request_count, request);
    pthread_cond_broadcast(&request->changed);
    pthread_cond_broadcast(&scheduler->idle);
    /* The step being processed may still look at the request's sequences: the reference goes later. */
    request->next_done = scheduler->done;
    scheduler->done = request;
}

/* Drops the scheduler's references to finished requests and notes the pool's figures. Lock held. */
static void between_steps(serve_scheduler *scheduler)
{
    while (scheduler->done != NULL) {
        serve_request *request = scheduler->done;
        scheduler->done = request->next_done;
        request_unreference(request);
    }
    strata_model_kv_stats(scheduler->model, &scheduler->metrics.kv);
}

/* Finishes a sequence: its KV goes back, its remaining text and reason go out. */
static void sequence_finish(serve_scheduler *scheduler, serve_sequence *sequence, serve_finish finish,
                            const char *message)
{
    serve_request *request = sequence->request;
    if (sequence->state == SEQUENCE_RUNNING)
        remove_pointer((void **)scheduler->running, &scheduler->running_count, sequence);
    else if (sequence->state == SEQUENCE_WAITING)
        remove_pointer((void **)scheduler->waiting, &scheduler->waiting_count, sequence);
    sequence_release_session(scheduler, sequence);
    sequence->state = SEQUENCE_FINISHED;
    sequence->finish = finish;
    if (finish == SERVE_FINISH_STOP || finish == SERVE_FINISH_LENGTH)
        publish_text(request, sequence->choice, sequence->text + sequence->emitted,
                     sequence->text_length - sequence->emitted);
    sequence->emitted = sequence->text_length;
    if (request->pending_failed && finish != SERVE_FINISH_CANCELLED) {
        finish = SERVE_FINISH_ERROR;
        message = "the server ran out of memory for the request's output";
    }
    if (message != NULL && request->error[0] == '\0')
        snprintf(request->error, sizeof request->error, "%s", message);
    request->finishes[sequence->choice] = finish;
    /* Choices not forked yet end with choice 0 when it ends before reading the prompt. */
    if (!request->forked && sequence->choice == 0)
        for (int32_t i = 1; i < request->choice_count; i++)
            request->finishes[i] = finish;
    pthread_cond_broadcast(&request->changed);
    request_check_done(scheduler, request);
}

/* Ends every sequence of requests whose caller cancelled them. */
static void handle_cancellations(serve_scheduler *scheduler)
{
    for (size_t r = 0; r < scheduler->request_count;) {
        serve_request *request = scheduler->requests[r];
        /* Finishing choice 0 before it forked also finishes the choices not made yet; finishing the last
         * choice ends the request and takes it out of requests[]. */
        for (int32_t i = 0; i < request->choice_count && request->cancel_requested && request->held; i++) {
            serve_sequence *sequence = request->sequences[i];
            if (request->finishes[i] == SERVE_FINISH_NONE && sequence != NULL && sequence->state != SEQUENCE_FINISHED)
                sequence_finish(scheduler, sequence, SERVE_FINISH_CANCELLED, NULL);
        }
        if (r < scheduler->request_count && scheduler->requests[r] == request)
            r++;
    }
}

/* The KV bytes a sequence's prompt phase still needs. */
static uint64_t prompt_bytes_left(const serve_scheduler *scheduler, const serve_sequence *sequence)
{
    if (sequence->computed >= sequence->prefill_length)
        return 0;
    return strata_model_kv_bytes_for_tokens(scheduler->model, (int64_t)sequence->prefill_length) -
           strata_model_kv_bytes_for_tokens(scheduler->model, (int64_t)sequence->computed);
}

/* Prefix-aware order: brings to the queue's front the oldest waiting request
 * whose prompt starts with the same block as the last admitted one (its
 * prefix is then in the cache). A preempted sequence at the front keeps its
 * place. */
static void front_shared_prefix(serve_scheduler *scheduler)
{
    if (!scheduler->has_last_prefix || scheduler->waiting_count < 2 || scheduler->waiting[0]->generated > 0)
        return;
    for (size_t i = 0; i < scheduler->waiting_count; i++) {
        serve_sequence *candidate = scheduler->waiting[i];
        if (candidate->generated > 0 || candidate->known < PREFIX_GROUP_TOKENS)
            continue;
        if (memcmp(candidate->tokens, scheduler->last_prefix, sizeof scheduler->last_prefix) != 0)
            continue;
        memmove(&scheduler->waiting[1], &scheduler->waiting[0], i * sizeof *scheduler->waiting);
        scheduler->waiting[0] = candidate;
        return;
    }
}

/* Admits waiting sequences, oldest first, while the pool can hold them. */
static void admit(serve_scheduler *scheduler)
{
    while (scheduler->waiting_count > 0 && scheduler->running_count < (size_t)scheduler->max_running) {
        if (scheduler->prefix_aware)
            front_shared_prefix(scheduler);
        serve_sequence *sequence = scheduler->waiting[0];
        if (sequence == scheduler->blocked && scheduler->sessions_ended == scheduler->blocked_at_sessions_ended &&
            ++scheduler->steps_since_blocked < ADMISSION_RETRY_STEPS)
            break;
        scheduler->blocked = NULL;
        serve_request *request = sequence->request;
        strata_error err = {0};
        strata_session *session = NULL;
        strata_status status = strata_session_create(scheduler->model, &request->session_options, &session, &err);
        size_t attached = 0;
        if (status == STRATA_OK)
            status = strata_session_attach_prefix(session, sequence->tokens, sequence->known, &attached, &err);
        if (status != STRATA_OK || !grow_pointer_array(&scheduler->running, scheduler->running_count,
                                                       &scheduler->running_capacity)) {
            strata_session_destroy(session);
            sequence_finish(scheduler, sequence, SERVE_FINISH_ERROR,
                            status != STRATA_OK ? err.message : "cannot grow the running set");
            continue;
        }
        uint64_t needed = strata_model_kv_bytes_for_tokens(scheduler->model, (int64_t)sequence->known) -
                          strata_model_kv_bytes_for_tokens(scheduler->model, (int64_t)attached);
        /* What admitted prompts still need, and a block per table for each decoding sequence's next tokens. */
        uint64_t reserved = 0, block_per_table = strata_model_kv_bytes_for_tokens(scheduler->model, 1);
        for (size_t i = 0; i < scheduler->running_count; i++)
            reserved += prompt_bytes_left(scheduler, scheduler->running[i]) + block_per_table;
        uint64_t free_bytes = strata_model_kv_make_room(scheduler->model, needed + reserved);
        if (scheduler->running_count > 0 && free_bytes < needed + reserved) {
            strata_session_destroy(session);
            scheduler->blocked = sequence;
            scheduler->blocked_at_sessions_ended = scheduler->sessions_ended;
            scheduler->steps_since_blocked = 0;
            break; /* first come, first served: the rest waits behind it */
        }
        memmove(&scheduler->waiting[0], &scheduler->waiting[1], (scheduler->waiting_count - 1) * sizeof *scheduler->waiting);
        scheduler->waiting_count--;
        sequence->session = session;
        sequence->computed = attached;
        sequence->prefill_length = sequence->known;
        sequence->state = SEQUENCE_RUNNING;
        sequence->admitted_order = scheduler->next_order++;
        scheduler->running[scheduler->running_count++] = sequence;
        if (sequence->known >= PREFIX_GROUP_TOKENS) {
            memcpy(scheduler->last_prefix, sequence->tokens, sizeof scheduler->last_prefix);
            scheduler->has_last_prefix = true;
        }
        if (!request->cached_recorded && sequence->choice == 0) {
            request->cached_recorded = true;
            request->usage.prompt_tokens = (int64_t)request->prompt_count;
            request->usage.cached_tokens = (int64_t)attached;
            scheduler->metrics.prompt_tokens += request->prompt_count;
            scheduler->metrics.cached_prompt_tokens += attached;
        }
    }
}

/* Preempts the sequence admitted last: its KV goes back, it waits at the front to recompute. */
static void preempt_newest(serve_scheduler *scheduler)
{
    serve_sequence *victim = scheduler->running[0];
    for (size_t i = 1; i < scheduler->running_count; i++)
        if (scheduler->running[i]->admitted_order > victim->admitted_order)
            victim = scheduler->running[i];
    remove_pointer((void **)scheduler->running, &scheduler->running_count, victim);
    sequence_release_session(scheduler, victim);
    victim->state = SEQUENCE_WAITING;
    /* There is room: a running sequence left the running set, never more than it held. */
    if (grow_pointer_array(&scheduler->waiting, scheduler->waiting_count, &scheduler->waiting_capacity)) {
        memmove(&scheduler->waiting[1], &scheduler->waiting[0], scheduler->waiting_count * sizeof *scheduler->waiting);
        scheduler->waiting[0] = victim;
        scheduler->waiting_count++;
        scheduler->metrics.preemptions++;
    } else {
        victim->state = SEQUENCE_FINISHED;
        sequence_finish(scheduler, victim, SERVE_FINISH_ERROR, "cannot requeue a preempted sequence");
    }
}

/* Fills the step: a token per decoding sequence, then prompt chunks, oldest first. */
static size_t build_step(serve_scheduler *scheduler)
{
    size_t count = 0;
    int64_t budget = scheduler->max_batch_tokens;
    for (size_t i = 0; i < scheduler->running_count && budget > 0; i++) {
        serve_sequence *sequence = scheduler->running[i];
        if (sequence->computed < sequence->prefill_length)
            continue;
        scheduler->item_sequences[count] = sequence;
        scheduler->items[count++] = (strata_step_item){.session = sequence->session,
                                                       .tokens = sequence->tokens + sequence->computed, .count = 1};
        budget--;
    }
    for (size_t i = 0; i < scheduler->running_count && budget > 0; i++) {
        serve_sequence *sequence = scheduler->running[i];
        if (sequence->computed >= sequence->prefill_length)
            continue;
        size_t left = sequence->prefill_length - sequence->computed;
        size_t chunk = left < (size_t)budget ? left : (size_t)budget;
        scheduler->item_sequences[count] = sequence;
        scheduler->items[count++] = (strata_step_item){
            .session = sequence->session, .tokens = sequence->tokens + sequence->computed, .count = chunk,
            .prompt_length = sequence->prefill_length, .prompt_offset = sequence->computed};
        budget -= (int64_t)chunk;
    }
    return count;
}

/* Forks choices 1..n-1 from choice 0 once it has read the prompt: they share its KV and logits. */
static void fork_choices(serve_scheduler *scheduler, serve_sequence *first)
{
    serve_request *request = first->request;
    request->forked = true;
    for (int32_t i = 1; i < request->choice_count; i++) {
        strata_error err = {0};
        serve_sequence *sequence = NULL;
        strata_status status = sequence_create(request, i, first->tokens, first->known, &sequence, &err);
        if (status == STRATA_OK)
            status = strata_session_fork(first->session, &sequence->session, &err);
        if (status == STRATA_OK &&
            !grow_pointer_array(&scheduler->running, scheduler->running_count, &scheduler->running_capacity))
            status = strata_fail(&err, STRATA_E_OUT_OF_MEMORY, "cannot grow the running set");
        if (sequence == NULL) {
            request->finishes[i] = SERVE_FINISH_ERROR;
            snprintf(request->error, sizeof request->error, "%s", err.message);
            continue;
        }
        request->sequences[i] = sequence;
        if (status != STRATA_OK) {
            sequence->state = SEQUENCE_FINISHED;
            sequence_finish(scheduler, sequence, SERVE_FINISH_ERROR, err.message);
            continue;
        }
        sequence->computed = sequence->prefill_length = first->known;
        sequence->state = SEQUENCE_RUNNING;
        sequence->admitted_order = scheduler->next_order++;
        scheduler->running[scheduler->running_count++] = sequence;
    }
}

/* Samples the next token of a sequence whose known tokens are all computed,
 * and finishes it on an end token, a stop string, max_tokens or the context. */
static void sample_next(serve_scheduler *scheduler, serve_sequence *sequence)
{
    serve_request *request = sequence->request;
    const strata_model *model = scheduler->model;
    int32_t token = strata_sampler_sample(sequence->sampler, strata_session_logits(sequence->session, 0));
    double at = now_seconds();
    if (request->first_token_at == 0)
        request->first_token_at = at;
    /* Every gap between two tokens of a sequence, as vLLM's time_per_output_token (a preemption's stall too). */
    if (sequence->generated > 0)
        histogram_observe(&scheduler->metrics.time_per_output_token, at - sequence->last_token_at);
    sequence->last_token_at = at;
    sequence->generated++;
    request->usage.completion_tokens++;
    scheduler->metrics.generation_tokens++;
    bool end = strata_token_is_end_of_generation(model, token) && !request->ignore_eos;
    if (!end) {
        char piece[256];
        size_t length = strata_token_to_text(model, token, piece, sizeof piece);
        if (length > sizeof piece)
            length = sizeof piece; /* no vocabulary piece of the supported models is this long */
        if (!sequence_add_text(sequence, piece, length)) {
            sequence_finish(scheduler, sequence, SERVE_FINISH_ERROR, "the server ran out of memory for the text");
            return;
        }
        sequence->tokens[sequence->known++] = token;
    }
    if (end || sequence->finish == SERVE_FINISH_STOP) {
        sequence_finish(scheduler, sequence, SERVE_FINISH_STOP, NULL);
        return;
    }
    if (sequence->generated >= request->max_tokens || sequence->known >= request->capacity) {
        sequence_finish(scheduler, sequence, SERVE_FINISH_LENGTH, NULL);
        return;
    }
    size_t safe = sequence->text_length - held_back_bytes(sequence);
    if (safe > sequence->emitted) {
        publish_text(request, sequence->choice, sequence->text + sequence->emitted, safe - sequence->emitted);
        sequence->emitted = safe;
        pthread_cond_broadcast(&request->changed);
    }
}

/* Runs one step, preempting the newest sequence while the pool is full.
 * Returns the number of items run (0: nothing ran). Lock held on entry and
 * exit; released around the model's work. */
static size_t run_step(serve_scheduler *scheduler)
{
    for (;;) {
        size_t count = build_step(scheduler);
        if (count == 0)
            return 0;
        size_t lengths_before[MAX_BATCH_TOKENS];
        for (size_t i = 0; i < count; i++)
            lengths_before[i] = strata_session_length(scheduler->items[i].session);
        strata_error err = {0};
        pthread_mutex_unlock(&scheduler->lock);
        strata_status status = strata_sessions_step(scheduler->items, count, &err);
        pthread_mutex_lock(&scheduler->lock);
        scheduler->metrics.steps++;
        /* A policy can fail after the forward step ran (its compression found the pool full): the tokens
         * were computed, so the step counts; the pool's state is checked again next step. */
        bool advanced = strata_session_length(scheduler->items[0].session) > lengths_before[0];
        if (status == STRATA_OK || advanced)
            return count;
        if (status == STRATA_E_KV_FULL && scheduler->running_count > 1) {
            preempt_newest(scheduler);
            continue;
        }
        /* Alone and still out of room, or a failure of the step itself: the step's sequences end. */
        for (size_t i = 0; i < count; i++) {
            serve_sequence *sequence = scheduler->item_sequences[i];
            if (sequence->state != SEQUENCE_RUNNING)
                continue;
            if (status == STRATA_E_KV_FULL && sequence->generated > 0)
                sequence_finish(scheduler, sequence, SERVE_FINISH_LENGTH, NULL);
            else
                sequence_finish(scheduler, sequence, SERVE_FINISH_ERROR,
                                status == STRATA_E_KV_FULL ? "the KV pool cannot hold this request's prompt even "
                                                             "alone; start the server with a larger --kv-mem"
                                                           : err.message);
        }
        return count;
    }
}

/* After a step: every sequence whose known tokens are all computed samples. */
static void after_step(serve_scheduler *scheduler, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        serve_sequence *sequence = scheduler->item_sequences[i];
        if (sequence->state != SEQUENCE_RUNNING || sequence->session == NULL)
            continue;
        sequence->computed += scheduler->items[i].count;
        if (sequence->computed < sequence->known)
            continue;
        serve_request *request = sequence->request;
        if (sequence->choice == 0 && request->choice_count > 1 && !request->forked) {
            fork_choices(scheduler, sequence);
            for (int32_t c = 1; c < request->choice_count; c++)
                if (request->sequences[c] != NULL && request->sequences[c]->state == SEQUENCE_RUNNING)
                    sample_next(scheduler, request->sequences[c]);
        }
        sample_next(scheduler, sequence);
    }
}

static void *engine_main(void *argument)
{
    serve_scheduler *scheduler = argument;
    pthread_mutex_lock(&scheduler->lock);
    for (;;) {
        handle_cancellations(scheduler);
        admit(scheduler);
        between_steps(scheduler);
        if (scheduler->running_count == 0) {
            if (scheduler->stopping)
                break;
            pthread_cond_wait(&scheduler->work, &scheduler->lock);
            continue;
        }
        size_t count = run_step(scheduler);
        after_step(scheduler, count);
    }
    pthread_mutex_unlock(&scheduler->lock);
    return NULL;
}

/* ---- Lifecycle ---- */

strata_status serve_scheduler_create(strata_model *model, const serve_scheduler_options *options,
                                     serve_scheduler **out, strata_error *err)
{
    *out = NULL;
    serve_scheduler_options o = options != NULL ? *options : (serve_scheduler_options){0};
    int32_t model_context = strata_model_context_length(model);
    if (o.max_batch_tokens == 0)
        o.max_batch_tokens = DEFAULT_BATCH_TOKENS;
    if (o.max_running == 0)
        o.max_running = DEFAULT_MAX_RUNNING;
    if (o.context_length == 0)
        o.context_length = model_context < DEFAULT_CONTEXT ? model_context : DEFAULT_CONTEXT;
    if (o.max_batch_tokens < 1 || o.max_batch_tokens > MAX_BATCH_TOKENS)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT, "max batch tokens %d is outside 1..%d",
                           o.max_batch_tokens, MAX_BATCH_TOKENS);
    if (o.max_running < 1)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT, "max running sequences %d is below 1", o.max_running);
    if (o.context_length < 2 || o.context_length > model_context)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT, "context %d is outside 2..%d (the model's)",
                           o.context_length, model_context);
    serve_scheduler *scheduler = calloc(1, sizeof *scheduler);
    if (scheduler == NULL)
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "cannot allocate a scheduler");
    scheduler->model = model;
    scheduler->max_batch_tokens = o.max_batch_tokens;
    /* Every running sequence decodes a token per step: no more of them than the step holds. */
    scheduler->max_running = o.max_running < o.max_batch_tokens ? o.max_running : o.max_batch_tokens;
    scheduler->context_length = o.context_length;
    scheduler->prefix_aware = o.prefix_aware;
    strata_kv_stats stats;
    strata_model_kv_stats(model, &stats);
    scheduler->pool_bytes = stats.budget_bytes;
    static const double latency_bounds[SERVE_HISTOGRAM_BUCKETS] = {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
                                                                   2.5, 5,    10,    20,   40,  80,   160};
    static const double token_bounds[SERVE_HISTOGRAM_BUCKETS] = {0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06,
                                                                 0.08,  0.1,    0.15,  0.2,  0.3,  0.5,  1};
    histogram_init(&scheduler->metrics.time_to_first_token, latency_bounds);
    histogram_init(&scheduler->metrics.request_latency, latency_bounds);
    histogram_init(&scheduler->metrics.time_per_output_token, token_bounds);
    pthread_mutex_init(&scheduler->lock, NULL);
    pthread_cond_init(&scheduler->work, NULL);
    pthread_condattr_t attributes;
    pthread_condattr_init(&attributes);
    pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC);
    pthread_cond_init(&scheduler->idle, &attributes);
    pthread_condattr_destroy(&attributes);
    scheduler->items = calloc(MAX_BATCH_TOKENS, sizeof *scheduler->items);
    scheduler->item_sequences = calloc(MAX_BATCH_TOKENS, sizeof *scheduler->item_sequences);
    if (scheduler->items == NULL || scheduler->item_sequences == NULL) {
        serve_scheduler_destroy(scheduler);
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "cannot allocate the scheduler's step");
    }
    if (pthread_create(&scheduler->engine, NULL, engine_main, scheduler) != 0) {
        serve_scheduler_destroy(scheduler);
        return strata_fail(err, STRATA_E_INTERNAL, "cannot start the scheduler's engine thread");
    }
    scheduler->engine_started = true;
    *out = scheduler;
    return STRATA_OK;
}

void serve_scheduler_destroy(serve_scheduler *scheduler)
{
    if (scheduler == NULL)
        return;
    pthread_mutex_lock(&scheduler->lock);
    scheduler->draining = true;
    /* Whatever is still held ends now, with an error its caller sees. */
    for (size_t i = 0; i < scheduler->request_count; i++)
        scheduler->requests[i]->cancel_requested = true;
    scheduler->stopping = true;
    pthread_cond_signal(&scheduler->work);
    pthread_mutex_unlock(&scheduler->lock);
    if (scheduler->engine_started)
        pthread_join(scheduler->engine, NULL);
    pthread_mutex_lock(&scheduler->lock);
    handle_cancellations(scheduler);
    between_steps(scheduler);
    pthread_mutex_unlock(&scheduler->lock);
    free(scheduler->waiting);
    free(scheduler->running);
    free(scheduler->requests);
    free(scheduler->items);
    free(scheduler->item_sequences);
    pthread_cond_destroy(&scheduler->work);
    pthread_cond_destroy(&scheduler->idle);
    pthread_mutex_destroy(&scheduler->lock);
    free(scheduler);
}

int32_t serve_scheduler_context_length(const serve_scheduler *scheduler)
{
    return scheduler->context_length;
}

void serve_scheduler_start_draining(serve_scheduler *scheduler)
{
    pthread_mutex_lock(&scheduler->lock);
    scheduler->draining = true;
    pthread_mutex_unlock(&scheduler->lock);
}

bool serve_scheduler_wait_idle(serve_scheduler *scheduler, int timeout_ms)
{
    struct timespec deadline = deadline_after(timeout_ms);
    pthread_mutex_lock(&scheduler->lock);
    while (scheduler->request_count > 0)
        if (pthread_cond_timedwait(&scheduler->idle, &scheduler->lock, &deadline) == ETIMEDOUT)
            break;
    bool idle = scheduler->request_count == 0;
    pthread_mutex_unlock(&scheduler->lock);
    return idle;
}

void serve_scheduler_metrics(serve_scheduler *scheduler, serve_metrics *metrics)
{
    pthread_mutex_lock(&scheduler->lock);
    *metrics = scheduler->metrics;
    metrics->running = (int64_t)scheduler->running_count;
    metrics->waiting = (int64_t)scheduler->waiting_count;
    pthread_mutex_unlock(&scheduler->lock);
}
