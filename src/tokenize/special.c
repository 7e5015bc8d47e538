/* tokenize/special.c: cutting special-token text out of the input.
 *
 * Control, unknown and user-defined tokens ("<start_of_turn>", "<|im_end|>",
 * Gemma's runs of spaces and newlines) are never produced by merging: their
 * text is found in the raw input first and replaced by their ids. llama.cpp
 * does this token by token, longest text first: each token splits every
 * remaining raw fragment at all of its (non-overlapping, leftmost-first)
 * occurrences, and only then does the next, shorter token look at what is
 * left. That order is part of the result ("xABC" with tokens "ABC" and "xA"
 * gives x, ABC), so it is kept here exactly.
 *
 * Done literally, that costs a pass over the text per special token present,
 * and Gemma has 6,414 of them. Instead a byte trie of all special texts finds
 * every occurrence of every special token in two walks over the text (count,
 * then store positions), and the tokens are then applied in llama.cpp's order
 * to a map of which bytes are already taken: an occurrence is cut when none
 * of its bytes is taken (it then lies inside one of llama.cpp's raw
 * fragments) and it does not overlap the same token's previous cut. The
 * untaken runs left at the end are the raw fragments. Tokens found very often
 * (runs of spaces) are searched again with memmem rather than having every
 * position stored, so memory stays proportional to the text.
 *
 * With parse_special false, control and unknown tokens are ignored and only
 * user-defined ones split. A token with the rstrip attribute (Phi-3's) also
 * takes the white space after it, which then belongs to no fragment. */
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "tokenize/tokenizer_internal.h"

/* A trie node: its children form a sibling list; order is the position in
 * special_tokens.ids of the token ending here, or -1. */
typedef struct trie_node {
    int32_t first_child;
    int32_t next_sibling;
    int32_t order;
    unsigned char byte;
} trie_node;

struct special_tokens {
    int32_t *ids;  /* special token ids, longest text first; ties by lower id (llama.cpp's
                    * sort leaves their order open; it only matters if equal-length texts overlap) */
    size_t count;
    trie_node *nodes;
    size_t node_count;
    int32_t roots[256]; /* the node for each first byte, or -1 */
    bool any_rstrip;    /* some special token has TOKEN_RSTRIP */
};

/* A special token while sorting: longest text first, ties by lower id. */
typedef struct special_order {
    uint32_t length;
    int32_t id;
} special_order;

