/* kv/packed.c: packed low-bit KV sections: encoding, decoding, error bounds.
 *
 * Four row codecs do the per-token work, each on groups of 32 values: Q8_0,
 * Q4_0 and Q4_1 (quant/'s layouts, so its kernels read our rows) and a 2-bit
 * asymmetric group of our own. A type is a table entry naming the codec of
 * its keys and of its values; kivi's keys have no row codec, they are
 * quantized per channel over the whole block by the kivi_keys_* functions.
 *
 * Scales and minimums are rounded to halves in the direction that keeps a
 * group's range covered (kv/packed.h), and codes are computed against the
 * rounded halves, so the error bounds of kv_packed_error_bound hold for what
 * is stored, not for an f32 scale that never reaches memory. Decoding is the
 * hot path (attention decodes every row it reads): plain loops over bytes,
 * no allocation, a branch-free half conversion for the finite halves this
 * module writes. */
#include "kv/packed.h"

#include <assert.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "base/error.h"
#include "quant/kernels.h"

enum {
    PACKED_MAX_BLOCK_TOKENS = 1 << 16, /* the pool's limits */
    PACKED_MAX_VECTOR_LENGTH = 1 << 20,
    HALF_MAX_BITS = 0x7bff, /* 65504, the largest finite half */
    HALF_MIN_NORMAL_BITS = 0x0400, /* 2^-14, the smallest normal half */
};

static const double HALF_MAX = 65504.0;

/* ---- halves ------------------------------------------------------------- */

static float float_from_bits(uint32_t bits)
{
    float value;
    memcpy(&value, &bits, sizeof value);
    return value;
}

static uint16_t read_half(const uint8_t *bytes)
{
    uint16_t half;
    memcpy(&half, bytes, sizeof half);
    return half;
}

static void write_half(uint8_t *bytes, uint16_t half)
{
    memcpy(bytes, &half, sizeof half);
}

/* A finite half as a float, without branches: the exponent and mantissa
 * move to their float positions and the exponent is rebiased; a subnormal
 * half (exponent 0) is its mantissa times 2^-24, an exact float. Both are
 * computed and a mask picks one, so loops over halves vectorize. Equal to
 * quant_f16_to_f32 for every finite half (the tests check all of them);
 * this module never writes an infinity or NaN. */
static inline float half_to_float(uint16_t half)
{
    uint32_t magnitude = (uint32_t)(half & 0x7fff) << 13;
    uint32_t sign = (uint32_t)(half & 0x8000) << 16;
    uint32_t normal = magnitude + ((127u - 15u) << 23);
    float subnormal = (float)(int32_t)(half & 0x3ff) * 0x1p-24f;
    uint32_t subnormal_bits;
    memcpy(&subnormal_bits, &subnormal, sizeof subnormal_bits);
    uint32_t is_subnormal = 0u - (uint32_t)((magnitude & 0x0f800000u) == 0);
    return float_from_bits((normal & ~is_subnormal) | (subnormal_bits & is_subnormal) | sign);
}

/* A half that is zero or normal (not subnormal, not infinite) as a float:
 * its bits moved to float positions, times 2^112 to rebias the exponent.
 * Exact for every finite half (a subnormal one too, but as a float
 * multiply with a subnormal operand, slow on many x86 cores): a few
 * operations where half_to_float needs a dozen, for the kivi key
 * parameters, which are never subnormal and are converted for every row. */
static inline float half_to_float_normal(uint16_t half)
{
    float value = float_from_bits((uint32_t)(half & 0x7fff) << 13) * 0x1p112f;
    uint32_t bits;
    memcpy(&bits, &value, sizeof bits);
    return float_from_bits(bits | (uint32_t)(half & 0x8000) << 16);
}

/* The same for a half known to be positive or +0 (kivi scales): no sign to move. */
static inline float positive_half_to_float_normal(uint16_t half)
{
    return float_from_bits((uint32_t)half << 13) * 0x1p112f;
}

/* The next half above or below a finite one (never past +-65504: callers
 * only step towards a value inside the range). */
static uint16_t half_step_up(uint16_t half)
{
    if (half == 0x8000)
        return 0x0001;
    return (half & 0x8000) ? (uint16_t)(half - 1) : (uint16_t)(half + 1);
}

