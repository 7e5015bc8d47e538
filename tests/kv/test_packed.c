/* tests/kv/test_packed.c: packed low-bit KV sections (kv/packed.h).
 *
 * Four kinds of checks. The type table: names, the shape check's messages
 * and the section sizes. The stated error bound, element by element, on
 * random blocks of every type (scales from 1e-6 to 1e4, constant rows,
 * zeros, lone outliers, ties between the largest positive and negative
 * value, partially filled blocks), with the groups' minimum and maximum
 * computed here rather than taken from the module; also that every way of
 * encoding (whole block, one slot) and decoding (one slot, all slots) gives
 * the same bytes and floats, and hand-made cases at the edges of each bound
 * (q4's clamped far end, kivi's constant groups). The layouts: q8, q4 and
 * kivi4's value rows decode, through quant/'s own dequantize kernels, to
 * exactly our floats, so attention may use those kernels on them; and the
 * branch-free half conversion agrees with quant_f16_to_f32 on every finite
 * half. Real KV: the keys and values Gemma 3 270M writes for a few hundred
 * tokens of text are packed with every type, every element is checked
 * against its bound and the relative error (rmse / rms) is printed per
 * type. That case needs the default model (scripts/fetch-model.sh; or
 * STRATA_MODEL=path) and fails, naming the script, when it is missing.
 * Random cases print their seed; STRATA_TEST_SEED=n replays one run. */
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/cpu_features.h"
#include "engine/session_internal.h"
#include "kv/packed.h"
#include "kv/pool.h"
#include "kv/seq.h"
#include "quant/kernels.h"
#include "quant/types.h"
#include "strata.h"
#include "test_util.h"

enum { MAX_LENGTH = 512, MAX_BLOCK_TOKENS = 32 };

static const kv_packed_type all_types[] = {KV_PACKED_Q8, KV_PACKED_Q4, KV_PACKED_KIVI4, KV_PACKED_KIVI2};
enum { TYPE_COUNT = sizeof all_types / sizeof all_types[0] };

/* ---- helpers ----------------------------------------------------------- */

static double random_unit(void) /* uniform in [0, 1) */
{
    return (double)(random_u64() >> 11) / (double)(1ull << 53);
}

static uint32_t random_below(uint32_t limit)
{
    return (uint32_t)(random_u64() % limit);
}

static bool same_float_bits(float a, float b)
{
    return memcmp(&a, &b, sizeof a) == 0;
}

/* A block's section buffers, big enough for every shape used here. */
typedef struct sections {
    uint8_t keys[4 * MAX_LENGTH + MAX_BLOCK_TOKENS * MAX_LENGTH / 32 * 34];
    uint8_t values[MAX_BLOCK_TOKENS * MAX_LENGTH / 32 * 34];
} sections;

/* The error bound of element [slot][i] of a block, computing its group's
 * range here: for kivi keys channel i over slots 0 .. slots-1, otherwise the
 * 32 values of the slot's row that hold i. */
static double element_bound(kv_packed_type type, kv_packed_part part, const float *data, int32_t length,
                            int32_t slots, int32_t slot, int32_t i)
{
    float lo, hi;
    if (!kv_packed_per_token(type, part)) {
        lo = hi = data[i];
        for (int32_t s = 1; s < slots; s++) {
            lo = fminf(lo, data[(int64_t)s * length + i]);
            hi = fmaxf(hi, data[(int64_t)s * length + i]);
        }
    } else {
        const float *group = data + (int64_t)slot * length + i / 32 * 32;
        lo = hi = group[0];
        for (int j = 1; j < 32; j++) {
            lo = fminf(lo, group[j]);
            hi = fmaxf(hi, group[j]);
        }
    }
    return kv_packed_error_bound(type, lo, hi, data[(int64_t)slot * length + i]);
}

/* Error statistics of one part (keys or values) of one type. */
typedef struct error_stats {
    double squared_error, squared_data; /* over everything */
    double block_relative_sum, block_relative_max;
    int64_t blocks, elements, violations;
    double worst_bound_ratio; /* the largest |x - x'| / bound seen */
} error_stats;

/* Decodes slots 0 .. slots-1 of one part, checks each element against its
 * bound (one message for the first violation of the part) and adds to stats. */
static void check_part(kv_packed_type type, kv_packed_part part, int32_t block_tokens, int32_t length,
                       const float *data, int32_t slots, const uint8_t *section, error_stats *stats,
                       const char *where)
{
    float row[MAX_LENGTH];
    double squared_error = 0, squared_data = 0;
    bool reported = false;
    for (int32_t s = 0; s < slots; s++) {
        if (part == KV_PACKED_KEYS)
            kv_packed_decode_key(type, block_tokens, length, section, s, row);
        else
            kv_packed_decode_value(type, block_tokens, length, section, s, row);
        for (int32_t i = 0; i < length; i++) {
            double x = data[(int64_t)s * length + i], error = fabs(x - (double)row[i]);
            double bound = element_bound(type, part, data, length, slots, s, i);
            squared_error += error * error;
            squared_data += x * x;
            if (bound > 0 && error / bound > stats->worst_bound_ratio)
                stats->worst_bound_ratio = error / bound;
            if (!(error <= bound)) {
                stats->violations++;
                if (!reported)
                    CHECK_MESSAGE(error <= bound, "%s: %s %s slot %" PRId32 " element %" PRId32
                                  ": x = %.9g decoded %.9g, error %.3g above the bound %.3g",
                                  where, kv_packed_name(type), part == KV_PACKED_KEYS ? "keys" : "values", s, i, x,
                                  (double)row[i], error, bound);
                reported = true;
            }
        }
    }
    stats->squared_error += squared_error;
    stats->squared_data += squared_data;
    stats->elements += (int64_t)slots * length;
    if (squared_data > 0) {
        double relative = sqrt(squared_error / squared_data);
        stats->block_relative_sum += relative;
        stats->block_relative_max = fmax(stats->block_relative_max, relative);
        stats->blocks++;
    }
}

