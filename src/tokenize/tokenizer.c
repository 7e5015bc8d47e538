/* tokenize/tokenizer.c: loading a GGUF vocabulary, and the encode/decode
 * entry points.
 *
 * Loading copies every piece into one arena (NUL-terminated, so pieces can be
 * handed out as C strings), indexes them by text in a hash map, turns
 * tokenizer.ggml.token_type into attribute flags and reads the special ids
 * and flags with llama.cpp's defaults. Like llama.cpp it then adjusts some
 * tokens by their text: end-of-turn markers (<end_of_turn>, <|im_end|>,
 * <|eot_id|>, <|endoftext|>, ...) and fill-in-the-middle markers become
 * control tokens, and the end-of-turn markers end generation.
 *
 * Encoding cuts special-token text out first (special.c) and hands each raw
 * fragment to the vocabulary's algorithm (spm.c, bpe.c). Every array read
 * from the file is checked against the token count before use, so a
 * malformed vocabulary is an error, never a crash. */
#include "tokenize/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "tokenize/tokenizer_internal.h"

/* Tokens llama.cpp recognises by text: what it adds to their attributes, and
 * whether an unset tokenizer.ggml.eot_token_id may point at them (the first
 * present in this order wins). */
static const struct {
    const char *text;
    uint8_t attr;
    bool end_of_turn;
} text_rules[] = {
    {"<|eot_id|>", TOKEN_CONTROL | TOKEN_END_OF_GENERATION, true},
    {"<|im_end|>", TOKEN_CONTROL | TOKEN_END_OF_GENERATION, true},
    {"<|end|>", TOKEN_CONTROL | TOKEN_END_OF_GENERATION, true},
    {"<end_of_turn>", TOKEN_CONTROL | TOKEN_END_OF_GENERATION, true},
    {"<|endoftext|>", TOKEN_CONTROL | TOKEN_END_OF_GENERATION, true},
    {"<|end_of_text|>", TOKEN_CONTROL | TOKEN_END_OF_GENERATION, true},
    {"<EOT>", TOKEN_CONTROL | TOKEN_END_OF_GENERATION, true},
    {"<|eom_id|>", TOKEN_CONTROL | TOKEN_END_OF_GENERATION, false},
    {"<eos>", TOKEN_CONTROL | TOKEN_END_OF_GENERATION, false},
    /* llama.cpp ends generation on </s> everywhere, even where it is Gemma 3's
     * user-defined HTML tag; strata follows so both tokenize and stop alike. */
    {"</s>", TOKEN_CONTROL | TOKEN_END_OF_GENERATION, false},
    {"<|fim_prefix|>", TOKEN_CONTROL, false},
    {"<|fim_suffix|>", TOKEN_CONTROL, false},
    {"<|fim_middle|>", TOKEN_CONTROL, false},
    {"<|fim_pad|>", TOKEN_CONTROL | TOKEN_END_OF_GENERATION, false},
    {"<|repo_name|>", TOKEN_CONTROL | TOKEN_END_OF_GENERATION, false},
    {"<|file_sep|>", TOKEN_CONTROL | TOKEN_END_OF_GENERATION, false},
};

strata_status token_list_push(token_list *list, int32_t id, strata_error *err)
{
    if (list->count == list->capacity) {
        size_t capacity = list->capacity ? list->capacity * 2 : 64;
        int32_t *ids = realloc(list->ids, capacity * sizeof *ids);
        if (ids == NULL)
            return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "tokenizer: cannot grow the token list to %zu ids",
                               capacity);
        list->ids = ids;
        list->capacity = capacity;
    }
    list->ids[list->count++] = id;
    return STRATA_OK;
}

int32_t tokenizer_lookup(const tokenizer *tok, const void *bytes, size_t length)
{
    int64_t id = -1;
    return hash_map_get(tok->piece_ids, bytes, length, &id) ? (int32_t)id : -1;
}

strata_status tokenizer_find_array(const gguf_file *file, const char *key, gguf_value_type element_type,
                                   uint64_t minimum_count, bool required, const gguf_value **out,
                                   strata_error *err)
{
    *out = NULL;
    const gguf_value *value = gguf_find(file, key);
    if (value == NULL && !required)
        return STRATA_OK;
    if (value == NULL)
        return strata_fail(err, STRATA_E_FORMAT, "tokenizer: %s is missing", key);
    if (value->type != GGUF_TYPE_ARRAY)
        return strata_fail(err, STRATA_E_FORMAT, "tokenizer: %s is a %s; it must be an array of %s", key,
                           gguf_value_type_name(value->type), gguf_value_type_name(element_type));
    if (value->as.array.element_type != element_type)
        return strata_fail(err, STRATA_E_FORMAT, "tokenizer: %s is an array of %s; it must be an array of %s", key,
                           gguf_value_type_name(value->as.array.element_type), gguf_value_type_name(element_type));
    if (value->as.array.count < minimum_count)
        return strata_fail(err, STRATA_E_FORMAT, "tokenizer: %s has %llu elements, fewer than the %llu it needs", key,
                           (unsigned long long)value->as.array.count, (unsigned long long)minimum_count);
    *out = value;
    return STRATA_OK;
}

