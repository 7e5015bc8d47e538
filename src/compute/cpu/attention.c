/* compute/cpu/attention.c: attention over block-table views of the KV cache.
 *
 * Two paths. Decode (fewer than ATTENTION_BLOCK_MIN_TOKENS new tokens) splits
 * each (token, KV head)'s visible slots into chunks (split-K, as
 * flash-decoding) of DECODE_CHUNK_MIN..DECODE_CHUNK_SLOTS slots, about
 * DECODE_CHUNK_TARGET of them for the longest view, so that short views of
 * one KV head still give every thread work: a work item reads each key and value row of
 * its chunk once for all the query heads of the group (keys of dot-able
 * types are dotted where they lie, dequantized in registers by the quant
 * kernels; other rows are decoded into a one-row buffer), and leaves, per
 * head, its chunk's maximum score, sum of exponentials and weighted sum of
 * values. The calling thread then merges the chunks of each (token, head)
 * into the softmax over all of them, and the slot mass from the kept
 * exponentials. Chunks do not depend on the thread count, so neither do the
 * results.
 * Prefill: for one KV head and a block of tokens, the query heads of the
 * group times the tokens form the rows of two matrix products through
 * transposed panels (scores = Q K^T over the block's visible slot span, then
 * output = P V), the same register kernel the weight products use.
 *
 * Slots are in append order, so their positions increase along a view and
 * the slots a token sees form one contiguous range of slot indices. Keys and
 * values of other types than f32 (16-bit, packed low-bit) are converted to
 * f32 row by row as they are read, by each block's reader, into a buffer of
 * one row: no block is ever expanded in memory.
 * When slot mass (its squares, the mass of every token) is requested, each thread adds into its own copy, summed
 * into the caller's arrays at the end, so results do not depend on timing. */
#include "compute/cpu/attention.h"

#include <math.h>
#include <stdbool.h>
#include <string.h>

/* Prefill attention works on blocks of ATTENTION_BLOCK_ROWS query rows (the
 * query heads of one KV head times the block's tokens): packing the block's
 * visible keys and values into panels costs about as much as multiplying one
 * 64-row block with them, so rows are many. Fewer new tokens than
 * ATTENTION_BLOCK_MIN_TOKENS (decode) take the per-(token, head) path. */
enum {
    ATTENTION_BLOCK_ROWS = 256,
    ATTENTION_BLOCK_MIN_TOKENS = 4,
    DECODE_CHUNK_SLOTS = 256, /* the most slots of one decode work item */
    DECODE_CHUNK_MIN = 32,    /* the fewest */
    DECODE_CHUNK_TARGET = 8,  /* chunks wanted for the longest view */
};

typedef struct attention_job {
    compute_context *context;
    const attention_args *args;
    int64_t mass_offset;  /* where each thread's slot-mass copy starts in its scratch */
    int64_t mass_stride;  /* floats per KV head in that copy */
    int64_t squares_offset; /* where the squares copy starts, when asked for */
    int64_t all_offset;     /* where the copy of every token's mass starts, when asked for */
    /* Decode: chunks per (token, KV head), and where the items' results lie
     * in thread 0's scratch (shared: each item writes only its own). */
    int64_t chunks;
    int64_t chunk_slots;   /* slots per chunk */
    float *partials;       /* per item: group * (2 + value_dim): max, sum, then the weighted values */
    float *exponentials;   /* per (token, head): exp(score - chunk max) of every slot, for the mass */
    int64_t exponential_stride; /* floats per (token, head) */
} attention_job;

static int64_t max_of(int64_t a, int64_t b)
{
    return a > b ? a : b;
}

/* Returns slot i's key (which = 0) or value (which = 1) row as f32: in place
 * for f32 blocks, else read into buffer by the block's reader. */
static const float *slot_row(const attention_args *args, const attention_kv_view *view, int64_t slot, int which,
                             float *buffer)
{
    int64_t block = slot / args->block_tokens, offset = slot % args->block_tokens;
    int64_t width = which == 0 ? args->head_dim : args->value_dim;
    const void *base = which == 0 ? view->keys[block] : view->values[block];
    const attention_row_reader *readers = which == 0 ? view->key_readers : view->value_readers;
    if (readers == NULL || readers[block] == NULL)
        return (const float *)base + offset * width;
    readers[block](base, offset, width, args->block_tokens, buffer);
    return buffer;
}

