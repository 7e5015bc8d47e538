/* tests/kv/kv_checks.h: checks the KV tests share: the positions a table
 * holds, whether it holds exactly a list of them, and the pool's own
 * recount. Static functions, included by each test program that uses them. */
#ifndef STRATA_TESTS_KV_CHECKS_H
#define STRATA_TESTS_KV_CHECKS_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "kv/pool.h"
#include "kv/seq.h"
#include "test_util.h"

/* Reads the positions of a table's slots into out; returns the slot count. */
static inline int64_t kv_table_positions(const kv_seq *seq, int32_t layer, int32_t head, int64_t *out)
{
    const kv_pool *pool = kv_seq_pool(seq);
    int32_t block_tokens = kv_pool_configuration(pool)->block_tokens;
    const kv_block_table *table = kv_seq_table(seq, layer, head);
    for (int64_t i = 0; i < table->slot_count; i++)
        out[i] = kv_block_positions_const(pool, table->blocks[i / block_tokens])[i % block_tokens];
    return table->slot_count;
}

/* Whether a table holds exactly the positions want[0..count); prints what it holds when not. */
static inline bool kv_table_holds(const kv_seq *seq, int32_t layer, int32_t head, const int64_t *want, int64_t count)
{
    int64_t *got = malloc((size_t)(kv_seq_table(seq, layer, head)->slot_count + 1) * sizeof *got);
    if (got == NULL)
        return false;
    int64_t n = kv_table_positions(seq, layer, head, got);
    bool same = n == count;
    for (int64_t i = 0; same && i < n; i++)
        same = got[i] == want[i];
    if (!same) {
        fprintf(stderr, "  layer %d head %d holds %" PRId64 " slots:", layer, head, n);
        for (int64_t i = 0; i < n; i++)
            fprintf(stderr, " %" PRId64, got[i]);
        fprintf(stderr, "\n");
    }
    free(got);
    return same;
}

/* Appends the positions first..last to a list of count; returns the new count. */
static inline int64_t position_range(int64_t *list, int64_t count, int64_t first, int64_t last)
{
    for (int64_t p = first; p <= last; p++)
        list[count++] = p;
    return count;
}

/* Runs the pool's recount (kv_pool_check); a disagreement fails the test with its message. */
static inline bool pool_is_consistent(const kv_pool *pool)
{
    strata_error error = {0};
    strata_status status = kv_pool_check(pool, &error);
    CHECK_MESSAGE(status == STRATA_OK, "%s", error.message);
    return status == STRATA_OK;
}

#endif
