/* tests/format/test_gguf.c: the GGUF reader and writer.
 *
 * Valid images are built in memory with gguf_writer and read back: every
 * metadata type, string arrays, tensors, several alignments, v2 and v3
 * headers. Malformed images are made from a valid one by patching one field
 * (a table of named behaviours), by cutting it at every length, and by
 * random byte flips (seed printed; replay with STRATA_TEST_SEED=N). Every
 * image under test is copied into a buffer of exactly its size, so under
 * ASan a read past its end is caught. The last case opens the real default
 * model and fails, rather than skips, when it has not been fetched. */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include <inttypes.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "format/gguf.h"
#include "format/gguf_writer.h"
#include "test_util.h"

enum { SAMPLE_TOKEN_COUNT = 5, SAMPLE_F32_VALUES = 16 };

static const char *const sample_tokens[SAMPLE_TOKEN_COUNT] = {"<pad>", "<eos>", "hello", "",
                                                              "w\xc3\xb6rld"};
static const uint32_t sample_u32_array[] = {1, 2, 3, 0xFFFFFFFFu};
static const int16_t sample_i16_array[] = {-1, 2, -32768};
static const float sample_f32_array[] = {0.5f, -1.25f};
static const double sample_f64_array[] = {1e300, -0.125};
static const bool sample_bool_array[] = {true, false, true};

typedef struct sample_array {
    const char *key;
    gguf_value_type element_type;
    const void *elements;
    uint64_t count;
} sample_array;

static const sample_array sample_arrays[] = {
    {"test.array_u32", GGUF_TYPE_UINT32, sample_u32_array, 4},
    {"test.array_i16", GGUF_TYPE_INT16, sample_i16_array, 3},
    {"test.array_f32", GGUF_TYPE_FLOAT32, sample_f32_array, 2},
    {"test.array_f64", GGUF_TYPE_FLOAT64, sample_f64_array, 2},
    {"test.array_bool", GGUF_TYPE_BOOL, sample_bool_array, 3},
    {"test.empty_array", GGUF_TYPE_UINT8, NULL, 0},
};

/* An image and its size, in a buffer of exactly that size (freed by the case). */
typedef struct test_image {
    uint8_t *bytes;
    size_t size;
} test_image;

static uint64_t read_little_endian(const uint8_t *bytes, unsigned width)
{
    uint64_t value = 0;
    for (unsigned i = 0; i < width; i++)
        value |= (uint64_t)bytes[i] << (8 * i);
    return value;
}

static void sample_f32_tensor(float *values)
{
    for (int i = 0; i < SAMPLE_F32_VALUES; i++)
        values[i] = (float)i * 0.5f - 3.0f;
}

static void sample_bytes(uint8_t *bytes, size_t count, uint8_t seed)
{
    for (size_t i = 0; i < count; i++)
        bytes[i] = (uint8_t)(seed + i * 7);
}

/* Records a failure with the callee's message when a setup call fails. */
static void expect_ok(strata_status status, const strata_error *err)
{
    CHECK_MESSAGE(status == STRATA_OK, "%s", err->message);
}

/* Sets one key of every value type and four tensors of different types. */
static void fill_sample_writer(gguf_writer *writer)
{
    strata_error err = {0};
    expect_ok(gguf_writer_set_string(writer, "general.architecture", "test", &err), &err);
    expect_ok(gguf_writer_set_u8(writer, "test.u8", 200, &err), &err);
    expect_ok(gguf_writer_set_i8(writer, "test.i8", -100, &err), &err);
    expect_ok(gguf_writer_set_u16(writer, "test.u16", 60000, &err), &err);
    expect_ok(gguf_writer_set_i16(writer, "test.i16", -30000, &err), &err);
    expect_ok(gguf_writer_set_u32(writer, "test.u32", 4000000000u, &err), &err);
    expect_ok(gguf_writer_set_i32(writer, "test.i32", -2000000000, &err), &err);
    expect_ok(gguf_writer_set_i32(writer, "test.positive_i32", 18, &err), &err);
    expect_ok(gguf_writer_set_u64(writer, "test.u64", UINT64_MAX - 5, &err), &err);
    expect_ok(gguf_writer_set_i64(writer, "test.i64", INT64_MIN + 1, &err), &err);
    expect_ok(gguf_writer_set_f32(writer, "test.f32", 1.5f, &err), &err);
    expect_ok(gguf_writer_set_f64(writer, "test.f64", -2.25, &err), &err);
    expect_ok(gguf_writer_set_bool(writer, "test.bool", true, &err), &err);
    expect_ok(gguf_writer_set_bool(writer, "test.bool_false", false, &err), &err);
    expect_ok(gguf_writer_set_string(writer, "test.string", "hello gguf", &err), &err);
    expect_ok(gguf_writer_set_string(writer, "test.empty_string", "", &err), &err);
    for (size_t i = 0; i < sizeof sample_arrays / sizeof sample_arrays[0]; i++) {
        const sample_array *array = &sample_arrays[i];
        expect_ok(gguf_writer_set_array(writer, array->key, array->element_type, array->elements,
                                        array->count, &err),
                  &err);
    }
    expect_ok(gguf_writer_set_string_array(writer, "test.strings", sample_tokens,
                                           SAMPLE_TOKEN_COUNT, &err),
              &err);

    float values[SAMPLE_F32_VALUES];
    sample_f32_tensor(values);
    uint8_t q8_0[68], q4_k[144];
    sample_bytes(q8_0, sizeof q8_0, 1);
    sample_bytes(q4_k, sizeof q4_k, 2);
    const struct {
        const char *name;
        uint32_t n_dims;
        uint64_t ne[2];
        tensor_type type;
        const void *data; /* NULL: zeros */
        uint64_t bytes;
    } tensors[] = {
        {"tensor.a", 2, {8, 2}, TENSOR_F32, values, sizeof values},
        {"tensor.b", 2, {64, 1}, TENSOR_Q8_0, q8_0, sizeof q8_0},
        {"tensor.c", 1, {256}, TENSOR_Q4_K, q4_k, sizeof q4_k},
        {"tensor.d", 1, {3}, TENSOR_F16, NULL, 6},
    };
    for (size_t i = 0; i < sizeof tensors / sizeof tensors[0]; i++)
        expect_ok(gguf_writer_add_tensor(writer, tensors[i].name, tensors[i].n_dims, tensors[i].ne,
                                         tensors[i].type, tensors[i].data, tensors[i].bytes, &err),
                  &err);
}

