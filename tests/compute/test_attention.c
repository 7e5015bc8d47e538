/* tests/compute/test_attention.c: attention through block tables equals a
 * contiguous reference written here in double, for random lengths (partial
 * last blocks), GQA groups, sliding windows, views that start past position 0
 * (dropped blocks), f16 storage, both the decode and the prefill path, and
 * the per-slot attention mass it emits on request. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "compute/cpu/attention.h"
#include "quant/kernels.h"
#include "test_util.h"

static uint64_t rng_state;

static double random_unit(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(rng_state >> 11) / 9007199254740992.0;
}

enum { BLOCK = 16, MAX_SLOTS = 1100, MAX_HEADS = 8, DIM = 32 };

typedef struct paged_case {
    int64_t heads, kv_heads, tokens, slots, first_position, window;
    tensor_type storage;
} paged_case;

/* One KV head's cache: contiguous f32 truth plus its paged copy. */
typedef struct head_cache {
    float keys[MAX_SLOTS * DIM], values[MAX_SLOTS * DIM];
    int32_t positions[MAX_SLOTS];
    void *key_blocks[MAX_SLOTS / BLOCK + 1], *value_blocks[MAX_SLOTS / BLOCK + 1];
    int32_t *position_blocks[MAX_SLOTS / BLOCK + 1];
    const void *key_pointers[MAX_SLOTS / BLOCK + 1], *value_pointers[MAX_SLOTS / BLOCK + 1];
    const int32_t *position_pointers[MAX_SLOTS / BLOCK + 1];
    attention_row_reader readers[MAX_SLOTS / BLOCK + 1];
} head_cache;

/* The row reader of the test's f16 blocks. */
static void read_f16_row(const void *section, int64_t slot, int64_t width, int64_t block_tokens, float *out)
{
    (void)block_tokens;
    const uint16_t *row = (const uint16_t *)section + slot * width;
    for (int64_t j = 0; j < width; j++)
        out[j] = quant_f16_to_f32(row[j]);
}

/* Fills a head's cache with random keys/values; the slots hold positions
 * first_position .. first_position + slots - 1 and are copied into separately
 * allocated blocks (so ASan sees any read past a block). In f16 cases the
 * even blocks are f16 (read through a row reader) and the odd ones f32 with
 * the same f16-rounded values, so blocks of different types meet in one view. */
static void fill_head(head_cache *cache, const paged_case *c, attention_kv_view *view)
{
    int64_t block_count = (c->slots + BLOCK - 1) / BLOCK;
    for (int64_t i = 0; i < c->slots * DIM; i++) {
        cache->keys[i] = (float)(random_unit() * 2 - 1);
        cache->values[i] = (float)(random_unit() * 2 - 1);
        if (c->storage == TENSOR_F16) { /* the truth is what f16 can hold */
            cache->keys[i] = quant_f16_to_f32(quant_f32_to_f16(cache->keys[i]));
            cache->values[i] = quant_f16_to_f32(quant_f32_to_f16(cache->values[i]));
        }
    }
    for (int64_t i = 0; i < c->slots; i++)
        cache->positions[i] = (int32_t)(c->first_position + i);
    for (int64_t b = 0; b < block_count; b++) {
        bool half = c->storage == TENSOR_F16 && b % 2 == 0;
        uint32_t element = half ? 2 : 4;
        cache->readers[b] = half ? read_f16_row : NULL;
        cache->key_blocks[b] = calloc(BLOCK * DIM, element);
        cache->value_blocks[b] = calloc(BLOCK * DIM, element);
        cache->position_blocks[b] = calloc(BLOCK, sizeof(int32_t));
        for (int64_t s = 0; s < BLOCK && b * BLOCK + s < c->slots; s++) {
            int64_t slot = b * BLOCK + s;
            cache->position_blocks[b][s] = cache->positions[slot];
            for (int64_t j = 0; j < DIM; j++) {
                float k = cache->keys[slot * DIM + j], v = cache->values[slot * DIM + j];
                if (!half) {
                    ((float *)cache->key_blocks[b])[s * DIM + j] = k;
                    ((float *)cache->value_blocks[b])[s * DIM + j] = v;
                } else {
                    ((uint16_t *)cache->key_blocks[b])[s * DIM + j] = quant_f32_to_f16(k);
                    ((uint16_t *)cache->value_blocks[b])[s * DIM + j] = quant_f32_to_f16(v);
                }
            }
        }
        cache->key_pointers[b] = cache->key_blocks[b];
        cache->value_pointers[b] = cache->value_blocks[b];
        cache->position_pointers[b] = cache->position_blocks[b];
    }
    *view = (attention_kv_view){.keys = cache->key_pointers, .values = cache->value_pointers,
                                .positions = cache->position_pointers, .key_readers = cache->readers,
                                .value_readers = cache->readers, .slot_count = c->slots};
}

