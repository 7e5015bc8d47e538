/* tokenize/bpe.c: byte-level BPE (tokenizer.ggml.model = gpt2).
 *
 * A raw fragment is first cut into words by the pre-tokenizer regex that
 * tokenizer.ggml.pre names (PCRE2, UTF and Unicode properties, JIT when
 * available). Each word's bytes are mapped to printable characters through
 * the GPT-2 byte table (bytes 33-126, 161-172 and 174-255 stand for
 * themselves, the other 68 become U+0100, U+0101, ... in order: ' ' is 'Ġ',
 * '\n' is 'Ċ'), then adjacent symbols merge in the order of the merge list
 * (lowest rank first, ties leftmost). With ignore_merges (the llama3 family)
 * a word that is already a vocabulary token is emitted whole.
 *
 * The regexes are llama.cpp's, with \s written out as the exact set of
 * Unicode White_Space characters llama.cpp uses (PCRE2's \s would add
 * U+180E), and a final \s+ alternative where llama.cpp's hand-written
 * splitter has one. Input that is not valid UTF-8 is read the way
 * llama.cpp reads it: each byte that does not start a well-formed sequence
 * becomes U+FFFD. */
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "base/error.h"
#include "tokenize/tokenizer_internal.h"

/* Character classes as llama.cpp defines them (its tables are Unicode 15.1):
 * WS is the White_Space property; LETTERS and NUMBERS are \p{L} and \p{N} plus the
 * letters and digits assigned after Unicode 14, the version PCRE2 10.42
 * knows (with a newer PCRE2 the extra ranges are simply redundant). They go
 * inside [...]. */
#define WS "\\t-\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"
#define LETTERS                                                                                                \
    "\\p{L}\\x{1123F}-\\x{11240}\\x{11F02}\\x{11F04}-\\x{11F10}\\x{11F12}-\\x{11F33}\\x{1342F}\\x{13441}-\\x{13446}" \
    "\\x{1B132}\\x{1B155}\\x{1DF25}-\\x{1DF2A}\\x{1E030}-\\x{1E06D}\\x{1E4D0}-\\x{1E4EB}\\x{2B739}"               \
    "\\x{2EBF0}-\\x{2EE5D}\\x{31350}-\\x{323AF}"
#define NUMBERS "\\p{N}\\x{11F50}-\\x{11F59}\\x{1D2C0}-\\x{1D2D3}\\x{1E4F0}-\\x{1E4F9}"
#define CONTRACTIONS "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
#define LLAMA3_HEAD CONTRACTIONS "|[^\\r\\n" LETTERS NUMBERS "]?[" LETTERS "]+"
#define LLAMA3_TAIL "| ?[^" WS LETTERS NUMBERS "]+[\\r\\n]*|[" WS "]*[\\r\\n]+|[" WS "]+(?![^" WS "])|[" WS "]+"
#define GPT2_PATTERN "'s|'t|'re|'ve|'m|'ll|'d| ?[" LETTERS "]+| ?[" NUMBERS "]+| ?[^" WS LETTERS NUMBERS "]+|[" WS "]+(?![^" WS "])"

enum { MAX_PATTERNS = 4 };

/* A pre-tokenizer: the tokenizer.ggml.pre names that select it, its regexes
 * (applied one after another, each splitting the pieces the last one made)
 * and the flags llama.cpp sets with it. */
typedef struct bpe_pretokenizer {
    const char *names[8];
    const char *patterns[MAX_PATTERNS];
    bool ignore_merges;
    bool add_bos;
} bpe_pretokenizer;