static int64_t slot_position(const attention_args *args, const attention_kv_view *view, int64_t slot)
{
    return view->positions[slot / args->block_tokens][slot % args->block_tokens];
}

/* The contiguous range [*first, *last] of slots visible to some query in
 * [low_position, high_position]; empty when *first > *last. */
static void visible_range(const attention_args *args, const attention_kv_view *view, int64_t low_position,
                          int64_t high_position, int64_t *first, int64_t *last)
{
    int64_t lowest_visible = args->window > 0 ? low_position - args->window + 1 : INT64_MIN;
    int64_t begin = 0, end = view->slot_count; /* binary search: first slot at or past lowest_visible */
    while (begin < end) {
        int64_t middle = begin + (end - begin) / 2;
        if (slot_position(args, view, middle) < lowest_visible)
            begin = middle + 1;
        else
            end = middle;
    }
    *first = begin;
    end = view->slot_count;
    while (begin < end) { /* first slot past high_position */
        int64_t middle = begin + (end - begin) / 2;
        if (slot_position(args, view, middle) <= high_position)
            begin = middle + 1;
        else
            end = middle;
    }
    *last = begin - 1;
}

/* One decode work item: chunk `chunk` of the visible slots of token t for
 * KV head kv_head, for every query head of its group. */
static void decode_chunk(const attention_job *job, int64_t t, int64_t kv_head, int64_t chunk, float *scratch)
{
    const attention_args *args = job->args;
    const compute_context *context = job->context;
    const vector_kernels *vector = context->vector;
    int64_t group = args->heads / args->kv_heads, d = args->head_dim, dv = args->value_dim;
    const attention_kv_view *view = &args->views[kv_head];
    float *partial = job->partials + ((t * args->kv_heads + kv_head) * job->chunks + chunk) * group * (2 + dv);
    float *maxima = partial, *sums = partial + group, *accumulated = partial + 2 * group;
    int64_t first, last;
    visible_range(args, view, args->positions[t], args->positions[t], &first, &last);
    int64_t begin = first + chunk * job->chunk_slots;
    int64_t end = begin + job->chunk_slots - 1 < last ? begin + job->chunk_slots - 1 : last;
    memset(accumulated, 0, (size_t)(group * dv) * sizeof(float));
    for (int64_t h = 0; h < group; h++) {
        maxima[h] = -INFINITY;
        sums[h] = 0.0f;
    }
    if (begin > end)
        return; /* an empty chunk: weight zero in the merge */
    const float *queries = args->queries + (t * args->heads + kv_head * group) * d;
    int64_t count = end - begin + 1;
    float *scores = scratch, *row_buffer = scores + group * DECODE_CHUNK_SLOTS, dots[QUANT_DOT_MULTI_MAX];
    for (int64_t i = begin; i <= end; i++) {
        int64_t block = i / args->block_tokens, offset = i % args->block_tokens;
        tensor_type type = view->key_types != NULL                                     ? view->key_types[block]
                           : view->key_readers != NULL && view->key_readers[block] != NULL ? TENSOR_TYPE_LIMIT
                                                                                            : TENSOR_F32;
        for (int64_t h0 = 0; h0 < group; h0 += QUANT_DOT_MULTI_MAX) {
            int n = (int)(group - h0 < QUANT_DOT_MULTI_MAX ? group - h0 : QUANT_DOT_MULTI_MAX);
            if (type != TENSOR_TYPE_LIMIT) {
                const uint8_t *row = (const uint8_t *)view->keys[block] + (uint64_t)offset * tensor_row_bytes(type, (uint64_t)d);
                context->quant->dot_multi[type](row, queries + h0 * d, d, n, d, dots);
            } else {
                const float *key = slot_row(args, view, i, 0, row_buffer);
                for (int j = 0; j < n; j++)
                    dots[j] = vector->dot(queries + (h0 + j) * d, key, d);
            }
            for (int j = 0; j < n; j++) {
                float s = dots[j] * args->scale;
                scores[(h0 + j) * DECODE_CHUNK_SLOTS + (i - begin)] = s;
                maxima[h0 + j] = s > maxima[h0 + j] ? s : maxima[h0 + j];
            }
        }
    }
    for (int64_t h = 0; h < group; h++) {
        float *e = scores + h * DECODE_CHUNK_SLOTS, sum = 0.0f;
        for (int64_t i = 0; i < count; i++) {
            e[i] = expf(e[i] - maxima[h]);
            sum += e[i];
        }
        sums[h] = sum;
        if ((args->slot_mass != NULL && t >= args->mass_first_token) || args->slot_mass_all != NULL)
            memcpy(job->exponentials + (t * args->heads + kv_head * group + h) * job->exponential_stride + begin, e,
                   (size_t)count * sizeof(float));
    }
    for (int64_t i = begin; i <= end; i++) {
        const float *value = slot_row(args, view, i, 1, row_buffer);
        for (int64_t h = 0; h < group; h++)
            vector->axpy(accumulated + h * dv, scores[h * DECODE_CHUNK_SLOTS + (i - begin)], value, dv);
    }
}

