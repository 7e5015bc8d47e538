/* quant/kernels_avx2.c: the AVX2 kernels (with FMA and F16C).
 *
 * Same shape as kernels_avx512.c (kernels_simd.h describes it): one block
 * decoder per type produces the block's values, eight floats at a time, and
 * hands them to a value_sink that either stores them (dequantize) or
 * multiplies them with x into running sums (dot, dot_multi). Values are
 * computed with the same float operations as dequantize.c, so dequantized
 * rows are bit-identical to the scalar ones.
 *
 * AVX2 has no 16-entry float table lookup, so quants are widened to 32-bit
 * lanes straight from memory (vpmovzxbd / vpmovsxbd, eight bytes at a time),
 * picked apart with shifts and masks in those lanes, and converted. Q6_K
 * assembles its 6-bit quants bytewise first, 32 at a time. */
#include <immintrin.h>
#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#include "quant/kernels_private.h"

/* ---- the vector the shared code works with (kernels_simd.h) ------------ */

typedef __m256 float_vector;
/* dot_multi scales a block of 32's sum once per vector, as dot does, for
 * any count (sink_put_block32). Forming the values once instead (four
 * multiplies a block) chains four FMAs a block into the one running sum
 * each of five or more vectors has: on Zen 4 that was 10% slower at five
 * and six vectors and only 3% faster at seven and eight. */
#define BLOCK_SCALING_COUNT_MAX QUANT_DOT_MULTI_MAX
#define VECTOR_FLOATS 8

#define vector_load _mm256_loadu_ps
#define vector_store _mm256_storeu_ps
#define vector_set1 _mm256_set1_ps
#define vector_add _mm256_add_ps
#define vector_mul _mm256_mul_ps
#define vector_fmadd _mm256_fmadd_ps /* a * b + c, rounded once */

/* The first `available` (< 8) floats at x, the other lanes zero; reads no
 * further. */
ALWAYS_INLINE __m256 vector_load_first(const float *x, int64_t available)
{
    float padded[8] = {0};
    memcpy(padded, x, (size_t)available * sizeof(float));
    return _mm256_loadu_ps(padded);
}

/* The sum of the 8 lanes. */
ALWAYS_INLINE float vector_total(__m256 values)
{
    __m128 half = _mm_add_ps(_mm256_castps256_ps128(values), _mm256_extractf128_ps(values, 1));
    half = _mm_add_ps(half, _mm_movehl_ps(half, half));
    half = _mm_add_ss(half, _mm_movehdup_ps(half));
    return _mm_cvtss_f32(half);
}

#include "quant/kernels_simd.h"

/* 8 bytes zero-extended to 32-bit lanes. */
ALWAYS_INLINE __m256i widen_u8(const uint8_t *bytes)
{
    return _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)bytes));
}

/* 8 bytes sign-extended to 32-bit lanes. */
ALWAYS_INLINE __m256i widen_i8(const uint8_t *bytes)
{
    return _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)bytes));
}

/* scale * q + offset. The K types pass offset = -(dmin * m): x + (-y) is
 * exactly x - y, the subtraction dequantize.c does. */
ALWAYS_INLINE __m256 scale_and_offset(__m256i quants, float scale, float offset)
{
    __m256 scaled = _mm256_mul_ps(_mm256_set1_ps(scale), _mm256_cvtepi32_ps(quants));
    return _mm256_add_ps(scaled, _mm256_set1_ps(offset));
}

/* ---- blocks of 32 (sink_put_block32 in kernels_simd.h) ---------------- */

/* The quants of a Q4_x/Q5_x block minus `bias`, as four vectors of eight in
 * element order: quant j < 16 is the low nibble of qs[j], quant j + 16 the
 * high nibble, and (for Q5_x) bit j of qh the fifth bit, worth 16, of
 * quant j. */