static uint16_t half_step_down(uint16_t half)
{
    if (half == 0x0000)
        return 0x8001;
    return (half & 0x8000) ? (uint16_t)(half + 1) : (uint16_t)(half - 1);
}

/* The smallest half >= value (65504 when value is above it): at most one
 * half spacing above value, which is what the error bounds assume. */
static uint16_t half_at_least(double value)
{
    if (value > HALF_MAX)
        return HALF_MAX_BITS;
    if (value < -HALF_MAX)
        value = -HALF_MAX;
    uint16_t half = quant_f32_to_f16((float)value);
    if ((double)half_to_float(half) < value)
        half = half_step_up(half);
    return half;
}

/* The largest half <= value (-65504 when value is below it). */
static uint16_t half_at_most(double value)
{
    if (value < -HALF_MAX)
        return (uint16_t)(0x8000 | HALF_MAX_BITS);
    if (value > HALF_MAX)
        value = HALF_MAX;
    uint16_t half = quant_f32_to_f16((float)value);
    if ((double)half_to_float(half) > value)
        half = half_step_down(half);
    return half;
}

/* ---- codes inside a group of 32 ----------------------------------------
 * 8 bits: byte j is code j. 4 bits: byte j holds code j (low nibble) and
 * code j + 16 (high nibble). 2 bits: byte j % 8 holds code j at bit 2 * (j / 8). */

static int round_clamped(float t, int lowest, int highest)
{
    float rounded = roundf(t);
    if (rounded < (float)lowest)
        return lowest;
    if (rounded > (float)highest)
        return highest;
    return (int)rounded;
}

static void pack_codes(int bits, const uint8_t codes[KV_PACKED_GROUP], uint8_t *out)
{
    if (bits == 4) {
        for (int j = 0; j < 16; j++)
            out[j] = (uint8_t)(codes[j] | codes[j + 16] << 4);
    } else {
        assert(bits == 2);
        for (int j = 0; j < 8; j++)
            out[j] = (uint8_t)(codes[j] | codes[j + 8] << 2 | codes[j + 16] << 4 | codes[j + 24] << 6);
    }
}

/* Writes the 32 codes of a packed 4- or 2-bit group as bytes. The 2-bit
 * planes are cut out of the group's 8 bytes as one 64-bit word, two planes
 * at a time in a 16-byte vector (GCC's generic vector extension, plain
 * shifts and masks on any target): byte-by-byte loops do not vectorize, and
 * four 8-byte stores read back as 16-byte loads stall store forwarding,
 * which doubled the time of a kivi2 row. */
static inline void unpack_codes(int bits, const uint8_t *restrict packed, uint8_t *restrict codes)
{
    if (bits == 4) {
        for (int j = 0; j < 16; j++) {
            codes[j] = packed[j] & 15;
            codes[j + 16] = packed[j] >> 4;
        }
    } else {
        typedef uint64_t u64x2 __attribute__((vector_size(16)));
        uint64_t word;
        memcpy(&word, packed, sizeof word);
        const u64x2 mask = {0x0303030303030303ull, 0x0303030303030303ull};
        u64x2 both = {word, word};
        u64x2 low = (both >> (u64x2){0, 2}) & mask, high = (both >> (u64x2){4, 6}) & mask;
        memcpy(codes, &low, sizeof low);
        memcpy(codes + 16, &high, sizeof high);
    }
}

/* ---- asymmetric groups (kivi) ------------------------------------------ */

/* The stored minimum and scale of an asymmetric group spanning lo .. hi:
 * the minimum rounded down, the scale rounded up, so min + levels * scale >= hi.
 * Neither is ever a subnormal half (a scale below 2^-14 becomes 2^-14, a
 * minimum in (-2^-14, 0) becomes -2^-14, one in (0, 2^-14) becomes 0), so the
 * kivi key decoder may convert them with one multiply (half_to_float_normal):
 * a float multiply with a subnormal operand is slow on many x86 cores. It
 * costs nothing that matters: steps finer than 2^-14 (6.1e-5) only for
 * groups narrower than levels * 2^-14. */
