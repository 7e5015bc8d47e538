/* engine/session.c: sessions: token sequences whose KV lives in the model's
 * block pool.
 *
 * A session owns a sequence view (kv/seq.h), the tokens it holds and the
 * logits of its last append. Appends longer than one step are cut into
 * chunks of SESSION_CHUNK_TOKENS, each one forward step. With the prefix
 * cache on, a new session's first append attaches the longest cached prefix
 * of its tokens in its namespace and computes only the rest, and every
 * completed block of tokens is offered to the cache before sliding-window
 * layers release what their window left behind (so a cached prefix keeps
 * the KV a later request needs). When the pool is full, cached prefixes
 * nobody uses are evicted and the step is tried once more before
 * STRATA_E_KV_FULL reaches the caller. A session may carry a KV compression
 * policy (kv/policy.h): the session collects the attention statistics the
 * policy asks for during its steps and runs the policy's hooks after a
 * prompt and after every decode step. Implements the strata_session_*
 * functions of strata.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "engine/calibrate.h"
#include "engine/forward.h"
#include "engine/session_internal.h"
#include "kv/policy.h"
#include "kv/precision.h"
#include "model/model.h"

enum { SESSION_CHUNK_TOKENS = 512, SESSION_DEFAULT_CONTEXT = 8192 };

struct strata_session {
    strata_model *model;
    kv_seq *seq;
    forward_scratch *scratch;
    int64_t context_length;
    int32_t *history;       /* the tokens held, [context_length] */
    float *logits;          /* [logit_capacity][vocab] */
    int64_t logit_rows;     /* rows of the last append */
    int64_t logit_capacity;
    bool prefix_cache;
    uint64_t cache_namespace;
    int64_t cached_tokens;  /* served from the prefix cache by the last append */
    int64_t cached_blocks;  /* full token blocks already offered to the cache */
    /* KV compression */
    const kv_policy_ops *policy;  /* NULL: keep everything */
    double policy_params[KV_POLICY_MAX_PARAMS];
    int64_t budget_tokens;        /* as asked; 0: from budget_ratio at the end of the prompt */
    float budget_ratio;
    int64_t budget;               /* resolved slots per table; 0 until known */
    float **mass;                 /* per table: attention mass per slot (global layers), or NULL */
    float **mass_squares;         /* per table: the squares' sums, or NULL */
    float **slot_arrays;          /* per table * policy->slot_arrays: the policy's own per-slot floats */
    /* A full-cache session that keeps statistics for strata_session_fork_compressed: mass and squares of
     * the last statistics_window prompt queries (in mass, mass_squares) and of every query (mass_all). */
    int64_t statistics_window;
    float **mass_all;
    bool *layer_is_windowed;
    void *policy_state;           /* what policy->create_state made, or NULL */
    kv_block_selection selection; /* handed to steps of one token when the policy selects blocks */
    /* Precision: blocks older than the newest precision_residual tokens are packed */
    kv_storage precision;         /* the pool's base type: none */
    const kv_policy_ops *precision_ops;
    double precision_params[KV_POLICY_MAX_PARAMS];
    int64_t precision_residual;
    kv_storage demote_to;         /* "mixed": packed type of what the policy would drop; else the base type */
    char policy_name[64];         /* as given ("snapkv+kivi4"), for forks */
    char *head_profile;           /* the head profile's path (for forks), or NULL */
    float *head_scores;           /* its scores, per table, or NULL */
};

/* When a policy hook runs. */
typedef enum policy_moment { POLICY_PREFILL_CHUNK, POLICY_PREFILL_END, POLICY_DECODE_STEP } policy_moment;

const char *strata_kv_policies(void)
{
    static char names[256];
    if (names[0] == '\0')
        kv_policy_list_names(names, sizeof names);
    return names;
}

/* Allocates count per-slot arrays of context_length floats, one per table
 * (or per table and policy array), NULL for windowed layers; *arrays stays
 * NULL when not wanted. */
static strata_status allocate_slot_arrays(strata_session *session, float ***arrays, int64_t count, bool wanted,
                                          strata_error *err)
{
    if (!wanted || count == 0)
        return STRATA_OK;
    int64_t tables = session->model->params.layer_count * session->model->params.kv_head_count;
    int64_t per_table = count / tables;
    *arrays = calloc((size_t)count, sizeof **arrays);
    if (*arrays == NULL)
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "cannot allocate KV statistics");
    for (int64_t i = 0; i < count; i++)
        if (!session->layer_is_windowed[i / per_table / session->model->params.kv_head_count]) {
            (*arrays)[i] = calloc((size_t)session->context_length, sizeof(float));
            if ((*arrays)[i] == NULL)
                return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "cannot allocate KV statistics for %lld slots",
                                   (long long)session->context_length);
        }
    return STRATA_OK;
}

/* Frees what allocate_slot_arrays made. */
static void free_slot_arrays(float **arrays, int64_t count)
{
    if (arrays != NULL)
        for (int64_t i = 0; i < count; i++)
            free(arrays[i]);
    free(arrays);
}

/* Loads the head profile of the options, which policies such as duo rank
 * tables by; refuses a policy that needs one when none is given. */
static strata_status setup_head_profile(strata_session *session, const kv_policy_ops *policy, const char *path,
                                        strata_error *err)
{
    if (path == NULL)
        return !policy->head_profile
            ? STRATA_OK
            : strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                          "KV policy '%s' needs a head profile (kv_head_profile; --kv-profile FILE): make one with "
                          "`strata calibrate -m MODEL -o FILE`",
                          policy->name);
    session->head_profile = strdup(path);
    if (session->head_profile == NULL)
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "cannot copy the head profile's path");
    return calibrate_read_profile(path, session->model->params.layer_count, session->model->params.kv_head_count,
                                  &session->head_scores, err);
}