/* Builds the sample image; alignment 0 leaves general.alignment unset. */
static test_image build_sample_image(uint32_t version, uint32_t alignment)
{
    test_image image = {0};
    gguf_writer *writer = NULL;
    strata_error err;
    CHECK(gguf_writer_create(&writer, &err) == STRATA_OK);
    CHECK(gguf_writer_set_version(writer, version, &err) == STRATA_OK);
    if (alignment != 0)
        CHECK(gguf_writer_set_u32(writer, "general.alignment", alignment, &err) == STRATA_OK);
    fill_sample_writer(writer);
    CHECK(gguf_writer_write_memory(writer, &image.bytes, &image.size, &err) == STRATA_OK);
    gguf_writer_destroy(writer);
    return image;
}

static test_image copy_image(const uint8_t *bytes, size_t size)
{
    test_image copy = {malloc(size ? size : 1), size};
    if (copy.bytes != NULL && size > 0)
        memcpy(copy.bytes, bytes, size);
    return copy;
}

static gguf_file *open_image(const test_image *image)
{
    gguf_file *file = NULL;
    strata_error err = {0};
    strata_status status = gguf_open_memory(image->bytes, image->size, "sample.gguf", &file, &err);
    CHECK_MESSAGE(status == STRATA_OK, "%s", err.message);
    return file;
}

/* The v3 sample with the default alignment, opened once by main for the
 * cases that only read it. */
static test_image sample_image;
static const gguf_file *sample_file;

/* Where the text of a GGUF string (length, then bytes) equal to text starts, or 0. */
static size_t find_gguf_string(const test_image *image, const char *text)
{
    size_t length = strlen(text);
    for (size_t i = 0; i + 8 + length <= image->size; i++)
        if (read_little_endian(image->bytes + i, 8) == length &&
            memcmp(image->bytes + i + 8, text, length) == 0)
            return i + 8;
    return 0;
}

/* ---- valid images read back ---- */

typedef struct expected_scalar {
    const char *key;
    gguf_value_type type;
    uint64_t as_u64;
    int64_t as_i64;
    double as_f64;
} expected_scalar;

static const expected_scalar sample_scalars[] = {
    {"test.u8", GGUF_TYPE_UINT8, 200, 0, 0},
    {"test.i8", GGUF_TYPE_INT8, 0, -100, 0},
    {"test.u16", GGUF_TYPE_UINT16, 60000, 0, 0},
    {"test.i16", GGUF_TYPE_INT16, 0, -30000, 0},
    {"test.u32", GGUF_TYPE_UINT32, 4000000000u, 0, 0},
    {"test.i32", GGUF_TYPE_INT32, 0, -2000000000, 0},
    {"test.u64", GGUF_TYPE_UINT64, UINT64_MAX - 5, 0, 0},
    {"test.i64", GGUF_TYPE_INT64, 0, INT64_MIN + 1, 0},
    {"test.f32", GGUF_TYPE_FLOAT32, 0, 0, 1.5},
    {"test.f64", GGUF_TYPE_FLOAT64, 0, 0, -2.25},
    {"test.bool", GGUF_TYPE_BOOL, 1, 0, 0},
    {"test.bool_false", GGUF_TYPE_BOOL, 0, 0, 0},
};

static void every_scalar_type_reads_back_with_its_value(void)
{
    const gguf_file *file = sample_file;
    for (size_t i = 0; i < sizeof sample_scalars / sizeof sample_scalars[0]; i++) {
        const expected_scalar *expected = &sample_scalars[i];
        const gguf_value *value = gguf_find(file, expected->key);
        CHECK_MESSAGE(value != NULL && value->type == expected->type, "%s", expected->key);
        if (value == NULL)
            continue;
        if (expected->type == GGUF_TYPE_FLOAT32 || expected->type == GGUF_TYPE_FLOAT64)
            CHECK_MESSAGE(value->as.f64 == expected->as_f64, "%s", expected->key);
        else if (expected->as_i64 != 0)
            CHECK_MESSAGE(value->as.i64 == expected->as_i64, "%s", expected->key);
        else
            CHECK_MESSAGE(value->as.u64 == expected->as_u64, "%s", expected->key);
    }
}

static bool string_equals(gguf_string string, const char *text)
{
    return string.length == strlen(text) && memcmp(string.data, text, string.length) == 0;
}