static const bpe_pretokenizer pretokenizers[] = {
    {
        .names = {"llama3", "llama-v3", "llama-bpe", "falcon3", "pixtral"},
        .patterns = {LLAMA3_HEAD "|[" NUMBERS "]{1,3}" LLAMA3_TAIL},
        .ignore_merges = true,
        .add_bos = true,
    },
    {
        .names = {"qwen2", "deepseek-r1-qwen", "stablelm2"},
        .patterns = {LLAMA3_HEAD "|[" NUMBERS "]" LLAMA3_TAIL},
    },
    {
        .names = {"gpt-2", "phi-2", "olmo", "mpt"},
        .patterns = {GPT2_PATTERN "|[" WS "]+"},
    },
    {
        .names = {"starcoder", "refact", "command-r", "smollm", "codeshell", "exaone", "minerva"},
        .patterns = {"[" NUMBERS "]", GPT2_PATTERN "|[" WS "]+"},
    },
    {
        /* No pre-tokenizer named: llama.cpp's generic fallback. */
        .names = {"default", ""},
        .patterns = {"[\\p{P}\\$\\+<=>\\^~\\|]+", GPT2_PATTERN, "[" NUMBERS "]+", "[0-9][0-9][0-9]"},
    },
};

struct bpe_model {
    const bpe_pretokenizer *pretokenizer;
    pcre2_code *patterns[MAX_PATTERNS];
    size_t pattern_count;
    hash_map *merge_ranks; /* "left right" -> rank; keys point into merge_text */
    char *merge_text;
    char byte_chars[256][2]; /* the UTF-8 of each byte's stand-in character */
    unsigned char byte_char_length[256];
    int16_t char_bytes[324]; /* stand-in code point -> byte, or -1 */
};

/* Fills the GPT-2 byte <-> character tables. */
static void build_byte_table(bpe_model *bpe)
{
    memset(bpe->char_bytes, 0xFF, sizeof bpe->char_bytes);
    unsigned next = 256;
    for (unsigned byte = 0; byte < 256; byte++) {
        bool printable = (byte >= 33 && byte <= 126) || (byte >= 161 && byte <= 172) || byte >= 174;
        unsigned code_point = printable ? byte : next++;
        bpe->char_bytes[code_point] = (int16_t)byte;
        if (code_point < 0x80) {
            bpe->byte_chars[byte][0] = (char)code_point;
            bpe->byte_char_length[byte] = 1;
        } else {
            bpe->byte_chars[byte][0] = (char)(0xC0 | (code_point >> 6));
            bpe->byte_chars[byte][1] = (char)(0x80 | (code_point & 0x3F));
            bpe->byte_char_length[byte] = 2;
        }
    }
}

static const bpe_pretokenizer *find_pretokenizer(const char *name, size_t length)
{
    for (size_t i = 0; i < sizeof pretokenizers / sizeof pretokenizers[0]; i++)
        for (size_t j = 0; j < 8 && pretokenizers[i].names[j] != NULL; j++)
            if (strlen(pretokenizers[i].names[j]) == length && memcmp(pretokenizers[i].names[j], name, length) == 0)
                return &pretokenizers[i];
    return NULL;
}

static strata_status compile_patterns(bpe_model *bpe, strata_error *err)
{
    for (size_t i = 0; i < MAX_PATTERNS && bpe->pretokenizer->patterns[i] != NULL; i++) {
        int code = 0;
        PCRE2_SIZE offset = 0;
        pcre2_code *pattern = pcre2_compile((PCRE2_SPTR)bpe->pretokenizer->patterns[i], PCRE2_ZERO_TERMINATED,
                                            PCRE2_UTF | PCRE2_UCP, &code, &offset, NULL);
        if (pattern == NULL) {
            PCRE2_UCHAR message[160];
            pcre2_get_error_message(code, message, sizeof message);
            return strata_fail(err, STRATA_E_INTERNAL,
                               "tokenizer: pre-tokenizer regex %zu does not compile at offset %zu: %s", i,
                               (size_t)offset, (const char *)message);
        }
        pcre2_jit_compile(pattern, PCRE2_JIT_COMPLETE); /* without JIT, matching is slower but the same */
        bpe->patterns[bpe->pattern_count++] = pattern;
    }
    return STRATA_OK;
}

