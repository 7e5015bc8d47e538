/* tools/strata/generate.c: `strata generate`: prefill a prompt, then decode and
 * stream the generated text to stdout.
 *
 * Only generated text goes to stdout; the loading message, the seed and the
 * timings go to stderr, so the output can be piped. Text that might be the
 * start of a stop string is held back until it is clear it is not. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "commands.h"
#include "options.h"
#include "strata.h"

enum { MAX_STOP_STRINGS = 16 };

typedef struct generate_options {
    const char *model_path;
    const char *prompt;
    const char *prompt_file;
    const char *system_message;
    long long max_tokens;
    long long threads;
    long long context;
    long long parallel;
    uint64_t kv_memory;
    int kv_type;
    const char *kv_policy;
    long long kv_budget_tokens;
    double kv_budget_ratio;
    char kv_params[512];
    const char *kv_profile;
    bool kv_report;
    bool chat;
    bool seed_given;
    strata_sampler_options sampling;
    const char *stop[MAX_STOP_STRINGS];
    int stop_count;
} generate_options;

static void print_help(FILE *stream)
{
    fprintf(stream,
            "usage: strata generate [-m MODEL] (-p TEXT | -f FILE) [options]\n\n"
            "  -m, --model FILE        GGUF model (default: the fetched Gemma 3 270M)\n"
            "  -p, --prompt TEXT       prompt text\n"
            "  -f, --file FILE         read the prompt from a file\n"
            "  -n, --n-predict N       tokens to generate at most (default 128)\n"
            "      --chat              wrap the prompt in the model's chat format\n"
            "      --system TEXT       system message (with --chat)\n"
            "      --temp T            temperature; 0 is greedy (default 0.8)\n"
            "      --top-k K           keep the K most likely tokens; 0 disables (default 40)\n"
            "      --top-p P           nucleus sampling; 1 disables (default 0.95)\n"
            "      --min-p P           drop tokens below P times the best; 0 disables (default 0.05)\n"
            "      --repeat-penalty R  penalty for recent tokens; 1 disables (default 1)\n"
            "      --repeat-last-n N   how many recent tokens the penalty sees (default 64)\n"
            "      --seed S            random seed (default: from the clock, printed)\n"
            "      --stop TEXT         stop when TEXT is generated (repeatable)\n"
            "  -t, --threads N         compute threads (default: one per core)\n"
            "  -c, --ctx-size N        context length (default: the model's, at most 8192)\n"
            "      --parallel N        generate N continuations of the prompt at once (seeds S, S+1, ...);\n"
            "                          they share the prompt's KV blocks and decode in one batch\n"
            "      --kv-mem SIZE       KV pool budget, e.g. 512M or 2G (default: from the model and machine)\n"
            "      --kv-type T         KV storage: f32 (default), f16 or bf16\n"
            "      --kv-policy NAME[+PRECISION]  KV compression policy and/or precision (see below); default full\n"
            "      --kv-budget N|R%%    slots each (layer, KV head) keeps: N tokens, or R%% of the prompt\n"
            "      --kv-param K=V      a policy parameter (repeatable)\n"
            "      --kv-profile FILE   head profile from `strata calibrate` (for --kv-policy duo)\n"
            "      --kv-report         print KV slots and bytes by layer and head at the end\n"
            "\nKV policies: %s\nKV precisions (alone or as POLICY+PRECISION): %s\n", strata_kv_policies(),
            strata_kv_precisions());
}

static int parse_options(int argc, char **argv, generate_options *o)
{
    *o = (generate_options){.max_tokens = 128, .parallel = 1};
    o->sampling = strata_sampler_defaults();
    o->sampling.temperature = 0.8f;
    o->sampling.top_k = 40;
    o->sampling.top_p = 0.95f;
    o->sampling.min_p = 0.05f;
    for (int i = 1; i < argc; i++) {
        const char *flag = argv[i];
        const char *value = NULL;
        long long integer;
        double number;
#define VALUE() ((value = option_value("generate", argc, argv, &i)) != NULL)
        if (strcmp(flag, "-h") == 0 || strcmp(flag, "--help") == 0) {
            print_help(stdout);
            return 0;
        } else if (strcmp(flag, "-m") == 0 || strcmp(flag, "--model") == 0) {
            if (!VALUE()) return 2;
            o->model_path = value;
        } else if (strcmp(flag, "-p") == 0 || strcmp(flag, "--prompt") == 0) {
            if (!VALUE()) return 2;
            o->prompt = value;
        } else if (strcmp(flag, "-f") == 0 || strcmp(flag, "--file") == 0) {
            if (!VALUE()) return 2;
            o->prompt_file = value;
        } else if (strcmp(flag, "--system") == 0) {
            if (!VALUE()) return 2;
            o->system_message = value;
        } else if (strcmp(flag, "--chat") == 0) {
            o->chat = true;
        } else if (strcmp(flag, "-n") == 0 || strcmp(flag, "--n-predict") == 0) {
            if (!VALUE() || !option_parse_integer("generate", flag, value, 0, 1 << 30, &o->max_tokens)) return 2;
        } else if (strcmp(flag, "-t") == 0 || strcmp(flag, "--threads") == 0) {
            if (!VALUE() || !option_parse_integer("generate", flag, value, 1, 1024, &o->threads)) return 2;
        } else if (strcmp(flag, "-c") == 0 || strcmp(flag, "--ctx-size") == 0) {
            if (!VALUE() || !option_parse_integer("generate", flag, value, 1, 1 << 24, &o->context)) return 2;
        } else if (strcmp(flag, "--temp") == 0) {
            if (!VALUE() || !option_parse_float("generate", flag, value, 0, 100, &number)) return 2;
            o->sampling.temperature = (float)number;
        } else if (strcmp(flag, "--top-k") == 0) {
            if (!VALUE() || !option_parse_integer("generate", flag, value, 0, 1 << 24, &integer)) return 2;
            o->sampling.top_k = (int32_t)integer;
        } else if (strcmp(flag, "--top-p") == 0) {
            if (!VALUE() || !option_parse_float("generate", flag, value, 1e-6, 1, &number)) return 2;
            o->sampling.top_p = (float)number;
        } else if (strcmp(flag, "--min-p") == 0) {
            if (!VALUE() || !option_parse_float("generate", flag, value, 0, 1, &number)) return 2;
            o->sampling.min_p = (float)number;
        } else if (strcmp(flag, "--repeat-penalty") == 0) {
            if (!VALUE() || !option_parse_float("generate", flag, value, 1e-3, 100, &number)) return 2;
            o->sampling.repetition_penalty = (float)number;
        } else if (strcmp(flag, "--repeat-last-n") == 0) {
            if (!VALUE() || !option_parse_integer("generate", flag, value, 0, 1 << 20, &integer)) return 2;
            o->sampling.repetition_window = (int32_t)integer;
        } else if (strcmp(flag, "--seed") == 0) {
            if (!VALUE() || !option_parse_integer("generate", flag, value, 0, INT64_MAX, &integer)) return 2;
            o->sampling.seed = (uint64_t)integer;
            o->seed_given = true;
        } else if (strcmp(flag, "--parallel") == 0) {
            if (!VALUE() || !option_parse_integer("generate", flag, value, 1, 256, &o->parallel)) return 2;
        } else if (strcmp(flag, "--kv-mem") == 0) {
            if (!VALUE() || !option_parse_bytes("generate", flag, value, &o->kv_memory)) return 2;
        } else if (strcmp(flag, "--kv-type") == 0) {
            if (!VALUE() || !option_parse_kv_type("generate", value, &o->kv_type)) return 2;
        } else if (strcmp(flag, "--kv-policy") == 0) {
            if (!VALUE()) return 2;
            o->kv_policy = value;
        } else if (strcmp(flag, "--kv-budget") == 0) {
            if (!VALUE()) return 2;
            size_t length = strlen(value);
            if (length > 1 && value[length - 1] == '%') {
                char percent[32];
                snprintf(percent, sizeof percent, "%.*s", (int)(length - 1 < 31 ? length - 1 : 31), value);
                if (!option_parse_float("generate", flag, percent, 0.001, 100, &number)) return 2;
                o->kv_budget_ratio = number / 100.0;
            } else if (!option_parse_integer("generate", flag, value, 1, 1 << 30, &o->kv_budget_tokens)) {
                return 2;
            }
        } else if (strcmp(flag, "--kv-param") == 0) {
            if (!VALUE()) return 2;
            size_t used = strlen(o->kv_params);
            if (strchr(value, '=') == NULL || used + strlen(value) + 2 > sizeof o->kv_params) {
                fprintf(stderr, "strata generate: --kv-param expects NAME=VALUE, got '%s'\n", value);
                return 2;
            }
            snprintf(o->kv_params + used, sizeof o->kv_params - used, "%s%s", used > 0 ? "," : "", value);
        } else if (strcmp(flag, "--kv-profile") == 0) {
            if (!VALUE()) return 2;
            o->kv_profile = value;
        } else if (strcmp(flag, "--kv-report") == 0) {
            o->kv_report = true;
        } else if (strcmp(flag, "--stop") == 0) {
            if (!VALUE()) return 2;
            if (value[0] == '\0' || o->stop_count == MAX_STOP_STRINGS) {
                fprintf(stderr, "strata generate: --stop takes a non-empty text, at most %d times\n",
                        MAX_STOP_STRINGS);
                return 2;
            }
            o->stop[o->stop_count++] = value;
        } else {
            fprintf(stderr, "strata generate: unknown option '%s' (see --help)\n", flag);
            return 2;
        }
#undef VALUE
    }
    if ((o->prompt == NULL) == (o->prompt_file == NULL)) {
        fprintf(stderr, "strata generate: give the prompt with exactly one of -p TEXT or -f FILE\n");
        return 2;
    }
    return -1; /* parsed; go on */
}

