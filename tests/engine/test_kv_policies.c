/* tests/engine/test_kv_policies.c: KV compression policies through the
 * public API, for every registered policy: a budget at least the sequence
 * length is exactly the full cache; a smaller budget is respected per
 * (layer, head) and returns measured blocks to the pool; runs are
 * deterministic; sessions with different policies share one batch step;
 * compressing a fork leaves the sequence it shares blocks with untouched;
 * unknown policies and bad parameters are refused with the valid choices. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/tiny_model.h"
#include "test_util.h"

enum { PROMPT = 60, DECODE = 6, BUDGET = 20 };

/* What each registered policy is run with here, and the most slots a table
 * may hold after PROMPT tokens and DECODE steps under BUDGET. Every
 * registered policy must have a line (every_policy_has_a_case checks). */
typedef struct policy_case {
    const char *name;
    const char *params;
    int64_t most_slots;
    bool frees_blocks; /* false for selection without eviction */
    const char *profile; /* head profile for the tiny model (2 layers x 2 KV heads), or NULL */
    const char *exact_params; /* params that make a budget >= the length exact (a precision's residual
                                 covering every token); NULL: params */
} policy_case;

/* Duo keeps every slot of two tables of the four (layer 0 head 0, layer 1 head 1). */
#define TINY_PROFILE "# strata head profile v1\nmodel tiny layers 2 kv_heads 2\n0.9 0.1\n0.2 0.8\n"

static const policy_case cases[] = {
    {"streaming", NULL, BUDGET, true, NULL, NULL},
    {"h2o", NULL, BUDGET, true, NULL, NULL},
    /* SnapKV and PyramidKV compress once, after the prompt; the decode steps
     * then add to it. PyramidKV gives the lower layer up to twice the budget. */
    {"snapkv", "observation=8", BUDGET + DECODE, true, NULL, NULL},
    {"pyramidkv", "observation=8", 2 * BUDGET + DECODE, true, NULL, NULL},
    /* A low threshold, so that most evicted slots merge (and the fork case rewrites shared blocks). */
    {"merge", "threshold=0", BUDGET, true, NULL, NULL},
    /* Quest selects blocks to read and frees nothing: every slot stays. dense_layers=0: the tiny model has 2. */
    {"quest", "dense_layers=0", PROMPT + DECODE, false, NULL, NULL},
    /* Duo's retrieval heads keep everything; its streaming heads keep BUDGET. */
    {"duo", NULL, PROMPT + DECODE, true, TINY_PROFILE, NULL},
    /* CAKE slices 2 x BUDGET among the 2 layers, each keeping its 8-slot window; decode steps hold each table. */
    {"cake", "observation=8", 2 * BUDGET - 8, true, NULL, NULL},
    /* WindowKV keeps whole 4-slot windows once, after the prompt; the decode steps then add to it. */
    {"windowkv", "observation=8,window=4", BUDGET + DECODE, true, NULL, NULL},
    /* LazyEviction keeps the prompt whole, then cuts to BUDGET every 4 decode steps (at step 4; 2 more after). */
    {"lazy", "window=4", BUDGET + 3, true, NULL, NULL},
    /* Precisions, alone and composed: a residual of every token packs nothing (exact); by default older
     * full blocks are packed, which frees bytes without dropping slots. */
    {"q8", NULL, PROMPT + DECODE, true, NULL, "residual=1000"},
    {"q4", NULL, PROMPT + DECODE, true, NULL, "residual=1000"},
    {"kivi4", "residual=16", PROMPT + DECODE, true, NULL, "residual=1000"},
    {"kivi2", "residual=16", PROMPT + DECODE, true, NULL, "residual=1000"},
    {"h2o+kivi2", "residual=0", BUDGET, true, NULL, "residual=1000"},
    {"streaming+q4", NULL, BUDGET, true, NULL, "residual=1000"},
    {"snapkv+kivi4", "observation=8,residual=0", BUDGET + DECODE, true, NULL, "observation=8,residual=1000"},
    {"merge+kivi4", "threshold=0,residual=0", BUDGET, true, NULL, "threshold=0,residual=1000"},
    /* Mixed (MiKV) keeps every slot; the blocks h2o would evict whole are demoted to 2 bits. */
    {"mixed", NULL, PROMPT + DECODE, true, NULL, NULL},
    {"snapkv+mixed", "observation=8,bits=4", PROMPT + DECODE, true, NULL, "observation=8"},
};
enum { POLICIES = sizeof cases / sizeof cases[0] };

