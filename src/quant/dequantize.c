/* quant/dequantize.c: the scalar kernels, which are the specification.
 *
 * For every computable type this file says how a block is laid out, turns
 * one block into floats, and defines the dot product as "dequantize, then add
 * value times x[i] in element order, in f32". The SIMD kernels
 * (kernels_avx2.c, kernels_avx512.c) must produce bit-identical dequantized
 * floats, computed with the same float operations as here (no fused
 * multiply-add where this file rounds twice), and the same dot product up to
 * summation order. dot_multi, the dot with several vectors, is defined as
 * that same dot for each vector. The byte layouts are the structs of
 * kernels_private.h; the comments here say which bits make which element.
 * Also here: the half and bfloat16 conversions. */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "quant/kernels.h"
#include "quant/kernels_private.h"

/* ---- half, bfloat16 ---------------------------------------------------- */

static float float_from_bits(uint32_t bits)
{
    float value;
    memcpy(&value, &bits, sizeof value);
    return value;
}

static uint32_t bits_from_float(float value)
{
    uint32_t bits;
    memcpy(&bits, &value, sizeof bits);
    return bits;
}

/* Converts one IEEE half to float. */
float quant_f16_to_f32(uint16_t half)
{
    uint32_t sign = (uint32_t)(half & 0x8000) << 16;
    uint32_t exponent = (half >> 10) & 31;
    uint32_t mantissa = half & 0x3ff;
    if (exponent == 31) /* inf, or NaN made quiet with its payload kept, as F16C does */
        return float_from_bits(sign | 0x7f800000 | (mantissa != 0 ? 0x400000 : 0) | mantissa << 13);
    if (exponent != 0)
        return float_from_bits(sign | (exponent + 127 - 15) << 23 | mantissa << 13);
    if (mantissa == 0)
        return float_from_bits(sign);
    /* Subnormal half, mantissa * 2^-24: normal as a float. Shift the leading
     * one up to the implicit bit position (bit 10). */
    uint32_t float_exponent = 127 - 15 + 1;
    while ((mantissa & 0x400) == 0) {
        mantissa <<= 1;
        float_exponent--;
    }
    return float_from_bits(sign | float_exponent << 23 | (mantissa & 0x3ff) << 13);
}

/* Drops the low `shift` bits of `value`, rounding to nearest, ties to even. */
static uint32_t shift_right_rounding_to_even(uint32_t value, uint32_t shift)
{
    uint32_t kept = value >> shift;
    uint32_t dropped = value & ((1u << shift) - 1);
    uint32_t half = 1u << (shift - 1);
    if (dropped > half || (dropped == half && (kept & 1) != 0))
        kept++;
    return kept;
}

/* Converts a float to IEEE half, rounding to nearest even. */
uint16_t quant_f32_to_f16(float value)
{
    uint32_t bits = bits_from_float(value);
    uint16_t sign = (uint16_t)((bits >> 16) & 0x8000);
    uint32_t magnitude = bits & 0x7fffffff;
    if (magnitude > 0x7f800000) /* NaN: quiet, keep the top of the payload */
        return (uint16_t)(sign | 0x7e00 | ((magnitude >> 13) & 0x3ff));
    if (magnitude >= 0x477ff000) /* 65520 and up round past 65504, the largest half */
        return (uint16_t)(sign | 0x7c00);
    if (magnitude >= 0x38800000) { /* 2^-14 and up: a normal half */
        /* Rebias the exponent and round the mantissa; a carry out of the
         * mantissa correctly bumps the exponent. */
        uint32_t rebiased = magnitude - ((uint32_t)(127 - 15) << 23);
        return (uint16_t)(sign | shift_right_rounding_to_even(rebiased, 13));
    }
    if (magnitude < 0x33000001) /* 2^-25 and below round to zero (2^-25 is a tie, to even) */
        return sign;
    /* A subnormal half counts units of 2^-24; the float is m * 2^(e - 150),
     * m the 24-bit mantissa with its implicit one, so it is m >> (126 - e)
     * units. Rounding up out of the largest subnormal gives 0x400, the
     * smallest normal, as it should. */
    uint32_t exponent = magnitude >> 23;
    uint32_t mantissa = (magnitude & 0x7fffff) | 0x800000;
    return (uint16_t)(sign | shift_right_rounding_to_even(mantissa, 126 - exponent));
}

/* Converts one bfloat16 to float. */
float quant_bf16_to_f32(uint16_t value)
{
    return float_from_bits((uint32_t)value << 16);
}

