/* kv/precision.c: the precision policies (kv/precision.h): their names and
 * parameters, and the pass that packs settled blocks.
 *
 * Parameters:
 *   residual  newest tokens kept in the base type. q8 and q4 default to 0
 *             (every full block is packed, as llama.cpp quantizes its whole
 *             cache); kivi4 and kivi2 to 128, the residual length of the
 *             KIVI paper (Liu et al., 2024), whose recent tokens stay in full
 *             precision. Blocks are packed whole, so the newest
 *             residual..residual + 15 tokens stay in the base type.
 *
 * `mixed` (MiKV, "No Token Left Behind: Reliable KV Cache Compression via
 * Importance-Aware Mixed Precision Quantization", Yang et al., 2024) is not a
 * pass: it changes what the eviction policy's choice does (kv_policy_keep):
 * the slots the policy keeps stay in the base type, and what it would drop
 * is demoted to `bits` (2, the paper's low precision; or 4) instead of
 * dropped. Blocks have one type, so demotion is by whole blocks of 16 slots:
 * a full block is demoted when none of its slots is kept (a block holding
 * one kept slot keeps all 16 at full precision). Alone, "mixed" demotes
 * what h2o would evict. */
#include "kv/precision.h"

#include <stdio.h>
#include <string.h>

static const kv_policy_param per_token_params[] = {
    {"residual", 0, 0, 1 << 24, "newest tokens kept in the base type (whole blocks are packed)"},
};

static const kv_policy_param kivi_params[] = {
    {"residual", 128, 0, 1 << 24, "newest tokens kept in the base type (KIVI's R; whole blocks are packed)"},
};

static const kv_policy_ops precision_q8 = {
    .name = "q8",
    .summary = "8-bit per-token blocks of 32 with an f16 scale (llama.cpp q8_0)",
    .params = per_token_params,
    .param_count = 1,
};

static const kv_policy_ops precision_q4 = {
    .name = "q4",
    .summary = "4-bit per-token blocks of 32 with an f16 scale (llama.cpp q4_0)",
    .params = per_token_params,
    .param_count = 1,
};

static const kv_policy_ops precision_kivi4 = {
    .name = "kivi4",
    .summary = "4-bit asymmetric: keys per channel, values per token in groups of 32 (KIVI, 2024)",
    .params = kivi_params,
    .param_count = 1,
};

static const kv_policy_ops precision_kivi2 = {
    .name = "kivi2",
    .summary = "2-bit asymmetric: keys per channel, values per token in groups of 32 (KIVI, 2024)",
    .params = kivi_params,
    .param_count = 1,
};

static const kv_policy_param mixed_params[] = {
    {"bits", 2, 2, 4, "bits of the demoted blocks: 2 (kivi2, MiKV's low precision) or 4 (kivi4)"},
};

const kv_policy_ops kv_precision_mixed = {
    .name = "mixed",
    .summary = "what the eviction policy would drop is demoted to 2 bits instead, whole blocks (MiKV, 2024)",
    .params = mixed_params,
    .param_count = 1,
};

static const struct {
    const kv_policy_ops *ops;
    kv_storage storage;
} precisions[] = {
    {&precision_q8, KV_STORAGE_Q8},
    {&precision_q4, KV_STORAGE_Q4},
    {&precision_kivi4, KV_STORAGE_KIVI4},
    {&precision_kivi2, KV_STORAGE_KIVI2},
    {&kv_precision_mixed, KV_STORAGE_KIVI2},
};

enum { PRECISION_COUNT = sizeof precisions / sizeof precisions[0] };

const kv_policy_ops *kv_precision_find(const char *name, kv_storage *storage)
{
    for (int i = 0; i < PRECISION_COUNT; i++)
        if (strcmp(precisions[i].ops->name, name) == 0) {
            if (storage != NULL)
                *storage = precisions[i].storage;
            return precisions[i].ops;
        }
    return NULL;
}

void kv_precision_list_names(char *buffer, size_t capacity)
{
    size_t used = 0;
    if (capacity > 0)
        buffer[0] = '\0';
    for (int i = 0; i < PRECISION_COUNT; i++) {
        int written = snprintf(buffer + used, capacity - used, "%s%s", i == 0 ? "" : ", ", precisions[i].ops->name);
        if (written < 0 || (size_t)written >= capacity - used)
            return;
        used += (size_t)written;
    }
}

strata_status kv_precision_apply(kv_seq *seq, kv_storage storage, int64_t residual, strata_error *err)
{
    kv_pool *pool = kv_seq_pool(seq);
    const kv_pool_config *config = kv_pool_configuration(pool);
    int64_t settled_before = kv_seq_length(seq) - residual; /* positions below it may be packed */
    for (int32_t layer = 0; layer < config->layer_count; layer++)
        for (int32_t head = 0; head < config->kv_head_count; head++) {
            const kv_block_table *table = kv_seq_table(seq, layer, head);
            int32_t full_blocks = (int32_t)(table->slot_count / config->block_tokens);
            for (int32_t b = 0; b < full_blocks; b++) {
                kv_block_id block = table->blocks[b];
                if (kv_block_storage(pool, block) != config->storage)
                    continue;
                /* Positions increase along a table: the block's last slot is its newest. */
                if (kv_block_positions_const(pool, block)[config->block_tokens - 1] >= settled_before)
                    break;
                strata_status status = kv_seq_convert_block(seq, layer, head, b, storage, err);
                if (status == STRATA_E_KV_FULL)
                    return STRATA_OK;
                if (status != STRATA_OK)
                    return status;
            }
        }
    return STRATA_OK;
}