static void asymmetric_parameters(float lo, float hi, int levels, uint16_t *min_half, uint16_t *scale_half)
{
    uint16_t minimum = half_at_most(lo);
    if ((minimum & 0x7c00) == 0 && (minimum & 0x03ff) != 0)
        minimum = (minimum & 0x8000) ? (uint16_t)(HALF_MIN_NORMAL_BITS | 0x8000) : 0;
    uint16_t scale = half_at_least(((double)hi - (double)half_to_float(minimum)) / levels);
    if (scale != 0 && scale < HALF_MIN_NORMAL_BITS)
        scale = HALF_MIN_NORMAL_BITS;
    *min_half = minimum;
    *scale_half = scale;
}

static uint8_t asymmetric_code(float x, float minimum, float scale, int levels)
{
    if (scale == 0.0f) /* hi == the stored minimum: every value is the minimum */
        return 0;
    return (uint8_t)round_clamped((x - minimum) / scale, 0, levels);
}

/* ---- row codecs ---------------------------------------------------------- */

typedef struct row_codec {
    uint32_t group_bytes;          /* bytes per 32 values */
    bool has_tensor_type;          /* a row is a row of quant/'s `tensor` */
    tensor_type tensor;
    void (*encode_group)(const float *x, uint8_t *out);
    void (*decode_row)(const uint8_t *row, float *out, int32_t length);
} row_codec;

/* Q8_0 (34 bytes): f16 d, int8 q[32]; x' = d * q, d >= max|x| / 127. */
static void q8_encode_group(const float *x, uint8_t *out)
{
    float amax = 0.0f;
    for (int i = 0; i < KV_PACKED_GROUP; i++)
        amax = fmaxf(amax, fabsf(x[i]));
    uint16_t d_half = half_at_least(amax / 127.0);
    float d = half_to_float(d_half);
    write_half(out, d_half);
    for (int i = 0; i < KV_PACKED_GROUP; i++) {
        int q = d > 0.0f ? round_clamped(x[i] / d, -127, 127) : 0;
        out[2 + i] = (uint8_t)(int8_t)q;
    }
}

static void q8_decode_row(const uint8_t *restrict row, float *restrict out, int32_t length)
{
    for (int32_t start = 0; start < length; start += KV_PACKED_GROUP, row += 34) {
        float d = half_to_float(read_half(row));
        for (int i = 0; i < KV_PACKED_GROUP; i++)
            out[start + i] = d * (float)(int8_t)row[2 + i];
    }
}

/* Q4_0 (18 bytes): f16 d, 16 bytes of nibbles; x' = d * (q - 8) with
 * d = m / -8, m the value of largest magnitude (the positive one on a tie),
 * its magnitude rounded up. m itself gets code 0; a value near -m would need
 * code 16 and is clamped to 15 (llama.cpp's Q4_0 does the same). */
static void q4_encode_group(const float *x, uint8_t *out)
{
    float lo = x[0], hi = x[0];
    for (int i = 1; i < KV_PACKED_GROUP; i++) {
        lo = fminf(lo, x[i]);
        hi = fmaxf(hi, x[i]);
    }
    float m = fabsf(hi) >= fabsf(lo) ? hi : lo;
    uint16_t d_half = 0;
    if (m > 0.0f)
        d_half = half_at_most(m / -8.0);
    else if (m < 0.0f)
        d_half = half_at_least(m / -8.0);
    float d = half_to_float(d_half);
    write_half(out, d_half);
    uint8_t codes[KV_PACKED_GROUP];
    for (int i = 0; i < KV_PACKED_GROUP; i++)
        codes[i] = (uint8_t)(d != 0.0f ? round_clamped(x[i] / d, -8, 7) + 8 : 8);
    pack_codes(4, codes, out + 2);
}

static void q4_decode_row(const uint8_t *restrict row, float *restrict out, int32_t length)
{
    for (int32_t start = 0; start < length; start += KV_PACKED_GROUP, row += 18) {
        float d = half_to_float(read_half(row));
        const uint8_t *qs = row + 2;
        for (int j = 0; j < 16; j++) {
            out[start + j] = d * (float)((qs[j] & 15) - 8);
            out[start + j + 16] = d * (float)((qs[j] >> 4) - 8);
        }
    }
}

/* An asymmetric group: f16 d, f16 m, codes; x' = d * q + m. With 4 bits
 * this is Q4_1 (20 bytes), with 2 bits our own 12-byte group. */