static void strings_and_string_arrays_read_back(void)
{
    const gguf_file *file = sample_file;
    const gguf_value *value = gguf_find(file, "test.string");
    CHECK(value != NULL && value->type == GGUF_TYPE_STRING);
    CHECK(value != NULL && string_equals(value->as.string, "hello gguf"));
    value = gguf_find(file, "test.empty_string");
    CHECK(value != NULL && value->as.string.length == 0);
    value = gguf_find(file, "test.strings");
    CHECK(value != NULL && value->type == GGUF_TYPE_ARRAY);
    if (value != NULL) {
        CHECK(value->as.array.element_type == GGUF_TYPE_STRING);
        CHECK(value->as.array.count == SAMPLE_TOKEN_COUNT);
        for (int i = 0; i < SAMPLE_TOKEN_COUNT && value->as.array.strings != NULL; i++)
            CHECK_MESSAGE(string_equals(value->as.array.strings[i], sample_tokens[i]), "token %d",
                          i);
    }
}

static void numeric_arrays_keep_packed_little_endian_elements(void)
{
    const gguf_file *file = sample_file;
    const gguf_value *u32s = gguf_find(file, "test.array_u32");
    CHECK(u32s != NULL && u32s->as.array.element_type == GGUF_TYPE_UINT32 &&
          u32s->as.array.count == 4);
    for (int i = 0; u32s != NULL && i < 4; i++)
        CHECK(read_little_endian((const uint8_t *)u32s->as.array.data + 4 * i, 4) ==
              sample_u32_array[i]);
    const gguf_value *i16s = gguf_find(file, "test.array_i16");
    CHECK(i16s != NULL && i16s->as.array.count == 3);
    if (i16s != NULL)
        CHECK(read_little_endian((const uint8_t *)i16s->as.array.data + 4, 2) == 0x8000);
    const gguf_value *f32s = gguf_find(file, "test.array_f32");
    if (f32s != NULL) {
        float second;
        memcpy(&second, (const uint8_t *)f32s->as.array.data + 4, sizeof second);
        CHECK(second == -1.25f);
    }
    const gguf_value *f64s = gguf_find(file, "test.array_f64");
    if (f64s != NULL) {
        double first;
        memcpy(&first, f64s->as.array.data, sizeof first);
        CHECK(first == 1e300);
    }
    const gguf_value *bools = gguf_find(file, "test.array_bool");
    CHECK(bools != NULL && bools->as.array.count == 3 &&
          memcmp(bools->as.array.data, "\1\0\1", 3) == 0);
    const gguf_value *empty = gguf_find(file, "test.empty_array");
    CHECK(empty != NULL && empty->as.array.count == 0);
}

static void metadata_keeps_the_order_keys_were_first_set(void)
{
    gguf_writer *writer = NULL;
    strata_error err;
    CHECK(gguf_writer_create(&writer, &err) == STRATA_OK);
    CHECK(gguf_writer_set_u32(writer, "first", 1, &err) == STRATA_OK);
    CHECK(gguf_writer_set_string(writer, "second", "two", &err) == STRATA_OK);
    CHECK(gguf_writer_set_f32(writer, "first", 1.5f, &err) == STRATA_OK);
    test_image image = {0};
    CHECK(gguf_writer_write_memory(writer, &image.bytes, &image.size, &err) == STRATA_OK);
    gguf_writer_destroy(writer);
    gguf_file *file = open_image(&image);
    if (file != NULL) {
        CHECK(gguf_metadata_count(file) == 2);
        CHECK(strcmp(gguf_metadata_key(file, 0), "first") == 0);
        CHECK(strcmp(gguf_metadata_key(file, 1), "second") == 0);
        CHECK(gguf_metadata_value(file, 0)->type == GGUF_TYPE_FLOAT32);
        CHECK(gguf_metadata_key(file, 2) == NULL && gguf_metadata_value(file, 2) == NULL);
        CHECK(gguf_find(file, "third") == NULL);
    }
    gguf_close(file);
    free(image.bytes);
}

static void tensors_read_back_with_shape_type_offset_and_data(void)
{
    const gguf_file *file = sample_file;
    CHECK(gguf_tensor_count(file) == 4);
    CHECK(gguf_alignment(file) == 32);
    const gguf_tensor *a = gguf_tensor_find(file, "tensor.a");
    CHECK(a != NULL && a == gguf_tensor_at(file, 0));
    if (a != NULL) {
        CHECK(a->n_dims == 2 && a->ne[0] == 8 && a->ne[1] == 2 && a->ne[2] == 1 && a->ne[3] == 1);
        CHECK(a->type == TENSOR_F32 && a->offset == 0 && a->bytes == 64);
        float expected[SAMPLE_F32_VALUES];
        sample_f32_tensor(expected);
        CHECK(memcmp(a->data, expected, sizeof expected) == 0);
    }
    const gguf_tensor *b = gguf_tensor_find(file, "tensor.b");
    CHECK(b != NULL && b->type == TENSOR_Q8_0 && b->offset == 64 && b->bytes == 68);
    const gguf_tensor *c = gguf_tensor_find(file, "tensor.c");
    CHECK(c != NULL && c->type == TENSOR_Q4_K && c->offset == 160 && c->bytes == 144);
    if (c != NULL) {
        uint8_t expected[144];
        sample_bytes(expected, sizeof expected, 2);
        CHECK(memcmp(c->data, expected, sizeof expected) == 0);
    }
    const gguf_tensor *d = gguf_tensor_find(file, "tensor.d");
    CHECK(d != NULL && d->n_dims == 1 && d->ne[0] == 3 && d->bytes == 6 && d->offset == 320);
    CHECK(gguf_tensor_find(file, "tensor.e") == NULL && gguf_tensor_at(file, 4) == NULL);
}