static strata_model *open_model(void)
{
    tiny_model_spec spec = tiny_model_llama(); /* 2 layers, 2 KV heads, no window */
    spec.context_length = 256;
    spec.key_length = 32; /* packed precisions quantize rows in groups of 32 */
    strata_model *model = NULL;
    strata_error err = {0};
    strata_model_options options = {.threads = 2, .kv_memory_bytes = 64u << 20}; /* every case at once in the batch test */
    CHECK_MESSAGE(tiny_model_open_with(&spec, &options, &model, &err) == STRATA_OK, "%s", err.message);
    return model;
}

static char profile_paths[POLICIES][64];

static void remove_profiles(void)
{
    for (int p = 0; p < POLICIES; p++)
        if (profile_paths[p][0] != '\0')
            remove(profile_paths[p]);
}

/* The path of the policy's head profile from cases, written on first use; NULL for none. */
static const char *profile_for(const char *policy)
{
    for (int p = 0; p < POLICIES; p++) {
        if (strcmp(cases[p].name, policy) != 0 || cases[p].profile == NULL)
            continue;
        if (profile_paths[p][0] == '\0') {
            snprintf(profile_paths[p], sizeof profile_paths[p], "/tmp/strata-test-profile-XXXXXX");
            int fd = mkstemp(profile_paths[p]);
            FILE *file = fd >= 0 ? fdopen(fd, "w") : NULL;
            CHECK_MESSAGE(file != NULL && fputs(cases[p].profile, file) >= 0 && fclose(file) == 0,
                          "cannot write %s", profile_paths[p]);
            static bool cleanup_registered;
            if (!cleanup_registered)
                cleanup_registered = atexit(remove_profiles) == 0;
        }
        return profile_paths[p];
    }
    return NULL;
}

static strata_session *open_session(strata_model *model, const char *policy, int64_t budget, const char *params)
{
    strata_session *session = NULL;
    strata_error err = {0};
    strata_session_options options = {.kv_policy = policy, .kv_budget_tokens = budget, .kv_policy_params = params,
                                      .kv_head_profile = profile_for(policy)};
    CHECK_MESSAGE(strata_session_create(model, &options, &session, &err) == STRATA_OK, "%s: %s", policy, err.message);
    return session;
}

static void random_tokens(int32_t *tokens, size_t count, uint64_t seed)
{
    for (size_t i = 0; i < count; i++)
        tokens[i] = (int32_t)((tiny_model_random(&seed) + 1.0f) * 0.5f * TINY_VOCAB) % TINY_VOCAB;
}

/* Prefills PROMPT tokens, then decodes DECODE more; out gets the last logits. */
static bool run(strata_session *session, const int32_t *tokens, float *out)
{
    strata_error err = {0};
    if (strata_session_append(session, tokens, PROMPT, false, &err) != STRATA_OK) {
        CHECK_MESSAGE(false, "prefill: %s", err.message);
        return false;
    }
    for (int i = 0; i < DECODE; i++)
        if (strata_session_append(session, &tokens[PROMPT + i], 1, false, &err) != STRATA_OK) {
            CHECK_MESSAGE(false, "decode: %s", err.message);
            return false;
        }
    memcpy(out, strata_session_logits(session, 0), TINY_VOCAB * sizeof(float));
    return true;
}

static void budget_at_least_the_length_is_the_full_cache(void)
{
    strata_model *model = open_model();
    if (model == NULL)
        return;
    int32_t tokens[PROMPT + DECODE];
    random_tokens(tokens, PROMPT + DECODE, 1);
    float full[TINY_VOCAB], compressed[TINY_VOCAB];
    strata_session *reference = open_session(model, "full", 0, NULL);
    run(reference, tokens, full);
    for (int p = 0; p < POLICIES; p++) {
        strata_session *session = open_session(model, cases[p].name, PROMPT + DECODE,
                                               cases[p].exact_params != NULL ? cases[p].exact_params : cases[p].params);
        if (session != NULL && run(session, tokens, compressed))
            CHECK_MESSAGE(memcmp(full, compressed, sizeof full) == 0, "%s with a budget >= the length", cases[p].name);
        strata_session_destroy(session);
    }
    strata_session_destroy(reference);
    strata_model_close(model);
}

