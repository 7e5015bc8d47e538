/* tools/strata/eval.c: `strata eval`: what each KV policy costs in quality,
 * memory and speed on the user's own model.
 *
 * Parses the lists (tasks, haystacks, lengths, depths, policies, budgets)
 * and hands them to the harness (eval/eval.h), which prefills each sample
 * once and forks the cache into every policy. Results go to a JSON lines
 * file (resumable) and a summary CSV; progress to stderr. Plots and a
 * Markdown table come from scripts/eval_report.py over the JSON lines. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "eval/eval.h"
#include "eval/tasks.h"
#include "options.h"
#include "strata.h"

static void print_help(FILE *stream)
{
    fprintf(stream,
            "usage: strata eval [-m MODEL] --out RESULTS.jsonl [options]\n\n"
            "Runs synthetic long-context tasks and fidelity checks for each KV policy x budget,\n"
            "prefilling every sample once and forking its cache into each policy. Appends one\n"
            "JSON record per sample and policy to RESULTS.jsonl (a rerun skips what is there),\n"
            "rewrites a summary CSV, and shows progress with an ETA on stderr.\n\n"
            "  -m, --model FILE      GGUF model (default: the fetched Gemma 3 270M)\n"
            "  -o, --out FILE        results, JSON lines (appended; required)\n"
            "      --csv FILE        summary CSV (default: the results' name with .csv)\n"
            "  -t, --threads N       compute threads (default: one per core)\n"
            "      --tasks LIST      tasks, or all (default all): %s\n"
            "      --haystacks LIST  noise, prose (default noise; prose: scripts/fetch-prose.sh)\n"
            "      --prose FILE      the prose text (default: the fetched Debian Administrator's Handbook)\n"
            "      --lengths LIST    context lengths in tokens (default 4096)\n"
            "      --depths LIST     needle depths 0..1, cycled over the samples (default 0,0.25,0.5,0.75,1)\n"
            "      --samples N       samples per task, haystack and length (default 10)\n"
            "      --seed S          seed of the samples (default 1)\n"
            "      --policies LIST   KV policies, POLICY[+PRECISION] (default full): %s; %s\n"
            "      --budgets LIST    budgets in tokens for the policies that take one (default 1024)\n"
            "      --kv-param K=V    a parameter given to every policy (repeatable)\n"
            "      --kv-profile FILE head profile for duo (strata calibrate)\n"
            "      --observation N   prompt queries whose attention the prefill keeps for the policies (default 32)\n"
            "      --answer-tokens N greedy tokens per answer, at most (default 32)\n"
            "      --fidelity N      fidelity samples per length on real prose (default 0)\n"
            "      --fidelity-positions N  teacher-forced positions of the KL divergence (default 256)\n"
            "      --fidelity-continuation N  greedy tokens of the top-1 agreement (default 64)\n"
            "      --no-progress     no progress line\n",
            eval_task_kind_names(), strata_kv_policies(), strata_kv_precisions());
}

/* Parses a comma-separated list of integers into values (at most EVAL_MAX_LIST). */
static bool parse_integers(const char *flag, const char *text, long long minimum, long long maximum, int64_t *values,
                           int *count)
{
    char copy[512];
    snprintf(copy, sizeof copy, "%s", text);
    *count = 0;
    char *save = NULL;
    for (char *part = strtok_r(copy, ",", &save); part != NULL; part = strtok_r(NULL, ",", &save)) {
        long long value;
        if (*count == EVAL_MAX_LIST || !option_parse_integer("eval", flag, part, minimum, maximum, &value))
            return false;
        values[(*count)++] = value;
    }
    return *count > 0;
}

static bool parse_depths(const char *text, double *values, int *count)
{
    char copy[512];
    snprintf(copy, sizeof copy, "%s", text);
    *count = 0;
    char *save = NULL;
    for (char *part = strtok_r(copy, ",", &save); part != NULL; part = strtok_r(NULL, ",", &save)) {
        if (*count == EVAL_MAX_LIST || !option_parse_float("eval", "--depths", part, 0.0, 1.0, &values[*count]))
            return false;
        (*count)++;
    }
    return *count > 0;
}