static void custom_alignments_place_every_tensor_on_their_boundary(void)
{
    static const uint32_t alignments[] = {1, 8, 32, 64, 4096};
    for (size_t i = 0; i < sizeof alignments / sizeof alignments[0]; i++) {
        test_image image = build_sample_image(3, alignments[i]);
        gguf_file *file = open_image(&image);
        CHECK_MESSAGE(file != NULL && gguf_alignment(file) == alignments[i], "alignment %" PRIu32,
                      alignments[i]);
        for (uint64_t t = 0; file != NULL && t < gguf_tensor_count(file); t++) {
            const gguf_tensor *tensor = gguf_tensor_at(file, t);
            size_t file_offset = (size_t)((const uint8_t *)tensor->data - image.bytes);
            CHECK_MESSAGE(tensor->offset % alignments[i] == 0 && file_offset % alignments[i] == 0,
                          "tensor %s, alignment %" PRIu32, tensor->name, alignments[i]);
        }
        gguf_close(file);
        free(image.bytes);
    }
}

static void version_2_and_3_headers_read_back(void)
{
    for (uint32_t version = 2; version <= 3; version++) {
        test_image image = build_sample_image(version, 0);
        gguf_file *file = open_image(&image);
        CHECK_MESSAGE(file != NULL && gguf_version(file) == version, "version %" PRIu32, version);
        CHECK(file != NULL && gguf_tensor_count(file) == 4 && gguf_file_size(file) == image.size);
        gguf_close(file);
        free(image.bytes);
    }
}

static void header_alone_is_a_valid_empty_file(void)
{
    gguf_writer *writer = NULL;
    strata_error err;
    CHECK(gguf_writer_create(&writer, &err) == STRATA_OK);
    test_image image = {0};
    CHECK(gguf_writer_write_memory(writer, &image.bytes, &image.size, &err) == STRATA_OK);
    gguf_writer_destroy(writer);
    /* The writer pads the (empty) tensor info section to the alignment; the
     * reader also takes the bare 24-byte header. */
    CHECK(image.size == 32);
    for (size_t size = 24; size <= image.size; size += image.size - 24) {
        test_image cut = copy_image(image.bytes, size);
        gguf_file *file = open_image(&cut);
        CHECK(file != NULL && gguf_metadata_count(file) == 0 && gguf_tensor_count(file) == 0);
        gguf_close(file);
        free(cut.bytes);
    }
    free(image.bytes);
}

/* ---- typed getters ---- */

static void get_uint_accepts_every_integer_type_that_is_not_negative(void)
{
    const gguf_file *file = sample_file;
    strata_error err;
    uint64_t value = 0;
    bool found = false;
    CHECK(gguf_get_uint(file, "test.u8", &value, &found, &err) == STRATA_OK && found &&
          value == 200);
    CHECK(gguf_get_uint(file, "test.u64", &value, &found, &err) == STRATA_OK &&
          value == UINT64_MAX - 5);
    CHECK(gguf_get_uint(file, "test.i8", &value, &found, &err) == STRATA_E_FORMAT);
    CHECK(strstr(err.message, "test.i8") != NULL && strstr(err.message, "-100") != NULL);
    CHECK(gguf_get_uint(file, "test.f32", &value, &found, &err) == STRATA_E_FORMAT);
    CHECK(strstr(err.message, "f32") != NULL);
    CHECK(gguf_get_uint(file, "test.bool", &value, &found, &err) == STRATA_E_FORMAT);
    CHECK(gguf_get_uint(file, "test.absent", &value, &found, &err) == STRATA_OK && !found);
    CHECK(gguf_get_uint(file, "test.absent", &value, NULL, &err) == STRATA_E_FORMAT);
    CHECK(strstr(err.message, "test.absent") != NULL);
    /* A positive signed value is accepted: writers use i32 for counts. */
    CHECK(gguf_get_uint(file, "test.positive_i32", &value, &found, &err) == STRATA_OK && found &&
          value == 18);
}

static void get_float_get_bool_and_get_string_check_the_type(void)
{
    const gguf_file *file = sample_file;
    strata_error err;
    bool found = false, flag = false;
    double number = 0;
    gguf_string text = {0};
    CHECK(gguf_get_float(file, "test.f32", &number, &found, &err) == STRATA_OK && number == 1.5);
    CHECK(gguf_get_float(file, "test.f64", &number, &found, &err) == STRATA_OK && number == -2.25);
    CHECK(gguf_get_float(file, "test.i32", &number, &found, &err) == STRATA_OK &&
          number == -2000000000.0);
    CHECK(gguf_get_float(file, "test.u16", &number, &found, &err) == STRATA_OK &&
          number == 60000.0);
    CHECK(gguf_get_float(file, "test.string", &number, &found, &err) == STRATA_E_FORMAT);
    CHECK(gguf_get_bool(file, "test.bool", &flag, &found, &err) == STRATA_OK && flag);
    CHECK(gguf_get_bool(file, "test.bool_false", &flag, &found, &err) == STRATA_OK && !flag);
    CHECK(gguf_get_bool(file, "test.u8", &flag, &found, &err) == STRATA_E_FORMAT);
    CHECK(gguf_get_string(file, "test.string", &text, &found, &err) == STRATA_OK &&
          string_equals(text, "hello gguf"));
    CHECK(gguf_get_string(file, "test.strings", &text, &found, &err) == STRATA_E_FORMAT);
    CHECK(strstr(err.message, "test.strings") != NULL && strstr(err.message, "array") != NULL);
    CHECK(gguf_get_string(file, "nothing", &text, &found, &err) == STRATA_OK && !found);
}

