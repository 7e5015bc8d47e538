/* engine/calibrate.c: measuring which (layer, KV head) tables retrieve from
 * far back, and the head profile file that records it.
 *
 * The data is a copy task (the induction pattern RazorAttention scores
 * heads by): a BOS token, then n = length / 2 distinct random words, then
 * the same n words again. While the second copy is fed one token at a time,
 * the query of a token x at position q can predict the next token only by
 * finding x's earlier occurrence and reading the slot right after it, at
 * position q - n + 1: a slot n - 1 back, far outside any recent window. A
 * table's score is the attention mass its query heads put on that one slot,
 * divided by the query heads per KV head, averaged over the n queries and
 * the samples. Retrieval heads score near 1, heads that look only at sinks
 * and recent tokens near 0, and sliding-window layers score 0 whenever the
 * target lies beyond their window.
 *
 * The mass comes from the attention kernel (forward_item.slot_mass), never
 * from recomputing attention. The samples decode together in one batch: one
 * token per sample per step, each sample with its own mass arrays for every
 * table, sliding-window layers included. Window blocks are never released
 * and nothing is compacted, so slot i of every table holds position i. */
#include "engine/calibrate.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "engine/forward.h"
#include "model/model.h"

enum { CALIBRATE_CHUNK_TOKENS = 512 };

/* SentencePiece's word-start mark U+2581, in UTF-8. */
#define CALIBRATE_SPACE "\xE2\x96\x81"

static uint64_t next_random(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull); /* splitmix64 */
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* True for the piece of a whole word of ASCII letters ("▁house"): plain
 * text, never a control, byte, unused or end-of-generation token. */
static bool is_plain_word(const char *piece)
{
    size_t mark = sizeof CALIBRATE_SPACE - 1;
    if (piece == NULL || strncmp(piece, CALIBRATE_SPACE, mark) != 0 || piece[mark] == '\0')
        return false;
    for (const char *c = piece + mark; *c != '\0'; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z')))
            return false;
    return true;
}

/* The ids of every plain word of the vocabulary, in *words (newly allocated). */
static strata_status collect_words(const strata_model *model, int32_t **words, int64_t *count, strata_error *err)
{
    int64_t vocab = model->params.vocab_size;
    *count = 0;
    *words = malloc((size_t)vocab * sizeof **words);
    if (*words == NULL)
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "calibrate: cannot allocate a list of %lld words",
                           (long long)vocab);
    for (int32_t id = 0; id < vocab; id++)
        if (is_plain_word(strata_token_piece(model, id)) && !strata_token_is_end_of_generation(model, id))
            (*words)[(*count)++] = id;
    return STRATA_OK;
}

/* What one run holds: per sample its tokens, its sequence and a mass array
 * of total floats per table. */
typedef struct calibration {
    int64_t samples, tables, total;
    int32_t *tokens;     /* [samples][total] */
    kv_seq **seqs;       /* [samples] */
    float *mass;         /* [samples][tables][total] */
    float **mass_tables; /* [samples][tables]: pointers into mass, as forward_item.slot_mass wants */
    forward_item *items; /* [samples] */
    forward_scratch *scratch;
} calibration;

static void calibration_free(calibration *c)
{
    for (int64_t s = 0; c->seqs != NULL && s < c->samples; s++)
        kv_seq_destroy(c->seqs[s]);
    forward_scratch_destroy(c->scratch);
    free(c->tokens);
    free(c->seqs);
    free(c->mass);
    free(c->mass_tables);
    free(c->items);
}

/* Writes each sample's tokens: the prefix, then n distinct random words twice. */
static void make_samples(calibration *c, const int32_t *prefix, int64_t prefix_count, int32_t *words,
                         int64_t word_count, int64_t n, uint64_t seed)
{
    uint64_t state = seed;
    for (int64_t s = 0; s < c->samples; s++) {
        int32_t *tokens = c->tokens + s * c->total;
        memcpy(tokens, prefix, (size_t)prefix_count * sizeof *tokens);
        for (int64_t i = 0; i < n; i++) { /* a partial Fisher-Yates shuffle: n distinct words */
            int64_t j = i + (int64_t)(next_random(&state) % (uint64_t)(word_count - i));
            int32_t word = words[j];
            words[j] = words[i];
            words[i] = word;
            tokens[prefix_count + i] = tokens[prefix_count + n + i] = word;
        }
    }
}

