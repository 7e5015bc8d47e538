/* tests/eval/test_score.c: RULER's string-match scores.
 *
 * Hand-written cases for both metrics: matches that differ only in case,
 * some answers found and not others, none found, an empty or missing output,
 * answers as parts of longer words and numbers (a substring match counts
 * them, as RULER does), and the degenerate inputs (no answers). */
#include <math.h>
#include <string.h>

#include "eval/score.h"
#include "test_util.h"

typedef struct score_case {
    const char *name;
    const char *output;
    const char *answers[4];
    int32_t count;
    double all;
    double part;
} score_case;

static const score_case score_cases[] = {
    {"exact_single_answer", "The pass key is 48213.", {"48213"}, 1, 1.0, 1.0},
    {"case_is_ignored", "the secret number belongs to AMBER-LANTERN", {"amber-lantern"}, 1, 1.0, 1.0},
    {"case_is_ignored_the_other_way", "amber", {"AmBeR"}, 1, 1.0, 1.0},
    {"two_of_four_found", " 1111111, 3333333 and something else", {"1111111", "2222222", "3333333", "4444444"}, 4,
     0.5, 1.0},
    {"three_of_four_found", "4444444 3333333 1111111", {"1111111", "2222222", "3333333", "4444444"}, 4, 0.75, 1.0},
    {"none_found", "I do not know.", {"1111111", "2222222"}, 2, 0.0, 0.0},
    {"empty_output", "", {"1111111"}, 1, 0.0, 0.0},
    {"missing_output", NULL, {"1111111", "2222222"}, 2, 0.0, 0.0},
    {"answer_inside_a_longer_number_counts", "912345678", {"1234567"}, 1, 1.0, 1.0},
    {"answer_longer_than_output", "123", {"1234567"}, 1, 0.0, 0.0},
    {"answer_at_the_very_end", "the words are: kettle, lantern", {"kettle", "lantern"}, 2, 1.0, 1.0},
    {"repeated_answer_counts_once_each", "kettle kettle", {"kettle", "kettle", "violin"}, 3, 2.0 / 3.0, 1.0},
    {"partial_prefix_is_not_a_match", "kettl", {"kettle"}, 1, 0.0, 0.0},
    {"no_answers_scores_zero", "anything", {NULL}, 0, 0.0, 0.0},
};

static void both_scores_match_the_table(void)
{
    for (size_t i = 0; i < sizeof score_cases / sizeof score_cases[0]; i++) {
        const score_case *c = &score_cases[i];
        double all = eval_score_all(c->output, c->answers, c->count);
        double part = eval_score_part(c->output, c->answers, c->count);
        CHECK_MESSAGE(fabs(all - c->all) < 1e-12, "%s: all %g, expected %g", c->name, all, c->all);
        CHECK_MESSAGE(fabs(part - c->part) < 1e-12, "%s: part %g, expected %g", c->name, part, c->part);
        CHECK_MESSAGE(eval_score(EVAL_SCORE_ALL, c->output, c->answers, c->count) == all, "%s", c->name);
        CHECK_MESSAGE(eval_score(EVAL_SCORE_PART, c->output, c->answers, c->count) == part, "%s", c->name);
    }
}

static void contains_ignoring_case_handles_edges(void)
{
    CHECK(eval_contains_ignoring_case("Hello World", "o w"));
    CHECK(eval_contains_ignoring_case("Hello World", "WORLD"));
    CHECK(!eval_contains_ignoring_case("Hello World", "worlds"));
    CHECK(eval_contains_ignoring_case("aaab", "aab")); /* a restart after a partial match */
    CHECK(eval_contains_ignoring_case("anything", ""));
    CHECK(eval_contains_ignoring_case("", ""));
    CHECK(!eval_contains_ignoring_case("", "a"));
    CHECK(!eval_contains_ignoring_case(NULL, "a"));
    /* Only ASCII letters fold: other bytes must match exactly. */
    CHECK(eval_contains_ignoring_case("caf\xc3\xa9", "CAF\xc3\xa9"));
    CHECK(!eval_contains_ignoring_case("[", "{"));
}

static void score_kind_names(void)
{
    CHECK(strcmp(eval_score_kind_name(EVAL_SCORE_ALL), "all") == 0);
    CHECK(strcmp(eval_score_kind_name(EVAL_SCORE_PART), "part") == 0);
}

int main(void)
{
    RUN_CASE(both_scores_match_the_table);
    RUN_CASE(contains_ignoring_case_handles_edges);
    RUN_CASE(score_kind_names);
    TEST_EXIT();
}