/* ---- the writer refuses what the reader would refuse ---- */

typedef struct bad_tensor {
    const char *behaviour;
    const char *name;
    uint32_t n_dims;
    uint64_t ne[4];
    tensor_type type;
    uint64_t bytes;
} bad_tensor;

static void writer_refuses_tensors_the_reader_would_refuse(void)
{
    static const bad_tensor cases[] = {
        {"duplicate name", "tensor.a", 1, {8}, TENSOR_F32, 32},
        {"empty name", "", 1, {8}, TENSOR_F32, 32},
        {"no dimensions", "x", 0, {8}, TENSOR_F32, 32},
        {"five dimensions", "x", 5, {8, 1, 1, 1}, TENSOR_F32, 32},
        {"zero dimension", "x", 2, {8, 0}, TENSOR_F32, 0},
        {"row not a multiple of the block", "x", 1, {48}, TENSOR_Q8_0, 51},
        {"unknown type", "x", 1, {8}, (tensor_type)4, 32},
        {"wrong byte count", "x", 1, {8}, TENSOR_F32, 31},
        {"size overflows", "x", 2, {1u << 20, UINT64_MAX / 2}, TENSOR_F32, 0},
    };
    gguf_writer *writer = NULL;
    strata_error err;
    CHECK(gguf_writer_create(&writer, &err) == STRATA_OK);
    const uint64_t ne[] = {8};
    CHECK(gguf_writer_add_tensor(writer, "tensor.a", 1, ne, TENSOR_F32, NULL, 32, &err) ==
          STRATA_OK);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const bad_tensor *bad = &cases[i];
        err.message[0] = '\0';
        strata_status status = gguf_writer_add_tensor(writer, bad->name, bad->n_dims, bad->ne,
                                                      bad->type, NULL, bad->bytes, &err);
        CHECK_MESSAGE(status == STRATA_E_INVALID_ARGUMENT && err.message[0] != '\0', "%s",
                      bad->behaviour);
    }
    CHECK(gguf_writer_set_version(writer, 1, &err) == STRATA_E_INVALID_ARGUMENT);
    CHECK(gguf_writer_set_array(writer, "k", GGUF_TYPE_STRING, NULL, 0, &err) ==
          STRATA_E_INVALID_ARGUMENT);
    CHECK(gguf_writer_set_u8(writer, "", 1, &err) == STRATA_E_INVALID_ARGUMENT);
    gguf_writer_destroy(writer);
}

/* ---- malformed images ---- */

/* One field of the valid sample (alignment key 32) overwritten: the anchor is
 * a key or tensor name, and offset counts from the end of its text (or from
 * the start of the file when anchor is NULL). */
typedef struct image_patch {
    const char *behaviour;
    const char *anchor;
    int64_t offset;
    unsigned width;
    uint64_t value;
    const char *message_part; /* the error message must name this */
} image_patch;