/* Runs the prefix and the first copy of every sample through the model, in chunks, without statistics. */
static strata_status prefill_first_copies(strata_model *model, calibration *c, int64_t count, strata_error *err)
{
    for (int64_t s = 0; s < c->samples; s++)
        for (int64_t done = 0; done < count;) {
            int64_t chunk = count - done < CALIBRATE_CHUNK_TOKENS ? count - done : CALIBRATE_CHUNK_TOKENS;
            forward_item item = {.seq = c->seqs[s], .tokens = c->tokens + s * c->total + done, .count = chunk};
            strata_status status = forward_step(model, c->scratch, &item, 1, err);
            if (status != STRATA_OK)
                return status;
            done += chunk;
        }
    return STRATA_OK;
}

strata_status calibrate_run(strata_model *model, const calibrate_options *options, float *scores,
                            strata_error *err)
{
    const model_params *p = &model->params;
    if (options->samples < 1 || options->samples > CALIBRATE_MAX_SAMPLES)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT, "calibrate: %d samples is outside 1..%d",
                           options->samples, CALIBRATE_MAX_SAMPLES);
    if (options->length < 4)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                           "calibrate: a length of %d tokens is too short (two copies of at least 2 words: 4)",
                           options->length);
    int64_t n = options->length / 2; /* words per copy */
    int32_t *prefix = NULL, *words = NULL;
    size_t prefix_count = 0;
    int64_t word_count = 0;
    strata_status status = strata_tokenize(model, "", 0, true, false, &prefix, &prefix_count, err);
    if (status == STRATA_OK)
        status = collect_words(model, &words, &word_count, err);
    int64_t total = (int64_t)prefix_count + 2 * n;
    if (status == STRATA_OK && total > p->context_length)
        status = strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                             "calibrate: %lld tokens per sample exceed the model's context of %lld",
                             (long long)total, (long long)p->context_length);
    if (status == STRATA_OK && word_count < n)
        status = strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                             "calibrate: the vocabulary has %lld plain words, too few for copies of %lld distinct "
                             "words (give a length of at most %lld)",
                             (long long)word_count, (long long)n, (long long)(2 * word_count));

    calibration c = {.samples = options->samples, .tables = p->layer_count * p->kv_head_count, .total = total};
    if (status == STRATA_OK) {
        c.tokens = malloc((size_t)(c.samples * total) * sizeof *c.tokens);
        c.seqs = calloc((size_t)c.samples, sizeof *c.seqs);
        c.mass = calloc((size_t)(c.samples * c.tables * total), sizeof *c.mass);
        c.mass_tables = malloc((size_t)(c.samples * c.tables) * sizeof *c.mass_tables);
        c.items = calloc((size_t)c.samples, sizeof *c.items);
        if (c.tokens == NULL || c.seqs == NULL || c.mass == NULL || c.mass_tables == NULL || c.items == NULL)
            status = strata_fail(err, STRATA_E_OUT_OF_MEMORY,
                                 "calibrate: cannot allocate %lld samples of %lld tokens", (long long)c.samples,
                                 (long long)total);
    }
    int64_t first_copy = (int64_t)prefix_count + n;
    int64_t step_tokens = first_copy < CALIBRATE_CHUNK_TOKENS ? first_copy : CALIBRATE_CHUNK_TOKENS;
    if (status == STRATA_OK)
        status = forward_scratch_create(model, step_tokens > c.samples ? step_tokens : c.samples, &c.scratch, err);
    if (status == STRATA_OK)
        status = compute_context_reserve(
            model->compute,
            compute_attention_scratch_floats(p->head_count, p->kv_head_count, p->key_length, p->value_length,
                                             kv_pool_configuration(model->kv_pool)->block_tokens, total),
            err);
    for (int64_t s = 0; s < c.samples && status == STRATA_OK; s++) {
        status = kv_seq_create(model->kv_pool, &c.seqs[s], err);
        for (int64_t t = 0; t < c.tables; t++)
            c.mass_tables[s * c.tables + t] = c.mass + (s * c.tables + t) * total;
    }
    if (status == STRATA_OK) {
        make_samples(&c, prefix, (int64_t)prefix_count, words, word_count, n, options->seed);
        status = prefill_first_copies(model, &c, first_copy, err);
    }

    /* The second copy, one token per sample per step. */
    double *sums = calloc((size_t)c.tables, sizeof *sums);
    if (status == STRATA_OK && sums == NULL)
        status = strata_fail(err, STRATA_E_OUT_OF_MEMORY, "calibrate: cannot allocate %lld sums", (long long)c.tables);
    for (int64_t q = first_copy; q < total && status == STRATA_OK; q++) {
        int64_t target = q - n + 1; /* the slot after the earlier occurrence of token q */
        for (int64_t s = 0; s < c.samples; s++) {
            /* The kernel adds to every slot, but only the target is read: only it starts at 0. */
            for (int64_t t = 0; t < c.tables; t++)
                c.mass_tables[s * c.tables + t][target] = 0.0f;
            c.items[s] = (forward_item){.seq = c.seqs[s], .tokens = c.tokens + s * total + q, .count = 1,
                                        .slot_mass = c.mass_tables + s * c.tables};
        }
        status = forward_step(model, c.scratch, c.items, c.samples, err);
        for (int64_t s = 0; s < c.samples && status == STRATA_OK; s++)
            for (int64_t t = 0; t < c.tables; t++)
                sums[t] += c.mass_tables[s * c.tables + t][target];
    }
    if (status == STRATA_OK) {
        double group = (double)(p->head_count / p->kv_head_count), queries = (double)(c.samples * n);
        for (int64_t t = 0; t < c.tables; t++)
            scores[t] = (float)(sums[t] / (group * queries));
    } else if (status == STRATA_E_KV_FULL) {
        strata_error_prefix(err, "calibrate: %lld samples of %lld tokens do not fit the KV pool (give fewer samples, "
                                 "a shorter length or more KV memory): ",
                            (long long)c.samples, (long long)total);
    }
    free(sums);
    calibration_free(&c);
    free(prefix);
    free(words);
    return status;
}