/* Output with stop strings: bytes wait in `pending` while they could still
 * become a stop string. */
typedef struct output_stream {
    char *pending;
    size_t length;
    size_t capacity;
    const generate_options *options;
    FILE *sink; /* where released text goes; NULL means stdout */
} output_stream;

/* Appends text; returns true when a stop string completed (text before it is written). */
static bool output_push(output_stream *out, const char *text, size_t length)
{
    if (out->length + length + 1 > out->capacity) {
        size_t capacity = (out->length + length + 1) * 2;
        char *grown = realloc(out->pending, capacity);
        if (grown == NULL)
            return true;
        out->pending = grown;
        out->capacity = capacity;
    }
    memcpy(out->pending + out->length, text, length);
    out->length += length;
    out->pending[out->length] = '\0';
    size_t stop_at = out->length;
    for (int i = 0; i < out->options->stop_count; i++) {
        const char *found = strstr(out->pending, out->options->stop[i]);
        if (found != NULL && (size_t)(found - out->pending) < stop_at)
            stop_at = (size_t)(found - out->pending);
    }
    FILE *sink = out->sink != NULL ? out->sink : stdout;
    if (stop_at < out->length) {
        fwrite(out->pending, 1, stop_at, sink);
        out->length = 0;
        return true;
    }
    /* Hold back the longest tail that is a prefix of a stop string. */
    size_t hold = 0;
    for (int i = 0; i < out->options->stop_count; i++) {
        size_t stop_length = strlen(out->options->stop[i]);
        for (size_t tail = stop_length - 1; tail > hold; tail--)
            if (tail <= out->length && memcmp(out->pending + out->length - tail, out->options->stop[i], tail) == 0) {
                hold = tail;
                break;
            }
    }
    fwrite(out->pending, 1, out->length - hold, sink);
    memmove(out->pending, out->pending + out->length - hold, hold);
    out->length = hold;
    fflush(sink);
    return false;
}