static void free_head(head_cache *cache, const paged_case *c)
{
    for (int64_t b = 0; b < (c->slots + BLOCK - 1) / BLOCK; b++) {
        free(cache->key_blocks[b]);
        free(cache->value_blocks[b]);
        free(cache->position_blocks[b]);
    }
}

/* Runs one case and compares output and slot mass with the double reference. */
static void check_case(compute_context *context, const paged_case *c, const char *name)
{
    static head_cache caches[MAX_HEADS];
    attention_kv_view views[MAX_HEADS];
    float *mass[MAX_HEADS], *squares[MAX_HEADS];
    for (int64_t h = 0; h < c->kv_heads; h++) {
        fill_head(&caches[h], c, &views[h]);
        mass[h] = calloc((size_t)c->slots, sizeof(float));
        squares[h] = calloc((size_t)c->slots, sizeof(float));
    }
    int64_t width = c->heads * DIM;
    float *queries = malloc((size_t)(c->tokens * width) * sizeof(float));
    float *output = malloc((size_t)(c->tokens * width) * sizeof(float));
    int64_t *positions = malloc((size_t)c->tokens * sizeof(int64_t));
    for (int64_t i = 0; i < c->tokens * width; i++)
        queries[i] = (float)(random_unit() * 2 - 1);
    /* The new tokens are the last `tokens` slots, as after a write. */
    for (int64_t t = 0; t < c->tokens; t++)
        positions[t] = c->first_position + c->slots - c->tokens + t;
    attention_args args = {.queries = queries, .output = output, .positions = positions, .tokens = c->tokens,
                           .heads = c->heads, .kv_heads = c->kv_heads, .head_dim = DIM, .value_dim = DIM,
                           .block_tokens = BLOCK, .window = c->window, .scale = 0.35f,
                           .views = views, .slot_mass = mass, .mass_first_token = c->tokens / 2,
                           .slot_mass_squares = squares};
    compute_attention(context, &args);

    double *expected_mass = calloc((size_t)(c->kv_heads * c->slots), sizeof(double));
    double *expected_squares = calloc((size_t)(c->kv_heads * c->slots), sizeof(double));
    int reported = 0;
    double worst = 0;
    for (int64_t t = 0; t < c->tokens; t++)
        for (int64_t h = 0; h < c->heads; h++) {
            int64_t kv = h / (c->heads / c->kv_heads);
            const head_cache *cache = &caches[kv];
            double weights[MAX_SLOTS], best = -1e300, total = 0;
            for (int64_t i = 0; i < c->slots; i++) {
                int64_t p = cache->positions[i];
                bool seen = p <= positions[t] && (c->window == 0 || positions[t] - p < c->window);
                weights[i] = -1e300;
                if (!seen)
                    continue;
                double s = 0;
                for (int64_t j = 0; j < DIM; j++)
                    s += (double)queries[(t * c->heads + h) * DIM + j] * cache->keys[i * DIM + j];
                weights[i] = s * 0.35;
                best = weights[i] > best ? weights[i] : best;
            }
            for (int64_t i = 0; i < c->slots; i++)
                total += weights[i] = weights[i] == -1e300 ? 0 : exp(weights[i] - best);
            for (int64_t i = 0; i < c->slots; i++)
                if (t >= c->tokens / 2) {
                    expected_mass[kv * c->slots + i] += weights[i] / total;
                    expected_squares[kv * c->slots + i] += (weights[i] / total) * (weights[i] / total);
                }
            for (int64_t j = 0; j < DIM; j++) {
                double want = 0;
                for (int64_t i = 0; i < c->slots; i++)
                    want += weights[i] / total * cache->values[i * DIM + j];
                double got = output[(t * c->heads + h) * DIM + j], error = fabs(got - want);
                worst = error > worst ? error : worst;
                if (error > 1e-6 * (1 + fabs(want)) && reported++ < 3)
                    CHECK_MESSAGE(false, "%s: t=%lld h=%lld j=%lld: %.9g vs %.9g", name, (long long)t,
                                  (long long)h, (long long)j, got, want);
            }
        }
    for (int64_t h = 0; h < c->kv_heads; h++)
        for (int64_t i = 0; i < c->slots; i++) {
            double want = expected_mass[h * c->slots + i];
            if (fabs(mass[h][i] - want) > 1e-5 * (1 + want) && reported++ < 6)
                CHECK_MESSAGE(false, "%s: mass of head %lld slot %lld: %g vs %g", name, (long long)h,
                              (long long)i, mass[h][i], want);
            want = expected_squares[h * c->slots + i];
            if (fabs(squares[h][i] - want) > 1e-5 * (1 + want) && reported++ < 6)
                CHECK_MESSAGE(false, "%s: squared mass of head %lld slot %lld: %g vs %g", name, (long long)h,
                              (long long)i, squares[h][i], want);
        }
    fprintf(stderr, "  %s: max abs error %.2e\n", name, worst);
    for (int64_t h = 0; h < c->kv_heads; h++) {
        free_head(&caches[h], c);
        free(mass[h]);
        free(squares[h]);
    }
    free(expected_mass);
    free(expected_squares);
    free(queries);
    free(output);
    free(positions);
}