static float read_f16(const uint8_t bytes[2])
{
    return quant_f16_to_f32(quant_read_u16(bytes));
}

/* ---- plain types: F32, F16 (IEEE half), BF16 (top half of an f32) ----- */

static void dequantize_f32(const void *row, float *out, int64_t n)
{
    memcpy(out, row, (size_t)n * sizeof(float));
}

typedef float (*half_converter)(uint16_t bits);

static void dequantize_halves(half_converter convert, const void *row, float *out, int64_t n)
{
    const uint8_t *bytes = row;
    for (int64_t i = 0; i < n; i++)
        out[i] = convert(quant_read_u16(bytes + 2 * i));
}

static float dot_halves(half_converter convert, const void *row, const float *x, int64_t n)
{
    const uint8_t *bytes = row;
    float sum = 0.0f;
    for (int64_t i = 0; i < n; i++)
        sum += convert(quant_read_u16(bytes + 2 * i)) * x[i];
    return sum;
}

static void dequantize_f16(const void *row, float *out, int64_t n)
{
    dequantize_halves(quant_f16_to_f32, row, out, n);
}

static void dequantize_bf16(const void *row, float *out, int64_t n)
{
    dequantize_halves(quant_bf16_to_f32, row, out, n);
}

static float dot_f32(const void *row, const float *x, int64_t n)
{
    const uint8_t *bytes = row;
    float sum = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        float value;
        memcpy(&value, bytes + 4 * i, sizeof value);
        sum += value * x[i];
    }
    return sum;
}

static float dot_f16(const void *row, const float *x, int64_t n)
{
    return dot_halves(quant_f16_to_f32, row, x, n);
}

static float dot_bf16(const void *row, const float *x, int64_t n)
{
    return dot_halves(quant_bf16_to_f32, row, x, n);
}

/* ---- blocks of 32: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 -------------------------
 *
 * Q8_0 (34 bytes): f16 d; int8 qs[32].        x[i] = d * qs[i].
 * Q4_0 (18 bytes): f16 d; u8 qs[16].          x = d * (q - 8).
 * Q4_1 (20 bytes): f16 d; f16 m; u8 qs[16].   x = d * q + m.
 * Q5_0 (22 bytes): f16 d; u8 qh[4]; u8 qs[16]. x = d * (q - 16).
 * Q5_1 (24 bytes): f16 d; f16 m; u8 qh[4]; u8 qs[16]. x = d * q + m.
 * The 4-bit part of quant j < 16 is the low nibble of qs[j], of quant j + 16
 * the high nibble of qs[j]. For Q5_x, bit j of qh (a little-endian u32) is
 * the fifth bit (value 16) of quant j. */

typedef void (*block_dequantizer)(const uint8_t *block, float *out);