static double now_seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* --kv-report: the session's KV slots and bytes by layer and KV head, on stderr. */
static void print_kv_report(const strata_model *model, const strata_session *session)
{
    int32_t heads = 0, layers = strata_model_kv_layout(model, &heads);
    int64_t *slots = calloc((size_t)layers * (size_t)heads, sizeof *slots);
    uint64_t *bytes = calloc((size_t)layers * (size_t)heads, sizeof *bytes);
    if (slots == NULL || bytes == NULL) {
        free(slots);
        free(bytes);
        return;
    }
    strata_session_kv_slots(session, slots);
    strata_session_kv_table_bytes(session, bytes);
    strata_kv_stats stats;
    strata_model_kv_stats(model, &stats);
    fprintf(stderr, "KV report (%d layers x %d KV heads; %llu bytes per full-precision block of %d slots):\n", layers,
            heads, (unsigned long long)stats.block_bytes, stats.block_tokens);
    int64_t total_slots = 0;
    for (int32_t il = 0; il < layers; il++) {
        fprintf(stderr, "  layer %2d:", il);
        for (int32_t h = 0; h < heads; h++) {
            int64_t held = slots[il * heads + h];
            total_slots += held;
            fprintf(stderr, " head %d %lld slots %llu bytes%s", h, (long long)held,
                    (unsigned long long)bytes[il * heads + h], h + 1 < heads ? ";" : "");
        }
        fputc('\n', stderr);
    }
    uint64_t shared = 0, held_bytes = strata_session_kv_bytes(session, &shared);
    fprintf(stderr, "  session: %lld slots, %llu bytes (%llu shared); %.1f bytes per slot; pool: %llu of %llu bytes in use\n",
            (long long)total_slots, (unsigned long long)held_bytes, (unsigned long long)shared,
            total_slots > 0 ? (double)held_bytes / (double)total_slots : 0.0, (unsigned long long)stats.used_bytes,
            (unsigned long long)stats.budget_bytes);
    free(slots);
    free(bytes);
}

