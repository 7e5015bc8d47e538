/* quant/kernels_avx512.c: the AVX-512 kernels (F, BW and VL only).
 *
 * Each type has one block decoder that produces the block's values, sixteen
 * floats at a time, and hands them to a value_sink: dequantizing stores
 * them, a dot product multiplies them with x into one of four running sums
 * (four, so consecutive FMAs do not wait for each other), dot_multi with
 * each of up to eight vectors (the sink is in kernels_simd.h). The decoders
 * compute every value with the same float operations as dequantize.c, so
 * dequantized rows are bit-identical to the scalar ones.
 *
 * Q8_0 widens its quants to 32-bit lanes (vpmovsxbd) and converts them.
 * The 4- and 5-bit types never convert quants: vpermps looks each one up
 * in a 16-float table, for blocks of 32 the constant table of q - 8 or
 * q - 16 (the block is scaled once, see below), for Q4_K and Q5_K a table
 * of the sub-block's values, built with one multiply and one subtract. On
 * the Zen 4 this was tuned on, lookups beat masking and converting by 10 to
 * 15%. Q6_K assembles its 6-bit quants bytewise, then widens and converts
 * them. */
#include <immintrin.h>
#include <stdbool.h>
#include <stddef.h>

#include "quant/kernels_private.h"

/* ---- the vector the shared code works with (kernels_simd.h) ------------ */

typedef __m512 float_vector;
/* dot_multi scales a block of 32's sum once per vector, as dot does, for up
 * to two vectors (sink_put_block32). From three on it forms the values once
 * (two multiplies a block) instead: 10 to 19% faster on Zen 4. */
#define BLOCK_SCALING_COUNT_MAX 2
#define VECTOR_FLOATS 16

/* The mask of the first `count` (0 .. 16) lanes. */
ALWAYS_INLINE __mmask16 first_lanes(int64_t count)
{
    return (__mmask16)((1u << count) - 1);
}

#define vector_load _mm512_loadu_ps
#define vector_store _mm512_storeu_ps
#define vector_set1 _mm512_set1_ps
#define vector_add _mm512_add_ps
#define vector_mul _mm512_mul_ps
#define vector_fmadd _mm512_fmadd_ps /* a * b + c, rounded once */
#define vector_total _mm512_reduce_add_ps

/* The first `available` floats at x, the other lanes zero; reads no further. */
ALWAYS_INLINE __m512 vector_load_first(const float *x, int64_t available)
{
    return _mm512_maskz_loadu_ps(first_lanes(available), x);
}

#include "quant/kernels_simd.h"

/* 0, 1, ..., 15: the quants a 16-entry value table is indexed by. */
ALWAYS_INLINE __m512 quants_0_to_15(void)
{
    return _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
}

/* scale * q + offset for q in quants. The K types pass offset = -(dmin * m):
 * x + (-y) is exactly x - y, the subtraction dequantize.c does. */
ALWAYS_INLINE __m512 value_table(__m512 quants, float scale, float offset)
{
    return _mm512_add_ps(_mm512_mul_ps(_mm512_set1_ps(scale), quants), _mm512_set1_ps(offset));
}

/* 16 bytes zero-extended to 32-bit lanes. */
ALWAYS_INLINE __m512i widen_u8(const uint8_t *bytes)
{
    return _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)bytes));
}

/* Bits of `mask` set take `if_set`, the others `if_clear` (one vpternlogd). */
ALWAYS_INLINE __m512i select_bits(__m512i mask, __m512i if_set, __m512i if_clear)
{
    return _mm512_ternarylogic_epi32(if_set, if_clear, mask, 0xe4);
}

/* ---- blocks of 32 (sink_put_block32 in kernels_simd.h) ---------------- */

/* The quants of a Q4_x/Q5_x block minus `bias`: quant j < 16 is the low
 * nibble of qs[j], quant j + 16 the high nibble, and (for Q5_x) bit j of qh
 * the fifth bit, worth 16, of quant j. Quants become floats by looking them
 * up in the table of q - bias (vpermps reads only the low 4 index bits),
 * which on Zen 4 is cheaper than masking, subtracting and converting. */
