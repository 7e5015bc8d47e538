/* eval/score.c: RULER's string-match scores (see score.h).
 *
 * Case is folded for ASCII letters only, by hand rather than with tolower,
 * so the score does not depend on the locale. */
#include "eval/score.h"

#include <stddef.h>
#include <string.h>

static unsigned char fold(unsigned char c)
{
    return c >= 'A' && c <= 'Z' ? (unsigned char)(c - 'A' + 'a') : c;
}

const char *eval_score_kind_name(eval_score_kind kind)
{
    switch (kind) {
    case EVAL_SCORE_ALL: return "all";
    case EVAL_SCORE_PART: return "part";
    }
    return "unknown";
}

bool eval_contains_ignoring_case(const char *text, const char *needle)
{
    if (needle == NULL || needle[0] == '\0')
        return true;
    if (text == NULL)
        return false;
    size_t needle_length = strlen(needle);
    unsigned char first = fold((unsigned char)needle[0]);
    for (const char *start = text; *start != '\0'; start++) {
        if (fold((unsigned char)*start) != first)
            continue;
        size_t i = 1;
        while (i < needle_length && start[i] != '\0' &&
               fold((unsigned char)start[i]) == fold((unsigned char)needle[i]))
            i++;
        if (i == needle_length)
            return true;
        if (start[i] == '\0')
            return false; /* the rest of the text is shorter than the needle */
    }
    return false;
}

static int32_t found_count(const char *output, const char *const *answers, int32_t count)
{
    const char *text = output != NULL ? output : "";
    int32_t found = 0;
    for (int32_t i = 0; i < count; i++)
        found += eval_contains_ignoring_case(text, answers[i]) ? 1 : 0;
    return found;
}

double eval_score_all(const char *output, const char *const *answers, int32_t count)
{
    if (count <= 0 || answers == NULL)
        return 0.0;
    return (double)found_count(output, answers, count) / (double)count;
}

double eval_score_part(const char *output, const char *const *answers, int32_t count)
{
    if (count <= 0 || answers == NULL)
        return 0.0;
    return found_count(output, answers, count) > 0 ? 1.0 : 0.0;
}

double eval_score(eval_score_kind kind, const char *output, const char *const *answers, int32_t count)
{
    return kind == EVAL_SCORE_PART ? eval_score_part(output, answers, count)
                                   : eval_score_all(output, answers, count);
}
