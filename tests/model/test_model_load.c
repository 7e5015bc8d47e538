/* tests/model/test_model_load.c: opening GGUF models.
 *
 * Tiny models are built in memory (tests/model/tiny_model.h) and opened from
 * a temporary file. Valid ones of every architecture open with the right
 * accessors and bind their optional parts (biases, per-layer FFN lengths,
 * sliding-window layers, untied output, linear RoPE scaling). Broken ones, a
 * table of named defects, are refused with the right status, a message that
 * names the problem, *out set to NULL and, under ASan, nothing leaked. */
#include <string.h>

#include "model/model.h"
#include "model/tiny_model.h"
#include "strata.h"
#include "test_util.h"

/* Opens a spec that must load; NULL (and a recorded failure) if it does not. */
static strata_model *open_valid(const tiny_model_spec *spec)
{
    strata_model *model = NULL;
    strata_error err = {0};
    strata_status status = tiny_model_open(spec, 1, &model, &err);
    CHECK_MESSAGE(status == STRATA_OK, "%s: %s", spec->arch, err.message);
    return model;
}

static void llama_opens_with_its_accessors(void)
{
    tiny_model_spec spec = tiny_model_llama();
    strata_model *model = open_valid(&spec);
    if (model == NULL)
        return;
    CHECK(strcmp(strata_model_architecture(model), "llama") == 0);
    CHECK(strcmp(strata_model_name(model), "tiny llama") == 0);
    CHECK(strata_model_vocab_size(model) == TINY_VOCAB);
    CHECK(strata_model_context_length(model) == 64);
    CHECK(strata_model_threads(model) == 1);
    CHECK(model->params.layer_count == 2 && model->params.kv_head_count == 2);
    CHECK(model->params.key_length == 8 && model->params.rotated_dims == 8);
    CHECK(model->output.data == model->token_embedding.data); /* tied: no output.weight */
    CHECK(model->layers[1].query_bias == NULL && model->layers[1].query_norm == NULL);
    CHECK(!model->layers[0].sliding_window && !model->layers[1].sliding_window);
    CHECK(strcmp(strata_token_piece(model, 259), TINY_SPACE "the") == 0);
    strata_model_close(model);
}

static void name_defaults_to_the_architecture(void)
{
    tiny_model_spec spec = tiny_model_llama();
    spec.name = NULL;
    strata_model *model = open_valid(&spec);
    if (model != NULL)
        CHECK(strcmp(strata_model_name(model), "llama") == 0);
    strata_model_close(model);
}

static void untied_output_matrix_is_bound(void)
{
    tiny_model_spec spec = tiny_model_llama();
    spec.output_matrix = true;
    strata_model *model = open_valid(&spec);
    if (model != NULL)
        CHECK(model->output.data != NULL && model->output.data != model->token_embedding.data);
    strata_model_close(model);
}

static void qwen2_binds_its_biases(void)
{
    tiny_model_spec spec = tiny_model_qwen2();
    strata_model *model = open_valid(&spec);
    if (model == NULL)
        return;
    CHECK(strcmp(strata_model_architecture(model), "qwen2") == 0);
    for (int64_t il = 0; il < 2; il++)
        CHECK(model->layers[il].query_bias != NULL && model->layers[il].key_bias != NULL &&
              model->layers[il].value_bias != NULL);
    strata_model_close(model);
}

static void qwen3_takes_its_head_size_from_key_length(void)
{
    tiny_model_spec spec = tiny_model_llama();
    spec.arch = "qwen3", spec.key_length = 16, spec.qk_norms = true;
    strata_model *model = open_valid(&spec);
    if (model == NULL)
        return;
    CHECK(model->params.key_length == 16 && model->params.value_length == 16);
    CHECK(model->layers[0].query_norm != NULL && model->layers[0].key_norm != NULL);
    CHECK(model->params.attention_scale == 0.25f);
    strata_model_close(model);
}