/* What the policy's hooks see of the session. */
static kv_policy_view policy_view(const strata_session *session, bool prompt_done)
{
    return (kv_policy_view){
        .seq = session->seq,
        .layer_count = (int32_t)session->model->params.layer_count,
        .kv_head_count = (int32_t)session->model->params.kv_head_count,
        .layer_is_windowed = session->layer_is_windowed,
        .budget = session->budget,
        .params = session->policy_params,
        .mass = session->mass,
        .mass_squares = session->mass_squares,
        .slot_arrays = session->slot_arrays,
        .slot_array_count = session->policy->slot_arrays,
        .context_length = session->context_length,
        .prompt_done = prompt_done,
        .head_scores = session->head_scores,
        .state = session->policy_state,
        .demote_to = session->demote_to,
    };
}

const char *strata_kv_precisions(void)
{
    static char names[96];
    if (names[0] == '\0')
        kv_precision_list_names(names, sizeof names);
    return names;
}

/* Splits "policy+precision" (either part alone too: "snapkv", "q8") into
 * the eviction policy (full when only a precision is named) and the
 * precision, checked against the pool. */
static strata_status parse_policy_name(strata_session *session, const char *name, const kv_policy_ops **policy,
                                       strata_error *err)
{
    session->precision = kv_pool_configuration(session->model->kv_pool)->storage;
    session->demote_to = session->precision;
    if (strlen(name) >= sizeof session->policy_name)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT, "KV policy name '%.40s...' is too long", name);
    snprintf(session->policy_name, sizeof session->policy_name, "%s", name);
    char first[64];
    const char *plus = strchr(name, '+');
    snprintf(first, sizeof first, "%.*s", (int)(plus != NULL ? (size_t)(plus - name) : strlen(name)), name);
    const char *second = plus != NULL ? plus + 1 : NULL;
    char precisions[96];
    kv_precision_list_names(precisions, sizeof precisions);
    *policy = kv_policy_find(first);
    if (*policy == NULL && second == NULL && kv_precision_find(first, NULL) != NULL) {
        /* A precision alone; "mixed" alone demotes what h2o would evict. */
        *policy = strcmp(first, kv_precision_mixed.name) == 0 ? &kv_policy_h2o : &kv_policy_full;
        second = first;
    }
    if (*policy == NULL)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                           "unknown KV policy '%s' (policies: %s; precisions: %s; compose as POLICY+PRECISION, "
                           "e.g. snapkv+kivi4)",
                           first, strata_kv_policies(), precisions);
    if (second == NULL)
        return STRATA_OK;
    kv_storage storage;
    session->precision_ops = kv_precision_find(second, &storage);
    if (session->precision_ops == NULL)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT, "unknown KV precision '%s' in '%s' (precisions: %s)",
                           second, name, precisions);
    strata_status status = kv_pool_check_storage(session->model->kv_pool, storage, err);
    if (status != STRATA_OK)
        return status;
    session->precision = storage;
    return STRATA_OK;
}

/* Records which layers are sliding-window layers (policies leave them alone). */
static strata_status setup_windowed_flags(strata_session *session, strata_error *err)
{
    const strata_model *model = session->model;
    session->layer_is_windowed = calloc((size_t)model->params.layer_count, sizeof *session->layer_is_windowed);
    if (session->layer_is_windowed == NULL)
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "cannot allocate layer flags");
    for (int64_t il = 0; il < model->params.layer_count; il++)
        session->layer_is_windowed[il] = model->layers[il].sliding_window;
    return STRATA_OK;
}

/* A session that keeps statistics for compressed forks: the full cache, and
 * every statistic a policy reads after a prompt. */
static strata_status setup_statistics_keeper(strata_session *session, const kv_policy_ops *policy, int64_t tokens,
                                             float ratio, int64_t window, strata_error *err)
{
    if (window < 0 || window > session->context_length)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT, "KV statistics window %lld is outside 0..%lld tokens",
                           (long long)window, (long long)session->context_length);
    if (policy != &kv_policy_full || session->precision_ops != NULL || tokens != 0 || ratio != 0.0f)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                           "a session keeping statistics for compressed forks (kv_statistics_window) holds the full "
                           "cache: give no KV policy, precision or budget");
    session->statistics_window = window;
    int64_t tables = session->model->params.layer_count * session->model->params.kv_head_count;
    strata_status status = setup_windowed_flags(session, err);
    if (status == STRATA_OK)
        status = allocate_slot_arrays(session, &session->mass, tables, true, err);
    if (status == STRATA_OK)
        status = allocate_slot_arrays(session, &session->mass_squares, tables, true, err);
    if (status == STRATA_OK)
        status = allocate_slot_arrays(session, &session->mass_all, tables, true, err);
    return status;
}

/* Reads the policy fields of the options: the policy, its parameters, the
 * budget, and the statistics arrays it needs. */