/* Copies the merge list and indexes it by its "left right" text; the first
 * occurrence of a pair keeps its rank, as in llama.cpp. */
static strata_status load_merges(const gguf_file *file, bpe_model *bpe, strata_error *err)
{
    const gguf_value *merges = NULL;
    strata_status status = tokenizer_find_array(file, "tokenizer.ggml.merges", GGUF_TYPE_STRING, 0, true, &merges, err);
    if (status != STRATA_OK)
        return status;
    uint64_t count = merges->as.array.count;
    if (count > INT32_MAX)
        return strata_fail(err, STRATA_E_FORMAT, "tokenizer: %llu merges is more than the limit of %d",
                           (unsigned long long)count, INT32_MAX);
    const gguf_string *strings = merges->as.array.strings;
    size_t bytes = 0;
    for (uint64_t i = 0; i < count; i++)
        bytes += (size_t)strings[i].length; /* the whole array lies inside the mapped file */
    bpe->merge_text = malloc(bytes + 1);
    status = bpe->merge_text == NULL
        ? strata_fail(err, STRATA_E_OUT_OF_MEMORY, "tokenizer: cannot copy %zu bytes of merges", bytes)
        : hash_map_create((size_t)count, &bpe->merge_ranks, err);
    size_t offset = 0;
    for (uint64_t i = 0; i < count && status == STRATA_OK; i++) {
        const char *text = bpe->merge_text + offset;
        size_t length = (size_t)strings[i].length;
        if (length > 0)
            memcpy(bpe->merge_text + offset, strings[i].data, length);
        offset += length;
        /* llama.cpp splits at the first space after the first byte; without one the pair is ("", ""), which never matches. */
        const char *space = length > 1 ? memchr(text + 1, ' ', length - 1) : NULL;
        int64_t rank = 0;
        if (space != NULL && !hash_map_get(bpe->merge_ranks, text, length, &rank))
            status = hash_map_put(bpe->merge_ranks, text, length, (int64_t)i, err);
    }
    return status;
}

strata_status bpe_model_load(const gguf_file *file, tokenizer *tok, strata_error *err)
{
    gguf_string pre = {0};
    bool found = false;
    strata_status status = gguf_get_string(file, "tokenizer.ggml.pre", &pre, &found, err);
    if (status != STRATA_OK)
        return status;
    const bpe_pretokenizer *pretokenizer = find_pretokenizer(found ? pre.data : "", found ? (size_t)pre.length : 0);
    if (pretokenizer == NULL)
        return strata_fail(err, STRATA_E_UNSUPPORTED,
                           "tokenizer: pre-tokenizer '%.*s' (tokenizer.ggml.pre) is not supported; strata knows "
                           "llama3/llama-bpe, qwen2, gpt-2, starcoder and default",
                           (int)(pre.length > 64 ? 64 : pre.length), pre.data);
    bpe_model *bpe = calloc(1, sizeof *bpe);
    if (bpe == NULL)
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "tokenizer: cannot allocate the BPE state");
    tok->bpe = bpe;
    bpe->pretokenizer = pretokenizer;
    tok->add_bos = pretokenizer->add_bos;
    build_byte_table(bpe);
    status = compile_patterns(bpe, err);
    if (status == STRATA_OK)
        status = load_merges(file, bpe, err);
    return status;
}

void bpe_model_destroy(bpe_model *bpe)
{
    if (bpe == NULL)
        return;
    for (size_t i = 0; i < bpe->pattern_count; i++)
        pcre2_code_free(bpe->patterns[i]);
    hash_map_destroy(bpe->merge_ranks);
    free(bpe->merge_text);
    free(bpe);
}

/* Reads one code point the way llama.cpp's unicode_cpt_from_utf8 does: the
 * lead byte says the length and the continuation bytes must follow;
 * overlong forms are accepted. Returns the length consumed (1 for a bad byte,
 * reported as U+FFFD). */