static uint8_t attr_from_type(int32_t type)
{
    switch (type) {
    case 1: return TOKEN_NORMAL;
    case 2: return TOKEN_UNKNOWN;
    case 3: return TOKEN_CONTROL;
    case 4: return TOKEN_USER_DEFINED;
    case 5: return TOKEN_UNUSED;
    case 6: return TOKEN_BYTE;
    default: return 0; /* undefined: decodes to nothing, never split out */
    }
}

/* Returns a piece's length up to its first NUL byte, as llama.cpp sees it. */
static size_t piece_length(const gguf_string *string)
{
    return string->length > 0 ? strnlen(string->data, (size_t)string->length) : 0;
}

/* Copies the pieces into the arena and reads scores and types. */
static strata_status load_tokens(const gguf_file *file, tokenizer *tok, strata_error *err)
{
    const gguf_value *list = NULL;
    strata_status status = tokenizer_find_array(file, "tokenizer.ggml.tokens", GGUF_TYPE_STRING, 1, true, &list, err);
    if (status != STRATA_OK)
        return status;
    uint64_t count = list->as.array.count;
    if (count > INT32_MAX)
        return strata_fail(err, STRATA_E_FORMAT, "tokenizer: the vocabulary has %llu tokens, more than the limit of %d",
                           (unsigned long long)count, INT32_MAX);
    tok->n_tokens = (int32_t)count;

    /* Scores are f32, or i32 in some converted files (llama.cpp takes both). */
    const gguf_value *score_value = gguf_find(file, "tokenizer.ggml.scores"), *scores = NULL, *types = NULL;
    bool integer_scores = score_value != NULL && score_value->type == GGUF_TYPE_ARRAY &&
                          score_value->as.array.element_type == GGUF_TYPE_INT32;
    status = tokenizer_find_array(file, "tokenizer.ggml.scores", integer_scores ? GGUF_TYPE_INT32 : GGUF_TYPE_FLOAT32,
                                  count, false, &scores, err);
    if (status == STRATA_OK)
        status = tokenizer_find_array(file, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, count, false, &types, err);
    if (status != STRATA_OK)
        return status;

    /* llama.cpp reads pieces as C strings (a NUL byte ends one) and renames empty ones "[EMPTY_<id>]". */
    const gguf_string *strings = list->as.array.strings;
    uint64_t bytes = 0;
    for (int32_t i = 0; i < tok->n_tokens; i++) {
        size_t length = piece_length(&strings[i]);
        bytes += (length > 0 ? length : 24) + 1;
    }
    if (bytes > UINT32_MAX)
        return strata_fail(err, STRATA_E_FORMAT,
                           "tokenizer: the vocabulary's pieces take %llu bytes, more than the limit of %u",
                           (unsigned long long)bytes, (unsigned)UINT32_MAX);
    tok->tokens = calloc((size_t)tok->n_tokens, sizeof *tok->tokens);
    tok->pieces = malloc((size_t)bytes);
    if (tok->tokens == NULL || tok->pieces == NULL)
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "tokenizer: cannot allocate %llu bytes for %d pieces",
                           (unsigned long long)bytes, tok->n_tokens);
    status = hash_map_create((size_t)tok->n_tokens, &tok->piece_ids, err);
    uint32_t offset = 0;
    for (int32_t i = 0; i < tok->n_tokens && status == STRATA_OK; i++) {
        token_entry *entry = &tok->tokens[i];
        char *piece = tok->pieces + offset;
        size_t length = piece_length(&strings[i]);
        if (length > 0)
            memcpy(piece, strings[i].data, length);
        else
            length = (size_t)snprintf(piece, 24, "[EMPTY_%d]", (int)i);
        piece[length] = '\0';
        entry->offset = offset;
        entry->length = (uint32_t)length;
        offset += (uint32_t)length + 1;
        if (scores != NULL && integer_scores) {
            int32_t score = 0;
            memcpy(&score, (const char *)scores->as.array.data + 4 * (size_t)i, 4);
            entry->score = (float)score;
        } else if (scores != NULL) {
            memcpy(&entry->score, (const char *)scores->as.array.data + 4 * (size_t)i, 4);
        }
        int32_t type = 1;
        if (types != NULL)
            memcpy(&type, (const char *)types->as.array.data + 4 * (size_t)i, 4);
        entry->attr = attr_from_type(type);
        status = hash_map_put(tok->piece_ids, piece, length, i, err); /* a later duplicate wins */
    }
    return status;
}

