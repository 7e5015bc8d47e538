/* tests/model/tiny_model.h: tiny random-weight GGUF models built in the test.
 *
 * A tiny_model_spec describes a model by its hyperparameters and optional
 * parts; tiny_model_open writes it with gguf_writer to a temporary file,
 * opens it with strata_model_open and removes the file (the mapping keeps the
 * bytes). Weights are random with a fixed seed: matrices uniform with a
 * standard deviation of 1/sqrt(row length), so activations keep their scale
 * through the layers; norms near 1; embeddings of unit spread.
 *
 * The vocabulary is a minimal SentencePiece one: <unk>, <s>, </s>, the 256
 * byte tokens <0x00>..<0xFF>, then a few words (266 tokens: not a multiple of
 * 4 or 16, so matrix products with the output matrix hit their tail paths).
 *
 * The loader's error paths need broken models, so a spec can also leave out
 * keys or tensors, give one tensor a wrong shape or store one in another
 * type. Header-only: every function is static inline, so a test program
 * that uses only some of them compiles without warnings. */
#ifndef STRATA_TESTS_MODEL_TINY_MODEL_H
#define STRATA_TESTS_MODEL_TINY_MODEL_H

#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "format/gguf_writer.h"
#include "quant/kernels.h"
#include "strata.h"

/* SentencePiece's word-start mark U+2581, in UTF-8. */
#define TINY_SPACE "\xE2\x96\x81"

enum { TINY_WORD_COUNT = 7, TINY_VOCAB = 3 + 256 + TINY_WORD_COUNT, TINY_MAX_LAYERS = 16, TINY_OMIT_SLOTS = 4 };

typedef struct tiny_model_spec {
    const char *arch;                /* general.architecture and the key prefix */
    const char *name;                /* general.name, or NULL for none */
    int64_t embedding_length;
    int64_t block_count;             /* at most TINY_MAX_LAYERS */
    int64_t head_count;
    int64_t head_count_kv;
    int64_t key_length;              /* 0: embedding_length / head_count, key not written */
    int64_t feed_forward_length;
    const int32_t *feed_forward_per_layer; /* written as an array when not NULL */
    size_t feed_forward_entries;     /* entries of that array */
    int64_t context_length;
    int64_t sliding_window;          /* 0: key not written */
    float final_logit_soft_cap;      /* 0: key not written */
    const char *rope_scaling;        /* rope.scaling.type, or NULL */
    float rope_scaling_factor;
    const char *chat_template;       /* tokenizer.chat_template, or NULL */
    bool biases;                     /* attn_q/k/v.bias */
    bool qk_norms;                   /* attn_q_norm / attn_k_norm */
    bool post_norms;                 /* post_attention_norm / post_ffw_norm */
    bool output_matrix;              /* an untied output.weight */
    tensor_type matrix_type;         /* F32 (the zero value) or F16 */
    uint64_t seed;

    /* Defects, for the loader's error paths. */
    const char *omit[TINY_OMIT_SLOTS]; /* keys and tensors whose names end with one of these */
    const char *misshapen;           /* this tensor gets one row (vectors: one value) too many */
    const char *retyped;             /* this tensor is stored as retype (zero bytes) */
    tensor_type retype;
} tiny_model_spec;

/* Llama: 2 layers of 32 wide, 4 query heads over 2 KV heads, FFN 64. */
static inline tiny_model_spec tiny_model_llama(void)
{
    return (tiny_model_spec){
        .arch = "llama", .name = "tiny llama", .embedding_length = 32, .block_count = 2,
        .head_count = 4, .head_count_kv = 2, .feed_forward_length = 64, .context_length = 64,
        .seed = 1,
    };
}

/* Qwen2: the llama shape with q/k/v biases. */
static inline tiny_model_spec tiny_model_qwen2(void)
{
    tiny_model_spec spec = tiny_model_llama();
    spec.arch = "qwen2", spec.name = "tiny qwen2", spec.biases = true, spec.seed = 2;
    return spec;
}

