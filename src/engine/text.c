/* engine/text.c: the text side of the public API: tokenizing, turning tokens
 * back into text and building chat prompts, for a loaded model. Implements
 * strata_tokenize, strata_token_to_text, strata_token_piece,
 * strata_token_is_end_of_generation and strata_chat_prompt of strata.h. */
#include <string.h>

#include "base/error.h"
#include "model/model.h"
#include "tokenize/chat.h"

strata_status strata_tokenize(const strata_model *model, const char *text, size_t length, bool add_bos,
                              bool parse_special, int32_t **tokens, size_t *count, strata_error *error)
{
    return tokenizer_encode(model->tokenizer, text, length, add_bos, parse_special, tokens, count, error);
}

size_t strata_token_to_text(const strata_model *model, int32_t token, char *buffer, size_t capacity)
{
    return tokenizer_decode_token(model->tokenizer, token, buffer, capacity);
}

const char *strata_token_piece(const strata_model *model, int32_t token)
{
    return tokenizer_piece(model->tokenizer, token, NULL);
}

bool strata_token_is_end_of_generation(const strata_model *model, int32_t token)
{
    return tokenizer_is_end_of_generation(model->tokenizer, token);
}

strata_chat_format strata_model_chat_format(const strata_model *model)
{
    gguf_string template_text = {0};
    bool found = false;
    if (gguf_get_string(model->file, "tokenizer.chat_template", &template_text, &found, NULL) != STRATA_OK)
        found = false; /* a chat template of the wrong type: fall back to the architecture's format */
    return chat_format_detect(found ? template_text.data : NULL, template_text.length, model->arch->chat_format);
}

strata_status strata_chat_prompt(const strata_model *model, const char *system_message, const char *user_message,
                                 char **prompt, strata_error *error)
{
    return chat_format_prompt(strata_model_chat_format(model), system_message, user_message, prompt, error);
}

strata_status strata_chat_prompt_messages(const strata_model *model, const strata_chat_message *messages,
                                          size_t count, char **prompt, strata_error *error)
{
    return chat_format_messages(strata_model_chat_format(model), messages, count, prompt, error);
}
