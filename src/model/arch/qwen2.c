/* model/arch/qwen2.c: Qwen2 and Qwen2.5: the llama block with biases on the
 * q, k and v projections (picked up when present) and NEOX-style RoPE. */
#include "model/arch.h"

const arch_descriptor arch_qwen2 = {
    .name = "qwen2",
    .rope = ROPE_NEOX,
    .activation = FFN_SILU,
    .chat_format = STRATA_CHAT_CHATML,
};