static compute_context *make_context(int threads)
{
    compute_context *context = NULL;
    strata_error error;
    int64_t scratch = compute_attention_scratch_floats(MAX_HEADS, 1, DIM, DIM, BLOCK, MAX_SLOTS);
    CHECK(compute_context_create(threads, scratch, &context, &error) == STRATA_OK);
    return context;
}

static void paged_attention_equals_contiguous_reference(void)
{
    compute_context *context = make_context(2);
    const paged_case cases[] = {
        {.heads = 4, .kv_heads = 1, .tokens = 1, .slots = 37, .storage = TENSOR_F32},    /* decode, partial block */
        {.heads = 4, .kv_heads = 2, .tokens = 2, .slots = 16, .storage = TENSOR_F32},    /* exactly one block */
        {.heads = 8, .kv_heads = 2, .tokens = 40, .slots = 40, .storage = TENSOR_F32},   /* prefill from empty */
        {.heads = 4, .kv_heads = 4, .tokens = 23, .slots = 201, .storage = TENSOR_F32},  /* prefill after a prefix */
        {.heads = 6, .kv_heads = 3, .tokens = 9, .slots = 99, .window = 20, .storage = TENSOR_F32},
        {.heads = 4, .kv_heads = 1, .tokens = 1, .slots = 48, .first_position = 500, .window = 40,
         .storage = TENSOR_F32}, /* a window whose oldest blocks were dropped */
        {.heads = 4, .kv_heads = 1, .tokens = 30, .slots = 64, .first_position = 1000, .window = 50,
         .storage = TENSOR_F32},
        {.heads = 4, .kv_heads = 2, .tokens = 1, .slots = 77, .storage = TENSOR_F16},
        {.heads = 4, .kv_heads = 2, .tokens = 17, .slots = 77, .storage = TENSOR_F16},
        /* Decode over several chunks of slots (split-K), with and without a window, f16 blocks among f32. */
        {.heads = 8, .kv_heads = 2, .tokens = 3, .slots = 1037, .storage = TENSOR_F16},
        {.heads = 4, .kv_heads = 1, .tokens = 1, .slots = 1100, .first_position = 77, .storage = TENSOR_F32},
        {.heads = 6, .kv_heads = 2, .tokens = 2, .slots = 900, .window = 600, .storage = TENSOR_F32},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char name[64];
        snprintf(name, sizeof name, "case %zu", i);
        check_case(context, &cases[i], name);
    }
    compute_context_destroy(context);
}

