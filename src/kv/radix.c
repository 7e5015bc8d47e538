/* kv/radix.c: the prefix cache, a radix tree over token ids at block granularity.
 *
 * Nodes live in one array and are named by their index. A node is one block
 * of B token ids; its identity is (namespace, parent node, those B tokens),
 * and a single open-addressing table maps that identity to the node. A
 * namespace therefore needs no root node (its first blocks have parent
 * NO_NODE), and two namespaces' trees are disjoint by construction: the
 * namespace is part of every key.
 *
 * Beside its tokens, a node holds one pool block per (layer, KV head), each
 * retained once by the cache, or KV_BLOCK_NONE where a sliding-window layer
 * had dropped the block before the prefix was inserted. The LRU is a logical
 * clock: every insert and lookup stamps the nodes on its path, so a parent is
 * never older than its children. Eviction scans the nodes once, heaps the
 * unreferenced leaves by their stamp and pops the oldest; a parent whose last
 * child goes joins the heap, so whole cold branches go leaf first. */
#include "kv/radix.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/hash_map.h"

enum { NO_NODE = -1 };

typedef struct radix_node {
    uint64_t namespace_id;
    uint64_t hash;      /* of (namespace, parent, tokens): compared before the tokens */
    uint64_t last_used; /* the clock when a lookup or insert last walked through */
    int32_t parent;     /* NO_NODE for a namespace's first block */
    int32_t child_count;
    int32_t next_free; /* free-list link while the node is unused */
    bool used;
} radix_node;

struct kv_radix {
    kv_pool *pool;
    int64_t *window_by_layer; /* [layer_count]; 0 is a global layer */
    int32_t layer_count;
    int32_t kv_head_count;
    int32_t table_count;  /* layer_count * kv_head_count: blocks per node */
    int32_t block_tokens; /* B */

    /* Nodes, and per node its B tokens and table_count blocks, all indexed alike. */
    radix_node *nodes;
    int32_t *node_tokens;     /* [node_capacity][block_tokens] */
    kv_block_id *node_blocks; /* [node_capacity][table_count] */
    int32_t *path;            /* [node_capacity]: the matched nodes of one lookup */
    int32_t *heap;            /* [node_capacity]: evictable leaves, oldest first */
    int32_t node_capacity;
    int32_t free_node; /* head of the free list */

    /* Identity -> node index; NO_NODE marks an empty slot. At most half full. */
    int32_t *slots;
    size_t slot_capacity; /* a power of two */

    /* Scratch: blocks found in a sequence (insert) and, per layer, the last
     * path index with a missing block (lookup). */
    kv_block_id *found_blocks; /* [table_count] */
    int64_t *last_missing;     /* [layer_count] */
    /* Scratch for kv_seq_attach, grown on demand. */
    kv_block_id *attach_blocks; /* [table_count][attach_capacity] */
    const kv_block_id **attach_arrays;
    int32_t *attach_counts;
    int64_t attach_capacity; /* blocks per table attach_blocks has room for */

    uint64_t clock;
    kv_radix_stats stats;
};

static int32_t *tokens_of(const kv_radix *radix, int32_t node)
{
    return radix->node_tokens + (size_t)node * (size_t)radix->block_tokens;
}

static kv_block_id *blocks_of(const kv_radix *radix, int32_t node)
{
    return radix->node_blocks + (size_t)node * (size_t)radix->table_count;
}

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 27;
    x *= 0x94D049BB133111EBull;
    x ^= x >> 31;
    return x;
}

static uint64_t identity_hash(const kv_radix *radix, uint64_t namespace_id, int32_t parent, const int32_t *tokens)
{
    uint64_t hash = hash_bytes(tokens, (size_t)radix->block_tokens * sizeof *tokens);
    hash ^= mix64(namespace_id + 0x9E3779B97F4A7C15ull);
    return mix64(hash ^ ((uint64_t)(uint32_t)parent << 17));
}

/* ---- The identity table ---- */

