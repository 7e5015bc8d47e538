/* format/gguf_writer.c: the GGUF writer.
 *
 * Every value is encoded to its little-endian GGUF bytes when it is set, so
 * a pair is just (key, type, encoded value) and writing the file is plain
 * concatenation. Tensors keep a copy of their bytes; their offsets are
 * decided only when the file is laid out, once the alignment is known. The
 * whole image is built in one growing buffer, which write_file then writes
 * in one go: this writer serves tests and small tools, not multi-gigabyte
 * conversions. */
#include "format/gguf_writer.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"

enum {
    WRITER_DEFAULT_ALIGNMENT = 32,
    WRITER_MAX_DIMS = 4,
    WRITER_TENSOR_NAME_BYTES = 256, /* names must be shorter: the reader's limit */
};

/* A growing run of bytes. */
typedef struct byte_buffer {
    uint8_t *bytes;
    size_t length;
    size_t capacity;
} byte_buffer;

typedef struct writer_pair {
    char *key;
    gguf_value_type type;
    byte_buffer value; /* the encoded value, without key and type */
} writer_pair;

typedef struct writer_tensor {
    char *name;
    uint32_t n_dims;
    uint64_t ne[WRITER_MAX_DIMS];
    tensor_type type;
    uint8_t *data; /* bytes long; owned */
    uint64_t bytes;
} writer_tensor;

struct gguf_writer {
    uint32_t version;
    writer_pair *pairs;
    size_t pair_count;
    size_t pair_capacity;
    writer_tensor *tensors;
    size_t tensor_count;
    size_t tensor_capacity;
};

/* Makes room for one more item in a growing array of item_bytes-sized items. */
static bool grow_for_one_more(void **items, size_t count, size_t *capacity, size_t item_bytes)
{
    if (count < *capacity)
        return true;
    size_t wanted = *capacity ? *capacity * 2 : 8;
    if (wanted > SIZE_MAX / item_bytes)
        return false;
    void *grown = realloc(*items, wanted * item_bytes);
    if (grown == NULL)
        return false;
    *items = grown;
    *capacity = wanted;
    return true;
}

static bool buffer_append(byte_buffer *buffer, const void *bytes, size_t length)
{
    if (length > SIZE_MAX - buffer->length)
        return false;
    size_t needed = buffer->length + length;
    if (needed > buffer->capacity) {
        size_t capacity = buffer->capacity ? buffer->capacity : 64;
        while (capacity < needed)
            capacity = capacity > SIZE_MAX / 2 ? needed : capacity * 2;
        uint8_t *grown = realloc(buffer->bytes, capacity);
        if (grown == NULL)
            return false;
        buffer->bytes = grown;
        buffer->capacity = capacity;
    }
    if (length > 0) {
        if (bytes != NULL)
            memcpy(buffer->bytes + buffer->length, bytes, length);
        else
            memset(buffer->bytes + buffer->length, 0, length);
    }
    buffer->length = needed;
    return true;
}

static bool buffer_append_integer(byte_buffer *buffer, uint64_t value, unsigned width)
{
    uint8_t bytes[8];
    for (unsigned i = 0; i < sizeof bytes; i++)
        bytes[i] = (uint8_t)(value >> (8 * i));
    return width <= sizeof bytes && buffer_append(buffer, bytes, width);
}

static bool buffer_append_string(byte_buffer *buffer, const char *text)
{
    size_t length = strlen(text);
    return buffer_append_integer(buffer, length, 8) && buffer_append(buffer, text, length);
}

/* Appends zeros up to the next multiple of alignment. */
static bool buffer_pad(byte_buffer *buffer, uint32_t alignment)
{
    size_t padding = (alignment - buffer->length % alignment) % alignment;
    return buffer_append(buffer, NULL, padding);
}

static char *copy_string(const char *text)
{
    size_t length = strlen(text);
    char *copy = malloc(length + 1);
    if (copy != NULL)
        memcpy(copy, text, length + 1);
    return copy;
}

static strata_status out_of_memory(strata_error *err, const char *what, const char *name)
{
    return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "gguf writer: cannot allocate %s for '%s'",
                       what, name);
}

