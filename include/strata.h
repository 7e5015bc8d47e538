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

typedef enum strata_kv_type {
    STRATA_KV_F32 = 0, /* exact; the default */
    STRATA_KV_F16,
    STRATA_KV_BF16,
} strata_kv_type;

typedef struct strata_model_options {
    int threads;             /* worker threads for compute; 0 means one per core */
    uint64_t kv_memory_bytes; /* KV pool budget shared by all sessions; 0 picks a default from
                                 the model and the machine (strata_model_kv_stats reports it) */
    strata_kv_type kv_type;  /* storage of keys and values in the pool */
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

/* One message of a conversation: role "system", "developer", "user" or "assistant", and its text. */
typedef struct strata_chat_message {
    const char *role;
    const char *content;
} strata_chat_message;
/* Writes a newly allocated prompt holding the messages in turn in the model's
 * chat format, ending with the assistant's turn opener; the caller frees it. */
strata_status strata_chat_prompt_messages(const strata_model *model, const strata_chat_message *messages,
                                          size_t count, char **prompt, strata_error *error);

typedef struct strata_session_options {
    int32_t context_length; /* tokens the session may hold; 0 means the model's, capped at 8192 */
    bool prefix_cache;      /* reuse cached KV of an identical prompt prefix, and cache this one's */
    uint64_t cache_namespace; /* tenant salt: prefixes are shared only within one namespace */
    const char *kv_policy;  /* KV compression policy by name (see strata_kv_policies), optionally
                               composed with a precision: "snapkv+kivi4", or a precision alone:
                               "q8" (see strata_kv_precisions); NULL: "full" */
    int64_t kv_budget_tokens; /* slots each (layer, KV head) keeps; 0: use kv_budget_ratio */
    float kv_budget_ratio;  /* else this fraction of the prompt length; 0 and 0: no compression */
    const char *kv_policy_params; /* "name=value,..." for the policy and its precision (each name goes
                                     to the one that has it), or NULL for their defaults */
    const char *kv_head_profile; /* head profile file written by `strata calibrate`: per (layer, KV head),
                                    how much it retrieves from far back; read at creation. Needed by
                                    policies that treat heads differently ("duo"); NULL: none */
    int32_t kv_statistics_window; /* > 0: a full-cache session that keeps, for strata_session_fork_compressed,
                                     the attention statistics policies read after a prompt (of its last
                                     kv_statistics_window queries, 32 for every policy's default, and of
                                     every query); 0: none */
} strata_session_options;

/* Returns the KV compression policies' names, comma-separated ("full, streaming, ..."). */
const char *strata_kv_policies(void);
/* Returns the names of the KV precisions, comma-separated ("q8, q4, kivi4, kivi2"). */
const char *strata_kv_precisions(void);

/* Creates a session: a token sequence with its own KV cache. */
strata_status strata_session_create(strata_model *model, const strata_session_options *options,
                                    strata_session **out, strata_error *error);
/* Checks the KV policy fields of options (policy, precision, budget, parameters,
 * head profile) as strata_session_create would, without creating anything;
 * safe to call from any thread. */
strata_status strata_session_options_check(const strata_model *model, const strata_session_options *options,
                                           strata_error *err);
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
/* Drops every token at or after position, so generation can resume there.
 * Fails (changing nothing) when sliding-window layers already released KV
 * that position would need. */
strata_status strata_session_rewind(strata_session *session, size_t position, strata_error *error);
/* Creates a session that shares all of session's KV (copy-on-write) and its
 * last logits: both continue independently from here. */
strata_status strata_session_fork(const strata_session *session, strata_session **out, strata_error *error);
/* Appends tokens to several sessions in ONE batched forward step (prefill
 * chunks and single decode tokens may be mixed); each session then holds its
 * last token's logits. On failure no session has advanced. The tokens must
 * add up to at most 512. */
strata_status strata_sessions_append(strata_session *const *sessions, const int32_t *const *tokens,
                                     const size_t *counts, size_t session_count, strata_error *error);
/* One session's part of a batched step (strata_sessions_step). */
typedef struct strata_step_item {
    strata_session *session;
    const int32_t *tokens;
    size_t count;
    size_t prompt_length; /* 0: a decode token (count 1); else the length of the prompt this chunk belongs to */
    size_t prompt_offset; /* tokens of that prompt appended before this chunk */
} strata_step_item;
/* Runs ONE batched forward step over prompt chunks and decode tokens of
 * several sessions, each session then holding its last token's logits; a
 * session's KV policy sees a chunk as part of its prompt and compresses at
 * the prompt's end. On failure no session has advanced. The tokens must add
 * up to at most 512. */
strata_status strata_sessions_step(const strata_step_item *items, size_t item_count, strata_error *err);
/* Attaches to an empty session using the prefix cache the longest cached
 * prefix of prompt (leaving at least its last token to compute); *attached is
 * the number of tokens attached (0 when nothing was cached). */
strata_status strata_session_attach_prefix(strata_session *session, const int32_t *prompt, size_t count,
                                           size_t *attached, strata_error *err);
/* Returns the number of prompt tokens the last append served from the prefix cache. */
size_t strata_session_cached_tokens(const strata_session *session);

/* KV memory, as counted by the pool. */
typedef struct strata_kv_stats {
    uint64_t budget_bytes;   /* the pool's size */
    uint64_t block_bytes;
    int32_t block_tokens;
    int64_t total_blocks;
    int64_t used_blocks;     /* referenced by a session or the prefix cache */
    int64_t shared_blocks;   /* referenced more than once */
    int64_t free_blocks;
    uint64_t used_bytes;
    uint64_t shared_bytes;
    uint64_t free_bytes;
    int64_t prefix_lookups;
    int64_t prefix_hit_tokens;
    int64_t prefix_cached_blocks; /* token blocks in the prefix cache */
    int64_t prefix_evicted_blocks;
} strata_kv_stats;

/* Fills stats for the model's KV pool and prefix cache. */
void strata_model_kv_stats(const strata_model *model, strata_kv_stats *stats);
/* Returns the KV bytes a full-cache session holding this many tokens needs
 * from the pool (sliding-window layers hold only their window). */
uint64_t strata_model_kv_bytes_for_tokens(const strata_model *model, int64_t tokens);
/* Makes bytes free in the pool by evicting least-recently-used cached
 * prefixes that no session holds, when evicting them is enough (else evicts
 * nothing); returns the free bytes. */
uint64_t strata_model_kv_make_room(strata_model *model, uint64_t bytes);
/* Returns the number of layers and, in *kv_heads, of KV heads per layer: the
 * shape of the per-(layer, head) arrays below. */
int32_t strata_model_kv_layout(const strata_model *model, int32_t *kv_heads);
/* Fills blocks[layer * kv_heads + head] with the pool blocks in use for that
 * (layer, KV head), by all sessions and the prefix cache together. */
void strata_model_kv_blocks_by_layer(const strata_model *model, int64_t *blocks);
/* Fills slots[layer * kv_heads + head] with the KV slots the session holds for
 * that (layer, KV head): lengths differ where sliding windows released blocks. */
void strata_session_kv_slots(const strata_session *session, int64_t *slots);
/* Forks a session created with kv_statistics_window into one carrying the
 * KV policy (and precision, budget, parameters, head profile) of options:
 * it shares the parent's blocks, takes the statistics its policy reads, and
 * compresses at once, as after reading the prompt itself; the parent is
 * unchanged. So one prefill serves many policies (the evaluation harness).
 * A policy observing another window than the parent kept is refused. */
strata_status strata_session_fork_compressed(const strata_session *parent, const strata_session_options *options,
                                             strata_session **out, strata_error *err);
/* Returns the KV bytes a session references (blocks shared with others count in full) and,
 * in *shared_bytes if not NULL, how many of those are shared. */
uint64_t strata_session_kv_bytes(const strata_session *session, uint64_t *shared_bytes);
/* Fills bytes[layer * kv_heads + head] with the KV bytes the session references for that
 * (layer, KV head), by the storage type of each block (packed blocks count their own size). */
void strata_session_kv_table_bytes(const strata_session *session, uint64_t *bytes);

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