static int compare_order(const void *a, const void *b)
{
    const special_order *x = a, *y = b;
    if (x->length != y->length)
        return x->length > y->length ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

static bool is_special(uint8_t attr)
{
    return (attr & (TOKEN_CONTROL | TOKEN_USER_DEFINED | TOKEN_UNKNOWN)) != 0;
}

/* Returns the child of parent (a root when parent is -1) for byte, or -1. */
static int32_t trie_child(const special_tokens *specials, int32_t parent, unsigned char byte)
{
    int32_t node = parent < 0 ? specials->roots[byte] : specials->nodes[parent].first_child;
    if (parent < 0)
        return node;
    while (node >= 0 && specials->nodes[node].byte != byte)
        node = specials->nodes[node].next_sibling;
    return node;
}

static int32_t trie_add_child(special_tokens *specials, int32_t parent, unsigned char byte)
{
    int32_t node = (int32_t)specials->node_count++;
    specials->nodes[node] = (trie_node){.first_child = -1, .next_sibling = -1, .order = -1, .byte = byte};
    if (parent < 0) {
        specials->roots[byte] = node;
    } else {
        specials->nodes[node].next_sibling = specials->nodes[parent].first_child;
        specials->nodes[parent].first_child = node;
    }
    return node;
}

strata_status special_tokens_build(const tokenizer *tok, special_tokens **out, strata_error *err)
{
    *out = NULL;
    special_tokens *specials = calloc(1, sizeof *specials);
    if (specials == NULL)
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "tokenizer: cannot allocate the special-token index");
    memset(specials->roots, 0xFF, sizeof specials->roots);
    size_t total_bytes = 0;
    for (int32_t id = 0; id < tok->n_tokens; id++) {
        if (is_special(tok->tokens[id].attr)) {
            specials->count++;
            total_bytes += tok->tokens[id].length;
        }
    }
    size_t count = specials->count;
    if (total_bytes >= INT32_MAX) {
        special_tokens_destroy(specials);
        return strata_fail(err, STRATA_E_FORMAT,
                           "tokenizer: the %zu special tokens take %zu bytes, more than the limit of %d", count,
                           total_bytes, INT32_MAX - 1);
    }
    special_order *sorted = malloc((count + 1) * sizeof *sorted);
    specials->ids = malloc((count + 1) * sizeof *specials->ids);
    specials->nodes = malloc((total_bytes + 1) * sizeof *specials->nodes);
    if (sorted == NULL || specials->ids == NULL || specials->nodes == NULL) {
        free(sorted);
        special_tokens_destroy(specials);
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY,
                           "tokenizer: cannot allocate the index of %zu special tokens", count);
    }
    size_t n = 0;
    for (int32_t id = 0; id < tok->n_tokens; id++)
        if (is_special(tok->tokens[id].attr))
            sorted[n++] = (special_order){tok->tokens[id].length, id};
    qsort(sorted, count, sizeof *sorted, compare_order);
    for (size_t i = 0; i < count; i++)
        specials->ids[i] = sorted[i].id;
    free(sorted);

    for (size_t order = 0; order < specials->count; order++) {
        const token_entry *entry = &tok->tokens[specials->ids[order]];
        const unsigned char *text = (const unsigned char *)tok->pieces + entry->offset;
        int32_t node = -1;
        for (uint32_t i = 0; i < entry->length; i++) {
            int32_t child = trie_child(specials, node, text[i]);
            node = child >= 0 ? child : trie_add_child(specials, node, text[i]);
        }
        if (node >= 0 && specials->nodes[node].order < 0)
            specials->nodes[node].order = (int32_t)order;
        specials->any_rstrip = specials->any_rstrip || (entry->attr & TOKEN_RSTRIP) != 0;
    }
    *out = specials;
    return STRATA_OK;
}

void special_tokens_destroy(special_tokens *specials)
{
    if (specials == NULL)
        return;
    free(specials->ids);
    free(specials->nodes);
    free(specials);
}

static bool may_split(const tokenizer *tok, int32_t id, bool parse_special)
{
    return parse_special || (tok->tokens[id].attr & (TOKEN_CONTROL | TOKEN_UNKNOWN)) == 0;
}

/* Where each special token occurs in the text, found by one walk of the trie
 * per pass: the first pass counts, the second stores the positions of the
 * "light" tokens (those occurring at most heavy_threshold times). Heavy
 * tokens, typically Gemma's runs of spaces, are found again with memmem
 * instead, which keeps the stored positions small for any input. */
typedef struct occurrences {
    uint32_t *counts;    /* per order: occurrences in the text */
    size_t *first;       /* per order, light tokens: index of its first position */
    size_t *filled;      /* per order, light tokens: positions stored so far */
    uint32_t *positions; /* light tokens' positions, grouped by order, ascending */
    uint32_t heavy_threshold;
} occurrences;

/* Walks the trie from every position, counting each allowed match, and
 * storing its position too once positions is allocated. */
static void walk_matches(const tokenizer *tok, const char *text, size_t length, bool parse_special,
                         occurrences *found)
{
    const special_tokens *specials = tok->specials;
    for (size_t start = 0; start < length; start++) {
        int32_t node = trie_child(specials, -1, (unsigned char)text[start]);
        for (size_t i = start + 1; node >= 0; i++) {
            int32_t order = specials->nodes[node].order;
            if (order >= 0 && may_split(tok, specials->ids[order], parse_special)) {
                if (found->positions == NULL)
                    found->counts[order]++;
                else if (found->counts[order] <= found->heavy_threshold)
                    found->positions[found->first[order] + found->filled[order]++] = (uint32_t)start;
            }
            node = i < length ? trie_child(specials, node, (unsigned char)text[i]) : -1;
        }
    }
}

