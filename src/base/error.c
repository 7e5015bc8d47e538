/* base/error.c: formatting error messages into strata_error values. */
#include "base/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *strata_status_name(strata_status status)
{
    switch (status) {
    case STRATA_OK: return "ok";
    case STRATA_E_INVALID_ARGUMENT: return "invalid argument";
    case STRATA_E_IO: return "input/output error";
    case STRATA_E_FORMAT: return "format error";
    case STRATA_E_UNSUPPORTED: return "unsupported";
    case STRATA_E_OUT_OF_MEMORY: return "out of memory";
    case STRATA_E_CONTEXT_FULL: return "context full";
    case STRATA_E_KV_FULL: return "KV memory full";
    case STRATA_E_INTERNAL: return "internal error";
    }
    return "unknown status";
}

strata_status strata_fail(strata_error *err, strata_status status, const char *format, ...)
{
    if (err == NULL)
        return status;
    err->status = status;
    va_list args;
    va_start(args, format);
    vsnprintf(err->message, sizeof err->message, format, args);
    va_end(args);
    return status;
}

strata_status strata_error_prefix(strata_error *err, const char *format, ...)
{
    if (err == NULL)
        return STRATA_E_INTERNAL;
    char prefix[STRATA_ERROR_MESSAGE_BYTES];
    va_list args;
    va_start(args, format);
    vsnprintf(prefix, sizeof prefix, format, args);
    va_end(args);
    size_t prefix_length = strlen(prefix);
    size_t message_length = strlen(err->message);
    if (prefix_length + message_length >= sizeof err->message)
        message_length = sizeof err->message - 1 - prefix_length;
    memmove(err->message + prefix_length, err->message, message_length);
    memcpy(err->message, prefix, prefix_length);
    err->message[prefix_length + message_length] = '\0';
    return err->status;
}

void strata_error_clear(strata_error *err)
{
    if (err == NULL)
        return;
    err->status = STRATA_OK;
    err->message[0] = '\0';
}