static strata_status setup_policy(strata_session *session, const strata_session_options *options, strata_error *err)
{
    const strata_model *model = session->model;
    const model_params *p = &model->params;
    const char *name = options != NULL && options->kv_policy != NULL ? options->kv_policy : "full";
    const kv_policy_ops *policy = NULL;
    strata_status status = parse_policy_name(session, name, &policy, err);
    if (status == STRATA_OK)
        status = kv_policy_parse_composed(policy, session->precision_ops,
                                          options != NULL ? options->kv_policy_params : NULL, session->policy_params,
                                          session->precision_params, err);
    if (status != STRATA_OK)
        return status;
    if (session->precision_ops == &kv_precision_mixed) {
        bool four = kv_policy_param_value(session->precision_ops, session->precision_params, "bits") > 2;
        session->demote_to = four ? KV_STORAGE_KIVI4 : KV_STORAGE_KIVI2;
        status = kv_pool_check_storage(model->kv_pool, session->demote_to, err);
        if (status != STRATA_OK)
            return status;
    } else if (session->precision_ops != NULL) {
        session->precision_residual =
            (int64_t)kv_policy_param_value(session->precision_ops, session->precision_params, "residual");
    }
    int64_t tokens = options != NULL ? options->kv_budget_tokens : 0;
    float ratio = options != NULL ? options->kv_budget_ratio : 0.0f;
    if (tokens < 0 || !(ratio >= 0.0f && ratio <= 1.0f))
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                           "KV budget %lld tokens / ratio %g: give tokens >= 1 or a ratio in (0, 1]", (long long)tokens,
                           ratio);
    status = setup_head_profile(session, policy, options != NULL ? options->kv_head_profile : NULL, err);
    if (status != STRATA_OK)
        return status;
    int64_t window = options != NULL ? options->kv_statistics_window : 0;
    if (window != 0)
        return setup_statistics_keeper(session, policy, tokens, ratio, window, err);
    if (policy == &kv_policy_full || (tokens == 0 && ratio == 0.0f))
        return STRATA_OK; /* nothing to compress */
    session->policy = policy;
    session->budget_tokens = tokens;
    session->budget_ratio = ratio;
    status = setup_windowed_flags(session, err);
    if (status != STRATA_OK)
        return status;
    if (policy->slot_arrays < 0 || policy->slot_arrays > KV_POLICY_MAX_SLOT_ARRAYS)
        return strata_fail(err, STRATA_E_INTERNAL, "KV policy '%s' asks for %d slot arrays, more than %d",
                           policy->name, policy->slot_arrays, KV_POLICY_MAX_SLOT_ARRAYS);
    int64_t tables = p->layer_count * p->kv_head_count;
    status = allocate_slot_arrays(session, &session->mass, tables, policy->statistics != KV_STATISTICS_NONE, err);
    if (status == STRATA_OK)
        status = allocate_slot_arrays(session, &session->mass_squares, tables,
                                      policy->statistics != KV_STATISTICS_NONE && policy->mass_squares, err);
    if (status == STRATA_OK)
        status = allocate_slot_arrays(session, &session->slot_arrays, tables * policy->slot_arrays,
                                      policy->slot_arrays > 0, err);
    if (status == STRATA_OK && policy->select_blocks != NULL && policy->statistics != KV_STATISTICS_NONE)
        return strata_fail(err, STRATA_E_INTERNAL, "KV policy '%s' selects blocks and asks for statistics: the "
                           "attention kernel cannot collect them from a partial view", policy->name);
    if (status == STRATA_OK && policy->create_state != NULL) {
        kv_policy_view view = policy_view(session, false); /* no sequence yet */
        status = policy->create_state(&view, &session->policy_state, err);
    }
    return status;
}

/* Zeroes the statistics of the slots a step of `count` tokens will add (and,
 * for observation statistics at the start of a prompt, all of them). */
static void prepare_statistics(strata_session *session, int64_t count, bool new_prompt)
{
    if (session->policy == NULL && session->statistics_window == 0)
        return;
    const model_params *p = &session->model->params;
    int64_t tables = p->layer_count * p->kv_head_count;
    int64_t per_table = session->policy != NULL ? session->policy->slot_arrays : 0;
    bool observation = session->statistics_window > 0 || session->policy->statistics == KV_STATISTICS_OBSERVATION;
    for (int64_t t = 0; t < tables; t++) {
        int64_t slots = kv_seq_table(session->seq, (int32_t)(t / p->kv_head_count), (int32_t)(t % p->kv_head_count))
                            ->slot_count;
        int64_t from = new_prompt && observation ? 0 : slots;
        int64_t to = slots + count < session->context_length ? slots + count : session->context_length;
        if (session->mass_all != NULL && session->mass_all[t] != NULL && to > slots)
            memset(session->mass_all[t] + slots, 0, (size_t)(to - slots) * sizeof(float));
        float *statistics[2] = {session->mass != NULL ? session->mass[t] : NULL,
                                session->mass_squares != NULL ? session->mass_squares[t] : NULL};
        for (int a = 0; a < 2; a++)
            if (statistics[a] != NULL && to > from)
                memset(statistics[a] + from, 0, (size_t)(to - from) * sizeof(float));
        for (int64_t k = 0; k < per_table && to > slots; k++)
            if (session->slot_arrays[t * per_table + k] != NULL)
                memset(session->slot_arrays[t * per_table + k] + slots, 0, (size_t)(to - slots) * sizeof(float));
    }
}

/* Runs the policy's hook for this moment: after a prompt chunk, at the end
 * of a prompt, or after a decode step. */
static strata_status run_policy_hook(strata_session *session, policy_moment moment, bool prompt_done,
                                     strata_error *err)
{
    if (session->policy == NULL)
        return STRATA_OK;
    if (session->budget == 0) {
        /* A ratio resolves against the whole prompt: chunk hooks before its end see the tokens budget only. */
        if (session->budget_tokens == 0 && !prompt_done)
            return STRATA_OK;
        int64_t length = kv_seq_length(session->seq);
        session->budget = session->budget_tokens > 0 ? session->budget_tokens
                                                     : (int64_t)((double)session->budget_ratio * (double)length + 0.5);
        if (session->budget < 1)
            session->budget = 1;
    }
    kv_policy_view view = policy_view(session, prompt_done);
    strata_status (*hook)(const kv_policy_view *, strata_error *) =
        moment == POLICY_PREFILL_CHUNK ? session->policy->on_prefill_chunk
        : moment == POLICY_PREFILL_END ? session->policy->on_prefill_end
                                       : session->policy->on_decode_step;
    return hook != NULL ? hook(&view, err) : STRATA_OK;
}

