/* tests/base/test_threads.c: the worker pool runs every index exactly once per
 * call, many calls in a row, and thread_range covers [0, total) without overlap. */
#include <stdatomic.h>

#include "base/threads.h"
#include "test_util.h"

typedef struct counting {
    atomic_int calls[8];
    atomic_int total;
} counting;

static void count_task(void *argument, int index, int count)
{
    counting *c = argument;
    atomic_fetch_add(&c->calls[index], 1);
    atomic_fetch_add(&c->total, count);
}

static void every_index_runs_once_per_call(void)
{
    for (int threads = 1; threads <= 4; threads++) {
        thread_pool *pool = NULL;
        strata_error error;
        CHECK(thread_pool_create(threads, &pool, &error) == STRATA_OK);
        counting c = {0};
        for (int round = 0; round < 10000; round++)
            thread_pool_run(pool, count_task, &c);
        for (int i = 0; i < threads; i++)
            CHECK_MESSAGE(atomic_load(&c.calls[i]) == 10000, "threads %d index %d ran %d times", threads, i,
                          atomic_load(&c.calls[i]));
        CHECK(atomic_load(&c.total) == 10000 * threads * threads);
        thread_pool_destroy(pool);
    }
}

static void bad_thread_count_is_an_error(void)
{
    thread_pool *pool = (thread_pool *)1;
    strata_error error = {0};
    CHECK(thread_pool_create(0, &pool, &error) == STRATA_E_INVALID_ARGUMENT);
    CHECK(pool == NULL);
    CHECK(error.message[0] != '\0');
}

static void ranges_partition_the_total(void)
{
    const long totals[] = {0, 1, 15, 16, 17, 100, 262144};
    for (size_t t = 0; t < sizeof totals / sizeof totals[0]; t++)
        for (int count = 1; count <= 5; count++) {
            long expected_begin = 0;
            for (int i = 0; i < count; i++) {
                long begin, end;
                thread_range(totals[t], i, count, 16, &begin, &end);
                CHECK(begin == expected_begin);
                CHECK(end >= begin);
                CHECK(begin % 16 == 0 || begin == totals[t]);
                expected_begin = end;
            }
            CHECK(expected_begin == totals[t]);
        }
}

int main(void)
{
    RUN_CASE(every_index_runs_once_per_call);
    RUN_CASE(bad_thread_count_is_an_error);
    RUN_CASE(ranges_partition_the_total);
    TEST_EXIT();
}