ALWAYS_INLINE void block32_quants(const uint8_t qs[16], bool has_qh, uint32_t qh, int bias, __m256 quants[4])
{
    __m256i nibble = _mm256_set1_epi32(15), fifth_bit = _mm256_set1_epi32(16);
    __m256i bias_vector = _mm256_set1_epi32(bias);
    /* Lane i of the vector for elements 8p..8p+7 moves bit 8p + i of qh to
     * bit 4: qh << 4 for the first 16 elements, qh >> 12 for the rest, so
     * that no bit is shifted out of 32 bits. */
    __m256i first_half_bits = _mm256_set1_epi32((int)((qh & 0xffff) << 4));
    __m256i second_half_bits = _mm256_set1_epi32((int)(qh >> 12));
    __m256i lane_shifts[2] = {_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                              _mm256_setr_epi32(8, 9, 10, 11, 12, 13, 14, 15)};
#pragma GCC unroll 2
    for (int part = 0; part < 2; part++) {
        __m256i bytes = widen_u8(qs + 8 * part);
        __m256i low = _mm256_and_si256(bytes, nibble), high = _mm256_srli_epi32(bytes, 4);
        if (has_qh) {
            __m256i low_bits = _mm256_srlv_epi32(first_half_bits, lane_shifts[part]);
            __m256i high_bits = _mm256_srlv_epi32(second_half_bits, lane_shifts[part]);
            low = _mm256_or_si256(low, _mm256_and_si256(low_bits, fifth_bit));
            high = _mm256_or_si256(high, _mm256_and_si256(high_bits, fifth_bit));
        }
        quants[part] = _mm256_cvtepi32_ps(_mm256_sub_epi32(low, bias_vector));
        quants[2 + part] = _mm256_cvtepi32_ps(_mm256_sub_epi32(high, bias_vector));
    }
}

ALWAYS_INLINE void q8_0_decode(const uint8_t *bytes, value_sink *sink)
{
    const q8_0_block *block = (const q8_0_block *)bytes;
    __m256 quants[4];
#pragma GCC unroll 4
    for (int part = 0; part < 4; part++)
        quants[part] = _mm256_cvtepi32_ps(widen_i8(block->qs + 8 * part));
    sink_put_block32(sink, quants, read_f16(block->d), false, 0);
}

ALWAYS_INLINE void q4_0_decode(const uint8_t *bytes, value_sink *sink)
{
    const q4_0_block *block = (const q4_0_block *)bytes;
    __m256 quants[4];
    block32_quants(block->qs, false, 0, 8, quants);
    sink_put_block32(sink, quants, read_f16(block->d), false, 0);
}

ALWAYS_INLINE void q4_1_decode(const uint8_t *bytes, value_sink *sink)
{
    const q4_1_block *block = (const q4_1_block *)bytes;
    __m256 quants[4];
    block32_quants(block->qs, false, 0, 0, quants);
    sink_put_block32(sink, quants, read_f16(block->d), true, read_f16(block->m));
}

ALWAYS_INLINE void q5_0_decode(const uint8_t *bytes, value_sink *sink)
{
    const q5_0_block *block = (const q5_0_block *)bytes;
    __m256 quants[4];
    block32_quants(block->qs, true, quant_read_u32(block->qh), 16, quants);
    sink_put_block32(sink, quants, read_f16(block->d), false, 0);
}

ALWAYS_INLINE void q5_1_decode(const uint8_t *bytes, value_sink *sink)
{
    const q5_1_block *block = (const q5_1_block *)bytes;
    __m256 quants[4];
    block32_quants(block->qs, true, quant_read_u32(block->qh), 0, quants);
    sink_put_block32(sink, quants, read_f16(block->d), true, read_f16(block->m));
}

/* ---- blocks of 256 ---------------------------------------------------- */

/* Q4_K and Q5_K: chunk c's 32 bytes hold sub-block 2c in their low nibbles
 * and sub-block 2c + 1 in their high nibbles; for Q5_K (qh not NULL) bit s
 * of qh[l] is the fifth bit of element l of sub-block s. */
