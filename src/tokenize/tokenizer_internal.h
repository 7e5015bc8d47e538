/* tokenize/tokenizer_internal.h: what the tokenizer's source files share.
 *
 * The tokenizer struct itself, the per-token attributes (llama.cpp's
 * token_type values turned into bit flags, plus the overrides llama.cpp
 * applies by token text), the growable id list the encoders append to, and
 * the entry points of special.c (cutting out special-token text), spm.c and
 * bpe.c (the two vocabulary algorithms). Nothing outside src/tokenize
 * includes this header. */
#ifndef STRATA_TOKENIZE_TOKENIZER_INTERNAL_H
#define STRATA_TOKENIZE_TOKENIZER_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/hash_map.h"
#include "format/gguf.h"
#include "tokenize/tokenizer.h"

enum token_attr {
    TOKEN_NORMAL = 1 << 0,
    TOKEN_UNKNOWN = 1 << 1,
    TOKEN_CONTROL = 1 << 2,
    TOKEN_USER_DEFINED = 1 << 3,
    TOKEN_UNUSED = 1 << 4,
    TOKEN_BYTE = 1 << 5,
    TOKEN_END_OF_GENERATION = 1 << 6,
    TOKEN_RSTRIP = 1 << 7, /* splitting this special token also eats the white space after it */
};

/* One vocabulary entry; its piece is pieces[offset .. offset + length), NUL-terminated. */
typedef struct token_entry {
    uint32_t offset;
    uint32_t length;
    float score;
    uint8_t attr;
} token_entry;

typedef struct special_tokens special_tokens;
typedef struct bpe_model bpe_model;

struct tokenizer {
    tokenizer_kind kind;
    int32_t n_tokens;
    token_entry *tokens;
    char *pieces;          /* every piece, each followed by a NUL */
    hash_map *piece_ids;   /* piece bytes -> id (keys point into pieces) */
    int32_t bos, eos, eot, unk;
    bool add_bos, add_eos;
    bool add_space_prefix; /* SPM: a space before text that starts the input or follows a special token */
    int32_t byte_tokens[256]; /* SPM byte fallback: the id of <0xNN> (or of the 1-byte piece), or -1 */
    special_tokens *specials;
    bpe_model *bpe;        /* NULL for SPM */
};

/* A growable array of token ids. */
typedef struct token_list {
    int32_t *ids;
    size_t count;
    size_t capacity;
} token_list;

/* Appends one id, growing the array as needed. */
strata_status token_list_push(token_list *list, int32_t id, strata_error *err);

/* Finds key and checks that it is an array of element_type with at least
 * minimum_count elements; *out is NULL when it is absent and not required. */
strata_status tokenizer_find_array(const gguf_file *file, const char *key, gguf_value_type element_type,
                                   uint64_t minimum_count, bool required, const gguf_value **out,
                                   strata_error *err);

/* Returns the id of the piece with exactly these bytes, or -1. */
int32_t tokenizer_lookup(const tokenizer *tok, const void *bytes, size_t length);

/* A piece of the input after special-token splitting: raw text [offset,
 * offset + length) when token is -1, otherwise one special token. */
typedef struct text_fragment {
    size_t offset;
    size_t length;
    int32_t token;
} text_fragment;

/* Indexes the control, unknown and user-defined tokens of tok for splitting. */
strata_status special_tokens_build(const tokenizer *tok, special_tokens **out, strata_error *err);
/* Frees the index; accepts NULL. */
void special_tokens_destroy(special_tokens *specials);
/* Cuts text into raw fragments and special tokens (a newly allocated array
 * the caller frees). With parse_special false only user-defined tokens are cut. */
strata_status special_tokens_split(const tokenizer *tok, const char *text, size_t length,
                                   bool parse_special, text_fragment **fragments, size_t *count,
                                   strata_error *err);

/* One symbol of a word being merged: text [start, start + length) and its
 * neighbours in the chain (-1 at the ends); length 0 once merged into its left. */
typedef struct merge_symbol {
    uint32_t start;
    uint32_t length;
    int32_t prev;
    int32_t next;
} merge_symbol;

/* A candidate merge of two adjacent symbols; lower priority merges first. */
typedef struct merge_pair {
    double priority;
    int32_t left;
    int32_t right;
    uint32_t length; /* left + right length when queued: a stale pair no longer matches */
} merge_pair;

/* Reusable scratch memory of merge_run. */
typedef struct merge_work {
    merge_symbol *symbols;
    size_t symbol_capacity;
    merge_pair *heap;
    size_t heap_count;
    size_t heap_capacity;
} merge_work;

/* Decides whether the left_length + right_length bytes at text may merge, and
 * with which priority (lower first; ties go to the leftmost pair). */
typedef bool (*merge_priority_fn)(const void *context, const char *text, size_t left_length,
                                  size_t right_length, double *priority);

/* Splits text into UTF-8 characters (by lead byte, as llama.cpp does, so
 * malformed bytes stay grouped the same way) and merges adjacent symbols in
 * priority order until no pair may merge. The result is the chain starting at
 * work->symbols[0] (*symbol_count symbols were made; merged ones have length 0). */
strata_status merge_run(merge_work *work, const char *text, size_t length, merge_priority_fn priority,
                        const void *context, size_t *symbol_count, strata_error *err);
/* Frees the scratch memory (not work itself). */
void merge_work_free(merge_work *work);

/* Encodes one raw fragment with the SPM algorithm, appending to out;
 * space_prefix puts a space in front first. */
strata_status spm_encode(const tokenizer *tok, const char *text, size_t length, bool space_prefix,
                         token_list *out, strata_error *err);

/* Reads merges and picks the pre-tokenizer for a gpt2 vocabulary. */
strata_status bpe_model_load(const gguf_file *file, tokenizer *tok, strata_error *err);
/* Frees the BPE state; accepts NULL. */
void bpe_model_destroy(bpe_model *bpe);
/* Encodes one raw fragment with byte-level BPE, appending to out. */
strata_status bpe_encode(const tokenizer *tok, const char *text, size_t length, token_list *out,
                         strata_error *err);
/* Writes a normal BPE token's bytes (its piece through the inverse byte
 * table) into buffer like tokenizer_decode_token; returns the full length. */
size_t bpe_decode_piece(const bpe_model *bpe, const char *piece, size_t length, char *buffer,
                        size_t capacity);

/* Returns the byte length of the UTF-8 sequence led by byte, from its top four
 * bits alone (1 for continuation bytes), as llama.cpp's unicode_len_utf8. */
static inline size_t utf8_sequence_length(unsigned char byte)
{
    static const unsigned char lengths[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return lengths[byte >> 4];
}

#endif
