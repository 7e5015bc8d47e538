/* tokenize/spm.c: SentencePiece-style tokenization (tokenizer.ggml.model = llama).
 *
 * A raw fragment (no special-token text left in it) gets an optional leading
 * space, then every space becomes '▁' (U+2581). Starting from one symbol per
 * UTF-8 character, the adjacent pair whose concatenation is a vocabulary
 * token with the highest score merges first (ties: leftmost). A symbol that
 * ends up matching no token is written as byte tokens <0xNN>, one per byte,
 * which is how characters missing from the vocabulary survive (byte
 * fallback). This is llama.cpp's llm_tokenizer_spm, pair for pair. */
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "tokenize/tokenizer_internal.h"

static const char escaped_space[3] = {'\xE2', '\x96', '\x81'}; /* U+2581 '▁' */

static bool spm_pair_priority(const void *context, const char *text, size_t left_length,
                              size_t right_length, double *priority)
{
    const tokenizer *tok = context;
    int32_t id = tokenizer_lookup(tok, text, left_length + right_length);
    if (id < 0)
        return false;
    *priority = -(double)tok->tokens[id].score;
    return true;
}

/* Appends the byte tokens of a symbol no vocabulary token matches. Bytes with
 * neither <0xNN> nor a one-byte piece fall back to <unk>, or are dropped. */
static strata_status push_bytes(const tokenizer *tok, const char *bytes, size_t length, token_list *out,
                                strata_error *err)
{
    for (size_t i = 0; i < length; i++) {
        int32_t id = tok->byte_tokens[(unsigned char)bytes[i]];
        if (id < 0)
            id = tok->unk;
        if (id < 0)
            continue;
        strata_status status = token_list_push(out, id, err);
        if (status != STRATA_OK)
            return status;
    }
    return STRATA_OK;
}

strata_status spm_encode(const tokenizer *tok, const char *text, size_t length, bool space_prefix,
                         token_list *out, strata_error *err)
{
    size_t total = length + (space_prefix ? 1 : 0);
    if (total > SIZE_MAX / 3)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT, "tokenizer: %zu bytes of text is too long",
                           length);
    char *escaped = malloc(total * 3 + 1);
    if (escaped == NULL)
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY,
                           "tokenizer: cannot allocate %zu bytes for a fragment of text", total * 3);
    size_t n = 0;
    if (space_prefix) {
        memcpy(escaped, escaped_space, 3);
        n = 3;
    }
    for (size_t i = 0; i < length; i++) {
        if (text[i] == ' ') {
            memcpy(escaped + n, escaped_space, 3);
            n += 3;
        } else {
            escaped[n++] = text[i];
        }
    }

    merge_work work = {0};
    size_t symbol_count = 0;
    strata_status status = merge_run(&work, escaped, n, spm_pair_priority, tok, &symbol_count, err);
    for (int32_t i = symbol_count > 0 ? 0 : -1; i >= 0 && status == STRATA_OK; i = work.symbols[i].next) {
        const merge_symbol *symbol = &work.symbols[i];
        int32_t id = tokenizer_lookup(tok, escaped + symbol->start, symbol->length);
        if (id >= 0)
            status = token_list_push(out, id, err);
        else
            status = push_bytes(tok, escaped + symbol->start, symbol->length, out, err);
    }
    merge_work_free(&work);
    free(escaped);
    return status;
}