/* The white space of C's isspace in the "C" locale, which llama.cpp strips with. */
static bool is_c_space(char c)
{
    return c == ' ' || (c >= '\t' && c <= '\r');
}

/* The text while special tokens are cut out of it: which bytes are taken
 * (by a token, or as white space an rstrip token ate) and which token starts
 * where. The raw fragments llama.cpp would hold are the untaken runs. */
typedef struct split_state {
    const char *text;
    size_t length;
    unsigned char *taken;
    int32_t *token_at;
    bool any_rstrip; /* then taken runs can be shorter than a token, so ranges are checked byte by byte */
} split_state;

static bool range_free(const split_state *state, size_t start, size_t length)
{
    /* Every earlier cut is at least this long (longest first), so a cut that
     * overlaps the range covers one of its ends. */
    if (state->taken[start] || state->taken[start + length - 1])
        return false;
    for (size_t i = start + 1; state->any_rstrip && i + 1 < start + length; i++)
        if (state->taken[i])
            return false;
    return true;
}

/* Cuts token id out at position if llama.cpp would: the occurrence lies in one
 * raw fragment and does not overlap the token's previous cut. Returns where
 * the token's next occurrence may start, or 0 when this one was not cut. */
static size_t try_cut(split_state *state, int32_t id, uint32_t length, bool rstrip, size_t position,
                      size_t allowed_from)
{
    if (position < allowed_from || !range_free(state, position, length))
        return 0;
    memset(state->taken + position, 1, length);
    state->token_at[position] = id;
    size_t end = position + length;
    while (rstrip && end < state->length && !state->taken[end] && is_c_space(state->text[end]))
        state->taken[end++] = 1;
    return end;
}

/* Cuts every occurrence of the order-th special token, leftmost first. */
static void cut_token(const tokenizer *tok, split_state *state, const occurrences *found, size_t order)
{
    int32_t id = tok->specials->ids[order];
    const char *needle = tok->pieces + tok->tokens[id].offset;
    uint32_t length = tok->tokens[id].length;
    bool rstrip = (tok->tokens[id].attr & TOKEN_RSTRIP) != 0;
    size_t allowed_from = 0;
    if (found->counts[order] <= found->heavy_threshold) {
        for (size_t k = 0; k < found->filled[order]; k++) {
            size_t end = try_cut(state, id, length, rstrip, found->positions[found->first[order] + k], allowed_from);
            allowed_from = end > 0 ? end : allowed_from;
        }
        return;
    }
    for (size_t at = 0; at + length <= state->length;) {
        if (state->taken[at]) { /* no cut starts on a taken byte: step over runs of them cheaply */
            at++;
            continue;
        }
        const char *hit = memmem(state->text + at, state->length - at, needle, length);
        if (hit == NULL)
            break;
        size_t position = (size_t)(hit - state->text);
        size_t end = try_cut(state, id, length, rstrip, position, allowed_from);
        allowed_from = end > 0 ? end : allowed_from;
        at = end > 0 ? end : position + 1;
    }
}

typedef struct fragment_list {
    text_fragment *items;
    size_t count;
    size_t capacity;
} fragment_list;

static strata_status fragment_push(fragment_list *list, text_fragment fragment, strata_error *err)
{
    if (list->count == list->capacity) {
        size_t capacity = list->capacity ? list->capacity * 2 : 16;
        text_fragment *items = realloc(list->items, capacity * sizeof *items);
        if (items == NULL)
            return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "tokenizer: cannot grow the fragment list to %zu",
                               capacity);
        list->items = items;
        list->capacity = capacity;
    }
    list->items[list->count++] = fragment;
    return STRATA_OK;
}

