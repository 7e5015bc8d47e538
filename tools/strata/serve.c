/* tools/strata/serve.c: `strata serve`: the model behind an OpenAI-compatible
 * HTTP server.
 *
 * Opens the model, starts the scheduler's engine thread and the HTTP server,
 * prints one line saying where it listens, then sleeps in sigwait. SIGTERM or
 * SIGINT drains: new requests get 503 while the running ones finish (up to
 * --drain-timeout seconds) and their answers go out; then the server, the
 * scheduler and the model are closed and the process exits 0. A second signal
 * while draining stops at once (the unfinished requests get an error). Both
 * signals are blocked before any thread exists, so every thread inherits the
 * mask and only sigwait ever sees them. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "commands.h"
#include "options.h"
#include "serve/http.h"
#include "serve/scheduler.h"
#include "strata.h"

typedef struct serve_options {
    const char *model_path;
    const char *host;
    long long port;
    long long threads;
    uint64_t kv_memory;
    int kv_type;
    const char *api_key;
    long long max_batch_tokens;
    long long max_running;
    long long context;
    bool prefix_aware;
    uint64_t max_body;
    long long max_connections;
    long long drain_timeout_s;
    const char *model_id;
} serve_options;

static void print_help(FILE *stream)
{
    fprintf(stream,
            "usage: strata serve [-m MODEL] [options]\n\n"
            "An OpenAI-compatible HTTP server: POST /v1/completions, POST /v1/chat/completions,\n"
            "GET /v1/models, GET /health, GET /metrics (Prometheus). SIGTERM or Ctrl-C drains:\n"
            "running requests finish, new ones get 503; a second signal stops at once.\n\n"
            "  -m, --model FILE         GGUF model (default: the fetched Gemma 3 270M)\n"
            "      --host HOST          address or name to listen on, IPv4 or IPv6 (default 127.0.0.1)\n"
            "      --port N             TCP port; 0 picks a free one (default 8080)\n"
            "  -t, --threads N          compute threads (default: one per core)\n"
            "      --kv-mem SIZE        KV pool budget, e.g. 512M or 2G (default: from the model and machine)\n"
            "      --kv-type T          KV storage: f32 (default), f16 or bf16\n"
            "      --api-key KEY        require \"Authorization: Bearer KEY\" on every endpoint but /health\n"
            "                           (default: $STRATA_API_KEY if set, else no key)\n"
            "      --max-batch-tokens N tokens per scheduler step, decode and prefill together, 1..512 (default 256)\n"
            "      --max-running N      sequences holding KV at once (default 64)\n"
            "  -c, --ctx-size N         most tokens of one request, prompt and output\n"
            "                           (default: the model's, at most 8192; also --context)\n"
            "      --prefix-aware       admit first the oldest waiting request whose prompt starts like the last\n"
            "                           admitted one (its first 16 tokens, cached): not strictly oldest first\n"
            "      --max-body SIZE      largest request body; larger ones get 413 (default 4M)\n"
            "      --max-connections N  open connections at once, one thread each (default 256)\n"
            "      --drain-timeout S    seconds to wait for running requests on SIGTERM (default 60)\n"
            "      --model-id NAME      the model's id in /v1/models and answers (default: the file name\n"
            "                           without .gguf)\n\n"
            "Request fields beyond OpenAI's: top_k, min_p, repetition_penalty, ignore_eos, and the KV\n"
            "cache's kv_policy (e.g. \"snapkv+kivi4\"), kv_budget (tokens or \"25%%\"), kv_params\n"
            "(\"k=v,...\" or an object) and cache_namespace (prefixes are shared only within one).\n"
            "Not supported (400): logprobs, top_logprobs, echo, best_of > 1, suffix, tools, functions.\n"
            "\nKV policies: %s\nKV precisions: %s\n",
            strata_kv_policies(), strata_kv_precisions());
}

static int parse_options(int argc, char **argv, serve_options *o)
{
    *o = (serve_options){.host = "127.0.0.1", .port = 8080, .drain_timeout_s = 60};
    const char *key = getenv("STRATA_API_KEY");
    if (key != NULL && key[0] != '\0')
        o->api_key = key;
    for (int i = 1; i < argc; i++) {
        const char *flag = argv[i];
        const char *value = NULL;
#define VALUE() ((value = option_value("serve", argc, argv, &i)) != NULL)
        if (strcmp(flag, "-h") == 0 || strcmp(flag, "--help") == 0) {
            print_help(stdout);
            return 0;
        } else if (strcmp(flag, "-m") == 0 || strcmp(flag, "--model") == 0) {
            if (!VALUE()) return 2;
            o->model_path = value;
        } else if (strcmp(flag, "--host") == 0) {
            if (!VALUE()) return 2;
            o->host = value;
        } else if (strcmp(flag, "--port") == 0) {
            if (!VALUE() || !option_parse_integer("serve", flag, value, 0, 65535, &o->port)) return 2;
        } else if (strcmp(flag, "-t") == 0 || strcmp(flag, "--threads") == 0) {
            if (!VALUE() || !option_parse_integer("serve", flag, value, 1, 1024, &o->threads)) return 2;
        } else if (strcmp(flag, "--kv-mem") == 0) {
            if (!VALUE() || !option_parse_bytes("serve", flag, value, &o->kv_memory)) return 2;
        } else if (strcmp(flag, "--kv-type") == 0) {
            if (!VALUE() || !option_parse_kv_type("serve", value, &o->kv_type)) return 2;
        } else if (strcmp(flag, "--api-key") == 0) {
            if (!VALUE()) return 2;
            o->api_key = value[0] != '\0' ? value : NULL;
        } else if (strcmp(flag, "--max-batch-tokens") == 0) {
            if (!VALUE() || !option_parse_integer("serve", flag, value, 1, 512, &o->max_batch_tokens)) return 2;
        } else if (strcmp(flag, "--max-running") == 0) {
            if (!VALUE() || !option_parse_integer("serve", flag, value, 1, 1 << 16, &o->max_running)) return 2;
        } else if (strcmp(flag, "-c") == 0 || strcmp(flag, "--ctx-size") == 0 || strcmp(flag, "--context") == 0) {
            if (!VALUE() || !option_parse_integer("serve", flag, value, 1, 1 << 24, &o->context)) return 2;
        } else if (strcmp(flag, "--prefix-aware") == 0) {
            o->prefix_aware = true;
        } else if (strcmp(flag, "--max-body") == 0) {
            if (!VALUE() || !option_parse_bytes("serve", flag, value, &o->max_body)) return 2;
        } else if (strcmp(flag, "--max-connections") == 0) {
            if (!VALUE() || !option_parse_integer("serve", flag, value, 1, 1 << 16, &o->max_connections)) return 2;
        } else if (strcmp(flag, "--drain-timeout") == 0) {
            if (!VALUE() || !option_parse_integer("serve", flag, value, 0, 1 << 20, &o->drain_timeout_s)) return 2;
        } else if (strcmp(flag, "--model-id") == 0) {
            if (!VALUE()) return 2;
            o->model_id = value;
        } else {
            fprintf(stderr, "strata serve: unknown option '%s' (see --help)\n", flag);
            return 2;
        }
#undef VALUE
    }
    return -1; /* parsed; go on */
}