/* Merges the decode chunks of every (token, head) into its output, and adds
 * the slot mass (and its squares) the chosen tokens put on each slot. */
static void decode_merge(const attention_job *job)
{
    const attention_args *args = job->args;
    int64_t group = args->heads / args->kv_heads, dv = args->value_dim;
    for (int64_t t = 0; t < args->tokens; t++)
        for (int64_t head = 0; head < args->heads; head++) {
            int64_t kv_head = head / group, h = head % group;
            const float *partials = job->partials + (t * args->kv_heads + kv_head) * job->chunks * group * (2 + dv);
            float highest = -INFINITY, total = 0.0f;
            for (int64_t c = 0; c < job->chunks; c++) {
                float m = partials[c * group * (2 + dv) + h];
                highest = m > highest ? m : highest;
            }
            float *out = args->output + (t * args->heads + head) * dv;
            memset(out, 0, (size_t)dv * sizeof(float));
            if (highest == -INFINITY)
                continue; /* nothing visible: the output stays zero */
            /* Chunk c's exponentials are relative to its own maximum: scaled by exp(max_c - highest). */
            for (int64_t c = 0; c < job->chunks; c++) {
                const float *partial = partials + c * group * (2 + dv);
                if (partial[h] != -INFINITY)
                    total += partial[group + h] * expf(partial[h] - highest);
            }
            float inverse = 1.0f / total;
            for (int64_t c = 0; c < job->chunks; c++) {
                const float *partial = partials + c * group * (2 + dv);
                if (partial[h] != -INFINITY)
                    job->context->vector->axpy(out, expf(partial[h] - highest) * inverse, partial + 2 * group + h * dv,
                                               dv);
            }
            bool chosen = args->slot_mass != NULL && t >= args->mass_first_token;
            if (!chosen && args->slot_mass_all == NULL)
                continue;
            int64_t first, last;
            visible_range(args, &args->views[kv_head], args->positions[t], args->positions[t], &first, &last);
            const float *e = job->exponentials + (t * args->heads + head) * job->exponential_stride;
            for (int64_t c = 0; c * job->chunk_slots <= last - first; c++) {
                float factor = expf(partials[c * group * (2 + dv) + h] - highest) * inverse;
                int64_t begin = first + c * job->chunk_slots;
                int64_t end = begin + job->chunk_slots - 1 < last ? begin + job->chunk_slots - 1 : last;
                for (int64_t i = begin; i <= end; i++) {
                    float p = e[i] * factor;
                    if (chosen)
                        args->slot_mass[kv_head][i] += p;
                    if (chosen && args->slot_mass_squares != NULL)
                        args->slot_mass_squares[kv_head][i] += p * p;
                    if (args->slot_mass_all != NULL)
                        args->slot_mass_all[kv_head][i] += p;
                }
            }
        }
}

