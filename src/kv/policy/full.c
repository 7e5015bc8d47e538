/* kv/policy/full.c: the identity policy, "full".
 *
 * Keeps every slot of every table: no hooks, no statistics, no parameters.
 * It is the reference the other policies are measured against (fidelity:
 * top-1 agreement and KL divergence against the full cache), and what a
 * session runs when no policy is named. */
#include "kv/policy.h"

const kv_policy_ops kv_policy_full = {
    .name = "full",
    .summary = "keep every slot (no compression: the reference)",
    .params = NULL,
    .param_count = 0,
    .statistics = KV_STATISTICS_NONE,
    .on_prefill_end = NULL,
    .on_decode_step = NULL,
};