static void gemma3_interleaves_sliding_window_layers(void)
{
    tiny_model_spec spec = tiny_model_gemma3();
    strata_model *model = open_valid(&spec);
    if (model == NULL)
        return;
    CHECK(model->params.sliding_window == 4);
    CHECK(model->params.final_logit_soft_cap == 30.0f);
    CHECK(model->params.embedding_scale == sqrtf(32.0f));
    for (int64_t il = 0; il < 7; il++) {
        bool global = il == 5;
        CHECK_MESSAGE(model->layers[il].sliding_window == !global, "layer %lld", (long long)il);
        CHECK(model->layers[il].rope_base == (global ? 100000.0f : 10000.0f));
        CHECK(model->layers[il].post_attention_norm != NULL && model->layers[il].post_ffn_norm != NULL);
    }
    strata_model_close(model);
}

/* rope.freq_base_swa sets the local layers' base, and a per-layer bool array
 * in attention.sliding_window_pattern replaces the 5:1 period. */
static void gemma3_reads_local_base_and_per_layer_pattern(void)
{
    tiny_model_spec spec = tiny_model_gemma3();
    gguf_writer *writer = NULL;
    strata_error err = {0};
    CHECK(tiny_model_build(&spec, &writer, &err) == STRATA_OK);
    if (writer == NULL)
        return;
    bool pattern[7] = {true, false, true, false, true, false, true};
    CHECK(gguf_writer_set_f32(writer, "gemma3.rope.freq_base_swa", 5000.0f, &err) == STRATA_OK);
    CHECK(gguf_writer_set_array(writer, "gemma3.attention.sliding_window_pattern", GGUF_TYPE_BOOL, pattern, 7,
                                &err) == STRATA_OK);
    uint8_t *bytes = NULL;
    size_t size = 0;
    CHECK(gguf_writer_write_memory(writer, &bytes, &size, &err) == STRATA_OK);
    gguf_writer_destroy(writer);
    strata_model *model = NULL;
    CHECK_MESSAGE(tiny_model_open_bytes(bytes, size, 1, &model, &err) == STRATA_OK, "%s", err.message);
    free(bytes);
    if (model == NULL)
        return;
    for (int64_t il = 0; il < 7; il++) {
        CHECK_MESSAGE(model->layers[il].sliding_window == pattern[il], "layer %lld", (long long)il);
        CHECK(model->layers[il].rope_base == (pattern[il] ? 5000.0f : 100000.0f));
    }
    strata_model_close(model);
}

static void feed_forward_length_may_be_per_layer(void)
{
    static const int32_t lengths[] = {64, 96};
    tiny_model_spec spec = tiny_model_llama();
    spec.feed_forward_per_layer = lengths, spec.feed_forward_entries = 2;
    strata_model *model = open_valid(&spec);
    if (model == NULL)
        return;
    CHECK(model->layers[0].feed_forward_length == 64 && model->layers[1].feed_forward_length == 96);
    CHECK(model->params.max_feed_forward_length == 96);
    strata_model_close(model);
}

static void linear_rope_scaling_scales_frequencies(void)
{
    tiny_model_spec spec = tiny_model_llama();
    spec.rope_scaling = "linear", spec.rope_scaling_factor = 4.0f;
    strata_model *model = open_valid(&spec);
    if (model != NULL)
        CHECK(model->params.rope_frequency_scale == 0.25f);
    strata_model_close(model);
}

/* Defects: each changes a valid llama spec (or swaps in another architecture). */
static void without_architecture(tiny_model_spec *s) { s->omit[0] = "general.architecture"; }
static void unknown_architecture(tiny_model_spec *s) { s->arch = "mamba"; }
static void without_block_count(tiny_model_spec *s) { s->omit[0] = "llama.block_count"; }
static void without_embedding_length(tiny_model_spec *s) { s->omit[0] = "llama.embedding_length"; }
static void without_head_count(tiny_model_spec *s) { s->omit[0] = "llama.attention.head_count"; }
static void without_feed_forward_length(tiny_model_spec *s) { s->omit[0] = "llama.feed_forward_length"; }
static void heads_not_a_multiple_of_kv_heads(tiny_model_spec *s) { s->head_count_kv = 3; }
static void without_a_layer_tensor(tiny_model_spec *s) { s->omit[0] = "blk.1.ffn_up.weight"; }
static void without_token_embedding(tiny_model_spec *s) { s->omit[0] = "token_embd.weight"; }
static void without_output_norm(tiny_model_spec *s) { s->omit[0] = "output_norm.weight"; }
static void misshapen_matrix(tiny_model_spec *s) { s->misshapen = "blk.0.attn_k.weight"; }
static void misshapen_norm(tiny_model_spec *s) { s->misshapen = "blk.1.ffn_norm.weight"; }
static void f16_norm(tiny_model_spec *s) { s->retyped = "blk.0.attn_norm.weight", s->retype = TENSOR_F16; }
static void rope_scaling_yarn(tiny_model_spec *s) { s->rope_scaling = "yarn", s->rope_scaling_factor = 4.0f; }
static void without_tokenizer(tiny_model_spec *s) { s->omit[0] = "tokenizer.ggml.model"; }

