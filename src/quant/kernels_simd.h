/* quant/kernels_simd.h: the code kernels_avx2.c and kernels_avx512.c share.
 *
 * The two files have the same shape. Each block type has a decoder,
 * <type>_decode(block, sink), that hands the block's values to a value_sink,
 * which either stores them (dequantize) or multiplies them with activations
 * into running sums (dot, dot_multi). Each file first defines its vector:
 * float_vector, VECTOR_FLOATS, BLOCK_SCALING_COUNT_MAX (see below) and the
 * few operations the sink needs (vector_load, vector_load_first, vector_store,
 * vector_set1, vector_add, vector_mul, vector_fmadd, vector_total), then
 * includes this header for everything that does not depend on the vector
 * width: the sink, the loops over a row's blocks, BLOCK_ROW_KERNELS to make
 * the row kernels of a type from its decoder, dot_multi over any row, the
 * bytewise assembly of Q6_K quants (256-bit operations in both files), and
 * the reading of f16 fields. Only those two files, compiled with AVX2 or
 * more, include it.
 *
 * A dot_multi sink holds running sums for `count` activation vectors and
 * multiplies every value it is handed with each of them, so a block is
 * decoded once however many vectors there are. Its sums must stay in
 * registers: count is a constant in each copy of the row loop (one copy per
 * count, see dot_multi_rows), so the loops over the vectors unroll and each
 * sum becomes a register of its own. With more vectors each gets fewer sums
 * (sink_slots): the vectors' sums are already independent chains of FMAs,
 * and the registers must hold the decoder's values too (16 with AVX2).
 * Blocks are not alternated between two sinks as in the single dot: that
 * would double the sums again. */
#ifndef STRATA_QUANT_KERNELS_SIMD_H
#define STRATA_QUANT_KERNELS_SIMD_H

#include <assert.h>
#include <immintrin.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "quant/kernels_private.h"

/* ---- the value sink ------------------------------------------------------ */

#define SINK_SLOTS 4 /* running sums per vector: the single dot's, the most any sink uses */

typedef struct value_sink {
    bool dequantizing; /* true: store values to out; false: add values * x to sums */
    float *out;        /* the current block's first output */
    int count;         /* activation vectors: 1 for dot, up to QUANT_DOT_MULTI_MAX */
    const float *x[QUANT_DOT_MULTI_MAX]; /* x[t]: the current block's first activation of vector t */
    float_vector sums[QUANT_DOT_MULTI_MAX][SINK_SLOTS]; /* sums[t][slot]: running sums of vector t */
} value_sink;

/* The running sums each of `count` vectors spreads its products over: the
 * four of the single dot; two each for two to four vectors; one from five
 * on. The vectors' sums are independent chains of FMAs already, 4 to 8 of
 * them keep the FMA units busy, and the registers must hold the decoder's
 * values too (16 with AVX2). Measured on Zen 4: with more sums AVX2 spills
 * Q5_K's decoding; with fewer, three vectors wait on their FMAs. */
ALWAYS_INLINE int sink_slots(int count)
{
    return count <= 1 ? SINK_SLOTS : count <= 4 ? 2 : 1;
}

/* Hands over the current block's values offset..offset + VECTOR_FLOATS - 1. */
ALWAYS_INLINE void sink_put(value_sink *sink, int offset, float_vector values)
{
    if (sink->dequantizing) {
        vector_store(sink->out + offset, values);
        return;
    }
    int slot = (offset / VECTOR_FLOATS) % sink_slots(sink->count);
#pragma GCC unroll 8
    for (int t = 0; t < sink->count; t++) {
        float_vector x = vector_load(sink->x[t] + offset);
        sink->sums[t][slot] = vector_fmadd(values, x, sink->sums[t][slot]);
    }
}

/* Hands over the last `available` (< VECTOR_FLOATS) values of a row, the
 * lanes past them zero; only `available` activations of each vector are read. */
ALWAYS_INLINE void sink_put_first(value_sink *sink, int64_t available, float_vector values)
{
#pragma GCC unroll 8
    for (int t = 0; t < sink->count; t++) {
        float_vector x = vector_load_first(sink->x[t], available);
        sink->sums[t][0] = vector_fmadd(values, x, sink->sums[t][0]);
    }
}

/* The running sums of vector t, added up pairwise. */
ALWAYS_INLINE float_vector sink_sum(const value_sink *sink, int t)
{
    const float_vector *sums = sink->sums[t];
    switch (sink_slots(sink->count)) {
    case 1: return sums[0];
    case 2: return vector_add(sums[0], sums[1]);
    default: return vector_add(vector_add(sums[0], sums[1]), vector_add(sums[2], sums[3]));
    }
}

/* The dot product two single-vector sinks hold. */
ALWAYS_INLINE float sinks_total(const value_sink *even, const value_sink *odd)
{
    return vector_total(vector_add(sink_sum(even, 0), sink_sum(odd, 0)));
}