static void budget_is_respected_and_blocks_return_to_the_pool(void)
{
    strata_model *model = open_model();
    if (model == NULL)
        return;
    int32_t tokens[PROMPT + DECODE];
    random_tokens(tokens, PROMPT + DECODE, 2);
    float logits[TINY_VOCAB];
    strata_session *reference = open_session(model, "full", 0, NULL);
    run(reference, tokens, logits);
    strata_kv_stats stats;
    strata_model_kv_stats(model, &stats);
    uint64_t full_used_bytes = stats.used_bytes, full_free_bytes = stats.free_bytes;
    strata_session_destroy(reference);
    int32_t heads = 0, layers = strata_model_kv_layout(model, &heads);
    for (int p = 0; p < POLICIES; p++) {
        strata_session *session = open_session(model, cases[p].name, BUDGET, cases[p].params);
        if (session == NULL || !run(session, tokens, logits))
            continue;
        int64_t slots[16];
        strata_session_kv_slots(session, slots);
        for (int t = 0; t < layers * heads; t++)
            CHECK_MESSAGE(slots[t] <= cases[p].most_slots && slots[t] > 0, "%s table %d holds %lld slots (budget %d)",
                          cases[p].name, t, (long long)slots[t], BUDGET);
        strata_model_kv_stats(model, &stats);
        /* Measured by the pool: the bytes of the blocks in use (each by its storage type) and the free bytes
         * (whole free pages and free places in pages carved for packed blocks). */
        if (cases[p].frees_blocks)
            CHECK_MESSAGE(stats.used_bytes < full_used_bytes && stats.free_bytes > full_free_bytes,
                          "%s: %llu bytes in use (%llu free), the full cache used %llu (%llu free)", cases[p].name,
                          (unsigned long long)stats.used_bytes, (unsigned long long)stats.free_bytes,
                          (unsigned long long)full_used_bytes, (unsigned long long)full_free_bytes);
        else
            CHECK_MESSAGE(stats.used_bytes == full_used_bytes, "%s: %llu bytes in use, the full cache used %llu",
                          cases[p].name, (unsigned long long)stats.used_bytes, (unsigned long long)full_used_bytes);
        CHECK(isfinite(logits[0]));
        strata_session_destroy(session);
    }
    strata_model_close(model);
}

static void runs_are_deterministic(void)
{
    strata_model *model = open_model();
    if (model == NULL)
        return;
    int32_t tokens[PROMPT + DECODE];
    random_tokens(tokens, PROMPT + DECODE, 3);
    for (int p = 0; p < POLICIES; p++) {
        float first[TINY_VOCAB], second[TINY_VOCAB];
        strata_session *a = open_session(model, cases[p].name, BUDGET, cases[p].params);
        strata_session *b = open_session(model, cases[p].name, BUDGET, cases[p].params);
        if (a != NULL && b != NULL && run(a, tokens, first) && run(b, tokens, second))
            CHECK_MESSAGE(memcmp(first, second, sizeof first) == 0, "%s is not deterministic", cases[p].name);
        strata_session_destroy(a);
        strata_session_destroy(b);
    }
    strata_model_close(model);
}

/* Three sessions with different policies decoded in one batched step equal
 * the same sessions decoded one at a time. */
static void different_policies_share_one_batch_step(void)
{
    strata_model *model = open_model();
    if (model == NULL)
        return;
    int32_t tokens[PROMPT + 1];
    random_tokens(tokens, PROMPT + 1, 4);
    strata_session *batched[POLICIES], *alone[POLICIES];
    const int32_t *next[POLICIES];
    size_t counts[POLICIES];
    strata_error err = {0};
    for (int p = 0; p < POLICIES; p++) {
        batched[p] = open_session(model, cases[p].name, BUDGET, cases[p].params);
        alone[p] = open_session(model, cases[p].name, BUDGET, cases[p].params);
        if (batched[p] == NULL || alone[p] == NULL)
            return;
        CHECK(strata_session_append(batched[p], tokens, PROMPT, false, &err) == STRATA_OK);
        CHECK(strata_session_append(alone[p], tokens, PROMPT, false, &err) == STRATA_OK);
        next[p] = &tokens[PROMPT];
        counts[p] = 1;
    }
    CHECK_MESSAGE(strata_sessions_append(batched, next, counts, POLICIES, &err) == STRATA_OK, "%s", err.message);
    for (int p = 0; p < POLICIES; p++) {
        CHECK(strata_session_append(alone[p], &tokens[PROMPT], 1, false, &err) == STRATA_OK);
        const float *x = strata_session_logits(batched[p], 0), *y = strata_session_logits(alone[p], 0);
        double largest = 0, difference = 0;
        for (int i = 0; i < TINY_VOCAB; i++) {
            largest = fmax(largest, fabs(y[i]));
            difference = fmax(difference, fabs(x[i] - y[i]));
        }
        CHECK_MESSAGE(difference <= 1e-5 * largest, "%s: batched vs alone differ by %g", cases[p].name, difference);
        strata_session_destroy(batched[p]);
        strata_session_destroy(alone[p]);
    }
    strata_model_close(model);
}