/* Gemma 3: 7 layers (0-4 and 6 sliding, 5 global) with a window of 4, head
 * size 16 (4 heads * 16 = 64, wider than the 32-wide stream), q/k norms, post
 * norms and soft-capped logits. */
static inline tiny_model_spec tiny_model_gemma3(void)
{
    return (tiny_model_spec){
        .arch = "gemma3", .name = "tiny gemma3", .embedding_length = 32, .block_count = 7,
        .head_count = 4, .head_count_kv = 2, .key_length = 16, .feed_forward_length = 64,
        .context_length = 64, .sliding_window = 4, .final_logit_soft_cap = 30.0f,
        .qk_norms = true, .post_norms = true, .seed = 3,
    };
}

/* Returns a uniform value in [-1, 1) from a splitmix64 state. */
static inline float tiny_model_random(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15u);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
    z ^= z >> 31;
    return (float)(z >> 40) / (float)(1u << 23) - 1.0f;
}

static inline bool tiny_model_omits(const tiny_model_spec *spec, const char *name)
{
    size_t length = strlen(name);
    for (int i = 0; i < TINY_OMIT_SLOTS; i++) {
        const char *suffix = spec->omit[i];
        if (suffix != NULL && strlen(suffix) <= length &&
            strcmp(name + length - strlen(suffix), suffix) == 0)
            return true;
    }
    return false;
}

/* The writer and the state every step of building shares; the first failure sticks. */
typedef struct tiny_model_builder {
    const tiny_model_spec *spec;
    gguf_writer *writer;
    uint64_t random;
    strata_status status;
    strata_error *err;
} tiny_model_builder;

static inline void tiny_model_key_u32(tiny_model_builder *b, const char *suffix, int64_t value)
{
    char key[128];
    snprintf(key, sizeof key, "%s.%s", b->spec->arch, suffix);
    if (b->status == STRATA_OK && !tiny_model_omits(b->spec, key))
        b->status = gguf_writer_set_u32(b->writer, key, (uint32_t)value, b->err);
}

static inline void tiny_model_key_f32(tiny_model_builder *b, const char *suffix, float value)
{
    char key[128];
    snprintf(key, sizeof key, "%s.%s", b->spec->arch, suffix);
    if (b->status == STRATA_OK && !tiny_model_omits(b->spec, key))
        b->status = gguf_writer_set_f32(b->writer, key, value, b->err);
}

static inline void tiny_model_key_string(tiny_model_builder *b, const char *key, const char *value)
{
    if (b->status == STRATA_OK && value != NULL && !tiny_model_omits(b->spec, key))
        b->status = gguf_writer_set_string(b->writer, key, value, b->err);
}

/* Adds a tensor of rows x cols (rows 0: a vector of cols values) with values
 * center + spread * uniform(-1, 1), in the spec's matrix type for matrices
 * and F32 for vectors, unless the spec breaks this tensor. */
static inline void tiny_model_tensor(tiny_model_builder *b, const char *name, int64_t cols, int64_t rows,
                                     float center, float spread)
{
    const tiny_model_spec *spec = b->spec;
    if (b->status != STRATA_OK || tiny_model_omits(spec, name))
        return;
    bool misshapen = spec->misshapen != NULL && strcmp(spec->misshapen, name) == 0;
    uint64_t ne[2] = {(uint64_t)cols, (uint64_t)(rows > 0 ? rows : 1)};
    if (misshapen)
        ne[rows > 0 ? 1 : 0]++;
    uint32_t n_dims = rows > 0 ? 2 : 1;
    uint64_t count = ne[0] * ne[1];
    if (spec->retyped != NULL && strcmp(spec->retyped, name) == 0) {
        uint64_t bytes = tensor_row_bytes(spec->retype, ne[0]) * ne[1];
        b->status = gguf_writer_add_tensor(b->writer, name, n_dims, ne, spec->retype, NULL, bytes, b->err);
        return;
    }
    tensor_type type = rows > 0 ? spec->matrix_type : TENSOR_F32;
    size_t value_bytes = type == TENSOR_F16 ? 2 : 4;
    unsigned char *data = malloc((size_t)count * value_bytes);
    if (data == NULL) {
        b->status = STRATA_E_OUT_OF_MEMORY;
        return;
    }
    for (uint64_t i = 0; i < count; i++) {
        float value = center + spread * tiny_model_random(&b->random);
        if (type == TENSOR_F16) {
            uint16_t half = quant_f32_to_f16(value);
            memcpy(data + 2 * i, &half, 2);
        } else {
            memcpy(data + 4 * i, &value, 4);
        }
    }
    b->status = gguf_writer_add_tensor(b->writer, name, n_dims, ne, type, data, count * value_bytes, b->err);
    free(data);
}

