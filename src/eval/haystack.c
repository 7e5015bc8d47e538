/* eval/haystack.c: noise and prose filler for the evaluation tasks.
 *
 * The prose file (scripts/fetch-prose.sh) holds one paragraph per block of
 * lines, blocks separated by blank lines. Opening it collapses whitespace,
 * cuts each paragraph into sentences once (after '.', '!' or '?' and a space
 * before a capital, a digit or a quote, except after a few abbreviations) and
 * splits any sentence longer than SENTENCE_MAX_BYTES at a comma, semicolon or
 * space, so that one sentence is never a large share of a short context and
 * the generator can land close to its token target. It also gathers the
 * book's vocabulary for word-list tasks. Noise needs no file: five sentences
 * of our own, cycled. */
#include "eval/haystack.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"

enum {
    SENTENCE_MAX_BYTES = 400,  /* longer prose sentences are split */
    SENTENCE_MIN_PIECE = 120,  /* ... but not into pieces shorter than this */
    PROSE_MIN_PARAGRAPHS = 50, /* fewer means the file is not the fetched book */
    WORD_MIN_LETTERS = 4,
    WORD_MAX_LETTERS = 10,
};

/* The noise haystack: plain statements with nothing to remember. */
static const char *const noise_sentences[] = {
    "The river is wide.",
    "The hills are quiet.",
    "The bread is warm.",
    "Off we go.",
    "Over the bridge and home again.",
};
enum { NOISE_SENTENCE_COUNT = sizeof noise_sentences / sizeof noise_sentences[0] };

/* The word-list vocabulary of the noise haystack: everyday nouns and verbs. */
static const char *const noise_words[] = {
    "apple",   "arrow",   "basket",  "beach",   "bell",    "berry",   "blanket", "boat",
    "bottle",  "branch",  "brick",   "bridge",  "brush",   "bucket",  "butter",  "button",
    "cabin",   "cable",   "candle",  "canvas",  "carpet",  "castle",  "chair",   "chalk",
    "cherry",  "circle",  "cliff",   "cloud",   "coast",   "coffee",  "comet",   "copper",
    "cotton",  "county",  "cradle",  "crane",   "crystal", "cup",     "curtain", "desert",
    "diamond", "dinner",  "dolphin", "door",    "dragon",  "drawer",  "dream",   "eagle",
    "engine",  "falcon",  "feather", "fence",   "field",   "finger",  "flag",    "flame",
    "flower",  "forest",  "fountain", "garden", "garlic",  "gate",    "glacier", "glove",
    "granite", "guitar",  "hammer",  "harbor",  "helmet",  "honey",   "horizon", "island",
    "jacket",  "jungle",  "kettle",  "kitchen", "ladder",  "lantern", "leaf",    "lemon",
    "letter",  "library", "lizard",  "magnet",  "maple",   "marble",  "meadow",  "mirror",
    "monkey",  "mountain", "needle", "notebook", "ocean",  "onion",   "orange",  "orchard",
    "oven",    "paddle",  "palace",  "paper",   "parrot",  "pebble",  "pencil",  "pepper",
    "piano",   "pillow",  "planet",  "pocket",  "pond",    "potato",  "puzzle",  "rabbit",
    "rainbow", "ribbon",  "river",   "rocket",  "saddle",  "salmon",  "sandal",  "saucer",
    "scarf",   "shadow",  "shell",   "shovel",  "silver",  "spider",  "spoon",   "stable",
    "statue",  "stone",   "storm",   "sugar",   "summer",  "table",   "teapot",  "thunder",
    "ticket",  "tiger",   "timber",  "tomato",  "tower",   "tractor", "tunnel",  "turtle",
    "umbrella", "valley", "velvet",  "village", "violin",  "wagon",   "walnut",  "wheel",
    "whistle", "window",  "winter",  "wizard",  "yacht",   "zebra",   "anchor",  "bakery",
    "balloon", "banner",  "barrel",  "beacon",  "bishop",  "blossom", "bonnet",  "breeze",
    "buffalo", "cactus",  "camera",  "carrot",  "cellar",  "chimney", "clover",  "compass",
    "cookie",  "cricket", "dagger",  "donkey",  "emerald", "fiddle",  "goblet",  "hedge",
    "igloo",   "jigsaw",  "kitten",  "lobster", "mitten",  "nectar",  "oyster",  "pirate",
    "quilt",   "raven",   "sailor",  "thimble", "tulip",   "walrus",  "willow",  "yogurt",
};
enum { NOISE_WORD_COUNT = sizeof noise_words / sizeof noise_words[0] };