/* One continuation of --parallel: its session, sampler and text so far. */
typedef struct continuation {
    strata_session *session;
    strata_sampler *sampler;
    output_stream out;  /* collects the text (stop strings apply) */
    FILE *text;         /* memory stream the text is written to */
    char *text_buffer;
    size_t text_length;
    long long generated;
    bool done;
} continuation;

/* --parallel N: forks the prefilled session N - 1 times (the prompt's KV
 * blocks are shared, not copied) and decodes all N in batched steps, then
 * prints each continuation. Returns the exit code; fills error on failure. */
static int generate_parallel(strata_model *model, strata_session *prompt_session, const generate_options *o,
                             strata_error *error, double prefill_start)
{
    int count = (int)o->parallel, exit_code = 1;
    continuation *c = calloc((size_t)count, sizeof *c);
    strata_session **step_sessions = calloc((size_t)count, sizeof *step_sessions);
    int32_t *step_tokens = calloc((size_t)count, sizeof *step_tokens);
    const int32_t **step_pointers = calloc((size_t)count, sizeof *step_pointers);
    size_t *step_counts = calloc((size_t)count, sizeof *step_counts);
    if (c == NULL || step_sessions == NULL || step_tokens == NULL || step_pointers == NULL || step_counts == NULL) {
        error->status = STRATA_E_OUT_OF_MEMORY;
        snprintf(error->message, sizeof error->message, "cannot allocate %d continuations", count);
        goto cleanup;
    }
    double decode_start = now_seconds();
    for (int i = 0; i < count; i++) {
        strata_sampler_options sampling = o->sampling;
        sampling.seed = o->sampling.seed + (uint64_t)i;
        if (i == 0)
            c[i].session = prompt_session;
        else if (strata_session_fork(prompt_session, &c[i].session, error) != STRATA_OK)
            goto cleanup;
        if (strata_sampler_create(&sampling, strata_model_vocab_size(model), &c[i].sampler, error) != STRATA_OK)
            goto cleanup;
        c[i].text = open_memstream(&c[i].text_buffer, &c[i].text_length);
        if (c[i].text == NULL) {
            error->status = STRATA_E_OUT_OF_MEMORY;
            snprintf(error->message, sizeof error->message, "cannot open an output buffer");
            goto cleanup;
        }
        c[i].out = (output_stream){.options = o, .sink = c[i].text};
    }
    uint64_t shared_bytes = 0;
    uint64_t first_bytes = strata_session_kv_bytes(c[0].session, &shared_bytes);
    fprintf(stderr, "strata: %d continuations share the prompt's KV: %llu of the first one's %llu KV bytes are shared\n",
            count, (unsigned long long)shared_bytes, (unsigned long long)first_bytes);
    long long total_generated = 0;
    char piece[256];
    for (;;) {
        int active = 0;
        for (int i = 0; i < count; i++) {
            if (c[i].done)
                continue;
            int32_t next = strata_sampler_sample(c[i].sampler, strata_session_logits(c[i].session, 0));
            c[i].generated++;
            total_generated++;
            size_t length = strata_token_is_end_of_generation(model, next) ? 0 : strata_token_to_text(model, next, piece, sizeof piece);
            bool stop = strata_token_is_end_of_generation(model, next) ||
                        output_push(&c[i].out, piece, length < sizeof piece ? length : sizeof piece) ||
                        c[i].generated >= o->max_tokens;
            if (stop) {
                c[i].done = true;
                continue;
            }
            step_tokens[active] = next;
            step_sessions[active] = c[i].session;
            step_pointers[active] = &step_tokens[active];
            step_counts[active] = 1;
            active++;
        }
        if (active == 0)
            break;
        /* step_pointers point into step_tokens, which keeps its place. */
        if (strata_sessions_append(step_sessions, step_pointers, step_counts, (size_t)active, error) != STRATA_OK)
            goto cleanup;
    }
    double end = now_seconds();
    for (int i = 0; i < count; i++) {
        fwrite(c[i].out.pending, 1, c[i].out.length, c[i].text);
        fflush(c[i].text);
        printf("--- continuation %d (seed %llu)\n%.*s\n", i + 1, (unsigned long long)(o->sampling.seed + (uint64_t)i),
               (int)c[i].text_length, c[i].text_buffer);
    }
    strata_kv_stats stats;
    strata_model_kv_stats(model, &stats);
    fprintf(stderr, "strata: prefill %.3f s; %lld tokens over %d continuations in %.3f s (%.1f tok/s); KV in use %llu bytes (%llu shared)\n",
            decode_start - prefill_start, total_generated, count, end - decode_start,
            (double)total_generated / (end - decode_start), (unsigned long long)stats.used_bytes,
            (unsigned long long)stats.shared_bytes);
    exit_code = 0;
cleanup:
    for (int i = 0; c != NULL && i < count; i++) {
        if (c[i].text != NULL)
            fclose(c[i].text);
        free(c[i].text_buffer);
        free(c[i].out.pending);
        strata_sampler_destroy(c[i].sampler);
        if (i > 0)
            strata_session_destroy(c[i].session);
    }
    free(c);
    free(step_sessions);
    free(step_tokens);
    free(step_pointers);
    free(step_counts);
    return exit_code;
}