/* Reads an optional token-id key; an id past the vocabulary keeps the default, as in llama.cpp. */
static strata_status read_id(const gguf_file *file, const char *key, const tokenizer *tok, int32_t *id,
                             strata_error *err)
{
    uint64_t value = 0;
    bool found = false;
    strata_status status = gguf_get_uint(file, key, &value, &found, err);
    if (status == STRATA_OK && found && value < (uint64_t)tok->n_tokens)
        *id = (int32_t)value;
    if (*id >= tok->n_tokens)
        *id = -1;
    return status;
}

static strata_status read_flag(const gguf_file *file, const char *key, bool *flag, strata_error *err)
{
    bool value = false, found = false;
    strata_status status = gguf_get_bool(file, key, &value, &found, err);
    if (status == STRATA_OK && found)
        *flag = value;
    return status;
}

/* Reads the special ids and flags, then applies llama.cpp's by-text rules. */
static strata_status load_specials(const gguf_file *file, tokenizer *tok, strata_error *err)
{
    int32_t eom = -1;
    strata_status status = read_id(file, "tokenizer.ggml.bos_token_id", tok, &tok->bos, err);
    if (status == STRATA_OK)
        status = read_id(file, "tokenizer.ggml.eos_token_id", tok, &tok->eos, err);
    if (status == STRATA_OK)
        status = read_id(file, "tokenizer.ggml.unknown_token_id", tok, &tok->unk, err);
    if (status == STRATA_OK)
        status = read_id(file, "tokenizer.ggml.eot_token_id", tok, &tok->eot, err);
    if (status == STRATA_OK)
        status = read_id(file, "tokenizer.ggml.eom_token_id", tok, &eom, err);
    if (status == STRATA_OK)
        status = read_flag(file, "tokenizer.ggml.add_bos_token", &tok->add_bos, err);
    if (status == STRATA_OK)
        status = read_flag(file, "tokenizer.ggml.add_eos_token", &tok->add_eos, err);
    if (status == STRATA_OK)
        status = read_flag(file, "tokenizer.ggml.add_space_prefix", &tok->add_space_prefix, err);
    if (status != STRATA_OK)
        return status;
    /* llama.cpp would stop on an assertion; strata just adds nothing. */
    tok->add_bos = tok->add_bos && tok->bos >= 0;
    tok->add_eos = tok->add_eos && tok->eos >= 0;

    for (size_t r = 0; r < sizeof text_rules / sizeof text_rules[0]; r++) {
        int32_t id = tokenizer_lookup(tok, text_rules[r].text, strlen(text_rules[r].text));
        if (id < 0)
            continue;
        tok->tokens[id].attr |= text_rules[r].attr;
        if (text_rules[r].end_of_turn && tok->eot < 0)
            tok->eot = id;
    }
    const int32_t enders[] = {tok->eos, tok->eot, eom};
    for (size_t i = 0; i < sizeof enders / sizeof enders[0]; i++)
        if (enders[i] >= 0)
            tok->tokens[enders[i]].attr |= TOKEN_END_OF_GENERATION;

    for (int b = 0; b < 256; b++) {
        char hex[8];
        snprintf(hex, sizeof hex, "<0x%02X>", b);
        char byte = (char)b;
        tok->byte_tokens[b] = tokenizer_lookup(tok, hex, 6);
        if (tok->byte_tokens[b] < 0)
            tok->byte_tokens[b] = tokenizer_lookup(tok, &byte, 1);
    }
    return STRATA_OK;
}

/* llama.cpp gives Phi-3's special tokens (by general.name) the rstrip
 * attribute: white space after them is dropped when they are split out. */
