/* tools/strata/options.h: small helpers the subcommands share for parsing
 * numbers from flags with clear errors. */
#ifndef STRATA_TOOLS_OPTIONS_H
#define STRATA_TOOLS_OPTIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Parses a whole decimal integer in [minimum, maximum]; prints an error naming flag and returns false otherwise. */
bool option_parse_integer(const char *command, const char *flag, const char *text, long long minimum,
                          long long maximum, long long *out);
/* Parses a finite float in [minimum, maximum]; prints an error naming flag and returns false otherwise. */
bool option_parse_float(const char *command, const char *flag, const char *text, double minimum,
                        double maximum, double *out);
/* Parses a byte size such as 512M, 2G, 1.5GiB or 1000000; prints an error naming flag and returns false otherwise. */
bool option_parse_bytes(const char *command, const char *flag, const char *text, uint64_t *out);
/* Parses f32, f16 or bf16 into a strata_kv_type value; prints an error and returns false otherwise. */
bool option_parse_kv_type(const char *command, const char *text, int *out);
/* Returns argv[*index + 1] and advances *index, or prints that flag needs a value and returns NULL. */
const char *option_value(const char *command, int argc, char **argv, int *index);
/* Reads a whole file into a NUL-terminated buffer the caller frees; prints an error and returns NULL on failure. */
char *option_read_file(const char *command, const char *path, size_t *length);
/* Returns the default model path (the cache folder of scripts/fetch-model.sh) in buffer. */
const char *option_default_model(char *buffer, size_t capacity);

#endif
