/* tests/engine/test_kv_sessions.c: the KV cache core seen through the public
 * API: prefix-cache hits give the logits a from-scratch run gives, only
 * within a namespace; forks share blocks and diverge without touching each
 * other; a full pool is a clean STRATA_E_KV_FULL that leaves other sessions
 * intact; sessions stepped together in one batch equal sessions stepped
 * alone; sliding-window layers hold a bounded number of blocks. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/tiny_model.h"
#include "test_util.h"

enum { PROMPT = 40 };

/* Batched and chunked steps use other kernels than single ones (f32 sums in
 * another order): logits agree to about 1e-6 of their largest value. */
static const double TOLERANCE = 1e-5;

static strata_model *open_model(const tiny_model_spec *spec, uint64_t kv_bytes)
{
    strata_model *model = NULL;
    strata_error err = {0};
    strata_model_options options = {.threads = 2, .kv_memory_bytes = kv_bytes};
    CHECK_MESSAGE(tiny_model_open_with(spec, &options, &model, &err) == STRATA_OK, "%s", err.message);
    return model;
}

static strata_session *open_session(strata_model *model, bool prefix_cache, uint64_t cache_namespace)
{
    strata_session *session = NULL;
    strata_error err = {0};
    strata_session_options options = {.prefix_cache = prefix_cache, .cache_namespace = cache_namespace};
    CHECK_MESSAGE(strata_session_create(model, &options, &session, &err) == STRATA_OK, "%s", err.message);
    return session;
}

static strata_status append(strata_session *session, const int32_t *tokens, size_t count)
{
    strata_error err = {0};
    strata_status status = strata_session_append(session, tokens, count, false, &err);
    CHECK_MESSAGE(status == STRATA_OK, "append of %zu tokens: %s", count, err.message);
    return status;
}

static void random_tokens(int32_t *tokens, size_t count, uint64_t seed)
{
    for (size_t i = 0; i < count; i++)
        tokens[i] = (int32_t)((tiny_model_random(&seed) + 1.0f) * 0.5f * TINY_VOCAB) % TINY_VOCAB;
}

static double relative_difference(const float *a, const float *b)
{
    double largest = 0.0, difference = 0.0;
    for (int i = 0; i < TINY_VOCAB; i++) {
        largest = fmax(largest, fabs((double)b[i]));
        difference = fmax(difference, fabs((double)a[i] - (double)b[i]));
    }
    return largest > 0.0 ? difference / largest : difference;
}

/* A second session with the same 32-token prefix attaches it from the cache
 * (cached_tokens 32, two blocks of 16) and its logits equal those of a
 * session that computed everything itself. */
static void cached_prefix_gives_the_logits_of_a_full_computation(void)
{
    tiny_model_spec specs[2] = {tiny_model_llama(), tiny_model_gemma3()};
    for (int s = 0; s < 2; s++) {
        strata_model *model = open_model(&specs[s], 0);
        if (model == NULL)
            return;
        int32_t first[PROMPT], second[PROMPT];
        random_tokens(first, PROMPT, 3);
        memcpy(second, first, 32 * sizeof(int32_t)); /* same 32-token prefix, other tail */
        random_tokens(second + 32, PROMPT - 32, 4);

        strata_session *writer = open_session(model, true, 7);
        append(writer, first, PROMPT);
        strata_session *reader = open_session(model, true, 7);
        append(reader, second, PROMPT);
        CHECK_MESSAGE(strata_session_cached_tokens(reader) == 32, "%s: %zu tokens from the cache", specs[s].name,
                      strata_session_cached_tokens(reader));
        strata_session *scratch = open_session(model, false, 0);
        append(scratch, second, PROMPT);
        CHECK(strata_session_cached_tokens(scratch) == 0);
        double difference = relative_difference(strata_session_logits(reader, 0), strata_session_logits(scratch, 0));
        CHECK_MESSAGE(difference <= TOLERANCE, "%s: cached vs computed logits differ by %.3g", specs[s].name,
                      difference);
        strata_kv_stats stats;
        strata_model_kv_stats(model, &stats);
        CHECK(stats.prefix_hit_tokens == 32 && stats.prefix_lookups >= 2 && stats.shared_blocks > 0);
        strata_session_destroy(writer);
        strata_session_destroy(reader);
        strata_session_destroy(scratch);
        strata_model_close(model);
    }
}

/* The same tokens in another namespace never hit. */
static void prefix_cache_never_crosses_namespaces(void)
{
    tiny_model_spec spec = tiny_model_llama();
    strata_model *model = open_model(&spec, 0);
    if (model == NULL)
        return;
    int32_t tokens[PROMPT];
    random_tokens(tokens, PROMPT, 5);
    strata_session *tenant_a = open_session(model, true, 1);
    append(tenant_a, tokens, PROMPT);
    strata_session *tenant_b = open_session(model, true, 2);
    append(tenant_b, tokens, PROMPT);
    CHECK(strata_session_cached_tokens(tenant_b) == 0);
    strata_session *tenant_a_again = open_session(model, true, 1);
    append(tenant_a_again, tokens, PROMPT);
    CHECK(strata_session_cached_tokens(tenant_a_again) == 32);
    strata_session_destroy(tenant_a);
    strata_session_destroy(tenant_b);
    strata_session_destroy(tenant_a_again);
    strata_model_close(model);
}