static void asymmetric_encode_group(int bits, const float *x, uint8_t *out)
{
    int levels = (1 << bits) - 1;
    float lo = x[0], hi = x[0];
    for (int i = 1; i < KV_PACKED_GROUP; i++) {
        lo = fminf(lo, x[i]);
        hi = fmaxf(hi, x[i]);
    }
    uint16_t min_half, scale_half;
    asymmetric_parameters(lo, hi, levels, &min_half, &scale_half);
    write_half(out, scale_half);
    write_half(out + 2, min_half);
    float minimum = half_to_float(min_half), scale = half_to_float(scale_half);
    uint8_t codes[KV_PACKED_GROUP];
    for (int i = 0; i < KV_PACKED_GROUP; i++)
        codes[i] = asymmetric_code(x[i], minimum, scale, levels);
    pack_codes(bits, codes, out + 4);
}

static inline void asymmetric_decode_row(int bits, const uint8_t *restrict row, float *restrict out,
                                         int32_t length)
{
    uint32_t group_bytes = 4 + (uint32_t)bits * 4;
    for (int32_t start = 0; start < length; start += KV_PACKED_GROUP, row += group_bytes) {
        float d = half_to_float(read_half(row)), m = half_to_float(read_half(row + 2));
        uint8_t codes[KV_PACKED_GROUP];
        unpack_codes(bits, row + 4, codes);
        /* d * q, then + m: two roundings, as quant/'s Q4_1 kernel does, so the floats are the same. */
        for (int i = 0; i < KV_PACKED_GROUP; i++)
            out[start + i] = d * (float)codes[i] + m;
    }
}

static void asymmetric4_encode_group(const float *x, uint8_t *out)
{
    asymmetric_encode_group(4, x, out);
}

static void asymmetric2_encode_group(const float *x, uint8_t *out)
{
    asymmetric_encode_group(2, x, out);
}

static void asymmetric4_decode_row(const uint8_t *restrict row, float *restrict out, int32_t length)
{
    asymmetric_decode_row(4, row, out, length);
}

static void asymmetric2_decode_row(const uint8_t *restrict row, float *restrict out, int32_t length)
{
    asymmetric_decode_row(2, row, out, length);
}

static const row_codec row_q8_0 = {34, true, TENSOR_Q8_0, q8_encode_group, q8_decode_row};
static const row_codec row_q4_0 = {18, true, TENSOR_Q4_0, q4_encode_group, q4_decode_row};
static const row_codec row_q4_1 = {20, true, TENSOR_Q4_1, asymmetric4_encode_group, asymmetric4_decode_row};
static const row_codec row_asymmetric2 = {12, false, TENSOR_F32, asymmetric2_encode_group, asymmetric2_decode_row};

_Static_assert(KV_PACKED_GROUP == 32, "the row codecs pack groups of 32 values");

/* ---- the types ----------------------------------------------------------- */

typedef struct packed_type_info {
    const char *name;
    const char *summary;
    const row_codec *key_rows;   /* NULL: keys per channel over the block, key_bits per code */
    const row_codec *value_rows;
    int key_bits;
} packed_type_info;

static const packed_type_info packed_types[KV_PACKED_TYPE_COUNT] = {
    [KV_PACKED_Q8] = {"q8", "llama.cpp q8_0: per token, groups of 32, f16 scale + int8 codes (8.5 bits a value)",
                      &row_q8_0, &row_q8_0, 0},
    [KV_PACKED_Q4] = {"q4", "llama.cpp q4_0: per token, groups of 32, f16 scale + 4-bit codes (4.5 bits a value)",
                      &row_q4_0, &row_q4_0, 0},
    [KV_PACKED_KIVI4] = {"kivi4",
                         "KIVI 4-bit asymmetric: keys per channel over the block, values per token in groups of 32",
                         NULL, &row_q4_1, 4},
    [KV_PACKED_KIVI2] = {"kivi2",
                         "KIVI 2-bit asymmetric: keys per channel over the block, values per token in groups of 32",
                         NULL, &row_asymmetric2, 2},
};

static const packed_type_info *type_info(kv_packed_type type)
{
    assert(type >= 0 && type < KV_PACKED_TYPE_COUNT);
    return &packed_types[type];
}

