/* base/cpu_features.c: CPUID/XGETBV probing of AVX2 and AVX-512 support. */
#include "base/cpu_features.h"

#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

static unsigned long long read_xcr0(void)
{
    unsigned int eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((unsigned long long)edx << 32) | eax;
}

simd_level cpu_simd_level_supported(void)
{
    unsigned int eax, ebx, ecx, edx;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx))
        return SIMD_SCALAR;
    bool has_osxsave = (ecx >> 27) & 1;
    bool has_fma = (ecx >> 12) & 1;
    bool has_f16c = (ecx >> 29) & 1;
    if (!has_osxsave)
        return SIMD_SCALAR;
    unsigned long long xcr0 = read_xcr0();
    bool os_saves_ymm = (xcr0 & 0x6) == 0x6;
    bool os_saves_zmm = (xcr0 & 0xe6) == 0xe6;
    if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx))
        return SIMD_SCALAR;
    bool has_avx2 = (ebx >> 5) & 1;
    bool has_avx512f = (ebx >> 16) & 1;
    bool has_avx512bw = (ebx >> 30) & 1;
    bool has_avx512vl = (ebx >> 31) & 1;
    if (!(has_avx2 && has_fma && has_f16c && os_saves_ymm))
        return SIMD_SCALAR;
    if (has_avx512f && has_avx512bw && has_avx512vl && os_saves_zmm)
        return SIMD_AVX512;
    return SIMD_AVX2;
}
#else
simd_level cpu_simd_level_supported(void)
{
    return SIMD_SCALAR;
}
#endif

simd_level cpu_simd_level_selected(void)
{
    simd_level level = cpu_simd_level_supported();
    const char *cap = getenv("STRATA_SIMD");
    if (cap == NULL)
        return level;
    simd_level wanted = level;
    if (strcmp(cap, "scalar") == 0)
        wanted = SIMD_SCALAR;
    else if (strcmp(cap, "avx2") == 0)
        wanted = SIMD_AVX2;
    else if (strcmp(cap, "avx512") == 0)
        wanted = SIMD_AVX512;
    return wanted < level ? wanted : level;
}

const char *simd_level_name(simd_level level)
{
    switch (level) {
    case SIMD_SCALAR: return "scalar";
    case SIMD_AVX2: return "avx2";
    case SIMD_AVX512: return "avx512";
    }
    return "unknown";
}