int command_eval(int argc, char **argv)
{
    eval_options o;
    eval_options_default(&o);
    o.progress = true;
    const char *model_path = NULL;
    long long threads = 0, value_integer;
    char params[1024] = "";
    for (int i = 1; i < argc; i++) {
        const char *flag = argv[i];
        const char *value = NULL;
#define VALUE() ((value = option_value("eval", argc, argv, &i)) != NULL)
#define INTEGER(minimum, maximum) (VALUE() && option_parse_integer("eval", flag, value, minimum, maximum, &value_integer))
        if (strcmp(flag, "-h") == 0 || strcmp(flag, "--help") == 0) {
            print_help(stdout);
            return 0;
        } else if (strcmp(flag, "-m") == 0 || strcmp(flag, "--model") == 0) {
            if (!VALUE()) return 2;
            model_path = value;
        } else if (strcmp(flag, "-o") == 0 || strcmp(flag, "--out") == 0) {
            if (!VALUE()) return 2;
            o.out_path = value;
        } else if (strcmp(flag, "--csv") == 0) {
            if (!VALUE()) return 2;
            o.csv_path = value;
        } else if (strcmp(flag, "-t") == 0 || strcmp(flag, "--threads") == 0) {
            if (!INTEGER(1, 1024)) return 2;
            threads = value_integer;
        } else if (strcmp(flag, "--tasks") == 0) {
            if (!VALUE()) return 2;
            o.tasks = value;
        } else if (strcmp(flag, "--haystacks") == 0) {
            if (!VALUE()) return 2;
            o.haystacks = value;
        } else if (strcmp(flag, "--prose") == 0) {
            if (!VALUE()) return 2;
            o.prose_path = value;
        } else if (strcmp(flag, "--lengths") == 0) {
            if (!VALUE() || !parse_integers(flag, value, 64, 1 << 24, o.lengths, &o.length_count)) return 2;
        } else if (strcmp(flag, "--depths") == 0) {
            if (!VALUE() || !parse_depths(value, o.depths, &o.depth_count)) return 2;
        } else if (strcmp(flag, "--samples") == 0) {
            if (!INTEGER(0, 1 << 20)) return 2;
            o.samples = (int)value_integer;
        } else if (strcmp(flag, "--seed") == 0) {
            if (!INTEGER(0, INT64_MAX)) return 2;
            o.seed = (uint64_t)value_integer;
        } else if (strcmp(flag, "--policies") == 0) {
            if (!VALUE()) return 2;
            o.policies = value;
        } else if (strcmp(flag, "--budgets") == 0) {
            if (!VALUE() || !parse_integers(flag, value, 1, 1 << 24, o.budgets, &o.budget_count)) return 2;
        } else if (strcmp(flag, "--kv-param") == 0) {
            if (!VALUE()) return 2;
            size_t used = strlen(params);
            if (used + strlen(value) + 2 > sizeof params) {
                fprintf(stderr, "strata eval: --kv-param values exceed %zu characters\n", sizeof params - 1);
                return 2;
            }
            snprintf(params + used, sizeof params - used, "%s%s", used > 0 ? "," : "", value);
        } else if (strcmp(flag, "--kv-profile") == 0) {
            if (!VALUE()) return 2;
            o.head_profile = value;
        } else if (strcmp(flag, "--observation") == 0) {
            if (!INTEGER(1, 1 << 20)) return 2;
            o.observation = (int32_t)value_integer;
        } else if (strcmp(flag, "--answer-tokens") == 0) {
            if (!INTEGER(1, 4096)) return 2;
            o.max_answer_tokens = (int)value_integer;
        } else if (strcmp(flag, "--fidelity") == 0) {
            if (!INTEGER(0, 1 << 20)) return 2;
            o.fidelity_samples = (int)value_integer;
        } else if (strcmp(flag, "--fidelity-positions") == 0) {
            if (!INTEGER(1, 1 << 16)) return 2;
            o.fidelity_positions = (int)value_integer;
        } else if (strcmp(flag, "--fidelity-continuation") == 0) {
            if (!INTEGER(1, 1 << 16)) return 2;
            o.fidelity_continuation = (int)value_integer;
        } else if (strcmp(flag, "--no-progress") == 0) {
            o.progress = false;
        } else {
            fprintf(stderr, "strata eval: unknown option '%s' (see --help)\n", flag);
            return 2;
        }
#undef INTEGER
#undef VALUE
    }
    if (o.out_path == NULL) {
        fprintf(stderr, "strata eval: give --out RESULTS.jsonl (see --help)\n");
        return 2;
    }
    if (params[0] != '\0')
        o.policy_params = params;
    char default_model[1024];
    if (model_path == NULL)
        model_path = option_default_model(default_model, sizeof default_model);

    strata_error error = {0};
    strata_model *model = NULL;
    strata_model_options model_options = {.threads = (int)threads};
    int exit_code = 1;
    if (strata_model_open(model_path, &model_options, &model, &error) == STRATA_OK &&
        eval_run(model, &o, &error) == STRATA_OK)
        exit_code = 0;
    else
        fprintf(stderr, "strata eval: %s\n", error.message);
    strata_model_close(model);
    return exit_code;
}