static int32_t table_find(const kv_radix *radix, uint64_t namespace_id, int32_t parent, const int32_t *tokens)
{
    uint64_t hash = identity_hash(radix, namespace_id, parent, tokens);
    size_t mask = radix->slot_capacity - 1;
    size_t token_bytes = (size_t)radix->block_tokens * sizeof *tokens;
    for (size_t index = hash & mask;; index = (index + 1) & mask) {
        int32_t node = radix->slots[index];
        if (node == NO_NODE)
            return NO_NODE;
        const radix_node *candidate = &radix->nodes[node];
        if (candidate->hash == hash && candidate->parent == parent && candidate->namespace_id == namespace_id &&
            memcmp(tokens_of(radix, node), tokens, token_bytes) == 0)
            return node;
    }
}

static void table_put(int32_t *slots, size_t capacity, uint64_t hash, int32_t node)
{
    size_t mask = capacity - 1;
    size_t index = hash & mask;
    while (slots[index] != NO_NODE)
        index = (index + 1) & mask;
    slots[index] = node;
}

/* Removes node from the table by backward-shift deletion, so probes stay
 * unbroken without tombstones. */
static void table_remove(kv_radix *radix, int32_t node)
{
    size_t mask = radix->slot_capacity - 1;
    size_t hole = radix->nodes[node].hash & mask;
    while (radix->slots[hole] != node)
        hole = (hole + 1) & mask;
    for (size_t next = (hole + 1) & mask; radix->slots[next] != NO_NODE; next = (next + 1) & mask) {
        size_t home = radix->nodes[radix->slots[next]].hash & mask;
        /* The entry at next may move into the hole unless its home lies
         * cyclically in (hole, next]. */
        bool stays = hole <= next ? (home > hole && home <= next) : (home > hole || home <= next);
        if (!stays) {
            radix->slots[hole] = radix->slots[next];
            hole = next;
        }
    }
    radix->slots[hole] = NO_NODE;
}

static strata_status table_grow(kv_radix *radix, strata_error *err)
{
    size_t capacity = radix->slot_capacity * 2;
    int32_t *slots = malloc(capacity * sizeof *slots);
    if (slots == NULL)
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "prefix cache: cannot grow the node table to %zu slots",
                           capacity);
    for (size_t i = 0; i < capacity; i++)
        slots[i] = NO_NODE;
    for (size_t i = 0; i < radix->slot_capacity; i++) {
        int32_t node = radix->slots[i];
        if (node != NO_NODE)
            table_put(slots, capacity, radix->nodes[node].hash, node);
    }
    free(radix->slots);
    radix->slots = slots;
    radix->slot_capacity = capacity;
    return STRATA_OK;
}

/* ---- Nodes ---- */

static bool resize(void **array, size_t count, size_t element_bytes)
{
    void *grown = realloc(*array, count * element_bytes);
    if (grown == NULL)
        return false;
    *array = grown;
    return true;
}

/* Doubles the node arrays and links the new nodes into the free list. An
 * array that grew before another failed is merely roomier than needed. */
static strata_status nodes_grow(kv_radix *radix, strata_error *err)
{
    int32_t old_capacity = radix->node_capacity;
    if (old_capacity > INT32_MAX / 2)
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "prefix cache: %d nodes is the most it can index",
                           old_capacity);
    int32_t capacity = old_capacity == 0 ? 64 : old_capacity * 2;
    size_t count = (size_t)capacity;
    if (!resize((void **)&radix->nodes, count, sizeof *radix->nodes) ||
        !resize((void **)&radix->node_tokens, count * (size_t)radix->block_tokens, sizeof *radix->node_tokens) ||
        !resize((void **)&radix->node_blocks, count * (size_t)radix->table_count, sizeof *radix->node_blocks) ||
        !resize((void **)&radix->path, count, sizeof *radix->path) ||
        !resize((void **)&radix->heap, count, sizeof *radix->heap))
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "prefix cache: cannot grow to %d nodes", capacity);
    for (int32_t node = capacity - 1; node >= old_capacity; node--) {
        radix->nodes[node] = (radix_node){.used = false, .next_free = radix->free_node};
        radix->free_node = node;
    }
    radix->node_capacity = capacity;
    return STRATA_OK;
}

/* Adds a node under parent holding tokens and blocks (the non-NONE ones
 * retained here). */
