/* tests/tokenize/test_tokenizer.c: strata's tokenizer against llama.cpp.
 *
 * The fixtures in tests/fixtures/tokenizer (made once by make_fixtures.py
 * with llama.cpp) hold, per vocabulary, about 1,400 inputs with the ids
 * llama_tokenize gave and the text llama_token_to_piece(special=false) gave
 * back for them. Every case must give exactly the same ids and the same
 * decoded bytes. Decoding must also round-trip to the input, except for the
 * known normalizations: control and unknown tokens decode to nothing (so text
 * like "<start_of_turn>" disappears), malformed UTF-8 comes back as U+FFFD
 * (byte-level BPE), and SPM vocabularies with add_space_prefix add a leading
 * space. Named cases then pin single behaviours on the real Gemma vocabulary
 * and on tiny vocabularies built in memory, including malformed ones that
 * must be refused with an error.
 *
 * The vocabularies live outside the repository, under $STRATA_CACHE
 * (default ~/.cache/strata); a missing one fails the test with the name of
 * the script that fetches it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "format/gguf.h"
#include "format/gguf_writer.h"
#include "test_util.h"
#include "tokenize/tokenizer.h"

#define VOCAB_DIR "peer/llama_cpp_python-0.3.36/vendor/llama.cpp/models/"

typedef struct vocab_fixture {
    const char *name;
    const char *fixture; /* relative to the repository root */
    const char *vocab;   /* relative to the cache folder */
    const char *fetch;   /* the script that puts it there */
} vocab_fixture;

static const vocab_fixture fixtures[] = {
    {"gemma-3", "tests/fixtures/tokenizer/gemma-3.tsv", "models/gemma-3-270m-q4_k_m.gguf", "scripts/fetch-model.sh"},
    {"qwen2", "tests/fixtures/tokenizer/qwen2.tsv", VOCAB_DIR "ggml-vocab-qwen2.gguf", "scripts/fetch-vocabs.sh"},
    {"llama-bpe", "tests/fixtures/tokenizer/llama-bpe.tsv", VOCAB_DIR "ggml-vocab-llama-bpe.gguf", "scripts/fetch-vocabs.sh"},
    {"gpt-2", "tests/fixtures/tokenizer/gpt-2.tsv", VOCAB_DIR "ggml-vocab-gpt-2.gguf", "scripts/fetch-vocabs.sh"},
    {"llama-spm", "tests/fixtures/tokenizer/llama-spm.tsv", VOCAB_DIR "ggml-vocab-llama-spm.gguf", "scripts/fetch-vocabs.sh"},
};

enum { MISMATCHES_SHOWN = 5 };

static double seconds_now(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec + (double)now.tv_nsec * 1e-9;
}

/* Reads a whole file into a NUL-terminated buffer; NULL when it cannot. */
static char *read_file(const char *path, size_t *length)
{
    FILE *file = fopen(path, "rb");
    if (file == NULL)
        return NULL;
    char *data = NULL;
    long size = -1;
    if (fseek(file, 0, SEEK_END) == 0)
        size = ftell(file);
    if (size >= 0 && fseek(file, 0, SEEK_SET) == 0)
        data = malloc((size_t)size + 1);
    if (data != NULL && fread(data, 1, (size_t)size, file) != (size_t)size) {
        free(data);
        data = NULL;
    }
    fclose(file);
    if (data != NULL) {
        data[size] = '\0';
        *length = (size_t)size;
    }
    return data;
}

/* A loaded vocabulary; file and tok are NULL when it could not be loaded. */
typedef struct loaded_vocab {
    gguf_file *file;
    tokenizer *tok;
    double load_seconds;
} loaded_vocab;