static const image_patch malformed_images[] = {
    {"bad_magic_is_refused", NULL, 0, 4, 0x58554747, "GGUF"},
    {"version_0_is_refused", NULL, 4, 4, 0, "version 0"},
    {"version_1_is_refused", NULL, 4, 4, 1, "version 1"},
    {"version_4_is_refused", NULL, 4, 4, 4, "version 4"},
    {"huge_tensor_count_is_refused", NULL, 8, 8, UINT64_MAX, "tensor count"},
    {"tensor_count_beyond_the_file_is_refused", NULL, 8, 8, 1u << 20, "tensor count"},
    {"huge_kv_count_is_refused", NULL, 16, 8, UINT64_MAX, "key/value count"},
    {"kv_count_beyond_the_file_is_refused", NULL, 16, 8, (uint64_t)1 << 59, "key/value count"},
    {"kv_count_too_small_leaves_garbage_tensor_infos", NULL, 16, 8, 3, "sample.gguf"},
    {"huge_key_length_is_refused", NULL, 24, 8, UINT64_MAX, "key"},
    {"key_with_a_nul_byte_is_refused", "test.i8", -1, 1, 0, "NUL"},
    {"duplicate_key_is_refused", "test.i8", -2, 1, 'u', "test.u8"},
    {"unknown_value_type_is_refused", "test.u32", 0, 4, 13, "test.u32"},
    {"value_type_ffffffff_is_refused", "test.u32", 0, 4, 0xFFFFFFFFu, "4294967295"},
    {"huge_string_length_is_refused", "test.string", 4, 8, (uint64_t)1 << 62, "test.string"},
    {"string_length_past_the_end_is_refused", "test.string", 4, 8, 100000, "test.string"},
    {"bool_2_is_refused", "test.bool", 4, 1, 2, "test.bool"},
    {"bool_255_in_an_array_is_refused", "test.array_bool", 17, 1, 255, "test.array_bool"},
    {"huge_array_count_is_refused", "test.array_u32", 8, 8, UINT64_MAX / 2, "test.array_u32"},
    {"array_count_past_the_end_is_refused", "test.array_u32", 8, 8, 100000, "test.array_u32"},
    {"unknown_array_element_type_is_refused", "test.array_u32", 4, 4, 13, "test.array_u32"},
    {"array_of_arrays_is_refused", "test.array_u32", 4, 4, GGUF_TYPE_ARRAY, "arrays of arrays"},
    {"huge_string_array_count_is_refused", "test.strings", 8, 8, (uint64_t)1 << 61, "test.strings"},
    {"huge_string_in_an_array_is_refused", "test.strings", 16, 8, UINT64_MAX, "test.strings"},
    {"alignment_0_is_refused", "general.alignment", 4, 4, 0, "general.alignment"},
    {"alignment_3_is_refused", "general.alignment", 4, 4, 3, "power of two"},
    {"alignment_of_type_i32_is_refused", "general.alignment", 0, 4, GGUF_TYPE_INT32, "u32"},
    {"alignment_of_type_f32_is_refused", "general.alignment", 0, 4, GGUF_TYPE_FLOAT32, "u32"},
    {"empty_tensor_name_is_refused", "tensor.a", -16, 8, 0, "empty"},
    {"tensor_name_of_300_bytes_is_refused", "tensor.a", -16, 8, 300, "300"},
    {"duplicate_tensor_name_is_refused", "tensor.b", -1, 1, 'a', "tensor.a"},
    {"n_dims_0_is_refused", "tensor.a", 0, 4, 0, "tensor.a"},
    {"n_dims_5_is_refused", "tensor.a", 0, 4, 5, "dimension count 5"},
    {"first_dimension_0_is_refused", "tensor.a", 4, 8, 0, "dimension 0"},
    {"second_dimension_0_is_refused", "tensor.a", 12, 8, 0, "dimension 1"},
    {"row_not_a_multiple_of_the_block_is_refused", "tensor.b", 4, 8, 48, "Q8_0"},
    {"element_count_overflow_is_refused", "tensor.a", 12, 8, UINT64_MAX, "overflows"},
    {"element_count_of_2_to_64_is_refused", "tensor.a", 12, 8, (uint64_t)1 << 61, "overflows"},
    {"byte_count_overflow_is_refused", "tensor.a", 12, 8, (uint64_t)1 << 60, "2^64"},
    {"retired_tensor_type_4_is_refused", "tensor.b", 20, 4, 4, "tensor.b"},
    {"tensor_type_40_is_refused", "tensor.b", 20, 4, 40, "type 40"},
    {"tensor_type_ffffffff_is_refused", "tensor.b", 20, 4, 0xFFFFFFFFu, "tensor.b"},
    {"unaligned_offset_is_refused", "tensor.a", 24, 8, 1, "alignment"},
    {"offset_past_the_end_is_refused", "tensor.b", 24, 8, (uint64_t)1 << 40, "tensor.b"},
    {"offset_plus_size_overflowing_is_refused", "tensor.b", 24, 8, UINT64_MAX - 31, "tensor.b"},
    {"last_tensor_ending_past_the_file_is_refused", "tensor.d", 16, 8, 4096, "tensor.d"},
};

static void write_little_endian(uint8_t *bytes, uint64_t value, unsigned width)
{
    for (unsigned i = 0; i < width; i++)
        bytes[i] = (uint8_t)(value >> (8 * i));
}

/* Expects a format error naming part (and the file) and no file. */
static void check_refused(const test_image *image, const char *behaviour, const char *part)
{
    gguf_file *file = NULL;
    strata_error err = {0};
    strata_status status = gguf_open_memory(image->bytes, image->size, "sample.gguf", &file, &err);
    CHECK_MESSAGE(status == STRATA_E_FORMAT, "%s: status %s", behaviour,
                  strata_status_name(status));
    CHECK_MESSAGE(file == NULL, "%s: *out is not NULL", behaviour);
    CHECK_MESSAGE(err.message[0] != '\0', "%s: empty message", behaviour);
    CHECK_MESSAGE(strstr(err.message, "sample.gguf") != NULL,
                  "%s: message '%s' does not name the file", behaviour, err.message);
    if (part != NULL)
        CHECK_MESSAGE(strstr(err.message, part) != NULL, "%s: message '%s' does not name '%s'",
                      behaviour, err.message, part);
    if (status == STRATA_OK)
        gguf_close(file);
}

static void malformed_images_are_refused_with_a_sentence(void)
{
    test_image valid = build_sample_image(3, 32);
    for (size_t i = 0; i < sizeof malformed_images / sizeof malformed_images[0]; i++) {
        const image_patch *patch = &malformed_images[i];
        test_image image = copy_image(valid.bytes, valid.size);
        int64_t position = patch->offset;
        if (patch->anchor != NULL) {
            size_t text = find_gguf_string(&image, patch->anchor);
            CHECK_MESSAGE(text != 0, "%s: anchor '%s' not found", patch->behaviour, patch->anchor);
            position += (int64_t)(text + strlen(patch->anchor));
        }
        CHECK_MESSAGE(position >= 0 && (uint64_t)position + patch->width <= image.size,
                      "%s: patch outside the image", patch->behaviour);
        if (position >= 0 && (uint64_t)position + patch->width <= image.size) {
            write_little_endian(image.bytes + position, patch->value, patch->width);
            check_refused(&image, patch->behaviour, patch->message_part);
        }
        free(image.bytes);
    }
    free(valid.bytes);
}

/* Where the last tensor's data ends: every shorter image must be refused. */
static size_t end_of_tensor_data(const test_image *image)
{
    gguf_file *file = open_image(image);
    size_t end = 0;
    for (uint64_t i = 0; file != NULL && i < gguf_tensor_count(file); i++) {
        const gguf_tensor *tensor = gguf_tensor_at(file, i);
        size_t tensor_end = (size_t)((const uint8_t *)tensor->data - image->bytes) + tensor->bytes;
        if (tensor_end > end)
            end = tensor_end;
    }
    gguf_close(file);
    return end;
}