/* ---- blocks of 32 ---------------------------------------------------------
 *
 * The decoders turn a block's quants into exact small integers held as
 * floats (q - 8, q - 16 or q) and hand them over with d and, for Q4_1/Q5_1,
 * m. Dequantizing multiplies (and adds) as dequantize.c does. A dot product
 * of a type without m scales the block's sum once: d * q is exact in f32
 * for these types, so this changes rounding only, and saves a multiply per
 * vector of values. dot_multi scales each of its vectors' block sums the
 * same way for up to BLOCK_SCALING_COUNT_MAX vectors (the file's choice,
 * measured); with more, those multiplies cost more than forming the values
 * once (BLOCK32_VECTORS multiplies) and FMAing them with every vector. With
 * m, d * q and m may nearly cancel, and separate sums of d * q * x and
 * m * x could then be far larger than the result and lose its precision;
 * so the values are formed first, and the dot stays a sum of the very
 * values dequantize gives. */

#define BLOCK32_VECTORS (QUANT_BLOCK_ELEMENTS / VECTOR_FLOATS)

/* Hands over the 32 quants of the current block: values d * q (+ m). */
ALWAYS_INLINE void sink_put_block32(value_sink *sink, const float_vector quants[BLOCK32_VECTORS], float d, bool has_m,
                                    float m)
{
    float_vector scale = vector_set1(d);
    if (!sink->dequantizing && !has_m && sink->count <= BLOCK_SCALING_COUNT_MAX) {
#pragma GCC unroll 8
        for (int t = 0; t < sink->count; t++) {
            const float *x = sink->x[t];
            float_vector block = vector_mul(quants[0], vector_load(x));
#pragma GCC unroll 4
            for (int part = 1; part < BLOCK32_VECTORS; part++)
                block = vector_fmadd(quants[part], vector_load(x + VECTOR_FLOATS * part), block);
            sink->sums[t][0] = vector_fmadd(scale, block, sink->sums[t][0]);
        }
        return;
    }
#pragma GCC unroll 4
    for (int part = 0; part < BLOCK32_VECTORS; part++) {
        float_vector values = vector_mul(scale, quants[part]);
        if (has_m)
            values = vector_add(values, vector_set1(m));
        sink_put(sink, VECTOR_FLOATS * part, values);
    }
}

/* ---- rows of blocks ------------------------------------------------------ */

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
    value_sink even = {.dequantizing = false, .count = 1}, odd = {.dequantizing = false, .count = 1};
    const uint8_t *block = row;
    int64_t start = 0;
    if (block_elements < QUANT_SUPER_BLOCK_ELEMENTS) {
        for (; start + 2 * block_elements <= n; start += 2 * block_elements, block += 2 * block_bytes) {
            even.x[0] = x + start;
            decode(block, &even);
            odd.x[0] = x + start + block_elements;
            decode(block + block_bytes, &odd);
        }
    }
    for (; start < n; start += block_elements, block += block_bytes) {
        even.x[0] = x + start;
        decode(block, &even);
    }
    return sinks_total(&even, &odd);
}

/* Points a dot_multi sink at element `start` of each of its vectors, the
 * first at x, the others x_stride floats apart. The empty asm hides how the
 * pointers relate to each other and to the previous block's: seeing through
 * them, GCC keeps a pointer for every vector and offset of a block, more
 * than there are registers, and reloads them from the stack. */
ALWAYS_INLINE void sink_move_to(value_sink *sink, const float *x, int64_t x_stride, int64_t start)
{
#pragma GCC unroll 8
    for (int t = 0; t < sink->count; t++) {
        const float *vector = x + t * x_stride + start;
        __asm__("" : "+r"(vector));
        sink->x[t] = vector;
    }
}

/* Hands all the values of a row of blocks to a dot_multi sink. */
ALWAYS_INLINE void walk_blocks(block_decoder decode, size_t block_bytes, int block_elements, const void *row,
                               const float *x, int64_t x_stride, int64_t n, value_sink *sink)
{
    const uint8_t *block = row;
    for (int64_t start = 0; start < n; start += block_elements, block += block_bytes) {
        sink_move_to(sink, x, x_stride, start);
        decode(block, sink);
    }
}

/* ---- dot_multi over any row ---------------------------------------------- */

/* Hands all the values of a row to a dot_multi sink (one function per type). */
typedef void (*row_walker)(const void *row, const float *x, int64_t x_stride, int64_t n, value_sink *sink);

/* dot_multi with a constant count: one pass over the row, then each
 * vector's sums added up. */
ALWAYS_INLINE void dot_multi_counted(row_walker walk, int count, const void *row, const float *x, int64_t x_stride,
                                     int64_t n, float *out)
{
    value_sink sink = {.dequantizing = false, .count = count};
    walk(row, x, x_stride, n, &sink);
#pragma GCC unroll 8
    for (int t = 0; t < count; t++)
        out[t] = vector_total(sink_sum(&sink, t));
}

