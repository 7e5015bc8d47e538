/* eval/eval.h: the evaluation harness behind `strata eval`.
 *
 * For every context length, haystack, task and sample the harness generates
 * the sample (eval/tasks.h), prefills its prompt once into a full-cache
 * session that keeps the attention statistics policies read
 * (kv_statistics_window), and forks that cache into every variant
 * (strata_session_fork_compressed: the policy compresses its copy at once).
 * Each variant then answers greedily, turn after turn for multi-turn
 * samples, and is scored; its KV bytes are measured from the pool after the
 * prompt (and its compression) and after decoding, with the time of each.
 * Fidelity runs compare each variant with the full cache on real prose: the
 * mean KL divergence of the next-token distributions over teacher-forced
 * positions, and the top-1 agreement along the full cache's greedy
 * continuation (teacher-forced on it).
 *
 * Results are JSON lines, one record per sample and variant, each with a
 * "key" naming what it measured; a rerun with the same output file skips
 * the records already there (resume), and the summary CSV is rebuilt from
 * every record in the file. Progress and an ETA go to stderr. */
#ifndef STRATA_EVAL_EVAL_H
#define STRATA_EVAL_EVAL_H

#include <stdbool.h>
#include <stdint.h>

#include "strata.h"

enum { EVAL_MAX_LIST = 16 };

typedef struct eval_options {
    const char *tasks;          /* comma-separated task names (eval/tasks.h), or "all" */
    const char *haystacks;      /* comma-separated: noise, prose */
    const char *prose_path;     /* NULL: the default prose file */
    int64_t lengths[EVAL_MAX_LIST]; /* context lengths in tokens */
    int length_count;
    double depths[EVAL_MAX_LIST];   /* needle depths; sample s takes depths[s % depth_count] */
    int depth_count;
    int samples;                /* per task, haystack and length */
    uint64_t seed;
    const char *policies;       /* comma-separated POLICY[+PRECISION] names; "full" is the reference */
    int64_t budgets[EVAL_MAX_LIST]; /* tokens per (layer, KV head), for policies that take one */
    int budget_count;
    const char *policy_params;  /* "name=value,..." given to every variant, or NULL */
    const char *head_profile;   /* for duo, or NULL */
    int32_t observation;        /* the statistics window the full prefill keeps (policies' default: 32) */
    int max_answer_tokens;      /* greedy tokens per answer, at most */
    int fidelity_samples;       /* 0: no fidelity runs */
    int fidelity_positions;     /* teacher-forced positions of the KL divergence */
    int fidelity_continuation;  /* greedy tokens of the top-1 agreement */
    const char *out_path;       /* the JSON lines file (appended to) */
    const char *csv_path;       /* the summary CSV (rewritten); NULL: out_path with .csv */
    bool progress;              /* a progress line on stderr */
} eval_options;

/* Fills options with the defaults (all tasks, noise, length 4096, 5 depths, 10 samples, full only). */
void eval_options_default(eval_options *options);
/* Runs the evaluation described by options on model, appending to its JSON lines file. */
strata_status eval_run(strata_model *model, const eval_options *options, strata_error *err);
/* Rebuilds the summary CSV from every record of a JSON lines file. */
strata_status eval_write_summary(const char *jsonl_path, const char *csv_path, strata_error *err);

#endif
