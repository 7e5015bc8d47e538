/* tokenize/chat.c: building chat prompts in the Gemma, ChatML and Llama 3 formats. */
#include "tokenize/chat.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"

static bool contains(const char *text, size_t length, const char *marker)
{
    size_t marker_length = strlen(marker);
    for (size_t i = 0; i + marker_length <= length; i++)
        if (memcmp(text + i, marker, marker_length) == 0)
            return true;
    return false;
}

strata_chat_format chat_format_detect(const char *template_text, size_t length, strata_chat_format fallback)
{
    if (template_text == NULL)
        return fallback;
    if (contains(template_text, length, "<start_of_turn>"))
        return STRATA_CHAT_GEMMA;
    if (contains(template_text, length, "<|im_start|>"))
        return STRATA_CHAT_CHATML;
    if (contains(template_text, length, "<|start_header_id|>"))
        return STRATA_CHAT_LLAMA3;
    return fallback;
}

/* Formats into a new buffer of exactly the needed size. */
static strata_status format_new(char **out, strata_error *err, const char *format, ...)
{
    va_list args;
    va_start(args, format);
    int length = vsnprintf(NULL, 0, format, args);
    va_end(args);
    if (length < 0)
        return strata_fail(err, STRATA_E_INTERNAL, "cannot format a chat prompt");
    *out = malloc((size_t)length + 1);
    if (*out == NULL)
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "cannot allocate a %d-byte chat prompt", length);
    va_start(args, format);
    vsnprintf(*out, (size_t)length + 1, format, args);
    va_end(args);
    return STRATA_OK;
}

strata_status chat_format_prompt(strata_chat_format format, const char *system_message, const char *user_message,
                                 char **out, strata_error *err)
{
    *out = NULL;
    bool has_system = system_message != NULL && system_message[0] != '\0';
    switch (format) {
    case STRATA_CHAT_GEMMA:
        /* Gemma has no system role: the system text opens the first user turn. */
        return format_new(out, err, "<start_of_turn>user\n%s%s%s<end_of_turn>\n<start_of_turn>model\n",
                          has_system ? system_message : "", has_system ? "\n\n" : "", user_message);
    case STRATA_CHAT_CHATML:
        if (has_system)
            return format_new(out, err,
                              "<|im_start|>system\n%s<|im_end|>\n<|im_start|>user\n%s<|im_end|>\n<|im_start|>assistant\n",
                              system_message, user_message);
        return format_new(out, err, "<|im_start|>user\n%s<|im_end|>\n<|im_start|>assistant\n", user_message);
    case STRATA_CHAT_LLAMA3:
        if (has_system)
            return format_new(out, err,
                              "<|start_header_id|>system<|end_header_id|>\n\n%s<|eot_id|>"
                              "<|start_header_id|>user<|end_header_id|>\n\n%s<|eot_id|>"
                              "<|start_header_id|>assistant<|end_header_id|>\n\n",
                              system_message, user_message);
        return format_new(out, err,
                          "<|start_header_id|>user<|end_header_id|>\n\n%s<|eot_id|>"
                          "<|start_header_id|>assistant<|end_header_id|>\n\n",
                          user_message);
    case STRATA_CHAT_NONE:
        break;
    }
    return strata_fail(err, STRATA_E_UNSUPPORTED, "this model has no known chat format");
}