static size_t read_code_point(const unsigned char *text, size_t length, uint32_t *code_point)
{
    size_t n = utf8_sequence_length(text[0]);
    if (n == 1 && text[0] >= 0x80) {
        *code_point = 0xFFFD;
        return 1;
    }
    if (text[0] >= 0xF8 || n > length) {
        *code_point = 0xFFFD;
        return 1;
    }
    static const unsigned char lead_mask[5] = {0, 0x7F, 0x1F, 0x0F, 0x07};
    uint32_t value = text[0] & lead_mask[n];
    for (size_t i = 1; i < n; i++) {
        if ((text[i] & 0xC0) != 0x80) {
            *code_point = 0xFFFD;
            return 1;
        }
        value = (value << 6) | (text[i] & 0x3F);
    }
    *code_point = value;
    return n;
}

static size_t write_code_point(uint32_t code_point, char *out)
{
    if (code_point < 0x80) {
        out[0] = (char)code_point;
        return 1;
    }
    if (code_point < 0x800) {
        out[0] = (char)(0xC0 | (code_point >> 6));
        out[1] = (char)(0x80 | (code_point & 0x3F));
        return 2;
    }
    if (code_point < 0x10000) {
        out[0] = (char)(0xE0 | (code_point >> 12));
        out[1] = (char)(0x80 | ((code_point >> 6) & 0x3F));
        out[2] = (char)(0x80 | (code_point & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (code_point >> 18));
    out[1] = (char)(0x80 | ((code_point >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((code_point >> 6) & 0x3F));
    out[3] = (char)(0x80 | (code_point & 0x3F));
    return 4;
}

/* Writes text as llama.cpp reads it into words (room for 3 bytes per input
 * byte), and the same with each surrogate replaced by U+FFFD into matchable,
 * which PCRE2 can search: a surrogate (kept, like llama.cpp, encoded as 3
 * bytes) and U+FFFD are both "other" to the regexes and have the same length,
 * so words cut from matchable have the same offsets in words. Malformed bytes
 * become U+FFFD in both; so do code points past U+10FFFF, on which
 * llama.cpp itself stops with an exception. Returns the common length. */
static size_t repair_utf8(const char *text, size_t length, char *words, char *matchable)
{
    size_t n = 0;
    for (size_t i = 0; i < length;) {
        uint32_t code_point = 0;
        i += read_code_point((const unsigned char *)text + i, length - i, &code_point);
        if (code_point > 0x10FFFF)
            code_point = 0xFFFD;
        size_t written = write_code_point(code_point, words + n);
        if (code_point >= 0xD800 && code_point <= 0xDFFF)
            write_code_point(0xFFFD, matchable + n);
        else
            memcpy(matchable + n, words + n, written);
        n += written;
    }
    return n;
}

/* Per-call scratch memory of bpe_encode. */
typedef struct bpe_scratch {
    const bpe_model *bpe;
    char *word;  /* the current word through the byte table */
    char *key;   /* "left right" for merge lookups */
    size_t word_capacity;
    merge_work merge;
} bpe_scratch;

static bool bpe_pair_priority(const void *context, const char *text, size_t left_length,
                              size_t right_length, double *priority)
{
    const bpe_scratch *scratch = context;
    memcpy(scratch->key, text, left_length);
    scratch->key[left_length] = ' ';
    memcpy(scratch->key + left_length + 1, text + left_length, right_length);
    int64_t rank = 0;
    if (!hash_map_get(scratch->bpe->merge_ranks, scratch->key, left_length + 1 + right_length, &rank))
        return false;
    *priority = (double)rank;
    return true;
}

/* Byte-encodes one word, merges it and appends its tokens. */
static strata_status encode_word(const tokenizer *tok, bpe_scratch *scratch, const char *text, size_t length,
                                 token_list *out, strata_error *err)
{
    const bpe_model *bpe = scratch->bpe;
    if (length * 2 + 1 > scratch->word_capacity) {
        size_t capacity = length * 2 + 1;
        char *word = realloc(scratch->word, capacity);
        char *key = word == NULL ? NULL : realloc(scratch->key, capacity + 1);
        if (word != NULL)
            scratch->word = word;
        if (key == NULL)
            return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "tokenizer: cannot allocate %zu bytes for a word",
                               capacity);
        scratch->key = key;
        scratch->word_capacity = capacity;
    }
    size_t n = 0;
    for (size_t i = 0; i < length; i++) {
        unsigned char byte = (unsigned char)text[i];
        memcpy(scratch->word + n, bpe->byte_chars[byte], bpe->byte_char_length[byte]);
        n += bpe->byte_char_length[byte];
    }

    if (bpe->pretokenizer->ignore_merges) {
        int32_t id = tokenizer_lookup(tok, scratch->word, n);
        if (id >= 0)
            return token_list_push(out, id, err);
    }

    size_t symbol_count = 0;
    strata_status status = merge_run(&scratch->merge, scratch->word, n, bpe_pair_priority, scratch, &symbol_count, err);
    for (int32_t i = symbol_count > 0 ? 0 : -1; i >= 0 && status == STRATA_OK; i = scratch->merge.symbols[i].next) {
        const merge_symbol *symbol = &scratch->merge.symbols[i];
        const char *piece = scratch->word + symbol->start;
        int32_t id = tokenizer_lookup(tok, piece, symbol->length);
        if (id >= 0) {
            status = token_list_push(out, id, err);
            continue;
        }
        /* No token: llama.cpp looks each byte of the mapped text up on its own and drops the misses. */
        for (uint32_t j = 0; j < symbol->length && status == STRATA_OK; j++) {
            id = tokenizer_lookup(tok, piece + j, 1);
            if (id >= 0)
                status = token_list_push(out, id, err);
        }
    }
    return status;
}

/* A run of text awaiting the next regex. */
typedef struct text_span {
    size_t start;
    size_t length;
} text_span;

typedef struct span_list {
    text_span *spans;
    size_t count;
    size_t capacity;
} span_list;

static strata_status span_push(span_list *list, size_t start, size_t length, strata_error *err)
{
    if (length == 0)
        return STRATA_OK;
    if (list->count == list->capacity) {
        size_t capacity = list->capacity ? list->capacity * 2 : 64;
        text_span *spans = realloc(list->spans, capacity * sizeof *spans);
        if (spans == NULL)
            return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "tokenizer: cannot grow the word list to %zu words",
                               capacity);
        list->spans = spans;
        list->capacity = capacity;
    }
    list->spans[list->count++] = (text_span){start, length};
    return STRATA_OK;
}

/* Splits each span of in by pattern into out: every match is a word, and so
 * is each stretch between matches. */
static strata_status split_spans(const pcre2_code *pattern, pcre2_match_data *match, const char *text,
                                 const span_list *in, span_list *out, strata_error *err)
{
    out->count = 0;
    strata_status status = STRATA_OK;
    for (size_t s = 0; s < in->count && status == STRATA_OK; s++) {
        const char *subject = text + in->spans[s].start;
        size_t length = in->spans[s].length;
        size_t done = 0;
        size_t offset = 0;
        while (offset < length && status == STRATA_OK) {
            int rc = pcre2_match(pattern, (PCRE2_SPTR)subject, length, offset, PCRE2_NO_UTF_CHECK, match, NULL);
            if (rc == PCRE2_ERROR_NOMATCH)
                break;
            if (rc < 0) {
                PCRE2_UCHAR message[160];
                pcre2_get_error_message(rc, message, sizeof message);
                return strata_fail(err, STRATA_E_INTERNAL,
                                   "tokenizer: the pre-tokenizer regex failed at byte %zu of a %zu-byte fragment: %s",
                                   offset, length, (const char *)message);
            }
            const PCRE2_SIZE *bounds = pcre2_get_ovector_pointer(match);
            size_t begin = bounds[0], end = bounds[1];
            if (end == begin) { /* cannot happen with our patterns; step over one character */
                offset = begin + 1;
                while (offset < length && ((unsigned char)subject[offset] & 0xC0) == 0x80)
                    offset++;
                continue;
            }
            status = span_push(out, in->spans[s].start + done, begin - done, err);
            if (status == STRATA_OK)
                status = span_push(out, in->spans[s].start + begin, end - begin, err);
            done = offset = end;
        }
        if (status == STRATA_OK)
            status = span_push(out, in->spans[s].start + done, length - done, err);
    }
    return status;
}

strata_status bpe_encode(const tokenizer *tok, const char *text, size_t length, token_list *out,
                         strata_error *err)
{
    const bpe_model *bpe = tok->bpe;
    if (length > (SIZE_MAX - 2) / 6)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT, "tokenizer: %zu bytes of text is too long", length);
    char *words = malloc(length * 6 + 2);
    char *matchable = words == NULL ? NULL : words + length * 3 + 1;
    pcre2_match_data *match = pcre2_match_data_create(1, NULL);
    span_list spans[2] = {{0}};
    bpe_scratch scratch = {.bpe = bpe};
    strata_status status = STRATA_OK;
    if (words == NULL || match == NULL)
        status = strata_fail(err, STRATA_E_OUT_OF_MEMORY, "tokenizer: cannot allocate %zu bytes to split a fragment",
                             length * 6);
    size_t repaired_length = status == STRATA_OK ? repair_utf8(text, length, words, matchable) : 0;
    if (status == STRATA_OK)
        status = span_push(&spans[0], 0, repaired_length, err);
    int current = 0;
    for (size_t p = 0; p < bpe->pattern_count && status == STRATA_OK; p++) {
        status = split_spans(bpe->patterns[p], match, matchable, &spans[current], &spans[1 - current], err);
        current = 1 - current;
    }
    for (size_t w = 0; status == STRATA_OK && w < spans[current].count; w++)
        status = encode_word(tok, &scratch, words + spans[current].spans[w].start, spans[current].spans[w].length,
                             out, err);
    merge_work_free(&scratch.merge);
    free(scratch.word);
    free(scratch.key);
    free(spans[0].spans);
    free(spans[1].spans);
    pcre2_match_data_free(match);
    free(words);
    return status;
}

size_t bpe_decode_piece(const bpe_model *bpe, const char *piece, size_t length, char *buffer, size_t capacity)
{
    size_t n = 0;
    for (size_t i = 0; i < length;) {
        uint32_t code_point = 0;
        size_t used = read_code_point((const unsigned char *)piece + i, length - i, &code_point);
        if (code_point < sizeof bpe->char_bytes / sizeof bpe->char_bytes[0] && bpe->char_bytes[code_point] >= 0) {
            if (n < capacity)
                buffer[n] = (char)bpe->char_bytes[code_point];
            n++;
        } else {
            /* llama.cpp writes "[UNK_BYTE_0x<hex of the character>" followed by the whole piece and "]". */
            char utf8[4];
            size_t utf8_length = write_code_point(code_point, utf8);
            char head[24] = "[UNK_BYTE_0x";
            size_t head_length = 12;
            for (size_t b = 0; b < utf8_length; b++) {
                static const char hex[] = "0123456789abcdef";
                head[head_length++] = hex[(unsigned char)utf8[b] >> 4];
                head[head_length++] = hex[(unsigned char)utf8[b] & 15];
            }
            for (size_t b = 0; b < head_length; b++, n++)
                if (n < capacity)
                    buffer[n] = head[b];
            for (size_t b = 0; b < length; b++, n++)
                if (n < capacity)
                    buffer[n] = piece[b];
            if (n < capacity)
                buffer[n] = ']';
            n++;
        }
        i += used;
    }
    return n;
}
