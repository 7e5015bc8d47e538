/* tools/strata/options.c: number parsing and file reading for the subcommands. */
#include "options.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool option_parse_integer(const char *command, const char *flag, const char *text, long long minimum,
                          long long maximum, long long *out)
{
    char *end = NULL;
    errno = 0;
    long long value = strtoll(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || value < minimum || value > maximum) {
        fprintf(stderr, "strata %s: %s expects a whole number in %lld..%lld, got '%s'\n", command, flag,
                minimum, maximum, text);
        return false;
    }
    *out = value;
    return true;
}

bool option_parse_float(const char *command, const char *flag, const char *text, double minimum,
                        double maximum, double *out)
{
    char *end = NULL;
    errno = 0;
    double value = strtod(text, &end);
    if (errno != 0 || end == text || *end != '\0' || !isfinite(value) || value < minimum || value > maximum) {
        fprintf(stderr, "strata %s: %s expects a number in %g..%g, got '%s'\n", command, flag, minimum,
                maximum, text);
        return false;
    }
    *out = value;
    return true;
}

bool option_parse_bytes(const char *command, const char *flag, const char *text, uint64_t *out)
{
    char *end = NULL;
    errno = 0;
    double value = strtod(text, &end);
    double scale = 1;
    if (end != text && errno == 0) {
        if (strcmp(end, "") == 0 || strcmp(end, "B") == 0)
            scale = 1;
        else if (strcmp(end, "K") == 0 || strcmp(end, "KiB") == 0 || strcmp(end, "k") == 0)
            scale = 1024.0;
        else if (strcmp(end, "M") == 0 || strcmp(end, "MiB") == 0)
            scale = 1024.0 * 1024.0;
        else if (strcmp(end, "G") == 0 || strcmp(end, "GiB") == 0)
            scale = 1024.0 * 1024.0 * 1024.0;
        else
            scale = 0;
    }
    double bytes = value * scale;
    if (end == text || errno != 0 || scale == 0 || !(bytes >= 1) || bytes > 1e15) {
        fprintf(stderr, "strata %s: %s expects a size such as 512M, 2G or 1000000, got '%s'\n", command, flag, text);
        return false;
    }
    *out = (uint64_t)bytes;
    return true;
}

bool option_parse_kv_type(const char *command, const char *text, int *out)
{
    static const char *const names[] = {"f32", "f16", "bf16"}; /* in strata_kv_type order */
    for (int i = 0; i < 3; i++)
        if (strcmp(text, names[i]) == 0) {
            *out = i;
            return true;
        }
    fprintf(stderr, "strata %s: --kv-type expects f32, f16 or bf16, got '%s'\n", command, text);
    return false;
}

const char *option_value(const char *command, int argc, char **argv, int *index)
{
    if (*index + 1 >= argc) {
        fprintf(stderr, "strata %s: %s needs a value\n", command, argv[*index]);
        return NULL;
    }
    *index += 1;
    return argv[*index];
}

char *option_read_file(const char *command, const char *path, size_t *length)
{
    FILE *file = fopen(path, "rb");
    if (file == NULL) {
        perror(path);
        return NULL;
    }
    size_t capacity = 1 << 16, used = 0;
    char *buffer = malloc(capacity + 1);
    while (buffer != NULL) {
        size_t got = fread(buffer + used, 1, capacity - used, file);
        used += got;
        if (used < capacity)
            break;
        capacity *= 2;
        char *grown = realloc(buffer, capacity + 1);
        if (grown == NULL)
            free(buffer);
        buffer = grown;
    }
    bool failed = ferror(file);
    fclose(file);
    if (buffer == NULL || failed) {
        fprintf(stderr, "strata %s: cannot read %s\n", command, path);
        free(buffer);
        return NULL;
    }
    buffer[used] = '\0';
    *length = used;
    return buffer;
}

const char *option_default_model(char *buffer, size_t capacity)
{
    const char *cache = getenv("STRATA_CACHE");
    const char *home = getenv("HOME");
    if (cache != NULL && cache[0] != '\0')
        snprintf(buffer, capacity, "%s/models/gemma-3-270m-q4_k_m.gguf", cache);
    else
        snprintf(buffer, capacity, "%s/.cache/strata/models/gemma-3-270m-q4_k_m.gguf", home ? home : ".");
    return buffer;
}