/* The bytes of one encoded scalar of type, or 0 for strings, arrays and unknown types. */
static unsigned scalar_bytes(gguf_value_type type)
{
    switch (type) {
    case GGUF_TYPE_UINT8:
    case GGUF_TYPE_INT8:
    case GGUF_TYPE_BOOL:
        return 1;
    case GGUF_TYPE_UINT16:
    case GGUF_TYPE_INT16:
        return 2;
    case GGUF_TYPE_UINT32:
    case GGUF_TYPE_INT32:
    case GGUF_TYPE_FLOAT32:
        return 4;
    case GGUF_TYPE_UINT64:
    case GGUF_TYPE_INT64:
    case GGUF_TYPE_FLOAT64:
        return 8;
    case GGUF_TYPE_STRING:
    case GGUF_TYPE_ARRAY:
        break;
    }
    return 0;
}

strata_status gguf_writer_create(gguf_writer **out, strata_error *err)
{
    *out = calloc(1, sizeof **out);
    if (*out == NULL)
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "gguf writer: cannot allocate a writer");
    (*out)->version = 3;
    return STRATA_OK;
}

void gguf_writer_destroy(gguf_writer *writer)
{
    if (writer == NULL)
        return;
    for (size_t i = 0; i < writer->pair_count; i++) {
        free(writer->pairs[i].key);
        free(writer->pairs[i].value.bytes);
    }
    for (size_t i = 0; i < writer->tensor_count; i++) {
        free(writer->tensors[i].name);
        free(writer->tensors[i].data);
    }
    free(writer->pairs);
    free(writer->tensors);
    free(writer);
}

strata_status gguf_writer_set_version(gguf_writer *writer, uint32_t version, strata_error *err)
{
    if (version != 2 && version != 3)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                           "gguf writer: version %" PRIu32 " cannot be written (only 2 and 3)",
                           version);
    writer->version = version;
    return STRATA_OK;
}

/* Stores an encoded value under key, replacing an earlier value of the key.
 * Takes ownership of value->bytes, also on failure. */
static strata_status writer_set_pair(gguf_writer *writer, const char *key, gguf_value_type type,
                                     byte_buffer *value, strata_error *err)
{
    if (key == NULL || key[0] == '\0') {
        free(value->bytes);
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT, "gguf writer: a key is empty");
    }
    for (size_t i = 0; i < writer->pair_count; i++) {
        writer_pair *pair = &writer->pairs[i];
        if (strcmp(pair->key, key) == 0) {
            free(pair->value.bytes);
            pair->type = type;
            pair->value = *value;
            return STRATA_OK;
        }
    }
    char *key_copy = copy_string(key);
    if (key_copy == NULL || !grow_for_one_more((void **)&writer->pairs, writer->pair_count,
                                               &writer->pair_capacity, sizeof *writer->pairs)) {
        free(key_copy);
        free(value->bytes);
        return out_of_memory(err, "a metadata pair", key);
    }
    writer->pairs[writer->pair_count++] = (writer_pair){key_copy, type, *value};
    return STRATA_OK;
}

/* Encodes the low bytes of bits as a scalar of type and stores it under key. */
static strata_status writer_set_scalar(gguf_writer *writer, const char *key, gguf_value_type type,
                                       uint64_t bits, strata_error *err)
{
    byte_buffer value = {0};
    if (!buffer_append_integer(&value, bits, scalar_bytes(type))) {
        free(value.bytes);
        return out_of_memory(err, "a value", key);
    }
    return writer_set_pair(writer, key, type, &value, err);
}

strata_status gguf_writer_set_u8(gguf_writer *writer, const char *key, uint8_t value,
                                 strata_error *err)
{
    return writer_set_scalar(writer, key, GGUF_TYPE_UINT8, value, err);
}

strata_status gguf_writer_set_i8(gguf_writer *writer, const char *key, int8_t value,
                                 strata_error *err)
{
    return writer_set_scalar(writer, key, GGUF_TYPE_INT8, (uint64_t)(int64_t)value, err);
}

strata_status gguf_writer_set_u16(gguf_writer *writer, const char *key, uint16_t value,
                                  strata_error *err)
{
    return writer_set_scalar(writer, key, GGUF_TYPE_UINT16, value, err);
}

