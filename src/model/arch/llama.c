/* model/arch/llama.c: Llama 2 and 3, Mistral, SmolLM, TinyLlama.
 *
 * Pre-norm blocks with SwiGLU; GGUF stores q and k rows permuted for
 * adjacent-pair RoPE, so the NORM style applies. Optional rope_freqs
 * (Llama 3.1 and later) divide the angles. */
#include "model/arch.h"

const arch_descriptor arch_llama = {
    .name = "llama",
    .rope = ROPE_NORM,
    .activation = FFN_SILU,
    .chat_format = STRATA_CHAT_LLAMA3,
};
