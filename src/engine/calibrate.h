/* engine/calibrate.h: head profiles, which (layer, KV head) tables retrieve
 * from far back in the context.
 *
 * calibrate_run measures, on synthetic retrieval data, how much attention
 * each (layer, KV head) puts on the one slot a copy task needs; the policy
 * `duo` keeps every slot of the highest-scoring tables and only sinks plus
 * recent slots of the others. A profile is a small text file:
 *
 *     # strata head profile v1
 *     # any further line starting with '#' is a comment
 *     model Gemma_3_270m layers 18 kv_heads 1
 *     0.001234          <- layer 0: kv_heads scores, separated by spaces
 *     ...               <- one line per layer
 *
 * (the model's name with its white space turned into '_'; only the layer and
 * head counts are checked when a profile is read). */
#ifndef STRATA_ENGINE_CALIBRATE_H
#define STRATA_ENGINE_CALIBRATE_H

#include <stdint.h>

#include "strata.h"

enum { CALIBRATE_MAX_SAMPLES = 256 };

typedef struct calibrate_options {
    int32_t samples; /* random sequences, 1..CALIBRATE_MAX_SAMPLES, run together in one batch */
    int32_t length;  /* tokens of each after the BOS token: two copies of length / 2 random words */
    uint64_t seed;   /* of the word choice */
} calibrate_options;

/* Fills scores[layer * kv_heads + head] (layer_count * kv_head_count values)
 * with that table's retrieval score: the attention mass its query heads put
 * on the slot a copy of a random sequence must read, averaged over the
 * queries of the second copy and over the samples, divided by the query
 * heads per KV head; in [0, 1]. */
strata_status calibrate_run(strata_model *model, const calibrate_options *options, float *scores,
                            strata_error *err);

/* Writes the profile of scores for model to path (comment: optional lines
 * written after the header, each prefixed with "# "). */
strata_status calibrate_write_profile(const char *path, const strata_model *model, const char *comment,
                                      const float *scores, strata_error *err);

/* Reads a profile for a model of layer_count layers of kv_head_count KV heads
 * into *scores (newly allocated, layer * kv_heads + head; the caller frees
 * it). A missing or malformed file, or one for another layer or head count,
 * is STRATA_E_INVALID_ARGUMENT with a message naming the file and the line. */
strata_status calibrate_read_profile(const char *path, int64_t layer_count, int64_t kv_head_count, float **scores,
                                     strata_error *err);

#endif