/* Runs the policy's hook, then packs what the precision (if any) may pack. */
static strata_status run_policy(strata_session *session, policy_moment moment, bool prompt_done, strata_error *err)
{
    strata_status status = run_policy_hook(session, moment, prompt_done, err);
    if (status == STRATA_OK && session->precision_ops != NULL && session->precision_ops != &kv_precision_mixed)
        status = kv_precision_apply(session->seq, session->precision, session->precision_residual, err);
    return status;
}

/* The block selection for a step of count tokens: only a policy with
 * select_blocks, once its budget is known, and only for one token. */
static const kv_block_selection *policy_selection(strata_session *session, int64_t count)
{
    if (session->policy == NULL || session->policy->select_blocks == NULL || session->budget == 0 || count != 1)
        return NULL;
    session->selection = (kv_block_selection){.ops = session->policy, .view = policy_view(session, true)};
    return &session->selection;
}

/* Runs the hooks after an append of count tokens in one step. */
static strata_status run_policy_after_step(strata_session *session, size_t count, strata_error *err)
{
    if (count == 1)
        return run_policy(session, POLICY_DECODE_STEP, true, err);
    strata_status status = run_policy(session, POLICY_PREFILL_CHUNK, true, err);
    return status == STRATA_OK ? run_policy(session, POLICY_PREFILL_END, true, err) : status;
}

/* The first observed token of a chunk starting at `done` of a prompt of `count`. */
static int64_t mass_first_token(const strata_session *session, size_t done, size_t count, int64_t chunk)
{
    bool keeper = session->statistics_window > 0;
    if (count == 1 || (!keeper && (session->policy == NULL || session->policy->statistics != KV_STATISTICS_OBSERVATION)))
        return 0;
    int64_t observed = keeper ? session->statistics_window
                              : (int64_t)kv_policy_param_value(session->policy, session->policy_params, "observation");
    int64_t first = (int64_t)count - observed - (int64_t)done;
    return first < 0 ? 0 : first > chunk ? chunk : first;
}

strata_status strata_session_create(strata_model *model, const strata_session_options *options,
                                    strata_session **out, strata_error *err)
{
    *out = NULL;
    const model_params *p = &model->params;
    int64_t context = options != NULL ? options->context_length : 0;
    if (context < 0)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT, "context length %lld is negative", (long long)context);
    if (context == 0)
        context = p->context_length < SESSION_DEFAULT_CONTEXT ? p->context_length : SESSION_DEFAULT_CONTEXT;
    if (context > p->context_length)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT, "context length %lld exceeds the model's %lld tokens",
                           (long long)context, (long long)p->context_length);
    strata_session *session = calloc(1, sizeof *session);
    if (session == NULL)
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "cannot allocate a session");
    session->model = model;
    session->context_length = context;
    session->prefix_cache = options != NULL && options->prefix_cache;
    session->cache_namespace = options != NULL ? options->cache_namespace : 0;
    session->history = malloc((size_t)context * sizeof *session->history);
    strata_status status = setup_policy(session, options, err);
    if (status != STRATA_OK) {
        strata_session_destroy(session);
        return status;
    }
    status = session->history == NULL
        ? strata_fail(err, STRATA_E_OUT_OF_MEMORY, "cannot allocate %lld tokens of history", (long long)context)
        : kv_seq_create(model->kv_pool, &session->seq, err);
    if (status == STRATA_OK)
        status = forward_scratch_create(model, SESSION_CHUNK_TOKENS, &session->scratch, err);
    if (status == STRATA_OK)
        status = compute_context_reserve(
            model->compute,
            compute_attention_scratch_floats(p->head_count, p->kv_head_count, p->key_length, p->value_length,
                                             KV_DEFAULT_BLOCK_TOKENS, context),
            err);
    if (status != STRATA_OK) {
        strata_session_destroy(session);
        return status;
    }
    *out = session;
    return STRATA_OK;
}

strata_status strata_session_options_check(const strata_model *model, const strata_session_options *options,
                                           strata_error *err)
{
    /* The policy half of strata_session_create on a session that never gets KV: it reads only the model's
     * fixed configuration (and the head profile's file), so any thread may call it. */
    strata_session *probe = calloc(1, sizeof *probe);
    if (probe == NULL)
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "cannot allocate a session");
    probe->model = (strata_model *)model;
    probe->context_length = model->params.context_length;
    strata_status status = setup_policy(probe, options, err);
    strata_session_destroy(probe);
    return status;
}

/* Offers the session's completed token blocks to the prefix cache (a no-op
 * unless some block completed since the last offer). */
static void offer_to_cache(strata_session *session)
{
    /* A compressing session's blocks (merged slots, packed or compacted tables) are not the exact KV of their
     * tokens: it may read cached prefixes but never offers its own. */
    if (!session->prefix_cache || session->policy != NULL || session->precision_ops != NULL)
        return;
    int64_t length = kv_seq_length(session->seq);
    int64_t blocks = length / kv_pool_configuration(session->model->kv_pool)->block_tokens;
    if (blocks <= session->cached_blocks)
        return;
    /* Caching is an optimization: if it fails (out of memory), generation goes on. */
    if (kv_radix_insert(session->model->prefix_cache, session->cache_namespace, session->history, length,
                        session->seq, NULL) == STRATA_OK)
        session->cached_blocks = blocks;
}

