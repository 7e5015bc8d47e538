/* kv/policy.h: KV compression policies, chosen per session by name.
 *
 * A policy is a small table of hooks. After each chunk of a prompt
 * (on_prefill_chunk; the last chunk too), once the whole prompt is in the
 * cache (on_prefill_end) and after every decode step (on_decode_step) the
 * policy may choose, per (layer, KV head) table, which slots to keep; it
 * calls kv_policy_keep, which compacts the table (kv_seq_keep: kept slots
 * packed into fewer blocks, emptied blocks returned to the pool) together
 * with the statistics kept for those slots. Lengths may differ per layer and
 * per head: the memory is really freed, not masked.
 *
 * Statistics come from the attention kernel, never from recomputing
 * attention: a policy asks for the attention mass each slot received, from
 * the last `observation` prompt queries (SnapKV-style) or accumulated over
 * every query so far (H2O-style), and optionally the sum of its squares
 * (for the variance of a slot's attention across queries, CAKE-style). A
 * policy may also keep its own per-slot numbers (slot_arrays), which the
 * session stores, compacts with the table, copies on fork, and zeroes for
 * new slots. Sliding-window layers are already bounded
 * by their window and are left alone: policies see only global layers.
 *
 * Adding a policy is one file in kv/policy/ and one line in
 * kv/policy/registry.c. */
#ifndef STRATA_KV_POLICY_H
#define STRATA_KV_POLICY_H

#include <stdbool.h>
#include <stdint.h>

#include "kv/seq.h"
#include "strata.h"

enum { KV_POLICY_MAX_PARAMS = 8, KV_POLICY_MAX_SLOT_ARRAYS = 4 };

typedef struct kv_policy_param {
    const char *name;
    double default_value;
    double minimum;
    double maximum;
    const char *meaning;
} kv_policy_param;

typedef enum kv_policy_statistics {
    KV_STATISTICS_NONE = 0,
    KV_STATISTICS_OBSERVATION, /* mass from the prompt's last `observation` queries (parameter "observation") */
    KV_STATISTICS_ACCUMULATED, /* mass from every query, prompt and decode steps */
} kv_policy_statistics;

/* What a hook sees of one session. */
typedef struct kv_policy_view {
    kv_seq *seq;
    int32_t layer_count;
    int32_t kv_head_count;
    const bool *layer_is_windowed; /* per layer: a sliding-window layer, left alone */
    int64_t budget;                /* slots per (layer, KV head) a policy keeps at most (beyond any
                                      recent window it declares) */
    const double *params;          /* values, in the order of ops->params */
    float *const *mass;            /* per table (layer * kv_heads + head): one float per slot; NULL
                                      arrays for windowed layers and when no statistics are kept */
    float *const *mass_squares;    /* like mass, the sum of the squares of the probabilities summed
                                      there (one per query and query head); NULL unless ops->mass_squares */
    float *const *slot_arrays;     /* per table, slot_array_count arrays of one float per slot:
                                      entry table * slot_array_count + k; NULL for windowed layers */
    int slot_array_count;          /* ops->slot_arrays */
    int64_t context_length;        /* slots each statistics or slot array holds at most */
    bool prompt_done;              /* false inside on_prefill_chunk before the prompt's last chunk */
} kv_policy_view;

typedef struct kv_policy_ops {
    const char *name;
    const char *summary; /* one line, with the paper */
    const kv_policy_param *params;
    int param_count;
    kv_policy_statistics statistics;
    bool mass_squares; /* also collect the squares of the per-query masses */
    int slot_arrays;   /* per-slot floats per table the policy keeps for itself, at most
                          KV_POLICY_MAX_SLOT_ARRAYS */
    /* Each hook may be NULL. */
    strata_status (*on_prefill_chunk)(const kv_policy_view *view, strata_error *err);
    strata_status (*on_prefill_end)(const kv_policy_view *view, strata_error *err);
    strata_status (*on_decode_step)(const kv_policy_view *view, strata_error *err);
} kv_policy_ops;

/* Returns the policy named name ("full" is the identity), or NULL. */
const kv_policy_ops *kv_policy_find(const char *name);
/* Writes the registered names, comma-separated, into buffer. */
void kv_policy_list_names(char *buffer, size_t capacity);
/* Returns the number of registered policies and, through *out, the table. */
int kv_policy_registry(const kv_policy_ops *const **out);

/* Parses "name=value,name=value" against a policy's parameters into values
 * (defaults first); an unknown name or a value out of range is an error that
 * lists the valid parameters. text may be NULL. */
strata_status kv_policy_parse_params(const kv_policy_ops *ops, const char *text, double *values, strata_error *err);
/* Returns the value of the named parameter in values. */
double kv_policy_param_value(const kv_policy_ops *ops, const double *values, const char *name);

/* Keeps slots keep[0..count) (increasing) of the table of (layer, kv_head):
 * compacts the table, the statistics and the slot arrays of its slots alike. */
strata_status kv_policy_keep(const kv_policy_view *view, int32_t layer, int32_t kv_head, const int64_t *keep,
                             int64_t count, strata_error *err);

/* Helpers for score-based policies. Fills order[0..n) with the indices of
 * scores[first..first+n) sorted by score, highest first (ties: lower index
 * first), for choosing the top k. */
void kv_policy_rank(const float *scores, int64_t n, int64_t *order);
/* Sorts indices[0..n) increasingly (keep lists must be increasing). */
void kv_policy_sort_indices(int64_t *indices, int64_t n);

extern const kv_policy_ops kv_policy_full;
extern const kv_policy_ops kv_policy_streaming;
extern const kv_policy_ops kv_policy_h2o;
extern const kv_policy_ops kv_policy_snapkv;
extern const kv_policy_ops kv_policy_pyramidkv;

#endif
