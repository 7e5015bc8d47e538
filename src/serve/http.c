/* serve/http.c: the OpenAI-compatible HTTP layer over libmicrohttpd.
 *
 * One thread per connection. A request's life is one "exchange": the first
 * call of the access handler sees only the headers and settles what can be
 * settled there (route, method, API key, a declared body over the limit,
 * draining); the body arrives in pieces and is buffered up to max_body_bytes
 * (past that it is counted and thrown away, so the client can still read the
 * 413); the last call parses and validates the JSON, submits the request and
 * answers. A plain answer is built in the handler, which polls the request
 * until every choice has finished; a stream is a response whose reader blocks
 * in serve_request_poll and turns what comes into server-sent events, kept in
 * a small pending buffer because the reader is handed at most `max` bytes.
 *
 * Between polls (every 100 ms at most) the waiting thread looks at the
 * client's socket: end of stream, a hang-up or an error there cancels the
 * request, which frees its KV blocks within one scheduler step. While the
 * request runs the connection's idle timeout is off (a long prompt in a full
 * queue is not idleness); it comes back once the answer is complete.
 *
 * An exchange is reference-counted: the connection holds one reference until
 * libmicrohttpd reports the request completed, and a stream's response holds
 * another until libmicrohttpd frees it; the last one gives the scheduler's
 * request back (serve_request_release, exactly once). Token text is cut into
 * chunks at UTF-8 character boundaries; bytes that are not UTF-8 become U+FFFD. */
#include "serve/http.h"

#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <microhttpd.h>

#include "base/error.h"

enum {
    DEFAULT_MAX_BODY_BYTES = 4 << 20,
    DEFAULT_MAX_CONNECTIONS = 256,
    DEFAULT_IDLE_TIMEOUT_S = 60,
    POLL_INTERVAL_MS = 100,
    COMPLETIONS_DEFAULT_MAX_TOKENS = 16, /* OpenAI's default for /v1/completions */
};

struct serve_http {
    struct MHD_Daemon *daemon;
    strata_model *model;
    serve_scheduler *scheduler;
    char *api_key;      /* NULL: no key asked */
    char *model_id;
    size_t max_body_bytes;
    unsigned idle_timeout_s;
    int port;
    time_t started;
    atomic_bool draining;
    atomic_bool stopping;
    atomic_int in_flight; /* exchanges holding a scheduler request */
};

/* ---- a growing byte buffer ---------------------------------------------- */

typedef struct byte_buffer {
    char *data;
    size_t length, capacity;
    bool failed; /* an allocation failed; the buffer stopped growing */
} byte_buffer;

static bool buffer_append(byte_buffer *buffer, const char *bytes, size_t count)
{
    if (buffer->failed)
        return false;
    if (buffer->length + count + 1 > buffer->capacity) {
        size_t capacity = buffer->capacity > 0 ? buffer->capacity : 256;
        while (capacity < buffer->length + count + 1)
            capacity *= 2;
        char *grown = realloc(buffer->data, capacity);
        if (grown == NULL) {
            buffer->failed = true;
            return false;
        }
        buffer->data = grown;
        buffer->capacity = capacity;
    }
    if (count > 0)
        memcpy(buffer->data + buffer->length, bytes, count);
    buffer->length += count;
    buffer->data[buffer->length] = '\0';
    return true;
}

static void buffer_free(byte_buffer *buffer)
{
    free(buffer->data);
    *buffer = (byte_buffer){0};
}

/* ---- UTF-8 -------------------------------------------------------------- */

/* Returns the length of the valid UTF-8 sequence starting at text (at most
 * available bytes), 0 when the bytes there are not valid UTF-8, or -1 when
 * they are the valid start of a sequence cut off by the end of the text. */
static int utf8_sequence_length(const unsigned char *text, size_t available)
{
    unsigned char lead = text[0];
    int length;
    unsigned char low = 0x80, high = 0xBF; /* allowed range of the second byte */
    if (lead < 0x80)
        return 1;
    if (lead >= 0xC2 && lead <= 0xDF)
        length = 2;
    else if (lead >= 0xE0 && lead <= 0xEF) {
        length = 3;
        if (lead == 0xE0)
            low = 0xA0; /* no overlong forms */
        if (lead == 0xED)
            high = 0x9F; /* no surrogates */
    } else if (lead >= 0xF0 && lead <= 0xF4) {
        length = 4;
        if (lead == 0xF0)
            low = 0x90;
        if (lead == 0xF4)
            high = 0x8F; /* nothing past U+10FFFF */
    } else
        return 0;
    for (int i = 1; i < length; i++) {
        if ((size_t)i >= available)
            return -1;
        unsigned char byte = text[i];
        if (i == 1 ? (byte < low || byte > high) : (byte < 0x80 || byte > 0xBF))
            return 0;
    }
    return length;
}

/* Appends text to out with every byte that is not part of valid UTF-8
 * replaced by U+FFFD. When hold_tail is true, a valid but unfinished
 * sequence at the end is not appended; returns the number of bytes consumed. */
static size_t utf8_append_clean(byte_buffer *out, const char *text, size_t length, bool hold_tail)
{
    static const char replacement[] = "\xEF\xBF\xBD";
    const unsigned char *bytes = (const unsigned char *)text;
    size_t i = 0;
    while (i < length) {
        int sequence = utf8_sequence_length(bytes + i, length - i);
        if (sequence < 0 && hold_tail)
            break;
        if (sequence <= 0) {
            buffer_append(out, replacement, 3);
            i++;
            continue;
        }
        buffer_append(out, text + i, (size_t)sequence);
        i += (size_t)sequence;
    }
    return i;
}

/* ---- errors and plain responses ----------------------------------------- */

/* An answer other than a completion: status, OpenAI error type, the field at fault, and the sentence. */
typedef struct http_failure {
    unsigned status;
    const char *type;  /* "invalid_request_error", "authentication_error", "server_error", ... */
    const char *param; /* the request field at fault, or NULL */
    const char *code;  /* a machine-readable code, or NULL */
    const char *allow; /* a 405's Allow header */
    char message[STRATA_ERROR_MESSAGE_BYTES + 128];
} http_failure;

static bool fail_request(http_failure *failure, unsigned status, const char *type, const char *param,
                         const char *format, ...) STRATA_PRINTF(5, 6);

static bool fail_request(http_failure *failure, unsigned status, const char *type, const char *param,
                         const char *format, ...)
{
    failure->status = status;
    failure->type = type;
    failure->param = param;
    failure->code = NULL;
    failure->allow = NULL;
    va_list args;
    va_start(args, format);
    vsnprintf(failure->message, sizeof failure->message, format, args);
    va_end(args);
    return false;
}

/* The 400 of a request field: "temperature must be a number from 0 to 2, got "hot"". */
static bool fail_field(http_failure *failure, const char *param, const json_t *value, const char *must_be)
{
    char got[64] = "";
    if (value != NULL) {
        char *dumped = json_dumps(value, JSON_ENCODE_ANY | JSON_COMPACT);
        if (dumped != NULL) {
            size_t length = strlen(dumped);
            if (length > 40)
                snprintf(got, sizeof got, ", got %.37s...", dumped);
            else
                snprintf(got, sizeof got, ", got %s", dumped);
            free(dumped);
        }
    }
    return fail_request(failure, 400, "invalid_request_error", param, "%s must be %s%s", param, must_be, got);
}

static enum MHD_Result queue_body(struct MHD_Connection *connection, unsigned status, char *body, size_t length,
                                  const char *content_type, const char *extra_header, const char *extra_value)
{
    struct MHD_Response *response = MHD_create_response_from_buffer(length, body, MHD_RESPMEM_MUST_FREE);
    if (response == NULL) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    if (extra_header != NULL)
        MHD_add_response_header(response, extra_header, extra_value);
    enum MHD_Result result = MHD_queue_response(connection, status, response);
    MHD_destroy_response(response);
    return result;
}