/* ---- the type table ------------------------------------------------------ */

static void names_find_their_types(void)
{
    const char *expected[] = {"q8", "q4", "kivi4", "kivi2"};
    for (int t = 0; t < TYPE_COUNT; t++) {
        kv_packed_type found = KV_PACKED_TYPE_COUNT;
        CHECK(kv_packed_find(expected[t], &found) && found == all_types[t]);
        CHECK(strcmp(kv_packed_name(all_types[t]), expected[t]) == 0);
        CHECK(strstr(kv_packed_names(), expected[t]) != NULL);
        CHECK(strlen(kv_packed_summary(all_types[t])) > 10);
    }
    kv_packed_type unused;
    CHECK(!kv_packed_find("q5", &unused) && !kv_packed_find("", &unused) && !kv_packed_find("Q8", &unused));
    CHECK(strcmp(kv_packed_names(), "q8, q4, kivi4, kivi2") == 0);
}

static void shape_check_names_the_bad_length(void)
{
    strata_error err = {0};
    for (int t = 0; t < TYPE_COUNT; t++)
        CHECK(kv_packed_check(all_types[t], 16, 256, 256, &err) == STRATA_OK);
    CHECK(kv_packed_check(KV_PACKED_KIVI2, 1, 32, 32, &err) == STRATA_OK);

    CHECK(kv_packed_check(KV_PACKED_KIVI2, 16, 80, 256, &err) == STRATA_E_INVALID_ARGUMENT);
    CHECK(strstr(err.message, "kivi2") != NULL && strstr(err.message, "key_length is 80") != NULL &&
          strstr(err.message, "multiple of 32") != NULL);
    CHECK(kv_packed_check(KV_PACKED_Q8, 16, 256, 100, &err) == STRATA_E_INVALID_ARGUMENT);
    CHECK(strstr(err.message, "value_length is 100") != NULL);
    CHECK(kv_packed_check(KV_PACKED_Q4, 0, 256, 256, &err) == STRATA_E_INVALID_ARGUMENT);
    CHECK(strstr(err.message, "block_tokens is 0") != NULL);
    CHECK(kv_packed_check(KV_PACKED_Q4, 16, 0, 256, &err) == STRATA_E_INVALID_ARGUMENT);
    CHECK(strstr(err.message, "key_length is 0") != NULL);
    CHECK(kv_packed_check((kv_packed_type)7, 16, 256, 256, &err) == STRATA_E_INVALID_ARGUMENT);
    CHECK(strstr(err.message, "q8, q4, kivi4, kivi2") != NULL);
}

/* Key and value lengths 256, 16 slots (Gemma 3's head size and the pool's
 * default block). Bytes of the key + value sections, and their ratio to f32
 * (32768 bytes) and f16 (16384 bytes) sections of the same block:
 *   q8    4352 + 4352 = 8704   0.266 of f32, 0.531 of f16   (8.5 bits a value)
 *   q4    2304 + 2304 = 4608   0.141,        0.281          (4.5 bits)
 *   kivi4 3072 + 2560 = 5632   0.172,        0.344          (keys 6 bits: 4 + 32 bits of scale and minimum
 *                                                            per channel over 16 slots; values 5 bits)
 *   kivi2 2048 + 1536 = 3584   0.109,        0.219          (keys 4 bits, values 3 bits)
 * A pool block adds 128 bytes of positions and scores to each. */
static void section_sizes_for_gemma_shape(void)
{
    static const struct {
        kv_packed_type type;
        uint64_t key_bytes, value_bytes;
    } expected[] = {
        {KV_PACKED_Q8, 4352, 4352},
        {KV_PACKED_Q4, 2304, 2304},
        {KV_PACKED_KIVI4, 3072, 2560},
        {KV_PACKED_KIVI2, 2048, 1536},
    };
    const double f32_bytes = 2.0 * 16 * 256 * 4, f16_bytes = f32_bytes / 2;
    for (size_t i = 0; i < sizeof expected / sizeof expected[0]; i++) {
        uint64_t keys = kv_packed_key_bytes(expected[i].type, 16, 256);
        uint64_t values = kv_packed_value_bytes(expected[i].type, 16, 256);
        CHECK_MESSAGE(keys == expected[i].key_bytes && values == expected[i].value_bytes,
                      "%s: %" PRIu64 " + %" PRIu64 " bytes", kv_packed_name(expected[i].type), keys, values);
        fprintf(stderr, "     %-5s 256/256/16: keys %4" PRIu64 " + values %4" PRIu64 " = %4" PRIu64
                        " bytes, %.3f of f32, %.3f of f16\n",
                kv_packed_name(expected[i].type), keys, values, keys + values, (double)(keys + values) / f32_bytes,
                (double)(keys + values) / f16_bytes);
    }
    /* The kivi keys' parameters do not grow with the slots, their codes do. */
    CHECK(kv_packed_key_bytes(KV_PACKED_KIVI2, 1, 64) == 4 * 64 + 16);
    CHECK(kv_packed_key_bytes(KV_PACKED_KIVI4, 32, 64) == 4 * 64 + 32 * 32);
    CHECK(kv_packed_value_bytes(KV_PACKED_KIVI2, 3, 64) == 3 * 2 * 12);
}