struct eval_haystack {
    eval_haystack_kind kind;
    char *book;              /* prose: the paragraphs, whitespace collapsed, back to back */
    eval_sentence *sentences; /* prose: every sentence of the book (tokens unused: 0) */
    int64_t sentence_count;
    int64_t *paragraph_first; /* prose: index of each paragraph's first sentence, plus one past the end */
    int64_t paragraph_count;
    char *word_storage;      /* prose: the vocabulary's letters */
    const char *const *words;
    int64_t word_count;
};

/* ---- the generator ------------------------------------------------------ */

uint64_t eval_random_next(eval_random *random)
{
    uint64_t z = (random->state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

uint64_t eval_random_below(eval_random *random, uint64_t bound)
{
    /* Rejecting the top partial range keeps every value equally likely. */
    uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
    uint64_t value;
    do
        value = eval_random_next(random);
    while (value >= limit);
    return value % bound;
}

double eval_random_unit(eval_random *random)
{
    return (double)(eval_random_next(random) >> 11) * 0x1.0p-53;
}

/* ---- names -------------------------------------------------------------- */

static const char *const haystack_names[EVAL_HAYSTACK_KIND_COUNT] = {"noise", "prose"};

const char *eval_haystack_kind_name(eval_haystack_kind kind)
{
    return (unsigned)kind < EVAL_HAYSTACK_KIND_COUNT ? haystack_names[kind] : "unknown";
}

strata_status eval_haystack_kind_find(const char *name, eval_haystack_kind *out, strata_error *err)
{
    for (int kind = 0; kind < EVAL_HAYSTACK_KIND_COUNT; kind++)
        if (name != NULL && strcmp(name, haystack_names[kind]) == 0) {
            *out = (eval_haystack_kind)kind;
            return STRATA_OK;
        }
    return strata_fail(err, STRATA_E_INVALID_ARGUMENT, "unknown haystack '%s'; the haystacks are: noise, prose",
                       name != NULL ? name : "(null)");
}

strata_status eval_haystack_default_prose_path(char *buffer, size_t size, strata_error *err)
{
    const char *cache = getenv("STRATA_CACHE");
    const char *home = getenv("HOME");
    int written;
    if (cache != NULL && cache[0] != '\0')
        written = snprintf(buffer, size, "%s/prose/debian-handbook.txt", cache);
    else if (home != NULL && home[0] != '\0')
        written = snprintf(buffer, size, "%s/.cache/strata/prose/debian-handbook.txt", home);
    else
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                           "neither STRATA_CACHE nor HOME is set, so the prose haystack has no default path");
    if (written < 0 || (size_t)written >= size)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                           "the prose haystack's default path is longer than the %zu bytes given for it", size);
    return STRATA_OK;
}

/* ---- loading the prose -------------------------------------------------- */

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static bool is_upper(char c) { return c >= 'A' && c <= 'Z'; }
static bool is_lower(char c) { return c >= 'a' && c <= 'z'; }
static bool is_digit(char c) { return c >= '0' && c <= '9'; }

/* Reads a whole file into a NUL-terminated buffer. */
static strata_status read_file(const char *path, char **out, size_t *length, strata_error *err)
{
    FILE *file = fopen(path, "rb");
    if (file == NULL)
        return strata_fail(err, STRATA_E_IO,
                           "%s: cannot open the prose haystack (%s); run scripts/fetch-prose.sh to fetch it",
                           path, strerror(errno));
    size_t capacity = 1 << 20, used = 0;
    char *data = malloc(capacity);
    while (data != NULL) {
        used += fread(data + used, 1, capacity - 1 - used, file);
        if (used < capacity - 1)
            break;
        capacity *= 2;
        char *grown = realloc(data, capacity);
        if (grown == NULL) {
            free(data);
            data = NULL;
        } else {
            data = grown;
        }
    }
    bool failed = ferror(file) != 0;
    fclose(file);
    if (data == NULL)
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "%s: out of memory reading the prose haystack", path);
    if (failed) {
        free(data);
        return strata_fail(err, STRATA_E_IO, "%s: read error in the prose haystack", path);
    }
    data[used] = '\0';
    *out = data;
    *length = used;
    return STRATA_OK;
}