/* Where the data section starts (tensor.a sits at its offset 0). */
static size_t data_section_start(const test_image *image)
{
    gguf_file *file = open_image(image);
    const gguf_tensor *first = file != NULL ? gguf_tensor_find(file, "tensor.a") : NULL;
    size_t start = first != NULL ? (size_t)((const uint8_t *)first->data - image->bytes) : 24;
    gguf_close(file);
    return start;
}

static void every_truncation_is_refused(void)
{
    test_image valid = build_sample_image(3, 32);
    size_t end = end_of_tensor_data(&valid);
    CHECK(end > 0 && end <= valid.size);
    int refused = 0;
    for (size_t length = 0; length < end; length++) {
        test_image cut = copy_image(valid.bytes, length);
        gguf_file *file = NULL;
        strata_error err = {0};
        strata_status status = gguf_open_memory(cut.bytes, cut.size, "cut.gguf", &file, &err);
        if (status == STRATA_E_FORMAT && file == NULL && err.message[0] != '\0')
            refused++;
        else
            CHECK_MESSAGE(false, "cut at %zu of %zu bytes: status %s", length, valid.size,
                          strata_status_name(status));
        gguf_close(file);
        free(cut.bytes);
    }
    CHECK(refused == (int)end);
    free(valid.bytes);
}

/* ---- random byte flips ---- */

static uint64_t random_next(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15u); /* splitmix64 */
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
    return z ^ (z >> 31);
}

/* Reads every byte the reader handed out, so ASan sees any pointer outside the image. */
static unsigned touch_everything(const gguf_file *file)
{
    unsigned sum = 0;
    strata_error err;
    for (uint64_t i = 0; i < gguf_metadata_count(file); i++) {
        const char *key = gguf_metadata_key(file, i);
        const gguf_value *value = gguf_metadata_value(file, i);
        uint64_t integer;
        double number;
        bool found;
        gguf_get_uint(file, key, &integer, &found, &err);
        gguf_get_float(file, key, &number, &found, &err);
        sum += (unsigned)strlen(key);
        if (value->type == GGUF_TYPE_STRING && value->as.string.length > 0)
            sum += (unsigned char)value->as.string.data[value->as.string.length - 1];
        if (value->type != GGUF_TYPE_ARRAY)
            continue;
        if (value->as.array.element_type == GGUF_TYPE_STRING) {
            for (uint64_t s = 0; s < value->as.array.count; s++) {
                gguf_string string = value->as.array.strings[s];
                if (string.length > 0)
                    sum += (unsigned char)string.data[0] +
                           (unsigned char)string.data[string.length - 1];
            }
        } else if (value->as.array.count > 0) {
            const uint8_t *elements = value->as.array.data;
            sum += elements[0];
        }
    }
    for (uint64_t i = 0; i < gguf_tensor_count(file); i++) {
        const gguf_tensor *tensor = gguf_tensor_at(file, i);
        const uint8_t *data = tensor->data;
        sum += data[0] + data[tensor->bytes - 1];
        sum += gguf_tensor_find(file, tensor->name) == tensor;
    }
    return sum;
}

static void random_byte_flips_never_crash(void)
{
    uint64_t seed = 20240611;
    const char *replay = getenv("STRATA_TEST_SEED");
    if (replay != NULL)
        seed = strtoull(replay, NULL, 10);
    fprintf(stderr,
            "random_byte_flips_never_crash: seed %" PRIu64 " (replay: STRATA_TEST_SEED=%" PRIu64
            ")\n",
            seed, seed);
    uint64_t state = seed;
    test_image valid = build_sample_image(3, 32);
    size_t metadata_end = data_section_start(&valid);
    int opened = 0, refused = 0;
    volatile unsigned sink = 0;
    for (int round = 0; round < 2000; round++) {
        test_image image = copy_image(valid.bytes, valid.size);
        int flips = 1 + (int)(random_next(&state) % 4);
        for (int f = 0; f < flips; f++) {
            /* Three flips in four hit the header, metadata or tensor infos, where parsing happens.
             */
            size_t span = random_next(&state) % 4 != 0 ? metadata_end : image.size;
            size_t position = (size_t)(random_next(&state) % span);
            image.bytes[position] = (uint8_t)random_next(&state);
        }
        if (random_next(&state) % 8 == 0)
            image.size = (size_t)(random_next(&state) % image.size);
        test_image exact = copy_image(image.bytes, image.size);
        gguf_file *file = NULL;
        strata_error err = {0};
        strata_status status = gguf_open_memory(exact.bytes, exact.size, "fuzz.gguf", &file, &err);
        if (status == STRATA_OK) {
            opened++;
            sink += touch_everything(file);
        } else {
            refused++;
            CHECK_MESSAGE((status == STRATA_E_FORMAT || status == STRATA_E_OUT_OF_MEMORY) &&
                              err.message[0] != '\0' && file == NULL,
                          "round %d: status %s, message '%s'", round, strata_status_name(status),
                          err.message);
        }
        gguf_close(file);
        free(exact.bytes);
        free(image.bytes);
    }
    fprintf(stderr, "random_byte_flips_never_crash: %d opened, %d refused\n", opened, refused);
    (void)sink;
    free(valid.bytes);
}

/* ---- files on disk ---- */

