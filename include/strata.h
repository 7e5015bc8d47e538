/* strata.h: the public C API of strata, an LLM inference engine built around
 * its KV cache.
 *
 * Everything a program needs to load a GGUF model, tokenize text, run a
 * session (prefill a prompt, decode tokens one at a time) and sample from the
 * logits. Handles are opaque; every function that can fail returns a
 * strata_status and, when given a strata_error, fills it with a sentence a
 * person can act on. Every _open/_create has a _close/_destroy that accepts
 * NULL. */
#ifndef STRATA_H
#define STRATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum strata_status {
    STRATA_OK = 0,
    STRATA_E_INVALID_ARGUMENT, /* a caller passed a value outside its range */
    STRATA_E_IO,               /* a file could not be opened, read or mapped */
    STRATA_E_FORMAT,           /* a file is malformed (bad GGUF, bad tokenizer data) */
    STRATA_E_UNSUPPORTED,      /* valid input that strata does not handle yet */
    STRATA_E_OUT_OF_MEMORY,    /* an allocation failed */
    STRATA_E_CONTEXT_FULL,     /* a session reached its context length */
    STRATA_E_KV_FULL,          /* the KV memory budget is exhausted */
    STRATA_E_INTERNAL,         /* a broken invariant of strata itself */
} strata_status;

enum { STRATA_ERROR_MESSAGE_BYTES = 512 };

/* An error as a value: the status and a sentence naming the thing, the value
 * and the limit. */
typedef struct strata_error {
    strata_status status;
    char message[STRATA_ERROR_MESSAGE_BYTES];
} strata_error;

/* Returns a short constant name for a status ("format error", ...). */
const char *strata_status_name(strata_status status);

typedef struct strata_model strata_model;
typedef struct strata_session strata_session;
typedef struct strata_sampler strata_sampler;

typedef struct strata_model_options {
    int threads; /* worker threads for compute; 0 means one per core */
} strata_model_options;

/* Opens a GGUF model file (mmap), validates it and prepares its tokenizer. */
strata_status strata_model_open(const char *path, const strata_model_options *options,
                                strata_model **out, strata_error *error);
/* Closes a model opened by strata_model_open; accepts NULL. */
void strata_model_close(strata_model *model);

/* Returns the architecture name of the model ("gemma3", "llama", ...). */
const char *strata_model_architecture(const strata_model *model);
/* Returns the number of tokens in the model's vocabulary. */
int32_t strata_model_vocab_size(const strata_model *model);
/* Returns the context length the model was trained for. */
int32_t strata_model_context_length(const strata_model *model);
/* Returns the model's name from general.name, or its architecture. */
const char *strata_model_name(const strata_model *model);
/* Returns the number of compute threads the model runs on. */
int strata_model_threads(const strata_model *model);

/* Tokenizes text into a newly allocated array the caller frees with free().
 * add_bos adds the beginning-of-sequence token when the model asks for one;
 * parse_special turns control-token text such as "<start_of_turn>" into
 * its single token. */
strata_status strata_tokenize(const strata_model *model, const char *text, size_t length,
                              bool add_bos, bool parse_special, int32_t **tokens,
                              size_t *count, strata_error *error);
/* Writes the bytes a token decodes to into buffer (at most capacity bytes,
 * not NUL-terminated); returns the full length, which may exceed capacity. */
size_t strata_token_to_text(const strata_model *model, int32_t token, char *buffer,
                            size_t capacity);
/* Returns the token's raw vocabulary piece ("▁the", "<0x0A>"), or NULL if out of range. */
const char *strata_token_piece(const strata_model *model, int32_t token);
/* Returns true if the token ends generation (end of sequence or end of turn). */
bool strata_token_is_end_of_generation(const strata_model *model, int32_t token);

typedef enum strata_chat_format {
    STRATA_CHAT_NONE = 0,
    STRATA_CHAT_GEMMA,
    STRATA_CHAT_CHATML,
    STRATA_CHAT_LLAMA3,
} strata_chat_format;

/* Returns the chat format the model uses, chosen from its template or architecture. */
strata_chat_format strata_model_chat_format(const strata_model *model);
/* Wraps one user message (and an optional system message, or NULL) in the
 * model's chat format, ending with the assistant's turn opener. The result is
 * newly allocated; the caller frees it. */
strata_status strata_chat_prompt(const strata_model *model, const char *system_message,
                                 const char *user_message, char **prompt, strata_error *error);

typedef struct strata_session_options {
    int32_t context_length; /* tokens the session may hold; 0 means the model's, capped at 8192 */
} strata_session_options;

/* Creates a session: a token sequence with its own KV cache. */
strata_status strata_session_create(strata_model *model, const strata_session_options *options,
                                    strata_session **out, strata_error *error);
/* Destroys a session; accepts NULL. */
void strata_session_destroy(strata_session *session);

/* Runs the model over new tokens appended to the session (a prefill chunk or
 * one decode token). When all_logits is true, the logits of every new token
 * are kept (strata_session_logits(session, i)); otherwise only the last one's. */
strata_status strata_session_append(strata_session *session, const int32_t *tokens, size_t count,
                                    bool all_logits, strata_error *error);
/* Returns the logits (vocab_size floats) of the index-th token of the last
 * append (0 when only the last token's were kept), or NULL. Valid until the
 * next append. */
const float *strata_session_logits(const strata_session *session, size_t index);
/* Returns the number of tokens the session holds. */
size_t strata_session_length(const strata_session *session);
/* Drops every token at or after position, so generation can resume there. */
strata_status strata_session_rewind(strata_session *session, size_t position, strata_error *error);

typedef struct strata_sampler_options {
    float temperature;        /* 0 means greedy */
    int32_t top_k;            /* 0 disables */
    float top_p;              /* 1 disables */
    float min_p;              /* 0 disables */
    float repetition_penalty; /* 1 disables */
    int32_t repetition_window; /* how many recent tokens the penalty looks at */
    uint64_t seed;
} strata_sampler_options;

/* Returns the default sampling options (greedy, no penalties, seed 0). */
strata_sampler_options strata_sampler_defaults(void);
/* Creates a sampler for a vocabulary of vocab_size tokens. */
strata_status strata_sampler_create(const strata_sampler_options *options, int32_t vocab_size,
                                    strata_sampler **out, strata_error *error);
/* Destroys a sampler; accepts NULL. */
void strata_sampler_destroy(strata_sampler *sampler);
/* Picks the next token from logits, remembering it for the repetition penalty. */
int32_t strata_sampler_sample(strata_sampler *sampler, const float *logits);
/* Tells the sampler about a token already in the context (the prompt), for the penalty. */
void strata_sampler_accept(strata_sampler *sampler, int32_t token);

#ifdef __cplusplus
}
#endif
#endif