/* A matrix of rows x cols with standard deviation 1/sqrt(cols) (uniform: spread sqrt(3/cols)). */
static inline void tiny_model_matrix(tiny_model_builder *b, const char *name, int64_t cols, int64_t rows)
{
    tiny_model_tensor(b, name, cols, rows, 0.0f, sqrtf(3.0f / (float)cols));
}

static inline void tiny_model_vocabulary(tiny_model_builder *b)
{
    static const char *const words[TINY_WORD_COUNT] = {
        TINY_SPACE "the", TINY_SPACE "a", TINY_SPACE "cat", TINY_SPACE "sat",
        TINY_SPACE "on",  TINY_SPACE "mat", TINY_SPACE "hello",
    };
    static char byte_pieces[256][8];
    const char *tokens[TINY_VOCAB];
    float scores[TINY_VOCAB];
    int32_t types[TINY_VOCAB];
    tokens[0] = "<unk>", types[0] = 2; /* unknown */
    tokens[1] = "<s>", types[1] = 3;   /* control */
    tokens[2] = "</s>", types[2] = 3;
    for (int i = 0; i < 256; i++) {
        snprintf(byte_pieces[i], sizeof byte_pieces[i], "<0x%02X>", i);
        tokens[3 + i] = byte_pieces[i], types[3 + i] = 6; /* byte */
    }
    for (int i = 0; i < TINY_WORD_COUNT; i++)
        tokens[259 + i] = words[i], types[259 + i] = 1; /* normal */
    for (int i = 0; i < TINY_VOCAB; i++)
        scores[i] = i < 259 ? 0.0f : -(float)(i - 258);
    tiny_model_key_string(b, "tokenizer.ggml.model", "llama");
    if (b->status == STRATA_OK)
        b->status = gguf_writer_set_string_array(b->writer, "tokenizer.ggml.tokens", tokens, TINY_VOCAB, b->err);
    if (b->status == STRATA_OK)
        b->status = gguf_writer_set_array(b->writer, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, scores,
                                          TINY_VOCAB, b->err);
    if (b->status == STRATA_OK)
        b->status = gguf_writer_set_array(b->writer, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, types,
                                          TINY_VOCAB, b->err);
    if (b->status == STRATA_OK)
        b->status = gguf_writer_set_u32(b->writer, "tokenizer.ggml.unknown_token_id", 0, b->err);
    if (b->status == STRATA_OK)
        b->status = gguf_writer_set_u32(b->writer, "tokenizer.ggml.bos_token_id", 1, b->err);
    if (b->status == STRATA_OK)
        b->status = gguf_writer_set_u32(b->writer, "tokenizer.ggml.eos_token_id", 2, b->err);
    tiny_model_key_string(b, "tokenizer.chat_template", b->spec->chat_template);
}