/* Converts and transposes `count` slot rows starting at `slot` into a panel:
 * panel[j * PANEL_ROWS + r] = row r's element j; lanes past count are zero. */
static void pack_slot_panel(const attention_job *job, const attention_kv_view *view, int64_t slot, int64_t count,
                            int which, float *panel, float *row_buffer)
{
    const attention_args *args = job->args;
    int64_t width = which == 0 ? args->head_dim : args->value_dim;
    for (int64_t r = 0; r < PANEL_ROWS; r++) {
        const float *row = r < count ? slot_row(args, view, slot + r, which, row_buffer) : NULL;
        for (int64_t j = 0; j < width; j++)
            panel[j * PANEL_ROWS + r] = row != NULL ? row[j] : 0.0f;
    }
}

static void attention_token_block(const attention_job *job, int64_t kv_head, int64_t token_begin, int64_t token_end,
                                  float *scratch, float *mass, float *squares, float *all)
{
    const attention_args *args = job->args;
    const vector_kernels *vector = job->context->vector;
    const attention_kv_view *view = &args->views[kv_head];
    int64_t group = args->heads / args->kv_heads;
    int64_t d = args->head_dim, dv = args->value_dim;
    int64_t rows = (token_end - token_begin) * group;
    int64_t low = INT64_MAX, high = INT64_MIN;
    for (int64_t t = token_begin; t < token_end; t++) {
        low = args->positions[t] < low ? args->positions[t] : low;
        high = args->positions[t] > high ? args->positions[t] : high;
    }
    int64_t first, last;
    visible_range(args, view, low, high, &first, &last);
    int64_t width = last - first + 1;
    if (width <= 0) {
        for (int64_t t = token_begin; t < token_end; t++)
            memset(args->output + (t * args->heads + kv_head * group) * dv, 0, (size_t)(group * dv) * sizeof(float));
        return;
    }
    float *queries = scratch, *scores = queries + rows * d, *output = scores + rows * width;
    float *row_buffer = output + rows * dv, *panel = row_buffer + max_of(d, dv);

    for (int64_t t = token_begin; t < token_end; t++)
        memcpy(queries + (t - token_begin) * group * d, args->queries + (t * args->heads + kv_head * group) * d,
               (size_t)(group * d) * sizeof(float));
    for (int64_t s0 = 0; s0 < width; s0 += PANEL_ROWS) {
        int64_t count = width - s0 < PANEL_ROWS ? width - s0 : PANEL_ROWS;
        pack_slot_panel(job, view, first + s0, count, 0, panel, row_buffer);
        vector->panel_multiply(panel, d, queries, d, rows, scores + s0, width, count);
    }
    int64_t row_first = 0, row_last = -1; /* the current token's visible slots, relative to `first` */
    for (int64_t row = 0; row < rows; row++) {
        int64_t t = token_begin + row / group;
        if (row % group == 0) {
            visible_range(args, view, args->positions[t], args->positions[t], &row_first, &row_last);
            row_first -= first;
            row_last -= first;
        }
        float *s = scores + row * width;
        float max_score = -INFINITY;
        for (int64_t j = row_first; j <= row_last; j++) {
            s[j] *= args->scale;
            max_score = s[j] > max_score ? s[j] : max_score;
        }
        float sum = 0.0f;
        for (int64_t j = row_first; j <= row_last; j++) {
            s[j] = expf(s[j] - max_score);
            sum += s[j];
        }
        float inverse = sum > 0.0f ? 1.0f / sum : 0.0f;
        bool collect = mass != NULL && t >= args->mass_first_token;
        for (int64_t j = 0; j < width; j++) {
            s[j] = j >= row_first && j <= row_last ? s[j] * inverse : 0.0f;
            if (collect)
                mass[kv_head * job->mass_stride + first + j] += s[j];
            if (collect && squares != NULL)
                squares[kv_head * job->mass_stride + first + j] += s[j] * s[j];
            if (all != NULL)
                all[kv_head * job->mass_stride + first + j] += s[j];
        }
    }
    /* output = P V: the panel holds PANEL_ROWS value dimensions of every slot. */
    for (int64_t d0 = 0; d0 < dv; d0 += PANEL_ROWS) {
        int64_t count = dv - d0 < PANEL_ROWS ? dv - d0 : PANEL_ROWS;
        for (int64_t j = 0; j < width; j++) {
            const float *value = slot_row(args, view, first + j, 1, row_buffer);
            for (int64_t r = 0; r < PANEL_ROWS; r++)
                panel[j * PANEL_ROWS + r] = r < count ? value[d0 + r] : 0.0f;
        }
        vector->panel_multiply(panel, width, scores, width, rows, output + d0, dv, count);
    }
    for (int64_t t = token_begin; t < token_end; t++)
        memcpy(args->output + (t * args->heads + kv_head * group) * dv, output + (t - token_begin) * group * dv,
               (size_t)(group * dv) * sizeof(float));
}