/* Loads cache/relative, failing the test with the fetch script's name when it is missing. */
static loaded_vocab load_vocab(const char *relative, const char *fetch)
{
    loaded_vocab loaded = {0};
    const char *cache = getenv("STRATA_CACHE");
    const char *home = getenv("HOME");
    char path[4096];
    if (cache != NULL && cache[0] != '\0')
        snprintf(path, sizeof path, "%s/%s", cache, relative);
    else
        snprintf(path, sizeof path, "%s/.cache/strata/%s", home != NULL ? home : ".", relative);
    FILE *probe = fopen(path, "rb");
    if (probe == NULL) {
        CHECK_MESSAGE(probe != NULL, "%s is missing: run %s (it fetches it into the cache)", path, fetch);
        return loaded;
    }
    fclose(probe);
    strata_error error = {0};
    double start = seconds_now();
    strata_status status = gguf_open(path, &loaded.file, &error);
    if (status == STRATA_OK)
        status = tokenizer_load(loaded.file, &loaded.tok, &error);
    loaded.load_seconds = seconds_now() - start;
    CHECK_MESSAGE(status == STRATA_OK, "%s: %s", path, error.message);
    return loaded;
}

static void unload_vocab(loaded_vocab *loaded)
{
    tokenizer_destroy(loaded->tok);
    gguf_close(loaded->file);
    *loaded = (loaded_vocab){0};
}

/* Undoes the fixture escaping (\\ \t \n \r \xNN) of field[0..length) into out; returns the byte count. */
static size_t unescape(const char *field, size_t length, char *out)
{
    size_t n = 0;
    for (size_t i = 0; i < length; i++) {
        if (field[i] != '\\' || i + 1 >= length) {
            out[n++] = field[i];
            continue;
        }
        char kind = field[++i];
        if (kind == 'x' && i + 2 < length) {
            char hex[3] = {field[i + 1], field[i + 2], '\0'};
            out[n++] = (char)strtol(hex, NULL, 16);
            i += 2;
        } else {
            out[n++] = kind == 't' ? '\t' : kind == 'n' ? '\n' : kind == 'r' ? '\r' : kind;
        }
    }
    return n;
}

/* Prints bytes with the fixture escaping, for mismatch reports. */
static void print_escaped(const char *bytes, size_t length)
{
    for (size_t i = 0; i < length; i++) {
        unsigned char c = (unsigned char)bytes[i];
        if (c == '\\')
            fprintf(stderr, "\\\\");
        else if (c < 0x20 || c == 0x7F)
            fprintf(stderr, "\\x%02x", c);
        else
            fputc(c, stderr);
    }
}

static void print_ids(const char *label, const int32_t *ids, size_t count)
{
    fprintf(stderr, "      %s [", label);
    for (size_t i = 0; i < count; i++)
        fprintf(stderr, "%s%d", i ? " " : "", (int)ids[i]);
    fprintf(stderr, "]\n");
}

/* Decodes ids one by one into a new buffer, as a generation loop would. */
static char *decode_all(const tokenizer *tok, const int32_t *ids, size_t count, size_t *length)
{
    size_t total = 0;
    for (size_t i = 0; i < count; i++)
        total += tokenizer_decode_token(tok, ids[i], NULL, 0);
    char *text = malloc(total + 1);
    size_t n = 0;
    for (size_t i = 0; text != NULL && i < count; i++)
        n += tokenizer_decode_token(tok, ids[i], text + n, total - n);
    *length = n;
    return text;
}

