/* eval/tasks.h: the synthetic long-context tasks of `strata eval`.
 *
 * A task sample is a context (a haystack with needles hidden in it), one or
 * more queries and, per query, the strings a correct answer contains. The
 * prompts are written for a base model: each query ends with a cue the model
 * completes ("... What is the pass key? The pass key is"). The runner feeds
 * context then queries[0] as the first prompt; a multi-turn sample's later
 * queries each go after the model's previous answer, on the same cache.
 *
 * Everything follows from the spec: the same spec, haystack file and token
 * counter give a byte-identical sample on every platform. The generator sizes
 * the haystack so that context + queries[0] counts at most target_tokens and
 * misses it by less than about one filler sentence (for common_words, the
 * copies of one rarer word). depth (0..1) places the first queried needle:
 * the share of the filler's tokens before it; other needles go to
 * seed-chosen depths.
 * docs/eval-tasks.md lists each task's wording and scoring. */
#ifndef STRATA_EVAL_TASKS_H
#define STRATA_EVAL_TASKS_H

#include <stddef.h>
#include <stdint.h>

#include "eval/haystack.h"
#include "eval/score.h"
#include "strata.h"

typedef enum eval_task_kind {
    EVAL_TASK_PASSKEY = 0,      /* a 5-digit pass key */
    EVAL_TASK_NIAH_SINGLE,      /* one key, one 7-digit number */
    EVAL_TASK_NIAH_MULTIKEY,    /* several keys; one is asked about */
    EVAL_TASK_NIAH_MULTIVALUE,  /* one key with several numbers; all are asked for */
    EVAL_TASK_NIAH_MULTIQUERY,  /* several keys; several are asked about at once */
    EVAL_TASK_VARIABLE_TRACKING, /* chains of assignments; which variables hold a value */
    EVAL_TASK_COMMON_WORDS,     /* a word list; which words are the most frequent */
    EVAL_TASK_MULTITURN,        /* several keys; one question per turn */
    EVAL_TASK_MULTIREQUEST,     /* multiturn's sample; the runner asks each question in its own session
                                   sharing the compressed context (SCBench's multi-request) */
    EVAL_TASK_KIND_COUNT,
} eval_task_kind;

/* What to generate. Counts left at 0 take the kind's default; a count a kind
 * does not use must be 0. */
typedef struct eval_task_spec {
    eval_task_kind kind;
    int64_t target_tokens; /* context + first query, by the counter */
    double depth;          /* 0..1: where the first queried needle sits; common_words ignores it */
    uint64_t seed;
    int32_t needle_count;  /* keys (multikey 4, multiquery 4, multiturn 4), values (multivalue 4),
                              variables per chain (variable_tracking 5), most common words (common_words 10) */
    int32_t query_count;   /* keys asked (multiquery: all of them), turns (multiturn: one per key) */
    int32_t chain_count;   /* variable_tracking: chains, the first asked about, the others distractors (1) */
} eval_task_spec;

/* One question and what its answer must contain. */
typedef struct eval_query {
    char *text;            /* appended after the context or the previous answer; starts with "\n\n" */
    int32_t answer_count;
    char **answers;
    eval_score_kind score;
} eval_query;

/* A generated sample; owns every string and array (eval_sample_free). */
typedef struct eval_sample {
    eval_task_spec spec;   /* with the defaults filled in */
    eval_haystack_kind haystack;
    char *context;
    size_t context_length;
    int32_t query_count;
    eval_query *queries;
    int32_t needle_count;
    int64_t *needle_offsets; /* byte offset in context of each needle, needle by needle (not in
                                text order): the first queried needle first, then the kind's
                                others (variable_tracking: chain by chain, link by link;
                                common_words: each answer word's first occurrence) */
    int64_t prompt_tokens;   /* context + queries[0] by the counter */
    int64_t filler_sentences; /* haystack sentences used (common_words: list items) */
} eval_sample;

/* Returns the CLI name of a task kind ("passkey", "niah_single", ...). */
const char *eval_task_kind_name(eval_task_kind kind);
/* Returns a one-line description of a task kind. */
const char *eval_task_kind_summary(eval_task_kind kind);
/* Returns every task name, comma-separated, for messages and --help. */
const char *eval_task_kind_names(void);
/* Finds a task kind by name; the error lists every name. */
strata_status eval_task_kind_find(const char *name, eval_task_kind *out, strata_error *err);

/* Generates the sample of spec on haystack (kept only during the call), counting tokens with counter. */
strata_status eval_task_generate(const eval_task_spec *spec, const eval_haystack *haystack,
                                 eval_token_counter counter, void *counter_context, eval_sample *out,
                                 strata_error *err);
/* Frees a sample's memory and zeroes it; accepts NULL and zeroed samples. */
void eval_sample_free(eval_sample *sample);

/* Scores output as the answer to query index of sample, by the query's score kind. */
double eval_sample_score(const eval_sample *sample, int32_t query, const char *output);

#endif
