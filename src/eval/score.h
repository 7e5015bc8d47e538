/* eval/score.h: scoring a model's answer against the expected strings.
 *
 * RULER's two string-match metrics, for one output:
 *   all   the fraction of the expected strings that occur in the output;
 *   part  1 if at least one of them occurs, else 0.
 * "Occurs" is a substring match that ignores ASCII case, so "The number is
 * 4821967." matches "4821967" and "Amber" matches "amber". RULER scores
 * every synthetic task (all needle variants, multi-query included, variable
 * tracking, common and frequent words) with all, and only its QA tasks with
 * part; eval/tasks.c follows it: every task here is scored with all. */
#ifndef STRATA_EVAL_SCORE_H
#define STRATA_EVAL_SCORE_H

#include <stdbool.h>
#include <stdint.h>

typedef enum eval_score_kind {
    EVAL_SCORE_ALL = 0,
    EVAL_SCORE_PART,
} eval_score_kind;

/* Returns the name of a score kind ("all", "part"). */
const char *eval_score_kind_name(eval_score_kind kind);

/* Returns whether needle occurs in text, ignoring ASCII case (an empty needle always does). */
bool eval_contains_ignoring_case(const char *text, const char *needle);

/* Returns the fraction of the count answers found in output (NULL output: none; count 0: 0). */
double eval_score_all(const char *output, const char *const *answers, int32_t count);
/* Returns 1 if any of the count answers is found in output, else 0 (count 0: 0). */
double eval_score_part(const char *output, const char *const *answers, int32_t count);
/* Returns eval_score_all or eval_score_part by kind. */
double eval_score(eval_score_kind kind, const char *output, const char *const *answers, int32_t count);

#endif