void strata_session_destroy(strata_session *session)
{
    if (session == NULL)
        return;
    if (session->seq != NULL)
        offer_to_cache(session);
    kv_seq_destroy(session->seq);
    forward_scratch_destroy(session->scratch);
    int64_t tables = session->model->params.layer_count * session->model->params.kv_head_count;
    free_slot_arrays(session->mass, tables);
    free_slot_arrays(session->mass_squares, tables);
    free_slot_arrays(session->mass_all, tables);
    free_slot_arrays(session->slot_arrays, session->policy != NULL ? tables * session->policy->slot_arrays : 0);
    if (session->policy != NULL && session->policy->destroy_state != NULL)
        session->policy->destroy_state(session->policy_state);
    free(session->layer_is_windowed);
    free(session->head_profile);
    free(session->head_scores);
    free(session->logits);
    free(session->history);
    free(session);
}

static strata_status reserve_logits(strata_session *session, int64_t rows, strata_error *err)
{
    if (rows <= session->logit_capacity)
        return STRATA_OK;
    size_t bytes = (size_t)rows * (size_t)session->model->params.vocab_size * sizeof(float);
    float *grown = realloc(session->logits, bytes);
    if (grown == NULL)
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "cannot allocate %zu bytes of logits for %lld tokens", bytes,
                           (long long)rows);
    session->logits = grown;
    session->logit_capacity = rows;
    return STRATA_OK;
}

/* Checks that count tokens fit the session and lie in the vocabulary. */
static strata_status check_tokens(const strata_session *session, const int32_t *tokens, size_t count,
                                  strata_error *err)
{
    int64_t vocab = session->model->params.vocab_size, length = kv_seq_length(session->seq);
    if (count == 0)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT, "cannot append zero tokens");
    if ((int64_t)count > session->context_length - length)
        return strata_fail(err, STRATA_E_CONTEXT_FULL,
                           "appending %zu tokens to a session holding %lld would exceed its context of %lld tokens",
                           count, (long long)length, (long long)session->context_length);
    for (size_t i = 0; i < count; i++)
        if (tokens[i] < 0 || tokens[i] >= vocab)
            return strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                               "token %d at index %zu is outside the vocabulary (0..%lld)", tokens[i], i,
                               (long long)vocab - 1);
    return STRATA_OK;
}

/* Runs one step; on a full pool, evicts unused cached prefixes and tries once more. */
static strata_status step_with_eviction(strata_model *model, forward_scratch *scratch, const forward_item *items,
                                        int64_t item_count, strata_error *err)
{
    strata_status status = forward_step(model, scratch, items, item_count, err);
    if (status != STRATA_E_KV_FULL)
        return status;
    int64_t needed = 0;
    for (int64_t i = 0; i < item_count; i++)
        needed += kv_seq_blocks_needed(items[i].seq, items[i].count);
    if (kv_radix_evict(model->prefix_cache, needed) == 0)
        return status;
    return forward_step(model, scratch, items, item_count, err);
}

/* Records appended tokens, offers full blocks to the cache, frees window blocks. */
static void after_step(strata_session *session, const int32_t *tokens, int64_t count)
{
    int64_t length = kv_seq_length(session->seq);
    memcpy(session->history + length - count, tokens, (size_t)count * sizeof *tokens);
    offer_to_cache(session);
    forward_release_windows(session->model, session->seq);
}

/* Attaches the longest cached prefix of a prompt to an empty session that
 * uses the prefix cache, leaving at least one token to compute (so there are
 * logits to return); returns the tokens attached. */
static size_t attach_cached_prefix(strata_session *session, const int32_t *tokens, size_t count)
{
    strata_model *model = session->model;
    if (!session->prefix_cache || kv_seq_length(session->seq) != 0 || count < 2)
        return 0;
    int64_t attached = 0;
    strata_error ignored;
    /* Reading the cache is an optimization: if it fails, the prompt is computed. */
    if (kv_radix_attach_prefix(model->prefix_cache, session->cache_namespace, tokens, (int64_t)count,
                               (int64_t)count - 1, session->seq, &attached, &ignored) != STRATA_OK || attached <= 0)
        return 0;
    memcpy(session->history, tokens, (size_t)attached * sizeof *tokens);
    session->cached_tokens = attached;
    session->cached_blocks = attached / kv_pool_configuration(model->kv_pool)->block_tokens;
    return (size_t)attached;
}

strata_status strata_session_attach_prefix(strata_session *session, const int32_t *tokens, size_t count,
                                           size_t *attached, strata_error *err)
{
    *attached = 0;
    strata_status status = check_tokens(session, tokens, count, err);
    if (status != STRATA_OK)
        return status;
    session->cached_tokens = 0;
    *attached = attach_cached_prefix(session, tokens, count);
    return STRATA_OK;
}