static int64_t block_tokens_per_item(const attention_args *args)
{
    int64_t group = args->heads / args->kv_heads;
    return ATTENTION_BLOCK_ROWS / group > 0 ? ATTENTION_BLOCK_ROWS / group : 1;
}

/* Floats of scratch the two paths need, before the slot-mass copy. */
static int64_t work_floats(int64_t heads, int64_t kv_heads, int64_t head_dim, int64_t value_dim, int64_t max_slots)
{
    int64_t group = heads / kv_heads;
    int64_t rows = (ATTENTION_BLOCK_ROWS / group > 0 ? ATTENTION_BLOCK_ROWS / group : 1) * group;
    int64_t row_buffer = max_of(head_dim, value_dim);
    int64_t blocked = rows * (head_dim + max_slots + value_dim) + row_buffer +
                      PANEL_ROWS * max_of(max_of(head_dim, value_dim), max_slots);
    int64_t decode = group * DECODE_CHUNK_SLOTS + row_buffer;
    return max_of(blocked, decode);
}

/* Slots per decode chunk for views of at most max_slots slots: depends on the view only, not on the threads. */
static int64_t chunk_slots_for(int64_t max_slots)
{
    int64_t slots = (max_slots + DECODE_CHUNK_TARGET - 1) / DECODE_CHUNK_TARGET;
    return slots < DECODE_CHUNK_MIN ? DECODE_CHUNK_MIN : slots > DECODE_CHUNK_SLOTS ? DECODE_CHUNK_SLOTS : slots;
}

static int64_t chunks_for(int64_t max_slots)
{
    int64_t chunk = chunk_slots_for(max_slots);
    return max_slots > 0 ? (max_slots + chunk - 1) / chunk : 1;
}

/* Floats of the decode results all threads share (in thread 0's scratch). */
static int64_t decode_shared_floats(int64_t heads, int64_t kv_heads, int64_t value_dim, int64_t max_slots)
{
    int64_t tokens = ATTENTION_BLOCK_MIN_TOKENS - 1, group = heads / kv_heads;
    /* At most DECODE_CHUNK_TARGET chunks below DECODE_CHUNK_SLOTS * DECODE_CHUNK_TARGET slots, else one per 256. */
    int64_t chunks = max_of(DECODE_CHUNK_TARGET, chunks_for(max_slots));
    return tokens * kv_heads * chunks * group * (2 + value_dim) + tokens * heads * max_slots;
}

int64_t compute_attention_scratch_floats(int64_t heads, int64_t kv_heads, int64_t head_dim, int64_t value_dim,
                                         int64_t block_tokens, int64_t max_slots)
{
    (void)block_tokens;
    return work_floats(heads, kv_heads, head_dim, value_dim, max_slots) + 3 * kv_heads * max_slots +
           decode_shared_floats(heads, kv_heads, value_dim, max_slots);
}

