/* base/threads.h: a fixed pool of worker threads for data-parallel kernels.
 *
 * thread_pool_run(pool, task, context) runs task(context, index, count) once
 * on each of the pool's threads, the calling thread being index 0, and returns
 * when every call has returned. A decode step calls it a few hundred times per
 * token, so waking and joining must cost microseconds: idle workers spin for a
 * while (with a pause instruction) before sleeping on a condition variable. */
#ifndef STRATA_BASE_THREADS_H
#define STRATA_BASE_THREADS_H

#include "strata.h"

typedef struct thread_pool thread_pool;
typedef void (*thread_pool_task)(void *context, int thread_index, int thread_count);

/* Creates a pool of thread_count threads in all (the caller counts as one). */
strata_status thread_pool_create(int thread_count, thread_pool **out, strata_error *err);
/* Stops and joins the workers; accepts NULL. */
void thread_pool_destroy(thread_pool *pool);
/* Runs task on every thread of the pool and waits for all of them. */
void thread_pool_run(thread_pool *pool, thread_pool_task task, void *context);
/* Returns the number of threads, the caller included. */
int thread_pool_size(const thread_pool *pool);
/* Returns the number of cores available to this process. */
int thread_count_available(void);

/* Splits [0, total) into count nearly equal ranges aligned to granularity and
 * returns range index's bounds. */
void thread_range(long total, int index, int count, long granularity, long *begin, long *end);

#endif