ALWAYS_INLINE void k_quant_decode(const uint8_t d_half[2], const uint8_t dmin_half[2],
                                  const uint8_t packed_scales[12], const uint8_t qs[128], const uint8_t *qh,
                                  value_sink *sink)
{
    float scales[8], offsets[8];
    quant_k_sub_block_scales(read_f16(d_half), read_f16(dmin_half), packed_scales, scales, offsets);
    __m256i nibble = _mm256_set1_epi32(15), fifth_bit = _mm256_set1_epi32(16);
    /* qh[8p + i] << 4, so that shifting right by s brings bit s to bit 4 */
    __m256i fifth_bits[4];
    if (qh != NULL) {
#pragma GCC unroll 4
        for (int part = 0; part < 4; part++)
            fifth_bits[part] = _mm256_slli_epi32(widen_u8(qh + 8 * part), 4);
    }
#pragma GCC unroll 4
    for (int chunk = 0; chunk < 4; chunk++) {
        int low = 2 * chunk, high = 2 * chunk + 1;
#pragma GCC unroll 4
        for (int part = 0; part < 4; part++) {
            __m256i bytes = widen_u8(qs + 32 * chunk + 8 * part);
            __m256i low_quants = _mm256_and_si256(bytes, nibble), high_quants = _mm256_srli_epi32(bytes, 4);
            if (qh != NULL) {
                low_quants = _mm256_or_si256(low_quants,
                                             _mm256_and_si256(_mm256_srli_epi32(fifth_bits[part], low), fifth_bit));
                high_quants = _mm256_or_si256(high_quants,
                                              _mm256_and_si256(_mm256_srli_epi32(fifth_bits[part], high), fifth_bit));
            }
            sink_put(sink, 64 * chunk + 8 * part, scale_and_offset(low_quants, scales[low], -offsets[low]));
            sink_put(sink, 64 * chunk + 32 + 8 * part, scale_and_offset(high_quants, scales[high], -offsets[high]));
        }
    }
}

ALWAYS_INLINE void q4_k_decode(const uint8_t *bytes, value_sink *sink)
{
    const q4_k_block *block = (const q4_k_block *)bytes;
    k_quant_decode(block->d, block->dmin, block->scales, block->qs, NULL, sink);
}

ALWAYS_INLINE void q5_k_decode(const uint8_t *bytes, value_sink *sink)
{
    const q5_k_block *block = (const q5_k_block *)bytes;
    k_quant_decode(block->d, block->dmin, block->scales, block->qs, block->qh, sink);
}

/* Q6_K: the quants of each half, assembled bytewise (q6_k_half_quants),
 * widened eight at a time; sub-block k (16 elements) has scale k. */
ALWAYS_INLINE void q6_k_decode(const uint8_t *bytes, value_sink *sink)
{
    const q6_k_block *block = (const q6_k_block *)bytes;
    float d = read_f16(block->d), scales[16];
#pragma GCC unroll 2
    for (int part = 0; part < 2; part++) {
        __m256 scale_values = _mm256_cvtepi32_ps(widen_i8((const uint8_t *)block->scales + 8 * part));
        _mm256_storeu_ps(scales + 8 * part, _mm256_mul_ps(_mm256_set1_ps(d), scale_values));
    }
#pragma GCC unroll 2
    for (int half = 0; half < 2; half++) {
        __m256i groups[4];
        q6_k_half_quants(block, half, groups);
#pragma GCC unroll 4
        for (int group = 0; group < 4; group++) {
            __m128i sixteen[2] = {_mm256_castsi256_si128(groups[group]), _mm256_extracti128_si256(groups[group], 1)};
#pragma GCC unroll 4
            for (int part = 0; part < 4; part++) {
                __m128i eight = part % 2 == 0 ? sixteen[part / 2] : _mm_srli_si128(sixteen[part / 2], 8);
                int first = 128 * half + 32 * group + 8 * part;
                __m256 quants = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(eight));
                sink_put(sink, first, _mm256_mul_ps(_mm256_set1_ps(scales[first / 16]), quants));
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

/* ---- plain types: any length --------------------------------------------
 *
 * The last partial vector is copied into a zero-padded buffer and goes
 * through the same vector conversion, so it needs no scalar code. */

typedef __m256 (*plain_loader)(const uint8_t *values);

ALWAYS_INLINE __m256 f32_load(const uint8_t *values)
{
    return _mm256_loadu_ps((const float *)(const void *)values);
}

ALWAYS_INLINE __m256 f16_load(const uint8_t *values)
{
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)values));
}