static bool is_valid_utf8(const unsigned char *s, size_t length)
{
    for (size_t i = 0; i < length;) {
        size_t n = s[i] < 0x80 ? 1 : (s[i] & 0xE0) == 0xC0 ? 2 : (s[i] & 0xF0) == 0xE0 ? 3 : (s[i] & 0xF8) == 0xF0 ? 4 : 0;
        if (n == 0 || i + n > length)
            return false;
        uint32_t cp = n == 1 ? s[i] : (uint32_t)(s[i] & (0x7F >> n));
        for (size_t k = 1; k < n; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        static const uint32_t minimum[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < minimum[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += n;
    }
    return true;
}

/* What one fixture file showed. */
typedef struct fixture_tally {
    int cases, ids_match, decode_match;
    int round_trips, skipped_silent, skipped_malformed;
} fixture_tally;

/* Splits a fixture line into its four tab-separated fields. */
static bool split_fields(char *line, char *fields[4], size_t lengths[4])
{
    for (int f = 0; f < 4; f++) {
        fields[f] = line;
        char *tab = f < 3 ? strchr(line, '\t') : NULL;
        lengths[f] = tab != NULL ? (size_t)(tab - line) : strlen(line);
        if (f < 3 && tab == NULL)
            return false;
        line = tab != NULL ? tab + 1 : line;
    }
    return true;
}

/* Checks one fixture line against the tokenizer. */
static void check_case(const tokenizer *tok, const vocab_fixture *fixture, char *line, fixture_tally *tally)
{
    char *fields[4];
    size_t lengths[4];
    if (!split_fields(line, fields, lengths) || lengths[0] != 2) {
        CHECK_MESSAGE(false, "%s: malformed fixture line '%.40s'", fixture->fixture, line);
        return;
    }
    bool add_special = fields[0][0] == '1', parse_special = fields[0][1] == '1';
    char *input = malloc(lengths[1] + 1);
    char *decoded_expected = malloc((lengths[3] > lengths[1] ? lengths[3] : lengths[1]) + 1);
    int32_t *expected = malloc((lengths[2] / 2 + 2) * sizeof *expected);
    size_t input_length = unescape(fields[1], lengths[1], input);
    size_t expected_count = 0;
    for (char *cursor = fields[2]; cursor < fields[2] + lengths[2];) {
        char *end = NULL;
        expected[expected_count++] = (int32_t)strtol(cursor, &end, 10);
        cursor = end + 1;
    }
    bool same_as_input = lengths[3] == 1 && fields[3][0] == '=';
    size_t decoded_expected_length = same_as_input ? 0 : unescape(fields[3], lengths[3], decoded_expected);
    if (same_as_input) {
        memcpy(decoded_expected, input, input_length);
        decoded_expected_length = input_length;
    }

    tally->cases++;
    int32_t *ids = NULL;
    size_t count = 0;
    strata_error error = {0};
    strata_status status = tokenizer_encode(tok, input, input_length, add_special, parse_special, &ids, &count, &error);
    bool ids_match = status == STRATA_OK && count == expected_count &&
                     (count == 0 || memcmp(ids, expected, count * sizeof *ids) == 0);
    if (ids_match) {
        tally->ids_match++;
    } else if (tally->cases - tally->ids_match <= MISMATCHES_SHOWN) {
        fprintf(stderr, "    %s: ids differ (flags %c%c) for '", fixture->name, fields[0][0], fields[0][1]);
        print_escaped(input, input_length);
        fprintf(stderr, "'%s%s\n", status == STRATA_OK ? "" : ": ", status == STRATA_OK ? "" : error.message);
        print_ids("llama.cpp", expected, expected_count);
        print_ids("strata   ", ids, count);
    }

    /* Decoding is checked on llama.cpp's ids, so it stands on its own. */
    size_t decoded_length = 0;
    char *decoded = decode_all(tok, expected, expected_count, &decoded_length);
    bool decode_match = decoded != NULL && decoded_length == decoded_expected_length &&
                        memcmp(decoded, decoded_expected, decoded_length) == 0;
    if (decode_match) {
        tally->decode_match++;
    } else if (tally->cases - tally->decode_match <= MISMATCHES_SHOWN) {
        fprintf(stderr, "    %s: decoded text differs for '", fixture->name);
        print_escaped(input, input_length);
        fprintf(stderr, "'\n      llama.cpp '");
        print_escaped(decoded_expected, decoded_expected_length);
        fprintf(stderr, "'\n      strata    '");
        print_escaped(decoded, decoded != NULL ? decoded_length : 0);
        fprintf(stderr, "'\n");
    }

    /* Round trip, modulo the BOS add_special put in front and the
     * normalizations named at the top of this file. */
    bool silent = false;
    size_t first = add_special && tokenizer_adds_bos(tok) && expected_count > 0 ? 1 : 0;
    for (size_t i = first; i < expected_count; i++)
        silent = silent || tokenizer_decode_token(tok, expected[i], NULL, 0) == 0;
    if (silent) {
        tally->skipped_silent++;
    } else if (!is_valid_utf8((const unsigned char *)input, input_length)) {
        tally->skipped_malformed++;
    } else {
        bool exact = decoded != NULL && decoded_length == input_length && memcmp(decoded, input, input_length) == 0;
        bool space_prefixed = decoded != NULL && decoded_length == input_length + 1 && decoded[0] == ' ' &&
                              memcmp(decoded + 1, input, input_length) == 0;
        tally->round_trips += exact || space_prefixed;
        if (!exact && !space_prefixed) {
            fprintf(stderr, "    %s: decoding does not give the input back: '", fixture->name);
            print_escaped(input, input_length);
            fprintf(stderr, "'\n");
        }
        CHECK(exact || space_prefixed);
    }
    free(decoded);
    free(ids);
    free(expected);
    free(decoded_expected);
    free(input);
}

/* Compares the fixture header's "# key: value" properties with the tokenizer. */
static void check_header_line(const tokenizer *tok, const vocab_fixture *fixture, const char *line)
{
    long value = 0;
    char key[32];
    if (sscanf(line, "# %31[a-z_]: %ld", key, &value) != 2)
        return;
    long actual = strcmp(key, "vocab_size") == 0 ? tokenizer_vocab_size(tok)
                  : strcmp(key, "bos") == 0      ? tokenizer_bos(tok)
                  : strcmp(key, "eos") == 0      ? tokenizer_eos(tok)
                  : strcmp(key, "eot") == 0      ? tokenizer_eot(tok)
                  : strcmp(key, "add_bos") == 0  ? tokenizer_adds_bos(tok)
                                                 : value;
    CHECK_MESSAGE(actual == value, "%s: %s is %ld in llama.cpp, %ld in strata", fixture->name, key, value, actual);
}

static void check_fixture(const vocab_fixture *fixture)
{
    size_t size = 0;
    char *text = read_file(fixture->fixture, &size);
    CHECK_MESSAGE(text != NULL, "cannot read %s (run the test from the repository root)", fixture->fixture);
    loaded_vocab loaded = load_vocab(fixture->vocab, fixture->fetch);
    if (text == NULL || loaded.tok == NULL) {
        free(text);
        unload_vocab(&loaded);
        return;
    }
    fixture_tally tally = {0};
    for (char *line = text; line < text + size;) {
        char *newline = strchr(line, '\n');
        if (newline != NULL)
            *newline = '\0';
        if (line[0] == '#')
            check_header_line(loaded.tok, fixture, line);
        else if (line[0] != '\0')
            check_case(loaded.tok, fixture, line, &tally);
        line = newline != NULL ? newline + 1 : text + size;
    }
    fprintf(stderr,
            "  %-9s loaded in %.3f s; ids: %d/%d cases match llama.cpp; decoded text: %d/%d match; "
            "round trip: %d exact, %d skipped for control/unknown tokens, %d for malformed UTF-8\n",
            fixture->name, loaded.load_seconds, tally.ids_match, tally.cases, tally.decode_match, tally.cases,
            tally.round_trips, tally.skipped_silent, tally.skipped_malformed);
    CHECK(tally.cases >= 1000);
    CHECK_MESSAGE(tally.ids_match == tally.cases, "%s: %d of %d cases give other ids than llama.cpp", fixture->name,
                  tally.cases - tally.ids_match, tally.cases);
    CHECK_MESSAGE(tally.decode_match == tally.cases, "%s: %d of %d cases decode differently from llama.cpp",
                  fixture->name, tally.cases - tally.decode_match, tally.cases);
    unload_vocab(&loaded);
    free(text);
}

static void every_fixture_matches_llama_cpp(void)
{
    for (size_t i = 0; i < sizeof fixtures / sizeof fixtures[0]; i++)
        check_fixture(&fixtures[i]);
}

/* ------------------------------------------------------------ named cases */

static loaded_vocab gemma;

/* Encodes a NUL-terminated text with the given flags; returns the count. */
static size_t encode(const tokenizer *tok, const char *text, bool add_special, bool parse_special, int32_t **ids)
{
    strata_error error = {0};
    size_t count = 0;
    strata_status status = tokenizer_encode(tok, text, strlen(text), add_special, parse_special, ids, &count, &error);
    CHECK_MESSAGE(status == STRATA_OK, "encoding '%s': %s", text, error.message);
    return count;
}

static void empty_text_gives_only_the_bos_token(void)
{
    if (gemma.tok == NULL)
        return;
    int32_t *ids = NULL;
    CHECK(encode(gemma.tok, "", true, true, &ids) == 1 && ids[0] == tokenizer_bos(gemma.tok));
    free(ids);
    int32_t sentinel = 0;
    ids = &sentinel;
    CHECK(encode(gemma.tok, "", false, true, &ids) == 0 && ids == NULL);
}

static void byte_fallback_spells_unknown_characters_as_bytes(void)
{
    if (gemma.tok == NULL)
        return;
    /* U+10FFFF is in no vocabulary; "\x80" is not UTF-8 at all. */
    static const struct {
        const char *text;
        const char *pieces[4];
    } cases[] = {
        {"\xF4\x8F\xBF\xBF", {"<0xF4>", "<0x8F>", "<0xBF>", "<0xBF>"}},
        {"\x80", {"<0x80>"}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int32_t *ids = NULL;
        size_t count = encode(gemma.tok, cases[c].text, false, true, &ids);
        CHECK(count == strlen(cases[c].text));
        for (size_t i = 0; i < count && i < 4; i++) {
            const char *piece = tokenizer_piece(gemma.tok, ids[i], NULL);
            CHECK_MESSAGE(piece != NULL && strcmp(piece, cases[c].pieces[i]) == 0, "token %zu is '%s', not '%s'", i,
                          piece ? piece : "(null)", cases[c].pieces[i]);
        }
        size_t length = 0;
        char *decoded = decode_all(gemma.tok, ids, count, &length);
        CHECK(decoded != NULL && length == strlen(cases[c].text) && memcmp(decoded, cases[c].text, length) == 0);
        free(decoded);
        free(ids);
    }
}

static void control_token_text_becomes_one_token_only_when_parsing_special(void)
{
    if (gemma.tok == NULL)
        return;
    int32_t start = tokenizer_find(gemma.tok, "<start_of_turn>", strlen("<start_of_turn>"));
    int32_t newline = tokenizer_find(gemma.tok, "\n", 1);
    CHECK(start >= 0 && newline >= 0);
    int32_t *ids = NULL;
    size_t count = encode(gemma.tok, "<start_of_turn>user\n", false, true, &ids);
    CHECK(count == 3 && ids[0] == start && ids[2] == newline);
    free(ids);
    /* Without parse_special the control token is text, but "\n" is user-defined and still split out. */
    count = encode(gemma.tok, "<start_of_turn>user\n", false, false, &ids);
    CHECK(count > 3 && ids[count - 1] == newline);
    for (size_t i = 0; i < count; i++)
        CHECK(ids[i] != start);
    free(ids);
}

static void longer_special_tokens_split_first(void)
{
    if (gemma.tok == NULL)
        return;
    /* Gemma has user-defined tokens for runs of 2 to 31 spaces: 40 spaces are 31 + 9. */
    char spaces[41];
    memset(spaces, ' ', 40);
    spaces[40] = '\0';
    int32_t *ids = NULL;
    size_t count = encode(gemma.tok, spaces, false, true, &ids);
    CHECK(count == 2 && ids[0] == tokenizer_find(gemma.tok, spaces, 31) && ids[1] == tokenizer_find(gemma.tok, spaces, 9));
    free(ids);
}

static void end_of_generation_tokens_are_recognised(void)
{
    if (gemma.tok == NULL)
        return;
    int32_t end_of_turn = tokenizer_find(gemma.tok, "<end_of_turn>", strlen("<end_of_turn>"));
    int32_t start_of_turn = tokenizer_find(gemma.tok, "<start_of_turn>", strlen("<start_of_turn>"));
    CHECK(tokenizer_eot(gemma.tok) == end_of_turn);
    CHECK(tokenizer_is_end_of_generation(gemma.tok, tokenizer_eos(gemma.tok)));
    CHECK(tokenizer_is_end_of_generation(gemma.tok, end_of_turn));
    CHECK(!tokenizer_is_end_of_generation(gemma.tok, start_of_turn));
    CHECK(!tokenizer_is_end_of_generation(gemma.tok, tokenizer_find(gemma.tok, "the", 3)));
    CHECK(!tokenizer_is_end_of_generation(gemma.tok, -1) && !tokenizer_is_end_of_generation(gemma.tok, 1 << 30));
    CHECK(tokenizer_is_control(gemma.tok, start_of_turn));
}

static void pieces_and_lookup_agree(void)
{
    if (gemma.tok == NULL)
        return;
    int32_t size = tokenizer_vocab_size(gemma.tok);
    CHECK(size == 262144);
    int mismatches = 0;
    for (int32_t id = 0; id < size; id++) {
        size_t length = 0;
        const char *piece = tokenizer_piece(gemma.tok, id, &length);
        mismatches += piece == NULL || strlen(piece) != length || tokenizer_find(gemma.tok, piece, length) != id;
    }
    CHECK(mismatches == 0);
    CHECK(strcmp(tokenizer_piece(gemma.tok, tokenizer_bos(gemma.tok), NULL), "<bos>") == 0);
    CHECK(tokenizer_piece(gemma.tok, -1, NULL) == NULL && tokenizer_piece(gemma.tok, size, NULL) == NULL);
    CHECK(tokenizer_find(gemma.tok, "no such piece at all", 20) == -1);
}

static void decode_reports_the_full_length_past_capacity(void)
{
    if (gemma.tok == NULL)
        return;
    int32_t *ids = NULL;
    size_t count = encode(gemma.tok, " extraordinarily", false, true, &ids);
    CHECK(count >= 1);
    char buffer[4] = {'#', '#', '#', '#'};
    size_t full = tokenizer_decode_token(gemma.tok, ids[0], buffer, 2);
    CHECK(full > 2 && buffer[0] == ' ' && buffer[2] == '#');
    CHECK(tokenizer_decode_token(gemma.tok, tokenizer_bos(gemma.tok), buffer, sizeof buffer) == 0);
    CHECK(tokenizer_decode_token(gemma.tok, -5, buffer, sizeof buffer) == 0);
    free(ids);
}

static void long_inputs_tokenize_in_linear_time(void)
{
    if (gemma.tok == NULL)
        return;
    enum { BYTES = 100 * 1000 };
    static const char *const pieces[] = {"word ", "  ", "\n", "Привет ", "你好", "123456 ", "<start_of_turn>", "😀", "a"};
    char *text = malloc(BYTES + 32);
    for (size_t kind = 0; kind <= sizeof pieces / sizeof pieces[0]; kind++) {
        size_t n = 0;
        for (unsigned seed = 1; n < BYTES; seed = seed * 1103515245u + 12345u) {
            const char *piece = kind < sizeof pieces / sizeof pieces[0] ? pieces[kind] : pieces[(seed >> 16) % 9];
            memcpy(text + n, piece, strlen(piece));
            n += strlen(piece);
        }
        text[n] = '\0';
        double start = seconds_now();
        int32_t *ids = NULL;
        size_t count = encode(gemma.tok, text, true, true, &ids);
        double seconds = seconds_now() - start;
        /* Well under a second in a release build; the bound leaves room for sanitizers. */
        CHECK_MESSAGE(seconds < 3.0 && count > 1, "%zu bytes (kind %zu) took %.2f s", n, kind, seconds);
        free(ids);
    }
    free(text);
}

/* A tiny vocabulary built in memory: pieces, types, scores and extra keys. */
typedef struct tiny_vocab {
    const char *model;
    const char *pieces[12];
    int32_t types[12];
} tiny_vocab;

static gguf_writer *tiny_writer(const tiny_vocab *vocab)
{
    gguf_writer *writer = NULL;
    strata_error error = {0};
    uint64_t count = 0;
    while (count < 12 && vocab->pieces[count] != NULL)
        count++;
    float scores[12] = {0};
    for (uint64_t i = 0; i < count; i++)
        scores[i] = -(float)i;
    strata_status status = gguf_writer_create(&writer, &error);
    if (status == STRATA_OK && vocab->model != NULL)
        status = gguf_writer_set_string(writer, "tokenizer.ggml.model", vocab->model, &error);
    if (status == STRATA_OK)
        status = gguf_writer_set_string_array(writer, "tokenizer.ggml.tokens", vocab->pieces, count, &error);
    if (status == STRATA_OK)
        status = gguf_writer_set_array(writer, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, vocab->types, count, &error);
    if (status == STRATA_OK)
        status = gguf_writer_set_array(writer, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, scores, count, &error);
    if (status == STRATA_OK)
        status = gguf_writer_set_bool(writer, "tokenizer.ggml.add_space_prefix", false, &error);
    CHECK_MESSAGE(status == STRATA_OK, "building a tiny vocabulary: %s", error.message);
    return writer;
}

/* Loads the writer's image; returns the status and frees everything. */
static strata_status load_tiny(gguf_writer *writer, tokenizer **out, uint8_t **image, gguf_file **file,
                               strata_error *error)
{
    size_t size = 0;
    strata_status status = gguf_writer_write_memory(writer, image, &size, error);
    gguf_writer_destroy(writer);
    if (status == STRATA_OK)
        status = gguf_open_memory(*image, size, "tiny.gguf", file, error);
    if (status == STRATA_OK)
        status = tokenizer_load(*file, out, error);
    return status;
}

static const tiny_vocab tiny_spm = {
    "llama", {"<unk>", "<s>", "</s>", "x", "A", "B", "C", "xA", "ABC", "<0x21>"}, {2, 3, 3, 1, 1, 1, 1, 4, 4, 6},
};

static void special_tokens_split_longest_first_across_the_text(void)
{
    /* llama.cpp cuts the longest special text everywhere before a shorter one
     * gets a look: "xABC" is x, ABC, although "xA" starts earlier. */
    tokenizer *tok = NULL;
    uint8_t *image = NULL;
    gguf_file *file = NULL;
    strata_error error = {0};
    strata_status status = load_tiny(tiny_writer(&tiny_spm), &tok, &image, &file, &error);
    CHECK_MESSAGE(status == STRATA_OK, "%s", error.message);
    if (status == STRATA_OK) {
        int32_t *ids = NULL;
        size_t count = encode(tok, "xABC", false, true, &ids);
        CHECK(count == 2 && ids[0] == 3 && ids[1] == 8);
        free(ids);
        /* "!" falls back to its byte token; "?" has none, so it becomes <unk>. */
        count = encode(tok, "!?", false, true, &ids);
        CHECK(count == 2 && ids[0] == 9 && ids[1] == 0);
        free(ids);
    }
    tokenizer_destroy(tok);
    gguf_close(file);
    free(image);
}

static void malformed_vocabularies_are_refused_with_a_message(void)
{
    static const struct {
        const char *name;
        const char *key;       /* a key to overwrite with a bad value, or NULL */
        gguf_value_type type;  /* the bad value's type: a u32 7, a string "x" or an i32 array of 2 */
        const char *model;
    } cases[] = {
        {"no tokenizer.ggml.model", NULL, GGUF_TYPE_UINT32, NULL},
        {"an unknown model", NULL, GGUF_TYPE_UINT32, "wordpiece"},
        {"tokens that are a string", "tokenizer.ggml.tokens", GGUF_TYPE_STRING, "llama"},
        {"tokens that are integers", "tokenizer.ggml.tokens", GGUF_TYPE_ARRAY, "llama"},
        {"scores shorter than the tokens", "tokenizer.ggml.scores", GGUF_TYPE_ARRAY, "llama"},
        {"token types of the wrong type", "tokenizer.ggml.token_type", GGUF_TYPE_STRING, "llama"},
        {"a BOS id that is a string", "tokenizer.ggml.bos_token_id", GGUF_TYPE_STRING, "llama"},
        {"add_bos_token that is a number", "tokenizer.ggml.add_bos_token", GGUF_TYPE_UINT32, "llama"},
        {"gpt2 without merges", NULL, GGUF_TYPE_UINT32, "gpt2"},
        {"gpt2 with merges that are numbers", "tokenizer.ggml.merges", GGUF_TYPE_ARRAY, "gpt2"},
        {"gpt2 with an unknown pre-tokenizer", "tokenizer.ggml.pre", GGUF_TYPE_STRING, "gpt2"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        tiny_vocab vocab = tiny_spm;
        vocab.model = cases[c].model;
        gguf_writer *writer = tiny_writer(&vocab);
        strata_error error = {0};
        const int32_t pair[2] = {1, 2};
        if (cases[c].key != NULL && cases[c].type == GGUF_TYPE_UINT32)
            gguf_writer_set_u32(writer, cases[c].key, 7, &error);
        else if (cases[c].key != NULL && cases[c].type == GGUF_TYPE_STRING)
            gguf_writer_set_string(writer, cases[c].key, "x", &error);
        else if (cases[c].key != NULL)
            gguf_writer_set_array(writer, cases[c].key, GGUF_TYPE_INT32, pair, 2, &error);
        if (cases[c].key != NULL && strcmp(cases[c].key, "tokenizer.ggml.pre") == 0)
            gguf_writer_set_string_array(writer, "tokenizer.ggml.merges", (const char *const[]){"A B"}, 1, &error);
        tokenizer *tok = NULL;
        uint8_t *image = NULL;
        gguf_file *file = NULL;
        error = (strata_error){0};
        strata_status status = load_tiny(writer, &tok, &image, &file, &error);
        CHECK_MESSAGE(status != STRATA_OK && tok == NULL && error.message[0] != '\0', "%s was accepted", cases[c].name);
        if (status != STRATA_OK)
            fprintf(stderr, "    %s: %s\n", cases[c].name, error.message);
        gguf_close(file);
        free(image);
    }
}

int main(void)
{
    fprintf(stderr, "tokenizer fixtures (tests/fixtures/tokenizer, made with llama.cpp):\n");
    RUN_CASE(every_fixture_matches_llama_cpp);
    gemma = load_vocab(fixtures[0].vocab, fixtures[0].fetch);
    RUN_CASE(empty_text_gives_only_the_bos_token);
    RUN_CASE(byte_fallback_spells_unknown_characters_as_bytes);
    RUN_CASE(control_token_text_becomes_one_token_only_when_parsing_special);
    RUN_CASE(longer_special_tokens_split_first);
    RUN_CASE(end_of_generation_tokens_are_recognised);
    RUN_CASE(pieces_and_lookup_agree);
    RUN_CASE(decode_reports_the_full_length_past_capacity);
    RUN_CASE(long_inputs_tokenize_in_linear_time);
    unload_vocab(&gemma);
    RUN_CASE(special_tokens_split_longest_first_across_the_text);
    RUN_CASE(malformed_vocabularies_are_refused_with_a_message);
    TEST_EXIT();
}