strata_status strata_session_append(strata_session *session, const int32_t *tokens, size_t count, bool all_logits,
                                    strata_error *err)
{
    strata_model *model = session->model;
    int64_t vocab = model->params.vocab_size;
    strata_status status = check_tokens(session, tokens, count, err);
    if (status == STRATA_OK)
        status = reserve_logits(session, all_logits ? (int64_t)count : 1, err);
    if (status != STRATA_OK)
        return status;
    session->cached_tokens = 0;
    size_t done = all_logits ? 0 : attach_cached_prefix(session, tokens, count);
    bool new_prompt = true;
    while (done < count) {
        int64_t chunk = (int64_t)(count - done) < SESSION_CHUNK_TOKENS ? (int64_t)(count - done) : SESSION_CHUNK_TOKENS;
        bool last_chunk = done + (size_t)chunk == count;
        prepare_statistics(session, chunk, new_prompt && count > 1);
        new_prompt = false;
        forward_item item = {
            .seq = session->seq,
            .tokens = tokens + done,
            .count = chunk,
            .all_logits = all_logits,
            /* Only the last chunk's last token's logits are wanted, unless all are. */
            .logits = all_logits ? session->logits + done * (size_t)vocab : last_chunk ? session->logits : NULL,
            .slot_mass = session->mass,
            .mass_first_token = mass_first_token(session, done, count, chunk),
            .slot_mass_squares = session->mass_squares,
            .slot_mass_all = session->mass_all,
            .selection = policy_selection(session, chunk),
        };
        status = step_with_eviction(model, session->scratch, &item, 1, err);
        if (status != STRATA_OK) {
            /* Chunks already run stay: the session holds the tokens before this one. */
            session->logit_rows = 0;
            return status;
        }
        after_step(session, tokens + done, chunk);
        done += (size_t)chunk;
        if (count > 1 && (status = run_policy(session, POLICY_PREFILL_CHUNK, done == count, err)) != STRATA_OK)
            return status;
    }
    session->logit_rows = all_logits ? (int64_t)count : 1;
    return run_policy(session, count > 1 ? POLICY_PREFILL_END : POLICY_DECODE_STEP, true, err);
}

/* Runs the policy after a batched step: after a prompt chunk (and at the
 * prompt's end when the chunk ends it), or after a decode token. */
static strata_status run_policy_after_item(const strata_step_item *item, strata_error *err)
{
    if (item->prompt_length == 0)
        return run_policy(item->session, POLICY_DECODE_STEP, true, err);
    bool prompt_done = item->prompt_offset + item->count >= item->prompt_length;
    strata_status status = run_policy(item->session, POLICY_PREFILL_CHUNK, prompt_done, err);
    return status == STRATA_OK && prompt_done ? run_policy(item->session, POLICY_PREFILL_END, true, err) : status;
}

/* Checks one item of a batched step against the first session's model and the items before it. */
static strata_status check_step_item(const strata_step_item *items, size_t i, strata_error *err)
{
    strata_session *session = items[i].session;
    if (session == NULL)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT, "step item %zu has no session", i);
    if (session->model != items[0].session->model)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT, "session %zu belongs to another model", i);
    for (size_t j = 0; j < i; j++)
        if (items[j].session == session)
            return strata_fail(err, STRATA_E_INVALID_ARGUMENT, "session %zu appears twice in one step", i);
    if (items[i].prompt_length > 0 && items[i].prompt_offset + items[i].count > items[i].prompt_length)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                           "step item %zu: a chunk of %zu tokens at offset %zu runs past its prompt of %zu", i,
                           items[i].count, items[i].prompt_offset, items[i].prompt_length);
    if (items[i].prompt_length == 0 && items[i].count != 1)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                           "step item %zu: %zu decode tokens (a decode item has one; a prompt chunk gives its "
                           "prompt_length)", i, items[i].count);
    strata_status status = check_tokens(session, items[i].tokens, items[i].count, err);
    return status == STRATA_OK ? reserve_logits(session, 1, err) : status;
}

strata_status strata_sessions_step(const strata_step_item *items, size_t item_count, strata_error *err)
{
    if (item_count == 0)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT, "no sessions to step");
    forward_item *forward_items = calloc(item_count, sizeof *forward_items);
    if (forward_items == NULL)
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "cannot allocate a step of %zu sessions", item_count);
    strata_status status = STRATA_OK;
    size_t total = 0;
    for (size_t i = 0; i < item_count && status == STRATA_OK; i++) {
        status = check_step_item(items, i, err);
        total += items[i].count;
    }
    if (status == STRATA_OK && total > SESSION_CHUNK_TOKENS)
        status = strata_fail(err, STRATA_E_INVALID_ARGUMENT, "a step of %zu tokens exceeds %d", total,
                             SESSION_CHUNK_TOKENS);
    for (size_t i = 0; i < item_count && status == STRATA_OK; i++) {
        strata_session *session = items[i].session;
        bool prompt = items[i].prompt_length > 0;
        size_t count = items[i].count;
        prepare_statistics(session, (int64_t)count, prompt && items[i].prompt_offset == 0);
        forward_items[i] = (forward_item){
            .seq = session->seq, .tokens = items[i].tokens, .count = (int64_t)count, .logits = session->logits,
            .slot_mass = session->mass,
            .mass_first_token = prompt ? mass_first_token(session, items[i].prompt_offset, items[i].prompt_length,
                                                          (int64_t)count)
                                       : 0,
            .slot_mass_squares = session->mass_squares, .slot_mass_all = session->mass_all,
            .selection = policy_selection(session, (int64_t)count)};
    }
    if (status == STRATA_OK)
        status = step_with_eviction(items[0].session->model, items[0].session->scratch, forward_items,
                                    (int64_t)item_count, err);
    for (size_t i = 0; i < item_count && status == STRATA_OK; i++) {
        items[i].session->cached_tokens = 0;
        items[i].session->logit_rows = 1;
        after_step(items[i].session, items[i].tokens, (int64_t)items[i].count);
    }
    for (size_t i = 0; i < item_count && status == STRATA_OK; i++)
        status = run_policy_after_item(&items[i], err);
    free(forward_items);
    return status;
}

