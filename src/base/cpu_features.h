/* base/cpu_features.h: which SIMD instruction sets this CPU offers.
 *
 * Read once at start-up (CPUID and XGETBV on x86-64) so kernels can pick
 * their AVX2 or AVX-512 versions at run time; the binary itself is built for
 * baseline x86-64 and runs anywhere. STRATA_SIMD=scalar|avx2|avx512 in the
 * environment caps the level, for tests and for comparing paths. */
#ifndef STRATA_BASE_CPU_FEATURES_H
#define STRATA_BASE_CPU_FEATURES_H

#include <stdbool.h>

typedef enum simd_level {
    SIMD_SCALAR = 0,
    SIMD_AVX2 = 1,   /* AVX2 + FMA + F16C */
    SIMD_AVX512 = 2, /* AVX-512 F, BW, VL (+ the AVX2 set) */
} simd_level;

/* Returns the best SIMD level this CPU and operating system support. */
simd_level cpu_simd_level_supported(void);
/* Returns the level kernels should use: the supported one, capped by STRATA_SIMD. */
simd_level cpu_simd_level_selected(void);
/* Returns "scalar", "avx2" or "avx512". */
const char *simd_level_name(simd_level level);

#endif