/* The server reads prompts in chunks of a batched step (strata_sessions_step
 * with the prompt's length and offset) beside other sessions: a policy must
 * then compress as when the prompt came in one append, at the prompt's end.
 * StreamingLLM and the precisions compress after every chunk by design (so
 * later prompt tokens see the compressed or packed cache): their logits
 * depend on the chunk size, and they are held to the slots only. */
static void prompts_read_in_batched_chunks_compress_as_one_append(void)
{
    enum { CHUNK = 16 };
    strata_model *model = open_model();
    if (model == NULL)
        return;
    int32_t tokens[PROMPT + DECODE], other[PROMPT + DECODE];
    random_tokens(tokens, PROMPT + DECODE, 21);
    random_tokens(other, PROMPT + DECODE, 22);
    int32_t layers, heads;
    layers = strata_model_kv_layout(model, &heads);
    for (int p = 0; p < POLICIES; p++) {
        strata_session *whole = open_session(model, cases[p].name, BUDGET, cases[p].params);
        strata_session *chunked = open_session(model, cases[p].name, BUDGET, cases[p].params);
        strata_session *neighbour = open_session(model, "full", 0, NULL);
        if (whole == NULL || chunked == NULL || neighbour == NULL)
            return;
        float want[TINY_VOCAB];
        run(whole, tokens, want);
        strata_error err = {0};
        for (size_t done = 0; done < PROMPT + DECODE;) {
            bool prompt = done < PROMPT;
            size_t count = prompt ? (PROMPT - done < CHUNK ? PROMPT - done : CHUNK) : 1;
            strata_step_item items[2] = {
                {.session = neighbour, .tokens = &other[done], .count = count,
                 .prompt_length = prompt ? PROMPT : 0, .prompt_offset = prompt ? done : 0},
                {.session = chunked, .tokens = &tokens[done], .count = count,
                 .prompt_length = prompt ? PROMPT : 0, .prompt_offset = prompt ? done : 0}};
            if (strata_sessions_step(items, 2, &err) != STRATA_OK) {
                CHECK_MESSAGE(false, "%s: %s", cases[p].name, err.message);
                break;
            }
            done += count;
        }
        int64_t whole_slots[64], chunked_slots[64];
        strata_session_kv_slots(whole, whole_slots);
        strata_session_kv_slots(chunked, chunked_slots);
        const char *name = cases[p].name;
        bool every_chunk = strstr(name, "streaming") != NULL || strstr(name, "q8") != NULL ||
                           strstr(name, "q4") != NULL || strstr(name, "kivi") != NULL;
        bool streaming = strstr(name, "streaming") != NULL;
        for (int32_t t = 0; t < layers * heads; t++) {
            CHECK_MESSAGE(chunked_slots[t] <= cases[p].most_slots, "%s: table %d holds %lld slots", cases[p].name, t,
                          (long long)chunked_slots[t]);
            CHECK_MESSAGE(streaming || chunked_slots[t] == whole_slots[t], "%s: table %d holds %lld slots, %lld "
                          "after one append", cases[p].name, t, (long long)chunked_slots[t], (long long)whole_slots[t]);
        }
        const float *got = strata_session_logits(chunked, 0);
        double largest = 0, difference = 0;
        for (int i = 0; i < TINY_VOCAB && got != NULL; i++) {
            largest = fmax(largest, fabs(want[i]));
            difference = fmax(difference, fabs(got[i] - want[i]));
        }
        CHECK_MESSAGE(got != NULL && (every_chunk || difference <= 1e-5 * largest),
                      "%s: chunked logits differ by %g", cases[p].name, difference);
        strata_session_destroy(whole);
        strata_session_destroy(chunked);
        strata_session_destroy(neighbour);
    }
    strata_model_close(model);
}