bool kv_packed_find(const char *name, kv_packed_type *out)
{
    for (int t = 0; t < KV_PACKED_TYPE_COUNT; t++) {
        if (strcmp(packed_types[t].name, name) == 0) {
            *out = (kv_packed_type)t;
            return true;
        }
    }
    return false;
}

const char *kv_packed_name(kv_packed_type type)
{
    return type >= 0 && type < KV_PACKED_TYPE_COUNT ? packed_types[type].name : "unknown";
}

const char *kv_packed_summary(kv_packed_type type)
{
    return type_info(type)->summary;
}

const char *kv_packed_names(void)
{
    static char names[128];
    if (names[0] == '\0') {
        size_t used = 0;
        for (int t = 0; t < KV_PACKED_TYPE_COUNT; t++)
            used += (size_t)snprintf(names + used, sizeof names - used, "%s%s", t > 0 ? ", " : "",
                                     packed_types[t].name);
    }
    return names;
}

static strata_status check_length(const char *type_name, const char *what, int32_t value, int32_t limit,
                                  int32_t multiple, strata_error *err)
{
    if (value < 1 || value > limit)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT, "KV type %s: %s is %" PRId32 ", outside 1 .. %" PRId32,
                           type_name, what, value, limit);
    if (value % multiple != 0)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                           "KV type %s: %s is %" PRId32 ", not a multiple of %" PRId32
                           ": packed types quantize groups of %" PRId32 " values (f32, f16 and bf16 take any length)",
                           type_name, what, value, multiple, multiple);
    return STRATA_OK;
}

strata_status kv_packed_check(kv_packed_type type, int32_t block_tokens, int32_t key_length, int32_t value_length,
                              strata_error *err)
{
    if (type < 0 || type >= KV_PACKED_TYPE_COUNT)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT, "KV type %d is not a packed type (%s)", (int)type,
                           kv_packed_names());
    const char *name = packed_types[type].name;
    strata_status status;
    if ((status = check_length(name, "block_tokens", block_tokens, PACKED_MAX_BLOCK_TOKENS, 1, err)) != STRATA_OK ||
        (status = check_length(name, "key_length", key_length, PACKED_MAX_VECTOR_LENGTH, KV_PACKED_GROUP, err)) !=
            STRATA_OK ||
        (status = check_length(name, "value_length", value_length, PACKED_MAX_VECTOR_LENGTH, KV_PACKED_GROUP,
                               err)) != STRATA_OK)
        return status;
    return STRATA_OK;
}

/* ---- section geometry ---------------------------------------------------- */

static uint64_t row_bytes(const row_codec *codec, int32_t length)
{
    return (uint64_t)(length / KV_PACKED_GROUP) * codec->group_bytes;
}

/* kivi keys: f16 scale[K], f16 minimum[K], then per slot K * bits / 8 bytes of codes. */
static uint64_t kivi_params_bytes(int32_t key_length)
{
    return 4 * (uint64_t)key_length;
}

static uint64_t kivi_code_row_bytes(int bits, int32_t key_length)
{
    return (uint64_t)key_length * (uint64_t)bits / 8;
}

uint64_t kv_packed_key_bytes(kv_packed_type type, int32_t block_tokens, int32_t key_length)
{
    const packed_type_info *info = type_info(type);
    if (info->key_rows != NULL)
        return (uint64_t)block_tokens * row_bytes(info->key_rows, key_length);
    return kivi_params_bytes(key_length) + (uint64_t)block_tokens * kivi_code_row_bytes(info->key_bits, key_length);
}

uint64_t kv_packed_value_bytes(kv_packed_type type, int32_t block_tokens, int32_t value_length)
{
    return (uint64_t)block_tokens * row_bytes(type_info(type)->value_rows, value_length);
}

bool kv_packed_per_token(kv_packed_type type, kv_packed_part part)
{
    return part == KV_PACKED_VALUES || type_info(type)->key_rows != NULL;
}

bool kv_packed_tensor_type(kv_packed_type type, kv_packed_part part, tensor_type *out)
{
    const packed_type_info *info = type_info(type);
    const row_codec *codec = part == KV_PACKED_KEYS ? info->key_rows : info->value_rows;
    if (codec == NULL || !codec->has_tensor_type)
        return false;
    *out = codec->tensor;
    return true;
}

