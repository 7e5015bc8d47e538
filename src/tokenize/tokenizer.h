/* tokenize/tokenizer.h: turning text into token ids and ids back into bytes,
 * the way llama.cpp does for the same GGUF.
 *
 * tokenizer_load reads the vocabulary a GGUF file carries (tokenizer.ggml.*)
 * and copies everything it needs, so the gguf_file may be closed afterwards.
 * Two vocabulary kinds are supported: `llama` (SentencePiece-style, merging
 * the adjacent pair that forms the highest-scoring token, with <0xNN> byte
 * fallback; spm.c) and `gpt2` (byte-level BPE: a pre-tokenizer regex chosen by
 * tokenizer.ggml.pre, then merges by rank; bpe.c). Before either runs,
 * control and user-defined token texts are cut out of the input and emitted
 * as their own ids (special.c).
 *
 * A loaded tokenizer is read-only: encoding and decoding from several threads
 * at once is safe. Token ids are int32_t, and -1 means "no such token". */
#ifndef STRATA_TOKENIZE_TOKENIZER_H
#define STRATA_TOKENIZE_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "format/gguf.h"
#include "strata.h"

typedef struct tokenizer tokenizer;

typedef enum tokenizer_kind {
    TOKENIZER_SPM, /* tokenizer.ggml.model = llama */
    TOKENIZER_BPE, /* tokenizer.ggml.model = gpt2 */
} tokenizer_kind;

/* Reads and validates the vocabulary of a GGUF file; *out is NULL on failure. */
strata_status tokenizer_load(const gguf_file *file, tokenizer **out, strata_error *err);
/* Frees a tokenizer; accepts NULL. */
void tokenizer_destroy(tokenizer *tok);

/* Tokenizes length bytes of text (any bytes; need not be NUL-terminated) into a
 * newly allocated array the caller frees with free(); *tokens is NULL when
 * *count is 0. add_special adds what the vocabulary asks for around the text
 * (BOS when tokenizer_adds_bos, EOS when tokenizer.ggml.add_eos_token), as
 * llama_tokenize's add_special does; parse_special turns control-token text
 * such as "<start_of_turn>" into its single token (user-defined tokens are
 * always matched, as in llama.cpp). */
strata_status tokenizer_encode(const tokenizer *tok, const char *text, size_t length,
                               bool add_special, bool parse_special, int32_t **tokens, size_t *count,
                               strata_error *err);

/* Writes the bytes token stands for in generated text into buffer (at most
 * capacity bytes, not NUL-terminated) and returns the full length, which may
 * exceed capacity. Like llama.cpp's llama_token_to_piece with special=false:
 * control and unknown tokens give nothing, <0xNN> gives the byte, '▁' becomes
 * a space (SPM) and byte-level BPE pieces go through the inverse GPT-2 byte
 * table. Out-of-range ids give nothing. */
size_t tokenizer_decode_token(const tokenizer *tok, int32_t token, char *buffer, size_t capacity);

/* Returns the token's raw vocabulary piece, NUL-terminated ("▁the", "<0x0A>",
 * "Ġthe"), or NULL when out of range; *length (if not NULL) gets its byte length. */
const char *tokenizer_piece(const tokenizer *tok, int32_t token, size_t *length);
/* Returns the id of the token whose piece is exactly these bytes, or -1 (the
 * last one when a piece appears twice, as in llama.cpp). */
int32_t tokenizer_find(const tokenizer *tok, const char *piece, size_t length);

/* Returns the number of tokens in the vocabulary. */
int32_t tokenizer_vocab_size(const tokenizer *tok);
/* Returns the vocabulary kind. */
tokenizer_kind tokenizer_kind_of(const tokenizer *tok);
/* Returns the beginning-of-sequence id, or -1. */
int32_t tokenizer_bos(const tokenizer *tok);
/* Returns the end-of-sequence id, or -1. */
int32_t tokenizer_eos(const tokenizer *tok);
/* Returns the end-of-turn id (tokenizer.ggml.eot_token_id, else the first of
 * <|eot_id|>, <|im_end|>, <end_of_turn>, <|endoftext|>, ... present), or -1. */
int32_t tokenizer_eot(const tokenizer *tok);
/* Returns true when the vocabulary asks for BOS at the start of a prompt
 * (tokenizer.ggml.add_bos_token, with llama.cpp's defaults when absent). */
bool tokenizer_adds_bos(const tokenizer *tok);
/* Returns true if token ends generation: EOS, EOT, or a token whose text is
 * an end-of-turn marker (<end_of_turn>, <|im_end|>, <|eot_id|>, <|endoftext|>, ...). */
bool tokenizer_is_end_of_generation(const tokenizer *tok, int32_t token);
/* Returns true for control tokens (BOS, EOS, <start_of_turn>, ...), which decode to nothing. */
bool tokenizer_is_control(const tokenizer *tok, int32_t token);

#endif
