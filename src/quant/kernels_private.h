/* quant/kernels_private.h: what the kernel files share and nobody else sees.
 *
 * dequantize.c (scalar), kernels_avx2.c and kernels_avx512.c each define the
 * table of kernels they implement themselves; kernels.c merges them, so that
 * a SIMD level falls back to the scalar kernel for every type it leaves NULL.
 *
 * The block structs below are the byte layouts of the quantized types: only
 * byte arrays, so they have no padding and alignment 1, and a row of blocks
 * can be read in place from a mapped file whatever its alignment. Half
 * fields are read with quant_read_u16 (memcpy). Which element a bit belongs
 * to is described next to the scalar kernels in dequantize.c. */
#ifndef STRATA_QUANT_KERNELS_PRIVATE_H
#define STRATA_QUANT_KERNELS_PRIVATE_H

#include <stdint.h>
#include <string.h>

#include "quant/kernels.h"

/* For the helpers of the SIMD kernels: they must be inlined so that their
 * constant arguments (decoders, offsets, flags) fold away. */
#define ALWAYS_INLINE static inline __attribute__((always_inline))

#define QUANT_BLOCK_ELEMENTS 32        /* values per block of Q4_0 .. Q8_0 */
#define QUANT_SUPER_BLOCK_ELEMENTS 256 /* values per block of the K types */

typedef struct q8_0_block {
    uint8_t d[2];   /* f16 scale */
    uint8_t qs[32]; /* int8 quants */
} q8_0_block;

typedef struct q4_0_block {
    uint8_t d[2];
    uint8_t qs[16]; /* two 4-bit quants per byte */
} q4_0_block;

typedef struct q4_1_block {
    uint8_t d[2];
    uint8_t m[2]; /* f16 offset added to every value */
    uint8_t qs[16];
} q4_1_block;

typedef struct q5_0_block {
    uint8_t d[2];
    uint8_t qh[4]; /* little-endian u32: the fifth bit of each quant */
    uint8_t qs[16];
} q5_0_block;

typedef struct q5_1_block {
    uint8_t d[2];
    uint8_t m[2];
    uint8_t qh[4];
    uint8_t qs[16];
} q5_1_block;

typedef struct q4_k_block {
    uint8_t d[2];       /* f16 scale of the sub-block scales */
    uint8_t dmin[2];    /* f16 scale of the sub-block mins */
    uint8_t scales[12]; /* 8 six-bit scales and 8 six-bit mins, packed */
    uint8_t qs[128];    /* two 4-bit quants per byte */
} q4_k_block;

typedef struct q5_k_block {
    uint8_t d[2];
    uint8_t dmin[2];
    uint8_t scales[12];
    uint8_t qh[32]; /* the fifth bits */
    uint8_t qs[128];
} q5_k_block;

typedef struct q6_k_block {
    uint8_t ql[128];   /* low 4 bits, two quants per byte */
    uint8_t qh[64];    /* high 2 bits, four quants per byte */
    int8_t scales[16]; /* signed scale of each sub-block of 16 */
    uint8_t d[2];      /* f16 scale of the scales */
} q6_k_block;

_Static_assert(sizeof(q8_0_block) == 34, "Q8_0 block is 34 bytes");
_Static_assert(sizeof(q4_0_block) == 18, "Q4_0 block is 18 bytes");
_Static_assert(sizeof(q4_1_block) == 20, "Q4_1 block is 20 bytes");
_Static_assert(sizeof(q5_0_block) == 22, "Q5_0 block is 22 bytes");
_Static_assert(sizeof(q5_1_block) == 24, "Q5_1 block is 24 bytes");
_Static_assert(sizeof(q4_k_block) == 144, "Q4_K block is 144 bytes");
_Static_assert(sizeof(q5_k_block) == 176, "Q5_K block is 176 bytes");
_Static_assert(sizeof(q6_k_block) == 210, "Q6_K block is 210 bytes");

/* Reads a little-endian u16 (strata runs on little-endian machines) from
 * possibly unaligned memory. */
static inline uint16_t quant_read_u16(const uint8_t *bytes)
{
    uint16_t value;
    memcpy(&value, bytes, sizeof value);
    return value;
}

/* Reads a little-endian u32 from possibly unaligned memory. */
static inline uint32_t quant_read_u32(const uint8_t *bytes)
{
    uint32_t value;
    memcpy(&value, bytes, sizeof value);
    return value;
}

/* The scales and offsets of the 8 sub-blocks of a Q4_K/Q5_K block:
 * scales[s] = d * sc[s], offsets[s] = dmin * m[s], where sc and m are 6-bit
 * fields packed into 12 bytes. Sub-blocks 0..3 keep sc and m in the low 6
 * bits of bytes s and s+4; sub-blocks 4..7 keep their low 4 bits in byte
 * s+4 (sc in the low nibble, m in the high one) and their top 2 bits in the
 * spare top bits of bytes s-4 (sc) and s (m). Every kernel file uses this, so
 * the products are the same floats everywhere. */
static inline void quant_k_sub_block_scales(float d, float dmin, const uint8_t packed[12],
                                            float scales[8], float offsets[8])
{
    for (int s = 0; s < 8; s++) {
        int sc, m;
        if (s < 4) {
            sc = packed[s] & 63;
            m = packed[s + 4] & 63;
        } else {
            sc = (packed[s + 4] & 15) | (packed[s - 4] >> 6) << 4;
            m = (packed[s + 4] >> 4) | (packed[s] >> 6) << 4;
        }
        scales[s] = d * (float)sc;
        offsets[s] = dmin * (float)m;
    }
}

/* One kernel of every computable type, by name: <kind>_<type>. */
#define QUANT_KERNELS_BY_TYPE(kind)  \
    {                                \
        [TENSOR_F32] = kind##_f32,   \
        [TENSOR_F16] = kind##_f16,   \
        [TENSOR_BF16] = kind##_bf16, \
        [TENSOR_Q8_0] = kind##_q8_0, \
        [TENSOR_Q4_0] = kind##_q4_0, \
        [TENSOR_Q4_1] = kind##_q4_1, \
        [TENSOR_Q5_0] = kind##_q5_0, \
        [TENSOR_Q5_1] = kind##_q5_1, \
        [TENSOR_Q4_K] = kind##_q4_k, \
        [TENSOR_Q5_K] = kind##_q5_k, \
        [TENSOR_Q6_K] = kind##_q6_k, \
    }

/* A level's kernel table, for a file that implements every computable type
 * with static functions named dequantize_<type>, dot_<type> and
 * dot_multi_<type>. */
#define QUANT_KERNEL_TABLE(table_level)                  \
    {                                                    \
        .level = (table_level),                          \
        .dequantize = QUANT_KERNELS_BY_TYPE(dequantize), \
        .dot = QUANT_KERNELS_BY_TYPE(dot),               \
        .dot_multi = QUANT_KERNELS_BY_TYPE(dot_multi),   \
    }

/* The kernels each level implements itself (NULL where it does not). */
extern const quant_kernels quant_kernels_scalar_own;
extern const quant_kernels quant_kernels_avx2_own;
extern const quant_kernels quant_kernels_avx512_own;

#endif
