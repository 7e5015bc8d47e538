/* serve/http.h: the OpenAI-compatible HTTP server in front of the scheduler.
 *
 * libmicrohttpd with one thread per connection: a connection's thread reads
 * the request, turns the OpenAI JSON into a serve_request_spec (tokenizing the
 * prompt, or building it from chat messages), submits it, then waits on the
 * request and answers: one JSON body, or server-sent events as tokens come.
 * Between polls it looks at the client's socket; a client that went away has
 * its request cancelled, which frees its KV blocks within one step.
 *
 * Endpoints: POST /v1/completions, POST /v1/chat/completions, GET /v1/models,
 * GET /health (open even with an API key, so probes need no secret; 503 while
 * draining) and GET /metrics (Prometheus text format 0.0.4).
 *
 * Request fields: prompt (a string, an array of one string, or an array of
 * token ids) or messages (role and content; content a string or text parts),
 * max_tokens (chat also max_completion_tokens), temperature, top_p, top_k,
 * min_p, repetition_penalty, seed, n, stop, stream, stream_options.include_usage,
 * ignore_eos, and strata's kv_policy, kv_budget (tokens, or "25%"), kv_params
 * ("k=v,..." or an object of numbers) and cache_namespace (a string: prefixes
 * are shared only between requests naming the same one). Unknown fields are
 * ignored. Not supported, answered with 400: logprobs, top_logprobs, echo,
 * best_of above 1, suffix, tools and functions. */
#ifndef STRATA_SERVE_HTTP_H
#define STRATA_SERVE_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "serve/scheduler.h"
#include "strata.h"

typedef struct serve_http serve_http;

typedef struct serve_http_options {
    const char *host;        /* address or name to listen on (IPv4 or IPv6); NULL: "127.0.0.1" */
    int port;                /* TCP port; 0: any free port (serve_http_port tells which) */
    const char *api_key;     /* every endpoint but /health wants "Authorization: Bearer KEY"; NULL: open */
    size_t max_body_bytes;   /* larger request bodies get 413; 0: 4 MiB */
    unsigned max_connections; /* open connections at once (one thread each); 0: 256 */
    unsigned idle_timeout_s; /* a connection idle this long (not while its request runs) is closed; 0: 60 */
    const char *model_id;    /* the model's id in /v1/models and responses; NULL: the model's name */
} serve_http_options;

/* Starts serving model through scheduler on a new listening socket; both must outlive the server.
 * The options' strings are copied. */
strata_status serve_http_start(strata_model *model, serve_scheduler *scheduler, const serve_http_options *options,
                               serve_http **out, strata_error *err);
/* Returns the port the server listens on. */
int serve_http_port(const serve_http *http);
/* Answers 503 to new completions and to /health from now on, and tells the scheduler to drain. */
void serve_http_start_draining(serve_http *http);
/* Waits up to timeout_ms until no completion request is in flight (its response fully sent); true when none is. */
bool serve_http_wait_idle(serve_http *http, int timeout_ms);
/* Cancels what is still in flight, closes every connection and frees the server; accepts NULL. */
void serve_http_stop(serve_http *http);

#endif