static void per_token_parts_and_quant_types(void)
{
    tensor_type tensor = TENSOR_F32;
    CHECK(kv_packed_tensor_type(KV_PACKED_Q8, KV_PACKED_KEYS, &tensor) && tensor == TENSOR_Q8_0);
    CHECK(kv_packed_tensor_type(KV_PACKED_Q8, KV_PACKED_VALUES, &tensor) && tensor == TENSOR_Q8_0);
    CHECK(kv_packed_tensor_type(KV_PACKED_Q4, KV_PACKED_KEYS, &tensor) && tensor == TENSOR_Q4_0);
    CHECK(kv_packed_tensor_type(KV_PACKED_Q4, KV_PACKED_VALUES, &tensor) && tensor == TENSOR_Q4_0);
    CHECK(kv_packed_tensor_type(KV_PACKED_KIVI4, KV_PACKED_VALUES, &tensor) && tensor == TENSOR_Q4_1);
    CHECK(!kv_packed_tensor_type(KV_PACKED_KIVI4, KV_PACKED_KEYS, &tensor));
    CHECK(!kv_packed_tensor_type(KV_PACKED_KIVI2, KV_PACKED_KEYS, &tensor));
    CHECK(!kv_packed_tensor_type(KV_PACKED_KIVI2, KV_PACKED_VALUES, &tensor));
    for (int t = 0; t < TYPE_COUNT; t++)
        CHECK(kv_packed_per_token(all_types[t], KV_PACKED_VALUES));
    CHECK(kv_packed_per_token(KV_PACKED_Q8, KV_PACKED_KEYS) && kv_packed_per_token(KV_PACKED_Q4, KV_PACKED_KEYS));
    CHECK(!kv_packed_per_token(KV_PACKED_KIVI4, KV_PACKED_KEYS) &&
          !kv_packed_per_token(KV_PACKED_KIVI2, KV_PACKED_KEYS));
}

/* ---- halves -------------------------------------------------------------- */

/* A q8 group whose scale is a given half and whose first code is 1 decodes
 * to that half exactly (d * 1): so the module's own half conversion can be
 * compared with quant_f16_to_f32 on every finite half. kivi keys (scale and
 * minimum per channel) go through the same conversion; checked on a sample. */
static void every_finite_half_decodes_like_quant(void)
{
    uint8_t row[34] = {0};
    row[2] = 1;
    float out[32];
    int mismatches = 0;
    for (uint32_t bits = 0; bits < 0x10000; bits++) {
        if ((bits & 0x7c00) == 0x7c00) /* infinities and NaNs are never written */
            continue;
        uint16_t half = (uint16_t)bits;
        memcpy(row, &half, 2);
        kv_packed_decode_value(KV_PACKED_Q8, 1, 32, row, 0, out);
        if (!same_float_bits(out[0], quant_f16_to_f32(half)) && mismatches++ == 0)
            CHECK_MESSAGE(false, "half 0x%04x decodes to %.9g, quant_f16_to_f32 says %.9g", bits, (double)out[0],
                          (double)quant_f16_to_f32(half));
    }
    CHECK(mismatches == 0);

    /* kivi4 keys, whose scales and minimums take another conversion:
     * channel 0 has code 1, minimum 0 and scale h (decodes to h), channel 1
     * code 0, scale 0 and minimum h (decodes to 0 + h). Scales are never negative. */
    uint8_t keys[4 * 32 + 16] = {0};
    keys[128] = 1;
    int key_mismatches = 0;
    for (uint32_t bits = 0; bits < 0x10000; bits++) {
        if ((bits & 0x7c00) == 0x7c00)
            continue;
        uint16_t half = (uint16_t)bits, zero = 0;
        bool positive = (bits & 0x8000) == 0;
        memcpy(keys + 0, positive ? &half : &zero, 2);
        memcpy(keys + 64 + 2, &half, 2);
        kv_packed_decode_key(KV_PACKED_KIVI4, 1, 32, keys, 0, out);
        bool scale_ok = !positive || same_float_bits(out[0], quant_f16_to_f32(half));
        bool minimum_ok = same_float_bits(out[1], 0.0f + quant_f16_to_f32(half));
        if ((!scale_ok || !minimum_ok) && key_mismatches++ == 0)
            CHECK_MESSAGE(false, "kivi4 key half 0x%04x: as scale %.9g, as minimum %.9g, quant_f16_to_f32 says %.9g",
                          bits, (double)out[0], (double)out[1], (double)quant_f16_to_f32(half));
    }
    CHECK(key_mismatches == 0);
}

/* kivi never stores a subnormal scale or minimum (kv/packed.h): its key
 * decoder converts them with a multiply that is slow on subnormal operands. */
static bool kivi_halves_are_normal_or_zero(kv_packed_type type, int32_t block_tokens, int32_t key_length,
                                           int32_t value_length, const uint8_t *key_section,
                                           const uint8_t *value_section)
{
    bool normal = true;
    for (int32_t i = 0; i < 2 * key_length; i++) {
        uint16_t half;
        memcpy(&half, key_section + 2 * i, 2);
        normal = normal && ((half & 0x7c00) != 0 || (half & 0x3ff) == 0);
    }
    uint32_t group_bytes = type == KV_PACKED_KIVI4 ? 20 : 12;
    for (int32_t g = 0; g < block_tokens * value_length / 32; g++)
        for (int h = 0; h < 2; h++) {
            uint16_t half;
            memcpy(&half, value_section + g * group_bytes + 2 * h, 2);
            normal = normal && ((half & 0x7c00) != 0 || (half & 0x3ff) == 0);
        }
    return normal;
}

/* ---- round trips of random blocks ---------------------------------------- */