strata_status strata_sessions_append(strata_session *const *sessions, const int32_t *const *tokens,
                                     const size_t *counts, size_t session_count, strata_error *err)
{
    strata_step_item *items = calloc(session_count > 0 ? session_count : 1, sizeof *items);
    if (items == NULL)
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "cannot allocate a step of %zu sessions", session_count);
    /* Each multi-token append is a whole prompt; a single token is a decode step. */
    for (size_t i = 0; i < session_count; i++)
        items[i] = (strata_step_item){.session = sessions[i], .tokens = tokens[i], .count = counts[i],
                                      .prompt_length = counts[i] > 1 ? counts[i] : 0};
    strata_status status = strata_sessions_step(items, session_count, err);
    free(items);
    return status;
}

const float *strata_session_logits(const strata_session *session, size_t index)
{
    if ((int64_t)index >= session->logit_rows)
        return NULL;
    return session->logits + index * (size_t)session->model->params.vocab_size;
}

size_t strata_session_length(const strata_session *session)
{
    return (size_t)kv_seq_length(session->seq);
}

size_t strata_session_cached_tokens(const strata_session *session)
{
    return (size_t)session->cached_tokens;
}

strata_status strata_session_rewind(strata_session *session, size_t position, strata_error *err)
{
    int64_t length = kv_seq_length(session->seq);
    if ((int64_t)position > length)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                           "cannot rewind to position %zu: the session holds only %lld tokens", position,
                           (long long)length);
    strata_status status = kv_seq_rewind(session->seq, (int64_t)position, session->model->window_by_layer, err);
    if (status != STRATA_OK)
        return status;
    session->logit_rows = 0;
    int64_t block_tokens = kv_pool_configuration(session->model->kv_pool)->block_tokens;
    if (session->cached_blocks > (int64_t)position / block_tokens)
        session->cached_blocks = (int64_t)position / block_tokens;
    return STRATA_OK;
}

/* Copies count per-slot arrays (either list may be NULL: nothing to copy). */
static void copy_slot_arrays(float **to, float *const *from, int64_t count, int64_t length)
{
    if (to == NULL || from == NULL)
        return;
    for (int64_t i = 0; i < count; i++)
        if (from[i] != NULL && to[i] != NULL)
            memcpy(to[i], from[i], (size_t)length * sizeof(float));
}

/* Gives a freshly created child the parent's sequence (shared blocks), its
 * tokens and the logits of its last row; destroys the child on failure. */
static strata_status adopt_sequence(strata_session *child, const strata_session *parent, strata_error *err)
{
    kv_seq_destroy(child->seq);
    child->seq = NULL;
    strata_status status = kv_seq_fork(parent->seq, &child->seq, err);
    if (status == STRATA_OK && parent->logit_rows > 0)
        status = reserve_logits(child, 1, err);
    if (status != STRATA_OK) {
        strata_session_destroy(child);
        return status;
    }
    int64_t vocab = parent->model->params.vocab_size;
    memcpy(child->history, parent->history, (size_t)kv_seq_length(parent->seq) * sizeof *child->history);
    if (parent->logit_rows > 0) {
        memcpy(child->logits, parent->logits + (parent->logit_rows - 1) * (size_t)vocab, (size_t)vocab * sizeof(float));
        child->logit_rows = 1;
    }
    return STRATA_OK;
}

strata_status strata_session_fork(const strata_session *session, strata_session **out, strata_error *err)
{
    *out = NULL;
    strata_session_options options = {.context_length = (int32_t)session->context_length,
                                      .prefix_cache = session->prefix_cache,
                                      .cache_namespace = session->cache_namespace,
                                      .kv_policy = session->policy_name[0] != '\0' ? session->policy_name : NULL,
                                      .kv_budget_tokens = session->budget_tokens,
                                      .kv_budget_ratio = session->budget_ratio,
                                      .kv_head_profile = session->head_profile};
    strata_session *child = NULL;
    strata_status status = strata_session_create(session->model, &options, &child, err);
    if (status != STRATA_OK || (status = adopt_sequence(child, session, err)) != STRATA_OK)
        return status;
    child->cached_blocks = session->cached_blocks;
    child->budget = session->budget;
    memcpy(child->policy_params, session->policy_params, sizeof child->policy_params);
    memcpy(child->precision_params, session->precision_params, sizeof child->precision_params);
    child->precision_residual = session->precision_residual;
    child->demote_to = session->demote_to;
    int64_t tables = session->model->params.layer_count * session->model->params.kv_head_count;
    copy_slot_arrays(child->mass, session->mass, tables, session->context_length);
    copy_slot_arrays(child->mass_squares, session->mass_squares, tables, session->context_length);
    copy_slot_arrays(child->slot_arrays, session->slot_arrays,
                     session->policy != NULL ? tables * session->policy->slot_arrays : 0, session->context_length);
    if (session->policy_state != NULL) { /* the child's fresh state gives way to a copy of the parent's */
        session->policy->destroy_state(child->policy_state);
        child->policy_state = NULL;
        status = session->policy->clone_state(session->policy_state, &child->policy_state, err);
        if (status != STRATA_OK) {
            strata_session_destroy(child);
            return status;
        }
    }
    *out = child;
    return STRATA_OK;
}