ALWAYS_INLINE __m256 bf16_load(const uint8_t *values)
{
    __m256i widened = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)values));
    return _mm256_castsi256_ps(_mm256_slli_epi32(widened, 16));
}

/* Loads the `count` (< 8) values at `values`, zero-padded to a vector. */
ALWAYS_INLINE __m256 load_partial(plain_loader load, size_t value_bytes, const uint8_t *values, int64_t count)
{
    uint8_t padded[32] = {0};
    memcpy(padded, values, (size_t)count * value_bytes);
    return load(padded);
}

ALWAYS_INLINE void dequantize_plain(plain_loader load, size_t value_bytes, const void *row, float *out, int64_t n)
{
    const uint8_t *bytes = row;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(out + i, load(bytes + i * value_bytes));
    if (i < n) {
        float padded[8];
        _mm256_storeu_ps(padded, load_partial(load, value_bytes, bytes + i * value_bytes, n - i));
        memcpy(out + i, padded, (size_t)(n - i) * sizeof(float));
    }
}

ALWAYS_INLINE float dot_plain(plain_loader load, size_t value_bytes, const void *row, const float *x, int64_t n)
{
    const uint8_t *bytes = row;
    __m256 sums[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
#pragma GCC unroll 4
        for (int slot = 0; slot < 4; slot++) {
            __m256 values = load(bytes + (i + 8 * slot) * value_bytes);
            sums[slot] = _mm256_fmadd_ps(values, _mm256_loadu_ps(x + i + 8 * slot), sums[slot]);
        }
    }
    for (; i + 8 <= n; i += 8)
        sums[0] = _mm256_fmadd_ps(load(bytes + i * value_bytes), _mm256_loadu_ps(x + i), sums[0]);
    if (i < n) {
        float padded_x[8] = {0};
        memcpy(padded_x, x + i, (size_t)(n - i) * sizeof(float));
        __m256 values = load_partial(load, value_bytes, bytes + i * value_bytes, n - i);
        sums[1] = _mm256_fmadd_ps(values, _mm256_loadu_ps(padded_x), sums[1]);
    }
    return vector_total(_mm256_add_ps(_mm256_add_ps(sums[0], sums[1]), _mm256_add_ps(sums[2], sums[3])));
}

/* The row kernels of a plain type, from its loader. Its reader (for
 * dot_multi) pads a partial vector with zeros. */
#define PLAIN_ROW_KERNELS(type, value_bytes)                                               \
    static void dequantize_##type(const void *row, float *out, int64_t n)                  \
    {                                                                                      \
        dequantize_plain(type##_load, value_bytes, row, out, n);                           \
    }                                                                                      \
    static float dot_##type(const void *row, const float *x, int64_t n)                    \
    {                                                                                      \
        return dot_plain(type##_load, value_bytes, row, x, n);                             \
    }                                                                                      \
    ALWAYS_INLINE __m256 type##_read(const uint8_t *row, int64_t first, int64_t available) \
    {                                                                                      \
        const uint8_t *values = row + first * (value_bytes);                               \
        if (available >= VECTOR_FLOATS)                                                    \
            return type##_load(values);                                                    \
        return load_partial(type##_load, value_bytes, values, available);                  \
    }                                                                                      \
    PLAIN_DOT_MULTI(type)

PLAIN_ROW_KERNELS(f32, 4)
PLAIN_ROW_KERNELS(f16, 2)
PLAIN_ROW_KERNELS(bf16, 2)

const quant_kernels quant_kernels_avx2_own = QUANT_KERNEL_TABLE(SIMD_AVX2);
