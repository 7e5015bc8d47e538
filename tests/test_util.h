/* tests/test_util.h: the few macros the C test programs share.
 *
 * A test program runs named cases; CHECK records a failure with its file and
 * line and carries on, so one run reports every broken behaviour. The program
 * exits non-zero if any check failed. */
#ifndef STRATA_TESTS_TEST_UTIL_H
#define STRATA_TESTS_TEST_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* The state of random_u64; a randomized test seeds it and prints the seed. */
static uint64_t random_state;

/* splitmix64: a small generator whose whole state is the seed. */
static inline uint64_t random_u64(void)
{
    uint64_t z = (random_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

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