/* A fork shares its parent's blocks; when the fork's policy compresses them
 * (after a further prompt chunk, then on its decode steps) it must copy
 * them, never change the parent: the parent's next logits equal those of an
 * identical session nobody forked. Done for every policy. */
static void compressing_a_fork_leaves_the_parent_untouched(void)
{
    strata_model *model = open_model();
    if (model == NULL)
        return;
    enum { MORE = 8 };
    int32_t tokens[PROMPT + MORE + DECODE];
    random_tokens(tokens, PROMPT + MORE + DECODE, 5);
    strata_error err = {0};
    for (int p = 0; p < POLICIES; p++) {
        strata_session *parent = open_session(model, cases[p].name, BUDGET, cases[p].params);
        strata_session *untouched = open_session(model, cases[p].name, BUDGET, cases[p].params);
        strata_session *child = NULL;
        if (parent == NULL || untouched == NULL)
            return;
        CHECK(strata_session_append(parent, tokens, PROMPT, false, &err) == STRATA_OK);
        CHECK(strata_session_append(untouched, tokens, PROMPT, false, &err) == STRATA_OK);
        CHECK(strata_session_fork(parent, &child, &err) == STRATA_OK);
        if (child == NULL)
            return;
        CHECK_MESSAGE(strata_session_append(child, &tokens[PROMPT], MORE, false, &err) == STRATA_OK, "%s: %s",
                      cases[p].name, err.message);
        for (int i = 0; i < DECODE; i++) /* each step may evict from blocks the parent still holds */
            CHECK(strata_session_append(child, &tokens[PROMPT + MORE + i], 1, false, &err) == STRATA_OK);
        CHECK(strata_session_append(parent, &tokens[PROMPT], 1, false, &err) == STRATA_OK);
        CHECK(strata_session_append(untouched, &tokens[PROMPT], 1, false, &err) == STRATA_OK);
        CHECK_MESSAGE(memcmp(strata_session_logits(parent, 0), strata_session_logits(untouched, 0),
                             TINY_VOCAB * sizeof(float)) == 0,
                      "%s: compressing a fork changed its parent", cases[p].name);
        strata_session_destroy(child);
        strata_session_destroy(parent);
        strata_session_destroy(untouched);
    }
    strata_model_close(model);
}

/* Quest keeps every slot (the session's KV bytes are those of the full
 * cache) and reads fewer: with a read budget of about three quarters of a
 * 206-token sequence the logits move (blocks were skipped) but only a
 * little. (In this random-weight model every block's key bounds are about
 * the same, so the choice is close to arbitrary; on Gemma 3 270M Quest
 * stays much closer to the full cache than H2O: docs/kv-policies.md.) */
static void quest_reads_fewer_blocks_and_keeps_the_full_cache(void)
{
    strata_model *model = open_model();
    if (model == NULL)
        return;
    enum { LONG_PROMPT = 200 };
    int32_t tokens[LONG_PROMPT + DECODE];
    random_tokens(tokens, LONG_PROMPT + DECODE, 6);
    float logits[2][TINY_VOCAB];
    uint64_t bytes[2] = {0};
    const char *policies[2] = {"full", "quest"};
    strata_error err = {0};
    for (int k = 0; k < 2; k++) {
        strata_session *session = open_session(model, policies[k], k == 0 ? 0 : 150, k == 0 ? NULL : "dense_layers=0");
        if (session == NULL)
            return;
        CHECK(strata_session_append(session, tokens, LONG_PROMPT, false, &err) == STRATA_OK);
        for (int i = 0; i < DECODE; i++)
            CHECK(strata_session_append(session, &tokens[LONG_PROMPT + i], 1, false, &err) == STRATA_OK);
        memcpy(logits[k], strata_session_logits(session, 0), sizeof logits[k]);
        bytes[k] = strata_session_kv_bytes(session, NULL);
        strata_session_destroy(session);
    }
    CHECK_MESSAGE(bytes[1] == bytes[0], "quest holds %llu KV bytes, the full cache %llu", (unsigned long long)bytes[1],
                  (unsigned long long)bytes[0]);
    double largest = 0, difference = 0;
    for (int i = 0; i < TINY_VOCAB; i++) {
        largest = fmax(largest, fabs(logits[0][i]));
        difference = fmax(difference, fabs(logits[0][i] - logits[1][i]));
    }
    CHECK_MESSAGE(difference > 0, "quest under a read budget read every block");
    CHECK_MESSAGE(difference <= 0.1 * largest, "quest moved the logits by %g (largest %g)", difference, largest);
    strata_model_close(model);
}

