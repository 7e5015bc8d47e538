/* kv/packed.h: packed low-bit layouts for the key and value sections of a KV block.
 *
 * A pool block (kv/pool.h) holds block_tokens = B slots of one (layer, KV
 * head): a keys section, a values section, positions and scores. This module
 * says how the first two are laid out when keys and values are stored in a
 * few bits, encodes f32 rows into them and decodes one slot's row back. It
 * knows nothing of pools or sequences: it works on two byte ranges.
 *
 * Every type quantizes groups of 32 values, so key_length and value_length
 * must be multiples of 32 (kv_packed_check says so in a sentence). Scales and
 * minimums are IEEE halves. The types:
 *
 *   q8     per token: each slot's row in groups of 32, f16 d + 32 int8 codes,
 *          x' = d * q, d the smallest half >= max|x| / 127. The bytes of a
 *          row are a row of quant/'s Q8_0.
 *   q4     per token: groups of 32, f16 d + 16 bytes of nibbles, x' = d * (q - 8),
 *          d = m / -8 (its magnitude rounded up to a half) for m the value
 *          of largest magnitude, the positive one on a tie. A row of Q4_0.
 *          (llama.cpp rounds d to the nearest half and computes codes with
 *          the unrounded d: same layout, codes at most one apart.)
 *   kivi4, kivi2 (KIVI, Liu et al. 2024: asymmetric min/max quantization)
 *          keys per channel: over the block's slots, channel c has its own
 *          f16 scale and f16 minimum, and each (slot, channel) a 4- or 2-bit
 *          code; values per token: groups of 32 channels, each with f16
 *          scale d and minimum m, x' = d * q + m. kivi4's value rows are rows
 *          of Q4_1; kivi2's value groups are 12 bytes: f16 d, f16 m, 8 bytes
 *          of 2-bit codes.
 *
 * Codes inside a group of 32 (values, and one slot's keys of kivi): 8 bits,
 * byte j is element j; 4 bits, byte j holds element j in its low nibble and
 * element j + 16 in its high one (llama.cpp's order); 2 bits, byte j % 8
 * holds element j in bits 2 * (j / 8) .. 2 * (j / 8) + 1.
 *
 * kivi key section, for B slots of key_length K:
 *   f16 scale[K]; f16 minimum[K]; then per slot s, K * bits / 8 bytes of
 *   codes in groups of 32 channels as above. x'[s][c] = scale[c] * q + minimum[c].
 * Every other section is B rows of the row layout, slot s at s * row bytes.
 * No offset depends on B; the functions take block_tokens anyway, to check
 * slot numbers and so that a block's shape is always named the same way.
 *
 * Encoding rounds each half in the direction that keeps the group's range
 * covered (a scale up, a minimum down), and quantizes against the rounded
 * halves that are stored, so clamping never moves a code by more than the
 * rounding (q4's far end aside, see kv_packed_error_bound). Inputs must be
 * finite and within the half range (|x| <= 65504; q8 and q4 allow up to
 * 127 * 65504 and 8 * 65504): beyond it the halves saturate and the bound no
 * longer holds. */
#ifndef STRATA_KV_PACKED_H
#define STRATA_KV_PACKED_H

#include <stdbool.h>
#include <stdint.h>

#include "quant/types.h"
#include "strata.h"

typedef enum kv_packed_type {
    KV_PACKED_Q8 = 0,
    KV_PACKED_Q4,
    KV_PACKED_KIVI4,
    KV_PACKED_KIVI2,
    KV_PACKED_TYPE_COUNT,
} kv_packed_type;

/* Which section of a block: keys or values. */
typedef enum kv_packed_part { KV_PACKED_KEYS = 0, KV_PACKED_VALUES } kv_packed_part;

enum { KV_PACKED_GROUP = 32 }; /* values per scale of a row; key_length and value_length are multiples of it */

/* Finds a type by name ("q8", "q4", "kivi4", "kivi2"); false if there is none. */
bool kv_packed_find(const char *name, kv_packed_type *out);
/* Returns the type's name. */
const char *kv_packed_name(kv_packed_type type);
/* Returns the type's one-line description (method and layout). */
const char *kv_packed_summary(kv_packed_type type);
/* Returns every name, comma-separated ("q8, q4, kivi4, kivi2"), for messages. */
const char *kv_packed_names(void);
/* Checks that the type exists and takes this block shape; STRATA_E_INVALID_ARGUMENT with a sentence if not. */
strata_status kv_packed_check(kv_packed_type type, int32_t block_tokens, int32_t key_length, int32_t value_length,
                              strata_error *err);