/* The 32 quants of a 4-bit block; qh holds their fifth bits (0 for Q4_x). */
static void unpack_block32_quants(const uint8_t qs[16], uint32_t qh, int quants[32])
{
    for (int j = 0; j < 16; j++) {
        quants[j] = (qs[j] & 15) | (int)((qh >> j) & 1) << 4;
        quants[j + 16] = (qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
    }
}

static void q8_0_block_values(const uint8_t *bytes, float *out)
{
    const q8_0_block *block = (const q8_0_block *)bytes;
    float d = read_f16(block->d);
    for (int i = 0; i < 32; i++)
        out[i] = d * (float)(int8_t)block->qs[i];
}

static void q4_0_block_values(const uint8_t *bytes, float *out)
{
    const q4_0_block *block = (const q4_0_block *)bytes;
    float d = read_f16(block->d);
    int quants[32];
    unpack_block32_quants(block->qs, 0, quants);
    for (int i = 0; i < 32; i++)
        out[i] = d * (float)(quants[i] - 8);
}

static void q4_1_block_values(const uint8_t *bytes, float *out)
{
    const q4_1_block *block = (const q4_1_block *)bytes;
    float d = read_f16(block->d), m = read_f16(block->m);
    int quants[32];
    unpack_block32_quants(block->qs, 0, quants);
    for (int i = 0; i < 32; i++)
        out[i] = d * (float)quants[i] + m;
}

static void q5_0_block_values(const uint8_t *bytes, float *out)
{
    const q5_0_block *block = (const q5_0_block *)bytes;
    float d = read_f16(block->d);
    int quants[32];
    unpack_block32_quants(block->qs, quant_read_u32(block->qh), quants);
    for (int i = 0; i < 32; i++)
        out[i] = d * (float)(quants[i] - 16);
}

static void q5_1_block_values(const uint8_t *bytes, float *out)
{
    const q5_1_block *block = (const q5_1_block *)bytes;
    float d = read_f16(block->d), m = read_f16(block->m);
    int quants[32];
    unpack_block32_quants(block->qs, quant_read_u32(block->qh), quants);
    for (int i = 0; i < 32; i++)
        out[i] = d * (float)quants[i] + m;
}

/* ---- blocks of 256: Q4_K, Q5_K, Q6_K ------------------------------------
 *
 * Q4_K (144 bytes): f16 d; f16 dmin; u8 scales[12]; u8 qs[128].
 * Eight sub-blocks of 32, each with a 6-bit scale sc[s] and 6-bit min m[s]
 * (packing: quant_k_sub_block_scales). The elements come in four chunks of 64:
 * element 64c + l (l < 32) is the low nibble of qs[32c + l], in sub-block
 * 2c; element 64c + 32 + l is its high nibble, in sub-block 2c + 1.
 * x = (d * sc[s]) * q - dmin * m[s].
 *
 * Q5_K (176 bytes): f16 d; f16 dmin; u8 scales[12]; u8 qh[32]; u8 qs[128].
 * As Q4_K, plus a fifth bit: element 64c + 32h + l (sub-block s = 2c + h)
 * has bit s of qh[l] as its bit 4. q is 0..31; x as for Q4_K. */

static void k_quant_block_values(const uint8_t d_half[2], const uint8_t dmin_half[2],
                                 const uint8_t packed_scales[12], const uint8_t qs[128],
                                 const uint8_t *qh, float *out)
{
    float scales[8], offsets[8];
    quant_k_sub_block_scales(read_f16(d_half), read_f16(dmin_half), packed_scales, scales, offsets);
    for (int s = 0; s < 8; s++) {
        int chunk = s / 2, nibble_shift = 4 * (s % 2);
        for (int l = 0; l < 32; l++) {
            int q = (qs[32 * chunk + l] >> nibble_shift) & 15;
            if (qh != NULL)
                q |= ((qh[l] >> s) & 1) << 4;
            out[32 * s + l] = scales[s] * (float)q - offsets[s];
        }
    }
}

static void q4_k_block_values(const uint8_t *bytes, float *out)
{
    const q4_k_block *block = (const q4_k_block *)bytes;
    k_quant_block_values(block->d, block->dmin, block->scales, block->qs, NULL, out);
}

static void q5_k_block_values(const uint8_t *bytes, float *out)
{
    const q5_k_block *block = (const q5_k_block *)bytes;
    k_quant_block_values(block->d, block->dmin, block->scales, block->qs, block->qh, out);
}

/* Q6_K (210 bytes): u8 ql[128]; u8 qh[64]; int8 scales[16]; f16 d.
 * Two halves n of 128 elements, each four groups g of 32: element
 * 128n + 32g + l takes its low 4 bits from ql[64n + l] (g = 0, 2) or
 * ql[64n + 32 + l] (g = 1, 3), low nibble for g < 2 and high nibble for
 * g >= 2, and its top 2 bits from bits 2g..2g+1 of qh[32n + l]. Its scale is
 * scales[8n + 2g + l/16] (one per 16 elements, signed).
 * x = (d * scale) * (q - 32), q in 0..63. */
static void q6_k_block_values(const uint8_t *bytes, float *out)
{
    const q6_k_block *block = (const q6_k_block *)bytes;
    float d = read_f16(block->d);
    for (int half = 0; half < 2; half++) {
        const uint8_t *ql = block->ql + 64 * half, *qh = block->qh + 32 * half;
        for (int group = 0; group < 4; group++) {
            for (int l = 0; l < 32; l++) {
                int low = (ql[32 * (group % 2) + l] >> (4 * (group / 2))) & 15;
                int high = (qh[l] >> (2 * group)) & 3;
                float scale = d * (float)block->scales[8 * half + 2 * group + l / 16];
                out[128 * half + 32 * group + l] = scale * (float)((low | high << 4) - 32);
            }
        }
    }
}

/* ---- rows of blocks ------------------------------------------------------ */

static void dequantize_blocks(block_dequantizer block_values, size_t block_bytes, int block_elements,
                              const void *row, float *out, int64_t n)
{
    const uint8_t *block = row;
    for (int64_t start = 0; start < n; start += block_elements, block += block_bytes)
        block_values(block, out + start);
}

/* The dot product the SIMD kernels must match: each block dequantized as
 * above, then value times x added in element order. */
static float dot_blocks(block_dequantizer block_values, size_t block_bytes, int block_elements,
                        const void *row, const float *x, int64_t n)
{
    const uint8_t *block = row;
    float values[QUANT_SUPER_BLOCK_ELEMENTS];
    float sum = 0.0f;
    for (int64_t start = 0; start < n; start += block_elements, block += block_bytes) {
        block_values(block, values);
        for (int i = 0; i < block_elements; i++)
            sum += values[i] * x[start + i];
    }
    return sum;
}

/* ---- dot_multi: a row with several vectors -------------------------------
 *
 * The row is dequantized a chunk at a time (one block, or 256 values of a
 * plain type) and each vector's sum adds value times x in element order, as
 * dot does: out[t] is exactly dot(row, x + t * x_stride, n). */

#define PLAIN_CHUNK_ELEMENTS QUANT_SUPER_BLOCK_ELEMENTS

static void dot_multi_chunks(quant_dequantize_fn dequantize, size_t chunk_bytes, int64_t chunk_elements,
                             const void *row, const float *x, int64_t x_stride, int count, int64_t n, float *out)
{
    assert(count >= 1 && count <= QUANT_DOT_MULTI_MAX);
    float values[QUANT_SUPER_BLOCK_ELEMENTS];
    float sums[QUANT_DOT_MULTI_MAX] = {0};
    const uint8_t *chunk = row;
    for (int64_t start = 0; start < n; start += chunk_elements, chunk += chunk_bytes) {
        int64_t length = n - start < chunk_elements ? n - start : chunk_elements;
        dequantize(chunk, values, length);
        for (int t = 0; t < count; t++) {
            const float *vector = x + t * x_stride + start;
            for (int64_t i = 0; i < length; i++)
                sums[t] += values[i] * vector[i];
        }
    }
    for (int t = 0; t < count; t++)
        out[t] = sums[t];
}

#define PLAIN_DOT_MULTI(type, value_bytes)                                                                \
    static void dot_multi_##type(const void *row, const float *x, int64_t x_stride, int count, int64_t n, \
                                 float *out)                                                              \
    {                                                                                                     \
        dot_multi_chunks(dequantize_##type, PLAIN_CHUNK_ELEMENTS * (value_bytes), PLAIN_CHUNK_ELEMENTS,   \
                         row, x, x_stride, count, n, out);                                                \
    }