/* Sessions sharing prompt blocks through the prefix cache: a compressing
 * session attaches the blocks a full-cache session put there and compresses
 * (evicts, packs, merges into) them; the full session's next logits, and
 * those of a third session served from the cache afterwards, equal a run
 * that never met a compressing session. Done for every policy. */
static void compressing_cached_prefix_blocks_leaves_their_other_holders_untouched(void)
{
    strata_model *model = open_model();
    if (model == NULL)
        return;
    int32_t tokens[PROMPT + DECODE + 1];
    random_tokens(tokens, PROMPT + DECODE + 1, 6);
    strata_error err = {0};
    /* The reference: a full cache alone, no prefix cache. */
    float want_next[TINY_VOCAB], want_served[TINY_VOCAB];
    strata_session *reference = open_session(model, "full", 0, NULL);
    if (reference == NULL)
        return;
    CHECK(strata_session_append(reference, tokens, PROMPT, false, &err) == STRATA_OK);
    CHECK(strata_session_append(reference, &tokens[PROMPT], 1, false, &err) == STRATA_OK);
    memcpy(want_next, strata_session_logits(reference, 0), sizeof want_next);
    strata_session_destroy(reference);
    reference = open_session(model, "full", 0, NULL);
    CHECK(strata_session_append(reference, tokens, PROMPT + 1, false, &err) == STRATA_OK);
    memcpy(want_served, strata_session_logits(reference, 0), sizeof want_served);
    strata_session_destroy(reference);
    for (int p = 0; p < POLICIES; p++) {
        uint64_t space = 100 + (uint64_t)p; /* a namespace of its own: a fresh cache per case */
        strata_session_options full = {.prefix_cache = true, .cache_namespace = space};
        strata_session_options compressing = {.prefix_cache = true, .cache_namespace = space,
                                              .kv_policy = cases[p].name, .kv_budget_tokens = BUDGET,
                                              .kv_policy_params = cases[p].params,
                                              .kv_head_profile = profile_for(cases[p].name)};
        strata_session *holder = NULL, *compressor = NULL, *served = NULL;
        CHECK(strata_session_create(model, &full, &holder, &err) == STRATA_OK);
        CHECK(strata_session_create(model, &compressing, &compressor, &err) == STRATA_OK);
        if (holder == NULL || compressor == NULL)
            return;
        CHECK(strata_session_append(holder, tokens, PROMPT, false, &err) == STRATA_OK);
        CHECK_MESSAGE(strata_session_append(compressor, tokens, PROMPT, false, &err) == STRATA_OK, "%s: %s",
                      cases[p].name, err.message);
        CHECK_MESSAGE(strata_session_cached_tokens(compressor) > 0, "%s: nothing served from the cache",
                      cases[p].name);
        for (int i = 0; i < DECODE; i++)
            CHECK(strata_session_append(compressor, &tokens[PROMPT + i], 1, false, &err) == STRATA_OK);
        CHECK(strata_session_append(holder, &tokens[PROMPT], 1, false, &err) == STRATA_OK);
        CHECK_MESSAGE(memcmp(strata_session_logits(holder, 0), want_next, sizeof want_next) == 0,
                      "%s: compressing changed a session sharing its prefix blocks", cases[p].name);
        CHECK(strata_session_create(model, &full, &served, &err) == STRATA_OK);
        if (served != NULL) {
            CHECK(strata_session_append(served, tokens, PROMPT + 1, false, &err) == STRATA_OK);
            CHECK(strata_session_cached_tokens(served) > 0);
            CHECK_MESSAGE(memcmp(strata_session_logits(served, 0), want_served, sizeof want_served) == 0,
                          "%s: compressing changed the cached prefix", cases[p].name);
        }
        strata_session_destroy(served);
        strata_session_destroy(compressor);
        strata_session_destroy(holder);
    }
    strata_model_close(model);
}

/* StreamingLLM compresses after every prompt chunk: a prompt far longer than
 * the pool could hold whole is read in a pool of about budget + two chunks
 * per table, where the full cache fails with STRATA_E_KV_FULL. */