typedef enum data_kind {
    DATA_UNIFORM,       /* uniform in [-scale, scale] */
    DATA_POSITIVE,      /* uniform in [scale, 2 scale]: a group far from zero */
    DATA_CONSTANT_ROWS, /* each row one repeated value */
    DATA_ZEROS,
    DATA_OUTLIERS,      /* uniform, plus a few values 1000 times larger */
    DATA_TIES,          /* each group of 32 holds +scale and -scale */
    DATA_GAUSSIAN_CHANNELS, /* per-channel offsets (as keys have) plus noise */
    DATA_KIND_COUNT
} data_kind;

static void fill_block(data_kind kind, double scale, int32_t slots, int32_t length, float *data)
{
    double channel_offset[MAX_LENGTH];
    for (int32_t i = 0; i < length; i++)
        channel_offset[i] = (random_unit() * 2 - 1) * 8 * scale;
    for (int32_t s = 0; s < slots; s++) {
        float constant = (float)((random_unit() * 2 - 1) * scale);
        for (int32_t i = 0; i < length; i++) {
            double u = random_unit() * 2 - 1, v;
            switch (kind) {
            case DATA_UNIFORM: v = u * scale; break;
            case DATA_POSITIVE: v = (1.5 + u / 2) * scale; break;
            case DATA_CONSTANT_ROWS: v = constant; break;
            case DATA_ZEROS: v = 0; break;
            case DATA_OUTLIERS: v = u * scale * (random_below(64) == 0 ? 1000 : 1); break;
            case DATA_TIES: v = i % 32 == 3 ? scale : i % 32 == 17 ? -scale : u * scale; break;
            case DATA_GAUSSIAN_CHANNELS:
            default: v = channel_offset[i] + u * scale; break;
            }
            data[(int64_t)s * length + i] = (float)v;
        }
    }
}

static uint64_t test_seed(void)
{
    const char *text = getenv("STRATA_TEST_SEED");
    return text != NULL ? strtoull(text, NULL, 10) : (uint64_t)time(NULL);
}

/* Bytes of one slot's row of a per-token part. */
static uint64_t row_bytes_of(kv_packed_type type, kv_packed_part part, int32_t length)
{
    return part == KV_PACKED_KEYS ? kv_packed_key_bytes(type, 1, length) : kv_packed_value_bytes(type, 1, length);
}

static void random_blocks_decode_within_bounds(void)
{
    uint64_t seed = test_seed();
    random_state = seed;
    fprintf(stderr, "     seed %" PRIu64 " (STRATA_TEST_SEED=%" PRIu64 " replays it)\n", seed, seed);
    static const int32_t block_token_choices[] = {1, 4, 16, 16, 32};
    static float keys[MAX_BLOCK_TOKENS * MAX_LENGTH], values[MAX_BLOCK_TOKENS * MAX_LENGTH];
    static float all_rows[MAX_BLOCK_TOKENS * MAX_LENGTH];
    static sections block, one_by_one;
    error_stats stats[TYPE_COUNT][2] = {{{0}}};
    for (int trial = 0; trial < 1500; trial++) {
        kv_packed_type type = all_types[trial % TYPE_COUNT];
        int32_t block_tokens = block_token_choices[random_below(5)];
        int32_t key_length = 32 * (int32_t)(1 + random_below(MAX_LENGTH / 32));
        int32_t value_length = 32 * (int32_t)(1 + random_below(8));
        int32_t slots = random_below(4) == 0 ? (int32_t)random_below((uint32_t)block_tokens + 1) : block_tokens;
        data_kind kind = (data_kind)random_below(DATA_KIND_COUNT);
        double scale = pow(10.0, -6 + 10 * random_unit()); /* 1e-6 .. 1e4 */
        if (kind == DATA_OUTLIERS && scale > 50)
            scale = 50; /* outliers stay inside the half range */
        fill_block(kind, scale, slots, key_length, keys);
        fill_block((data_kind)random_below(DATA_KIND_COUNT), kind == DATA_OUTLIERS ? 1 : scale, slots, value_length,
                   values);
        memset(&block, 0xa5, sizeof block);
        kv_packed_encode_block(type, block_tokens, key_length, value_length, keys, values, slots, block.keys,
                               block.values);
        char where[96];
        snprintf(where, sizeof where, "trial %d (kind %d, scale %.3g, %" PRId32 "/%" PRId32 " slots)", trial,
                 (int)kind, scale, slots, block_tokens);
        check_part(type, KV_PACKED_KEYS, block_tokens, key_length, keys, slots, block.keys, &stats[trial % TYPE_COUNT][0],
                   where);
        check_part(type, KV_PACKED_VALUES, block_tokens, value_length, values, slots, block.values,
                   &stats[trial % TYPE_COUNT][1], where);

        if (type == KV_PACKED_KIVI4 || type == KV_PACKED_KIVI2)
            CHECK_MESSAGE(kivi_halves_are_normal_or_zero(type, block_tokens, key_length, value_length, block.keys,
                                                         block.values),
                          "%s: %s wrote a subnormal half", where, kv_packed_name(type));

        /* All slots at once decode to the same floats as one slot at a time. */
        float row[MAX_LENGTH];
        kv_packed_decode_keys(type, block_tokens, key_length, block.keys, slots, all_rows);
        for (int32_t s = 0; s < slots; s++) {
            kv_packed_decode_key(type, block_tokens, key_length, block.keys, s, row);
            CHECK(memcmp(row, all_rows + (int64_t)s * key_length, (size_t)key_length * sizeof(float)) == 0);
        }
        kv_packed_decode_values(type, block_tokens, value_length, block.values, slots, all_rows);
        for (int32_t s = 0; s < slots; s++) {
            kv_packed_decode_value(type, block_tokens, value_length, block.values, s, row);
            CHECK(memcmp(row, all_rows + (int64_t)s * value_length, (size_t)value_length * sizeof(float)) == 0);
        }

        /* Per-token parts: encoding slot by slot writes the same rows; the
         * rows after the encoded slots are zero. */
        for (int p = 0; p < 2; p++) {
            kv_packed_part part = p == 0 ? KV_PACKED_KEYS : KV_PACKED_VALUES;
            if (!kv_packed_per_token(type, part))
                continue;
            int32_t length = p == 0 ? key_length : value_length;
            const float *data = p == 0 ? keys : values;
            uint8_t *expected = p == 0 ? block.keys : block.values, *actual = p == 0 ? one_by_one.keys : one_by_one.values;
            uint64_t row_bytes = row_bytes_of(type, part, length);
            for (int32_t s = 0; s < slots; s++) {
                if (p == 0)
                    kv_packed_encode_key(type, block_tokens, length, data + (int64_t)s * length, s, actual);
                else
                    kv_packed_encode_value(type, block_tokens, length, data + (int64_t)s * length, s, actual);
            }
            CHECK(memcmp(expected, actual, (size_t)(row_bytes * (uint64_t)slots)) == 0);
            bool zero = true;
            for (uint64_t b = row_bytes * (uint64_t)slots; b < row_bytes * (uint64_t)block_tokens; b++)
                zero = zero && expected[b] == 0;
            CHECK(zero);
        }
    }
    for (int t = 0; t < TYPE_COUNT; t++)
        fprintf(stderr, "     %-5s random blocks: largest error / bound: keys %.3f, values %.3f\n",
                kv_packed_name(all_types[t]), stats[t][0].worst_bound_ratio, stats[t][1].worst_bound_ratio);
    /* The bounds are not loose: somewhere the error comes close to them. */
    for (int t = 0; t < TYPE_COUNT; t++)
        CHECK(stats[t][0].worst_bound_ratio > 0.9 && stats[t][1].worst_bound_ratio > 0.9);
}

