/* kv/radix.h: the prefix cache: a radix tree over token ids at block granularity.
 *
 * Each node stands for one block of B tokens following its parent's and
 * holds, for every (layer, KV head), the pool block with those tokens' keys
 * and values (KV_BLOCK_NONE where a sliding-window layer had already dropped
 * it). The cache holds one reference on every block it stores; blocks whose
 * only reference is the cache's are "unreferenced": they sit in an LRU and
 * are evicted (released to the pool) only when kv_radix_evict asks, that is
 * under memory pressure. Every entry has a namespace (a tenant salt): the
 * trees of two namespaces are disjoint, so a lookup never matches another
 * namespace's blocks.
 *
 * A prefix of m blocks is usable for a model when every global layer has all
 * m blocks and every sliding-window layer has the blocks covering the last
 * `window` positions before m * B (the next token's keys). */
#ifndef STRATA_KV_RADIX_H
#define STRATA_KV_RADIX_H

#include <stdint.h>

#include "kv/pool.h"
#include "kv/seq.h"
#include "strata.h"

typedef struct kv_radix kv_radix;

typedef struct kv_radix_stats {
    int64_t lookups;
    int64_t hit_tokens;      /* tokens served from the cache, summed over lookups */
    int64_t inserted_blocks; /* token blocks added */
    int64_t evicted_blocks;  /* pool blocks released by eviction */
    int64_t nodes;           /* token blocks cached now */
} kv_radix_stats;

/* Creates an empty cache over pool; window_by_layer[l] is layer l's sliding
 * window (0: global), copied. */
strata_status kv_radix_create(kv_pool *pool, const int64_t *window_by_layer, kv_radix **out, strata_error *err);
/* Releases every cached block and frees the cache; accepts NULL. */
void kv_radix_destroy(kv_radix *radix);

/* Finds the longest usable cached prefix of tokens[0..count) in namespace,
 * at most max_tokens long (callers pass count - 1 so one token is left to
 * compute logits from), attaches its blocks to the empty sequence seq, and
 * returns the number of tokens attached (a multiple of B, possibly 0). */
strata_status kv_radix_attach_prefix(kv_radix *radix, uint64_t namespace_id, const int32_t *tokens, int64_t count,
                                     int64_t max_tokens, kv_seq *seq, int64_t *attached, strata_error *err);
/* Caches the full blocks of seq's first count tokens (tokens[0..count)) under
 * namespace; blocks already cached are shared, not copied. */
strata_status kv_radix_insert(kv_radix *radix, uint64_t namespace_id, const int32_t *tokens, int64_t count,
                              const kv_seq *seq, strata_error *err);
/* Releases least-recently-used unreferenced cached blocks until at least
 * `blocks` pool blocks are free or nothing more can be evicted; returns the
 * number released. */
int64_t kv_radix_evict(kv_radix *radix, int64_t blocks);
/* Returns the pool blocks eviction could release: those of nodes only the cache holds. */
int64_t kv_radix_evictable_blocks(const kv_radix *radix);
/* Fills stats. */
void kv_radix_stats_get(const kv_radix *radix, kv_radix_stats *stats);

#endif