static void streaming_reads_a_long_prompt_in_a_pool_too_small_for_it(void)
{
    enum { LONG = 1500, BLOCKS = 200 }; /* the full prompt needs 4 tables x 94 blocks */
    tiny_model_spec spec = tiny_model_llama();
    spec.context_length = 2048;
    spec.key_length = 32;
    strata_model *model = NULL;
    strata_error err = {0};
    strata_model_options probe_options = {.threads = 2};
    CHECK(tiny_model_open_with(&spec, &probe_options, &model, &err) == STRATA_OK);
    if (model == NULL)
        return;
    strata_kv_stats stats;
    strata_model_kv_stats(model, &stats);
    strata_model_close(model);
    strata_model_options options = {.threads = 2, .kv_memory_bytes = BLOCKS * stats.block_bytes};
    CHECK(tiny_model_open_with(&spec, &options, &model, &err) == STRATA_OK);
    if (model == NULL)
        return;
    static int32_t tokens[LONG];
    random_tokens(tokens, LONG, 7);
    strata_session_options full = {.context_length = 2048};
    strata_session_options streaming = {.context_length = 2048, .kv_policy = "streaming", .kv_budget_tokens = 64};
    strata_session *session = NULL;
    CHECK(strata_session_create(model, &full, &session, &err) == STRATA_OK);
    CHECK(strata_session_append(session, tokens, LONG, false, &err) == STRATA_E_KV_FULL);
    strata_session_destroy(session);
    CHECK(strata_session_create(model, &streaming, &session, &err) == STRATA_OK);
    CHECK_MESSAGE(strata_session_append(session, tokens, LONG, false, &err) == STRATA_OK, "%s", err.message);
    int64_t slots[4];
    strata_session_kv_slots(session, slots);
    for (int t = 0; t < 4; t++)
        CHECK(slots[t] == 64);
    CHECK(strata_session_append(session, &tokens[0], 1, false, &err) == STRATA_OK);
    strata_session_destroy(session);
    strata_model_close(model);
}

/* One prefill, many policies: a compressed fork of a statistics-keeping
 * full session holds the same slots and gives the same logits, after the
 * prompt and after decode steps, as a session that read the prompt with the
 * policy itself (prompts below one chunk, so chunk hooks see the same); the
 * keeper is left unchanged. Done for every case. */
static void compressed_forks_equal_sessions_that_read_the_prompt_themselves(void)
{
    strata_model *model = open_model();
    if (model == NULL)
        return;
    int32_t tokens[PROMPT + DECODE];
    random_tokens(tokens, PROMPT + DECODE, 8);
    strata_error err = {0};
    strata_session_options keeping = {.kv_statistics_window = 8};
    strata_session *keeper = NULL;
    CHECK_MESSAGE(strata_session_create(model, &keeping, &keeper, &err) == STRATA_OK, "%s", err.message);
    if (keeper == NULL)
        return;
    CHECK(strata_session_append(keeper, tokens, PROMPT, false, &err) == STRATA_OK);
    float keeper_logits[TINY_VOCAB];
    memcpy(keeper_logits, strata_session_logits(keeper, 0), sizeof keeper_logits);
    for (int p = 0; p < POLICIES; p++) {
        /* The keeper kept the last 8 queries: every case observing a window observes 8. */
        strata_session_options options = {.kv_policy = cases[p].name, .kv_budget_tokens = BUDGET,
                                          .kv_policy_params = cases[p].params,
                                          .kv_head_profile = profile_for(cases[p].name)};
        strata_session *native = NULL, *forked = NULL;
        CHECK_MESSAGE(strata_session_create(model, &options, &native, &err) == STRATA_OK, "%s: %s", cases[p].name,
                      err.message);
        CHECK_MESSAGE(strata_session_fork_compressed(keeper, &options, &forked, &err) == STRATA_OK, "%s: %s",
                      cases[p].name, err.message);
        if (native == NULL || forked == NULL)
            return;
        CHECK(strata_session_append(native, tokens, PROMPT, false, &err) == STRATA_OK);
        int64_t native_slots[16], forked_slots[16];
        strata_session_kv_slots(native, native_slots);
        strata_session_kv_slots(forked, forked_slots);
        CHECK_MESSAGE(memcmp(native_slots, forked_slots, 4 * sizeof native_slots[0]) == 0, "%s: slots differ",
                      cases[p].name);
        CHECK(strata_session_kv_bytes(native, NULL) == strata_session_kv_bytes(forked, NULL));
        for (int i = 0; i < DECODE; i++) {
            CHECK(strata_session_append(native, &tokens[PROMPT + i], 1, false, &err) == STRATA_OK);
            CHECK(strata_session_append(forked, &tokens[PROMPT + i], 1, false, &err) == STRATA_OK);
            CHECK_MESSAGE(memcmp(strata_session_logits(native, 0), strata_session_logits(forked, 0),
                                 TINY_VOCAB * sizeof(float)) == 0,
                          "%s: a compressed fork differs from a native run at step %d", cases[p].name, i);
        }
        strata_session_destroy(native);
        strata_session_destroy(forked);
    }
    CHECK(strata_session_append(keeper, &tokens[PROMPT], 1, false, &err) == STRATA_OK); /* the keeper goes on */
    strata_session *alone = open_session(model, "full", 0, NULL);
    CHECK(strata_session_append(alone, tokens, PROMPT, false, &err) == STRATA_OK);
    CHECK(strata_session_append(alone, &tokens[PROMPT], 1, false, &err) == STRATA_OK);
    CHECK(memcmp(strata_session_logits(keeper, 0), strata_session_logits(alone, 0), TINY_VOCAB * sizeof(float)) == 0);
    strata_session_destroy(alone);
    /* A policy observing another window than the keeper kept is refused, naming both. */
    strata_session_options other = {.kv_policy = "snapkv", .kv_budget_tokens = BUDGET};
    strata_session *refused = NULL;
    CHECK(strata_session_fork_compressed(keeper, &other, &refused, &err) == STRATA_E_INVALID_ARGUMENT);
    CHECK_MESSAGE(strstr(err.message, "32") != NULL && strstr(err.message, "8") != NULL, "%s", err.message);
    CHECK(refused == NULL);
    strata_session_destroy(keeper);
    strata_model_close(model);
}

