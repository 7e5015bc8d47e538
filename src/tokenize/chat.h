/* tokenize/chat.h: chat formats: wrapping messages in a model's turn markers.
 *
 * strata recognizes three formats by the markers their Jinja templates use
 * (tokenizer.chat_template) and otherwise takes the architecture's default:
 * Gemma (<start_of_turn>), ChatML (<|im_start|>, Qwen) and Llama 3
 * (<|start_header_id|>). The prompt never includes the BOS token: the
 * tokenizer adds it once. */
#ifndef STRATA_TOKENIZE_CHAT_H
#define STRATA_TOKENIZE_CHAT_H

#include <stddef.h>

#include "strata.h"

/* Returns the format a chat template's text implies, or fallback if it has no known markers. */
strata_chat_format chat_format_detect(const char *template_text, size_t length, strata_chat_format fallback);
/* Writes a newly allocated prompt: the optional system message (NULL for none)
 * and one user message in the format, ending with the assistant turn opener. */
strata_status chat_format_prompt(strata_chat_format format, const char *system_message, const char *user_message,
                                 char **out, strata_error *err);

/* Writes a newly allocated prompt of messages in turn (roles system,
 * developer, user, assistant) in the format, ending with the assistant turn
 * opener. Formats without a system turn (Gemma) open the next user turn with
 * the system text. */
strata_status chat_format_messages(strata_chat_format format, const strata_chat_message *messages, size_t count,
                                   char **out, strata_error *err);

#endif