/* Gives a compressed fork the statistics its policy reads, from a keeper. */
static strata_status take_statistics(strata_session *child, const strata_session *keeper, strata_error *err)
{
    const kv_policy_ops *policy = child->policy;
    if (policy == NULL || policy->statistics == KV_STATISTICS_NONE)
        return STRATA_OK;
    if (keeper->statistics_window == 0)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                           "KV policy '%s' reads attention statistics: fork it from a session created with "
                           "kv_statistics_window",
                           policy->name);
    int64_t tables = keeper->model->params.layer_count * keeper->model->params.kv_head_count;
    if (policy->statistics == KV_STATISTICS_ACCUMULATED) {
        copy_slot_arrays(child->mass, keeper->mass_all, tables, keeper->context_length);
        return STRATA_OK;
    }
    int64_t observation = (int64_t)kv_policy_param_value(policy, child->policy_params, "observation");
    if (observation != keeper->statistics_window)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                           "KV policy '%s' observes the last %lld prompt queries, the session it is forked from "
                           "kept statistics of the last %lld: give it observation=%lld or keep that window",
                           policy->name, (long long)observation, (long long)keeper->statistics_window,
                           (long long)keeper->statistics_window);
    copy_slot_arrays(child->mass, keeper->mass, tables, keeper->context_length);
    copy_slot_arrays(child->mass_squares, keeper->mass_squares, tables, keeper->context_length);
    return STRATA_OK;
}

strata_status strata_session_fork_compressed(const strata_session *keeper, const strata_session_options *options,
                                             strata_session **out, strata_error *err)
{
    *out = NULL;
    strata_session_options child_options = options != NULL ? *options : (strata_session_options){0};
    child_options.context_length = (int32_t)keeper->context_length;
    child_options.kv_statistics_window = 0;
    child_options.prefix_cache = false; /* a compressed variant's blocks are not the prompt's exact KV */
    strata_session *child = NULL;
    strata_status status = strata_session_create(keeper->model, &child_options, &child, err);
    if (status != STRATA_OK || (status = adopt_sequence(child, keeper, err)) != STRATA_OK)
        return status;
    status = take_statistics(child, keeper, err);
    /* The prompt is in the cache: compress as after a prompt read natively. */
    if (status == STRATA_OK)
        status = run_policy_after_step(child, 2, err);
    if (status != STRATA_OK) {
        strata_session_destroy(child);
        return status;
    }
    *out = child;
    return STRATA_OK;
}

uint64_t strata_session_kv_bytes(const strata_session *session, uint64_t *shared_bytes)
{
    uint64_t bytes = 0;
    kv_seq_usage_bytes(session->seq, NULL, &bytes, shared_bytes);
    return bytes;
}

void strata_session_kv_table_bytes(const strata_session *session, uint64_t *bytes)
{
    kv_seq_usage_bytes(session->seq, bytes, NULL, NULL);
}

void strata_model_kv_stats(const strata_model *model, strata_kv_stats *stats)
{
    kv_pool_usage usage;
    kv_pool_usage_get(model->kv_pool, &usage);
    kv_radix_stats radix;
    kv_radix_stats_get(model->prefix_cache, &radix);
    *stats = (strata_kv_stats){
        .budget_bytes = kv_pool_configuration(model->kv_pool)->budget_bytes,
        .block_bytes = usage.block_bytes,
        .block_tokens = kv_pool_configuration(model->kv_pool)->block_tokens,
        .total_blocks = usage.total_blocks,
        .used_blocks = usage.used_blocks,
        .shared_blocks = usage.shared_blocks,
        .free_blocks = usage.free_blocks,
        .used_bytes = usage.used_bytes,
        .shared_bytes = usage.shared_bytes,
        .free_bytes = usage.free_bytes,
        .prefix_lookups = radix.lookups,
        .prefix_hit_tokens = radix.hit_tokens,
        .prefix_cached_blocks = radix.nodes,
        .prefix_evicted_blocks = radix.evicted_blocks,
    };
}

uint64_t strata_model_kv_bytes_for_tokens(const strata_model *model, int64_t tokens)
{
    int64_t block_tokens = kv_pool_configuration(model->kv_pool)->block_tokens;
    int64_t blocks = 0;
    for (int64_t il = 0; il < model->params.layer_count; il++) {
        int64_t window = model->window_by_layer[il];
        /* A window layer holds its window, the block being filled and the one its oldest slot lies in. */
        int64_t held = window > 0 && tokens > window + 2 * block_tokens ? window + 2 * block_tokens : tokens;
        blocks += (held + block_tokens - 1) / block_tokens;
    }
    return (uint64_t)blocks * (uint64_t)model->params.kv_head_count * kv_pool_block_bytes(model->kv_pool);
}

uint64_t strata_model_kv_make_room(strata_model *model, uint64_t bytes)
{
    uint64_t block_bytes = kv_pool_block_bytes(model->kv_pool);
    int64_t wanted = (int64_t)((bytes + block_bytes - 1) / block_bytes), free_blocks = kv_pool_free_blocks(model->kv_pool);
    /* Cached prefixes go only when that makes the room: a request that must wait anyway keeps them. */
    if (free_blocks < wanted && free_blocks + kv_radix_evictable_blocks(model->prefix_cache) >= wanted)
        kv_radix_evict(model->prefix_cache, wanted);
    return (uint64_t)kv_pool_free_blocks(model->kv_pool) * block_bytes;
}

int32_t strata_model_kv_layout(const strata_model *model, int32_t *kv_heads)
{
    if (kv_heads != NULL)
        *kv_heads = (int32_t)model->params.kv_head_count;
    return (int32_t)model->params.layer_count;
}

void strata_model_kv_blocks_by_layer(const strata_model *model, int64_t *blocks)
{
    kv_pool_usage_by_owner(model->kv_pool, NULL, blocks);
}

void strata_session_kv_slots(const strata_session *session, int64_t *slots)
{
    int64_t layers = session->model->params.layer_count, heads = session->model->params.kv_head_count;
    for (int64_t il = 0; il < layers; il++)
        for (int64_t h = 0; h < heads; h++)
            slots[il * heads + h] = kv_seq_table(session->seq, (int32_t)il, (int32_t)h)->slot_count;
}

kv_seq *session_kv_seq(strata_session *session)
{
    return session->seq;
}
