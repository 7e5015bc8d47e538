/* serve/scheduler.h: the serving scheduler: requests in, tokens out, one
 * engine thread stepping the model.
 *
 * Iteration-level continuous batching: every step runs one token of every
 * decoding sequence plus prompt chunks of the sequences still reading their
 * prompts, all under a per-step token budget (Sarathi-Serve's chunked
 * prefill), so a long new prompt never stalls the running streams for more
 * than one step. A waiting request is admitted only while the KV pool can
 * hold its prompt beside what the running prompts still need; when the pool
 * runs out mid-generation, the newest sequence is preempted: its KV is
 * dropped and it waits at the queue's front to recompute its prompt and the
 * tokens it already produced, keeping what it already streamed.
 *
 * Threads: serve_submit, serve_request_poll, serve_request_cancel and
 * serve_request_release may be called from any thread (the HTTP layer's
 * connection threads); the model is only touched by the scheduler's own
 * engine thread. Every accepted request ends with a finish reason for each
 * choice: stop, length, cancelled or error (with a message). */
#ifndef STRATA_SERVE_SCHEDULER_H
#define STRATA_SERVE_SCHEDULER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "strata.h"

typedef struct serve_scheduler serve_scheduler;
typedef struct serve_request serve_request;

typedef struct serve_scheduler_options {
    int32_t max_batch_tokens; /* tokens per step, decode and prefill together (1..512); 0: 256 */
    int32_t max_running;      /* sequences holding KV at once; 0: 64 */
    int32_t context_length;   /* most tokens a request may hold, prompt and output; 0: the model's, at most 8192 */
    bool prefix_aware;        /* admit first the oldest waiting request sharing the last admitted prompt's first
                                 16 tokens (its prefix is cached), not strictly the oldest */
} serve_scheduler_options;

typedef enum serve_finish {
    SERVE_FINISH_NONE = 0, /* still running */
    SERVE_FINISH_STOP,     /* end of generation token or a stop string */
    SERVE_FINISH_LENGTH,   /* max_tokens, the context, or a KV pool too small for the sequence alone */
    SERVE_FINISH_CANCELLED,
    SERVE_FINISH_ERROR,
} serve_finish;

/* Returns the OpenAI name of a finish reason ("stop", "length", ...), or NULL while running. */
const char *serve_finish_name(serve_finish finish);

enum { SERVE_MAX_STOPS = 8, SERVE_MAX_CHOICES = 16 };

/* What a request asks for. serve_submit copies all of it. */
typedef struct serve_request_spec {
    const int32_t *prompt; /* tokens, BOS included */
    size_t prompt_count;
    int32_t choices;       /* n: independent continuations of the prompt (1..SERVE_MAX_CHOICES) */
    int32_t max_tokens;    /* per choice; 0: up to the context */
    strata_sampler_options sampling; /* choice i samples with seed sampling.seed + i */
    const char *stops[SERVE_MAX_STOPS]; /* generation stops before any of these strings */
    int32_t stop_count;
    bool ignore_eos;       /* keep generating past end-of-generation tokens */
    strata_session_options session; /* KV policy, budget, parameters and cache namespace; the prefix cache is
                                       used unless a policy or precision compresses */
} serve_request_spec;

/* What a request produced since the last poll. */
typedef struct serve_choice_update {
    char *text;           /* new text (NUL-terminated, the caller frees it), or NULL when none */
    size_t text_length;
    serve_finish finish;  /* set once the choice has finished */
    bool finished_now;    /* the finish is reported for the first time */
} serve_choice_update;

typedef struct serve_usage {
    int64_t prompt_tokens;
    int64_t completion_tokens; /* over all choices */
    int64_t cached_tokens;     /* prompt tokens served from the prefix cache at admission */
} serve_usage;

typedef struct serve_poll_result {
    int32_t choices;
    serve_choice_update updates[SERVE_MAX_CHOICES];
    bool done;            /* every choice has finished */
    serve_usage usage;
    char error[STRATA_ERROR_MESSAGE_BYTES]; /* the first error of a choice that finished with one */
} serve_poll_result;

/* Counters and histograms the scheduler keeps for /metrics. */
enum { SERVE_HISTOGRAM_BUCKETS = 14 };
typedef struct serve_histogram {
    double bounds[SERVE_HISTOGRAM_BUCKETS]; /* upper bounds, seconds */
    uint64_t counts[SERVE_HISTOGRAM_BUCKETS + 1]; /* per bucket, the last one +Inf */
    double sum;
    uint64_t total;
} serve_histogram;

typedef struct serve_metrics {
    uint64_t requests_by_finish[SERVE_FINISH_ERROR + 1]; /* finished requests by their first choice's reason */
    uint64_t requests_rejected;   /* refused by serve_submit */
    uint64_t prompt_tokens;       /* of admitted requests */
    uint64_t cached_prompt_tokens;
    uint64_t generation_tokens;
    uint64_t preemptions;
    uint64_t steps;
    int64_t running;              /* sequences holding KV now */
    int64_t waiting;              /* requests and preempted sequences waiting */
    serve_histogram time_to_first_token;
    serve_histogram time_per_output_token; /* every gap between two tokens of a sequence */
    serve_histogram request_latency;
    strata_kv_stats kv;           /* the pool's figures after the engine thread's last step */
} serve_metrics;

/* Creates a scheduler over model and starts its engine thread; the model must outlive it. */
strata_status serve_scheduler_create(strata_model *model, const serve_scheduler_options *options,
                                     serve_scheduler **out, strata_error *err);
/* Stops the engine thread, ends every request still held (finish cancelled) and frees the scheduler; accepts NULL. */
void serve_scheduler_destroy(serve_scheduler *scheduler);
/* Returns the longest a request may be in tokens, prompt and output. */
int32_t serve_scheduler_context_length(const serve_scheduler *scheduler);

/* Validates and queues a request; *out holds a reference the caller gives
 * back with serve_request_release. Refuses (STRATA_E_INVALID_ARGUMENT, with
 * the reason) a prompt that with max_tokens exceeds the context, a prompt the
 * whole KV pool could not hold, and bad session options; refuses
 * (STRATA_E_UNSUPPORTED) while the scheduler drains. */
strata_status serve_submit(serve_scheduler *scheduler, const serve_request_spec *spec, serve_request **out,
                           strata_error *err);
/* Waits up to timeout_ms for new text or a finish, then moves what there is into result. */
void serve_request_poll(serve_request *request, int timeout_ms, serve_poll_result *result);
/* Asks the engine thread to stop the request and free its KV (within one step). */
void serve_request_cancel(serve_request *request);
/* Gives back the caller's reference (cancelling the request if it is still running); accepts NULL. */
void serve_request_release(serve_request *request);

/* Refuses new requests from now on; returns at once. */
void serve_scheduler_start_draining(serve_scheduler *scheduler);
/* Waits up to timeout_ms until no request is held; returns true when none is. */
bool serve_scheduler_wait_idle(serve_scheduler *scheduler, int timeout_ms);
/* Copies the counters, histograms and the pool's figures. */
void serve_scheduler_metrics(serve_scheduler *scheduler, serve_metrics *metrics);

#endif