/* Returns the bytes of one block's keys section. */
uint64_t kv_packed_key_bytes(kv_packed_type type, int32_t block_tokens, int32_t key_length);
/* Returns the bytes of one block's values section. */
uint64_t kv_packed_value_bytes(kv_packed_type type, int32_t block_tokens, int32_t value_length);
/* True when a part is quantized per token (each slot alone); false for kivi keys, quantized per channel over the block. */
bool kv_packed_per_token(kv_packed_type type, kv_packed_part part);
/* For a part whose slot rows are rows of a quant/ tensor type (q8 and q4 keys
 * and values: Q8_0, Q4_0; kivi4 values: Q4_1) sets *out and returns true:
 * slot s's row starts at byte s * tensor_row_bytes(*out, length) of the section
 * and quant/kernels.h's dequantize, dot and dot_multi read it. False otherwise. */
bool kv_packed_tensor_type(kv_packed_type type, kv_packed_part part, tensor_type *out);

/* Encodes slots 0 .. slots-1 of a block (keys and values are [slots][length]
 * f32, 0 <= slots <= block_tokens) into both sections, whole: kivi key scales
 * and minimums are taken over those slots only, and the codes of the slots
 * after them are zero. */
void kv_packed_encode_block(kv_packed_type type, int32_t block_tokens, int32_t key_length, int32_t value_length,
                            const float *keys, const float *values, int32_t slots, void *key_section,
                            void *value_section);
/* Encodes one slot's key row alone; only for per-token keys (q8, q4): kivi keys need kv_packed_encode_block. */
void kv_packed_encode_key(kv_packed_type type, int32_t block_tokens, int32_t key_length, const float *key,
                          int32_t slot, void *key_section);
/* Encodes one slot's value row alone (values are per token in every type). */
void kv_packed_encode_value(kv_packed_type type, int32_t block_tokens, int32_t value_length, const float *value,
                            int32_t slot, void *value_section);

/* Decodes one slot's key row (key_length floats) from a keys section. */
void kv_packed_decode_key(kv_packed_type type, int32_t block_tokens, int32_t key_length, const void *key_section,
                          int32_t slot, float *out);
/* Decodes one slot's value row (value_length floats) from a values section. */
void kv_packed_decode_value(kv_packed_type type, int32_t block_tokens, int32_t value_length,
                            const void *value_section, int32_t slot, float *out);
/* Decodes slots 0 .. slots-1 of a keys section into out[slots][key_length];
 * for kivi it converts each channel's scale and minimum once, not per row. */
void kv_packed_decode_keys(kv_packed_type type, int32_t block_tokens, int32_t key_length, const void *key_section,
                           int32_t slots, float *out);
/* Decodes slots 0 .. slots-1 of a values section into out[slots][value_length]. */
void kv_packed_decode_values(kv_packed_type type, int32_t block_tokens, int32_t value_length,
                             const void *value_section, int32_t slots, float *out);

/* Returns the largest |x - x'| the type guarantees for an element x whose
 * group (the values sharing its scale: the 32 values of a row group, or for
 * kivi keys one channel over the encoded slots) has minimum lo and maximum
 * hi; INFINITY when the group is outside the type's range. With
 * U(v) = v + max(v * 2^-10, 2^-24), an upper bound on v rounded up to a half,
 * and r(x) = 2^-23 |x|, the f32 rounding of computing a code:
 *   q8     U(a / 127) / 2 + r(x), a = max(|lo|, |hi|): half a step of the stored d.
 *   q4     m = hi if |hi| >= |lo| else lo, D = U(|m| / 8):
 *          D / 2 + r(x), except for x on the far side of zero from m with
 *          |x| > 15/16 |m|, whose code 16 is clamped to 15:
 *          max(D / 2, |x| - 7/8 |m|) + r(x), at most a full step |m| / 8.
 *   kivi   S = max(U((hi - lo + e) / (2^bits - 1)), 2^-14), e = max(|lo| 2^-10, 2^-14)
 *          the rounding of the minimum down to a half: S / 2 + 2^-21 (|x| + |lo| + S).
 *          (kivi never stores a subnormal half: scales and minimums are
 *          zero or at least 2^-14 in magnitude, so the key decoder converts
 *          them with one multiply; only groups narrower than
 *          (2^bits - 1) * 2^-14 lose precision to that.)
 * The half-step terms come from the code grid, U from the stored halves, the
 * rest from f32 arithmetic (decoding is exact for q8 and q4, one rounding for kivi). */
double kv_packed_error_bound(kv_packed_type type, float lo, float hi, float x);

#endif
