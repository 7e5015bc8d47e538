/* tests/quant/test_quant.c: the quant kernels against their specification.
 *
 * Three kinds of checks. The scalar kernels dequantize one hand-packed block
 * of every computable type to the values the formulas of
 * docs/MODEL-FORMATS.md section 2 give: the test packs chosen quants and
 * scales into bytes itself, from the layout in that document, so a layout
 * misread in the kernels shows up here. The half conversions are checked on
 * all 65536 halves, on hand-picked rounding cases, and against the F16C
 * instructions. Every SIMD level this CPU supports is compared with the
 * scalar kernels on random rows (plus zero scales, subnormal scales and
 * maximum-magnitude quants): dequantize bit for bit, dot within the rounding
 * error of a different summation order. dot_multi, at every level, is
 * checked against dot of the same level for each of its vectors (bit for bit
 * where the order of additions is the same) and against the scalar
 * dot_multi. The random cases print their seed; `test_quant SEED` replays a
 * run. */
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "base/cpu_features.h"
#include "quant/kernels.h"
#include "quant/types.h"
#include "test_util.h"

/* ---- helpers ----------------------------------------------------------- */


static uint32_t random_below(uint32_t limit)
{
    return (uint32_t)(random_u64() % limit);
}

/* Uniform in [-1, 1). */
static float random_signed_unit(void)
{
    return (float)((double)(random_u64() >> 11) / (double)(1ull << 52) - 1.0);
}

static uint32_t float_bits(float value)
{
    uint32_t bits;
    memcpy(&bits, &value, sizeof bits);
    return bits;
}

static float float_from_bits(uint32_t bits)
{
    float value;
    memcpy(&value, &bits, sizeof value);
    return value;
}

static void put_u16(uint8_t *bytes, uint16_t value)
{
    bytes[0] = (uint8_t)(value & 0xff);
    bytes[1] = (uint8_t)(value >> 8);
}

static bool half_is_nan(uint16_t half)
{
    return (half & 0x7c00) == 0x7c00 && (half & 0x3ff) != 0;
}

static const char *const level_names[] = {"scalar", "avx2", "avx512"};

/* ---- kernel tables ------------------------------------------------------ */

static void every_level_up_to_the_supported_one_has_a_complete_table(void)
{
    simd_level supported = cpu_simd_level_supported();
    for (int level = SIMD_SCALAR; level <= (int)supported; level++) {
        const quant_kernels *kernels = quant_kernels_for_level((simd_level)level);
        CHECK_MESSAGE(kernels != NULL, "level %s", level_names[level]);
        if (kernels == NULL)
            continue;
        CHECK(kernels->level == (simd_level)level);
        for (uint32_t type = 0; type < TENSOR_TYPE_LIMIT; type++) {
            const tensor_type_info *info = tensor_type_lookup(type);
            bool computable = info != NULL && info->computable;
            CHECK_MESSAGE((kernels->dequantize[type] != NULL) == computable, "%s dequantize %s",
                          level_names[level], tensor_type_name(type));
            CHECK_MESSAGE((kernels->dot[type] != NULL) == computable, "%s dot %s", level_names[level],
                          tensor_type_name(type));
            CHECK_MESSAGE((kernels->dot_multi[type] != NULL) == computable, "%s dot_multi %s", level_names[level],
                          tensor_type_name(type));
        }
    }
    CHECK(quant_kernels_for_level((simd_level)(SIMD_AVX512 + 1)) == NULL);
    CHECK(quant_kernels_selected() == quant_kernels_for_level(cpu_simd_level_selected()));
}

/* ---- half and bfloat16 conversions -------------------------------------- */

static void every_half_survives_a_round_trip_through_float(void)
{
    for (uint32_t half = 0; half < 65536; half++) {
        uint16_t back = quant_f32_to_f16(quant_f16_to_f32((uint16_t)half));
        if (half_is_nan((uint16_t)half)) /* a signaling NaN comes back quiet, payload kept, as with F16C */
            CHECK_MESSAGE(back == (half | 0x0200), "NaN %04x came back as %04x", half, back);
        else
            CHECK_MESSAGE(back == half, "%04x came back as %04x", half, back);
    }
}