/* Whether the text at end (just past a '.', '!' or '?', and any closing
 * quotes) ends a sentence: a space, then a capital, digit or quote. */
static bool ends_sentence(const char *paragraph, size_t stop, size_t end, size_t length)
{
    if (end >= length || paragraph[end] != ' ' || end + 1 >= length)
        return false;
    char next = paragraph[end + 1];
    if (!is_upper(next) && !is_digit(next) && next != '"' && next != '\'' && (unsigned char)next != 0xE2)
        return false;
    if (paragraph[stop] != '.')
        return true;
    /* The word before the full stop: abbreviations do not end sentences. */
    static const char *const abbreviations[] = {"e.g", "i.e", "Mr", "Mrs", "Dr", "vs", "cf", "St", "No", "Fig"};
    size_t word_start = stop;
    while (word_start > 0 && !is_space(paragraph[word_start - 1]) && paragraph[word_start - 1] != '(')
        word_start--;
    for (size_t i = 0; i < sizeof abbreviations / sizeof abbreviations[0]; i++) {
        size_t n = strlen(abbreviations[i]);
        if (stop - word_start == n && memcmp(paragraph + word_start, abbreviations[i], n) == 0)
            return false;
    }
    return true;
}

/* Where to cut a sentence longer than SENTENCE_MAX_BYTES: after the last
 * "; " or ", " in its window, else the last space, else at the limit
 * (moved back to the start of a UTF-8 character). */
static size_t long_sentence_cut(const char *text, size_t length)
{
    size_t limit = length < SENTENCE_MAX_BYTES ? length : SENTENCE_MAX_BYTES;
    for (size_t i = limit - 1; i > SENTENCE_MIN_PIECE; i--)
        if ((text[i - 1] == ';' || text[i - 1] == ',') && text[i] == ' ')
            return i + 1;
    for (size_t i = limit - 1; i > SENTENCE_MIN_PIECE; i--)
        if (text[i] == ' ')
            return i + 1;
    size_t cut = limit;
    while (cut > 1 && ((unsigned char)text[cut] & 0xC0) == 0x80)
        cut--;
    return cut;
}

/* Returns array with room for needed elements of element bytes (capacity
 * doubles), or NULL when out of memory, leaving array as it was. */
static void *grow(void *array, int64_t *capacity, int64_t needed, size_t element)
{
    if (needed <= *capacity)
        return array;
    int64_t next = *capacity > 0 ? *capacity * 2 : 1024;
    while (next < needed)
        next *= 2;
    void *grown = realloc(array, (size_t)next * element);
    if (grown != NULL)
        *capacity = next;
    return grown;
}

/* Adds one sentence, book[offset, offset + length) less trailing spaces, if not empty. */
static strata_status add_sentence(eval_haystack *haystack, int64_t *capacity, size_t offset, size_t length,
                                  strata_error *err)
{
    while (length > 0 && haystack->book[offset + length - 1] == ' ')
        length--;
    if (length == 0)
        return STRATA_OK;
    eval_sentence *sentences = grow(haystack->sentences, capacity, haystack->sentence_count + 1,
                                    sizeof *haystack->sentences);
    if (sentences == NULL)
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "out of memory cutting the prose into sentences");
    haystack->sentences = sentences;
    haystack->sentences[haystack->sentence_count++] = (eval_sentence){.offset = offset, .length = length};
    return STRATA_OK;
}

