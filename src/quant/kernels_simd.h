/* quant/kernels_simd.h: the code kernels_avx2.c and kernels_avx512.c share.
 *
 * The two files have the same shape. Each block type has a decoder,
 * <type>_decode(block, sink), that hands the block's values to a value_sink,
 * which either stores them (dequantize) or multiplies them with x into
 * running sums (dot). The sink is as wide as the file's vectors, so each
 * file first defines value_sink (with the members dequantizing, out and x)
 * and sinks_total(even, odd), the dot product two sinks hold, then includes
 * this header for what does not depend on the vector width: the loops over
 * a row's blocks, BLOCK_ROW_KERNELS to make the row kernels of a type from
 * its decoder, the bytewise assembly of Q6_K quants (256-bit operations in
 * both files), and the reading of f16 fields. Only those two files,
 * compiled with AVX2 or more, include it. */
#ifndef STRATA_QUANT_KERNELS_SIMD_H
#define STRATA_QUANT_KERNELS_SIMD_H

#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>

#include "quant/kernels_private.h"

/* An f16 field as a float (F16C converts exactly, as quant_f16_to_f32 does). */
ALWAYS_INLINE float read_f16(const uint8_t half[2])
{
    return _cvtsh_ss(quant_read_u16(half));
}

typedef void (*block_decoder)(const uint8_t *block, value_sink *sink);

ALWAYS_INLINE void dequantize_blocks(block_decoder decode, size_t block_bytes, int block_elements,
                                     const void *row, float *out, int64_t n)
{
    value_sink sink = {.dequantizing = true};
    const uint8_t *block = row;
    for (int64_t start = 0; start < n; start += block_elements, block += block_bytes) {
        sink.out = out + start;
        decode(block, &sink);
    }
}

/* A block of 32 adds into only one or two of a sink's sums, so blocks of 32
 * alternate between two sinks, for more independent chains of FMAs; a block
 * of 256 fills all the sums of one. */
ALWAYS_INLINE float dot_blocks(block_decoder decode, size_t block_bytes, int block_elements,
                               const void *row, const float *x, int64_t n)
{
    value_sink even = {.dequantizing = false}, odd = {.dequantizing = false};
    const uint8_t *block = row;
    int64_t start = 0;
    if (block_elements < QUANT_SUPER_BLOCK_ELEMENTS) {
        for (; start + 2 * block_elements <= n; start += 2 * block_elements, block += 2 * block_bytes) {
            even.x = x + start;
            decode(block, &even);
            odd.x = x + start + block_elements;
            decode(block + block_bytes, &odd);
        }
    }
    for (; start < n; start += block_elements, block += block_bytes) {
        even.x = x + start;
        decode(block, &even);
    }
    return sinks_total(&even, &odd);
}

/* The row dequantizer and the dot of one block type, from its decoder. */
#define BLOCK_ROW_KERNELS(type, elements)                                              \
    static void dequantize_##type(const void *row, float *out, int64_t n)              \
    {                                                                                  \
        dequantize_blocks(type##_decode, sizeof(type##_block), elements, row, out, n); \
    }                                                                                  \
    static float dot_##type(const void *row, const float *x, int64_t n)                \
    {                                                                                  \
        return dot_blocks(type##_decode, sizeof(type##_block), elements, row, x, n);   \
    }

/* The 128 six-bit quants of one half of a Q6_K block, as four groups of 32
 * bytes (group g holds elements 128 * half + 32g .. +31), each quant minus
 * 32. Low 4 bits from ql (groups 0, 1: low nibbles of its two 32-byte rows;
 * 2, 3: high nibbles), top 2 bits from bits 2g, 2g + 1 of qh. The shifts
 * are 16-bit: the bits they move across byte borders are masked off. */
ALWAYS_INLINE void q6_k_half_quants(const q6_k_block *block, int half, __m256i groups[4])
{
    __m256i low4 = _mm256_set1_epi8(0x0f), top2 = _mm256_set1_epi8(0x30), bias = _mm256_set1_epi8(32);
    __m256i ql_a = _mm256_loadu_si256((const __m256i *)(block->ql + 64 * half));
    __m256i ql_b = _mm256_loadu_si256((const __m256i *)(block->ql + 64 * half + 32));
    __m256i qh = _mm256_loadu_si256((const __m256i *)(block->qh + 32 * half));
    groups[0] = _mm256_or_si256(_mm256_and_si256(ql_a, low4), _mm256_and_si256(_mm256_slli_epi16(qh, 4), top2));
    groups[1] = _mm256_or_si256(_mm256_and_si256(ql_b, low4), _mm256_and_si256(_mm256_slli_epi16(qh, 2), top2));
    groups[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql_a, 4), low4), _mm256_and_si256(qh, top2));
    groups[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql_b, 4), low4),
                                _mm256_and_si256(_mm256_srli_epi16(qh, 2), top2));
#pragma GCC unroll 4
    for (int group = 0; group < 4; group++)
        groups[group] = _mm256_sub_epi8(groups[group], bias);
}

#endif