/* A fork shares the parent's blocks; each then goes its own way, and the
 * parent's next logits are what they would have been without the fork. */
static void fork_shares_blocks_and_writes_copy_on_write(void)
{
    tiny_model_spec spec = tiny_model_llama();
    strata_model *model = open_model(&spec, 0);
    if (model == NULL)
        return;
    int32_t tokens[PROMPT + 2];
    random_tokens(tokens, PROMPT + 2, 6);
    strata_session *parent = open_session(model, false, 0), *child = NULL, *alone = open_session(model, false, 0);
    append(parent, tokens, PROMPT);
    append(alone, tokens, PROMPT);
    strata_kv_stats before;
    strata_model_kv_stats(model, &before);
    strata_error err = {0};
    CHECK(strata_session_fork(parent, &child, &err) == STRATA_OK);
    if (child == NULL)
        return;
    strata_kv_stats after;
    strata_model_kv_stats(model, &after);
    CHECK_MESSAGE(after.used_blocks == before.used_blocks, "a fork allocated %lld blocks",
                  (long long)(after.used_blocks - before.used_blocks));
    uint64_t shared = 0;
    CHECK(strata_session_kv_bytes(child, &shared) > 0 && shared == strata_session_kv_bytes(child, NULL));
    CHECK(memcmp(strata_session_logits(child, 0), strata_session_logits(parent, 0), TINY_VOCAB * sizeof(float)) == 0);
    append(child, &tokens[PROMPT + 1], 1); /* the child takes another token ... */
    append(parent, &tokens[PROMPT], 1);    /* ... than the parent */
    append(alone, &tokens[PROMPT], 1);
    CHECK(memcmp(strata_session_logits(parent, 0), strata_session_logits(alone, 0), TINY_VOCAB * sizeof(float)) == 0);
    CHECK(memcmp(strata_session_logits(child, 0), strata_session_logits(parent, 0), TINY_VOCAB * sizeof(float)) != 0);
    strata_session_destroy(child);
    strata_session_destroy(parent);
    strata_session_destroy(alone);
    strata_kv_stats end;
    strata_model_kv_stats(model, &end);
    CHECK(end.used_blocks == 0); /* every block back in the pool */
    strata_model_close(model);
}

/* A pool too small for two sessions: the second one's append fails with
 * STRATA_E_KV_FULL and a message, and the first continues exactly as a
 * session that never saw the failure. */
static void full_pool_is_a_clean_error_and_spares_other_sessions(void)
{
    tiny_model_spec spec = tiny_model_llama();
    strata_model *probe = open_model(&spec, 0);
    if (probe == NULL)
        return;
    strata_kv_stats stats;
    strata_model_kv_stats(probe, &stats);
    strata_model_close(probe);
    /* Room for 2 layers x 2 KV heads x 4 blocks: 64 tokens of one session. */
    uint64_t budget = stats.block_bytes * 2 * 2 * 4;
    strata_model *model = open_model(&spec, budget);
    strata_model *reference_model = open_model(&spec, 0);
    if (model == NULL || reference_model == NULL)
        return;
    int32_t tokens[64];
    random_tokens(tokens, 64, 8);
    strata_session *first = open_session(model, false, 0), *second = open_session(model, false, 0);
    strata_session *reference = open_session(reference_model, false, 0);
    append(first, tokens, 40);
    append(reference, tokens, 40);
    strata_error err = {0};
    CHECK(strata_session_append(second, tokens, 40, false, &err) == STRATA_E_KV_FULL);
    CHECK_MESSAGE(strstr(err.message, "block") != NULL, "message: %s", err.message);
    CHECK(strata_session_length(second) == 0); /* one chunk: refused before any computation */
    append(first, tokens + 40, 1);
    append(reference, tokens + 40, 1);
    CHECK(memcmp(strata_session_logits(first, 0), strata_session_logits(reference, 0), TINY_VOCAB * sizeof(float)) == 0);
    strata_session_destroy(second);
    strata_session_destroy(first);
    strata_session_destroy(reference);
    strata_model_close(model);
    strata_model_close(reference_model);
}

/* One batched step over a prefill chunk and two decode tokens equals the
 * same appends done one session at a time. */