/* ---- per-token rows ------------------------------------------------------ */

static void encode_row(const row_codec *codec, int32_t length, const float *x, uint8_t *row)
{
    for (int32_t start = 0; start < length; start += KV_PACKED_GROUP, row += codec->group_bytes)
        codec->encode_group(x + start, row);
}

static void check_row_shape(int32_t block_tokens, int32_t length, int32_t slot)
{
    (void)block_tokens;
    (void)length;
    (void)slot;
    assert(length > 0 && length % KV_PACKED_GROUP == 0);
    assert(slot >= 0 && slot < block_tokens);
}

/* Encodes rows 0 .. slots-1 of a per-token section and zeroes the rest. */
static void encode_rows(const row_codec *codec, int32_t block_tokens, int32_t length, const float *x, int32_t slots,
                        uint8_t *section)
{
    uint64_t bytes = row_bytes(codec, length);
    for (int32_t s = 0; s < slots; s++)
        encode_row(codec, length, x + (uint64_t)s * (uint64_t)length, section + (uint64_t)s * bytes);
    memset(section + (uint64_t)slots * bytes, 0, (size_t)((uint64_t)(block_tokens - slots) * bytes));
}

/* ---- kivi keys: per channel over the block ------------------------------- */

static void kivi_keys_encode(int bits, int32_t block_tokens, int32_t key_length, const float *keys, int32_t slots,
                             uint8_t *section)
{
    int levels = (1 << bits) - 1;
    uint8_t *scales = section, *minimums = section + 2 * (uint64_t)key_length;
    uint8_t *codes = section + kivi_params_bytes(key_length);
    uint64_t code_row_bytes = kivi_code_row_bytes(bits, key_length);
    uint32_t group_code_bytes = (uint32_t)bits * KV_PACKED_GROUP / 8;
    for (int32_t start = 0; start < key_length; start += KV_PACKED_GROUP) {
        /* Each channel's range over the encoded slots; a channel of an empty block gets scale and minimum 0. */
        float lo[KV_PACKED_GROUP], hi[KV_PACKED_GROUP], minimum[KV_PACKED_GROUP], scale[KV_PACKED_GROUP];
        for (int j = 0; j < KV_PACKED_GROUP; j++)
            lo[j] = hi[j] = slots > 0 ? keys[start + j] : 0.0f;
        for (int32_t s = 1; s < slots; s++) {
            const float *row = keys + (uint64_t)s * (uint64_t)key_length + start;
            for (int j = 0; j < KV_PACKED_GROUP; j++) {
                lo[j] = fminf(lo[j], row[j]);
                hi[j] = fmaxf(hi[j], row[j]);
            }
        }
        for (int j = 0; j < KV_PACKED_GROUP; j++) {
            uint16_t min_half, scale_half;
            asymmetric_parameters(lo[j], hi[j], levels, &min_half, &scale_half);
            write_half(scales + 2 * (start + j), scale_half);
            write_half(minimums + 2 * (start + j), min_half);
            minimum[j] = half_to_float(min_half);
            scale[j] = half_to_float(scale_half);
        }
        uint32_t group_offset = (uint32_t)(start / KV_PACKED_GROUP) * group_code_bytes;
        for (int32_t s = 0; s < block_tokens; s++) {
            uint8_t group_codes[KV_PACKED_GROUP] = {0};
            if (s < slots) {
                const float *row = keys + (uint64_t)s * (uint64_t)key_length + start;
                for (int j = 0; j < KV_PACKED_GROUP; j++)
                    group_codes[j] = asymmetric_code(row[j], minimum[j], scale[j], levels);
            }
            pack_codes(bits, group_codes, codes + (uint64_t)s * code_row_bytes + group_offset);
        }
    }
}

/* Decodes `count` slots from `first` for the channels start .. start+31,
 * with their scales and minimums already floats. */