/* ---- hand-made edges ------------------------------------------------------ */

static void encode_one_row(kv_packed_type type, const float *row, int32_t length, sections *out)
{
    kv_packed_encode_block(type, 1, length, length, row, row, 1, out->keys, out->values);
}

/* Q4_0 maps the value of largest magnitude m to code 0 (x' = m exactly) and
 * has no code for -m: a value there is one full step off, and the bound says so. */
static void q4_far_end_is_one_step_off(void)
{
    float row[32] = {0}, out[32];
    row[0] = 8.0f;
    row[1] = -8.0f;
    row[2] = -7.5f;
    row[3] = 4.0f;
    row[4] = 0.49f;
    static sections packed;
    encode_one_row(KV_PACKED_Q4, row, 32, &packed);
    kv_packed_decode_value(KV_PACKED_Q4, 1, 32, packed.values, 0, out);
    CHECK(out[0] == 8.0f && out[1] == -7.0f && out[2] == -7.0f && out[3] == 4.0f && out[4] == 0.0f);
    CHECK(kv_packed_error_bound(KV_PACKED_Q4, -8, 8, -8) >= 1.0 && kv_packed_error_bound(KV_PACKED_Q4, -8, 8, -8) < 1.001);
    CHECK(kv_packed_error_bound(KV_PACKED_Q4, -8, 8, 8) < 0.51);
    CHECK(kv_packed_error_bound(KV_PACKED_Q4, -8, 8, -7.5f) >= 0.5);
    /* The same with the negative value larger: now the positive end is clamped. */
    row[0] = 6.0f;
    row[1] = -8.0f;
    encode_one_row(KV_PACKED_Q4, row, 32, &packed);
    kv_packed_decode_value(KV_PACKED_Q4, 1, 32, packed.values, 0, out);
    CHECK(out[1] == -8.0f && out[0] == 6.0f);
    row[0] = 7.9f;
    encode_one_row(KV_PACKED_Q4, row, 32, &packed);
    kv_packed_decode_value(KV_PACKED_Q4, 1, 32, packed.values, 0, out);
    CHECK(out[0] == 7.0f && out[1] == -8.0f);
    CHECK(fabs(7.9 - 7.0) <= kv_packed_error_bound(KV_PACKED_Q4, -8.0f, 7.9f, 7.9f));
}

/* q8 of a row 0, 1, ..., 31 scaled to 127 at its end: exact on the grid. */
static void q8_grid_values_are_exact(void)
{
    float row[32], out[32];
    for (int i = 0; i < 32; i++)
        row[i] = (float)(4 * i - 64); /* -64 .. 60; max |x| 64, d = 64/127 */
    row[31] = 127.0f;                 /* d = 1 */
    static sections packed;
    encode_one_row(KV_PACKED_Q8, row, 32, &packed);
    kv_packed_decode_key(KV_PACKED_Q8, 1, 32, packed.keys, 0, out);
    CHECK(memcmp(row, out, sizeof row) == 0);
    uint16_t d;
    memcpy(&d, packed.keys, 2);
    CHECK(quant_f16_to_f32(d) == 1.0f);
}

/* kivi: a constant group decodes to its value (exactly when the value is a
 * half, within the bound otherwise), zeros to zeros; the stored minimum is
 * never above the group's minimum and minimum + levels * scale never below
 * its maximum. */
