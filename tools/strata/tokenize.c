/* tools/strata/tokenize.c: `strata tokenize`: print the token ids of a text.
 *
 * The output matches llama.cpp's `llama-tokenize --ids` ([2, 9259, 1902]), so
 * the two can be compared with diff; --pieces prints one `id -> 'text'` line
 * per token instead, like llama-tokenize without --ids. Only the vocabulary
 * is read (gguf_open + tokenizer_load): no weights are touched, so this works
 * on vocab-only GGUF files too. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "commands.h"
#include "format/gguf.h"
#include "options.h"
#include "tokenize/tokenizer.h"

static void print_help(FILE *stream)
{
    fprintf(stream,
            "usage: strata tokenize [-m MODEL] (-p TEXT | -f FILE) [options]\n\n"
            "  -m, --model FILE     a GGUF file with a vocabulary (default: the fetch-model.sh cache)\n"
            "  -p, --prompt TEXT    the text to tokenize\n"
            "  -f, --file FILE      tokenize the contents of FILE instead\n"
            "  --pieces             print `id -> 'text'` per token instead of the id list\n"
            "  --no-bos             do not add the BOS (or EOS) the vocabulary asks for\n"
            "  --no-parse-special   treat control-token text such as <start_of_turn> as plain text\n");
}

/* Prints one token as llama-tokenize does: its text, or its raw piece when it has none (control tokens). */
static void print_piece_line(const tokenizer *tok, int32_t id)
{
    char buffer[256];
    size_t length = tokenizer_decode_token(tok, id, buffer, sizeof buffer);
    if (length == 0) {
        const char *piece = tokenizer_piece(tok, id, &length);
        printf("%6d -> '%.*s'\n", (int)id, (int)length, piece);
        return;
    }
    char *text = length <= sizeof buffer ? buffer : malloc(length);
    if (text != buffer && text != NULL)
        tokenizer_decode_token(tok, id, text, length);
    printf("%6d -> '%.*s'\n", (int)id, text != NULL ? (int)length : 0, text != NULL ? text : "");
    if (text != buffer)
        free(text);
}

int command_tokenize(int argc, char **argv)
{
    char default_model[4096];
    const char *model_path = option_default_model(default_model, sizeof default_model);
    const char *prompt = NULL, *prompt_file = NULL;
    bool pieces = false, add_special = true, parse_special = true;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
            print_help(stdout);
            return 0;
        } else if (strcmp(arg, "-m") == 0 || strcmp(arg, "--model") == 0) {
            if ((model_path = option_value("tokenize", argc, argv, &i)) == NULL)
                return 2;
        } else if (strcmp(arg, "-p") == 0 || strcmp(arg, "--prompt") == 0) {
            if ((prompt = option_value("tokenize", argc, argv, &i)) == NULL)
                return 2;
        } else if (strcmp(arg, "-f") == 0 || strcmp(arg, "--file") == 0) {
            if ((prompt_file = option_value("tokenize", argc, argv, &i)) == NULL)
                return 2;
        } else if (strcmp(arg, "--pieces") == 0) {
            pieces = true;
        } else if (strcmp(arg, "--no-bos") == 0) {
            add_special = false;
        } else if (strcmp(arg, "--no-parse-special") == 0) {
            parse_special = false;
        } else {
            fprintf(stderr, "strata tokenize: unknown option '%s'\n\n", arg);
            print_help(stderr);
            return 2;
        }
    }
    if ((prompt == NULL) == (prompt_file == NULL)) {
        fprintf(stderr, "strata tokenize: give the text with exactly one of -p TEXT or -f FILE\n\n");
        print_help(stderr);
        return 2;
    }

    size_t length = 0;
    char *file_text = NULL;
    if (prompt_file != NULL) {
        file_text = option_read_file("tokenize", prompt_file, &length);
        if (file_text == NULL)
            return 1;
    } else {
        length = strlen(prompt);
    }
    const char *text = file_text != NULL ? file_text : prompt;

    strata_error error = {0};
    gguf_file *file = NULL;
    tokenizer *tok = NULL;
    int32_t *tokens = NULL;
    size_t count = 0;
    strata_status status = gguf_open(model_path, &file, &error); /* its messages name the file */
    if (status == STRATA_OK && (status = tokenizer_load(file, &tok, &error)) != STRATA_OK)
        strata_error_prefix(&error, "%s: ", model_path);
    if (status == STRATA_OK)
        status = tokenizer_encode(tok, text, length, add_special, parse_special, &tokens, &count, &error);
    if (status != STRATA_OK) {
        fprintf(stderr, "strata tokenize: %s\n", error.message);
    } else if (pieces) {
        for (size_t i = 0; i < count; i++)
            print_piece_line(tok, tokens[i]);
    } else {
        printf("[");
        for (size_t i = 0; i < count; i++)
            printf("%s%d", i > 0 ? ", " : "", (int)tokens[i]);
        printf("]\n");
    }
    free(tokens);
    tokenizer_destroy(tok);
    gguf_close(file);
    free(file_text);
    return status == STRATA_OK ? 0 : 1;
}