ALWAYS_INLINE void block32_quants(const uint8_t qs[16], bool has_qh, uint32_t qh, int bias, __m512 quants[2])
{
    __m512i bytes = widen_u8(qs);
    __m512i nibbles[2] = {bytes, _mm512_srli_epi32(bytes, 4)};
    __m512 low_table = _mm512_sub_ps(quants_0_to_15(), _mm512_set1_ps((float)bias));
    __m512 high_table = _mm512_add_ps(low_table, _mm512_set1_ps(16));
#pragma GCC unroll 2
    for (int part = 0; part < 2; part++) {
        quants[part] = _mm512_permutexvar_ps(nibbles[part], low_table);
        if (has_qh) /* lanes whose fifth bit is set take the value from the high table */
            quants[part] = _mm512_mask_permutexvar_ps(quants[part], (__mmask16)(qh >> (16 * part)), nibbles[part],
                                                      high_table);
    }
}

ALWAYS_INLINE void q8_0_decode(const uint8_t *bytes, value_sink *sink)
{
    const q8_0_block *block = (const q8_0_block *)bytes;
    __m512 quants[2];
#pragma GCC unroll 2
    for (int part = 0; part < 2; part++) {
        __m128i packed = _mm_loadu_si128((const __m128i *)(block->qs + 16 * part));
        quants[part] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(packed));
    }
    sink_put_block32(sink, quants, read_f16(block->d), false, 0);
}

ALWAYS_INLINE void q4_0_decode(const uint8_t *bytes, value_sink *sink)
{
    const q4_0_block *block = (const q4_0_block *)bytes;
    __m512 quants[2];
    block32_quants(block->qs, false, 0, 8, quants);
    sink_put_block32(sink, quants, read_f16(block->d), false, 0);
}

ALWAYS_INLINE void q4_1_decode(const uint8_t *bytes, value_sink *sink)
{
    const q4_1_block *block = (const q4_1_block *)bytes;
    __m512 quants[2];
    block32_quants(block->qs, false, 0, 0, quants);
    sink_put_block32(sink, quants, read_f16(block->d), true, read_f16(block->m));
}

ALWAYS_INLINE void q5_0_decode(const uint8_t *bytes, value_sink *sink)
{
    const q5_0_block *block = (const q5_0_block *)bytes;
    __m512 quants[2];
    block32_quants(block->qs, true, quant_read_u32(block->qh), 16, quants);
    sink_put_block32(sink, quants, read_f16(block->d), false, 0);
}

ALWAYS_INLINE void q5_1_decode(const uint8_t *bytes, value_sink *sink)
{
    const q5_1_block *block = (const q5_1_block *)bytes;
    __m512 quants[2];
    block32_quants(block->qs, true, quant_read_u32(block->qh), 0, quants);
    sink_put_block32(sink, quants, read_f16(block->d), true, read_f16(block->m));
}

/* ---- blocks of 256 ---------------------------------------------------- */

/* Q4_K: chunk c's 32 bytes hold sub-block 2c in their low nibbles and
 * sub-block 2c + 1 in their high nibbles. */
ALWAYS_INLINE void q4_k_decode(const uint8_t *bytes, value_sink *sink)
{
    const q4_k_block *block = (const q4_k_block *)bytes;
    float scales[8], offsets[8];
    quant_k_sub_block_scales(read_f16(block->d), read_f16(block->dmin), block->scales, scales, offsets);
    __m512 quants = quants_0_to_15();
#pragma GCC unroll 4
    for (int chunk = 0; chunk < 4; chunk++) {
        __m512 low_table = value_table(quants, scales[2 * chunk], -offsets[2 * chunk]);
        __m512 high_table = value_table(quants, scales[2 * chunk + 1], -offsets[2 * chunk + 1]);
#pragma GCC unroll 2
        for (int part = 0; part < 2; part++) {
            __m512i qs = widen_u8(block->qs + 32 * chunk + 16 * part);
            sink_put(sink, 64 * chunk + 16 * part, _mm512_permutexvar_ps(qs, low_table));
            sink_put(sink, 64 * chunk + 32 + 16 * part, _mm512_permutexvar_ps(_mm512_srli_epi32(qs, 4), high_table));
        }
    }
}

