/* tests/test_util.h: the few macros the C test programs share.
 *
 * A test program runs named cases; CHECK records a failure with its file and
 * line and carries on, so one run reports every broken behaviour. The program
 * exits non-zero if any check failed. */
#ifndef STRATA_TESTS_TEST_UTIL_H
#define STRATA_TESTS_TEST_UTIL_H

#include <stdio.h>
#include <stdlib.h>

static int test_failures;
static int test_cases;

#define CHECK(condition)                                                               \
    do {                                                                               \
        if (!(condition)) {                                                            \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #condition); \
            test_failures++;                                                           \
        }                                                                              \
    } while (0)

#define CHECK_MESSAGE(condition, ...)                                                  \
    do {                                                                               \
        if (!(condition)) {                                                            \
            fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #condition); \
            fprintf(stderr, __VA_ARGS__);                                              \
            fprintf(stderr, "\n");                                                     \
            test_failures++;                                                           \
        }                                                                              \
    } while (0)

#define RUN_CASE(function)                                                             \
    do {                                                                               \
        int failures_before = test_failures;                                           \
        test_cases++;                                                                  \
        function();                                                                    \
        fprintf(stderr, "%s %s\n", test_failures == failures_before ? "ok  " : "FAIL", #function); \
    } while (0)

#define TEST_EXIT()                                                                    \
    do {                                                                               \
        fprintf(stderr, "%d cases, %d failed checks\n", test_cases, test_failures);   \
        return test_failures == 0 ? 0 : 1;                                             \
    } while (0)

#endif