/* Adds the sentences of one paragraph (book[start, start + length)), splitting long ones. */
static strata_status add_paragraph_sentences(eval_haystack *haystack, int64_t *capacity, size_t start,
                                             size_t length, strata_error *err)
{
    const char *paragraph = haystack->book + start;
    size_t begin = 0;
    strata_status status = STRATA_OK;
    while (begin < length && status == STRATA_OK) {
        size_t end = length, next = length;
        for (size_t i = begin; i < length; i++) {
            if (paragraph[i] != '.' && paragraph[i] != '!' && paragraph[i] != '?')
                continue;
            size_t after = i + 1;
            while (after < length && (paragraph[after] == '"' || paragraph[after] == '\'' || paragraph[after] == ')'))
                after++;
            /* a closing curly quote, U+201D, is E2 80 9D in UTF-8 */
            if (after + 2 < length && (unsigned char)paragraph[after] == 0xE2 &&
                (unsigned char)paragraph[after + 1] == 0x80 && (unsigned char)paragraph[after + 2] == 0x9D)
                after += 3;
            if (ends_sentence(paragraph, i, after, length)) {
                end = after;
                next = after + 1; /* past the space */
                break;
            }
        }
        while (end - begin > SENTENCE_MAX_BYTES && status == STRATA_OK) {
            size_t cut = long_sentence_cut(paragraph + begin, end - begin);
            status = add_sentence(haystack, capacity, start + begin, cut, err);
            begin += cut;
        }
        if (status == STRATA_OK)
            status = add_sentence(haystack, capacity, start + begin, end - begin, err);
        begin = next;
    }
    return status;
}

static int compare_words(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Gathers the distinct all-lower-case words of WORD_MIN_LETTERS to
 * WORD_MAX_LETTERS letters that stand alone (not inside file names, options
 * or hyphenated words) and occur at least twice, sorted by bytes. */
static strata_status gather_words(eval_haystack *haystack, size_t book_length, strata_error *err)
{
    haystack->word_storage = malloc(book_length + 1);
    int64_t capacity = 0, count = 0;
    const char **all = NULL;
    if (haystack->word_storage == NULL)
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "out of memory gathering the prose vocabulary");
    char *storage = haystack->word_storage;
    const char *book = haystack->book;
    for (size_t i = 0; i < book_length;) {
        if (!is_lower(book[i]) && !is_upper(book[i])) {
            i++;
            continue;
        }
        size_t start = i;
        bool lower = true;
        while (i < book_length && (is_lower(book[i]) || is_upper(book[i]))) {
            lower &= is_lower(book[i]);
            i++;
        }
        size_t letters = i - start;
        char before = start > 0 ? book[start - 1] : ' ';
        char after = i < book_length ? book[i] : ' ';
        bool alone = (before == ' ' || before == '\n' || before == '(' || before == '"') &&
                     (after == ' ' || after == '\n' || after == ',' || after == '.' || after == ';' ||
                      after == ':' || after == ')');
        if (!lower || !alone || letters < WORD_MIN_LETTERS || letters > WORD_MAX_LETTERS)
            continue;
        const char **grown = grow(all, &capacity, count + 1, sizeof *all);
        if (grown == NULL) {
            free(all);
            return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "out of memory gathering the prose vocabulary");
        }
        all = grown;
        memcpy(storage, book + start, letters);
        storage[letters] = '\0';
        all[count++] = storage;
        storage += letters + 1;
    }
    if (count > 0)
        qsort(all, (size_t)count, sizeof *all, compare_words);
    int64_t kept = 0;
    for (int64_t i = 0; i < count;) {
        int64_t j = i + 1;
        while (j < count && strcmp(all[i], all[j]) == 0)
            j++;
        if (j - i >= 2)
            all[kept++] = all[i];
        i = j;
    }
    haystack->words = all;
    haystack->word_count = kept;
    return STRATA_OK;
}