static strata_status apply_model_quirks(const gguf_file *file, tokenizer *tok, strata_error *err)
{
    gguf_string name = {0};
    bool found = false;
    strata_status status = gguf_get_string(file, "general.name", &name, &found, err);
    if (status != STRATA_OK || !found)
        return status;
    char lower[256];
    size_t length = name.length < sizeof lower - 1 ? (size_t)name.length : sizeof lower - 1;
    for (size_t i = 0; i < length; i++)
        lower[i] = name.data[i] >= 'A' && name.data[i] <= 'Z' ? (char)(name.data[i] - 'A' + 'a') : name.data[i];
    lower[length] = '\0';
    if (strstr(lower, "phi-3") == NULL && strstr(lower, "phi3") == NULL)
        return STRATA_OK;
    for (int32_t id = 0; id < tok->n_tokens; id++)
        if (tok->tokens[id].attr & (TOKEN_CONTROL | TOKEN_USER_DEFINED | TOKEN_UNKNOWN))
            tok->tokens[id].attr |= TOKEN_RSTRIP;
    static const char *const keep_space[] = {"<unk>", "<s>", "<|endoftext|>"};
    for (size_t i = 0; i < sizeof keep_space / sizeof keep_space[0]; i++) {
        int32_t id = tokenizer_lookup(tok, keep_space[i], strlen(keep_space[i]));
        if (id >= 0)
            tok->tokens[id].attr &= (uint8_t)~TOKEN_RSTRIP;
    }
    return STRATA_OK;
}

/* Loads everything; on failure the caller destroys the partial tokenizer. */
static strata_status load(const gguf_file *file, tokenizer *tok, strata_error *err)
{
    gguf_string model = {0};
    bool found = false;
    strata_status status = gguf_get_string(file, "tokenizer.ggml.model", &model, &found, err);
    if (status != STRATA_OK)
        return status;
    if (!found)
        return strata_fail(err, STRATA_E_FORMAT, "tokenizer: the file names no tokenizer (tokenizer.ggml.model)");
    if (model.length == 5 && memcmp(model.data, "llama", 5) == 0) {
        tok->kind = TOKENIZER_SPM;
        tok->bos = 1, tok->eos = 2, tok->unk = 0;
        tok->add_bos = true;
        tok->add_space_prefix = true;
    } else if (model.length == 4 && memcmp(model.data, "gpt2", 4) == 0) {
        tok->kind = TOKENIZER_BPE;
        tok->bos = 11, tok->eos = 11; /* llama.cpp's defaults for gpt2 vocabularies */
    } else {
        return strata_fail(err, STRATA_E_UNSUPPORTED,
                           "tokenizer: tokenizer.ggml.model '%.*s' is not supported; strata reads 'llama' (SPM) and "
                           "'gpt2' (byte-level BPE)",
                           (int)(model.length > 64 ? 64 : model.length), model.data);
    }
    status = load_tokens(file, tok, err);
    if (status == STRATA_OK && tok->kind == TOKENIZER_BPE)
        status = bpe_model_load(file, tok, err); /* sets the pre-tokenizer's add_bos default */
    if (status == STRATA_OK)
        status = load_specials(file, tok, err);
    if (status == STRATA_OK)
        status = apply_model_quirks(file, tok, err);
    if (status == STRATA_OK)
        status = special_tokens_build(tok, &tok->specials, err);
    return status;
}

strata_status tokenizer_load(const gguf_file *file, tokenizer **out, strata_error *err)
{
    *out = NULL;
    tokenizer *tok = calloc(1, sizeof *tok);
    if (tok == NULL)
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "tokenizer: cannot allocate the tokenizer");
    tok->bos = tok->eos = tok->eot = tok->unk = -1;
    strata_status status = load(file, tok, err);
    if (status != STRATA_OK) {
        tokenizer_destroy(tok);
        return status;
    }
    *out = tok;
    return STRATA_OK;
}

void tokenizer_destroy(tokenizer *tok)
{
    if (tok == NULL)
        return;
    special_tokens_destroy(tok->specials);
    bpe_model_destroy(tok->bpe);
    hash_map_destroy(tok->piece_ids);
    free(tok->pieces);
    free(tok->tokens);
    free(tok);
}