static void kivi_constant_and_zero_groups(void)
{
    static const float constants[] = {0.0f, 0.5f, -3.0f, 3.3f, -1e-7f, 65504.0f, -65504.0f, 1e-3f};
    static float keys[16 * 64], values[16 * 64], out[64];
    static sections packed;
    for (int k = 0; k < 2; k++) {
        kv_packed_type type = k == 0 ? KV_PACKED_KIVI4 : KV_PACKED_KIVI2;
        for (size_t c = 0; c < sizeof constants / sizeof constants[0]; c++) {
            for (int i = 0; i < 16 * 64; i++)
                keys[i] = values[i] = constants[c];
            kv_packed_encode_block(type, 16, 64, 64, keys, values, 16, packed.keys, packed.values);
            bool is_half = quant_f16_to_f32(quant_f32_to_f16(constants[c])) == constants[c];
            for (int32_t s = 0; s < 16; s++) {
                kv_packed_decode_key(type, 16, 64, packed.keys, s, out);
                for (int i = 0; i < 64; i++) {
                    CHECK(fabs((double)out[i] - constants[c]) <=
                          kv_packed_error_bound(type, constants[c], constants[c], constants[c]));
                    if (is_half)
                        CHECK(out[i] == constants[c]);
                }
                kv_packed_decode_value(type, 16, 64, packed.values, s, out);
                for (int i = 0; i < 64; i++)
                    if (is_half)
                        CHECK(out[i] == constants[c]);
            }
        }
    }
    /* The range is covered: one channel from -1 to 2.1 (not halves), 2 bits. */
    for (int32_t s = 0; s < 16; s++)
        for (int i = 0; i < 32; i++)
            keys[s * 32 + i] = -1.0001f + 3.1f * (float)s / 15.0f;
    kv_packed_encode_block(KV_PACKED_KIVI2, 16, 32, 32, keys, keys, 16, packed.keys, packed.values);
    uint16_t scale_half, min_half;
    memcpy(&scale_half, packed.keys, 2);
    memcpy(&min_half, packed.keys + 64, 2);
    CHECK(quant_f16_to_f32(min_half) <= keys[0]);
    CHECK(quant_f16_to_f32(min_half) + 3.0 * quant_f16_to_f32(scale_half) >= keys[15 * 32]);
}

/* Values outside a type's range get no bound. */
static void bound_is_infinite_outside_the_range(void)
{
    CHECK(isinf(kv_packed_error_bound(KV_PACKED_KIVI4, -70000.0f, 0.0f, 0.0f)));
    CHECK(isinf(kv_packed_error_bound(KV_PACKED_KIVI2, 0.0f, 70000.0f, 0.0f)));
    CHECK(isfinite(kv_packed_error_bound(KV_PACKED_Q8, 0.0f, 70000.0f, 0.0f)));
    CHECK(isinf(kv_packed_error_bound(KV_PACKED_Q8, 0.0f, 1e7f, 0.0f)));
    CHECK(isinf(kv_packed_error_bound(KV_PACKED_Q4, -1e6f, 0.0f, 0.0f)));
}

/* ---- layouts: quant/'s kernels read our rows ------------------------------ */

static void quant_kernels_read_packed_rows(void)
{
    random_state = 12345;
    static float data[16 * 256], ours[256], theirs[256], x[256];
    static sections packed;
    const quant_kernels *levels[] = {quant_kernels_for_level(SIMD_SCALAR), quant_kernels_selected()};
    for (int i = 0; i < 256; i++)
        x[i] = (float)(random_unit() * 2 - 1);
    for (int t = 0; t < TYPE_COUNT; t++) {
        for (int trial = 0; trial < 20; trial++) {
            data_kind kind = (data_kind)(trial % DATA_KIND_COUNT);
            fill_block(kind, pow(10.0, -4 + 6 * random_unit()), 16, 256, data);
            kv_packed_encode_block(all_types[t], 16, 256, 256, data, data, 16, packed.keys, packed.values);
            for (int p = 0; p < 2; p++) {
                kv_packed_part part = p == 0 ? KV_PACKED_KEYS : KV_PACKED_VALUES;
                tensor_type tensor;
                if (!kv_packed_tensor_type(all_types[t], part, &tensor))
                    continue;
                const uint8_t *section = p == 0 ? packed.keys : packed.values;
                uint64_t row_bytes = tensor_row_bytes(tensor, 256);
                CHECK(row_bytes == row_bytes_of(all_types[t], part, 256));
                for (int32_t s = 0; s < 16; s++) {
                    if (p == 0)
                        kv_packed_decode_key(all_types[t], 16, 256, section, s, ours);
                    else
                        kv_packed_decode_value(all_types[t], 16, 256, section, s, ours);
                    for (int l = 0; l < 2; l++) {
                        levels[l]->dequantize[tensor](section + s * row_bytes, theirs, 256);
                        CHECK_MESSAGE(memcmp(ours, theirs, sizeof ours) == 0, "%s %s slot %d: %s dequantize differs",
                                      kv_packed_name(all_types[t]), p == 0 ? "keys" : "values", s,
                                      simd_level_name(levels[l]->level));
                        /* And the dot kernel gives the dot of our floats, up to summation order. */
                        double dot = 0, magnitude = 0;
                        for (int i = 0; i < 256; i++) {
                            dot += (double)ours[i] * x[i];
                            magnitude += fabs((double)ours[i] * x[i]);
                        }
                        float kernel_dot = levels[l]->dot[tensor](section + s * row_bytes, x, 256);
                        CHECK(fabs(kernel_dot - dot) <= 1e-4 * magnitude + 1e-30);
                    }
                }
            }
        }
    }
}

/* ---- decode speed (printed, not checked) --------------------------------- */

static double seconds_now(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec + (double)now.tv_nsec * 1e-9;
}

/* Nanoseconds per 256-value row: the best of 50 rounds of 512 rows, so a
 * busy machine disturbs it less. */