int command_generate(int argc, char **argv)
{
    generate_options o;
    int parsed = parse_options(argc, argv, &o);
    if (parsed >= 0)
        return parsed;
    char default_model[1024];
    if (o.model_path == NULL)
        o.model_path = option_default_model(default_model, sizeof default_model);
    if (!o.seed_given)
        o.sampling.seed = (uint64_t)time(NULL);

    char *prompt_text = NULL;
    size_t prompt_length = 0;
    if (o.prompt_file != NULL && (prompt_text = option_read_file("generate", o.prompt_file, &prompt_length)) == NULL)
        return 1;
    const char *prompt = o.prompt_file != NULL ? prompt_text : o.prompt;

    strata_error error = {0};
    strata_model *model = NULL;
    strata_session *session = NULL;
    strata_sampler *sampler = NULL;
    char *chat_prompt = NULL;
    int32_t *tokens = NULL;
    size_t token_count = 0;
    output_stream out = {.options = &o};
    int exit_code = 1;
    strata_model_options model_options = {.threads = (int)o.threads, .kv_memory_bytes = o.kv_memory,
                                          .kv_type = (strata_kv_type)o.kv_type};
    strata_session_options session_options = {.context_length = (int32_t)o.context,
                                              .kv_policy = o.kv_policy,
                                              .kv_budget_tokens = o.kv_budget_tokens,
                                              .kv_budget_ratio = (float)o.kv_budget_ratio,
                                              .kv_policy_params = o.kv_params[0] != '\0' ? o.kv_params : NULL,
                                              .kv_head_profile = o.kv_profile};

    double load_start = now_seconds();
    if (strata_model_open(o.model_path, &model_options, &model, &error) != STRATA_OK)
        goto fail;
    if (o.chat && strata_chat_prompt(model, o.system_message, prompt, &chat_prompt, &error) != STRATA_OK)
        goto fail;
    const char *text = o.chat ? chat_prompt : prompt;
    /* A chat prompt carries its control tokens as text; plain prompts are taken literally. */
    if (strata_tokenize(model, text, strlen(text), true, o.chat, &tokens, &token_count, &error) != STRATA_OK)
        goto fail;
    if (token_count == 0) {
        fprintf(stderr, "strata generate: the prompt is empty\n");
        goto cleanup;
    }
    if (strata_session_create(model, &session_options, &session, &error) != STRATA_OK)
        goto fail;
    if (strata_sampler_create(&o.sampling, strata_model_vocab_size(model), &sampler, &error) != STRATA_OK)
        goto fail;
    fprintf(stderr, "strata: %s (%s), %zu prompt tokens, seed %llu, loaded in %.2f s\n", strata_model_name(model),
            strata_model_architecture(model), token_count, (unsigned long long)o.sampling.seed,
            now_seconds() - load_start);
    for (size_t i = 0; i < token_count; i++)
        strata_sampler_accept(sampler, tokens[i]);

    double prefill_start = now_seconds();
    if (strata_session_append(session, tokens, token_count, false, &error) != STRATA_OK)
        goto fail;
    if (o.parallel > 1) {
        exit_code = generate_parallel(model, session, &o, &error, prefill_start);
        if (exit_code != 0 && error.message[0] != '\0')
            goto fail;
        goto cleanup;
    }
    double decode_start = now_seconds();
    long long generated = 0;
    char piece[256];
    while (generated < o.max_tokens) {
        int32_t next = strata_sampler_sample(sampler, strata_session_logits(session, 0));
        generated++;
        if (strata_token_is_end_of_generation(model, next))
            break;
        size_t length = strata_token_to_text(model, next, piece, sizeof piece);
        if (output_push(&out, piece, length < sizeof piece ? length : sizeof piece))
            break;
        if (generated == o.max_tokens)
            break;
        if (strata_session_append(session, &next, 1, false, &error) != STRATA_OK) {
            if (error.status == STRATA_E_CONTEXT_FULL) {
                fprintf(stderr, "\nstrata generate: stopped: %s\n", error.message);
                break;
            }
            goto fail;
        }
    }
    fwrite(out.pending, 1, out.length, stdout);
    fputc('\n', stdout);
    fflush(stdout);
    double end = now_seconds();
    double prefill_seconds = decode_start - prefill_start, decode_seconds = end - decode_start;
    fprintf(stderr, "strata: prefill %zu tokens in %.3f s (%.1f tok/s); generated %lld tokens in %.3f s (%.1f tok/s)\n",
            token_count, prefill_seconds, (double)token_count / prefill_seconds, generated, decode_seconds,
            generated > 0 ? (double)generated / decode_seconds : 0.0);
    if (o.kv_report)
        print_kv_report(model, session);
    exit_code = 0;
    goto cleanup;
fail:
    fprintf(stderr, "strata generate: %s\n", error.message);
cleanup:
    free(out.pending);
    free(tokens);
    free(chat_prompt);
    free(prompt_text);
    strata_sampler_destroy(sampler);
    strata_session_destroy(session);
    strata_model_close(model);
    return exit_code;
}