static void random_shapes_equal_contiguous_reference(void)
{
    compute_context *context = make_context(2);
    for (int i = 0; i < 40; i++) {
        int64_t kv_heads = 1 + (int64_t)(random_unit() * 3);
        paged_case c = {
            .kv_heads = kv_heads,
            .heads = kv_heads * (1 + (int64_t)(random_unit() * 2)),
            .slots = 1 + (int64_t)(random_unit() * (random_unit() < 0.3 ? 1000 : 250)),
            .first_position = random_unit() < 0.3 ? (int64_t)(random_unit() * 1000) : 0,
            .storage = random_unit() < 0.25 ? TENSOR_F16 : TENSOR_F32,
        };
        c.tokens = 1 + (int64_t)(random_unit() * (double)(c.slots < 70 ? c.slots : 70));
        c.window = random_unit() < 0.4 ? 1 + (int64_t)(random_unit() * 60) : 0;
        char name[64];
        snprintf(name, sizeof name, "random %d", i);
        check_case(context, &c, name);
    }
    compute_context_destroy(context);
}

static void results_do_not_depend_on_thread_count(void)
{
    paged_case c = {.heads = 4, .kv_heads = 2, .tokens = 33, .slots = 120, .storage = TENSOR_F32};
    float *outputs[2];
    for (int threads = 1; threads <= 2; threads++) {
        compute_context *context = make_context(threads);
        uint64_t saved = rng_state;
        static head_cache caches[2];
        attention_kv_view views[2];
        for (int h = 0; h < 2; h++)
            fill_head(&caches[h], &c, &views[h]);
        float queries[33 * 4 * DIM];
        int64_t positions[33];
        for (int i = 0; i < 33 * 4 * DIM; i++)
            queries[i] = (float)(random_unit() - 0.5);
        for (int t = 0; t < 33; t++)
            positions[t] = 120 - 33 + t;
        outputs[threads - 1] = malloc(sizeof queries);
        attention_args args = {.queries = queries, .output = outputs[threads - 1], .positions = positions,
                               .tokens = 33, .heads = 4, .kv_heads = 2, .head_dim = DIM, .value_dim = DIM,
                               .block_tokens = BLOCK, .scale = 0.2f, .views = views};
        compute_attention(context, &args);
        for (int h = 0; h < 2; h++)
            free_head(&caches[h], &c);
        rng_state = saved;
        compute_context_destroy(context);
    }
    CHECK(memcmp(outputs[0], outputs[1], 33 * 4 * DIM * sizeof(float)) == 0);
    free(outputs[0]);
    free(outputs[1]);
}

int main(int argc, char **argv)
{
    uint64_t seed = argc > 1 ? strtoull(argv[1], NULL, 10) : 20261129;
    rng_state = seed;
    fprintf(stderr, "seed %llu (replay: test_attention SEED)\n", (unsigned long long)seed);
    RUN_CASE(paged_attention_equals_contiguous_reference);
    RUN_CASE(random_shapes_equal_contiguous_reference);
    RUN_CASE(results_do_not_depend_on_thread_count);
    TEST_EXIT();
}