/* The model's id: its file name without the directory and the .gguf ending. */
static void model_id_from_path(const char *path, char *id, size_t capacity)
{
    const char *name = strrchr(path, '/');
    name = name != NULL ? name + 1 : path;
    size_t length = strlen(name);
    if (length > 5 && strcmp(name + length - 5, ".gguf") == 0)
        length -= 5;
    snprintf(id, capacity, "%.*s", (int)length, name);
}

static double now_seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* Waits for the running requests to finish and their answers to go out; a
 * second signal or the timeout cuts it short. Returns true when drained. */
static bool drain(serve_scheduler *scheduler, serve_http *http, const sigset_t *signals, long long timeout_s)
{
    double deadline = now_seconds() + (double)timeout_s;
    for (;;) {
        bool idle = serve_scheduler_wait_idle(scheduler, 0) && serve_http_wait_idle(http, 0);
        if (idle)
            return true;
        double left = deadline - now_seconds();
        if (left <= 0) {
            fprintf(stderr, "strata serve: requests still running after %lld s; stopping them\n", timeout_s);
            return false;
        }
        struct timespec wait = {.tv_sec = 0, .tv_nsec = 50 * 1000 * 1000};
        int got = sigtimedwait(signals, NULL, &wait);
        if (got > 0) {
            fprintf(stderr, "strata serve: second signal; stopping the running requests\n");
            return false;
        }
    }
}