strata_status gguf_writer_set_i16(gguf_writer *writer, const char *key, int16_t value,
                                  strata_error *err)
{
    return writer_set_scalar(writer, key, GGUF_TYPE_INT16, (uint64_t)(int64_t)value, err);
}

strata_status gguf_writer_set_u32(gguf_writer *writer, const char *key, uint32_t value,
                                  strata_error *err)
{
    return writer_set_scalar(writer, key, GGUF_TYPE_UINT32, value, err);
}

strata_status gguf_writer_set_i32(gguf_writer *writer, const char *key, int32_t value,
                                  strata_error *err)
{
    return writer_set_scalar(writer, key, GGUF_TYPE_INT32, (uint64_t)(int64_t)value, err);
}

strata_status gguf_writer_set_u64(gguf_writer *writer, const char *key, uint64_t value,
                                  strata_error *err)
{
    return writer_set_scalar(writer, key, GGUF_TYPE_UINT64, value, err);
}

strata_status gguf_writer_set_i64(gguf_writer *writer, const char *key, int64_t value,
                                  strata_error *err)
{
    return writer_set_scalar(writer, key, GGUF_TYPE_INT64, (uint64_t)value, err);
}

strata_status gguf_writer_set_f32(gguf_writer *writer, const char *key, float value,
                                  strata_error *err)
{
    uint32_t bits;
    memcpy(&bits, &value, sizeof bits);
    return writer_set_scalar(writer, key, GGUF_TYPE_FLOAT32, bits, err);
}

strata_status gguf_writer_set_f64(gguf_writer *writer, const char *key, double value,
                                  strata_error *err)
{
    uint64_t bits;
    memcpy(&bits, &value, sizeof bits);
    return writer_set_scalar(writer, key, GGUF_TYPE_FLOAT64, bits, err);
}

strata_status gguf_writer_set_bool(gguf_writer *writer, const char *key, bool value,
                                   strata_error *err)
{
    return writer_set_scalar(writer, key, GGUF_TYPE_BOOL, value ? 1 : 0, err);
}

strata_status gguf_writer_set_string(gguf_writer *writer, const char *key, const char *value,
                                     strata_error *err)
{
    byte_buffer encoded = {0};
    if (!buffer_append_string(&encoded, value)) {
        free(encoded.bytes);
        return out_of_memory(err, "a string value", key);
    }
    return writer_set_pair(writer, key, GGUF_TYPE_STRING, &encoded, err);
}

/* Reads element index of a host array of type as the bits its encoding holds. */
static uint64_t host_element_bits(const void *elements, gguf_value_type type, uint64_t index)
{
    if (type == GGUF_TYPE_BOOL)
        return ((const bool *)elements)[index] ? 1 : 0;
    const uint8_t *element = (const uint8_t *)elements + index * scalar_bytes(type);
    switch (scalar_bytes(type)) {
    case 1:
        return *element;
    case 2: {
        uint16_t value;
        memcpy(&value, element, sizeof value);
        return value;
    }
    case 4: {
        uint32_t value;
        memcpy(&value, element, sizeof value);
        return value;
    }
    default: {
        uint64_t value;
        memcpy(&value, element, sizeof value);
        return value;
    }
    }
}

strata_status gguf_writer_set_array(gguf_writer *writer, const char *key,
                                    gguf_value_type element_type, const void *elements,
                                    uint64_t count, strata_error *err)
{
    unsigned width = scalar_bytes(element_type);
    if (width == 0)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                           "gguf writer: key '%s': element type %s cannot be set with "
                           "gguf_writer_set_array (scalars only)",
                           key, gguf_value_type_name(element_type));
    if (elements == NULL && count != 0)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                           "gguf writer: key '%s': %" PRIu64 " elements at NULL", key, count);
    byte_buffer encoded = {0};
    bool appended = buffer_append_integer(&encoded, (uint64_t)element_type, 4) &&
                    buffer_append_integer(&encoded, count, 8);
    for (uint64_t i = 0; appended && i < count; i++)
        appended =
            buffer_append_integer(&encoded, host_element_bits(elements, element_type, i), width);
    if (!appended) {
        free(encoded.bytes);
        return out_of_memory(err, "an array", key);
    }
    return writer_set_pair(writer, key, GGUF_TYPE_ARRAY, &encoded, err);
}

