/* model/arch/gemma3.c: Gemma 3 (text).
 *
 * Five sliding-window layers to one global layer (layer il is global iff
 * il % 6 == 5), RoPE base 10000 on the local layers and rope.freq_base on the
 * global ones, per-head q/k norms, norms after attention and FFN as well as
 * before, GELU-tanh, embeddings scaled by sqrt(n_embd). The GGUF converter
 * already added 1 to every norm weight, so norms multiply plainly. */
#include "model/arch.h"

const arch_descriptor arch_gemma3 = {
    .name = "gemma3",
    .rope = ROPE_NEOX,
    .activation = FFN_GELU_TANH,
    .qk_norm = true,
    .post_norms = true,
    .scale_embeddings = true,
    .sliding_window_period = 6,
    .local_rope_base = 10000.0f,
    .chat_format = STRATA_CHAT_GEMMA,
};