static inline void tiny_model_hyperparameters(tiny_model_builder *b)
{
    const tiny_model_spec *spec = b->spec;
    tiny_model_key_string(b, "general.architecture", spec->arch);
    tiny_model_key_string(b, "general.name", spec->name);
    tiny_model_key_u32(b, "embedding_length", spec->embedding_length);
    tiny_model_key_u32(b, "block_count", spec->block_count);
    tiny_model_key_u32(b, "attention.head_count", spec->head_count);
    tiny_model_key_u32(b, "attention.head_count_kv", spec->head_count_kv);
    tiny_model_key_u32(b, "context_length", spec->context_length);
    tiny_model_key_f32(b, "attention.layer_norm_rms_epsilon", 1e-6f);
    tiny_model_key_f32(b, "rope.freq_base", 100000.0f);
    if (spec->key_length > 0) {
        tiny_model_key_u32(b, "attention.key_length", spec->key_length);
        tiny_model_key_u32(b, "attention.value_length", spec->key_length);
    }
    if (spec->sliding_window > 0)
        tiny_model_key_u32(b, "attention.sliding_window", spec->sliding_window);
    if (spec->final_logit_soft_cap > 0.0f)
        tiny_model_key_f32(b, "final_logit_softcapping", spec->final_logit_soft_cap);
    if (spec->rope_scaling != NULL) {
        char key[128];
        snprintf(key, sizeof key, "%s.rope.scaling.type", spec->arch);
        tiny_model_key_string(b, key, spec->rope_scaling);
        tiny_model_key_f32(b, "rope.scaling.factor", spec->rope_scaling_factor);
    }
    if (spec->feed_forward_per_layer == NULL) {
        tiny_model_key_u32(b, "feed_forward_length", spec->feed_forward_length);
    } else if (b->status == STRATA_OK) {
        char key[128];
        snprintf(key, sizeof key, "%s.feed_forward_length", spec->arch);
        b->status = gguf_writer_set_array(b->writer, key, GGUF_TYPE_INT32, spec->feed_forward_per_layer,
                                          spec->feed_forward_entries, b->err);
    }
}

static inline void tiny_model_layer(tiny_model_builder *b, int64_t il)
{
    const tiny_model_spec *spec = b->spec;
    int64_t n_embd = spec->embedding_length;
    int64_t head = spec->key_length > 0 ? spec->key_length : n_embd / spec->head_count;
    int64_t q_width = spec->head_count * head, kv_width = spec->head_count_kv * head;
    int64_t ff = spec->feed_forward_per_layer != NULL && (size_t)il < spec->feed_forward_entries
                     ? spec->feed_forward_per_layer[il]
                     : spec->feed_forward_length;
    char name[96];
#define TINY_LAYER_TENSOR(suffix) (snprintf(name, sizeof name, "blk.%lld." suffix, (long long)il), name)
    tiny_model_tensor(b, TINY_LAYER_TENSOR("attn_norm.weight"), n_embd, 0, 1.0f, 0.1f);
    tiny_model_matrix(b, TINY_LAYER_TENSOR("attn_q.weight"), n_embd, q_width);
    tiny_model_matrix(b, TINY_LAYER_TENSOR("attn_k.weight"), n_embd, kv_width);
    tiny_model_matrix(b, TINY_LAYER_TENSOR("attn_v.weight"), n_embd, kv_width);
    tiny_model_matrix(b, TINY_LAYER_TENSOR("attn_output.weight"), q_width, n_embd);
    if (spec->biases) {
        tiny_model_tensor(b, TINY_LAYER_TENSOR("attn_q.bias"), q_width, 0, 0.0f, 0.1f);
        tiny_model_tensor(b, TINY_LAYER_TENSOR("attn_k.bias"), kv_width, 0, 0.0f, 0.1f);
        tiny_model_tensor(b, TINY_LAYER_TENSOR("attn_v.bias"), kv_width, 0, 0.0f, 0.1f);
    }
    if (spec->qk_norms) {
        tiny_model_tensor(b, TINY_LAYER_TENSOR("attn_q_norm.weight"), head, 0, 1.0f, 0.1f);
        tiny_model_tensor(b, TINY_LAYER_TENSOR("attn_k_norm.weight"), head, 0, 1.0f, 0.1f);
    }
    if (spec->post_norms) {
        tiny_model_tensor(b, TINY_LAYER_TENSOR("post_attention_norm.weight"), n_embd, 0, 1.0f, 0.1f);
        tiny_model_tensor(b, TINY_LAYER_TENSOR("post_ffw_norm.weight"), n_embd, 0, 1.0f, 0.1f);
    }
    tiny_model_tensor(b, TINY_LAYER_TENSOR("ffn_norm.weight"), n_embd, 0, 1.0f, 0.1f);
    tiny_model_matrix(b, TINY_LAYER_TENSOR("ffn_gate.weight"), n_embd, ff);
    tiny_model_matrix(b, TINY_LAYER_TENSOR("ffn_up.weight"), n_embd, ff);
    tiny_model_matrix(b, TINY_LAYER_TENSOR("ffn_down.weight"), ff, n_embd);
#undef TINY_LAYER_TENSOR
}