static strata_status node_create(kv_radix *radix, uint64_t namespace_id, int32_t parent, const int32_t *tokens,
                                 const kv_block_id *blocks, int32_t *out, strata_error *err)
{
    strata_status status = STRATA_OK;
    if (radix->free_node == NO_NODE)
        status = nodes_grow(radix, err);
    if (status == STRATA_OK && ((size_t)radix->stats.nodes + 1) * 2 > radix->slot_capacity)
        status = table_grow(radix, err);
    if (status != STRATA_OK)
        return status;
    int32_t node = radix->free_node;
    radix->free_node = radix->nodes[node].next_free;
    radix->nodes[node] = (radix_node){
        .namespace_id = namespace_id,
        .hash = identity_hash(radix, namespace_id, parent, tokens),
        .parent = parent,
        .next_free = NO_NODE,
        .used = true,
    };
    memcpy(tokens_of(radix, node), tokens, (size_t)radix->block_tokens * sizeof *tokens);
    kv_block_id *node_blocks = blocks_of(radix, node);
    for (int32_t t = 0; t < radix->table_count; t++) {
        node_blocks[t] = blocks[t];
        if (blocks[t] != KV_BLOCK_NONE)
            kv_pool_retain(radix->pool, blocks[t]);
    }
    table_put(radix->slots, radix->slot_capacity, radix->nodes[node].hash, node);
    if (parent != NO_NODE)
        radix->nodes[parent].child_count++;
    radix->stats.nodes++;
    radix->stats.inserted_blocks++;
    *out = node;
    return STRATA_OK;
}

/* Releases a node's blocks and unlinks it; returns the pool blocks released. */
static int64_t node_remove(kv_radix *radix, int32_t node)
{
    int64_t released = 0;
    kv_block_id *blocks = blocks_of(radix, node);
    for (int32_t t = 0; t < radix->table_count; t++)
        if (blocks[t] != KV_BLOCK_NONE) {
            kv_pool_release(radix->pool, blocks[t]);
            released++;
        }
    table_remove(radix, node);
    int32_t parent = radix->nodes[node].parent;
    if (parent != NO_NODE)
        radix->nodes[parent].child_count--;
    radix->nodes[node] = (radix_node){.used = false, .next_free = radix->free_node};
    radix->free_node = node;
    radix->stats.nodes--;
    return released;
}

/* ---- Create and destroy ---- */

strata_status kv_radix_create(kv_pool *pool, const int64_t *window_by_layer, kv_radix **out, strata_error *err)
{
    *out = NULL;
    const kv_pool_config *config = kv_pool_configuration(pool);
    for (int32_t layer = 0; layer < config->layer_count; layer++)
        if (window_by_layer[layer] < 0)
            return strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                               "prefix cache: layer %d has sliding window %lld; a window is 0 (global) or positive",
                               layer, (long long)window_by_layer[layer]);
    kv_radix *radix = calloc(1, sizeof *radix);
    if (radix == NULL)
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "prefix cache: cannot allocate its state");
    radix->pool = pool;
    radix->layer_count = config->layer_count;
    radix->kv_head_count = config->kv_head_count;
    radix->table_count = config->layer_count * config->kv_head_count;
    radix->block_tokens = config->block_tokens;
    radix->free_node = NO_NODE;
    radix->slot_capacity = 64;
    radix->window_by_layer = malloc((size_t)radix->layer_count * sizeof *radix->window_by_layer);
    radix->last_missing = malloc((size_t)radix->layer_count * sizeof *radix->last_missing);
    radix->found_blocks = malloc((size_t)radix->table_count * sizeof *radix->found_blocks);
    radix->attach_arrays = malloc((size_t)radix->table_count * sizeof *radix->attach_arrays);
    radix->attach_counts = malloc((size_t)radix->table_count * sizeof *radix->attach_counts);
    radix->slots = malloc(radix->slot_capacity * sizeof *radix->slots);
    if (radix->window_by_layer == NULL || radix->last_missing == NULL || radix->found_blocks == NULL ||
        radix->attach_arrays == NULL || radix->attach_counts == NULL || radix->slots == NULL) {
        kv_radix_destroy(radix);
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "prefix cache: cannot allocate tables for %d layers",
                           config->layer_count);
    }
    memcpy(radix->window_by_layer, window_by_layer, (size_t)radix->layer_count * sizeof *window_by_layer);
    for (size_t i = 0; i < radix->slot_capacity; i++)
        radix->slots[i] = NO_NODE;
    *out = radix;
    return STRATA_OK;
}

