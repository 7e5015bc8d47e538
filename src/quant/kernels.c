/* quant/kernels.c: the kernel tables, one per SIMD level, and the choice
 * among them.
 *
 * Each level's file defines the kernels it implements itself
 * (quant_kernels_<level>_own); here they are merged once, on first use, so a
 * SIMD table falls back to the scalar kernel of every type it does not
 * specialize. The selected table is the one for cpu_simd_level_selected(),
 * asked once, at the first call: STRATA_SIMD set later has no effect. */
#include <pthread.h>
#include <stddef.h>

#include "quant/kernels.h"
#include "quant/kernels_private.h"

static const quant_kernels *const kernels_own[] = {
    [SIMD_SCALAR] = &quant_kernels_scalar_own,
    [SIMD_AVX2] = &quant_kernels_avx2_own,
    [SIMD_AVX512] = &quant_kernels_avx512_own,
};

#define SIMD_LEVEL_COUNT (sizeof kernels_own / sizeof kernels_own[0])

static quant_kernels kernels_merged[SIMD_LEVEL_COUNT];
static const quant_kernels *kernels_selected;
static pthread_once_t kernels_ready = PTHREAD_ONCE_INIT;

static void merge_kernel_tables(void)
{
    const quant_kernels *scalar = kernels_own[SIMD_SCALAR];
    for (size_t level = 0; level < SIMD_LEVEL_COUNT; level++) {
        quant_kernels *merged = &kernels_merged[level];
        *merged = *kernels_own[level];
        for (int type = 0; type < TENSOR_TYPE_LIMIT; type++) {
            if (merged->dequantize[type] == NULL)
                merged->dequantize[type] = scalar->dequantize[type];
            if (merged->dot[type] == NULL)
                merged->dot[type] = scalar->dot[type];
            if (merged->dot_multi[type] == NULL)
                merged->dot_multi[type] = scalar->dot_multi[type];
        }
    }
    kernels_selected = &kernels_merged[cpu_simd_level_selected()];
}

/* Returns the kernel table of one SIMD level; NULL if that level is not built in. */
const quant_kernels *quant_kernels_for_level(simd_level level)
{
    if ((size_t)level >= SIMD_LEVEL_COUNT)
        return NULL;
    pthread_once(&kernels_ready, merge_kernel_tables);
    return &kernels_merged[level];
}

/* Returns the table for the level cpu_simd_level_selected() picks (cached). */
const quant_kernels *quant_kernels_selected(void)
{
    pthread_once(&kernels_ready, merge_kernel_tables);
    return kernels_selected;
}
