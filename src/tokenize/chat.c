/* tokenize/chat.c: building chat prompts in the Gemma, ChatML and Llama 3 formats. */
#include "tokenize/chat.h"

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

/* A growing prompt; on an allocation failure it stops growing and remembers. */
typedef struct prompt_builder {
    char *text;
    size_t length, capacity;
    bool failed;
} prompt_builder;

static void builder_add(prompt_builder *builder, const char *text)
{
    size_t add = strlen(text);
    if (builder->failed)
        return;
    if (builder->length + add + 1 > builder->capacity) {
        size_t capacity = (builder->length + add + 1) * 2;
        char *grown = realloc(builder->text, capacity);
        if (grown == NULL) {
            builder->failed = true;
            return;
        }
        builder->text = grown;
        builder->capacity = capacity;
    }
    memcpy(builder->text + builder->length, text, add + 1);
    builder->length += add;
}

/* The turn markers of a format: a turn is open + role name + middle + content + close. */
typedef struct turn_markers {
    const char *open, *middle, *close;
    const char *assistant_role; /* the assistant's role name in this format */
    bool system_role;           /* the format has a system turn; else system text opens the first user turn */
} turn_markers;

static bool markers_for(strata_chat_format format, turn_markers *markers)
{
    switch (format) {
    case STRATA_CHAT_GEMMA:
        *markers = (turn_markers){"<start_of_turn>", "\n", "<end_of_turn>\n", "model", false};
        return true;
    case STRATA_CHAT_CHATML:
        *markers = (turn_markers){"<|im_start|>", "\n", "<|im_end|>\n", "assistant", true};
        return true;
    case STRATA_CHAT_LLAMA3:
        *markers = (turn_markers){"<|start_header_id|>", "<|end_header_id|>\n\n", "<|eot_id|>", "assistant", true};
        return true;
    case STRATA_CHAT_NONE:
        break;
    }
    return false;
}

static bool is_system_role(const char *role)
{
    return strcmp(role, "system") == 0 || strcmp(role, "developer") == 0;
}

strata_status chat_format_messages(strata_chat_format format, const strata_chat_message *messages, size_t count,
                                   char **out, strata_error *err)
{
    *out = NULL;
    turn_markers markers;
    if (!markers_for(format, &markers))
        return strata_fail(err, STRATA_E_UNSUPPORTED, "this model has no known chat format");
    for (size_t i = 0; i < count; i++) {
        const char *role = messages[i].role;
        if (role == NULL || messages[i].content == NULL)
            return strata_fail(err, STRATA_E_INVALID_ARGUMENT, "message %zu has no role or no content", i);
        if (!is_system_role(role) && strcmp(role, "user") != 0 && strcmp(role, "assistant") != 0)
            return strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                               "message %zu has role '%s'; the roles are system, developer, user and assistant", i,
                               role);
    }
    prompt_builder builder = {0};
    builder_add(&builder, "");
    const char *pending_system = NULL; /* formats without a system turn: the text opening the next user turn */
    prompt_builder system_text = {0};
    for (size_t i = 0; i < count; i++) {
        const char *role = messages[i].role, *content = messages[i].content;
        if (is_system_role(role) && !markers.system_role) {
            if (system_text.length > 0)
                builder_add(&system_text, "\n\n");
            builder_add(&system_text, content);
            pending_system = system_text.text;
            continue;
        }
        const char *name = strcmp(role, "assistant") == 0 ? markers.assistant_role : is_system_role(role) ? "system"
                                                                                                          : "user";
        builder_add(&builder, markers.open);
        builder_add(&builder, name);
        builder_add(&builder, markers.middle);
        if (pending_system != NULL && strcmp(role, "user") == 0) {
            builder_add(&builder, pending_system);
            builder_add(&builder, "\n\n");
            pending_system = NULL;
            system_text.length = 0;
        }
        builder_add(&builder, content);
        builder_add(&builder, markers.close);
    }
    if (pending_system != NULL) { /* system text with no user turn after it: a user turn of its own */
        builder_add(&builder, markers.open);
        builder_add(&builder, "user");
        builder_add(&builder, markers.middle);
        builder_add(&builder, pending_system);
        builder_add(&builder, markers.close);
    }
    builder_add(&builder, markers.open);
    builder_add(&builder, markers.assistant_role);
    builder_add(&builder, markers.middle);
    bool failed = builder.failed || system_text.failed;
    free(system_text.text);
    if (failed) {
        free(builder.text);
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "cannot allocate a chat prompt of %zu messages", count);
    }
    *out = builder.text;
    return STRATA_OK;
}

strata_status chat_format_prompt(strata_chat_format format, const char *system_message, const char *user_message,
                                 char **out, strata_error *err)
{
    strata_chat_message messages[2] = {{"system", system_message}, {"user", user_message}};
    bool has_system = system_message != NULL && system_message[0] != '\0';
    return chat_format_messages(format, has_system ? messages : messages + 1, has_system ? 2 : 1, out, err);
}
