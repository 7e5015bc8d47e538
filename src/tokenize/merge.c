/* tokenize/merge.c: the pair-merging loop SPM and BPE share.
 *
 * Both algorithms start from one symbol per UTF-8 character and repeatedly
 * merge the adjacent pair that ranks best: SPM ranks a pair by the score of
 * the token the two symbols form, BPE by the rank of the pair in the merge
 * list. A binary heap holds every candidate pair; merging two symbols queues
 * the new pairs on each side of the result, and pairs made stale by an
 * earlier merge are recognised when popped (one side is empty, or the two
 * sides no longer add up to the queued length) and dropped. Each merge does
 * O(log n) work, so a word of n characters costs O(n log n). */
#include <stdlib.h>

#include "base/error.h"
#include "tokenize/tokenizer_internal.h"

static bool pair_before(const merge_pair *a, const merge_pair *b)
{
    return a->priority < b->priority || (a->priority == b->priority && a->left < b->left);
}

static strata_status heap_push(merge_work *work, merge_pair pair, strata_error *err)
{
    if (work->heap_count == work->heap_capacity) {
        size_t capacity = work->heap_capacity ? work->heap_capacity * 2 : 64;
        merge_pair *heap = realloc(work->heap, capacity * sizeof *heap);
        if (heap == NULL)
            return strata_fail(err, STRATA_E_OUT_OF_MEMORY,
                               "tokenizer: cannot grow the merge queue to %zu pairs", capacity);
        work->heap = heap;
        work->heap_capacity = capacity;
    }
    size_t index = work->heap_count++;
    while (index > 0) {
        size_t parent = (index - 1) / 2;
        if (!pair_before(&pair, &work->heap[parent]))
            break;
        work->heap[index] = work->heap[parent];
        index = parent;
    }
    work->heap[index] = pair;
    return STRATA_OK;
}

static merge_pair heap_pop(merge_work *work)
{
    merge_pair top = work->heap[0];
    merge_pair last = work->heap[--work->heap_count];
    size_t count = work->heap_count;
    size_t index = 0;
    for (;;) {
        size_t child = index * 2 + 1;
        if (child >= count)
            break;
        if (child + 1 < count && pair_before(&work->heap[child + 1], &work->heap[child]))
            child++;
        if (!pair_before(&work->heap[child], &last))
            break;
        work->heap[index] = work->heap[child];
        index = child;
    }
    if (count > 0)
        work->heap[index] = last;
    return top;
}

/* Queues the pair (left, right) if the caller's rule lets it merge. */
static strata_status try_pair(merge_work *work, const char *text, int32_t left, int32_t right,
                              merge_priority_fn priority, const void *context, strata_error *err)
{
    if (left < 0 || right < 0)
        return STRATA_OK;
    const merge_symbol *a = &work->symbols[left];
    const merge_symbol *b = &work->symbols[right];
    merge_pair pair = {.left = left, .right = right, .length = a->length + b->length};
    if (!priority(context, text + a->start, a->length, b->length, &pair.priority))
        return STRATA_OK;
    return heap_push(work, pair, err);
}

strata_status merge_run(merge_work *work, const char *text, size_t length, merge_priority_fn priority,
                        const void *context, size_t *symbol_count, strata_error *err)
{
    *symbol_count = 0;
    work->heap_count = 0;
    if (length == 0)
        return STRATA_OK;
    if (length > INT32_MAX)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                           "tokenizer: a piece of %zu bytes is longer than the limit of %d bytes", length,
                           INT32_MAX);
    if (work->symbol_capacity < length) {
        merge_symbol *symbols = realloc(work->symbols, length * sizeof *symbols);
        if (symbols == NULL)
            return strata_fail(err, STRATA_E_OUT_OF_MEMORY,
                               "tokenizer: cannot allocate %zu symbols for a %zu-byte piece", length, length);
        work->symbols = symbols;
        work->symbol_capacity = length;
    }

    size_t count = 0;
    for (size_t offset = 0; offset < length;) {
        size_t n = utf8_sequence_length((unsigned char)text[offset]);
        if (n > length - offset)
            n = length - offset;
        work->symbols[count] = (merge_symbol){
            .start = (uint32_t)offset,
            .length = (uint32_t)n,
            .prev = (int32_t)count - 1,
            .next = offset + n == length ? -1 : (int32_t)count + 1,
        };
        offset += n;
        count++;
    }
    *symbol_count = count;

    strata_status status = STRATA_OK;
    for (size_t i = 1; i < count && status == STRATA_OK; i++)
        status = try_pair(work, text, (int32_t)i - 1, (int32_t)i, priority, context, err);

    while (status == STRATA_OK && work->heap_count > 0) {
        merge_pair pair = heap_pop(work);
        merge_symbol *left = &work->symbols[pair.left];
        merge_symbol *right = &work->symbols[pair.right];
        if (left->length == 0 || right->length == 0 || left->length + right->length != pair.length)
            continue;
        left->length += right->length;
        right->length = 0;
        left->next = right->next;
        if (right->next >= 0)
            work->symbols[right->next].prev = pair.left;
        status = try_pair(work, text, left->prev, pair.left, priority, context, err);
        if (status == STRATA_OK)
            status = try_pair(work, text, pair.left, left->next, priority, context, err);
    }
    return status;
}

void merge_work_free(merge_work *work)
{
    free(work->symbols);
    free(work->heap);
    *work = (merge_work){0};
}