static inline void kivi_keys_decode_group(int bits, int32_t key_length, const uint8_t *restrict codes,
                                          int32_t start, const float *restrict scale,
                                          const float *restrict minimum, int32_t first, int32_t count,
                                          float *restrict out, uint64_t out_stride)
{
    uint64_t code_row_bytes = kivi_code_row_bytes(bits, key_length);
    uint32_t group_offset = (uint32_t)(start / KV_PACKED_GROUP) * (uint32_t)bits * 4;
    for (int32_t s = 0; s < count; s++) {
        float *group = out + (uint64_t)s * out_stride + start;
        uint8_t row_codes[KV_PACKED_GROUP];
        unpack_codes(bits, codes + (uint64_t)(first + s) * code_row_bytes + group_offset, row_codes);
        for (int j = 0; j < KV_PACKED_GROUP; j++)
            group[j] = scale[j] * (float)row_codes[j] + minimum[j];
    }
}

static void kivi_keys_decode(int bits, int32_t key_length, const uint8_t *restrict section, int32_t first,
                             int32_t count, float *restrict out)
{
    const uint8_t *scales = section, *minimums = section + 2 * (uint64_t)key_length;
    const uint8_t *codes = section + kivi_params_bytes(key_length);
    for (int32_t start = 0; start < key_length; start += KV_PACKED_GROUP) {
        uint16_t scale_halves[KV_PACKED_GROUP], minimum_halves[KV_PACKED_GROUP];
        memcpy(scale_halves, scales + 2 * (uint64_t)start, sizeof scale_halves);
        memcpy(minimum_halves, minimums + 2 * (uint64_t)start, sizeof minimum_halves);
        float scale[KV_PACKED_GROUP], minimum[KV_PACKED_GROUP];
        for (int j = 0; j < KV_PACKED_GROUP; j++) {
            scale[j] = positive_half_to_float_normal(scale_halves[j]);
            minimum[j] = half_to_float_normal(minimum_halves[j]);
        }
        /* One instantiation per bit width, so the unpacking loops have constant shapes. */
        if (bits == 4)
            kivi_keys_decode_group(4, key_length, codes, start, scale, minimum, first, count, out,
                                   (uint64_t)key_length);
        else
            kivi_keys_decode_group(2, key_length, codes, start, scale, minimum, first, count, out,
                                   (uint64_t)key_length);
    }
}

/* ---- encoding and decoding ----------------------------------------------- */

void kv_packed_encode_block(kv_packed_type type, int32_t block_tokens, int32_t key_length, int32_t value_length,
                            const float *keys, const float *values, int32_t slots, void *key_section,
                            void *value_section)
{
    const packed_type_info *info = type_info(type);
    assert(slots >= 0 && slots <= block_tokens);
    assert(key_length % KV_PACKED_GROUP == 0 && value_length % KV_PACKED_GROUP == 0);
    if (info->key_rows != NULL)
        encode_rows(info->key_rows, block_tokens, key_length, keys, slots, key_section);
    else
        kivi_keys_encode(info->key_bits, block_tokens, key_length, keys, slots, key_section);
    encode_rows(info->value_rows, block_tokens, value_length, values, slots, value_section);
}

void kv_packed_encode_key(kv_packed_type type, int32_t block_tokens, int32_t key_length, const float *key,
                          int32_t slot, void *key_section)
{
    const row_codec *codec = type_info(type)->key_rows;
    assert(codec != NULL && "kivi keys are per channel: encode the whole block");
    check_row_shape(block_tokens, key_length, slot);
    encode_row(codec, key_length, key, (uint8_t *)key_section + (uint64_t)slot * row_bytes(codec, key_length));
}

void kv_packed_encode_value(kv_packed_type type, int32_t block_tokens, int32_t value_length, const float *value,
                            int32_t slot, void *value_section)
{
    const row_codec *codec = type_info(type)->value_rows;
    check_row_shape(block_tokens, value_length, slot);
    encode_row(codec, value_length, value,
               (uint8_t *)value_section + (uint64_t)slot * row_bytes(codec, value_length));
}

void kv_packed_decode_key(kv_packed_type type, int32_t block_tokens, int32_t key_length, const void *key_section,
                          int32_t slot, float *out)
{
    const packed_type_info *info = type_info(type);
    check_row_shape(block_tokens, key_length, slot);
    if (info->key_rows != NULL)
        info->key_rows->decode_row((const uint8_t *)key_section + (uint64_t)slot * row_bytes(info->key_rows, key_length),
                                   out, key_length);
    else
        kivi_keys_decode(info->key_bits, key_length, key_section, slot, 1, out);
}