void kv_radix_destroy(kv_radix *radix)
{
    if (radix == NULL)
        return;
    for (int32_t node = 0; node < radix->node_capacity; node++) {
        if (!radix->nodes[node].used)
            continue;
        const kv_block_id *blocks = blocks_of(radix, node);
        for (int32_t t = 0; t < radix->table_count; t++)
            if (blocks[t] != KV_BLOCK_NONE)
                kv_pool_release(radix->pool, blocks[t]);
    }
    free(radix->nodes);
    free(radix->node_tokens);
    free(radix->node_blocks);
    free(radix->path);
    free(radix->heap);
    free(radix->slots);
    free(radix->window_by_layer);
    free(radix->last_missing);
    free(radix->found_blocks);
    free(radix->attach_blocks);
    free(radix->attach_arrays);
    free(radix->attach_counts);
    free(radix);
}

/* ---- Lookup and attach ---- */

/* The first block a layer needs so the token at position m * B sees every
 * key it attends to: all of them for a global layer, and for a window w the
 * keys at positions m * B - w + 1 .. m * B - 1. */
static int64_t first_needed_block(const kv_radix *radix, int32_t layer, int64_t m)
{
    int64_t window = radix->window_by_layer[layer];
    if (window == 0)
        return 0;
    int64_t first_position = m * radix->block_tokens - window + 1;
    return first_position <= 0 ? 0 : first_position / radix->block_tokens;
}

/* Returns the longest usable prefix, in blocks, of the `matched` nodes in
 * radix->path, scanning forward and remembering per layer the last block a
 * head lacks. */
static int64_t usable_blocks(kv_radix *radix, int64_t matched)
{
    for (int32_t layer = 0; layer < radix->layer_count; layer++)
        radix->last_missing[layer] = -1;
    int64_t usable = 0;
    for (int64_t k = 0; k < matched; k++) {
        const kv_block_id *blocks = blocks_of(radix, radix->path[k]);
        for (int32_t t = 0; t < radix->table_count; t++)
            if (blocks[t] == KV_BLOCK_NONE)
                radix->last_missing[t / radix->kv_head_count] = k;
        bool complete = true;
        for (int32_t layer = 0; layer < radix->layer_count && complete; layer++)
            complete = radix->last_missing[layer] < first_needed_block(radix, layer, k + 1);
        if (complete)
            usable = k + 1;
    }
    return usable;
}

static strata_status attach_scratch_reserve(kv_radix *radix, int64_t blocks, strata_error *err)
{
    if (blocks <= radix->attach_capacity)
        return STRATA_OK;
    if (!resize((void **)&radix->attach_blocks, (size_t)blocks * (size_t)radix->table_count,
                sizeof *radix->attach_blocks))
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "prefix cache: cannot allocate block lists of %lld blocks",
                           (long long)blocks);
    radix->attach_capacity = blocks;
    return STRATA_OK;
}

/* Fills the per-(layer, head) arrays of the first m path nodes' blocks that
 * the next token needs and hands them to seq. */
static strata_status attach_path(kv_radix *radix, int64_t m, kv_seq *seq, strata_error *err)
{
    strata_status status = attach_scratch_reserve(radix, m, err);
    if (status != STRATA_OK)
        return status;
    for (int32_t t = 0; t < radix->table_count; t++) {
        int64_t first = first_needed_block(radix, t / radix->kv_head_count, m);
        kv_block_id *array = radix->attach_blocks + (size_t)t * (size_t)m;
        for (int64_t k = first; k < m; k++)
            array[k - first] = blocks_of(radix, radix->path[k])[t];
        radix->attach_arrays[t] = array;
        radix->attach_counts[t] = (int32_t)(m - first);
    }
    return kv_seq_attach(seq, radix->attach_arrays, radix->attach_counts, m * radix->block_tokens, err);
}

static strata_status check_sequence(const kv_radix *radix, const kv_seq *seq, const char *operation,
                                    strata_error *err)
{
    if (kv_seq_pool(seq) != radix->pool)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                           "prefix cache: %s was given a sequence of another pool than the cache's", operation);
    return STRATA_OK;
}