/* Turns the cut text into fragments: untaken runs and the tokens, in order. */
static strata_status collect_fragments(const tokenizer *tok, const split_state *state, fragment_list *list,
                                       strata_error *err)
{
    strata_status status = STRATA_OK;
    size_t raw_start = 0;
    for (size_t i = 0; i <= state->length && status == STRATA_OK;) {
        if (i < state->length && !state->taken[i]) {
            i++;
            continue;
        }
        if (i > raw_start)
            status = fragment_push(list, (text_fragment){raw_start, i - raw_start, -1}, err);
        if (i == state->length)
            break;
        int32_t id = state->token_at[i];
        if (id >= 0 && status == STRATA_OK) {
            status = fragment_push(list, (text_fragment){i, tok->tokens[id].length, id}, err);
            i += tok->tokens[id].length;
        } else {
            i++; /* white space eaten by an rstrip token */
        }
        raw_start = i;
    }
    return status;
}

strata_status special_tokens_split(const tokenizer *tok, const char *text, size_t length,
                                   bool parse_special, text_fragment **fragments, size_t *count,
                                   strata_error *err)
{
    *fragments = NULL;
    *count = 0;
    if (length == 0)
        return STRATA_OK;
    if (length > UINT32_MAX)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                           "tokenizer: %zu bytes of text is more than the limit of %u bytes at once", length,
                           (unsigned)UINT32_MAX);
    const special_tokens *specials = tok->specials;
    size_t n = specials->count + 1;
    occurrences found = {
        .counts = calloc(n, sizeof *found.counts),
        .first = calloc(n, sizeof *found.first),
        .filled = calloc(n, sizeof *found.filled),
        .heavy_threshold = (uint32_t)(length / 16 + 64),
    };
    split_state state = {.text = text, .length = length, .any_rstrip = specials->any_rstrip};
    fragment_list list = {0};
    strata_status status = STRATA_OK;
    if (found.counts == NULL || found.first == NULL || found.filled == NULL)
        status = strata_fail(err, STRATA_E_OUT_OF_MEMORY, "tokenizer: cannot allocate the special-token counts");
    if (status == STRATA_OK)
        walk_matches(tok, text, length, parse_special, &found);

    size_t stored = 0;
    bool any = false;
    for (size_t order = 0; status == STRATA_OK && order < specials->count; order++) {
        any = any || found.counts[order] > 0;
        found.first[order] = stored;
        if (found.counts[order] <= found.heavy_threshold)
            stored += found.counts[order];
    }
    if (status == STRATA_OK && any) {
        found.positions = malloc((stored + 1) * sizeof *found.positions);
        state.taken = calloc(length, 1);
        state.token_at = malloc(length * sizeof *state.token_at);
        if (found.positions == NULL || state.taken == NULL || state.token_at == NULL)
            status = strata_fail(err, STRATA_E_OUT_OF_MEMORY,
                                 "tokenizer: cannot allocate the special-token index of %zu bytes of text", length);
    }
    if (status == STRATA_OK && any) {
        walk_matches(tok, text, length, parse_special, &found);
        memset(state.token_at, 0xFF, length * sizeof *state.token_at);
        for (size_t order = 0; order < specials->count; order++)
            if (found.counts[order] > 0)
                cut_token(tok, &state, &found, order);
        status = collect_fragments(tok, &state, &list, err);
    } else if (status == STRATA_OK) {
        status = fragment_push(&list, (text_fragment){0, length, -1}, err);
    }
    free(found.counts);
    free(found.first);
    free(found.filled);
    free(found.positions);
    free(state.taken);
    free(state.token_at);
    if (status != STRATA_OK) {
        free(list.items);
        return status;
    }
    *fragments = list.items;
    *count = list.count;
    return STRATA_OK;
}