strata_status calibrate_write_profile(const char *path, const strata_model *model, const char *comment,
                                      const float *scores, strata_error *err)
{
    const model_params *p = &model->params;
    FILE *file = fopen(path, "w");
    if (file == NULL)
        return strata_fail(err, STRATA_E_IO, "%s: cannot write the head profile: %s", path, strerror(errno));
    char name[sizeof model->name];
    snprintf(name, sizeof name, "%s", strata_model_name(model));
    for (char *c = name; *c != '\0'; c++)
        if (isspace((unsigned char)*c))
            *c = '_';
    fprintf(file, "# strata head profile v1\n");
    for (const char *line = comment; line != NULL && *line != '\0';) {
        const char *end = strchr(line, '\n');
        int length = end != NULL ? (int)(end - line) : (int)strlen(line);
        fprintf(file, "# %.*s\n", length, line);
        line = end != NULL ? end + 1 : NULL;
    }
    fprintf(file, "model %s layers %lld kv_heads %lld\n", name[0] != '\0' ? name : "unnamed",
            (long long)p->layer_count, (long long)p->kv_head_count);
    for (int64_t il = 0; il < p->layer_count; il++)
        for (int64_t h = 0; h < p->kv_head_count; h++)
            fprintf(file, "%.6f%c", scores[il * p->kv_head_count + h], h + 1 < p->kv_head_count ? ' ' : '\n');
    bool failed = ferror(file) != 0;
    if (fclose(file) != 0 || failed)
        return strata_fail(err, STRATA_E_IO, "%s: cannot write the head profile: %s", path, strerror(errno));
    return STRATA_OK;
}