/* Q2_K blocks hold 256 values, so the FFN is 256 wide to give ffn_down such rows. */
static void q2_k_weight(tiny_model_spec *s)
{
    s->feed_forward_length = 256, s->retyped = "blk.0.ffn_down.weight", s->retype = TENSOR_Q2_K;
}

static void feed_forward_array_too_short(tiny_model_spec *s)
{
    static const int32_t lengths[] = {64};
    s->feed_forward_per_layer = lengths, s->feed_forward_entries = 1;
}

static void gemma3_without_qk_norms(tiny_model_spec *s)
{
    *s = tiny_model_gemma3();
    s->qk_norms = false;
}

static void gemma3_without_post_norms(tiny_model_spec *s)
{
    *s = tiny_model_gemma3();
    s->omit[0] = "post_ffw_norm.weight";
}

typedef struct load_defect {
    const char *behaviour;
    void (*apply)(tiny_model_spec *spec);
    strata_status status;
    const char *message_parts[2]; /* texts the message must contain (NULL: none) */
} load_defect;

static const load_defect load_defects[] = {
    {"missing general.architecture is a format error", without_architecture, STRATA_E_FORMAT,
     {"general.architecture", "missing"}},
    {"an unknown architecture lists the supported ones", unknown_architecture, STRATA_E_UNSUPPORTED,
     {"'mamba'", "llama, qwen2, qwen3, gemma3"}},
    {"missing block_count is named", without_block_count, STRATA_E_FORMAT, {"'llama.block_count'", "missing"}},
    {"missing embedding_length is named", without_embedding_length, STRATA_E_FORMAT,
     {"'llama.embedding_length'", "missing"}},
    {"missing head_count is named", without_head_count, STRATA_E_FORMAT,
     {"'llama.attention.head_count'", "missing"}},
    {"missing feed_forward_length is named", without_feed_forward_length, STRATA_E_FORMAT,
     {"'llama.feed_forward_length'", "missing"}},
    {"head_count must be a multiple of head_count_kv", heads_not_a_multiple_of_kv_heads, STRATA_E_FORMAT,
     {"head_count 4", "head_count_kv 3"}},
    {"a missing layer tensor is named", without_a_layer_tensor, STRATA_E_FORMAT,
     {"'blk.1.ffn_up.weight'", "missing"}},
    {"a missing token embedding is named", without_token_embedding, STRATA_E_FORMAT,
     {"'token_embd.weight'", "missing"}},
    {"a missing output norm is named", without_output_norm, STRATA_E_FORMAT, {"'output_norm.weight'", "missing"}},
    {"a matrix of the wrong shape gives both shapes", misshapen_matrix, STRATA_E_FORMAT,
     {"'blk.0.attn_k.weight' has dims 32 x 17", "expected 32 x 16"}},
    {"a norm of the wrong length is refused", misshapen_norm, STRATA_E_FORMAT,
     {"'blk.1.ffn_norm.weight' has dims 33 x 1", "expected 32 x 1"}},
    {"a norm vector must be F32", f16_norm, STRATA_E_UNSUPPORTED, {"'blk.0.attn_norm.weight'", "F16"}},
    {"a weight type without kernels is refused", q2_k_weight, STRATA_E_UNSUPPORTED,
     {"'blk.0.ffn_down.weight'", "Q2_K"}},
    {"yarn RoPE scaling is not supported", rope_scaling_yarn, STRATA_E_UNSUPPORTED, {"'yarn'", "none, linear"}},
    {"a per-layer FFN array shorter than the layers is refused", feed_forward_array_too_short, STRATA_E_FORMAT,
     {"'llama.feed_forward_length' has 1 entries", "2 layers"}},
    {"a model without a tokenizer is refused", without_tokenizer, STRATA_E_FORMAT, {"tokenizer.ggml.model", NULL}},
    {"gemma3 requires q/k norms", gemma3_without_qk_norms, STRATA_E_FORMAT,
     {"'blk.0.attn_q_norm.weight'", "missing"}},
    {"gemma3 requires post norms", gemma3_without_post_norms, STRATA_E_FORMAT,
     {"'blk.0.post_ffw_norm.weight'", "missing"}},
};