strata_status gguf_writer_set_string_array(gguf_writer *writer, const char *key,
                                           const char *const *strings, uint64_t count,
                                           strata_error *err)
{
    byte_buffer encoded = {0};
    bool appended = buffer_append_integer(&encoded, GGUF_TYPE_STRING, 4) &&
                    buffer_append_integer(&encoded, count, 8);
    for (uint64_t i = 0; appended && i < count; i++)
        appended = buffer_append_string(&encoded, strings[i]);
    if (!appended) {
        free(encoded.bytes);
        return out_of_memory(err, "a string array", key);
    }
    return writer_set_pair(writer, key, GGUF_TYPE_ARRAY, &encoded, err);
}

/* Checks a tensor's name, shape and type as the reader will, and computes its bytes. */
static strata_status check_new_tensor(const gguf_writer *writer, const char *name, uint32_t n_dims,
                                      const uint64_t *ne, tensor_type type, uint64_t *bytes,
                                      strata_error *err)
{
    size_t name_length = strlen(name);
    if (name_length == 0 || name_length >= WRITER_TENSOR_NAME_BYTES)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                           "gguf writer: tensor name '%.40s' is %zu bytes; it must be 1 to %d",
                           name, name_length, WRITER_TENSOR_NAME_BYTES - 1);
    for (size_t i = 0; i < writer->tensor_count; i++)
        if (strcmp(writer->tensors[i].name, name) == 0)
            return strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                               "gguf writer: tensor '%s' is added twice", name);
    if (n_dims < 1 || n_dims > WRITER_MAX_DIMS)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                           "gguf writer: tensor '%s' has %" PRIu32 " dimensions, not 1 to %d", name,
                           n_dims, WRITER_MAX_DIMS);
    const tensor_type_info *info = tensor_type_lookup((uint32_t)type);
    if (info == NULL)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                           "gguf writer: tensor '%s' has unknown type %d", name, (int)type);
    if (ne[0] % info->block_elements != 0)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                           "gguf writer: tensor '%s': row length %" PRIu64
                           " is not a multiple of %s's block of %" PRIu32,
                           name, ne[0], info->name, info->block_elements);
    uint64_t total = tensor_row_bytes(type, ne[0]);
    for (uint32_t d = 0; d < n_dims; d++) {
        if (ne[d] == 0)
            return strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                               "gguf writer: tensor '%s': dimension %" PRIu32 " is 0", name, d);
        if (d > 0 && total > UINT64_MAX / ne[d])
            return strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                               "gguf writer: tensor '%s' is larger than 2^64 bytes", name);
        if (d > 0)
            total *= ne[d];
    }
    *bytes = total;
    return STRATA_OK;
}

strata_status gguf_writer_add_tensor(gguf_writer *writer, const char *name, uint32_t n_dims,
                                     const uint64_t *ne, tensor_type type, const void *data,
                                     uint64_t bytes, strata_error *err)
{
    uint64_t expected = 0;
    strata_status status = check_new_tensor(writer, name, n_dims, ne, type, &expected, err);
    if (status != STRATA_OK)
        return status;
    if (bytes != expected)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                           "gguf writer: tensor '%s' is given %" PRIu64
                           " bytes, but its shape and type take %" PRIu64,
                           name, bytes, expected);
    if (bytes > SIZE_MAX)
        return out_of_memory(err, "tensor data", name);
    writer_tensor tensor = {.n_dims = n_dims, .type = type, .bytes = bytes};
    for (uint32_t d = 0; d < WRITER_MAX_DIMS; d++)
        tensor.ne[d] = d < n_dims ? ne[d] : 1;
    tensor.name = copy_string(name);
    tensor.data = malloc(bytes ? (size_t)bytes : 1);
    if (tensor.name == NULL || tensor.data == NULL ||
        !grow_for_one_more((void **)&writer->tensors, writer->tensor_count,
                           &writer->tensor_capacity, sizeof *writer->tensors)) {
        free(tensor.name);
        free(tensor.data);
        return out_of_memory(err, "tensor data", name);
    }
    if (data != NULL)
        memcpy(tensor.data, data, (size_t)bytes);
    else
        memset(tensor.data, 0, (size_t)bytes);
    writer->tensors[writer->tensor_count++] = tensor;
    return STRATA_OK;
}