static void batched_step_equals_separate_steps(void)
{
    tiny_model_spec spec = tiny_model_gemma3();
    strata_model *model = open_model(&spec, 0);
    if (model == NULL)
        return;
    int32_t prompts[3][PROMPT];
    strata_session *batched[3], *separate[3];
    for (int i = 0; i < 3; i++) {
        random_tokens(prompts[i], PROMPT, 20 + (uint64_t)i);
        batched[i] = open_session(model, false, 0);
        separate[i] = open_session(model, false, 0);
    }
    /* Sessions 1 and 2 hold a prompt and decode one token; session 0 prefills now. */
    for (int i = 1; i < 3; i++) {
        append(batched[i], prompts[i], PROMPT - 1);
        append(separate[i], prompts[i], PROMPT - 1);
    }
    const int32_t *tokens[3] = {prompts[0], &prompts[1][PROMPT - 1], &prompts[2][PROMPT - 1]};
    size_t counts[3] = {PROMPT, 1, 1};
    strata_error err = {0};
    CHECK_MESSAGE(strata_sessions_append(batched, tokens, counts, 3, &err) == STRATA_OK, "%s", err.message);
    for (int i = 0; i < 3; i++) {
        append(separate[i], tokens[i], counts[i]);
        CHECK(strata_session_length(batched[i]) == strata_session_length(separate[i]));
        double difference = relative_difference(strata_session_logits(batched[i], 0),
                                                strata_session_logits(separate[i], 0));
        CHECK_MESSAGE(difference <= TOLERANCE, "session %d: batched vs separate differ by %.3g", i, difference);
    }
    /* A session listed twice is refused and nothing advances. */
    strata_session *twice[2] = {batched[1], batched[1]};
    const int32_t *two_tokens[2] = {prompts[1], prompts[1]};
    size_t two_counts[2] = {1, 1};
    size_t length = strata_session_length(batched[1]);
    CHECK(strata_sessions_append(twice, two_tokens, two_counts, 2, &err) == STRATA_E_INVALID_ARGUMENT);
    CHECK(strata_session_length(batched[1]) == length);
    for (int i = 0; i < 3; i++) {
        strata_session_destroy(batched[i]);
        strata_session_destroy(separate[i]);
    }
    strata_model_close(model);
}

/* Gemma 3's window layers keep at most window + block_tokens - 1 slots:
 * after 200 tokens a session holds far fewer blocks than a full cache. */
static void sliding_window_layers_release_their_blocks(void)
{
    tiny_model_spec spec = tiny_model_gemma3(); /* 7 layers, window 4, layer 5 global, context 64 */
    spec.context_length = 256;
    strata_model *model = open_model(&spec, 0);
    if (model == NULL)
        return;
    int32_t tokens[200];
    random_tokens(tokens, 200, 9);
    strata_session *session = open_session(model, false, 0);
    append(session, tokens, 100);
    for (int i = 100; i < 200; i++)
        append(session, tokens + i, 1);
    /* Per (layer, head): the global layer 5 holds all 200 slots, window layers at most 4 + 15. */
    int32_t heads = 0, layers = strata_model_kv_layout(model, &heads);
    CHECK(layers == 7 && heads == spec.head_count_kv);
    int64_t slots[7 * 4], blocks[7 * 4];
    strata_session_kv_slots(session, slots);
    strata_model_kv_blocks_by_layer(model, blocks);
    int64_t total_blocks = 0;
    for (int32_t il = 0; il < layers; il++)
        for (int32_t h = 0; h < heads; h++) {
            int64_t held = slots[il * heads + h], used = blocks[il * heads + h];
            total_blocks += used;
            if (il == 5)
                CHECK_MESSAGE(held == 200 && used == 13, "global layer head %d: %lld slots, %lld blocks", h,
                              (long long)held, (long long)used);
            else
                CHECK_MESSAGE(held >= 4 && held <= 4 + 15 && used <= 2, "layer %d head %d: %lld slots, %lld blocks",
                              il, h, (long long)held, (long long)used);
        }
    strata_kv_stats stats;
    strata_model_kv_stats(model, &stats);
    CHECK(total_blocks == stats.used_blocks);
    int64_t kv_heads = spec.head_count_kv, full = 7 * kv_heads * (200 / 16 + 1);
    int64_t expected = 1 * kv_heads * (200 / 16 + 1) /* the global layer */ + 6 * kv_heads * 2;
    CHECK_MESSAGE(stats.used_blocks <= expected, "%lld blocks used, at most %lld expected (a full cache: %lld)",
                  (long long)stats.used_blocks, (long long)expected, (long long)full);
    strata_session_destroy(session);
    strata_model_close(model);
}

int main(void)
{
    RUN_CASE(cached_prefix_gives_the_logits_of_a_full_computation);
    RUN_CASE(prefix_cache_never_crosses_namespaces);
    RUN_CASE(fork_shares_blocks_and_writes_copy_on_write);
    RUN_CASE(full_pool_is_a_clean_error_and_spares_other_sessions);
    RUN_CASE(batched_step_equals_separate_steps);
    RUN_CASE(sliding_window_layers_release_their_blocks);
    TEST_EXIT();
}
