/* tools/strata/logits.c: `strata logits`: teacher-forced logits of a token
 * sequence, written as a float32 .npy array of shape [tokens, vocab].
 *
 * This is how strata's numerics are checked against independent references
 * (tests/python): the tokens go through the model `--chunk` at a time (all at
 * once by default; --chunk 1 is pure decoding), and the logits of every
 * position are kept. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "options.h"
#include "strata.h"

static void print_help(FILE *stream)
{
    fprintf(stream,
            "usage: strata logits -m MODEL (--tokens IDS | --tokens-file FILE | -p TEXT) -o OUT.npy [options]\n\n"
            "  --tokens 1,2,3      token ids, separated by commas or spaces\n"
            "  --tokens-file FILE  token ids in a file, separated by white space or commas\n"
            "  -p, --prompt TEXT   tokenize TEXT (with BOS) instead\n"
            "  --chunk N           tokens per forward step (default: all at once)\n"
            "  -t, --threads N     compute threads\n"
            "  -o, --output FILE   the .npy file to write\n");
}

/* Parses ids separated by commas or white space into a new array. */
static bool parse_token_list(const char *text, int32_t **tokens, size_t *count)
{
    size_t capacity = 64, used = 0;
    int32_t *ids = malloc(capacity * sizeof *ids);
    const char *cursor = text;
    while (ids != NULL) {
        while (*cursor == ',' || *cursor == ' ' || *cursor == '\n' || *cursor == '\t' || *cursor == '\r')
            cursor++;
        if (*cursor == '\0')
            break;
        char *end = NULL;
        long value = strtol(cursor, &end, 10);
        if (end == cursor || value < 0 || value > INT32_MAX) {
            fprintf(stderr, "strata logits: '%.20s' is not a token id\n", cursor);
            free(ids);
            return false;
        }
        if (used == capacity) {
            capacity *= 2;
            int32_t *grown = realloc(ids, capacity * sizeof *ids);
            if (grown == NULL)
                free(ids);
            ids = grown;
            if (ids == NULL)
                break;
        }
        ids[used++] = (int32_t)value;
        cursor = end;
    }
    if (ids == NULL) {
        fprintf(stderr, "strata logits: out of memory\n");
        return false;
    }
    *tokens = ids;
    *count = used;
    return true;
}

/* Writes a version 1.0 .npy header for a little-endian float32 C-order array. */
static bool write_npy_header(FILE *file, size_t rows, size_t cols)
{
    char header[128];
    int length = snprintf(header, sizeof header, "{'descr': '<f4', 'fortran_order': False, 'shape': (%zu, %zu), }",
                          rows, cols);
    int total = 10 + length + 1;
    int padding = (64 - total % 64) % 64;
    unsigned short header_length = (unsigned short)(length + padding + 1);
    unsigned char preamble[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0,
                                  (unsigned char)(header_length & 0xff), (unsigned char)(header_length >> 8)};
    if (fwrite(preamble, 1, 10, file) != 10 || fwrite(header, 1, (size_t)length, file) != (size_t)length)
        return false;
    for (int i = 0; i < padding; i++)
        if (fputc(' ', file) == EOF)
            return false;
    return fputc('\n', file) != EOF;
}

int command_logits(int argc, char **argv)
{
    const char *model_path = NULL, *token_text = NULL, *token_file = NULL, *prompt = NULL, *output = NULL;
    long long chunk = 0, threads = 0;
    for (int i = 1; i < argc; i++) {
        const char *flag = argv[i], *value = NULL;
#define VALUE() ((value = option_value("logits", argc, argv, &i)) != NULL)
        if (strcmp(flag, "-h") == 0 || strcmp(flag, "--help") == 0) {
            print_help(stdout);
            return 0;
        } else if (strcmp(flag, "-m") == 0 || strcmp(flag, "--model") == 0) {
            if (!VALUE()) return 2;
            model_path = value;
        } else if (strcmp(flag, "--tokens") == 0) {
            if (!VALUE()) return 2;
            token_text = value;
        } else if (strcmp(flag, "--tokens-file") == 0) {
            if (!VALUE()) return 2;
            token_file = value;
        } else if (strcmp(flag, "-p") == 0 || strcmp(flag, "--prompt") == 0) {
            if (!VALUE()) return 2;
            prompt = value;
        } else if (strcmp(flag, "-o") == 0 || strcmp(flag, "--output") == 0) {
            if (!VALUE()) return 2;
            output = value;
        } else if (strcmp(flag, "--chunk") == 0) {
            if (!VALUE() || !option_parse_integer("logits", flag, value, 1, 1 << 20, &chunk)) return 2;
        } else if (strcmp(flag, "-t") == 0 || strcmp(flag, "--threads") == 0) {
            if (!VALUE() || !option_parse_integer("logits", flag, value, 1, 1024, &threads)) return 2;
        } else {
            fprintf(stderr, "strata logits: unknown option '%s' (see --help)\n", flag);
            return 2;
        }
#undef VALUE
    }
    if (model_path == NULL || output == NULL || (token_text != NULL) + (token_file != NULL) + (prompt != NULL) != 1) {
        fprintf(stderr, "strata logits: needs -m MODEL, -o OUT.npy and exactly one of --tokens, --tokens-file, -p\n");
        return 2;
    }
    strata_error error = {0};
    strata_model *model = NULL;
    strata_session *session = NULL;
    int32_t *tokens = NULL;
    size_t count = 0;
    char *file_text = NULL;
    FILE *file = NULL;
    int exit_code = 1;
    strata_model_options model_options = {.threads = (int)threads};
    if (strata_model_open(model_path, &model_options, &model, &error) != STRATA_OK)
        goto fail;
    if (prompt != NULL) {
        if (strata_tokenize(model, prompt, strlen(prompt), true, false, &tokens, &count, &error) != STRATA_OK)
            goto fail;
    } else {
        size_t length = 0;
        if (token_file != NULL && (file_text = option_read_file("logits", token_file, &length)) == NULL)
            goto cleanup;
        if (!parse_token_list(token_file != NULL ? file_text : token_text, &tokens, &count))
            goto cleanup;
    }
    if (count == 0) {
        fprintf(stderr, "strata logits: no tokens given\n");
        goto cleanup;
    }
    strata_session_options session_options = {.context_length = (int32_t)count};
    if (strata_session_create(model, &session_options, &session, &error) != STRATA_OK)
        goto fail;
    file = fopen(output, "wb");
    if (file == NULL) {
        perror(output);
        goto cleanup;
    }
    size_t vocab = (size_t)strata_model_vocab_size(model);
    if (!write_npy_header(file, count, vocab))
        goto write_failed;
    size_t step = chunk > 0 ? (size_t)chunk : count;
    for (size_t done = 0; done < count; done += step) {
        size_t n = count - done < step ? count - done : step;
        if (strata_session_append(session, tokens + done, n, true, &error) != STRATA_OK)
            goto fail;
        for (size_t i = 0; i < n; i++)
            if (fwrite(strata_session_logits(session, i), sizeof(float), vocab, file) != vocab)
                goto write_failed;
    }
    if (fclose(file) != 0) {
        file = NULL;
        goto write_failed;
    }
    file = NULL;
    exit_code = 0;
    goto cleanup;
write_failed:
    fprintf(stderr, "strata logits: cannot write %s\n", output);
    goto cleanup;
fail:
    fprintf(stderr, "strata logits: %s\n", error.message);
cleanup:
    if (file != NULL)
        fclose(file);
    free(file_text);
    free(tokens);
    strata_session_destroy(session);
    strata_model_close(model);
    return exit_code;
}
