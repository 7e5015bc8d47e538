/* model/arch/qwen3.c: Qwen3 (dense): no projection biases, a per-head RMSNorm
 * of q and k before NEOX-style RoPE; head size from attention.key_length. */
#include "model/arch.h"

const arch_descriptor arch_qwen3 = {
    .name = "qwen3",
    .rope = ROPE_NEOX,
    .activation = FFN_SILU,
    .qk_norm = true,
    .chat_format = STRATA_CHAT_CHATML,
};