static void decode_speed_is_reported(void)
{
    static float data[16 * 256], out[16 * 256];
    static sections packed;
    random_state = 99;
    fill_block(DATA_GAUSSIAN_CHANNELS, 1.0, 16, 256, data);
    volatile float sink = 0;
    for (int t = 0; t < TYPE_COUNT; t++) {
        kv_packed_encode_block(all_types[t], 16, 256, 256, data, data, 16, packed.keys, packed.values);
        double best[3] = {INFINITY, INFINITY, INFINITY}; /* key row, value row, key row of a whole-block decode */
        for (int round = 0; round < 50; round++) {
            double start = seconds_now();
            for (int r = 0; r < 512; r++) {
                kv_packed_decode_key(all_types[t], 16, 256, packed.keys, r % 16, out);
                sink += out[r % 256];
            }
            double middle = seconds_now();
            for (int r = 0; r < 512; r++) {
                kv_packed_decode_value(all_types[t], 16, 256, packed.values, r % 16, out);
                sink += out[r % 256];
            }
            double end = seconds_now();
            for (int r = 0; r < 512 / 16; r++) {
                kv_packed_decode_keys(all_types[t], 16, 256, packed.keys, 16, out);
                sink += out[r % 256];
            }
            double last = seconds_now();
            best[0] = fmin(best[0], (middle - start) * 1e9 / 512);
            best[1] = fmin(best[1], (end - middle) * 1e9 / 512);
            best[2] = fmin(best[2], (last - end) * 1e9 / 512);
        }
        fprintf(stderr, "     %-5s decode of a 256-value row: key %.0f ns (%.0f ns a row in whole-block decodes), "
                        "value %.0f ns\n",
                kv_packed_name(all_types[t]), best[0], best[2], best[1]);
    }
    (void)sink;
}

/* ---- real KV: Gemma 3 270M ----------------------------------------------- */

/* Some English prose, a few hundred tokens: what a session's KV looks like on text. */
static const char real_text[] =
    "The harbour town woke slowly. Fishing boats came in before dawn, their holds full of mackerel and "
    "herring, and the gulls followed them in wide, complaining circles. By seven the market hall was loud "
    "with buyers from the inland villages, who argued over prices in three dialects and paid in coins that "
    "had not changed design in a hundred years. The baker on the corner of Rope Street opened at half past "
    "six; his rye loaves were gone by eight. Children walked to the school on the hill in pairs, carrying "
    "slates and the small cakes their grandmothers insisted on. In the afternoon the wind turned, as it "
    "always did in late September, and the sea grew a darker shade of green. The harbour master, a patient "
    "woman named Ilse Varga, wrote the tides into a ledger that went back to 1871: high water at 14:22, "
    "a height of 3.4 metres, wind from the north-west at force five. Nobody read the ledger except her and, "
    "once a year, an inspector from the capital who checked that each page was signed. When the storm of "
    "1953 flooded the lower streets, the ledger had been carried to the church tower, and it survived with "
    "only a water stain on the cover. Her predecessor had done the same, and his predecessor before him. "
    "In the evening the lamps along the quay were lit one by one, the boats were tied up for the night, and "
    "the town settled into the low murmur of kitchens and radios. A ferry left for the islands at nine, "
    "carrying mail, two cars, a crate of oranges and a schoolteacher returning from her sister's wedding. "
    "The lighthouse keeper on the outer rock counted its flashes out of habit: one long, two short, "
    "repeated every twelve seconds, as it had been since his father's time.";

/* The model's path: $STRATA_MODEL, else the cache (scripts/fetch-model.sh puts it there). */
static void model_path(char *path, size_t capacity)
{
    const char *model = getenv("STRATA_MODEL"), *cache = getenv("STRATA_CACHE"), *home = getenv("HOME");
    if (model != NULL && model[0] != '\0')
        snprintf(path, capacity, "%s", model);
    else if (cache != NULL && cache[0] != '\0')
        snprintf(path, capacity, "%s/models/gemma-3-270m-q4_k_m.gguf", cache);
    else
        snprintf(path, capacity, "%s/.cache/strata/models/gemma-3-270m-q4_k_m.gguf", home != NULL ? home : ".");
}

/* Runs the model over the text; returns the session (and the model in *model), or NULL with a failure recorded. */
static strata_session *session_over_text(const char *path, strata_model **model)
{
    strata_error err = {0};
    strata_model_options options = {.threads = 0};
    *model = NULL;
    if (strata_model_open(path, &options, model, &err) != STRATA_OK) {
        CHECK_MESSAGE(false, "%s: %s", path, err.message);
        return NULL;
    }
    int32_t *tokens = NULL;
    size_t count = 0;
    strata_session *session = NULL;
    strata_session_options session_options = {.context_length = 1024};
    bool ok = strata_tokenize(*model, real_text, strlen(real_text), true, false, &tokens, &count, &err) == STRATA_OK &&
              strata_session_create(*model, &session_options, &session, &err) == STRATA_OK &&
              strata_session_append(session, tokens, count, false, &err) == STRATA_OK;
    CHECK_MESSAGE(ok, "%s", err.message);
    CHECK_MESSAGE(count >= 200, "the text is only %zu tokens", count);
    free(tokens);
    if (!ok) {
        strata_session_destroy(session);
        strata_model_close(*model);
        *model = NULL;
        return NULL;
    }
    return session;
}

/* Packs every block of the session's KV with every type, checks each
 * element against its bound and prints the relative errors. */