static void written_file_opens_with_gguf_open(void)
{
    char path[] = "/tmp/strata-test-gguf-XXXXXX";
    int descriptor = mkstemp(path);
    CHECK(descriptor >= 0);
    if (descriptor < 0)
        return;
    close(descriptor);
    gguf_writer *writer = NULL;
    strata_error err;
    CHECK(gguf_writer_create(&writer, &err) == STRATA_OK);
    fill_sample_writer(writer);
    CHECK_MESSAGE(gguf_writer_write_file(writer, path, &err) == STRATA_OK, "%s", err.message);
    gguf_writer_destroy(writer);
    gguf_file *file = NULL;
    CHECK_MESSAGE(gguf_open(path, &file, &err) == STRATA_OK, "%s", err.message);
    if (file != NULL) {
        CHECK(gguf_tensor_count(file) == 4 && gguf_metadata_count(file) == 23);
        const gguf_tensor *a = gguf_tensor_find(file, "tensor.a");
        float expected[SAMPLE_F32_VALUES];
        sample_f32_tensor(expected);
        CHECK(a != NULL && memcmp(a->data, expected, sizeof expected) == 0);
    }
    gguf_close(file);
    unlink(path);
}

static void unreadable_and_empty_files_are_refused(void)
{
    gguf_file *file = NULL;
    strata_error err = {0};
    CHECK(gguf_open("/nonexistent/strata/model.gguf", &file, &err) == STRATA_E_IO);
    CHECK(file == NULL && strstr(err.message, "/nonexistent/strata/model.gguf") != NULL);
    CHECK(gguf_open("/tmp", &file, &err) == STRATA_E_IO && file == NULL);
    CHECK(err.message[0] != '\0');

    char path[] = "/tmp/strata-test-gguf-XXXXXX";
    int descriptor = mkstemp(path);
    CHECK(descriptor >= 0);
    if (descriptor < 0)
        return;
    CHECK(write(descriptor, "GGUF\3\0\0", 7) == 7);
    close(descriptor);
    CHECK(gguf_open(path, &file, &err) == STRATA_E_FORMAT && file == NULL);
    CHECK(strstr(err.message, "7 bytes") != NULL);
    unlink(path);
}

static void default_model_reads_as_gemma3(void)
{
    char path[4096];
    const char *cache = getenv("STRATA_CACHE");
    if (cache != NULL)
        snprintf(path, sizeof path, "%s/models/gemma-3-270m-q4_k_m.gguf", cache);
    else
        snprintf(path, sizeof path, "%s/.cache/strata/models/gemma-3-270m-q4_k_m.gguf",
                 getenv("HOME") ? getenv("HOME") : ".");
    if (access(path, R_OK) != 0) {
        CHECK_MESSAGE(false, "the default model %s is missing: run scripts/fetch-model.sh", path);
        return;
    }
    gguf_file *file = NULL;
    strata_error err;
    CHECK_MESSAGE(gguf_open(path, &file, &err) == STRATA_OK, "%s", err.message);
    if (file == NULL)
        return;
    gguf_string architecture = {0};
    bool found = false;
    CHECK(gguf_get_string(file, "general.architecture", &architecture, &found, &err) == STRATA_OK);
    CHECK(found && string_equals(architecture, "gemma3"));
    uint64_t blocks = 0;
    CHECK(gguf_get_uint(file, "gemma3.block_count", &blocks, &found, &err) == STRATA_OK);
    CHECK(found && blocks == 18);
    CHECK(gguf_tensor_count(file) == 236);
    const gguf_tensor *embedding = gguf_tensor_find(file, "token_embd.weight");
    CHECK(embedding != NULL);
    if (embedding != NULL) {
        CHECK(embedding->type == TENSOR_Q8_0 && embedding->n_dims == 2);
        CHECK(embedding->ne[0] == 640 && embedding->ne[1] == 262144);
        CHECK(embedding->bytes == 640 / 32 * 34 * (uint64_t)262144);
    }
    const gguf_value *tokens = gguf_find(file, "tokenizer.ggml.tokens");
    CHECK(tokens != NULL && tokens->type == GGUF_TYPE_ARRAY &&
          tokens->as.array.element_type == GGUF_TYPE_STRING && tokens->as.array.count == 262144 &&
          tokens->as.array.strings != NULL);
    gguf_close(file);
}

int main(void)
{
    sample_image = build_sample_image(3, 0);
    gguf_file *sample = open_image(&sample_image);
    sample_file = sample;
    if (sample_file != NULL) {
        RUN_CASE(every_scalar_type_reads_back_with_its_value);
        RUN_CASE(strings_and_string_arrays_read_back);
        RUN_CASE(numeric_arrays_keep_packed_little_endian_elements);
        RUN_CASE(tensors_read_back_with_shape_type_offset_and_data);
        RUN_CASE(get_uint_accepts_every_integer_type_that_is_not_negative);
        RUN_CASE(get_float_get_bool_and_get_string_check_the_type);
    }
    gguf_close(sample);
    free(sample_image.bytes);
    RUN_CASE(metadata_keeps_the_order_keys_were_first_set);
    RUN_CASE(custom_alignments_place_every_tensor_on_their_boundary);
    RUN_CASE(version_2_and_3_headers_read_back);
    RUN_CASE(header_alone_is_a_valid_empty_file);
    RUN_CASE(writer_refuses_tensors_the_reader_would_refuse);
    RUN_CASE(malformed_images_are_refused_with_a_sentence);
    RUN_CASE(every_truncation_is_refused);
    RUN_CASE(random_byte_flips_never_crash);
    RUN_CASE(written_file_opens_with_gguf_open);
    RUN_CASE(unreadable_and_empty_files_are_refused);
    RUN_CASE(default_model_reads_as_gemma3);
    TEST_EXIT();
}