void kv_packed_decode_value(kv_packed_type type, int32_t block_tokens, int32_t value_length,
                            const void *value_section, int32_t slot, float *out)
{
    const row_codec *codec = type_info(type)->value_rows;
    check_row_shape(block_tokens, value_length, slot);
    codec->decode_row((const uint8_t *)value_section + (uint64_t)slot * row_bytes(codec, value_length), out,
                      value_length);
}

void kv_packed_decode_keys(kv_packed_type type, int32_t block_tokens, int32_t key_length, const void *key_section,
                           int32_t slots, float *out)
{
    const packed_type_info *info = type_info(type);
    assert(slots >= 0 && slots <= block_tokens);
    if (info->key_rows == NULL) {
        kivi_keys_decode(info->key_bits, key_length, key_section, 0, slots, out);
        return;
    }
    uint64_t bytes = row_bytes(info->key_rows, key_length);
    for (int32_t s = 0; s < slots; s++)
        info->key_rows->decode_row((const uint8_t *)key_section + (uint64_t)s * bytes,
                                   out + (uint64_t)s * (uint64_t)key_length, key_length);
}

void kv_packed_decode_values(kv_packed_type type, int32_t block_tokens, int32_t value_length,
                             const void *value_section, int32_t slots, float *out)
{
    const row_codec *codec = type_info(type)->value_rows;
    assert(slots >= 0 && slots <= block_tokens);
    uint64_t bytes = row_bytes(codec, value_length);
    for (int32_t s = 0; s < slots; s++)
        codec->decode_row((const uint8_t *)value_section + (uint64_t)s * bytes,
                          out + (uint64_t)s * (uint64_t)value_length, value_length);
}

/* ---- error bounds -------------------------------------------------------- */

/* An upper bound on the smallest half >= v, for 0 <= v <= 65504: one half
 * spacing above v, which is at most v * 2^-10 for normal halves and 2^-24
 * for subnormal ones. */
static double half_rounded_up(double v)
{
    return v + fmax(v * 0x1p-10, 0x1p-24);
}

double kv_packed_error_bound(kv_packed_type type, float lo, float hi, float x)
{
    double low = lo, high = hi, magnitude = fabs((double)x);
    switch (type) {
    case KV_PACKED_Q8: {
        double amax = fmax(fabs(low), fabs(high));
        if (amax / 127.0 > HALF_MAX)
            return INFINITY;
        return half_rounded_up(amax / 127.0) / 2.0 + 0x1p-23 * magnitude;
    }
    case KV_PACKED_Q4: {
        double m = fabs(high) >= fabs(low) ? high : low, am = fabs(m);
        if (am / 8.0 > HALF_MAX)
            return INFINITY;
        double step = half_rounded_up(am / 8.0);
        double bound = step / 2.0;
        /* How far x lies on the side of zero away from m: past 15/16 |m| its
         * code would be 16, clamped to 15 (x' = -7/8 m at the most). */
        double far = m >= 0.0 ? -(double)x : (double)x;
        if (far > 15.0 / 16.0 * am)
            bound = fmax(bound, far - 7.0 / 8.0 * am);
        return bound + 0x1p-23 * magnitude;
    }
    case KV_PACKED_KIVI4:
    case KV_PACKED_KIVI2: {
        int levels = (1 << type_info(type)->key_bits) - 1;
        if (low < -HALF_MAX || high > HALF_MAX)
            return INFINITY;
        /* Neither the minimum nor the scale is stored subnormal: 2^-14 is
         * the finest rounding of the one and the smallest non-zero other. */
        double minimum_rounding = fmax(fabs(low) * 0x1p-10, 0x1p-14);
        double scale = (high - low + minimum_rounding) / levels;
        if (scale > HALF_MAX)
            return INFINITY;
        double stored_scale = fmax(half_rounded_up(scale), 0x1p-14);
        return stored_scale / 2.0 + 0x1p-21 * (magnitude + fabs(low) + stored_scale);
    }
    case KV_PACKED_TYPE_COUNT:
        break;
    }
    assert(!"kv_packed_error_bound: not a packed type");
    return INFINITY;
}
