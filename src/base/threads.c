/* base/threads.c: the worker pool behind every parallel kernel.
 *
 * Work is published by bumping a generation counter; workers that see a new
 * generation run the task and bump a done counter. Workers spin on the
 * generation for about a millisecond before they sleep on a condition
 * variable, so back-to-back kernels of one decode step never pay a futex
 * wake-up, while an idle engine does not burn a core. */
#include "base/threads.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

#include "base/error.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#else
#define CPU_RELAX() ((void)0)
#endif

enum { SPIN_ITERATIONS_BEFORE_SLEEP = 200000 };

typedef struct worker {
    thread_pool *pool;
    int index;
    pthread_t thread;
} worker;

struct thread_pool {
    int thread_count;
    worker *workers; /* thread_count - 1 of them: index 0 is the caller */
    thread_pool_task task;
    void *context;
    atomic_uint generation;
    atomic_int finished;
    atomic_bool stopping;
    atomic_int sleepers;
    pthread_mutex_t mutex;
    pthread_cond_t wake;
};

static void *worker_main(void *argument)
{
    worker *self = argument;
    thread_pool *pool = self->pool;
    unsigned seen = 0;
    for (;;) {
        unsigned current;
        int spins = 0;
        while ((current = atomic_load_explicit(&pool->generation, memory_order_acquire)) == seen &&
               !atomic_load_explicit(&pool->stopping, memory_order_acquire)) {
            if (++spins < SPIN_ITERATIONS_BEFORE_SLEEP) {
                if (spins % 1024 == 0)
                    sched_yield(); /* let a descheduled thread of ours run */
                else
                    CPU_RELAX();
                continue;
            }
            pthread_mutex_lock(&pool->mutex);
            atomic_fetch_add(&pool->sleepers, 1);
            while (atomic_load(&pool->generation) == seen && !atomic_load(&pool->stopping))
                pthread_cond_wait(&pool->wake, &pool->mutex);
            atomic_fetch_sub(&pool->sleepers, 1);
            pthread_mutex_unlock(&pool->mutex);
            spins = 0;
        }
        if (atomic_load_explicit(&pool->stopping, memory_order_acquire))
            return NULL;
        seen = current;
        pool->task(pool->context, self->index, pool->thread_count);
        atomic_fetch_add_explicit(&pool->finished, 1, memory_order_release);
    }
}

strata_status thread_pool_create(int thread_count, thread_pool **out, strata_error *err)
{
    *out = NULL;
    if (thread_count < 1 || thread_count > 1024)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                           "thread count %d is outside 1..1024", thread_count);
    thread_pool *pool = calloc(1, sizeof *pool);
    if (pool == NULL)
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "cannot allocate a thread pool");
    pool->thread_count = thread_count;
    pthread_mutex_init(&pool->mutex, NULL);
    pthread_cond_init(&pool->wake, NULL);
    pool->workers = calloc((size_t)thread_count, sizeof *pool->workers);
    if (pool->workers == NULL) {
        thread_pool_destroy(pool);
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "cannot allocate %d workers", thread_count);
    }
    for (int i = 1; i < thread_count; i++) {
        worker *w = &pool->workers[i];
        w->pool = pool;
        w->index = i;
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
            pool->thread_count = i; /* only join the ones that started */
            thread_pool_destroy(pool);
            return strata_fail(err, STRATA_E_INTERNAL, "cannot start worker thread %d of %d", i,
                               thread_count);
        }
    }
    *out = pool;
    return STRATA_OK;
}

void thread_pool_destroy(thread_pool *pool)
{
    if (pool == NULL)
        return;
    pthread_mutex_lock(&pool->mutex);
    atomic_store(&pool->stopping, true);
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->mutex);
    for (int i = 1; i < pool->thread_count; i++)
        pthread_join(pool->workers[i].thread, NULL);
    pthread_cond_destroy(&pool->wake);
    pthread_mutex_destroy(&pool->mutex);
    free(pool->workers);
    free(pool);
}

void thread_pool_run(thread_pool *pool, thread_pool_task task, void *context)
{
    if (pool->thread_count == 1) {
        task(context, 0, 1);
        return;
    }
    pool->task = task;
    pool->context = context;
    atomic_store_explicit(&pool->finished, 0, memory_order_relaxed);
    atomic_fetch_add(&pool->generation, 1); /* seq_cst: pairs with the sleepers check */
    if (atomic_load(&pool->sleepers) > 0) {
        pthread_mutex_lock(&pool->mutex);
        pthread_cond_broadcast(&pool->wake);
        pthread_mutex_unlock(&pool->mutex);
    }
    task(context, 0, pool->thread_count);
    /* Spin for the stragglers, yielding now and then: on a machine with more
     * runnable threads than cores a descheduled worker needs our core. */
    for (unsigned spins = 1; atomic_load_explicit(&pool->finished, memory_order_acquire) < pool->thread_count - 1;
         spins++) {
        if (spins % 1024 == 0)
            sched_yield();
        else
            CPU_RELAX();
    }
}

int thread_pool_size(const thread_pool *pool)
{
    return pool->thread_count;
}

int thread_count_available(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int count = CPU_COUNT(&set);
        if (count > 0)
            return count;
    }
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    return online > 0 ? (int)online : 1;
}

void thread_range(long total, int index, int count, long granularity, long *begin, long *end)
{
    long units = (total + granularity - 1) / granularity;
    long per_thread = units / count;
    long remainder = units % count;
    long first_unit = index * per_thread + (index < remainder ? index : remainder);
    long unit_count = per_thread + (index < remainder ? 1 : 0);
    long b = first_unit * granularity;
    long e = (first_unit + unit_count) * granularity;
    *begin = b < total ? b : total;
    *end = e < total ? e : total;
}