/* dot_multi: count 1 is the single dot; every other count has its own copy
 * of the row loop, in which count is a constant (see the top of the file). */
ALWAYS_INLINE void dot_multi_rows(row_walker walk, quant_dot_fn dot, const void *row, const float *x,
                                  int64_t x_stride, int count, int64_t n, float *out)
{
    _Static_assert(QUANT_DOT_MULTI_MAX == 8, "dot_multi_rows has a case for every count");
    assert(count >= 1 && count <= QUANT_DOT_MULTI_MAX);
    switch (count) {
    case 1: out[0] = dot(row, x, n); break;
    case 2: dot_multi_counted(walk, 2, row, x, x_stride, n, out); break;
    case 3: dot_multi_counted(walk, 3, row, x, x_stride, n, out); break;
    case 4: dot_multi_counted(walk, 4, row, x, x_stride, n, out); break;
    case 5: dot_multi_counted(walk, 5, row, x, x_stride, n, out); break;
    case 6: dot_multi_counted(walk, 6, row, x, x_stride, n, out); break;
    case 7: dot_multi_counted(walk, 7, row, x, x_stride, n, out); break;
    case 8: dot_multi_counted(walk, 8, row, x, x_stride, n, out); break;
    default: break;
    }
}

/* The row kernels of one block type, from its decoder. */
#define BLOCK_ROW_KERNELS(type, elements)                                                                 \
    static void dequantize_##type(const void *row, float *out, int64_t n)                                 \
    {                                                                                                     \
        dequantize_blocks(type##_decode, sizeof(type##_block), elements, row, out, n);                    \
    }                                                                                                     \
    static float dot_##type(const void *row, const float *x, int64_t n)                                   \
    {                                                                                                     \
        return dot_blocks(type##_decode, sizeof(type##_block), elements, row, x, n);                      \
    }                                                                                                     \
    ALWAYS_INLINE void walk_##type(const void *row, const float *x, int64_t x_stride, int64_t n,          \
                                   value_sink *sink)                                                      \
    {                                                                                                     \
        walk_blocks(type##_decode, sizeof(type##_block), elements, row, x, x_stride, n, sink);            \
    }                                                                                                     \
    static void dot_multi_##type(const void *row, const float *x, int64_t x_stride, int count, int64_t n, \
                                 float *out)                                                              \
    {                                                                                                     \
        dot_multi_rows(walk_##type, dot_##type, row, x, x_stride, count, n, out);                         \
    }

/* ---- plain types ----------------------------------------------------------- */

/* The values first .. first + VECTOR_FLOATS - 1 of a plain row, of which
 * only `available` (at least 1) exist: the lanes past them are zero and the
 * bytes past them are not read (one function per type). */
typedef float_vector (*plain_reader)(const uint8_t *row, int64_t first, int64_t available);

/* Hands all the values of a plain row of any length to a dot_multi sink: four
 * vectors at a time while they last, spread over the sink's sums as a block
 * of 256 spreads them, then single vectors and the last partial one. */
ALWAYS_INLINE void walk_plain(plain_reader read, const void *row, const float *x, int64_t x_stride, int64_t n,
                              value_sink *sink)
{
    int64_t i = 0;
    for (; i + 4 * VECTOR_FLOATS <= n; i += 4 * VECTOR_FLOATS) {
        sink_move_to(sink, x, x_stride, i);
#pragma GCC unroll 4
        for (int part = 0; part < 4; part++)
            sink_put(sink, VECTOR_FLOATS * part, read(row, i + VECTOR_FLOATS * part, VECTOR_FLOATS));
    }
    for (; i + VECTOR_FLOATS <= n; i += VECTOR_FLOATS) {
        sink_move_to(sink, x, x_stride, i);
        sink_put(sink, 0, read(row, i, VECTOR_FLOATS));
    }
    if (i < n) {
        sink_move_to(sink, x, x_stride, i);
        sink_put_first(sink, n - i, read(row, i, n - i));
    }
}

/* The dot_multi of a plain type, from its reader and its dot. */
#define PLAIN_DOT_MULTI(type)                                                                             \
    ALWAYS_INLINE void walk_##type(const void *row, const float *x, int64_t x_stride, int64_t n,          \
                                   value_sink *sink)                                                      \
    {                                                                                                     \
        walk_plain(type##_read, row, x, x_stride, n, sink);                                               \
    }                                                                                                     \
    static void dot_multi_##type(const void *row, const float *x, int64_t x_stride, int count, int64_t n, \
                                 float *out)                                                              \
    {                                                                                                     \
        dot_multi_rows(walk_##type, dot_##type, row, x, x_stride, count, n, out);                         \
    }

/* ---- Q6_K ------------------------------------------------------------------ */

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