strata_status kv_radix_attach_prefix(kv_radix *radix, uint64_t namespace_id, const int32_t *tokens, int64_t count,
                                     int64_t max_tokens, kv_seq *seq, int64_t *attached, strata_error *err)
{
    *attached = 0;
    strata_status status = check_sequence(radix, seq, "attach", err);
    if (status != STRATA_OK)
        return status;
    if (kv_seq_length(seq) != 0)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                           "prefix cache: attach needs an empty sequence, this one holds %lld tokens",
                           (long long)kv_seq_length(seq));
    radix->stats.lookups++;
    int64_t limit = count < max_tokens ? count : max_tokens;
    int64_t reachable = limit > 0 ? limit / radix->block_tokens : 0;
    uint64_t now = ++radix->clock;
    int64_t matched = 0;
    for (int32_t parent = NO_NODE; matched < reachable; matched++) {
        int32_t node = table_find(radix, namespace_id, parent, tokens + matched * radix->block_tokens);
        if (node == NO_NODE)
            break;
        radix->nodes[node].last_used = now;
        radix->path[matched] = node;
        parent = node;
    }
    int64_t m = usable_blocks(radix, matched);
    if (m == 0)
        return STRATA_OK;
    status = attach_path(radix, m, seq, err);
    if (status != STRATA_OK)
        return status;
    *attached = m * radix->block_tokens;
    radix->stats.hit_tokens += *attached;
    return STRATA_OK;
}

/* ---- Insert ---- */

/* Finds the block of one table that holds positions k * B .. k * B + B - 1,
 * slot by slot, into *block. A sliding-window table whose first slot lies
 * past k * B has dropped (part of) that block: KV_BLOCK_NONE. Returns false
 * when the table does not hold those positions as one full block (a global
 * layer's table is shorter, or was compressed): the prefix cannot go on. */
static bool table_block_at(kv_radix *radix, const kv_block_table *table, int64_t window, int64_t k,
                           kv_block_id *block)
{
    int64_t block_tokens = radix->block_tokens;
    int64_t start = k * block_tokens;
    if (table->block_count == 0 || table->slot_count == 0)
        return false;
    int64_t first_position = kv_block_positions_const(radix->pool, table->blocks[0])[0];
    if (first_position > start) {
        *block = KV_BLOCK_NONE;
        return window > 0;
    }
    int64_t offset = start - first_position;
    int64_t index = offset / block_tokens;
    if (offset % block_tokens != 0 || (index + 1) * block_tokens > table->slot_count || index >= table->block_count)
        return false;
    const int32_t *positions = kv_block_positions_const(radix->pool, table->blocks[index]);
    for (int64_t slot = 0; slot < block_tokens; slot++)
        if (positions[slot] != start + slot)
            return false;
    /* A block a precision policy packed is not the exact KV of its tokens: never shared as a prefix. */
    if (kv_block_storage(radix->pool, table->blocks[index]) != kv_pool_configuration(radix->pool)->storage)
        return false;
    *block = table->blocks[index];
    return true;
}

/* Collects seq's blocks for token block k into radix->found_blocks; false
 * when some table does not hold them. */
static bool sequence_blocks_at(kv_radix *radix, const kv_seq *seq, int64_t k)
{
    for (int32_t layer = 0; layer < radix->layer_count; layer++)
        for (int32_t head = 0; head < radix->kv_head_count; head++) {
            kv_block_id *block = &radix->found_blocks[layer * radix->kv_head_count + head];
            if (!table_block_at(radix, kv_seq_table(seq, layer, head), radix->window_by_layer[layer], k, block))
                return false;
        }
    return true;
}

strata_status kv_radix_insert(kv_radix *radix, uint64_t namespace_id, const int32_t *tokens, int64_t count,
                              const kv_seq *seq, strata_error *err)
{
    strata_status status = check_sequence(radix, seq, "insert", err);
    if (status != STRATA_OK)
        return status;
    int64_t length = count < kv_seq_length(seq) ? count : kv_seq_length(seq);
    int64_t block_count = length > 0 ? length / radix->block_tokens : 0;
    uint64_t now = ++radix->clock;
    int32_t parent = NO_NODE;
    for (int64_t k = 0; k < block_count && sequence_blocks_at(radix, seq, k); k++) {
        const int32_t *block_tokens = tokens + k * radix->block_tokens;
        int32_t node = table_find(radix, namespace_id, parent, block_tokens);
        if (node == NO_NODE) {
            status = node_create(radix, namespace_id, parent, block_tokens, radix->found_blocks, &node, err);
            if (status != STRATA_OK)
                return status;
        } else {
            /* Fill in what a sliding-window layer had dropped when this
             * prefix was first cached and this sequence still holds. */
            kv_block_id *blocks = blocks_of(radix, node);
            for (int32_t t = 0; t < radix->table_count; t++)
                if (blocks[t] == KV_BLOCK_NONE && radix->found_blocks[t] != KV_BLOCK_NONE) {
                    blocks[t] = radix->found_blocks[t];
                    kv_pool_retain(radix->pool, blocks[t]);
                }
        }
        radix->nodes[node].last_used = now;
        parent = node;
    }
    return STRATA_OK;
}

