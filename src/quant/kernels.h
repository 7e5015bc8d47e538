/* quant/kernels.h: per-type row kernels, in a scalar, an AVX2 and an AVX-512 version.
 *
 * For every computable tensor type there are three kernels over one row of n
 * values (n a multiple of the type's block size):
 *   dequantize(row, out, n)  writes the n values as floats;
 *   dot(row, x, n)           returns sum_i value_i * x[i], with x in f32,
 *                            without materializing the row;
 *   dot_multi(row, x, x_stride, count, n, out)
 *                            the dot of the row with `count` vectors at once
 *                            (1 <= count <= QUANT_DOT_MULTI_MAX), vector t
 *                            starting x_stride floats after vector t - 1:
 *                            out[t] = sum_i value_i * x[t * x_stride + i].
 * dot_multi is for batched decoding, where one weight row meets one
 * activation vector per sequence: it decodes each block once for all of
 * them instead of once per vector. Each out[t] is a dot product of its own:
 * the scalar dot_multi gives bit for bit what the scalar dot gives for that
 * vector, and any level's dot_multi with count 1 is that level's dot. A
 * SIMD dot_multi of more vectors spreads each vector's products over its
 * running sums otherwise than the SIMD dot, so it adds in another order and
 * agrees with it up to rounding, within the same error bound.
 * Activations stay in f32: strata does not quantize them, so a dot product is
 * as exact as f32 accumulation allows. The scalar table is the specification;
 * the SIMD tables must agree with it (tests/quant/test_quant.c). A table entry
 * is NULL for a type that is not computable. */
#ifndef STRATA_QUANT_KERNELS_H
#define STRATA_QUANT_KERNELS_H

#include <stdint.h>

#include "base/cpu_features.h"
#include "quant/types.h"

typedef void (*quant_dequantize_fn)(const void *row, float *out, int64_t n);
typedef float (*quant_dot_fn)(const void *row, const float *x, int64_t n);
typedef void (*quant_dot_multi_fn)(const void *row, const float *x, int64_t x_stride, int count, int64_t n,
                                   float *out);

enum { QUANT_DOT_MULTI_MAX = 8 }; /* the most vectors one dot_multi call takes */

typedef struct quant_kernels {
    simd_level level;
    quant_dequantize_fn dequantize[TENSOR_TYPE_LIMIT];
    quant_dot_fn dot[TENSOR_TYPE_LIMIT];
    quant_dot_multi_fn dot_multi[TENSOR_TYPE_LIMIT];
} quant_kernels;

/* Returns the kernel table of one SIMD level; NULL if that level is not built
 * in. Entries a level does not specialize fall back to the scalar kernel. */
const quant_kernels *quant_kernels_for_level(simd_level level);
/* Returns the table for the level cpu_simd_level_selected() picks (cached). */
const quant_kernels *quant_kernels_selected(void);

/* Converts one IEEE half to float. */
float quant_f16_to_f32(uint16_t half);
/* Converts a float to IEEE half, rounding to nearest even. */
uint16_t quant_f32_to_f16(float value);
/* Converts one bfloat16 to float. */
float quant_bf16_to_f32(uint16_t value);

#endif