static void halves_convert_to_the_floats_they_denote(void)
{
    static const struct {
        uint16_t half;
        float value;
    } cases[] = {
        {0x0000, 0.0f},     {0x3c00, 1.0f},      {0xc000, -2.0f},          {0x3555, 0.333251953125f},
        {0x7bff, 65504.0f}, {0x0400, 0x1p-14f},  {0x0001, 0x1p-24f},       {0x03ff, 0x3ffp-24f},
        {0x8001, -0x1p-24f}, {0x7c00, INFINITY}, {0xfc00, -INFINITY},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        CHECK_MESSAGE(quant_f16_to_f32(cases[i].half) == cases[i].value, "%04x", cases[i].half);
    CHECK(float_bits(quant_f16_to_f32(0x8000)) == 0x80000000u);
    CHECK(isnan(quant_f16_to_f32(0x7e00)));
    CHECK(quant_bf16_to_f32(0x3f80) == 1.0f);
    CHECK(quant_bf16_to_f32(0xc040) == -3.0f);
    CHECK(quant_bf16_to_f32(0x4049) == 3.140625f);
    CHECK(float_bits(quant_bf16_to_f32(0x7fc1)) == 0x7fc10000u);
}

static void floats_round_to_the_nearest_half_ties_to_even(void)
{
    static const struct {
        float value;
        uint16_t half;
    } cases[] = {
        {1.0f + 0x1p-11f, 0x3c00},             /* tie, even neighbour is 1.0 */
        {1.0f + 3 * 0x1p-11f, 0x3c02},         /* tie, rounds up to the even 0x3c02 */
        {1.0f + 0x1p-11f + 0x1p-20f, 0x3c01},  /* just past the tie */
        {65504.0f, 0x7bff},
        {65519.99f, 0x7bff},                   /* below the tie with 65536 */
        {65520.0f, 0x7c00},                    /* the tie rounds to even: infinity */
        {1e10f, 0x7c00},
        {-1e10f, 0xfc00},
        {0x1p-14f, 0x0400},                    /* smallest normal */
        {0x1p-24f, 0x0001},                    /* smallest subnormal */
        {0x1p-25f, 0x0000},                    /* tie between 0 and 2^-24: even is 0 */
        {0x1.000002p-25f, 0x0001},             /* just past that tie */
        {-0x1p-26f, 0x8000},
        {0x3ffp-24f + 0x1p-25f, 0x0400},       /* tie at the top of the subnormals: up to 0x400 */
        {3 * 0x1p-25f, 0x0002},                /* tie 1.5 units: to even 2 */
        {0x1p-149f, 0x0000},                   /* float subnormal */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint16_t half = quant_f32_to_f16(cases[i].value);
        CHECK_MESSAGE(half == cases[i].half, "%a gave %04x, expected %04x", (double)cases[i].value, half,
                      cases[i].half);
    }
    CHECK(quant_f32_to_f16(-0.0f) == 0x8000);
    CHECK(half_is_nan(quant_f32_to_f16(NAN)));
}

#if defined(__x86_64__)
__attribute__((target("f16c"))) static float hardware_f16_to_f32(uint16_t half)
{
    return _cvtsh_ss(half);
}

__attribute__((target("f16c"))) static uint16_t hardware_f32_to_f16(float value)
{
    return (uint16_t)_cvtss_sh(value, _MM_FROUND_TO_NEAREST_INT);
}

/* F16C (part of the AVX2 level) is an independent implementation of the same
 * IEEE conversions; on a CPU without it this case checks nothing. */
static void half_conversions_agree_with_f16c(void)
{
    if (cpu_simd_level_supported() < SIMD_AVX2) {
        fprintf(stderr, "     (no F16C on this CPU: skipped)\n");
        return;
    }
    for (uint32_t half = 0; half < 65536; half++) {
        uint32_t ours = float_bits(quant_f16_to_f32((uint16_t)half));
        uint32_t theirs = float_bits(hardware_f16_to_f32((uint16_t)half));
        CHECK_MESSAGE(ours == theirs, "%04x: %08x, F16C %08x", half, ours, theirs);
    }
    int mismatches = 0;
    for (int i = 0; i < 4000000 && mismatches < 10; i++) {
        /* Every bit pattern, with extra weight on the exponents near the half range. */
        uint32_t bits = (uint32_t)random_u64();
        if (i % 2 == 0)
            bits = (bits & 0x807fffff) | (uint32_t)(100 + random_below(45)) << 23;
        float value = float_from_bits(bits);
        uint16_t ours = quant_f32_to_f16(value), theirs = hardware_f32_to_f16(value);
        if (ours != theirs) {
            mismatches++;
            CHECK_MESSAGE(ours == theirs, "%08x: %04x, F16C %04x", bits, ours, theirs);
        }
    }
}
#endif

/* ---- hand-packed blocks, checked against the formulas ------------------ */

/* Packs 32 quants of a Q4_x/Q5_x block: quant j < 16 in the low nibble of
 * qs[j], quant j + 16 in its high nibble; bit 4 of quant j into bit j of the
 * little-endian u32 qh (when qh is not NULL). */
static void pack_block32(const int quants[32], uint8_t qs[16], uint8_t *qh)
{
    uint32_t high_bits = 0;
    for (int j = 0; j < 16; j++)
        qs[j] = (uint8_t)((quants[j] & 15) | (quants[j + 16] & 15) << 4);
    for (int j = 0; j < 32; j++)
        high_bits |= (uint32_t)((quants[j] >> 4) & 1) << j;
    if (qh != NULL)
        for (int k = 0; k < 4; k++)
            qh[k] = (uint8_t)(high_bits >> (8 * k));
}

/* Packs the 6-bit scales and mins of the 8 sub-blocks of a Q4_K/Q5_K block
 * into 12 bytes, as the document lays them out. */
static void pack_k_scales(const int scales[8], const int mins[8], uint8_t packed[12])
{
    for (int j = 0; j < 4; j++) {
        packed[j] = (uint8_t)(scales[j] | (scales[j + 4] >> 4) << 6);
        packed[j + 4] = (uint8_t)(mins[j] | (mins[j + 4] >> 4) << 6);
        packed[j + 8] = (uint8_t)((scales[j + 4] & 15) | (mins[j + 4] & 15) << 4);
    }
}

/* A hand-packed block: its bytes, its element count, the values it means. */
typedef struct hand_block {
    uint8_t bytes[256];
    int64_t elements;
    float expected[256];
} hand_block;

static void hand_block_plain(tensor_type type, hand_block *block)
{
    static const float floats[] = {1.5f, -2.25f, 0.0f, 1e-40f, 3.0e38f, -0.0f, 0.1f};
    static const struct {
        uint16_t half;
        float value;
    } halves[] = {{0x3c00, 1.0f}, {0xc000, -2.0f}, {0x0001, 0x1p-24f}, {0x7bff, 65504.0f}, {0x3555, 0.333251953125f}};
    static const struct {
        uint16_t bits;
        float value;
    } bfloats[] = {{0x3f80, 1.0f}, {0xc040, -3.0f}, {0x4049, 3.140625f}, {0x0001, 0x1p-133f}};
    if (type == TENSOR_F32) {
        block->elements = sizeof floats / sizeof floats[0];
        memcpy(block->bytes, floats, sizeof floats);
        memcpy(block->expected, floats, sizeof floats);
    } else if (type == TENSOR_F16) {
        block->elements = sizeof halves / sizeof halves[0];
        for (int64_t i = 0; i < block->elements; i++) {
            put_u16(block->bytes + 2 * i, halves[i].half);
            block->expected[i] = halves[i].value;
        }
    } else {
        block->elements = sizeof bfloats / sizeof bfloats[0];
        for (int64_t i = 0; i < block->elements; i++) {
            put_u16(block->bytes + 2 * i, bfloats[i].bits);
            block->expected[i] = bfloats[i].value;
        }
    }
}

/* Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 with d = 0.5 (0x3800) and m = -1.5 (0xbe00):
 * every value is exact in float. */
static void hand_block_32(tensor_type type, hand_block *block)
{
    const float d = 0.5f, m = -1.5f;
    int quants[32];
    block->elements = 32;
    put_u16(block->bytes, 0x3800);
    if (type == TENSOR_Q8_0) {
        for (int j = 0; j < 32; j++) {
            int quant = j * 9 - 128; /* -128 .. 151, clipped below */
            quant = quant > 127 ? 127 : quant;
            block->bytes[2 + j] = (uint8_t)(int8_t)quant;
            block->expected[j] = d * (float)quant;
        }
        return;
    }
    bool five_bits = type == TENSOR_Q5_0 || type == TENSOR_Q5_1;
    bool has_min = type == TENSOR_Q4_1 || type == TENSOR_Q5_1;
    for (int j = 0; j < 32; j++)
        quants[j] = (j * 7 + 3) % (five_bits ? 32 : 16);
    uint8_t *fields = block->bytes + 2;
    if (has_min) {
        put_u16(fields, 0xbe00);
        fields += 2;
    }
    if (five_bits) {
        pack_block32(quants, fields + 4, fields);
    } else {
        pack_block32(quants, fields, NULL);
    }
    for (int j = 0; j < 32; j++) {
        if (has_min)
            block->expected[j] = d * (float)quants[j] + m;
        else
            block->expected[j] = d * (float)(quants[j] - (five_bits ? 16 : 8));
    }
}

/* Q4_K and Q5_K with d = 0.5, dmin = 0.25; scales and mins above 15 in the
 * upper sub-blocks exercise the split 6-bit fields. */
static void hand_block_k_nibbles(tensor_type type, hand_block *block)
{
    static const int scales[8] = {1, 2, 3, 63, 17, 40, 5, 33};
    static const int mins[8] = {0, 7, 63, 1, 20, 9, 48, 63};
    bool five_bits = type == TENSOR_Q5_K;
    uint8_t *qh = block->bytes + 16, *qs = block->bytes + (five_bits ? 48 : 16);
    block->elements = 256;
    put_u16(block->bytes, 0x3800);
    put_u16(block->bytes + 2, 0x3400);
    pack_k_scales(scales, mins, block->bytes + 4);
    for (int e = 0; e < 256; e++) {
        int quant = (e * 3 + e / 7) % (five_bits ? 32 : 16);
        int chunk = e / 64, l = e % 32, high_nibble = (e % 64) / 32, sub_block = e / 32;
        qs[32 * chunk + l] |= (uint8_t)((quant & 15) << (4 * high_nibble));
        if (five_bits)
            qh[l] |= (uint8_t)(((quant >> 4) & 1) << sub_block);
        block->expected[e] = 0.5f * (float)scales[sub_block] * (float)quant - 0.25f * (float)mins[sub_block];
    }
}

/* Q6_K with d = 0.25 and signed scales from -128 up. */
static void hand_block_q6_k(hand_block *block)
{
    uint8_t *ql = block->bytes, *qh = block->bytes + 128, *scales = block->bytes + 192;
    block->elements = 256;
    for (int k = 0; k < 16; k++)
        scales[k] = (uint8_t)(int8_t)(k * 17 - 128);
    put_u16(block->bytes + 208, 0x3400);
    for (int e = 0; e < 256; e++) {
        int quant = (e * 11 + 5) % 64;
        int n = e / 128, r = e % 128, g = r / 32, l = r % 32;
        ql[64 * n + 32 * (g % 2) + l] |= (uint8_t)((quant & 15) << (g < 2 ? 0 : 4));
        qh[32 * n + l] |= (uint8_t)((quant >> 4) << (2 * g));
        int scale = (int8_t)scales[8 * n + l / 16 + 2 * g];
        block->expected[e] = 0.25f * (float)scale * (float)(quant - 32);
    }
}

static void scalar_dequantize_gives_the_documented_values_of_a_hand_packed_block(void)
{
    const quant_kernels *scalar = quant_kernels_for_level(SIMD_SCALAR);
    for (uint32_t type = 0; type < TENSOR_TYPE_LIMIT; type++) {
        const tensor_type_info *info = tensor_type_lookup(type);
        if (info == NULL || !info->computable)
            continue;
        hand_block block;
        memset(&block, 0, sizeof block);
        if (info->block_elements == 1)
            hand_block_plain((tensor_type)type, &block);
        else if (info->block_elements == 32)
            hand_block_32((tensor_type)type, &block);
        else if (type == TENSOR_Q6_K)
            hand_block_q6_k(&block);
        else
            hand_block_k_nibbles((tensor_type)type, &block);
        float out[256];
        scalar->dequantize[type](block.bytes, out, block.elements);
        int wrong = 0;
        for (int64_t i = 0; i < block.elements && wrong < 5; i++) {
            if (float_bits(out[i]) != float_bits(block.expected[i])) {
                wrong++;
                CHECK_MESSAGE(out[i] == block.expected[i], "%s element %" PRId64 ": %g, expected %g", info->name,
                              i, (double)out[i], (double)block.expected[i]);
            }
        }
    }
    /* Two elements read straight off the bytes, as a check on the packing
     * helpers themselves: Q4_0 byte qs[0] = 0x1f holds element 0 (15) in its
     * low nibble and element 16 (1) in its high nibble. */
    uint8_t q4_0[18] = {0x00, 0x3c, 0x1f}; /* d = 1.0 */
    float values[32];
    scalar->dequantize[TENSOR_Q4_0](q4_0, values, 32);
    CHECK(values[0] == 7.0f && values[16] == -7.0f && values[1] == -8.0f);
}

/* ---- random rows: every SIMD level against the scalar kernels ---------- */

typedef enum row_kind {
    ROW_RANDOM,           /* random quant bytes, random normal scales */
    ROW_ZERO_SCALES,      /* every scale +0 or -0: the sign of zero must survive */
    ROW_SUBNORMAL_SCALES, /* subnormal half scales */
    ROW_EXTREME,          /* quant bytes 0x00, 0x7f, 0x80, 0xff with the largest scales */
    ROW_KIND_COUNT,
} row_kind;

static const char *const row_kind_names[] = {"random", "zero scales", "subnormal scales", "extreme"};

static uint64_t seed;

/* Byte offsets of a block's f16 fields (d, and m or dmin), -1 ended, from
 * the layouts in the document. */
static const int *half_field_offsets(tensor_type type)
{
    static const int d_first[] = {0, -1}, d_and_m_first[] = {0, 2, -1}, q6_k_d_last[] = {208, -1};
    switch (type) {
    case TENSOR_Q4_1:
    case TENSOR_Q5_1:
    case TENSOR_Q4_K:
    case TENSOR_Q5_K: return d_and_m_first;
    case TENSOR_Q6_K: return q6_k_d_last;
    default: return d_first;
    }
}

static uint16_t random_half_scale(row_kind kind)
{
    uint16_t sign = (uint16_t)(random_below(2) << 15);
    switch (kind) {
    case ROW_ZERO_SCALES: return sign;
    case ROW_SUBNORMAL_SCALES: return (uint16_t)(sign | (1 + random_below(0x3ff)));
    case ROW_EXTREME: return (uint16_t)(sign | 0x7bff);
    default: return (uint16_t)(sign | (1 + random_below(20)) << 10 | random_below(0x400));
    }
}

/* One value of a plain type, as raw bits of its width. */
static uint32_t random_plain_value(tensor_type type, row_kind kind)
{
    uint32_t sign = (uint32_t)random_below(2);
    uint32_t f32;
    switch (kind) {
    case ROW_ZERO_SCALES: f32 = 0; break;
    case ROW_SUBNORMAL_SCALES: f32 = (uint32_t)random_u64() & 0x7fffff; break;
    case ROW_EXTREME: f32 = 0x71800000; break; /* 2^100: huge, yet sums of a few thousand cannot overflow */
    default: f32 = (100 + random_below(40)) << 23 | ((uint32_t)random_u64() & 0x7fffff); break;
    }
    f32 |= sign << 31;
    if (type == TENSOR_F32)
        return f32;
    if (type == TENSOR_BF16)
        return kind == ROW_SUBNORMAL_SCALES ? (sign << 15 | (1 + random_below(0x7f))) : f32 >> 16;
    /* F16 */
    if (kind == ROW_EXTREME)
        return sign << 15 | 0x7bff;
    if (kind == ROW_SUBNORMAL_SCALES)
        return sign << 15 | (1 + random_below(0x3ff));
    if (kind == ROW_RANDOM)
        return sign << 15 | (1 + random_below(30)) << 10 | random_below(0x400);
    return sign << 15;
}

static void fill_row(tensor_type type, uint8_t *row, int64_t n, row_kind kind)
{
    const tensor_type_info *info = tensor_type_lookup(type);
    if (info->block_elements == 1) {
        for (int64_t i = 0; i < n; i++) {
            uint32_t bits = random_plain_value(type, kind);
            memcpy(row + i * info->block_bytes, &bits, info->block_bytes); /* little-endian */
        }
        return;
    }
    static const uint8_t extreme_bytes[4] = {0x00, 0x7f, 0x80, 0xff};
    int64_t blocks = n / info->block_elements;
    for (int64_t b = 0; b < blocks; b++) {
        uint8_t *block = row + b * info->block_bytes;
        for (uint32_t i = 0; i < info->block_bytes; i++)
            block[i] = kind == ROW_EXTREME ? extreme_bytes[random_below(4)] : (uint8_t)random_u64();
        for (const int *offset = half_field_offsets(type); *offset >= 0; offset++)
            put_u16(block + *offset, random_half_scale(kind));
    }
}

/* The dot products differ from the exact sum only by rounding. With
 * u = 2^-24 and S = sum |value_i * x_i|, the scalar kernel adds n rounded
 * products one after another: error <= n * u * S. A SIMD kernel forms the
 * same values (the dequantize check proves it) and spreads the terms over at
 * least eight partial sums (one per lane), each adding at most n/8 terms,
 * which are then added up in a tree at most 6 levels deep: error <=
 * (n/8 + 16) * u * S, with room to spare. Subnormal products can lose up to
 * 2^-150 each regardless of S, hence the absolute term. A single misplaced
 * or dropped element is off by about S/n, far above both bounds for these n;
 * a wrong scale is off by a multiple of S. */
static double scalar_dot_error_bound(int64_t n, double magnitude)
{
    return (double)n * 0x1p-24 * magnitude + (double)n * 0x1p-149;
}

static double simd_dot_error_bound(int64_t n, double magnitude)
{
    return ((double)n / 8 + 16) * 0x1p-24 * magnitude + (double)n * 0x1p-149;
}

static void compare_with_scalar(const quant_kernels *simd, tensor_type type, int64_t n, row_kind kind)
{
    const quant_kernels *scalar = quant_kernels_for_level(SIMD_SCALAR);
    const char *level = level_names[simd->level], *name = tensor_type_name(type);
    size_t bytes = (size_t)tensor_row_bytes(type, (uint64_t)n);
    /* Exact-size allocations, so ASan sees any read or write past the row;
     * the row starts at an odd address, as a block inside a file may. */
    uint8_t *row_storage = malloc(bytes + 1);
    float *expected = malloc((size_t)n * sizeof(float)), *got = malloc((size_t)n * sizeof(float));
    float *x = malloc((size_t)n * sizeof(float));
    uint8_t *row = row_storage + 1;
    fill_row(type, row, n, kind);
    for (int64_t i = 0; i < n; i++)
        x[i] = random_signed_unit();

    scalar->dequantize[type](row, expected, n);
    simd->dequantize[type](row, got, n);
    for (int64_t i = 0; i < n; i++) {
        if (float_bits(got[i]) != float_bits(expected[i])) {
            CHECK_MESSAGE(float_bits(got[i]) == float_bits(expected[i]),
                          "%s dequantize %s, n %" PRId64 ", %s rows, element %" PRId64 ": %a, scalar %a"
                          " (seed %" PRIu64 ")",
                          level, name, n, row_kind_names[kind], i, (double)got[i], (double)expected[i], seed);
            break;
        }
    }

    double exact = 0, magnitude = 0;
    for (int64_t i = 0; i < n; i++) {
        exact += (double)expected[i] * (double)x[i]; /* a product of two floats is exact in double */
        magnitude += fabs((double)expected[i] * (double)x[i]);
    }
    double scalar_dot = scalar->dot[type](row, x, n), simd_dot = simd->dot[type](row, x, n);
    double scalar_bound = scalar_dot_error_bound(n, magnitude), simd_bound = simd_dot_error_bound(n, magnitude);
    CHECK_MESSAGE(fabs(scalar_dot - exact) <= scalar_bound,
                  "scalar dot %s, n %" PRId64 ", %s rows: %.9g, exact %.9g, bound %.3g (seed %" PRIu64 ")", name, n,
                  row_kind_names[kind], scalar_dot, exact, scalar_bound, seed);
    CHECK_MESSAGE(fabs(simd_dot - exact) <= simd_bound,
                  "%s dot %s, n %" PRId64 ", %s rows: %.9g, exact %.9g, bound %.3g (seed %" PRIu64 ")", level, name,
                  n, row_kind_names[kind], simd_dot, exact, simd_bound, seed);
    CHECK_MESSAGE(fabs(simd_dot - scalar_dot) <= scalar_bound + simd_bound,
                  "%s dot %s, n %" PRId64 ", %s rows: %.9g, scalar %.9g (seed %" PRIu64 ")", level, name, n,
                  row_kind_names[kind], simd_dot, scalar_dot, seed);
    free(row_storage);
    free(expected);
    free(got);
    free(x);
}

/* A check of one level's kernels on one random row. */
typedef void (*random_row_check)(const quant_kernels *kernels, tensor_type type, int64_t n, row_kind kind);

/* Runs `check` for every level from first_level up to the supported one,
 * every computable type, every row kind, and every length: plain_lengths
 * values for a plain type, block_counts blocks for a block type. */
static void check_random_rows(int first_level, const int64_t *plain_lengths, size_t plain_length_count,
                              const int64_t *block_counts, size_t block_count_count, random_row_check check)
{
    for (int level = first_level; level <= (int)cpu_simd_level_supported(); level++) {
        const quant_kernels *kernels = quant_kernels_for_level((simd_level)level);
        for (uint32_t type = 0; type < TENSOR_TYPE_LIMIT; type++) {
            const tensor_type_info *info = tensor_type_lookup(type);
            if (info == NULL || !info->computable)
                continue;
            bool plain = info->block_elements == 1;
            size_t length_count = plain ? plain_length_count : block_count_count;
            for (size_t l = 0; l < length_count; l++) {
                int64_t n = plain ? plain_lengths[l] : block_counts[l] * info->block_elements;
                for (int kind = 0; kind < ROW_KIND_COUNT; kind++)
                    check(kernels, (tensor_type)type, n, (row_kind)kind);
            }
        }
    }
}

static void compare_three_rows_with_scalar(const quant_kernels *simd, tensor_type type, int64_t n, row_kind kind)
{
    for (int repeat = 0; repeat < 3; repeat++)
        compare_with_scalar(simd, type, n, kind);
}

static void simd_kernels_match_scalar_on_random_rows(void)
{
    /* Plain types: lengths around and between vector widths (8 and 16). */
    static const int64_t plain_lengths[] = {1, 7, 15, 17, 33, 100, 640};
    /* Block types: a number of blocks, and 20 blocks = a 640-value row of a
     * block-32 type. */
    static const int64_t block_counts[] = {1, 2, 3, 7, 8, 20};
    check_random_rows(SIMD_AVX2, plain_lengths, sizeof plain_lengths / sizeof plain_lengths[0], block_counts,
                      sizeof block_counts / sizeof block_counts[0], compare_three_rows_with_scalar);
}

/* Every 16-bit pattern, infinities and NaNs included, as one F16 row and one
 * BF16 row: the vector conversions must give the scalar bits. */
static void simd_converts_every_half_and_bfloat16_like_scalar(void)
{
    static const tensor_type types[] = {TENSOR_F16, TENSOR_BF16};
    uint8_t *row = malloc(2 * 65536);
    float *expected = malloc(65536 * sizeof(float)), *got = malloc(65536 * sizeof(float));
    for (uint32_t i = 0; i < 65536; i++)
        put_u16(row + 2 * i, (uint16_t)i);
    for (int level = SIMD_AVX2; level <= (int)cpu_simd_level_supported(); level++) {
        const quant_kernels *simd = quant_kernels_for_level((simd_level)level);
        for (size_t t = 0; t < 2; t++) {
            quant_kernels_for_level(SIMD_SCALAR)->dequantize[types[t]](row, expected, 65536);
            simd->dequantize[types[t]](row, got, 65536);
            CHECK_MESSAGE(memcmp(expected, got, 65536 * sizeof(float)) == 0, "%s %s", level_names[level],
                          tensor_type_name(types[t]));
        }
    }
    free(row);
    free(expected);
    free(got);
}

/* ---- dot_multi: several vectors, one decoding --------------------------- */

/* `count` vectors of n random activations, x_stride (> n) floats apart, in a
 * buffer that ends with the last vector's last element, so ASan sees a read
 * past it. The padding between vectors is NaN: a kernel that reads it gives
 * NaN, which no check accepts. */
static float *random_vectors(int count, int64_t n, int64_t x_stride)
{
    size_t total = (size_t)((count - 1) * x_stride + n);
    float *x = malloc(total * sizeof(float));
    for (size_t i = 0; i < total; i++)
        x[i] = NAN;
    for (int t = 0; t < count; t++)
        for (int64_t i = 0; i < n; i++)
            x[t * x_stride + i] = random_signed_unit();
    return x;
}

/* The scalar dot_multi adds in the order of the scalar dot, and any level's
 * dot_multi with one vector is that level's dot: both are checked bit for
 * bit. A SIMD dot_multi with more vectors adds each vector's products in
 * another order than the SIMD dot (over fewer running sums, and with more
 * vectors a block of 32 may be scaled before rather than after its sum), so
 * it is checked as the SIMD dot is: within simd_dot_error_bound of the exact
 * sum, hence within twice that of the SIMD dot, and within the
 * SIMD-vs-scalar bound of the scalar dot_multi. */
static void check_dot_multi(const quant_kernels *kernels, tensor_type type, int64_t n, row_kind kind, int count)
{
    const quant_kernels *scalar = quant_kernels_for_level(SIMD_SCALAR);
    const char *level = level_names[kernels->level], *name = tensor_type_name(type);
    size_t bytes = (size_t)tensor_row_bytes(type, (uint64_t)n);
    int64_t x_stride = n + 1 + random_below(16);
    uint8_t *row_storage = malloc(bytes + 1), *row = row_storage + 1; /* odd address, as in a file */
    float *values = malloc((size_t)n * sizeof(float));
    float *got = malloc((size_t)count * sizeof(float)), *scalar_got = malloc((size_t)count * sizeof(float));
    fill_row(type, row, n, kind);
    float *x = random_vectors(count, n, x_stride);
    scalar->dequantize[type](row, values, n);
    kernels->dot_multi[type](row, x, x_stride, count, n, got);
    scalar->dot_multi[type](row, x, x_stride, count, n, scalar_got);

    bool same_order = kernels->level == SIMD_SCALAR || count == 1;
    for (int t = 0; t < count; t++) {
        const float *vector = x + t * x_stride;
        double exact = 0, magnitude = 0;
        for (int64_t i = 0; i < n; i++) {
            exact += (double)values[i] * (double)vector[i];
            magnitude += fabs((double)values[i] * (double)vector[i]);
        }
        float dot = kernels->dot[type](row, vector, n);
        double simd_bound = simd_dot_error_bound(n, magnitude);
        double scalar_bound = scalar_dot_error_bound(n, magnitude);
        if (same_order) {
            CHECK_MESSAGE(float_bits(got[t]) == float_bits(dot),
                          "%s dot_multi %s, n %" PRId64 ", %s rows, vector %d of %d: %a, dot %a (seed %" PRIu64 ")",
                          level, name, n, row_kind_names[kind], t, count, (double)got[t], (double)dot, seed);
        } else {
            CHECK_MESSAGE(fabs(got[t] - exact) <= simd_bound && fabs(got[t] - dot) <= 2 * simd_bound,
                          "%s dot_multi %s, n %" PRId64 ", %s rows, vector %d of %d: %.9g, dot %.9g, exact %.9g,"
                          " bound %.3g (seed %" PRIu64 ")",
                          level, name, n, row_kind_names[kind], t, count, (double)got[t], (double)dot, exact,
                          simd_bound, seed);
        }
        CHECK_MESSAGE(fabs(got[t] - scalar_got[t]) <= scalar_bound + simd_bound,
                      "%s dot_multi %s, n %" PRId64 ", %s rows, vector %d of %d: %.9g, scalar %.9g (seed %" PRIu64
                      ")",
                      level, name, n, row_kind_names[kind], t, count, (double)got[t], (double)scalar_got[t], seed);
    }
    free(row_storage);
    free(values);
    free(got);
    free(scalar_got);
    free(x);
}

static void check_dot_multi_with_every_count(const quant_kernels *kernels, tensor_type type, int64_t n, row_kind kind)
{
    for (int count = 1; count <= QUANT_DOT_MULTI_MAX; count++)
        check_dot_multi(kernels, type, n, kind, count);
}

static void dot_multi_gives_each_vector_what_dot_gives(void)
{
    /* Plain types: a few values, then lengths around the vector widths and
     * the four-vector steps (32 and 64 values), with and without a tail. */
    static const int64_t plain_lengths[] = {1, 2, 3, 7, 17, 33, 64, 100, 129};
    static const int64_t block_counts[] = {1, 2, 3, 7};
    check_random_rows(SIMD_SCALAR, plain_lengths, sizeof plain_lengths / sizeof plain_lengths[0], block_counts,
                      sizeof block_counts / sizeof block_counts[0], check_dot_multi_with_every_count);
}

int main(int argc, char **argv)
{
    seed = argc > 1 ? strtoull(argv[1], NULL, 0) : (uint64_t)time(NULL);
    random_state = seed;
    fprintf(stderr, "seed %" PRIu64 " (replay: test_quant %" PRIu64 ")\n", seed, seed);
    simd_level supported = cpu_simd_level_supported();
    fprintf(stderr, "SIMD levels compared with scalar:");
    for (int level = SIMD_AVX2; level <= (int)supported; level++)
        fprintf(stderr, " %s", level_names[level]);
    fprintf(stderr, "%s (not supported here:", supported == SIMD_SCALAR ? " none" : "");
    for (int level = (int)supported + 1; level <= SIMD_AVX512; level++)
        fprintf(stderr, " %s", level_names[level]);
    fprintf(stderr, "%s)\n", supported == SIMD_AVX512 ? " none" : "");

    RUN_CASE(every_level_up_to_the_supported_one_has_a_complete_table);
    RUN_CASE(every_half_survives_a_round_trip_through_float);
    RUN_CASE(halves_convert_to_the_floats_they_denote);
    RUN_CASE(floats_round_to_the_nearest_half_ties_to_even);
#if defined(__x86_64__)
    RUN_CASE(half_conversions_agree_with_f16c);
#endif
    RUN_CASE(scalar_dequantize_gives_the_documented_values_of_a_hand_packed_block);
    RUN_CASE(simd_kernels_match_scalar_on_random_rows);
    RUN_CASE(simd_converts_every_half_and_bfloat16_like_scalar);
    RUN_CASE(dot_multi_gives_each_vector_what_dot_gives);
    TEST_EXIT();
}
