/* engine/session.c: a session is one token sequence with its own KV buffer.
 *
 * Appends longer than one step's scratch are cut into chunks of
 * SESSION_CHUNK_TOKENS, each one batched forward pass. Implements the
 * strata_session_* functions of strata.h. */
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "engine/forward.h"
#include "kv/kv_buffer.h"
#include "model/model.h"

enum { SESSION_CHUNK_TOKENS = 512, SESSION_DEFAULT_CONTEXT = 8192 };

struct strata_session {
    strata_model *model;
    kv_buffer *kv;
    forward_scratch *scratch;
    int64_t length;       /* tokens held */
    float *logits;        /* [logit_rows][vocab] */
    int64_t logit_rows;   /* rows of the last append */
    int64_t logit_capacity; /* rows allocated */
};

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
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                           "context length %lld exceeds the model's %lld tokens", (long long)context,
                           (long long)p->context_length);
    strata_session *session = calloc(1, sizeof *session);
    if (session == NULL)
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "cannot allocate a session");
    session->model = model;
    strata_status status = kv_buffer_create(p->layer_count, p->kv_head_count, p->key_length, p->value_length,
                                            context, &session->kv, err);
    if (status == STRATA_OK)
        status = forward_scratch_create(model, SESSION_CHUNK_TOKENS, &session->scratch, err);
    if (status == STRATA_OK)
        status = compute_context_reserve(model->compute,
                                         compute_attention_scratch_floats(p->head_count, p->kv_head_count,
                                                                          p->key_length, p->value_length, context),
                                         err);
    if (status != STRATA_OK) {
        strata_session_destroy(session);
        return status;
    }
    *out = session;
    return STRATA_OK;
}

void strata_session_destroy(strata_session *session)
{
    if (session == NULL)
        return;
    kv_buffer_destroy(session->kv);
    forward_scratch_destroy(session->scratch);
    free(session->logits);
    free(session);
}

static strata_status reserve_logits(strata_session *session, int64_t rows, strata_error *err)
{
    if (rows <= session->logit_capacity)
        return STRATA_OK;
    size_t bytes = (size_t)rows * (size_t)session->model->params.vocab_size * sizeof(float);
    float *grown = realloc(session->logits, bytes);
    if (grown == NULL)
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "cannot allocate %zu bytes of logits for %lld tokens",
                           bytes, (long long)rows);
    session->logits = grown;
    session->logit_capacity = rows;
    return STRATA_OK;
}

strata_status strata_session_append(strata_session *session, const int32_t *tokens, size_t count,
                                    bool all_logits, strata_error *err)
{
    strata_model *model = session->model;
    int64_t vocab = model->params.vocab_size;
    if (count == 0)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT, "cannot append zero tokens");
    if ((int64_t)count > session->kv->capacity - session->length)
        return strata_fail(err, STRATA_E_CONTEXT_FULL,
                           "appending %zu tokens to a session holding %lld would exceed its context of %lld tokens",
                           count, (long long)session->length, (long long)session->kv->capacity);
    for (size_t i = 0; i < count; i++)
        if (tokens[i] < 0 || tokens[i] >= vocab)
            return strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                               "token %d at index %zu is outside the vocabulary (0..%lld)", tokens[i], i,
                               (long long)vocab - 1);
    strata_status status = reserve_logits(session, all_logits ? (int64_t)count : 1, err);
    if (status != STRATA_OK)
        return status;
    for (size_t done = 0; done < count;) {
        int64_t chunk = (int64_t)(count - done) < SESSION_CHUNK_TOKENS ? (int64_t)(count - done)
                                                                        : SESSION_CHUNK_TOKENS;
        float *logits = all_logits ? session->logits + done * (size_t)vocab : session->logits;
        bool last_chunk = done + (size_t)chunk == count;
        if (!all_logits && !last_chunk)
            logits = NULL; /* only the last token's logits are wanted */
        forward_run(model, session->kv, session->scratch, tokens + done, chunk, session->length,
                    all_logits, logits);
        session->length += chunk;
        done += (size_t)chunk;
    }
    session->logit_rows = all_logits ? (int64_t)count : 1;
    return STRATA_OK;
}

const float *strata_session_logits(const strata_session *session, size_t index)
{
    if ((int64_t)index >= session->logit_rows)
        return NULL;
    return session->logits + index * (size_t)session->model->params.vocab_size;
}

size_t strata_session_length(const strata_session *session)
{
    return (size_t)session->length;
}

strata_status strata_session_rewind(strata_session *session, size_t position, strata_error *err)
{
    if ((int64_t)position > session->length)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                           "cannot rewind to position %zu: the session holds only %lld tokens", position,
                           (long long)session->length);
    /* Positions past the new length are simply overwritten by later appends. */
    session->length = (int64_t)position;
    session->logit_rows = 0;
    return STRATA_OK;
}
