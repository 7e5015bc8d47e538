/* tools/strata/main.c: the strata command line: dispatch to a subcommand.
 *
 * Usage: strata <command> [options]; `strata <command> --help` explains one. */
#include <stdio.h>
#include <string.h>

#include "commands.h"

typedef struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} command;

static const command commands[] = {
    {"generate", command_generate, "generate text from a prompt, streamed to stdout"},
    {"serve", command_serve, "serve the model over an OpenAI-compatible HTTP API"},
    {"bench", command_bench, "measure prefill and decode tokens per second"},
    {"tokenize", command_tokenize, "print the token ids of a text"},
    {"inspect", command_inspect, "print a GGUF file's metadata and tensors"},
    {"logits", command_logits, "write the teacher-forced logits of a token sequence as .npy"},
    {"eval", command_eval, "score KV policies x budgets on long-context tasks and against the full cache"},
    {"calibrate", command_calibrate, "score each (layer, KV head) for retrieval: the head profile of --kv-policy duo"},
};

static void print_usage(FILE *stream)
{
    fprintf(stream, "usage: strata <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(stream, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(stream, "\n`strata <command> --help` describes a command's options.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        print_usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        print_usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(argv[1], commands[i].name) == 0)
            return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "strata: unknown command '%s'\n\n", argv[1]);
    print_usage(stderr);
    return 2;
}