strata_status tokenizer_encode(const tokenizer *tok, const char *text, size_t length,
                               bool add_special, bool parse_special, int32_t **tokens, size_t *count,
                               strata_error *err)
{
    *tokens = NULL;
    *count = 0;
    if (text == NULL && length > 0)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT, "tokenizer: text is NULL but its length is %zu", length);
    text_fragment *fragments = NULL;
    size_t fragment_count = 0;
    token_list list = {0};
    strata_status status = special_tokens_split(tok, text, length, parse_special, &fragments, &fragment_count, err);
    if (status == STRATA_OK && add_special && tok->add_bos)
        status = token_list_push(&list, tok->bos, err);
    bool after_special = true; /* SPM's space prefix goes at the start and after each special token */
    for (size_t f = 0; f < fragment_count && status == STRATA_OK; f++) {
        const text_fragment *fragment = &fragments[f];
        if (fragment->token >= 0) {
            status = token_list_push(&list, fragment->token, err);
            after_special = true;
        } else if (tok->kind == TOKENIZER_SPM) {
            status = spm_encode(tok, text + fragment->offset, fragment->length,
                                tok->add_space_prefix && after_special, &list, err);
            after_special = false;
        } else {
            status = bpe_encode(tok, text + fragment->offset, fragment->length, &list, err);
        }
    }
    if (status == STRATA_OK && add_special && tok->add_eos)
        status = token_list_push(&list, tok->eos, err);
    free(fragments);
    if (status != STRATA_OK) {
        free(list.ids);
        return status;
    }
    *tokens = list.ids;
    *count = list.count;
    return STRATA_OK;
}

/* Returns the byte a <0xNN> piece stands for, or -1 when it is not of that form. */
static int byte_of_piece(const char *piece, size_t length)
{
    if (length != 6 || memcmp(piece, "<0x", 3) != 0 || piece[5] != '>')
        return -1;
    int value = 0;
    for (int i = 3; i < 5; i++) {
        char c = piece[i];
        int digit = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (digit < 0)
            return -1;
        value = value * 16 + digit;
    }
    return value;
}

/* Copies bytes into buffer as far as capacity allows; returns how many there were. */
static size_t copy_out(const char *bytes, size_t length, char *buffer, size_t capacity)
{
    if (capacity > 0)
        memcpy(buffer, bytes, length < capacity ? length : capacity);
    return length;
}

size_t tokenizer_decode_token(const tokenizer *tok, int32_t token, char *buffer, size_t capacity)
{
    if (token < 0 || token >= tok->n_tokens)
        return 0;
    const token_entry *entry = &tok->tokens[token];
    const char *piece = tok->pieces + entry->offset;
    if (entry->attr & (TOKEN_CONTROL | TOKEN_UNKNOWN))
        return 0;
    if (entry->attr & TOKEN_USER_DEFINED)
        return copy_out(piece, entry->length, buffer, capacity);
    if (entry->attr & TOKEN_NORMAL) {
        if (tok->kind == TOKENIZER_BPE)
            return bpe_decode_piece(tok->bpe, piece, entry->length, buffer, capacity);
        size_t n = 0;
        for (size_t i = 0; i < entry->length; n++) {
            bool space = entry->length - i >= 3 && memcmp(piece + i, "\xE2\x96\x81", 3) == 0;
            if (n < capacity)
                buffer[n] = space ? ' ' : piece[i];
            i += space ? 3 : 1;
        }
        return n;
    }
    if (entry->attr & TOKEN_BYTE) {
        int byte = byte_of_piece(piece, entry->length);
        if (byte < 0)
            return copy_out(piece, entry->length, buffer, capacity);
        char value = (char)byte;
        return copy_out(&value, 1, buffer, capacity);
    }
    return 0; /* unused and undefined tokens */
}

const char *tokenizer_piece(const tokenizer *tok, int32_t token, size_t *length)
{
    if (token < 0 || token >= tok->n_tokens)
        return NULL;
    if (length != NULL)
        *length = tok->tokens[token].length;
    return tok->pieces + tok->tokens[token].offset;
}

int32_t tokenizer_find(const tokenizer *tok, const char *piece, size_t length)
{
    return tokenizer_lookup(tok, piece, length);
}

int32_t tokenizer_vocab_size(const tokenizer *tok)
{
    return tok->n_tokens;
}

tokenizer_kind tokenizer_kind_of(const tokenizer *tok)
{
    return tok->kind;
}

int32_t tokenizer_bos(const tokenizer *tok)
{
    return tok->bos;
}

int32_t tokenizer_eos(const tokenizer *tok)
{
    return tok->eos;
}

int32_t tokenizer_eot(const tokenizer *tok)
{
    return tok->eot;
}

bool tokenizer_adds_bos(const tokenizer *tok)
{
    return tok->add_bos;
}

bool tokenizer_is_end_of_generation(const tokenizer *tok, int32_t token)
{
    return token >= 0 && token < tok->n_tokens && (tok->tokens[token].attr & TOKEN_END_OF_GENERATION) != 0;
}

bool tokenizer_is_control(const tokenizer *tok, int32_t token)
{
    return token >= 0 && token < tok->n_tokens && (tok->tokens[token].attr & TOKEN_CONTROL) != 0;
}