/* Builds the model a spec describes into a new writer. */
static inline strata_status tiny_model_build(const tiny_model_spec *spec, gguf_writer **out, strata_error *err)
{
    tiny_model_builder b = {.spec = spec, .random = spec->seed, .err = err};
    b.status = gguf_writer_create(&b.writer, err);
    tiny_model_hyperparameters(&b);
    tiny_model_vocabulary(&b);
    int64_t n_embd = spec->embedding_length;
    tiny_model_tensor(&b, "token_embd.weight", n_embd, TINY_VOCAB, 0.0f, 1.7f);
    tiny_model_tensor(&b, "output_norm.weight", n_embd, 0, 1.0f, 0.1f);
    if (spec->output_matrix)
        tiny_model_matrix(&b, "output.weight", n_embd, TINY_VOCAB);
    for (int64_t il = 0; il < spec->block_count && il < TINY_MAX_LAYERS; il++)
        tiny_model_layer(&b, il);
    if (b.status != STRATA_OK) {
        gguf_writer_destroy(b.writer);
        return b.status;
    }
    *out = b.writer;
    return STRATA_OK;
}

/* Writes size bytes to a temporary file, opens it as a model with the given
 * thread count and removes the file again (the mapping keeps the bytes).
 * Only strata_model_open writes *out, so a test can check that it clears it. */
static inline strata_status tiny_model_open_bytes_with(const void *bytes, size_t size,
                                                       const strata_model_options *options, strata_model **out,
                                                       strata_error *err)
{
    char path[] = "/tmp/strata-tiny-model-XXXXXX";
    int descriptor = mkstemp(path);
    if (descriptor < 0) {
        snprintf(err->message, sizeof err->message, "cannot create a temporary file in /tmp");
        return err->status = STRATA_E_IO;
    }
    bool written = write(descriptor, bytes, size) == (ssize_t)size;
    close(descriptor);
    strata_status status = STRATA_E_IO;
    if (written)
        status = strata_model_open(path, options, out, err);
    else
        snprintf(err->message, sizeof err->message, "cannot write %zu bytes to %s", size, path);
    unlink(path);
    return err->status = status;
}

/* The same with only a thread count. */
static inline strata_status tiny_model_open_bytes(const void *bytes, size_t size, int threads, strata_model **out,
                                                  strata_error *err)
{
    strata_model_options options = {.threads = threads};
    return tiny_model_open_bytes_with(bytes, size, &options, out, err);
}

/* Builds the model a spec describes and opens it with the given options. */
static inline strata_status tiny_model_open_with(const tiny_model_spec *spec, const strata_model_options *options,
                                                 strata_model **out, strata_error *err)
{
    gguf_writer *writer = NULL;
    uint8_t *bytes = NULL;
    size_t size = 0;
    strata_status status = tiny_model_build(spec, &writer, err);
    if (status == STRATA_OK)
        status = gguf_writer_write_memory(writer, &bytes, &size, err);
    if (status == STRATA_OK)
        status = tiny_model_open_bytes_with(bytes, size, options, out, err);
    gguf_writer_destroy(writer);
    free(bytes);
    return status;
}

/* Builds the model a spec describes and opens it with the given thread count. */
static inline strata_status tiny_model_open(const tiny_model_spec *spec, int threads, strata_model **out,
                                            strata_error *err)
{
    strata_model_options options = {.threads = threads};
    return tiny_model_open_with(spec, &options, out, err);
}

#endif