/* ---- Eviction ---- */

/* A node may go when it has no children and the cache holds the only
 * reference to each of its blocks. */
static bool node_evictable(const kv_radix *radix, int32_t node)
{
    if (radix->nodes[node].child_count != 0)
        return false;
    const kv_block_id *blocks = blocks_of(radix, node);
    for (int32_t t = 0; t < radix->table_count; t++)
        if (blocks[t] != KV_BLOCK_NONE && kv_pool_refcount(radix->pool, blocks[t]) != 1)
            return false;
    return true;
}

static bool heap_older(const kv_radix *radix, int32_t a, int32_t b)
{
    uint64_t used_a = radix->nodes[a].last_used, used_b = radix->nodes[b].last_used;
    return used_a != used_b ? used_a < used_b : a < b;
}

static void heap_push(kv_radix *radix, int64_t *size, int32_t node)
{
    int64_t i = (*size)++;
    while (i > 0) {
        int64_t parent = (i - 1) / 2;
        if (!heap_older(radix, node, radix->heap[parent]))
            break;
        radix->heap[i] = radix->heap[parent];
        i = parent;
    }
    radix->heap[i] = node;
}

static int32_t heap_pop(kv_radix *radix, int64_t *size)
{
    int32_t top = radix->heap[0];
    int32_t last = radix->heap[--*size];
    int64_t i = 0;
    for (;;) {
        int64_t child = 2 * i + 1;
        if (child >= *size)
            break;
        if (child + 1 < *size && heap_older(radix, radix->heap[child + 1], radix->heap[child]))
            child++;
        if (!heap_older(radix, radix->heap[child], last))
            break;
        radix->heap[i] = radix->heap[child];
        i = child;
    }
    radix->heap[i] = last;
    return top;
}

int64_t kv_radix_evict(kv_radix *radix, int64_t blocks)
{
    if (kv_pool_free_blocks(radix->pool) >= blocks)
        return 0;
    /* Each node enters the heap at most once: the leaves now, a parent when
     * its last child leaves, so heap (node_capacity entries) never overflows. */
    int64_t size = 0;
    for (int32_t node = 0; node < radix->node_capacity; node++)
        if (radix->nodes[node].used && node_evictable(radix, node))
            heap_push(radix, &size, node);
    int64_t released = 0;
    while (size > 0 && kv_pool_free_blocks(radix->pool) < blocks) {
        int32_t node = heap_pop(radix, &size);
        int32_t parent = radix->nodes[node].parent;
        released += node_remove(radix, node);
        if (parent != NO_NODE && node_evictable(radix, parent))
            heap_push(radix, &size, parent);
    }
    radix->stats.evicted_blocks += released;
    return released;
}

int64_t kv_radix_evictable_blocks(const kv_radix *radix)
{
    /* A session holding a cached node holds its ancestors' blocks too (it attached the whole prefix), so a
     * node whose blocks only the cache holds has no held descendants: it can go once its children have. */
    int64_t blocks = 0;
    for (int32_t node = 0; node < radix->node_capacity; node++) {
        if (!radix->nodes[node].used)
            continue;
        const kv_block_id *node_blocks = blocks_of(radix, node);
        int64_t count = 0;
        bool only_cached = true;
        for (int32_t t = 0; t < radix->table_count && only_cached; t++)
            if (node_blocks[t] != KV_BLOCK_NONE) {
                only_cached = kv_pool_refcount(radix->pool, node_blocks[t]) == 1;
                count++;
            }
        if (only_cached)
            blocks += count;
    }
    return blocks;
}

void kv_radix_stats_get(const kv_radix *radix, kv_radix_stats *stats)
{
    *stats = radix->stats;
}