/* Sends a JSON body (taking the reference). */
static enum MHD_Result queue_json(struct MHD_Connection *connection, unsigned status, json_t *json,
                                  const char *extra_header, const char *extra_value)
{
    char *text = json != NULL ? json_dumps(json, JSON_COMPACT) : NULL;
    json_decref(json);
    if (text == NULL)
        return MHD_NO;
    size_t length = strlen(text);
    /* A trailing newline makes curl output readable; JSON parsers ignore it. */
    char *with_newline = realloc(text, length + 2);
    if (with_newline == NULL) {
        free(text);
        return MHD_NO;
    }
    with_newline[length] = '\n';
    with_newline[length + 1] = '\0';
    return queue_body(connection, status, with_newline, length + 1, "application/json", extra_header, extra_value);
}

static json_t *error_json(const char *message, const char *type, const char *param, const char *code)
{
    json_t *error = json_object();
    json_object_set_new(error, "message", json_string(message));
    json_object_set_new(error, "type", json_string(type));
    json_object_set_new(error, "param", param != NULL ? json_string(param) : json_null());
    json_object_set_new(error, "code", code != NULL ? json_string(code) : json_null());
    json_t *root = json_object();
    json_object_set_new(root, "error", error);
    return root;
}

static enum MHD_Result queue_failure(struct MHD_Connection *connection, const http_failure *failure)
{
    const char *header = NULL, *value = NULL;
    if (failure->status == MHD_HTTP_UNAUTHORIZED) {
        header = MHD_HTTP_HEADER_WWW_AUTHENTICATE;
        value = "Bearer";
    } else if (failure->status == MHD_HTTP_METHOD_NOT_ALLOWED) {
        header = MHD_HTTP_HEADER_ALLOW;
        value = failure->allow;
    }
    return queue_json(connection, failure->status,
                      error_json(failure->message, failure->type, failure->param, failure->code), header, value);
}

/* ---- the exchange: one request on one connection ------------------------ */

typedef enum route {
    ROUTE_UNKNOWN,
    ROUTE_COMPLETIONS,
    ROUTE_CHAT,
    ROUTE_MODELS,
    ROUTE_HEALTH,
    ROUTE_METRICS,
} route;

/* One choice as it is being answered. */
typedef struct choice_state {
    byte_buffer text;     /* a plain answer: all its text, clean UTF-8 */
    char carry[4];        /* a stream: the start of a UTF-8 character whose end has not come yet */
    size_t carry_length;
    serve_finish finish;
} choice_state;

typedef struct exchange {
    serve_http *http;
    struct MHD_Connection *connection;
    atomic_int references;
    route route;
    bool settled;          /* early is the answer, decided from the headers */
    http_failure early;
    bool answered;         /* a response is queued */
    byte_buffer body;
    uint64_t body_bytes;   /* received, kept or not */
    bool body_too_large;

    serve_request *request; /* submitted; given back when the exchange is freed */
    bool chat, stream, include_usage;
    int32_t choices;
    char id[48];
    time_t created;
    choice_state choice[SERVE_MAX_CHOICES];
    serve_usage usage;

    byte_buffer pending;   /* a stream: event bytes not yet handed to libmicrohttpd */
    size_t pending_sent;
    bool stream_started;
    bool stream_ended;     /* [DONE] is in pending */
} exchange;

static void exchange_release(exchange *x)
{
    if (atomic_fetch_sub(&x->references, 1) != 1)
        return;
    if (x->request != NULL) {
        serve_request_release(x->request);
        atomic_fetch_sub(&x->http->in_flight, 1);
    }
    buffer_free(&x->body);
    buffer_free(&x->pending);
    for (int i = 0; i < SERVE_MAX_CHOICES; i++)
        buffer_free(&x->choice[i].text);
    free(x);
}

/* Turns the connection's idle timeout off while a request runs, and back on after. */
static void exchange_set_timeout(exchange *x, bool running)
{
    MHD_set_connection_option(x->connection, MHD_CONNECTION_OPTION_TIMEOUT,
                              running ? 0u : x->http->idle_timeout_s);
}

