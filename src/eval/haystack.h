/* eval/haystack.h: filler text for the evaluation tasks.
 *
 * A long-context task hides a few facts (needles) in a long text that does
 * not matter (the haystack). Two haystacks:
 *   noise  a handful of plain sentences repeated without end, as in RULER's
 *          noise haystack; the model can tell filler from needle at a glance.
 *   prose  real running text: the paragraphs of the Debian Administrator's
 *          Handbook (GPL-2+ or CC-BY-SA-3.0), fetched by scripts/fetch-prose.sh
 *          into a text file; harder, since the needles read like the text.
 *
 * eval_haystack_text cuts a deterministic stretch of filler, as sentences, of
 * at least a given number of tokens: the noise cycle from a sentence chosen by
 * the seed, or consecutive paragraphs from one chosen by the seed, wrapping
 * around at the end of the book. The caller inserts needles between sentences.
 * Tokens are counted by a callback, so this module knows nothing of models. */
#ifndef STRATA_EVAL_HAYSTACK_H
#define STRATA_EVAL_HAYSTACK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "strata.h"

/* Counts the tokens of text[0..length) (the runner passes the model's
 * tokenizer, tests a word counter); a negative count reports a failure.
 * Best without a start token: sentences are counted one by one and summed. */
typedef int64_t (*eval_token_counter)(void *context, const char *text, size_t length);

typedef enum eval_haystack_kind {
    EVAL_HAYSTACK_NOISE = 0,
    EVAL_HAYSTACK_PROSE,
    EVAL_HAYSTACK_KIND_COUNT,
} eval_haystack_kind;

/* An opened haystack; read-only once open, so generators may share it. */
typedef struct eval_haystack eval_haystack;

/* One sentence of a filler: bytes [offset, offset + length) of its text. */
typedef struct eval_sentence {
    size_t offset;
    size_t length;
    int64_t tokens;        /* the sentence counted on its own */
    bool paragraph_start;  /* the separator before it is "\n\n", not " " */
} eval_sentence;

/* A stretch of filler: its sentences joined by " " within a paragraph and
 * "\n\n" between paragraphs. Owns text and sentences (eval_filler_free). */
typedef struct eval_filler {
    char *text;            /* NUL-terminated */
    size_t length;
    eval_sentence *sentences;
    int64_t sentence_count;
    int64_t tokens;        /* sum of the sentences' counts */
} eval_filler;

/* Returns the name of a haystack kind ("noise", "prose"). */
const char *eval_haystack_kind_name(eval_haystack_kind kind);
/* Finds a haystack kind by name; the error lists the names. */
strata_status eval_haystack_kind_find(const char *name, eval_haystack_kind *out, strata_error *err);

/* Writes the prose file's default path, ${STRATA_CACHE:-$HOME/.cache/strata}/prose/debian-handbook.txt. */
strata_status eval_haystack_default_prose_path(char *buffer, size_t size, strata_error *err);

/* Opens a haystack; prose reads its text from path (NULL: the default path), noise ignores path. */
strata_status eval_haystack_open(eval_haystack_kind kind, const char *path, eval_haystack **out,
                                 strata_error *err);
/* Frees a haystack; accepts NULL. */
void eval_haystack_close(eval_haystack *haystack);

/* Returns the kind of an opened haystack. */
eval_haystack_kind eval_haystack_kind_of(const eval_haystack *haystack);
/* Returns the number of paragraphs (prose) or distinct sentences (noise) the haystack cycles through. */
int64_t eval_haystack_paragraph_count(const eval_haystack *haystack);

/* Returns the haystack's vocabulary for word-list tasks: distinct lower-case
 * words of the prose in byte order, or a built-in list for noise. */
const char *const *eval_haystack_words(const eval_haystack *haystack, int64_t *count);

/* Fills out with filler starting where the seed says, of at least min_tokens
 * tokens by the counter (sum of sentence counts); free it with eval_filler_free. */
strata_status eval_haystack_text(const eval_haystack *haystack, uint64_t seed, int64_t min_tokens,
                                 eval_token_counter counter, void *counter_context, eval_filler *out,
                                 strata_error *err);
/* Frees a filler's memory and zeroes it; accepts NULL and zeroed fillers. */
void eval_filler_free(eval_filler *filler);

/* The generator of the eval modules: splitmix64, whose whole state is one
 * number, so a sample is the same on every platform for the same seed. */
typedef struct eval_random {
    uint64_t state;
} eval_random;

/* Returns the next 64 random bits. */
uint64_t eval_random_next(eval_random *random);
/* Returns a number in [0, bound) (bound > 0). */
uint64_t eval_random_below(eval_random *random, uint64_t bound);
/* Returns a number in [0, 1) with 53 random bits. */
double eval_random_unit(eval_random *random);

#endif