/* Q5_K: as Q4_K, and bit s of qh[l] is the fifth bit of element l of
 * sub-block s. The index for vpermt2ps takes bits 0-3 from the nibble and
 * bit 4 from qh; its bits above 4 are ignored. */
ALWAYS_INLINE void q5_k_decode(const uint8_t *bytes, value_sink *sink)
{
    const q5_k_block *block = (const q5_k_block *)bytes;
    float scales[8], offsets[8];
    quant_k_sub_block_scales(read_f16(block->d), read_f16(block->dmin), block->scales, scales, offsets);
    __m512 quants_low = quants_0_to_15(), quants_high = _mm512_add_ps(quants_low, _mm512_set1_ps(16));
    __m512i nibble = _mm512_set1_epi32(15);
    /* qh[16 * part + i], shifted right by 2 * chunk so bits 0, 1 belong to sub-blocks 2 * chunk, 2 * chunk + 1 */
    __m512i fifth_bits[2] = {widen_u8(block->qh), widen_u8(block->qh + 16)};
#pragma GCC unroll 4
    for (int chunk = 0; chunk < 4; chunk++) {
        int low = 2 * chunk, high = 2 * chunk + 1;
        __m512 low_table_low = value_table(quants_low, scales[low], -offsets[low]);
        __m512 low_table_high = value_table(quants_high, scales[low], -offsets[low]);
        __m512 high_table_low = value_table(quants_low, scales[high], -offsets[high]);
        __m512 high_table_high = value_table(quants_high, scales[high], -offsets[high]);
#pragma GCC unroll 2
        for (int part = 0; part < 2; part++) {
            __m512i qs = widen_u8(block->qs + 32 * chunk + 16 * part);
            __m512i low_index = select_bits(nibble, qs, _mm512_slli_epi32(fifth_bits[part], 4));
            __m512i high_index = select_bits(nibble, _mm512_srli_epi32(qs, 4), _mm512_slli_epi32(fifth_bits[part], 3));
            sink_put(sink, 64 * chunk + 16 * part, _mm512_permutex2var_ps(low_table_low, low_index, low_table_high));
            sink_put(sink, 64 * chunk + 32 + 16 * part,
                     _mm512_permutex2var_ps(high_table_low, high_index, high_table_high));
            fifth_bits[part] = _mm512_srli_epi32(fifth_bits[part], 2);
        }
    }
}

/* Q6_K: the quants of each half, assembled bytewise (q6_k_half_quants);
 * each group's 16-element halves are sub-blocks with their own scale. */
ALWAYS_INLINE void q6_k_decode(const uint8_t *bytes, value_sink *sink)
{
    const q6_k_block *block = (const q6_k_block *)bytes;
    __m512i scale_bytes = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)block->scales));
    __m512 scales = _mm512_mul_ps(_mm512_set1_ps(read_f16(block->d)), _mm512_cvtepi32_ps(scale_bytes));
#pragma GCC unroll 2
    for (int half = 0; half < 2; half++) {
        __m256i groups[4];
        q6_k_half_quants(block, half, groups);
#pragma GCC unroll 4
        for (int group = 0; group < 4; group++) {
            __m128i parts[2] = {_mm256_castsi256_si128(groups[group]), _mm256_extracti128_si256(groups[group], 1)};
#pragma GCC unroll 2
            for (int part = 0; part < 2; part++) {
                int sub_block = 8 * half + 2 * group + part;
                __m512 scale = _mm512_permutexvar_ps(_mm512_set1_epi32(sub_block), scales);
                __m512 quants = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(parts[part]));
                sink_put(sink, 16 * sub_block, _mm512_mul_ps(scale, quants));
            }
        }
    }
}

/* ---- rows of blocks ---------------------------------------------------- */