/* True when the client closed its end, reset the connection or the socket failed. */
static bool client_gone(const exchange *x)
{
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(x->connection, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (info == NULL)
        return false;
    struct pollfd watch = {.fd = info->connect_fd, .events = POLLIN | POLLRDHUP};
    if (poll(&watch, 1, 0) <= 0)
        return false;
    if ((watch.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0)
        return true;
    if ((watch.revents & POLLIN) != 0) {
        char byte;
        ssize_t got = recv(info->connect_fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
        return got == 0 || (got < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
    }
    return false;
}

typedef enum wait_end {
    WAIT_GOES_ON,
    WAIT_CLIENT_GONE,   /* nobody to answer */
    WAIT_SERVER_STOPS,  /* answer with an error while the connection is still there */
} wait_end;

/* Whether waiting must end: the client left or the server is stopping; cancels the request then. */
static wait_end exchange_abandoned(exchange *x)
{
    wait_end end = client_gone(x)                       ? WAIT_CLIENT_GONE
                   : atomic_load(&x->http->stopping) ? WAIT_SERVER_STOPS
                                                       : WAIT_GOES_ON;
    if (end != WAIT_GOES_ON)
        serve_request_cancel(x->request);
    return end;
}

/* ---- reading the request ------------------------------------------------ */

/* A field's value, or NULL when it is absent or null (both mean "the default"). */
static json_t *field(const json_t *root, const char *name)
{
    json_t *value = json_object_get(root, name);
    return json_is_null(value) ? NULL : value;
}

static bool read_number(const json_t *root, const char *name, double minimum, double maximum, bool minimum_open,
                        const char *must_be, float *out, http_failure *failure)
{
    json_t *value = field(root, name);
    if (value == NULL)
        return true;
    double number = json_number_value(value);
    if (!json_is_number(value) || !isfinite(number) || number < minimum || number > maximum ||
        (minimum_open && number <= minimum))
        return fail_field(failure, name, value, must_be);
    *out = (float)number;
    return true;
}

static bool read_integer(const json_t *root, const char *name, long long minimum, long long maximum,
                         const char *must_be, long long *out, bool *given, http_failure *failure)
{
    json_t *value = field(root, name);
    if (value == NULL)
        return true;
    if (!json_is_integer(value) || json_integer_value(value) < minimum || json_integer_value(value) > maximum)
        return fail_field(failure, name, value, must_be);
    *out = json_integer_value(value);
    if (given != NULL)
        *given = true;
    return true;
}

static bool read_bool(const json_t *root, const char *name, bool *out, http_failure *failure)
{
    json_t *value = field(root, name);
    if (value == NULL)
        return true;
    if (!json_is_boolean(value))
        return fail_field(failure, name, value, "true or false");
    *out = json_is_true(value);
    return true;
}

static bool read_string(const json_t *root, const char *name, const char **out, http_failure *failure)
{
    json_t *value = field(root, name);
    if (value == NULL)
        return true;
    if (!json_is_string(value))
        return fail_field(failure, name, value, "a string");
    *out = json_string_value(value);
    return true;
}

/* Fields of the OpenAI API that strata does not implement: present with a
 * value that asks for something, they are refused rather than ignored. */
static bool refuse_unsupported(const json_t *root, http_failure *failure)
{
    static const char *const flags[] = {"logprobs", "echo"};
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++) {
        json_t *value = field(root, flags[i]);
        if (value != NULL && !json_is_false(value))
            return fail_request(failure, 400, "invalid_request_error", flags[i], "%s is not supported by strata serve",
                                flags[i]);
    }
    json_t *value = field(root, "top_logprobs");
    if (value != NULL && !(json_is_integer(value) && json_integer_value(value) == 0))
        return fail_request(failure, 400, "invalid_request_error", "top_logprobs",
                            "top_logprobs is not supported by strata serve");
    value = field(root, "best_of");
    if (value != NULL) {
        if (!json_is_integer(value) || json_integer_value(value) < 1)
            return fail_field(failure, "best_of", value, "a whole number of at least 1");
        if (json_integer_value(value) > 1)
            return fail_request(failure, 400, "invalid_request_error", "best_of",
                                "best_of above 1 is not supported by strata serve");
    }
    value = field(root, "suffix");
    if (value != NULL && !(json_is_string(value) && json_string_length(value) == 0))
        return fail_request(failure, 400, "invalid_request_error", "suffix", "suffix is not supported by strata serve");
    static const char *const lists[] = {"tools", "functions"};
    for (size_t i = 0; i < sizeof lists / sizeof lists[0]; i++) {
        value = field(root, lists[i]);
        if (value != NULL && !(json_is_array(value) && json_array_size(value) == 0))
            return fail_request(failure, 400, "invalid_request_error", lists[i],
                                "%s (tool and function calling) is not supported by strata serve", lists[i]);
    }
    return true;
}

/* What a request body turned into; strings in spec point into root or into this struct. */
typedef struct parsed_request {
    json_t *root;
    int32_t *prompt;
    size_t prompt_count;
    serve_request_spec spec;
    bool stream, include_usage;
    char kv_params[1024];
} parsed_request;

static void parsed_request_free(parsed_request *request)
{
    json_decref(request->root);
    free(request->prompt);
}

static bool tokenize_text(serve_http *http, const char *text, size_t length, const char *param,
                          parsed_request *request, http_failure *failure)
{
    strata_error error = {0};
    if (strata_tokenize(http->model, text, length, true, true, &request->prompt, &request->prompt_count, &error) !=
        STRATA_OK)
        return fail_request(failure, 400, "invalid_request_error", param, "%s cannot be tokenized: %s", param,
                            error.message);
    return true;
}

static bool read_token_ids(serve_http *http, const json_t *array, parsed_request *request, http_failure *failure)
{
    int32_t vocab = strata_model_vocab_size(http->model);
    size_t count = json_array_size(array);
    request->prompt = malloc((count > 0 ? count : 1) * sizeof *request->prompt);
    if (request->prompt == NULL)
        return fail_request(failure, 500, "server_error", NULL, "cannot allocate %zu prompt tokens", count);
    for (size_t i = 0; i < count; i++) {
        json_t *token = json_array_get(array, i);
        if (!json_is_integer(token) || json_integer_value(token) < 0 || json_integer_value(token) >= vocab) {
            char must_be[96];
            snprintf(must_be, sizeof must_be, "token ids from 0 to %d (prompt[%zu] is not)", (int)vocab - 1, i);
            return fail_field(failure, "prompt", token, must_be);
        }
        request->prompt[i] = (int32_t)json_integer_value(token);
    }
    request->prompt_count = count;
    return true;
}

static bool all_of_type(const json_t *array, json_type type)
{
    size_t index;
    json_t *item;
    json_array_foreach(array, index, item) if (json_typeof(item) != type) return false;
    return true;
}

/* /v1/completions: prompt is a string, an array of one string, or token ids (flat, or one array of them). */
static bool read_prompt(serve_http *http, parsed_request *request, http_failure *failure)
{
    static const char *const must_be = "a string, an array of one string, or an array of token ids";
    json_t *prompt = field(request->root, "prompt");
    if (prompt == NULL)
        return fail_request(failure, 400, "invalid_request_error", "prompt", "prompt is required");
    if (json_is_string(prompt))
        return tokenize_text(http, json_string_value(prompt), json_string_length(prompt), "prompt", request, failure);
    if (!json_is_array(prompt))
        return fail_field(failure, "prompt", prompt, must_be);
    size_t count = json_array_size(prompt);
    if (count == 0)
        return fail_request(failure, 400, "invalid_request_error", "prompt", "prompt must not be empty");
    json_t *first = json_array_get(prompt, 0);
    if (json_is_string(first) || json_is_array(first)) {
        if (!all_of_type(prompt, json_typeof(first)))
            return fail_field(failure, "prompt", prompt, must_be);
        if (count > 1)
            return fail_request(failure, 400, "invalid_request_error", "prompt",
                                "prompt holds %zu prompts; strata serve takes one prompt per request", count);
        if (json_is_string(first))
            return tokenize_text(http, json_string_value(first), json_string_length(first), "prompt", request, failure);
        if (json_array_size(first) == 0)
            return fail_request(failure, 400, "invalid_request_error", "prompt", "prompt must not be empty");
        return read_token_ids(http, first, request, failure);
    }
    if (json_is_integer(first))
        return read_token_ids(http, prompt, request, failure);
    return fail_field(failure, "prompt", prompt, must_be);
}

/* /v1/chat/completions: messages in the model's chat format, then tokenized. */
static bool read_messages(serve_http *http, parsed_request *request, http_failure *failure)
{
    json_t *messages = field(request->root, "messages");
    if (messages == NULL)
        return fail_request(failure, 400, "invalid_request_error", "messages", "messages is required");
    if (!json_is_array(messages) || json_array_size(messages) == 0)
        return fail_field(failure, "messages", messages, "a non-empty array of {\"role\", \"content\"} objects");
    size_t count = json_array_size(messages);
    strata_chat_message *turns = calloc(count, sizeof *turns);
    byte_buffer *joined = calloc(count, sizeof *joined); /* content given as an array of parts */
    bool ok = turns != NULL && joined != NULL;
    if (!ok)
        fail_request(failure, 500, "server_error", NULL, "cannot allocate %zu messages", count);
    for (size_t i = 0; ok && i < count; i++) {
        json_t *message = json_array_get(messages, i);
        json_t *role = json_object_get(message, "role");
        json_t *content = json_object_get(message, "content");
        char param[64];
        snprintf(param, sizeof param, "messages[%zu]", i);
        if (!json_is_object(message)) {
            ok = fail_request(failure, 400, "invalid_request_error", "messages",
                              "%s must be an object with a role and a content", param);
        } else if (!json_is_string(role)) {
            ok = fail_request(failure, 400, "invalid_request_error", "messages", "%s.role must be a string", param);
        } else if (json_is_string(content)) {
            turns[i] = (strata_chat_message){json_string_value(role), json_string_value(content)};
        } else if (content == NULL || json_is_null(content)) {
            turns[i] = (strata_chat_message){json_string_value(role), ""};
        } else if (json_is_array(content)) {
            buffer_append(&joined[i], "", 0);
            size_t index;
            json_t *part;
            json_array_foreach(content, index, part) {
                json_t *type = json_object_get(part, "type"), *text = json_object_get(part, "text");
                if (!json_is_string(type) || strcmp(json_string_value(type), "text") != 0) {
                    ok = fail_request(failure, 400, "invalid_request_error", "messages",
                                      "%s.content[%zu] has type %s%s%s; only text parts are supported", param, index,
                                      json_is_string(type) ? "'" : "",
                                      json_is_string(type) ? json_string_value(type) : "(none)",
                                      json_is_string(type) ? "'" : "");
                    break;
                }
                if (!json_is_string(text)) {
                    ok = fail_request(failure, 400, "invalid_request_error", "messages",
                                      "%s.content[%zu].text must be a string", param, index);
                    break;
                }
                buffer_append(&joined[i], json_string_value(text), json_string_length(text));
            }
            if (ok && joined[i].failed)
                ok = fail_request(failure, 500, "server_error", NULL, "cannot allocate the text of %s", param);
            turns[i] = (strata_chat_message){json_string_value(role), joined[i].data};
        } else {
            ok = fail_request(failure, 400, "invalid_request_error", "messages",
                              "%s.content must be a string or an array of text parts", param);
        }
    }
    char *prompt = NULL;
    strata_error error = {0};
    if (ok && strata_chat_prompt_messages(http->model, turns, count, &prompt, &error) != STRATA_OK)
        ok = fail_request(failure, 400, "invalid_request_error", "messages", "%s", error.message);
    if (ok)
        ok = tokenize_text(http, prompt, strlen(prompt), "messages", request, failure);
    free(prompt);
    for (size_t i = 0; joined != NULL && i < count; i++)
        buffer_free(&joined[i]);
    free(joined);
    free(turns);
    return ok;
}

static bool read_stops(parsed_request *request, http_failure *failure)
{
    json_t *stop = field(request->root, "stop");
    char must_be[80];
    snprintf(must_be, sizeof must_be, "a string or an array of at most %d strings", SERVE_MAX_STOPS);
    if (stop == NULL)
        return true;
    if (json_is_string(stop)) {
        if (json_string_length(stop) > 0)
            request->spec.stops[request->spec.stop_count++] = json_string_value(stop);
        return true;
    }
    if (!json_is_array(stop) || json_array_size(stop) > SERVE_MAX_STOPS || !all_of_type(stop, JSON_STRING))
        return fail_field(failure, "stop", stop, must_be);
    size_t index;
    json_t *item;
    json_array_foreach(stop, index, item) if (json_string_length(item) > 0)
        request->spec.stops[request->spec.stop_count++] = json_string_value(item);
    return true;
}

static uint64_t random_u64(void)
{
    uint64_t value = 0;
    if (getrandom(&value, sizeof value, 0) != (ssize_t)sizeof value) {
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        value = (uint64_t)now.tv_nsec * 0x9E3779B97F4A7C15ull ^ (uint64_t)now.tv_sec;
    }
    return value;
}

/* FNV-1a: a stable 64-bit name for a cache namespace string. */
static uint64_t namespace_hash(const char *text, size_t length)
{
    uint64_t hash = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < length; i++) {
        hash ^= (unsigned char)text[i];
        hash *= 0x100000001b3ull;
    }
    return hash;
}

/* strata's fields: kv_policy, kv_budget, kv_params, cache_namespace. */
static bool read_kv_fields(parsed_request *request, http_failure *failure)
{
    strata_session_options *session = &request->spec.session;
    if (!read_string(request->root, "kv_policy", &session->kv_policy, failure))
        return false;
    json_t *budget = field(request->root, "kv_budget");
    static const char *const budget_must_be = "a whole number of tokens (at least 1) or a percentage such as \"25%\"";
    if (json_is_integer(budget)) {
        if (json_integer_value(budget) < 1)
            return fail_field(failure, "kv_budget", budget, budget_must_be);
        session->kv_budget_tokens = json_integer_value(budget);
    } else if (json_is_string(budget)) {
        const char *text = json_string_value(budget);
        char *end = NULL;
        errno = 0;
        double percent = strtod(text, &end);
        if (end == text || errno != 0 || strcmp(end, "%") != 0 || !(percent > 0) || percent > 100)
            return fail_field(failure, "kv_budget", budget, budget_must_be);
        session->kv_budget_ratio = (float)(percent / 100.0);
    } else if (budget != NULL) {
        return fail_field(failure, "kv_budget", budget, budget_must_be);
    }
    json_t *params = field(request->root, "kv_params");
    static const char *const params_must_be = "a string \"name=value,...\" or an object of numbers";
    if (json_is_string(params)) {
        if (json_string_length(params) >= sizeof request->kv_params)
            return fail_field(failure, "kv_params", NULL, "shorter than 1024 bytes");
        snprintf(request->kv_params, sizeof request->kv_params, "%s", json_string_value(params));
    } else if (json_is_object(params)) {
        size_t used = 0;
        const char *name;
        json_t *value;
        json_object_foreach(params, name, value) {
            if (!json_is_number(value) || !isfinite(json_number_value(value)) || name[0] == '\0' ||
                strpbrk(name, ",=") != NULL)
                return fail_field(failure, "kv_params", params, params_must_be);
            int wrote = snprintf(request->kv_params + used, sizeof request->kv_params - used, "%s%s=%.9g",
                                 used > 0 ? "," : "", name, json_number_value(value));
            if (wrote < 0 || (size_t)wrote >= sizeof request->kv_params - used)
                return fail_field(failure, "kv_params", NULL, "shorter than 1024 bytes once written as name=value,...");
            used += (size_t)wrote;
        }
    } else if (params != NULL) {
        return fail_field(failure, "kv_params", params, params_must_be);
    }
    if (request->kv_params[0] != '\0')
        session->kv_policy_params = request->kv_params;
    json_t *space = field(request->root, "cache_namespace");
    if (space != NULL && !json_is_string(space))
        return fail_field(failure, "cache_namespace", space, "a string");
    if (space != NULL)
        session->cache_namespace = namespace_hash(json_string_value(space), json_string_length(space));
    return true;
}

/* Parses and validates a completion body into request (which the caller frees with parsed_request_free). */
static bool parse_request(serve_http *http, const exchange *x, parsed_request *request, http_failure *failure)
{
    *request = (parsed_request){0};
    json_error_t error;
    request->root = json_loadb(x->body.data != NULL ? x->body.data : "", x->body.length, 0, &error);
    if (request->root == NULL)
        return fail_request(failure, 400, "invalid_request_error", NULL,
                            "the request body is not valid JSON: %s (line %d, column %d)", error.text, error.line,
                            error.column);
    if (!json_is_object(request->root))
        return fail_request(failure, 400, "invalid_request_error", NULL, "the request body must be a JSON object");
    const json_t *root = request->root;
    const char *model_name = NULL;
    if (!read_string(root, "model", &model_name, failure) || !refuse_unsupported(root, failure))
        return false;

    serve_request_spec *spec = &request->spec;
    spec->sampling = strata_sampler_defaults();
    spec->sampling.temperature = 1.0f; /* OpenAI's default */
    long long max_tokens = x->chat ? 0 : COMPLETIONS_DEFAULT_MAX_TOKENS, top_k = 0, choices = 1, seed = 0;
    bool seed_given = false;
    static const char *const max_tokens_must_be = "a whole number of at least 1";
    if (x->chat && field(root, "max_completion_tokens") != NULL) {
        if (!read_integer(root, "max_completion_tokens", 1, INT32_MAX, max_tokens_must_be, &max_tokens, NULL, failure))
            return false;
    } else if (!read_integer(root, "max_tokens", 1, INT32_MAX, max_tokens_must_be, &max_tokens, NULL, failure)) {
        return false;
    }
    char choices_must_be[64];
    snprintf(choices_must_be, sizeof choices_must_be, "a whole number from 1 to %d", SERVE_MAX_CHOICES);
    if (!read_number(root, "temperature", 0, 2, false, "a number from 0 to 2", &spec->sampling.temperature, failure) ||
        !read_number(root, "top_p", 0, 1, true, "a number above 0 and at most 1", &spec->sampling.top_p, failure) ||
        !read_number(root, "min_p", 0, 1, false, "a number from 0 to 1", &spec->sampling.min_p, failure) ||
        !read_number(root, "repetition_penalty", 0, 1e6, true, "a number above 0",
                     &spec->sampling.repetition_penalty, failure) ||
        !read_integer(root, "top_k", -1, INT32_MAX, "a whole number, 0 or -1 for no limit", &top_k, NULL, failure) ||
        !read_integer(root, "n", 1, SERVE_MAX_CHOICES, choices_must_be, &choices, NULL, failure) ||
        !read_integer(root, "seed", INT64_MIN, INT64_MAX, "a whole number", &seed, &seed_given, failure) ||
        !read_bool(root, "stream", &request->stream, failure) ||
        !read_bool(root, "ignore_eos", &spec->ignore_eos, failure) ||
        !read_stops(request, failure) || !read_kv_fields(request, failure))
        return false;
    json_t *stream_options = field(root, "stream_options");
    if (stream_options != NULL) {
        if (!json_is_object(stream_options))
            return fail_field(failure, "stream_options", stream_options, "an object");
        if (!read_bool(stream_options, "include_usage", &request->include_usage, failure)) {
            failure->param = "stream_options";
            return false;
        }
    }
    spec->sampling.top_k = top_k < 0 ? 0 : (int32_t)top_k;
    spec->sampling.seed = seed_given ? (uint64_t)seed : random_u64();
    spec->max_tokens = (int32_t)max_tokens;
    spec->choices = (int32_t)choices;
    if (!(x->chat ? read_messages(http, request, failure) : read_prompt(http, request, failure)))
        return false;
    if (request->prompt_count == 0)
        return fail_request(failure, 400, "invalid_request_error", x->chat ? "messages" : "prompt",
                            "the prompt is empty");
    spec->prompt = request->prompt;
    spec->prompt_count = request->prompt_count;
    return true;
}

/* ---- answers ------------------------------------------------------------ */

static json_t *usage_json(const serve_usage *usage)
{
    json_t *details = json_object();
    json_object_set_new(details, "cached_tokens", json_integer(usage->cached_tokens));
    json_t *object = json_object();
    json_object_set_new(object, "prompt_tokens", json_integer(usage->prompt_tokens));
    json_object_set_new(object, "completion_tokens", json_integer(usage->completion_tokens));
    json_object_set_new(object, "total_tokens", json_integer(usage->prompt_tokens + usage->completion_tokens));
    json_object_set_new(object, "prompt_tokens_details", details);
    return object;
}

/* The fields every completion body and chunk opens with. */
static json_t *answer_head(const exchange *x, const char *object)
{
    json_t *root = json_object();
    json_object_set_new(root, "id", json_string(x->id));
    json_object_set_new(root, "object", json_string(object));
    json_object_set_new(root, "created", json_integer((json_int_t)x->created));
    json_object_set_new(root, "model", json_string(x->http->model_id));
    return root;
}

static json_t *finish_json(serve_finish finish)
{
    const char *name = serve_finish_name(finish);
    return name != NULL ? json_string(name) : json_null();
}

/* The whole answer once every choice has finished. */
static json_t *completion_json(const exchange *x)
{
    json_t *root = answer_head(x, x->chat ? "chat.completion" : "text_completion");
    json_t *choices = json_array();
    for (int32_t i = 0; i < x->choices; i++) {
        const choice_state *c = &x->choice[i];
        json_t *text = json_stringn(c->text.data != NULL ? c->text.data : "", c->text.length);
        json_t *choice = json_object();
        json_object_set_new(choice, "index", json_integer(i));
        if (x->chat) {
            json_t *message = json_object();
            json_object_set_new(message, "role", json_string("assistant"));
            json_object_set_new(message, "content", text);
            json_object_set_new(choice, "message", message);
        } else {
            json_object_set_new(choice, "text", text);
        }
        json_object_set_new(choice, "logprobs", json_null());
        json_object_set_new(choice, "finish_reason", finish_json(c->finish));
        json_array_append_new(choices, choice);
    }
    json_object_set_new(root, "choices", choices);
    json_object_set_new(root, "usage", usage_json(&x->usage));
    return root;
}

/* Moves one poll's text into the choices (holding back unfinished UTF-8 in a
 * stream's carry) and notes their finishes; frees the update texts. */
static void take_update(exchange *x, serve_poll_result *result, byte_buffer *fresh)
{
    for (int32_t i = 0; i < result->choices && i < x->choices; i++) {
        serve_choice_update *update = &result->updates[i];
        choice_state *c = &x->choice[i];
        byte_buffer *out = x->stream ? &fresh[i] : &c->text;
        if (update->text != NULL && update->text_length > 0) {
            byte_buffer joined = {0};
            buffer_append(&joined, c->carry, c->carry_length);
            buffer_append(&joined, update->text, update->text_length);
            size_t used = utf8_append_clean(out, joined.data, joined.length, !update->finished_now);
            c->carry_length = joined.length - used; /* at most 3 bytes */
            memcpy(c->carry, joined.data + used, c->carry_length);
            buffer_free(&joined);
        }
        if (update->finished_now) {
            if (c->carry_length > 0)
                utf8_append_clean(out, c->carry, c->carry_length, false);
            c->carry_length = 0;
            c->finish = update->finish;
        }
        free(update->text);
        update->text = NULL;
    }
    x->usage = result->usage;
}

/* Waits for every choice of a plain (not streamed) answer, then queues it. */
static enum MHD_Result answer_plain(exchange *x)
{
    char error[STRATA_ERROR_MESSAGE_BYTES] = "";
    bool done = false;
    while (!done) {
        wait_end end = exchange_abandoned(x);
        if (end == WAIT_CLIENT_GONE)
            return MHD_NO; /* closes the connection */
        if (end == WAIT_SERVER_STOPS) {
            http_failure failure;
            fail_request(&failure, 503, "server_error", NULL, "the request was cancelled: the server is stopping");
            return queue_failure(x->connection, &failure);
        }
        serve_poll_result result;
        serve_request_poll(x->request, POLL_INTERVAL_MS, &result);
        take_update(x, &result, NULL);
        if (error[0] == '\0' && result.error[0] != '\0')
            snprintf(error, sizeof error, "%s", result.error);
        done = result.done;
    }
    exchange_set_timeout(x, false);
    http_failure failure = {0};
    for (int32_t i = 0; i < x->choices; i++) {
        if (x->choice[i].finish == SERVE_FINISH_ERROR) {
            fail_request(&failure, 500, "server_error", NULL, "%s", error[0] != '\0' ? error : "generation failed");
            return queue_failure(x->connection, &failure);
        }
        if (x->choice[i].finish == SERVE_FINISH_CANCELLED) {
            fail_request(&failure, 503, "server_error", NULL, "the request was cancelled: the server is stopping");
            return queue_failure(x->connection, &failure);
        }
        if (x->choice[i].text.failed) {
            fail_request(&failure, 500, "server_error", NULL, "cannot allocate the generated text");
            return queue_failure(x->connection, &failure);
        }
    }
    return queue_json(x->connection, MHD_HTTP_OK, completion_json(x), NULL, NULL);
}

/* Appends one server-sent event holding json (taking the reference). */
static void stream_event(exchange *x, json_t *json)
{
    char *text = json != NULL ? json_dumps(json, JSON_COMPACT) : NULL;
    json_decref(json);
    if (text == NULL) {
        x->pending.failed = true;
        return;
    }
    buffer_append(&x->pending, "data: ", 6);
    buffer_append(&x->pending, text, strlen(text));
    buffer_append(&x->pending, "\n\n", 2);
    free(text);
}

/* One chunk for one choice: text (a completion) or a delta (chat), and the finish when there is one. */
static void stream_chunk(exchange *x, int32_t index, json_t *delta_or_text, serve_finish finish)
{
    json_t *root = answer_head(x, x->chat ? "chat.completion.chunk" : "text_completion");
    json_t *choice = json_object();
    json_object_set_new(choice, "index", json_integer(index));
    json_object_set_new(choice, x->chat ? "delta" : "text", delta_or_text);
    json_object_set_new(choice, "logprobs", json_null());
    json_object_set_new(choice, "finish_reason", finish_json(finish));
    json_t *choices = json_array();
    json_array_append_new(choices, choice);
    json_object_set_new(root, "choices", choices);
    if (x->include_usage)
        json_object_set_new(root, "usage", json_null()); /* as OpenAI: only the last chunk carries usage */
    stream_event(x, root);
}

static void stream_end(exchange *x, const char *error)
{
    if (error != NULL) {
        json_t *body = json_object();
        json_t *object = json_object();
        json_object_set_new(object, "message", json_string(error));
        json_object_set_new(object, "type", json_string("server_error"));
        json_object_set_new(object, "param", json_null());
        json_object_set_new(object, "code", json_null());
        json_object_set_new(body, "error", object);
        stream_event(x, body);
    } else if (x->include_usage) {
        json_t *root = answer_head(x, x->chat ? "chat.completion.chunk" : "text_completion");
        json_object_set_new(root, "choices", json_array());
        json_object_set_new(root, "usage", usage_json(&x->usage));
        stream_event(x, root);
    }
    buffer_append(&x->pending, "data: [DONE]\n\n", 14);
    x->stream_ended = true;
    exchange_set_timeout(x, false);
}

/* Waits for the next poll of a stream and turns it into events in x->pending. */
static void stream_produce(exchange *x)
{
    if (!x->stream_started) {
        x->stream_started = true;
        if (x->chat) /* OpenAI opens each chat choice with its role */
            for (int32_t i = 0; i < x->choices; i++) {
                json_t *delta = json_object();
                json_object_set_new(delta, "role", json_string("assistant"));
                json_object_set_new(delta, "content", json_string(""));
                stream_chunk(x, i, delta, SERVE_FINISH_NONE);
            }
        if (x->pending.length > 0)
            return;
    }
    serve_poll_result result;
    serve_request_poll(x->request, POLL_INTERVAL_MS, &result);
    byte_buffer fresh[SERVE_MAX_CHOICES] = {{0}};
    take_update(x, &result, fresh);
    const char *failed = NULL;
    for (int32_t i = 0; i < x->choices && i < result.choices; i++) {
        const serve_choice_update *update = &result.updates[i];
        bool has_text = fresh[i].length > 0;
        serve_finish finish = update->finished_now ? update->finish : SERVE_FINISH_NONE;
        if (finish == SERVE_FINISH_ERROR || finish == SERVE_FINISH_CANCELLED || fresh[i].failed) {
            failed = finish == SERVE_FINISH_CANCELLED ? "the request was cancelled: the server is stopping"
                     : result.error[0] != '\0'       ? result.error
                                                     : "generation failed";
            continue;
        }
        if (x->chat) {
            if (has_text) {
                json_t *delta = json_object();
                json_object_set_new(delta, "content", json_stringn(fresh[i].data, fresh[i].length));
                stream_chunk(x, i, delta, SERVE_FINISH_NONE);
            }
            if (finish != SERVE_FINISH_NONE)
                stream_chunk(x, i, json_object(), finish);
        } else if (has_text || finish != SERVE_FINISH_NONE) {
            stream_chunk(x, i, json_stringn(fresh[i].data != NULL ? fresh[i].data : "", fresh[i].length), finish);
        }
    }
    for (int i = 0; i < SERVE_MAX_CHOICES; i++)
        buffer_free(&fresh[i]);
    if (failed != NULL) {
        char message[STRATA_ERROR_MESSAGE_BYTES];
        snprintf(message, sizeof message, "%s", failed);
        serve_request_cancel(x->request); /* the other choices end here too */
        stream_end(x, message);
    } else if (x->pending.failed) {
        serve_request_cancel(x->request);
        x->pending = (byte_buffer){.data = x->pending.data, .capacity = x->pending.capacity};
        x->pending_sent = 0;
        stream_end(x, "cannot allocate the stream's next event");
    } else if (result.done) {
        stream_end(x, NULL);
    }
}

/* libmicrohttpd's reader of a stream: hands out pending bytes, waiting for more when there are none. */
static ssize_t stream_read(void *cls, uint64_t position, char *out, size_t max)
{
    exchange *x = cls;
    for (;;) {
        if (x->pending_sent < x->pending.length) {
            size_t count = x->pending.length - x->pending_sent;
            if (count > max)
                count = max;
            memcpy(out, x->pending.data + x->pending_sent, count);
            x->pending_sent += count;
            return (ssize_t)count;
        }
        x->pending.length = 0;
        x->pending_sent = 0;
        if (x->stream_ended)
            return MHD_CONTENT_READER_END_OF_STREAM;
        wait_end end = exchange_abandoned(x);
        if (end == WAIT_CLIENT_GONE)
            return MHD_CONTENT_READER_END_WITH_ERROR;
        if (end == WAIT_SERVER_STOPS)
            stream_end(x, "the request was cancelled: the server is stopping");
        else
            stream_produce(x);
        if (x->pending.failed)
            return MHD_CONTENT_READER_END_WITH_ERROR;
    }
}

static void stream_free(void *cls)
{
    exchange_release(cls);
}

static enum MHD_Result answer_stream(exchange *x)
{
    struct MHD_Response *response = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, stream_read, x,
                                                                      stream_free);
    if (response == NULL)
        return MHD_NO;
    atomic_fetch_add(&x->references, 1); /* the response's, dropped by stream_free */
    MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(response, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    MHD_add_response_header(response, "X-Accel-Buffering", "no"); /* proxies: pass events on at once */
    enum MHD_Result result = MHD_queue_response(x->connection, MHD_HTTP_OK, response);
    MHD_destroy_response(response);
    return result;
}

static void make_id(exchange *x)
{
    unsigned char bytes[12];
    if (getrandom(bytes, sizeof bytes, 0) != (ssize_t)sizeof bytes) {
        uint64_t a = random_u64(), b = random_u64();
        memcpy(bytes, &a, 8);
        memcpy(bytes + 8, &b, 4);
    }
    int used = snprintf(x->id, sizeof x->id, "%s", x->chat ? "chatcmpl-" : "cmpl-");
    for (size_t i = 0; i < sizeof bytes; i++)
        used += snprintf(x->id + used, sizeof x->id - (size_t)used, "%02x", bytes[i]);
}

/* POST /v1/completions and /v1/chat/completions, once the body is in. */
static enum MHD_Result answer_completion(exchange *x)
{
    serve_http *http = x->http;
    http_failure failure = {0};
    parsed_request request;
    if (!parse_request(http, x, &request, &failure)) {
        parsed_request_free(&request);
        return queue_failure(x->connection, &failure);
    }
    strata_error error = {0};
    serve_request *submitted = NULL;
    strata_status status = atomic_load(&http->draining)
                               ? strata_fail(&error, STRATA_E_UNSUPPORTED, "the server is shutting down")
                               : serve_submit(http->scheduler, &request.spec, &submitted, &error);
    x->stream = request.stream;
    x->include_usage = request.stream && request.include_usage;
    x->choices = request.spec.choices;
    parsed_request_free(&request);
    if (status != STRATA_OK) {
        if (status == STRATA_E_INVALID_ARGUMENT)
            fail_request(&failure, 400, "invalid_request_error", NULL, "%s", error.message);
        else if (status == STRATA_E_UNSUPPORTED)
            fail_request(&failure, 503, "server_error", NULL, "%s", error.message);
        else
            fail_request(&failure, 500, "server_error", NULL, "%s", error.message);
        return queue_failure(x->connection, &failure);
    }
    x->request = submitted;
    atomic_fetch_add(&http->in_flight, 1);
    x->created = time(NULL);
    make_id(x);
    exchange_set_timeout(x, true);
    return x->stream ? answer_stream(x) : answer_plain(x);
}

static enum MHD_Result answer_models(exchange *x)
{
    json_t *model = json_object();
    json_object_set_new(model, "id", json_string(x->http->model_id));
    json_object_set_new(model, "object", json_string("model"));
    json_object_set_new(model, "created", json_integer((json_int_t)x->http->started));
    json_object_set_new(model, "owned_by", json_string("strata"));
    json_t *data = json_array();
    json_array_append_new(data, model);
    json_t *root = json_object();
    json_object_set_new(root, "object", json_string("list"));
    json_object_set_new(root, "data", data);
    return queue_json(x->connection, MHD_HTTP_OK, root, NULL, NULL);
}

static enum MHD_Result answer_health(exchange *x)
{
    bool draining = atomic_load(&x->http->draining);
    json_t *root = json_object();
    json_object_set_new(root, "status", json_string(draining ? "draining" : "ok"));
    return queue_json(x->connection, draining ? MHD_HTTP_SERVICE_UNAVAILABLE : MHD_HTTP_OK, root, NULL, NULL);
}

static void metric_head(FILE *out, const char *name, const char *type, const char *help)
{
    fprintf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void metric_histogram(FILE *out, const char *name, const char *help, const serve_histogram *histogram)
{
    metric_head(out, name, "histogram", help);
    uint64_t cumulative = 0;
    for (int i = 0; i < SERVE_HISTOGRAM_BUCKETS; i++) {
        cumulative += histogram->counts[i];
        fprintf(out, "%s_bucket{le=\"%g\"} %llu\n", name, histogram->bounds[i], (unsigned long long)cumulative);
    }
    cumulative += histogram->counts[SERVE_HISTOGRAM_BUCKETS];
    fprintf(out, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)cumulative);
    fprintf(out, "%s_sum %.9g\n%s_count %llu\n", name, histogram->sum, name, (unsigned long long)cumulative);
}

/* GET /metrics: Prometheus text format 0.0.4. */
static enum MHD_Result answer_metrics(exchange *x)
{
    serve_metrics m;
    serve_scheduler_metrics(x->http->scheduler, &m);
    char *text = NULL;
    size_t length = 0;
    FILE *out = open_memstream(&text, &length);
    if (out == NULL)
        return MHD_NO;
    metric_head(out, "strata_requests_total", "counter",
                "Finished requests by the finish reason of their first choice.");
    for (int finish = SERVE_FINISH_STOP; finish <= SERVE_FINISH_ERROR; finish++)
        fprintf(out, "strata_requests_total{finish_reason=\"%s\"} %llu\n", serve_finish_name((serve_finish)finish),
                (unsigned long long)m.requests_by_finish[finish]);
    const struct {
        const char *name, *type, *help;
        double value;
    } plain[] = {
        {"strata_requests_rejected_total", "counter",
         "Requests refused at submission (too long, bad options, draining).",
         (double)m.requests_rejected},
        {"strata_prompt_tokens_total", "counter", "Prompt tokens of admitted requests.", (double)m.prompt_tokens},
        {"strata_prompt_cached_tokens_total", "counter", "Prompt tokens served from the prefix cache.",
         (double)m.cached_prompt_tokens},
        {"strata_generation_tokens_total", "counter", "Tokens generated.", (double)m.generation_tokens},
        {"strata_preemptions_total", "counter", "Sequences preempted because the KV pool ran out.",
         (double)m.preemptions},
        {"strata_steps_total", "counter", "Batched forward steps run.", (double)m.steps},
        {"strata_prefix_cache_hit_tokens_total", "counter", "Tokens found in the prefix cache by the KV pool.",
         (double)m.kv.prefix_hit_tokens},
        {"strata_requests_running", "gauge", "Sequences holding KV now.", (double)m.running},
        {"strata_requests_waiting", "gauge", "Requests and preempted sequences waiting for admission.",
         (double)m.waiting},
        {"strata_kv_used_bytes", "gauge", "KV pool bytes in use (sequences and the prefix cache).",
         (double)m.kv.used_bytes},
        {"strata_kv_free_bytes", "gauge", "KV pool bytes free.", (double)m.kv.free_bytes},
        {"strata_kv_budget_bytes", "gauge", "KV pool size in bytes.", (double)m.kv.budget_bytes},
        {"strata_kv_shared_bytes", "gauge", "KV pool bytes referenced more than once.", (double)m.kv.shared_bytes},
        {"strata_prefix_cache_blocks", "gauge", "Token blocks held by the prefix cache.",
         (double)m.kv.prefix_cached_blocks},
    };
    for (size_t i = 0; i < sizeof plain / sizeof plain[0]; i++) {
        metric_head(out, plain[i].name, plain[i].type, plain[i].help);
        fprintf(out, "%s %.17g\n", plain[i].name, plain[i].value);
    }
    metric_histogram(out, "strata_time_to_first_token_seconds", "Time from submission to the first generated token.",
                     &m.time_to_first_token);
    metric_histogram(out, "strata_time_per_output_token_seconds", "Time between two generated tokens of a sequence (every gap).",
                     &m.time_per_output_token);
    metric_histogram(out, "strata_request_latency_seconds", "Time from submission to the last choice's finish.",
                     &m.request_latency);
    if (fclose(out) != 0) {
        free(text);
        return MHD_NO;
    }
    return queue_body(x->connection, MHD_HTTP_OK, text, length, "text/plain; version=0.0.4; charset=utf-8", NULL,
                      NULL);
}

/* ---- libmicrohttpd callbacks -------------------------------------------- */

static route route_of(const char *url)
{
    static const struct {
        const char *path;
        route route;
    } routes[] = {
        {"/v1/completions", ROUTE_COMPLETIONS}, {"/v1/chat/completions", ROUTE_CHAT}, {"/v1/models", ROUTE_MODELS},
        {"/health", ROUTE_HEALTH},              {"/metrics", ROUTE_METRICS},
    };
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
        if (strcmp(url, routes[i].path) == 0)
            return routes[i].route;
    return ROUTE_UNKNOWN;
}

/* Compares without an early exit, so the time taken says nothing about the key. */
static bool same_secret(const char *given, const char *expected)
{
    size_t given_length = strlen(given), expected_length = strlen(expected);
    unsigned char difference = given_length != expected_length;
    for (size_t i = 0; i < expected_length; i++)
        difference |= (unsigned char)(expected[i] ^ given[i < given_length ? i : 0]);
    return difference == 0;
}

/* What the headers alone decide; false when the request may go on. */
static bool settle_from_headers(exchange *x, const char *url, const char *method)
{
    serve_http *http = x->http;
    http_failure *failure = &x->early;
    x->route = route_of(url);
    if (x->route == ROUTE_UNKNOWN)
        return !fail_request(failure, 404, "invalid_request_error", NULL,
                             "no endpoint %s %s; strata serve has POST /v1/completions, POST /v1/chat/completions, "
                             "GET /v1/models, GET /health and GET /metrics",
                             method, url);
    bool post = x->route == ROUTE_COMPLETIONS || x->route == ROUTE_CHAT;
    bool method_ok = post ? strcmp(method, MHD_HTTP_METHOD_POST) == 0
                          : strcmp(method, MHD_HTTP_METHOD_GET) == 0 || strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
    if (!method_ok) {
        fail_request(failure, 405, "invalid_request_error", NULL, "%s takes %s, not %s", url, post ? "POST" : "GET",
                     method);
        failure->allow = post ? "POST" : "GET, HEAD";
        return true;
    }
    if (http->api_key != NULL && x->route != ROUTE_HEALTH) {
        const char *authorization =
            MHD_lookup_connection_value(x->connection, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
        bool bearer = authorization != NULL && strncasecmp(authorization, "Bearer ", 7) == 0;
        if (!bearer || !same_secret(authorization + 7, http->api_key)) {
            fail_request(failure, 401, "authentication_error", NULL,
                         authorization == NULL ? "this server needs an API key: send \"Authorization: Bearer KEY\""
                                               : "the API key is not valid");
            failure->code = "invalid_api_key";
            return true;
        }
    }
    if (post && atomic_load(&http->draining))
        return !fail_request(failure, 503, "server_error", NULL, "the server is shutting down");
    const char *declared = MHD_lookup_connection_value(x->connection, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (declared != NULL) {
        char *end = NULL;
        errno = 0;
        unsigned long long length = strtoull(declared, &end, 10);
        if (errno == 0 && end != declared && length > http->max_body_bytes) {
            x->body_too_large = true;
            return !fail_request(failure, 413, "invalid_request_error", NULL,
                                 "the request body has %llu bytes; this server takes at most %zu", length,
                                 http->max_body_bytes);
        }
    }
    return false;
}

static enum MHD_Result handle_request(void *cls, struct MHD_Connection *connection, const char *url,
                                      const char *method, const char *version, const char *upload_data,
                                      size_t *upload_data_size, void **context)
{
    serve_http *http = cls;
    exchange *x = *context;
    if (x == NULL) { /* headers only */
        x = calloc(1, sizeof *x);
        if (x == NULL)
            return MHD_NO;
        x->http = http;
        x->connection = connection;
        atomic_init(&x->references, 1);
        *context = x;
        x->settled = settle_from_headers(x, url, method);
        /* A client waiting for "100 Continue" has not sent its body: answer now and spare it. */
        const char *expect = MHD_lookup_connection_value(connection, MHD_HEADER_KIND, MHD_HTTP_HEADER_EXPECT);
        if (x->settled && expect != NULL && strcasecmp(expect, "100-continue") == 0) {
            x->answered = true;
            return queue_failure(connection, &x->early);
        }
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        x->body_bytes += *upload_data_size;
        if (!x->settled && !x->answered) {
            if (x->body.length + *upload_data_size > http->max_body_bytes) {
                x->body_too_large = true;
                buffer_free(&x->body);
            } else if (!x->body_too_large) {
                buffer_append(&x->body, upload_data, *upload_data_size);
            }
        }
        *upload_data_size = 0; /* consumed (or thrown away) */
        return MHD_YES;
    }
    if (x->answered)
        return MHD_YES;
    x->answered = true;
    if (x->settled)
        return queue_failure(connection, &x->early);
    if (x->body_too_large) {
        http_failure failure;
        fail_request(&failure, 413, "invalid_request_error", NULL,
                     "the request body has %llu bytes; this server takes at most %zu",
                     (unsigned long long)x->body_bytes, http->max_body_bytes);
        return queue_failure(connection, &failure);
    }
    if (x->body.failed) {
        http_failure failure;
        fail_request(&failure, 500, "server_error", NULL, "cannot allocate the %llu-byte request body",
                     (unsigned long long)x->body_bytes);
        return queue_failure(connection, &failure);
    }
    switch (x->route) {
    case ROUTE_COMPLETIONS:
    case ROUTE_CHAT:
        x->chat = x->route == ROUTE_CHAT;
        return answer_completion(x);
    case ROUTE_MODELS:
        return answer_models(x);
    case ROUTE_HEALTH:
        return answer_health(x);
    case ROUTE_METRICS:
        return answer_metrics(x);
    case ROUTE_UNKNOWN:
        break;
    }
    return MHD_NO;
}

/* A request ended: a connection that closed early cancels what it started. */
static void request_completed(void *cls, struct MHD_Connection *connection, void **context,
                              enum MHD_RequestTerminationCode code)
{
    exchange *x = *context;
    if (x == NULL)
        return;
    *context = NULL;
    if (code != MHD_REQUEST_TERMINATED_COMPLETED_OK && x->request != NULL)
        serve_request_cancel(x->request);
    exchange_release(x);
}

static void log_library_error(void *cls, const char *format, va_list args)
{
    serve_http *http = cls;
    /* A stream whose client hung up ends with an "application error": that is
     * the cancellation working, not news. */
    if (atomic_load(&http->stopping) || strstr(format, "application error generating response") != NULL)
        return;
    fprintf(stderr, "strata serve: http: ");
    vfprintf(stderr, format, args);
    size_t length = strlen(format);
    if (length == 0 || format[length - 1] != '\n')
        fputc('\n', stderr);
}

/* ---- lifetime ----------------------------------------------------------- */

/* Binds and listens on host:port (the first address getaddrinfo gives that binds); returns the socket or -1. */
static int listen_on(const char *host, int port, int *bound_port, strata_error *err)
{
    char service[16];
    snprintf(service, sizeof service, "%d", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *addresses = NULL;
    int resolved = getaddrinfo(host, service, &hints, &addresses);
    if (resolved != 0) {
        strata_fail(err, STRATA_E_INVALID_ARGUMENT, "cannot resolve host '%s': %s", host, gai_strerror(resolved));
        return -1;
    }
    int listener = -1, last_errno = 0;
    for (struct addrinfo *a = addresses; a != NULL && listener < 0; a = a->ai_next) {
        int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) {
            last_errno = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, a->ai_addr, a->ai_addrlen) != 0 || listen(fd, SOMAXCONN) != 0) {
            last_errno = errno;
            close(fd);
            continue;
        }
        listener = fd;
    }
    freeaddrinfo(addresses);
    if (listener < 0) {
        strata_fail(err, STRATA_E_IO, "cannot listen on %s port %d: %s", host, port, strerror(last_errno));
        return -1;
    }
    struct sockaddr_storage address;
    socklen_t address_length = sizeof address;
    getsockname(listener, (struct sockaddr *)&address, &address_length);
    *bound_port = address.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&address)->sin6_port)
                                                : ntohs(((struct sockaddr_in *)&address)->sin_port);
    return listener;
}

static char *copy_string(const char *text)
{
    return text != NULL ? strdup(text) : NULL;
}

strata_status serve_http_start(strata_model *model, serve_scheduler *scheduler, const serve_http_options *options,
                               serve_http **out, strata_error *err)
{
    *out = NULL;
    serve_http_options o = options != NULL ? *options : (serve_http_options){0};
    if (o.port < 0 || o.port > 65535)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT, "port %d is not in 0..65535", o.port);
    serve_http *http = calloc(1, sizeof *http);
    if (http == NULL)
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "cannot allocate the HTTP server");
    http->model = model;
    http->scheduler = scheduler;
    http->api_key = o.api_key != NULL && o.api_key[0] != '\0' ? copy_string(o.api_key) : NULL;
    http->model_id = copy_string(o.model_id != NULL ? o.model_id : strata_model_name(model));
    http->max_body_bytes = o.max_body_bytes > 0 ? o.max_body_bytes : DEFAULT_MAX_BODY_BYTES;
    http->idle_timeout_s = o.idle_timeout_s > 0 ? o.idle_timeout_s : DEFAULT_IDLE_TIMEOUT_S;
    http->started = time(NULL);
    atomic_init(&http->draining, false);
    atomic_init(&http->stopping, false);
    atomic_init(&http->in_flight, 0);
    if (http->model_id == NULL || (o.api_key != NULL && o.api_key[0] != '\0' && http->api_key == NULL)) {
        serve_http_stop(http);
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "cannot allocate the HTTP server");
    }
    const char *host = o.host != NULL ? o.host : "127.0.0.1";
    int listener = listen_on(host, o.port, &http->port, err);
    if (listener < 0) {
        serve_http_stop(http);
        return err != NULL ? err->status : STRATA_E_IO;
    }
    unsigned connections = o.max_connections > 0 ? o.max_connections : DEFAULT_MAX_CONNECTIONS;
    /* poll() rather than select(): no FD_SETSIZE limit on descriptor numbers.
     * The logger comes first so that it sees every message. */
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_USE_ERROR_LOG;
    http->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, handle_request, http, MHD_OPTION_EXTERNAL_LOGGER, log_library_error, http,
        MHD_OPTION_LISTEN_SOCKET, (MHD_socket)listener, MHD_OPTION_CONNECTION_LIMIT, connections,
        MHD_OPTION_CONNECTION_TIMEOUT, http->idle_timeout_s, MHD_OPTION_NOTIFY_COMPLETED, request_completed, http,
        MHD_OPTION_END);
    if (http->daemon == NULL) {
        close(listener);
        serve_http_stop(http);
        return strata_fail(err, STRATA_E_IO, "cannot start the HTTP server on %s port %d", host, o.port);
    }
    *out = http;
    return STRATA_OK;
}

int serve_http_port(const serve_http *http)
{
    return http->port;
}

void serve_http_start_draining(serve_http *http)
{
    atomic_store(&http->draining, true);
    serve_scheduler_start_draining(http->scheduler);
}

bool serve_http_wait_idle(serve_http *http, int timeout_ms)
{
    struct timespec pause = {.tv_sec = 0, .tv_nsec = 20 * 1000 * 1000};
    for (int waited = 0;; waited += 20) {
        if (atomic_load(&http->in_flight) == 0)
            return true;
        if (waited >= timeout_ms)
            return false;
        nanosleep(&pause, NULL);
    }
}

void serve_http_stop(serve_http *http)
{
    if (http == NULL)
        return;
    /* Waiting handlers cancel within one poll and answer with an error while
     * their connections are still open; then libmicrohttpd closes them all. */
    atomic_store(&http->stopping, true);
    if (http->daemon != NULL) {
        serve_http_wait_idle(http, 2000);
        MHD_stop_daemon(http->daemon); /* joins every connection's thread; closes the listening socket */
    }
    free(http->api_key);
    free(http->model_id);
    free(http);
}