/* Collapses the file's whitespace, paragraph by paragraph, and cuts sentences. */
static strata_status load_prose(eval_haystack *haystack, const char *path, strata_error *err)
{
    char *data = NULL;
    size_t length = 0;
    strata_status status = read_file(path, &data, &length, err);
    if (status != STRATA_OK)
        return status;
    haystack->book = malloc(length + 2); /* a newline after the last paragraph, and the NUL */
    int64_t paragraph_capacity = 0, sentence_capacity = 0;
    if (haystack->book == NULL) {
        free(data);
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "%s: out of memory loading the prose haystack", path);
    }
    size_t book_length = 0;
    size_t i = 0;
    while (i < length && status == STRATA_OK) {
        /* A paragraph runs until a line holding only whitespace. */
        while (i < length && is_space(data[i]))
            i++;
        if (i >= length)
            break;
        size_t start = book_length;
        bool pending_space = false;
        while (i < length) {
            if (data[i] == '\n') {
                size_t j = i + 1;
                while (j < length && data[j] != '\n' && is_space(data[j]))
                    j++;
                if (j >= length || data[j] == '\n')
                    break; /* a blank line ends the paragraph */
            }
            if (is_space(data[i])) {
                pending_space = true;
            } else {
                if (pending_space && book_length > start)
                    haystack->book[book_length++] = ' ';
                pending_space = false;
                haystack->book[book_length++] = data[i];
            }
            i++;
        }
        int64_t *firsts = grow(haystack->paragraph_first, &paragraph_capacity, haystack->paragraph_count + 2,
                               sizeof *haystack->paragraph_first);
        if (firsts == NULL) {
            status = strata_fail(err, STRATA_E_OUT_OF_MEMORY, "%s: out of memory listing paragraphs", path);
            break;
        }
        haystack->paragraph_first = firsts;
        int64_t first = haystack->sentence_count;
        status = add_paragraph_sentences(haystack, &sentence_capacity, start, book_length - start, err);
        if (status == STRATA_OK && haystack->sentence_count > first)
            haystack->paragraph_first[haystack->paragraph_count++] = first;
        /* Keep paragraphs apart in the book so words never join across them. */
        haystack->book[book_length++] = '\n';
    }
    free(data);
    if (status != STRATA_OK)
        return status;
    haystack->book[book_length] = '\0';
    if (haystack->paragraph_count < PROSE_MIN_PARAGRAPHS)
        return strata_fail(err, STRATA_E_FORMAT,
                           "%s: the prose haystack has %" PRId64 " paragraphs, fewer than %d; "
                           "run scripts/fetch-prose.sh to fetch the book again",
                           path, haystack->paragraph_count, PROSE_MIN_PARAGRAPHS);
    haystack->paragraph_first[haystack->paragraph_count] = haystack->sentence_count;
    return gather_words(haystack, book_length, err);
}

/* ---- opening ------------------------------------------------------------ */

strata_status eval_haystack_open(eval_haystack_kind kind, const char *path, eval_haystack **out, strata_error *err)
{
    *out = NULL;
    if ((unsigned)kind >= EVAL_HAYSTACK_KIND_COUNT)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT, "haystack kind %d is not one of noise, prose", (int)kind);
    eval_haystack *haystack = calloc(1, sizeof *haystack);
    if (haystack == NULL)
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "out of memory opening a haystack");
    haystack->kind = kind;
    if (kind == EVAL_HAYSTACK_NOISE) {
        haystack->paragraph_count = NOISE_SENTENCE_COUNT;
        haystack->words = noise_words;
        haystack->word_count = NOISE_WORD_COUNT;
        *out = haystack;
        return STRATA_OK;
    }
    char default_path[4096];
    if (path == NULL) {
        strata_status status = eval_haystack_default_prose_path(default_path, sizeof default_path, err);
        if (status != STRATA_OK) {
            free(haystack);
            return status;
        }
        path = default_path;
    }
    strata_status status = load_prose(haystack, path, err);
    if (status != STRATA_OK) {
        eval_haystack_close(haystack);
        return status;
    }
    *out = haystack;
    return STRATA_OK;
}

void eval_haystack_close(eval_haystack *haystack)
{
    if (haystack == NULL)
        return;
    if (haystack->kind == EVAL_HAYSTACK_PROSE) {
        free((void *)haystack->words);
        free(haystack->word_storage);
    }
    free(haystack->book);
    free(haystack->sentences);
    free(haystack->paragraph_first);
    free(haystack);
}

eval_haystack_kind eval_haystack_kind_of(const eval_haystack *haystack)
{
    return haystack->kind;
}

int64_t eval_haystack_paragraph_count(const eval_haystack *haystack)
{
    return haystack->paragraph_count;
}

const char *const *eval_haystack_words(const eval_haystack *haystack, int64_t *count)
{
    *count = haystack->word_count;
    return haystack->words;
}

/* ---- cutting filler ----------------------------------------------------- */

void eval_filler_free(eval_filler *filler)
{
    if (filler == NULL)
        return;
    free(filler->text);
    free(filler->sentences);
    *filler = (eval_filler){0};
}

