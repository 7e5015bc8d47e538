/* model/arch.h: architectures as descriptors.
 *
 * An architecture is data, not code: which optional tensors it has, its norm
 * placement, activation, RoPE style and the bases per layer, its attention
 * pattern (all global, or sliding-window layers interleaved with global ones),
 * embedding scale and chat format. One generic forward loop
 * (engine/forward.c) reads the descriptor; there is no copy of the loop per
 * architecture. Adding one is a file in model/arch/ plus a line in
 * model/arch/registry.c. */
#ifndef STRATA_MODEL_ARCH_H
#define STRATA_MODEL_ARCH_H

#include <stdbool.h>
#include <stddef.h>

#include "compute/cpu/compute.h"
#include "strata.h"

typedef enum ffn_activation {
    FFN_SILU,      /* SwiGLU: silu(gate) * up */
    FFN_GELU_TANH, /* GeGLU with the tanh approximation of GELU */
} ffn_activation;

typedef struct arch_descriptor {
    const char *name;            /* general.architecture, also the metadata key prefix */
    rope_style rope;
    ffn_activation activation;
    bool qk_norm;                /* per-head RMSNorm of q and k after projection, before RoPE */
    bool post_norms;             /* RMSNorm of attention and FFN outputs before each residual add */
    bool scale_embeddings;       /* embeddings multiplied by sqrt(n_embd) */
    int sliding_window_period;   /* 0: every layer global; p: layer il is global iff il % p == p - 1 */
    float local_rope_base;       /* RoPE base of sliding-window layers */
    strata_chat_format chat_format;
} arch_descriptor;

/* Returns the descriptor of a named architecture (length bytes), or NULL. */
const arch_descriptor *arch_find(const char *name, size_t length);
/* Writes the supported architecture names, comma-separated, into buffer. */
void arch_list_names(char *buffer, size_t capacity);

extern const arch_descriptor arch_llama;
extern const arch_descriptor arch_qwen2;
extern const arch_descriptor arch_qwen3;
extern const arch_descriptor arch_gemma3;

#endif
