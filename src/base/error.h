/* base/error.h: filling strata_error values.
 *
 * Errors are values: a function that can fail returns a strata_status and
 * writes one sentence into the caller's strata_error (which may be NULL when
 * the caller does not care). strata_fail writes the sentence; strata_error_prefix
 * lets a caller add context ("model.gguf: ") in front of a callee's sentence
 * instead of replacing it. */
#ifndef STRATA_BASE_ERROR_H
#define STRATA_BASE_ERROR_H

#include "strata.h"

#if defined(__GNUC__)
#define STRATA_PRINTF(fmt_index, arg_index) __attribute__((format(printf, fmt_index, arg_index)))
#else
#define STRATA_PRINTF(fmt_index, arg_index)
#endif

/* Fills err (if not NULL) with status and a formatted message; returns status. */
strata_status strata_fail(strata_error *err, strata_status status, const char *format, ...)
    STRATA_PRINTF(3, 4);

/* Puts formatted context in front of the message already in err; returns its status. */
strata_status strata_error_prefix(strata_error *err, const char *format, ...) STRATA_PRINTF(2, 3);

/* Clears err to STRATA_OK with an empty message. */
void strata_error_clear(strata_error *err);

#endif
