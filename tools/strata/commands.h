/* tools/strata/commands.h: the subcommands of the strata CLI.
 *
 * Each subcommand is one function in its own file, taking the arguments after
 * the subcommand name (argv[0] is the subcommand) and returning the process
 * exit status: 0 on success, 1 on a runtime error, 2 on a usage error. The
 * CLI is thin: it parses flags and calls the library. */
#ifndef STRATA_TOOLS_COMMANDS_H
#define STRATA_TOOLS_COMMANDS_H

/* strata inspect FILE: prints a GGUF file's metadata and tensor table. */
int command_inspect(int argc, char **argv);
/* strata tokenize -m FILE -p TEXT [--pieces]: prints token ids. */
int command_tokenize(int argc, char **argv);
/* strata generate -m FILE -p TEXT ...: streams generated text to stdout. */
int command_generate(int argc, char **argv);
/* strata serve -m FILE [--host H] [--port N] ...: serves the model over an OpenAI-compatible HTTP API. */
int command_serve(int argc, char **argv);
/* strata bench -m FILE ...: measures prefill and decode tokens per second. */
int command_bench(int argc, char **argv);
/* strata logits -m FILE --tokens IDS -o OUT.npy: writes teacher-forced logits. */
int command_logits(int argc, char **argv);
/* strata calibrate -m FILE [-o PROFILE]: writes the head profile the duo KV policy reads. */
int command_calibrate(int argc, char **argv);
/* strata eval --out RESULTS.jsonl ...: scores KV policies on long-context tasks and against the full cache. */
int command_eval(int argc, char **argv);

#endif