int command_serve(int argc, char **argv)
{
    serve_options o;
    int parsed = parse_options(argc, argv, &o);
    if (parsed >= 0)
        return parsed;
    char default_model[1024], model_id[256];
    if (o.model_path == NULL)
        o.model_path = option_default_model(default_model, sizeof default_model);
    model_id_from_path(o.model_path, model_id, sizeof model_id);

    /* Before any thread starts: every thread inherits the mask, so the signals
     * wait for sigwait here instead of killing the process in some worker. */
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGINT);
    int masked = pthread_sigmask(SIG_BLOCK, &signals, NULL);
    if (masked != 0) {
        fprintf(stderr, "strata serve: cannot block SIGTERM and SIGINT: %s\n", strerror(masked));
        return 1;
    }
    signal(SIGPIPE, SIG_IGN); /* a client that hangs up is noticed by the write that fails */

    strata_error error = {0};
    strata_model *model = NULL;
    serve_scheduler *scheduler = NULL;
    serve_http *http = NULL;
    int exit_code = 1;
    strata_model_options model_options = {.threads = (int)o.threads, .kv_memory_bytes = o.kv_memory,
                                          .kv_type = (strata_kv_type)o.kv_type};
    serve_scheduler_options scheduler_options = {.max_batch_tokens = (int32_t)o.max_batch_tokens,
                                                 .max_running = (int32_t)o.max_running,
                                                 .context_length = (int32_t)o.context,
                                                 .prefix_aware = o.prefix_aware};
    serve_http_options http_options = {.host = o.host,
                                       .port = (int)o.port,
                                       .api_key = o.api_key,
                                       .max_body_bytes = (size_t)o.max_body,
                                       .max_connections = (unsigned)o.max_connections,
                                       .model_id = o.model_id != NULL ? o.model_id : model_id};
    double load_start = now_seconds();
    if (strata_model_open(o.model_path, &model_options, &model, &error) != STRATA_OK)
        goto fail;
    if (serve_scheduler_create(model, &scheduler_options, &scheduler, &error) != STRATA_OK)
        goto fail;
    if (serve_http_start(model, scheduler, &http_options, &http, &error) != STRATA_OK)
        goto fail;
    strata_kv_stats kv;
    strata_model_kv_stats(model, &kv);
    bool ipv6 = strchr(o.host, ':') != NULL;
    fprintf(stderr,
            "strata serve: listening on http://%s%s%s:%d (model %s, %s, %d threads, context %d, KV pool %.1f MiB, "
            "loaded in %.2f s)\n",
            ipv6 ? "[" : "", o.host, ipv6 ? "]" : "", serve_http_port(http), http_options.model_id,
            strata_model_architecture(model), strata_model_threads(model), serve_scheduler_context_length(scheduler),
            (double)kv.budget_bytes / (1024.0 * 1024.0), now_seconds() - load_start);
    fflush(stderr);

    int signal_number = 0;
    while (sigwait(&signals, &signal_number) != 0) {
    }
    fprintf(stderr, "strata serve: %s: draining (new requests get 503; a second signal stops at once)\n",
            strsignal(signal_number));
    fflush(stderr);
    serve_http_start_draining(http);
    bool drained = drain(scheduler, http, &signals, o.drain_timeout_s);
    serve_http_stop(http); /* cancels what still runs and closes every connection */
    http = NULL;
    serve_scheduler_destroy(scheduler);
    scheduler = NULL;
    fprintf(stderr, "strata serve: stopped%s\n", drained ? "" : " (some requests were cut short)");
    exit_code = drained ? 0 : 1;
    goto cleanup;
fail:
    fprintf(stderr, "strata serve: %s\n", error.message);
cleanup:
    serve_http_stop(http);
    serve_scheduler_destroy(scheduler);
    strata_model_close(model);
    return exit_code;
}