/* Appends one sentence (with its separator) to the filler and counts it. */
static strata_status append_sentence(eval_filler *filler, size_t *text_capacity, int64_t *sentence_capacity,
                                     const char *text, size_t length, bool paragraph_start,
                                     eval_token_counter counter, void *counter_context, strata_error *err)
{
    const char *separator = filler->sentence_count == 0 ? "" : paragraph_start ? "\n\n" : " ";
    size_t separator_length = strlen(separator);
    size_t needed = filler->length + separator_length + length + 1;
    if (needed > *text_capacity) {
        size_t next = *text_capacity > 0 ? *text_capacity * 2 : 1 << 16;
        while (next < needed)
            next *= 2;
        char *grown = realloc(filler->text, next);
        if (grown == NULL)
            return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "out of memory growing a filler to %zu bytes", next);
        filler->text = grown;
        *text_capacity = next;
    }
    eval_sentence *sentences = grow(filler->sentences, sentence_capacity, filler->sentence_count + 1,
                                    sizeof *filler->sentences);
    if (sentences == NULL)
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "out of memory growing a filler to %" PRId64 " sentences",
                           filler->sentence_count + 1);
    filler->sentences = sentences;
    int64_t tokens = counter(counter_context, text, length);
    if (tokens < 0)
        return strata_fail(err, STRATA_E_INTERNAL, "the token counter failed on a haystack sentence of %zu bytes",
                           length);
    memcpy(filler->text + filler->length, separator, separator_length);
    filler->length += separator_length;
    memcpy(filler->text + filler->length, text, length);
    filler->sentences[filler->sentence_count++] = (eval_sentence){
        .offset = filler->length, .length = length, .tokens = tokens, .paragraph_start = paragraph_start};
    filler->length += length;
    filler->text[filler->length] = '\0';
    filler->tokens += tokens;
    return STRATA_OK;
}

strata_status eval_haystack_text(const eval_haystack *haystack, uint64_t seed, int64_t min_tokens,
                                 eval_token_counter counter, void *counter_context, eval_filler *out,
                                 strata_error *err)
{
    *out = (eval_filler){0};
    if (min_tokens < 0)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT, "a filler of %" PRId64 " tokens was asked for", min_tokens);
    /* Mixed with a constant of its own so the start does not move in step with the task's other draws. */
    eval_random random = {seed ^ 0x6a09e667f3bcc908ull};
    int64_t paragraph = (int64_t)eval_random_below(&random, (uint64_t)haystack->paragraph_count);
    size_t text_capacity = 0;
    int64_t sentence_capacity = 0;
    /* Every sentence counts at least one token with any sensible counter; a
     * counter that keeps returning 0 would otherwise never let this end. */
    int64_t sentence_limit = min_tokens + 4096;
    strata_status status = STRATA_OK;
    while (out->tokens < min_tokens && status == STRATA_OK) {
        if (out->sentence_count >= sentence_limit) {
            status = strata_fail(err, STRATA_E_INTERNAL,
                                 "the token counter gave %" PRId64 " tokens for %" PRId64
                                 " haystack sentences, short of the %" PRId64 " asked for",
                                 out->tokens, out->sentence_count, min_tokens);
            break;
        }
        if (haystack->kind == EVAL_HAYSTACK_NOISE) {
            const char *sentence = noise_sentences[paragraph];
            status = append_sentence(out, &text_capacity, &sentence_capacity, sentence, strlen(sentence), false,
                                     counter, counter_context, err);
        } else {
            int64_t first = haystack->paragraph_first[paragraph], end = haystack->paragraph_first[paragraph + 1];
            for (int64_t s = first; s < end && status == STRATA_OK && out->tokens < min_tokens; s++) {
                const eval_sentence *sentence = &haystack->sentences[s];
                status = append_sentence(out, &text_capacity, &sentence_capacity, haystack->book + sentence->offset,
                                         sentence->length, s == first, counter, counter_context, err);
            }
        }
        paragraph = (paragraph + 1) % haystack->paragraph_count;
    }
    if (status == STRATA_OK && out->text == NULL) {
        out->text = calloc(1, 1);
        if (out->text == NULL)
            status = strata_fail(err, STRATA_E_OUT_OF_MEMORY, "out of memory making an empty filler");
    }
    if (status != STRATA_OK)
        eval_filler_free(out);
    return status;
}
