/* quant/kernels.h: per-type row kernels, in a scalar, an AVX2 and an AVX-512 version.
 *
 * For every computable tensor type there are two kernels over one row of n
 * values (n a multiple of the type's block size):
 *   dequantize(row, out, n)  writes the n values as floats;
 *   dot(row, x, n)           returns sum_i value_i * x[i], with x in f32,
 *                            without materializing the row.
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

typedef struct quant_kernels {
    simd_level level;
    quant_dequantize_fn dequantize[TENSOR_TYPE_LIMIT];
    quant_dot_fn dot[TENSOR_TYPE_LIMIT];
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