/* Reads the next line that is neither blank nor a comment into *line
 * (trailing white space cut); false at the end of the file. */
static bool next_content_line(FILE *file, char **line, size_t *capacity, int64_t *number)
{
    while (getline(line, capacity, file) >= 0) {
        (*number)++;
        size_t length = strlen(*line);
        while (length > 0 && isspace((unsigned char)(*line)[length - 1]))
            (*line)[--length] = '\0';
        if (length > 0 && (*line)[0] != '#')
            return true;
    }
    return false;
}

/* Parses the scores of one layer line into scores[0..count); false if the
 * line holds anything but count finite numbers. */
static bool parse_layer_line(const char *line, float *scores, int64_t count)
{
    const char *cursor = line;
    for (int64_t h = 0; h < count; h++) {
        char *end = NULL;
        errno = 0;
        float value = strtof(cursor, &end);
        if (end == cursor || errno != 0 || !isfinite(value))
            return false;
        scores[h] = value;
        cursor = end;
    }
    while (isspace((unsigned char)*cursor))
        cursor++;
    return *cursor == '\0';
}

strata_status calibrate_read_profile(const char *path, int64_t layer_count, int64_t kv_head_count, float **scores,
                                     strata_error *err)
{
    *scores = NULL;
    FILE *file = fopen(path, "r");
    if (file == NULL)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT, "head profile %s: cannot open it: %s", path,
                           strerror(errno));
    char *line = NULL;
    size_t capacity = 0;
    int64_t number = 0;
    strata_status status = STRATA_OK;
    if (getline(&line, &capacity, file) < 0 || strncmp(line, "# strata head profile v1", 24) != 0 ||
        (line[24] != '\0' && !isspace((unsigned char)line[24]))) {
        status = strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                             "head profile %s: line 1 is not '# strata head profile v1' (not a profile written by "
                             "`strata calibrate`)",
                             path);
        goto done;
    }
    number = 1;
    long long layers = 0, heads = 0;
    int used = 0;
    if (!next_content_line(file, &line, &capacity, &number) ||
        sscanf(line, "model %*s layers %lld kv_heads %lld %n", &layers, &heads, &used) != 2 ||
        line[used] != '\0') {
        status = strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                             "head profile %s: line %lld should read 'model NAME layers N kv_heads G'", path,
                             (long long)number);
        goto done;
    }
    if (layers != layer_count || heads != kv_head_count) {
        status = strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                             "head profile %s is for %lld layers x %lld KV heads, but the model has %lld x %lld "
                             "(calibrate this model with `strata calibrate`)",
                             path, layers, heads, (long long)layer_count, (long long)kv_head_count);
        goto done;
    }
    *scores = malloc((size_t)(layer_count * kv_head_count) * sizeof **scores);
    if (*scores == NULL) {
        status = strata_fail(err, STRATA_E_OUT_OF_MEMORY, "head profile %s: cannot allocate %lld scores", path,
                             (long long)(layer_count * kv_head_count));
        goto done;
    }
    for (int64_t il = 0; il < layer_count; il++) {
        if (!next_content_line(file, &line, &capacity, &number)) {
            status = strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                                 "head profile %s ends after %lld of its %lld layer lines", path, (long long)il,
                                 (long long)layer_count);
            goto done;
        }
        if (!parse_layer_line(line, *scores + il * kv_head_count, kv_head_count)) {
            status = strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                                 "head profile %s: line %lld (layer %lld) should hold %lld numbers, one per KV head: "
                                 "'%.80s'",
                                 path, (long long)number, (long long)il, (long long)kv_head_count, line);
            goto done;
        }
    }
    if (next_content_line(file, &line, &capacity, &number))
        status = strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                             "head profile %s: line %lld follows the last of its %lld layer lines", path,
                             (long long)number, (long long)layer_count);
done:
    if (status != STRATA_OK) {
        free(*scores);
        *scores = NULL;
    }
    free(line);
    fclose(file);
    return status;
}