BLOCK_ROW_KERNELS(q8_0, QUANT_BLOCK_ELEMENTS)
BLOCK_ROW_KERNELS(q4_0, QUANT_BLOCK_ELEMENTS)
BLOCK_ROW_KERNELS(q4_1, QUANT_BLOCK_ELEMENTS)
BLOCK_ROW_KERNELS(q5_0, QUANT_BLOCK_ELEMENTS)
BLOCK_ROW_KERNELS(q5_1, QUANT_BLOCK_ELEMENTS)
BLOCK_ROW_KERNELS(q4_k, QUANT_SUPER_BLOCK_ELEMENTS)
BLOCK_ROW_KERNELS(q5_k, QUANT_SUPER_BLOCK_ELEMENTS)
BLOCK_ROW_KERNELS(q6_k, QUANT_SUPER_BLOCK_ELEMENTS)

/* ---- plain types: any length; the last partial vector is masked -------- */

typedef __m512 (*plain_loader)(const uint8_t *row, int64_t first, __mmask16 mask);

ALWAYS_INLINE __m512 f32_load(const uint8_t *row, int64_t first, __mmask16 mask)
{
    return _mm512_maskz_loadu_ps(mask, row + 4 * first);
}

ALWAYS_INLINE __m512 f16_load(const uint8_t *row, int64_t first, __mmask16 mask)
{
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, row + 2 * first));
}

ALWAYS_INLINE __m512 bf16_load(const uint8_t *row, int64_t first, __mmask16 mask)
{
    __m512i widened = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask, row + 2 * first));
    return _mm512_castsi512_ps(_mm512_slli_epi32(widened, 16));
}

ALWAYS_INLINE void dequantize_plain(plain_loader load, const void *row, float *out, int64_t n)
{
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(out + i, load(row, i, 0xffff));
    if (i < n)
        _mm512_mask_storeu_ps(out + i, first_lanes(n - i), load(row, i, first_lanes(n - i)));
}

ALWAYS_INLINE float dot_plain(plain_loader load, const void *row, const float *x, int64_t n)
{
    __m512 sums[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
#pragma GCC unroll 4
        for (int slot = 0; slot < 4; slot++) {
            __m512 values = load(row, i + 16 * slot, 0xffff);
            sums[slot] = _mm512_fmadd_ps(values, _mm512_loadu_ps(x + i + 16 * slot), sums[slot]);
        }
    }
    for (; i + 16 <= n; i += 16)
        sums[0] = _mm512_fmadd_ps(load(row, i, 0xffff), _mm512_loadu_ps(x + i), sums[0]);
    if (i < n) {
        __mmask16 mask = first_lanes(n - i);
        sums[1] = _mm512_fmadd_ps(load(row, i, mask), _mm512_maskz_loadu_ps(mask, x + i), sums[1]);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(sums[0], sums[1]), _mm512_add_ps(sums[2], sums[3])));
}

/* The row kernels of a plain type, from its loader. Its reader (for
 * dot_multi) masks the lanes past the available values. */
#define PLAIN_ROW_KERNELS(type)                                                            \
    static void dequantize_##type(const void *row, float *out, int64_t n)                  \
    {                                                                                      \
        dequantize_plain(type##_load, row, out, n);                                        \
    }                                                                                      \
    static float dot_##type(const void *row, const float *x, int64_t n)                    \
    {                                                                                      \
        return dot_plain(type##_load, row, x, n);                                          \
    }                                                                                      \
    ALWAYS_INLINE __m512 type##_read(const uint8_t *row, int64_t first, int64_t available) \
    {                                                                                      \
        return type##_load(row, first, first_lanes(available));                            \
    }                                                                                      \
    PLAIN_DOT_MULTI(type)

PLAIN_ROW_KERNELS(f32)
PLAIN_ROW_KERNELS(f16)
PLAIN_ROW_KERNELS(bf16)

const quant_kernels quant_kernels_avx512_own = QUANT_KERNEL_TABLE(SIMD_AVX512);
