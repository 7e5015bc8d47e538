/* kv/precision.h: precision policies: older KV kept in fewer bits.
 *
 * A precision is the second half of a composed policy name ("snapkv+kivi4",
 * or alone: "q8"): after every hook of the eviction policy (after each
 * prompt chunk, at the end of the prompt, after each decode step) every full
 * block of every table whose slots are all older than the newest `residual`
 * tokens is converted from the pool's base type to the packed type
 * (kv_seq_convert_block), which returns the difference to the pool. New
 * tokens are always written in the base type, and the newest, partially
 * filled block stays there, so a precision quantizes whole blocks of 16
 * slots once they fill: q8 and q4 are per token (llama.cpp's q8_0 and
 * q4_0), so a block's rows come out as llama.cpp would quantize them one by
 * one; kivi4 and kivi2 quantize keys per channel over the block's 16 slots
 * and values per token in groups of 32 channels (kv/packed.h). Every layer
 * is packed, sliding-window layers too. A precision is described like a
 * policy (name, summary, parameters) but has no hooks of its own. */
#ifndef STRATA_KV_PRECISION_H
#define STRATA_KV_PRECISION_H

#include "kv/policy.h"
#include "kv/pool.h"
#include "kv/seq.h"

/* "mixed": demotion instead of eviction (kv_policy_view.demote_to), not a pass. */
extern const kv_policy_ops kv_precision_mixed;

/* Returns the precision named name ("q8", "q4", "kivi4", "kivi2") and its storage type, or NULL. */
const kv_policy_ops *kv_precision_find(const char *name, kv_storage *storage);
/* Writes the precision names, comma-separated, into buffer. */
void kv_precision_list_names(char *buffer, size_t capacity);

/* Packs every full block of seq older than the newest `residual` tokens into
 * `storage`; stops quietly (the rest stays in the base type) when the pool
 * has no room for a packed block, and fails only on other errors. */
strata_status kv_precision_apply(kv_seq *seq, kv_storage storage, int64_t residual, strata_error *err);

#endif