static void measure_session_kv(strata_model *model, strata_session *session)
{
    kv_seq *seq = session_kv_seq(session);
    kv_pool *pool = kv_seq_pool(seq);
    const kv_pool_config *config = kv_pool_configuration(pool);
    int32_t block_tokens = config->block_tokens, key_length = config->key_length, value_length = config->value_length;
    strata_error err = {0};
    CHECK_MESSAGE(kv_packed_check(KV_PACKED_Q8, block_tokens, key_length, value_length, &err) == STRATA_OK, "%s",
                  err.message);
    if (key_length > MAX_LENGTH || value_length > MAX_LENGTH || block_tokens > MAX_BLOCK_TOKENS ||
        err.status != STRATA_OK) {
        CHECK_MESSAGE(false, "shape %" PRId32 "/%" PRId32 "/%" PRId32 " is beyond this test's buffers", key_length,
                      value_length, block_tokens);
        return;
    }

    static float keys[MAX_BLOCK_TOKENS * MAX_LENGTH], values[MAX_BLOCK_TOKENS * MAX_LENGTH];
    static sections packed;
    error_stats stats[TYPE_COUNT][2] = {{{0}}};
    int32_t kv_heads = 0;
    int32_t layers = strata_model_kv_layout(model, &kv_heads);
    int64_t blocks_seen = 0, slots_seen = 0;
    for (int32_t layer = 0; layer < layers; layer++) {
        for (int32_t head = 0; head < kv_heads; head++) {
            const kv_block_table *table = kv_seq_table(seq, layer, head);
            for (int32_t b = 0; (int64_t)b * block_tokens < table->slot_count; b++) {
                int32_t slots = (int32_t)(table->slot_count - (int64_t)b * block_tokens);
                if (slots > block_tokens)
                    slots = block_tokens;
                /* The session has no precision policy: its blocks are in the pool's base type. */
                kv_storage_load(config->storage, kv_block_keys_const(pool, table->blocks[b]), keys,
                                (int64_t)slots * key_length);
                kv_storage_load(config->storage, kv_block_values_const(pool, table->blocks[b]), values,
                                (int64_t)slots * value_length);
                blocks_seen++;
                slots_seen += slots;
                char where[64];
                snprintf(where, sizeof where, "layer %" PRId32 " head %" PRId32 " block %" PRId32, layer, head, b);
                for (int t = 0; t < TYPE_COUNT; t++) {
                    kv_packed_encode_block(all_types[t], block_tokens, key_length, value_length, keys, values, slots,
                                           packed.keys, packed.values);
                    check_part(all_types[t], KV_PACKED_KEYS, block_tokens, key_length, keys, slots, packed.keys,
                               &stats[t][0], where);
                    check_part(all_types[t], KV_PACKED_VALUES, block_tokens, value_length, values, slots,
                               packed.values, &stats[t][1], where);
                }
            }
        }
    }
    fprintf(stderr, "     Gemma 3 270M, %zu tokens: %" PRId64 " blocks (%" PRId32 " layers x %" PRId32
                    " KV heads, %" PRId64 " slots), keys %" PRId32 " and values %" PRId32 " long\n",
            strata_session_length(session), blocks_seen, layers, kv_heads, slots_seen, key_length, value_length);
    fprintf(stderr, "     relative error rmse/rms:  keys: overall  block mean  block max | values: overall  block mean  "
                    "block max | worst error/bound keys, values\n");
    for (int t = 0; t < TYPE_COUNT; t++) {
        const error_stats *k = &stats[t][0], *v = &stats[t][1];
        fprintf(stderr, "     %-5s                         %.5f     %.5f     %.5f |          %.5f     %.5f     %.5f "
                        "| %.3f, %.3f\n",
                kv_packed_name(all_types[t]), sqrt(k->squared_error / k->squared_data),
                k->block_relative_sum / (double)k->blocks, k->block_relative_max,
                sqrt(v->squared_error / v->squared_data), v->block_relative_sum / (double)v->blocks,
                v->block_relative_max, k->worst_bound_ratio, v->worst_bound_ratio);
        CHECK(k->violations == 0 && v->violations == 0);
        CHECK(k->elements == slots_seen * key_length && v->elements == slots_seen * value_length);
    }
    CHECK(blocks_seen >= (int64_t)layers * kv_heads * 200 / block_tokens);
    /* Sanity of the measured errors (a broken codec is off by far more): q8
     * well under 1%, 4-bit types under 15%, kivi2 under 50%. */
    CHECK(sqrt(stats[0][0].squared_error / stats[0][0].squared_data) < 0.01);
    CHECK(sqrt(stats[0][1].squared_error / stats[0][1].squared_data) < 0.01);
    for (int t = 1; t < 3; t++)
        for (int p = 0; p < 2; p++)
            CHECK(sqrt(stats[t][p].squared_error / stats[t][p].squared_data) < 0.15);
    for (int p = 0; p < 2; p++)
        CHECK(sqrt(stats[3][p].squared_error / stats[3][p].squared_data) < 0.5);
}

static void real_gemma_kv_within_bounds(void)
{
    char path[4096];
    model_path(path, sizeof path);
    if (access(path, R_OK) != 0) {
        CHECK_MESSAGE(false, "the model %s is missing: run scripts/fetch-model.sh (it fetches Gemma 3 270M into "
                             "the cache), or set STRATA_MODEL to a copy", path);
        return;
    }
    strata_model *model = NULL;
    strata_session *session = session_over_text(path, &model);
    if (session == NULL)
        return;
    measure_session_kv(model, session);
    strata_session_destroy(session);
    strata_model_close(model);
}

int main(void)
{
    RUN_CASE(names_find_their_types);
    RUN_CASE(shape_check_names_the_bad_length);
    RUN_CASE(section_sizes_for_gemma_shape);
    RUN_CASE(per_token_parts_and_quant_types);
    RUN_CASE(every_finite_half_decodes_like_quant);
    RUN_CASE(random_blocks_decode_within_bounds);
    RUN_CASE(q4_far_end_is_one_step_off);
    RUN_CASE(q8_grid_values_are_exact);
    RUN_CASE(kivi_constant_and_zero_groups);
    RUN_CASE(bound_is_infinite_outside_the_range);
    RUN_CASE(quant_kernels_read_packed_rows);
    RUN_CASE(decode_speed_is_reported);
    RUN_CASE(real_gemma_kv_within_bounds);
    TEST_EXIT();
}