/* The alignment the layout uses: general.alignment if it is a u32 power of two, else 32. */
static uint32_t writer_alignment(const gguf_writer *writer)
{
    for (size_t i = 0; i < writer->pair_count; i++) {
        const writer_pair *pair = &writer->pairs[i];
        if (strcmp(pair->key, "general.alignment") != 0 || pair->type != GGUF_TYPE_UINT32)
            continue;
        uint32_t alignment = 0;
        for (unsigned b = 0; b < 4; b++)
            alignment |= (uint32_t)pair->value.bytes[b] << (8 * b);
        if (alignment != 0 && (alignment & (alignment - 1)) == 0)
            return alignment;
    }
    return WRITER_DEFAULT_ALIGNMENT;
}

static bool lay_out_metadata(const gguf_writer *writer, byte_buffer *image)
{
    bool appended = buffer_append(image, "GGUF", 4) &&
                    buffer_append_integer(image, writer->version, 4) &&
                    buffer_append_integer(image, writer->tensor_count, 8) &&
                    buffer_append_integer(image, writer->pair_count, 8);
    for (size_t i = 0; appended && i < writer->pair_count; i++) {
        const writer_pair *pair = &writer->pairs[i];
        appended = buffer_append_string(image, pair->key) &&
                   buffer_append_integer(image, (uint64_t)pair->type, 4) &&
                   buffer_append(image, pair->value.bytes, pair->value.length);
    }
    return appended;
}

static bool lay_out_tensors(const gguf_writer *writer, uint32_t alignment, byte_buffer *image)
{
    bool appended = true;
    uint64_t offset = 0;
    for (size_t i = 0; appended && i < writer->tensor_count; i++) {
        const writer_tensor *tensor = &writer->tensors[i];
        appended = buffer_append_string(image, tensor->name) &&
                   buffer_append_integer(image, tensor->n_dims, 4);
        for (uint32_t d = 0; appended && d < tensor->n_dims; d++)
            appended = buffer_append_integer(image, tensor->ne[d], 8);
        appended = appended && buffer_append_integer(image, (uint64_t)tensor->type, 4) &&
                   buffer_append_integer(image, offset, 8);
        offset += tensor->bytes + (alignment - tensor->bytes % alignment) % alignment;
    }
    appended = appended && buffer_pad(image, alignment);
    for (size_t i = 0; appended && i < writer->tensor_count; i++)
        appended = buffer_append(image, writer->tensors[i].data, writer->tensors[i].bytes) &&
                   buffer_pad(image, alignment);
    return appended;
}

strata_status gguf_writer_write_memory(const gguf_writer *writer, uint8_t **bytes, size_t *size,
                                       strata_error *err)
{
    byte_buffer image = {0};
    if (!lay_out_metadata(writer, &image) ||
        !lay_out_tensors(writer, writer_alignment(writer), &image)) {
        free(image.bytes);
        *bytes = NULL;
        *size = 0;
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY,
                           "gguf writer: cannot allocate the image (%zu bytes so far)",
                           image.length);
    }
    *bytes = image.bytes;
    *size = image.length;
    return STRATA_OK;
}

strata_status gguf_writer_write_file(const gguf_writer *writer, const char *path, strata_error *err)
{
    uint8_t *image;
    size_t size;
    strata_status status = gguf_writer_write_memory(writer, &image, &size, err);
    if (status != STRATA_OK)
        return status;
    FILE *stream = fopen(path, "wb");
    if (stream == NULL) {
        int saved = errno;
        free(image);
        return strata_fail(err, STRATA_E_IO, "%s: cannot create: %s", path, strerror(saved));
    }
    size_t written = fwrite(image, 1, size, stream);
    int saved = errno;
    bool closed = fclose(stream) == 0;
    free(image);
    if (written != size || !closed)
        return strata_fail(err, STRATA_E_IO, "%s: wrote %zu of %zu bytes: %s", path, written, size,
                           strerror(written != size ? saved : errno));
    return STRATA_OK;
}