/* Checks that an open failed cleanly: status, *out NULL and the message parts. */
static void check_refused(const char *behaviour, strata_status status, const strata_model *model,
                          const strata_error *err, strata_status expected, const char *const parts[2])
{
    CHECK_MESSAGE(status == expected, "%s: status %s, expected %s (%s)", behaviour, strata_status_name(status),
                  strata_status_name(expected), err->message);
    CHECK_MESSAGE(model == NULL, "%s: *out is not NULL", behaviour);
    CHECK_MESSAGE(err->status == expected, "%s: error status %s", behaviour, strata_status_name(err->status));
    for (int i = 0; i < 2; i++)
        CHECK_MESSAGE(parts[i] == NULL || strstr(err->message, parts[i]) != NULL,
                      "%s: message \"%s\" does not contain \"%s\"", behaviour, err->message, parts[i]);
}

static void defective_models_are_refused_with_a_reason(void)
{
    for (size_t i = 0; i < sizeof load_defects / sizeof load_defects[0]; i++) {
        const load_defect *defect = &load_defects[i];
        tiny_model_spec spec = tiny_model_llama();
        defect->apply(&spec);
        strata_model *model = (strata_model *)&spec; /* not NULL: the open must clear it */
        strata_error err = {0};
        strata_status status = tiny_model_open(&spec, 1, &model, &err);
        check_refused(defect->behaviour, status, model, &err, defect->status, defect->message_parts);
        if (status == STRATA_OK)
            strata_model_close(model);
    }
}

static void a_file_that_is_not_gguf_is_refused(void)
{
    static const char text[] = "this is a text file, not a model; it is long enough for a header";
    strata_model *model = NULL;
    strata_error err = {0};
    strata_status status = tiny_model_open_bytes(text, sizeof text - 1, 1, &model, &err);
    static const char *const parts[2] = {"strata-tiny-model-", "not a GGUF file"};
    check_refused("a text file", status, model, &err, STRATA_E_FORMAT, parts);
    strata_model_close(model);
}

static void a_missing_file_is_an_io_error(void)
{
    strata_model *model = NULL;
    strata_error err = {0};
    strata_status status = strata_model_open("/nonexistent/strata/model.gguf", NULL, &model, &err);
    static const char *const parts[2] = {"/nonexistent/strata/model.gguf", NULL};
    check_refused("a missing file", status, model, &err, STRATA_E_IO, parts);
    strata_model_close(model);
}

int main(void)
{
    RUN_CASE(llama_opens_with_its_accessors);
    RUN_CASE(name_defaults_to_the_architecture);
    RUN_CASE(untied_output_matrix_is_bound);
    RUN_CASE(qwen2_binds_its_biases);
    RUN_CASE(qwen3_takes_its_head_size_from_key_length);
    RUN_CASE(gemma3_interleaves_sliding_window_layers);
    RUN_CASE(gemma3_reads_local_base_and_per_layer_pattern);
    RUN_CASE(feed_forward_length_may_be_per_layer);
    RUN_CASE(linear_rope_scaling_scales_frequencies);
    RUN_CASE(defective_models_are_refused_with_a_reason);
    RUN_CASE(a_file_that_is_not_gguf_is_refused);
    RUN_CASE(a_missing_file_is_an_io_error);
    TEST_EXIT();
}