PLAIN_DOT_MULTI(f32, 4)
PLAIN_DOT_MULTI(f16, 2)
PLAIN_DOT_MULTI(bf16, 2)

/* The row kernels of each block type: dequantize, dot and dot_multi differ
 * only in the block they name. */
#define QUANT_ROW_KERNELS(type, elements)                                                                     \
    static void dequantize_##type(const void *row, float *out, int64_t n)                                     \
    {                                                                                                         \
        dequantize_blocks(type##_block_values, sizeof(type##_block), elements, row, out, n);                  \
    }                                                                                                         \
    static float dot_##type(const void *row, const float *x, int64_t n)                                       \
    {                                                                                                         \
        return dot_blocks(type##_block_values, sizeof(type##_block), elements, row, x, n);                    \
    }                                                                                                         \
    static void dot_multi_##type(const void *row, const float *x, int64_t x_stride, int count, int64_t n,     \
                                 float *out)                                                                  \
    {                                                                                                         \
        dot_multi_chunks(dequantize_##type, sizeof(type##_block), elements, row, x, x_stride, count, n, out); \
    }

QUANT_ROW_KERNELS(q8_0, QUANT_BLOCK_ELEMENTS)
QUANT_ROW_KERNELS(q4_0, QUANT_BLOCK_ELEMENTS)
QUANT_ROW_KERNELS(q4_1, QUANT_BLOCK_ELEMENTS)
QUANT_ROW_KERNELS(q5_0, QUANT_BLOCK_ELEMENTS)
QUANT_ROW_KERNELS(q5_1, QUANT_BLOCK_ELEMENTS)
QUANT_ROW_KERNELS(q4_k, QUANT_SUPER_BLOCK_ELEMENTS)
QUANT_ROW_KERNELS(q5_k, QUANT_SUPER_BLOCK_ELEMENTS)
QUANT_ROW_KERNELS(q6_k, QUANT_SUPER_BLOCK_ELEMENTS)

const quant_kernels quant_kernels_scalar_own = QUANT_KERNEL_TABLE(SIMD_SCALAR);