static void attention_task(void *argument, int thread_index, int thread_count)
{
    const attention_job *job = argument;
    const attention_args *args = job->args;
    float *scratch = job->context->scratch[thread_index];
    float *mass = NULL, *squares = NULL, *all = NULL;
    if (args->slot_mass_all != NULL && args->tokens >= ATTENTION_BLOCK_MIN_TOKENS) {
        all = scratch + job->all_offset;
        memset(all, 0, (size_t)(args->kv_heads * job->mass_stride) * sizeof(float));
    }
    if (args->slot_mass != NULL && args->tokens >= ATTENTION_BLOCK_MIN_TOKENS) {
        mass = scratch + job->mass_offset;
        memset(mass, 0, (size_t)(args->kv_heads * job->mass_stride) * sizeof(float));
    }
    if (args->slot_mass != NULL && args->slot_mass_squares != NULL && args->tokens >= ATTENTION_BLOCK_MIN_TOKENS) {
        squares = scratch + job->squares_offset;
        memset(squares, 0, (size_t)(args->kv_heads * job->mass_stride) * sizeof(float));
    }
    /* Work is interleaved, not split in ranges: later tokens see more keys and cost more. */
    if (args->tokens < ATTENTION_BLOCK_MIN_TOKENS) {
        int64_t items = args->tokens * args->kv_heads * job->chunks;
        for (int64_t item = thread_index; item < items; item += thread_count)
            decode_chunk(job, item / (args->kv_heads * job->chunks), item / job->chunks % args->kv_heads,
                         item % job->chunks, scratch);
        return;
    }
    int64_t block_tokens = block_tokens_per_item(args);
    int64_t blocks = (args->tokens + block_tokens - 1) / block_tokens;
    for (int64_t item = thread_index; item < blocks * args->kv_heads; item += thread_count) {
        int64_t block = item / args->kv_heads, kv_head = item % args->kv_heads;
        int64_t begin = block * block_tokens;
        int64_t end = begin + block_tokens < args->tokens ? begin + block_tokens : args->tokens;
        attention_token_block(job, kv_head, begin, end, scratch, mass, squares, all);
    }
}

void compute_attention(compute_context *context, const attention_args *args)
{
    int64_t max_slots = 0;
    for (int64_t h = 0; h < args->kv_heads; h++)
        max_slots = max_of(max_slots, args->views[h].slot_count);
    attention_job job = {
        .context = context,
        .args = args,
        .mass_offset = work_floats(args->heads, args->kv_heads, args->head_dim, args->value_dim, max_slots),
        .mass_stride = max_slots,
    };
    job.squares_offset = job.mass_offset + args->kv_heads * max_slots;
    job.all_offset = job.squares_offset + args->kv_heads * max_slots;
    if (args->tokens < ATTENTION_BLOCK_MIN_TOKENS) {
        job.chunks = chunks_for(max_slots);
        job.chunk_slots = chunk_slots_for(max_slots);
        job.partials = context->scratch[0] + job.all_offset + args->kv_heads * max_slots;
        job.exponentials = job.partials + args->tokens * args->kv_heads * job.chunks * (args->heads / args->kv_heads) *
                                              (2 + args->value_dim);
        job.exponential_stride = max_slots;
    }
    thread_pool_run(context->pool, attention_task, &job);
    if (args->tokens < ATTENTION_BLOCK_MIN_TOKENS) {
        decode_merge(&job);
        return;
    }
    if (args->slot_mass == NULL && args->slot_mass_all == NULL)
        return;
    for (int thread = 0; thread < context->thread_count; thread++) {
        const float *mass = context->scratch[thread] + job.mass_offset;
        const float *squares = context->scratch[thread] + job.squares_offset;
        const float *all = context->scratch[thread] + job.all_offset;
        for (int64_t h = 0; h < args->kv_heads; h++)
            for (int64_t i = 0; i < args->views[h].slot_count; i++) {
                if (args->slot_mass != NULL)
                    args->slot_mass[h][i] += mass[h * job.mass_stride + i];
                if (args->slot_mass != NULL && args->slot_mass_squares != NULL)
                    args->slot_mass_squares[h][i] += squares[h * job.mass_stride + i];
                if (args->slot_mass_all != NULL)
                    args->slot_mass_all[h][i] += all[h * job.mass_stride + i];
            }
    }
}