/* Every registered policy (but the identity) has a line in cases. */
static void every_policy_has_a_case(void)
{
    char names[512];
    snprintf(names, sizeof names, "%s", strata_kv_policies());
    for (char *name = strtok(names, ", "); name != NULL; name = strtok(NULL, ", ")) {
        bool found = strcmp(name, "full") == 0;
        for (int p = 0; p < POLICIES; p++)
            found = found || strcmp(cases[p].name, name) == 0;
        CHECK_MESSAGE(found, "policy '%s' is registered but not tested here: add it to cases", name);
    }
}

static void unknown_policies_and_parameters_are_refused(void)
{
    strata_model *model = open_model();
    if (model == NULL)
        return;
    strata_session *session = NULL;
    strata_error err = {0};
    strata_session_options options = {.kv_policy = "magic", .kv_budget_tokens = 8};
    CHECK(strata_session_create(model, &options, &session, &err) == STRATA_E_INVALID_ARGUMENT && session == NULL);
    CHECK_MESSAGE(strstr(err.message, "streaming") != NULL, "message lists the policies: %s", err.message);
    options = (strata_session_options){.kv_policy = "streaming", .kv_budget_tokens = 8, .kv_policy_params = "sink=3"};
    CHECK(strata_session_create(model, &options, &session, &err) == STRATA_E_INVALID_ARGUMENT);
    CHECK_MESSAGE(strstr(err.message, "sinks") != NULL, "message lists the parameters: %s", err.message);
    options.kv_policy_params = "sinks=-2";
    CHECK(strata_session_create(model, &options, &session, &err) == STRATA_E_INVALID_ARGUMENT);
    options.kv_policy_params = "sinks=2";
    CHECK(strata_session_create(model, &options, &session, &err) == STRATA_OK);
    strata_session_destroy(session);
    strata_model_close(model);
}

int main(void)
{
    RUN_CASE(budget_at_least_the_length_is_the_full_cache);
    RUN_CASE(budget_is_respected_and_blocks_return_to_the_pool);
    RUN_CASE(runs_are_deterministic);
    RUN_CASE(different_policies_share_one_batch_step);
    RUN_CASE(prompts_read_in_batched_chunks_compress_as_one_append);
    RUN_CASE(compressing_a_fork_leaves_the_parent_untouched);
    RUN_CASE(unknown_policies_and_parameters_are_refused);
    RUN_CASE(quest_reads_fewer_blocks_and_keeps_the_full_cache);
    RUN_CASE(compressing_cached_prefix_blocks_leaves_their_other_holders_untouched);
    RUN_CASE(streaming_reads_a_long_prompt_in_a_pool_too_small_for_it);
    RUN_CASE(compressed_forks_equal_sessions_that_read_the_prompt_themselves);
    RUN_CASE(every_policy_has_a_case);
    TEST_EXIT();
}
