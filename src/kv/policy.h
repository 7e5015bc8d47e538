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
 * A policy may keep its own per-session state (create_state, cloned on
 * fork), and instead of evicting it may choose, at each decode step, which
 * blocks of a table attention reads (select_blocks): then nothing is freed,
 * the budget bounds what a step reads.
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
    void *state;                   /* what ops->create_state made for this session; NULL without it */
    kv_storage demote_to;          /* the pool's base type: kv_policy_keep drops slots; a packed type
                                      ("mixed", MiKV): it keeps every slot and packs instead each full
                                      block none of whose slots is kept */
    const float *head_scores;      /* per table (layer * kv_heads + head): its retrieval score from the
                                      session's head profile (engine/calibrate.h); NULL without one */
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
    bool head_profile; /* needs view->head_scores: a session without a head profile is refused */
    /* Each hook may be NULL. */
    strata_status (*on_prefill_chunk)(const kv_policy_view *view, strata_error *err);
    strata_status (*on_prefill_end)(const kv_policy_view *view, strata_error *err);
    strata_status (*on_decode_step)(const kv_policy_view *view, strata_error *err);
    /* Optional per-session state (all three or none): made once when the
     * session is set up (view->seq may still be NULL then), copied for a fork,
     * freed with the session (destroy accepts NULL). Hooks find it in view->state. */
    strata_status (*create_state)(const kv_policy_view *view, void **state, strata_error *err);
    void (*destroy_state)(void *state);
    strata_status (*clone_state)(const void *state, void **out, strata_error *err);
    /* Optional selection without eviction (Quest-style): at a step of one new
     * token, after its key and value were written, chooses which blocks of
     * the table of (layer, kv_head) attention reads, given the new token's
     * queries of the KV group ([group][key_length], rotated as the keys are).
     * Writes increasing block indices into chosen (room for the table's
     * block_count) and returns how many; the table's last block is always
     * among them, so every chosen block but the last is full. Such a policy
     * keeps statistics NONE: slot masses would not know the slot indices of
     * a partial view. */
    int64_t (*select_blocks)(const kv_policy_view *view, int32_t layer, int32_t kv_head, const float *queries,
                             int64_t group, int64_t *chosen);
} kv_policy_ops;

/* A policy's block selection bound to one session, as a step of the forward
 * pass carries it (engine/forward.h): ops->select_blocks called with &view. */
typedef struct kv_block_selection {
    const kv_policy_ops *ops;
    kv_policy_view view;
} kv_block_selection;

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
/* Like kv_policy_parse_params for a composed policy ("snapkv+kivi4"): each
 * name=value goes to the policy that has that parameter (the eviction
 * policy first); precision may be NULL. */
strata_status kv_policy_parse_composed(const kv_policy_ops *policy, const kv_policy_ops *precision, const char *text,
                                       double *policy_values, double *precision_values, strata_error *err);
/* Returns the value of the named parameter in values. */
double kv_policy_param_value(const kv_policy_ops *ops, const double *values, const char *name);

/* Keeps slots keep[0..count) (increasing) of the table of (layer, kv_head):
 * compacts the table, the statistics and the slot arrays of its slots alike.
 * Under "mixed" (view->demote_to packed) nothing is dropped: each full block
 * without a kept slot is packed into view->demote_to (once packed, a block
 * stays packed). */
strata_status kv_policy_keep(const kv_policy_view *view, int32_t layer, int32_t kv_head, const int64_t *keep,
                             int64_t count, strata_error *err);

/* Sets *most_slots to the most slots any table of a global (not windowed)
 * layer holds (0 when there is none). With needs_mass, a table holding more
 * than `budget` slots without mass statistics is an error naming `policy`. */
strata_status kv_policy_largest_table(const kv_policy_view *view, int64_t budget, bool needs_mass, const char *policy,
                                      int64_t *most_slots, strata_error *err);
/* Keeps the first `sinks` and the most recent slots of a table, view->budget
 * in all (a budget of at most `sinks`: the last budget slots, no sinks); keep
 * has room for budget entries and the table holds more than that. */
strata_status kv_policy_keep_sinks_and_recent(const kv_policy_view *view, int32_t layer, int32_t kv_head,
                                              int64_t sinks, int64_t *keep, strata_error *err);

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
extern const kv_policy_ops kv_policy_duo;
extern const kv_policy_ops kv_policy_merge;
extern const kv_policy_ops kv_policy_quest;
extern const kv_policy_ops kv_policy_cake;
extern const kv_policy_ops kv_policy_windowkv;
extern const kv_policy_ops kv_policy_lazy;

#endif
