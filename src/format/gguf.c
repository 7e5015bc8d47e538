/* format/gguf.c: the GGUF reader.
 *
 * A GGUF file is a header (magic, version, tensor and key/value counts), the
 * key/value metadata, one info record per tensor, padding to the alignment,
 * then the tensor data. gguf_parse walks it once with a bounds-checked cursor
 * (gguf_reader): every read first checks that the bytes are there, every
 * count is compared with the bytes left before anything is allocated for it,
 * and every size is multiplied with an overflow check. Whatever passes is
 * kept as pointers into the image, which therefore stays mapped (or, for
 * gguf_open_memory, owned by the caller) until gguf_close.
 *
 * Choices the format leaves open: keys and tensor names must be non-empty
 * and free of NUL bytes (they are handed out as C strings); arrays of arrays
 * are refused (no model strata reads uses them); bools must be 0 or 1, in
 * arrays too; general.alignment, when present, must be a u32 power of two.
 * Keys and tensor names are hashed once, which finds duplicates in linear
 * time even in a hostile file and makes gguf_find and gguf_tensor_find O(1). */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include "format/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/error.h"

enum {
    GGUF_HEADER_BYTES = 24, /* magic, version, tensor_count, kv_count */
    GGUF_DEFAULT_ALIGNMENT = 32,
    GGUF_MAX_DIMS = 4,
    GGUF_TYPE_COUNT = 13, /* value types are 0 .. 12 */
    /* The fewest bytes a key/value pair can take: key length, a one-byte key,
     * the value type and a one-byte value. */
    GGUF_SMALLEST_PAIR_BYTES = 8 + 1 + 4 + 1,
    /* The fewest bytes a tensor info can take: name length, a one-byte name,
     * n_dims, one dimension, the type and the offset. */
    GGUF_SMALLEST_TENSOR_INFO_BYTES = 8 + 1 + 4 + 8 + 4 + 8,
    /* How much of a name goes into an error message. */
    GGUF_NAME_SHOWN_BYTES = 80,
};

/* Each value type's name and the bytes of one value (0: variable length). */
static const struct {
    const char *name;
    uint8_t bytes;
} gguf_value_types[GGUF_TYPE_COUNT] = {
    [GGUF_TYPE_UINT8] = {"u8", 1},      [GGUF_TYPE_INT8] = {"i8", 1},
    [GGUF_TYPE_UINT16] = {"u16", 2},    [GGUF_TYPE_INT16] = {"i16", 2},
    [GGUF_TYPE_UINT32] = {"u32", 4},    [GGUF_TYPE_INT32] = {"i32", 4},
    [GGUF_TYPE_FLOAT32] = {"f32", 4},   [GGUF_TYPE_BOOL] = {"bool", 1},
    [GGUF_TYPE_STRING] = {"string", 0}, [GGUF_TYPE_ARRAY] = {"array", 0},
    [GGUF_TYPE_UINT64] = {"u64", 8},    [GGUF_TYPE_INT64] = {"i64", 8},
    [GGUF_TYPE_FLOAT64] = {"f64", 8},
};

typedef struct gguf_metadata_entry {
    char *key; /* NUL-terminated copy, owned */
    gguf_value value;
} gguf_metadata_entry;

/* An open-addressing hash set of names, for duplicates and lookups. */
typedef struct name_slot {
    const char *name; /* NULL: empty slot */
    uint64_t position;
} name_slot;

typedef struct name_index {
    name_slot *slots;
    uint64_t capacity; /* a power of two, at least twice the names */
} name_index;

struct gguf_file {
    char *name; /* the path or the caller's name, for messages */
    const uint8_t *bytes;
    uint64_t size;
    void *mapping; /* non-NULL when gguf_open mapped the file */
    uint32_t version;
    uint32_t alignment;
    uint64_t metadata_count; /* pairs parsed so far: gguf_close frees these */
    gguf_metadata_entry *metadata;
    name_index keys;
    uint64_t tensor_count;
    gguf_tensor *tensors;
    name_index tensor_names;
    uint64_t data_start;
};

/* A cursor over the image that refuses to move past its end. */
typedef struct gguf_reader {
    const uint8_t *bytes;
    uint64_t size;
    uint64_t position;
    const char *file_name;
    char context[GGUF_NAME_SHOWN_BYTES + 64]; /* what is being read: "key 'general.name'" */
    strata_error *err;
} gguf_reader;

static char *copy_bytes_as_string(const char *bytes, size_t length)
{
    char *copy = malloc(length + 1);
    if (copy == NULL)
        return NULL;
    memcpy(copy, bytes, length);
    copy[length] = '\0';
    return copy;
}

static uint64_t decode_little_endian(const uint8_t *bytes, unsigned width)
{
    uint64_t value = 0;
    for (unsigned i = 0; i < width; i++)
        value |= (uint64_t)bytes[i] << (8 * i);
    return value;
}

/* Reads the low width bytes of bits as a two's complement number. */
static int64_t sign_extend(uint64_t bits, unsigned width)
{
    uint64_t sign_bit = (uint64_t)1 << (8 * width - 1);
    if ((bits & sign_bit) == 0)
        return (int64_t)bits;
    return -(int64_t)(~bits & (sign_bit - 1)) - 1;
}

static bool multiply_checked(uint64_t a, uint64_t b, uint64_t *product)
{
    if (a != 0 && b > UINT64_MAX / a)
        return false;
    *product = a * b;
    return true;
}

static uint64_t hash_name(const char *name)
{
    uint64_t hash = 14695981039346656037u; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)name; *p != '\0'; p++)
        hash = (hash ^ *p) * 1099511628211u;
    return hash;
}

static strata_status name_index_init(name_index *index, uint64_t count, strata_error *err)
{
    uint64_t capacity = 8;
    while (capacity < count * 2)
        capacity *= 2;
    index->slots = calloc(capacity, sizeof *index->slots);
    if (index->slots == NULL)
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY,
                           "cannot allocate a name index of %" PRIu64 " slots", capacity);
    index->capacity = capacity;
    return STRATA_OK;
}

/* Returns the slot holding name, or the empty slot where it would go. */
static name_slot *name_index_slot(const name_index *index, const char *name)
{
    uint64_t mask = index->capacity - 1;
    for (uint64_t i = hash_name(name) & mask;; i = (i + 1) & mask) {
        name_slot *slot = &index->slots[i];
        if (slot->name == NULL || strcmp(slot->name, name) == 0)
            return slot;
    }
}

/* Adds name (kept by pointer); returns false and the earlier position if it is there. */
static bool name_index_add(name_index *index, const char *name, uint64_t position,
                           uint64_t *earlier)
{
    name_slot *slot = name_index_slot(index, name);
    if (slot->name != NULL) {
        *earlier = slot->position;
        return false;
    }
    slot->name = name;
    slot->position = position;
    return true;
}

static bool name_index_find(const name_index *index, const char *name, uint64_t *position)
{
    if (index->slots == NULL)
        return false;
    name_slot *slot = name_index_slot(index, name);
    if (slot->name == NULL)
        return false;
    *position = slot->position;
    return true;
}

/* Fails with a format error whose message starts with the file and what is being read. */
static strata_status reader_fail(const gguf_reader *reader, const char *format, ...)
    STRATA_PRINTF(2, 3);

static strata_status reader_fail(const gguf_reader *reader, const char *format, ...)
{
    char detail[STRATA_ERROR_MESSAGE_BYTES];
    va_list args;
    va_start(args, format);
    vsnprintf(detail, sizeof detail, format, args);
    va_end(args);
    return strata_fail(reader->err, STRATA_E_FORMAT, "%s: %s: %s", reader->file_name,
                       reader->context, detail);
}

static void reader_set_context(gguf_reader *reader, const char *kind, const char *name,
                               uint64_t length)
{
    int shown = length > GGUF_NAME_SHOWN_BYTES ? GGUF_NAME_SHOWN_BYTES : (int)length;
    snprintf(reader->context, sizeof reader->context, "%s '%.*s%s'", kind, shown, name,
             length > GGUF_NAME_SHOWN_BYTES ? "..." : "");
}

static uint64_t reader_remaining(const gguf_reader *reader)
{
    return reader->size - reader->position;
}

/* Hands out the next count bytes, or fails naming what needed them. */
static strata_status reader_take(gguf_reader *reader, uint64_t count, const char *what,
                                 const uint8_t **out)
{
    *out = NULL;
    if (count > reader_remaining(reader))
        return reader_fail(reader,
                           "%s needs %" PRIu64 " bytes at byte %" PRIu64
                           ", but the file ends at byte %" PRIu64,
                           what, count, reader->position, reader->size);
    *out = reader->bytes + reader->position;
    reader->position += count;
    return STRATA_OK;
}

static strata_status reader_read_integer(gguf_reader *reader, unsigned width, const char *what,
                                         uint64_t *out)
{
    const uint8_t *bytes;
    strata_status status = reader_take(reader, width, what, &bytes);
    *out = status == STRATA_OK ? decode_little_endian(bytes, width) : 0;
    return status;
}

static strata_status reader_read_u32(gguf_reader *reader, const char *what, uint32_t *out)
{
    uint64_t value = 0;
    strata_status status = reader_read_integer(reader, 4, what, &value);
    *out = (uint32_t)value;
    return status;
}

static strata_status reader_read_string(gguf_reader *reader, const char *what, gguf_string *out)
{
    *out = (gguf_string){NULL, 0};
    uint64_t length;
    strata_status status = reader_read_integer(reader, 8, what, &length);
    if (status != STRATA_OK)
        return status;
    if (length > reader_remaining(reader))
        return reader_fail(
            reader, "%s is %" PRIu64 " bytes long, but only %" PRIu64 " bytes remain in the file",
            what, length, reader_remaining(reader));
    const uint8_t *bytes;
    reader_take(reader, length, what, &bytes);
    out->data = (const char *)bytes;
    out->length = length;
    return STRATA_OK;
}

/* Reads a key or tensor name: non-empty, shorter than limit, without NUL bytes. */
static strata_status reader_read_name(gguf_reader *reader, const char *what, uint64_t limit,
                                      gguf_string *out)
{
    strata_status status = reader_read_string(reader, what, out);
    if (status != STRATA_OK)
        return status;
    if (out->length == 0)
        return reader_fail(reader, "%s is empty", what);
    if (out->length >= limit)
        return reader_fail(reader, "%s is %" PRIu64 " bytes long; the limit is %" PRIu64, what,
                           out->length, limit - 1);
    if (memchr(out->data, '\0', out->length) != NULL)
        return reader_fail(reader, "%s '%.*s' contains a NUL byte", what,
                           (int)strnlen(out->data, GGUF_NAME_SHOWN_BYTES), out->data);
    return STRATA_OK;
}

static bool value_type_known(uint32_t type)
{
    return type < GGUF_TYPE_COUNT;
}

/* Decodes one fixed-size value; bools other than 0 and 1 are refused. */
static strata_status decode_scalar(const gguf_reader *reader, gguf_value_type type,
                                   const uint8_t *bytes, gguf_value *value)
{
    unsigned width = gguf_value_types[type].bytes;
    uint64_t bits = decode_little_endian(bytes, width);
    value->type = type;
    switch (type) {
    case GGUF_TYPE_INT8:
    case GGUF_TYPE_INT16:
    case GGUF_TYPE_INT32:
    case GGUF_TYPE_INT64:
        value->as.i64 = sign_extend(bits, width);
        break;
    case GGUF_TYPE_FLOAT32: {
        uint32_t narrow = (uint32_t)bits;
        float number;
        memcpy(&number, &narrow, sizeof number);
        value->as.f64 = number;
        break;
    }
    case GGUF_TYPE_FLOAT64:
        memcpy(&value->as.f64, &bits, sizeof value->as.f64);
        break;
    case GGUF_TYPE_BOOL:
        if (bits > 1)
            return reader_fail(reader, "bool value is %" PRIu64 "; only 0 and 1 are allowed", bits);
        value->as.u64 = bits;
        break;
    default:
        value->as.u64 = bits;
        break;
    }
    return STRATA_OK;
}

static strata_status parse_string_array(gguf_reader *reader, uint64_t count, gguf_value *value)
{
    /* Each element carries at least its 8-byte length. */
    if (count > reader_remaining(reader) / 8)
        return reader_fail(reader,
                           "array of %" PRIu64 " strings needs at least %" PRIu64
                           " bytes per element, but only %" PRIu64 " bytes remain",
                           count, (uint64_t)8, reader_remaining(reader));
    if (count == 0)
        return STRATA_OK;
    gguf_string *strings = calloc(count, sizeof *strings);
    if (strings == NULL)
        return strata_fail(reader->err, STRATA_E_OUT_OF_MEMORY,
                           "%s: %s: cannot allocate the index of %" PRIu64 " strings",
                           reader->file_name, reader->context, count);
    value->as.array.strings = strings;
    for (uint64_t i = 0; i < count; i++) {
        char what[48];
        snprintf(what, sizeof what, "string %" PRIu64 " of the array", i);
        strata_status status = reader_read_string(reader, what, &strings[i]);
        if (status != STRATA_OK)
            return status;
    }
    return STRATA_OK;
}

static strata_status parse_array(gguf_reader *reader, gguf_value *value)
{
    uint32_t element_type;
    uint64_t count;
    strata_status status = reader_read_u32(reader, "the array's element type", &element_type);
    if (status == STRATA_OK)
        status = reader_read_integer(reader, 8, "the array's element count", &count);
    if (status != STRATA_OK)
        return status;
    if (element_type == GGUF_TYPE_ARRAY)
        return reader_fail(reader, "arrays of arrays are not supported");
    if (!value_type_known(element_type))
        return reader_fail(reader, "array element type %" PRIu32 " is unknown (types are 0 to %d)",
                           element_type, GGUF_TYPE_COUNT - 1);
    value->as.array.element_type = (gguf_value_type)element_type;
    value->as.array.count = count;
    if (element_type == GGUF_TYPE_STRING)
        return parse_string_array(reader, count, value);

    unsigned width = gguf_value_types[element_type].bytes;
    if (count > reader_remaining(reader) / width)
        return reader_fail(
            reader,
            "array of %" PRIu64 " %s values needs %u bytes each, but only %" PRIu64 " bytes remain",
            count, gguf_value_types[element_type].name, width, reader_remaining(reader));
    const uint8_t *elements;
    reader_take(reader, count * width, "the array's elements", &elements);
    value->as.array.data = elements;
    if (element_type == GGUF_TYPE_BOOL) {
        for (uint64_t i = 0; i < count; i++)
            if (elements[i] > 1)
                return reader_fail(reader,
                                   "bool element %" PRIu64 " is %u; only 0 and 1 are allowed", i,
                                   elements[i]);
    }
    return STRATA_OK;
}

static strata_status parse_value(gguf_reader *reader, uint32_t type, gguf_value *value)
{
    if (!value_type_known(type))
        return reader_fail(reader, "value type %" PRIu32 " is unknown (types are 0 to %d)", type,
                           GGUF_TYPE_COUNT - 1);
    value->type = (gguf_value_type)type;
    if (type == GGUF_TYPE_ARRAY)
        return parse_array(reader, value);
    if (type == GGUF_TYPE_STRING)
        return reader_read_string(reader, "the string value", &value->as.string);
    const uint8_t *bytes;
    strata_status status = reader_take(reader, gguf_value_types[type].bytes, "the value", &bytes);
    if (status != STRATA_OK)
        return status;
    return decode_scalar(reader, (gguf_value_type)type, bytes, value);
}

/* Reads the header and allocates the tables its counts call for. */
static strata_status parse_header(gguf_reader *reader, gguf_file *file, uint64_t *metadata_count)
{
    snprintf(reader->context, sizeof reader->context, "header");
    const uint8_t *magic;
    strata_status status = reader_take(reader, 4, "the magic", &magic);
    if (status != STRATA_OK)
        return status;
    if (memcmp(magic, "GGUF", 4) != 0)
        return reader_fail(reader,
                           "not a GGUF file: it starts with bytes %02x %02x %02x %02x, not 'GGUF'",
                           magic[0], magic[1], magic[2], magic[3]);
    status = reader_read_u32(reader, "the version", &file->version);
    if (status != STRATA_OK)
        return status;
    if (file->version != 2 && file->version != 3)
        return reader_fail(reader, "GGUF version %" PRIu32 " is not supported (only 2 and 3)",
                           file->version);
    uint64_t tensor_count, pair_count;
    status = reader_read_integer(reader, 8, "the tensor count", &tensor_count);
    if (status == STRATA_OK)
        status = reader_read_integer(reader, 8, "the key/value count", &pair_count);
    if (status != STRATA_OK)
        return status;

    uint64_t remaining = reader_remaining(reader);
    if (pair_count > remaining / GGUF_SMALLEST_PAIR_BYTES)
        return reader_fail(reader,
                           "key/value count %" PRIu64 " cannot fit in the %" PRIu64
                           " bytes that follow (each pair takes at least %d)",
                           pair_count, remaining, GGUF_SMALLEST_PAIR_BYTES);
    remaining -= pair_count * GGUF_SMALLEST_PAIR_BYTES;
    if (tensor_count > remaining / GGUF_SMALLEST_TENSOR_INFO_BYTES)
        return reader_fail(reader,
                           "tensor count %" PRIu64 " cannot fit in the %" PRIu64
                           " bytes left after the metadata (each tensor info takes at least %d)",
                           tensor_count, remaining, GGUF_SMALLEST_TENSOR_INFO_BYTES);
    file->metadata = calloc(pair_count ? pair_count : 1, sizeof *file->metadata);
    file->tensors = calloc(tensor_count ? tensor_count : 1, sizeof *file->tensors);
    if (file->metadata == NULL || file->tensors == NULL)
        return strata_fail(reader->err, STRATA_E_OUT_OF_MEMORY,
                           "%s: cannot allocate %" PRIu64 " metadata entries and %" PRIu64
                           " tensor infos",
                           file->name, pair_count, tensor_count);
    /* file->metadata_count grows as pairs are parsed, so gguf_close frees only those. */
    *metadata_count = pair_count;
    file->tensor_count = tensor_count;
    status = name_index_init(&file->keys, pair_count, reader->err);
    if (status == STRATA_OK)
        status = name_index_init(&file->tensor_names, tensor_count, reader->err);
    return status;
}

static strata_status parse_metadata(gguf_reader *reader, gguf_file *file, uint64_t count)
{
    for (uint64_t i = 0; i < count; i++) {
        snprintf(reader->context, sizeof reader->context, "key/value pair %" PRIu64, i);
        gguf_string key;
        strata_status status = reader_read_name(reader, "the key", UINT64_MAX, &key);
        if (status != STRATA_OK)
            return status;
        gguf_metadata_entry *entry = &file->metadata[i];
        entry->key = copy_bytes_as_string(key.data, key.length);
        if (entry->key == NULL)
            return strata_fail(reader->err, STRATA_E_OUT_OF_MEMORY,
                               "%s: cannot copy a key of %" PRIu64 " bytes", file->name,
                               key.length);
        file->metadata_count = i + 1;
        reader_set_context(reader, "key", key.data, key.length);
        uint64_t earlier;
        if (!name_index_add(&file->keys, entry->key, i, &earlier))
            return reader_fail(reader, "the key appears twice (pairs %" PRIu64 " and %" PRIu64 ")",
                               earlier, i);
        uint32_t type;
        status = reader_read_u32(reader, "the value type", &type);
        if (status == STRATA_OK)
            status = parse_value(reader, type, &entry->value);
        if (status != STRATA_OK)
            return status;
    }
    return STRATA_OK;
}

static strata_status read_alignment(gguf_reader *reader, gguf_file *file)
{
    file->alignment = GGUF_DEFAULT_ALIGNMENT;
    const gguf_value *value = gguf_find(file, "general.alignment");
    if (value == NULL)
        return STRATA_OK;
    snprintf(reader->context, sizeof reader->context, "key 'general.alignment'");
    if (value->type != GGUF_TYPE_UINT32)
        return reader_fail(reader, "the alignment has type %s; it must be u32",
                           gguf_value_type_name(value->type));
    uint64_t alignment = value->as.u64;
    if (alignment == 0 || (alignment & (alignment - 1)) != 0)
        return reader_fail(reader, "the alignment is %" PRIu64 "; it must be a power of two",
                           alignment);
    file->alignment = (uint32_t)alignment;
    return STRATA_OK;
}

/* Checks a tensor's shape and type and computes its size in bytes. */
static strata_status check_tensor_shape(const gguf_reader *reader, gguf_tensor *tensor,
                                        uint32_t type_id)
{
    const tensor_type_info *info = tensor_type_lookup(type_id);
    if (info == NULL)
        return reader_fail(reader, "tensor type %" PRIu32 " is unknown", type_id);
    tensor->type = (tensor_type)type_id;
    for (uint32_t d = 0; d < tensor->n_dims; d++)
        if (tensor->ne[d] == 0)
            return reader_fail(reader,
                               "dimension %" PRIu32 " is 0; every dimension must be at least 1", d);
    if (tensor->ne[0] % info->block_elements != 0)
        return reader_fail(
            reader, "row length %" PRIu64 " is not a multiple of %s's block of %" PRIu32 " values",
            tensor->ne[0], info->name, info->block_elements);
    uint64_t elements = 1;
    for (uint32_t d = 0; d < tensor->n_dims; d++)
        if (!multiply_checked(elements, tensor->ne[d], &elements))
            return reader_fail(reader,
                               "the element count overflows 64 bits at dimension %" PRIu32
                               " (%" PRIu64 ")",
                               d, tensor->ne[d]);
    if (!multiply_checked(elements / info->block_elements, info->block_bytes, &tensor->bytes))
        return reader_fail(reader, "%" PRIu64 " %s values take more than 2^64 bytes", elements,
                           info->name);
    return STRATA_OK;
}

static strata_status parse_tensor_info(gguf_reader *reader, gguf_file *file, uint64_t index)
{
    gguf_tensor *tensor = &file->tensors[index];
    snprintf(reader->context, sizeof reader->context, "tensor info %" PRIu64, index);
    gguf_string name;
    strata_status status = reader_read_name(reader, "the tensor name", sizeof tensor->name, &name);
    if (status != STRATA_OK)
        return status;
    snprintf(tensor->name, sizeof tensor->name, "%.*s", (int)name.length, name.data);
    reader_set_context(reader, "tensor", name.data, name.length);
    uint64_t earlier;
    if (!name_index_add(&file->tensor_names, tensor->name, index, &earlier))
        return reader_fail(reader, "the name appears twice (tensors %" PRIu64 " and %" PRIu64 ")",
                           earlier, index);

    status = reader_read_u32(reader, "the dimension count", &tensor->n_dims);
    if (status != STRATA_OK)
        return status;
    if (tensor->n_dims < 1 || tensor->n_dims > GGUF_MAX_DIMS)
        return reader_fail(reader, "dimension count %" PRIu32 " is outside 1 to %d", tensor->n_dims,
                           GGUF_MAX_DIMS);
    for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++)
        tensor->ne[d] = 1;
    for (uint32_t d = 0; d < tensor->n_dims && status == STRATA_OK; d++)
        status = reader_read_integer(reader, 8, "a dimension", &tensor->ne[d]);
    uint32_t type_id = 0;
    if (status == STRATA_OK)
        status = reader_read_u32(reader, "the tensor type", &type_id);
    if (status == STRATA_OK)
        status = reader_read_integer(reader, 8, "the data offset", &tensor->offset);
    if (status == STRATA_OK)
        status = check_tensor_shape(reader, tensor, type_id);
    if (status != STRATA_OK)
        return status;
    if (tensor->offset % file->alignment != 0)
        return reader_fail(reader,
                           "data offset %" PRIu64 " is not a multiple of the alignment %" PRIu32,
                           tensor->offset, file->alignment);
    return STRATA_OK;
}

/* Places the data section after the tensor infos and checks every tensor lies inside it. */
static strata_status place_tensor_data(gguf_reader *reader, gguf_file *file)
{
    uint64_t padding = (file->alignment - reader->position % file->alignment) % file->alignment;
    file->data_start = reader->position + padding;
    uint64_t data_bytes = file->data_start < file->size ? file->size - file->data_start : 0;
    for (uint64_t i = 0; i < file->tensor_count; i++) {
        gguf_tensor *tensor = &file->tensors[i];
        reader_set_context(reader, "tensor", tensor->name, strlen(tensor->name));
        if (tensor->offset > data_bytes || tensor->bytes > data_bytes - tensor->offset)
            return reader_fail(reader,
                               "its %" PRIu64 " bytes at data offset %" PRIu64
                               " run past the end of the data section (%" PRIu64
                               " bytes from file byte %" PRIu64 ")",
                               tensor->bytes, tensor->offset, data_bytes, file->data_start);
        tensor->data = file->bytes + file->data_start + tensor->offset;
    }
    return STRATA_OK;
}

/* Validates the image and builds the file's tables; on failure frees everything. */
static strata_status gguf_parse(const uint8_t *bytes, uint64_t size, const char *name,
                                gguf_file **out, strata_error *err)
{
    *out = NULL;
    gguf_file *file = calloc(1, sizeof *file);
    char *name_copy = copy_bytes_as_string(name, strlen(name));
    if (file == NULL || name_copy == NULL) {
        free(file);
        free(name_copy);
        return strata_fail(err, STRATA_E_OUT_OF_MEMORY, "%s: cannot allocate the file record",
                           name);
    }
    file->name = name_copy;
    file->bytes = bytes;
    file->size = size;
    gguf_reader reader = {.bytes = bytes, .size = size, .file_name = file->name, .err = err};

    uint64_t metadata_count = 0;
    strata_status status = parse_header(&reader, file, &metadata_count);
    if (status == STRATA_OK)
        status = parse_metadata(&reader, file, metadata_count);
    if (status == STRATA_OK)
        status = read_alignment(&reader, file);
    for (uint64_t i = 0; status == STRATA_OK && i < file->tensor_count; i++)
        status = parse_tensor_info(&reader, file, i);
    if (status == STRATA_OK)
        status = place_tensor_data(&reader, file);
    if (status != STRATA_OK) {
        gguf_close(file);
        return status;
    }
    *out = file;
    return STRATA_OK;
}

strata_status gguf_open_memory(const void *bytes, size_t size, const char *name, gguf_file **out,
                               strata_error *err)
{
    if (name == NULL)
        name = "<memory>";
    if (bytes == NULL && size != 0) {
        *out = NULL;
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT, "%s: image of %zu bytes at NULL", name,
                           size);
    }
    return gguf_parse(bytes, size, name, out, err);
}

strata_status gguf_open(const char *path, gguf_file **out, strata_error *err)
{
    *out = NULL;
    int descriptor = open(path, O_RDONLY | O_CLOEXEC);
    if (descriptor < 0)
        return strata_fail(err, STRATA_E_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat info;
    if (fstat(descriptor, &info) != 0) {
        int saved = errno;
        close(descriptor);
        return strata_fail(err, STRATA_E_IO, "%s: cannot stat: %s", path, strerror(saved));
    }
    if (!S_ISREG(info.st_mode)) {
        close(descriptor);
        return strata_fail(err, STRATA_E_IO, "%s: not a regular file", path);
    }
    uint64_t size = (uint64_t)info.st_size;
    if (size < GGUF_HEADER_BYTES) {
        close(descriptor);
        return strata_fail(err, STRATA_E_FORMAT,
                           "%s: the file is %" PRIu64
                           " bytes, smaller than the %d-byte GGUF header",
                           path, size, GGUF_HEADER_BYTES);
    }
    if (size > SIZE_MAX) {
        close(descriptor);
        return strata_fail(err, STRATA_E_IO, "%s: %" PRIu64 " bytes cannot be mapped", path, size);
    }
    void *mapping = mmap(NULL, (size_t)size, PROT_READ, MAP_PRIVATE, descriptor, 0);
    int saved = errno;
    close(descriptor);
    if (mapping == MAP_FAILED)
        return strata_fail(err, STRATA_E_IO, "%s: cannot map %" PRIu64 " bytes: %s", path, size,
                           strerror(saved));
    strata_status status = gguf_parse(mapping, size, path, out, err);
    if (status != STRATA_OK) {
        munmap(mapping, (size_t)size);
        return status;
    }
    (*out)->mapping = mapping;
    return STRATA_OK;
}

void gguf_close(gguf_file *file)
{
    if (file == NULL)
        return;
    for (uint64_t i = 0; i < file->metadata_count; i++) {
        free(file->metadata[i].key);
        gguf_value *value = &file->metadata[i].value;
        if (value->type == GGUF_TYPE_ARRAY && value->as.array.element_type == GGUF_TYPE_STRING)
            free((void *)value->as.array.strings);
    }
    free(file->metadata);
    free(file->tensors);
    free(file->keys.slots);
    free(file->tensor_names.slots);
    if (file->mapping != NULL)
        munmap(file->mapping, (size_t)file->size);
    free(file->name);
    free(file);
}

uint32_t gguf_version(const gguf_file *file)
{
    return file->version;
}

uint32_t gguf_alignment(const gguf_file *file)
{
    return file->alignment;
}

uint64_t gguf_file_size(const gguf_file *file)
{
    return file->size;
}

uint64_t gguf_metadata_count(const gguf_file *file)
{
    return file->metadata_count;
}

const char *gguf_metadata_key(const gguf_file *file, uint64_t index)
{
    return index < file->metadata_count ? file->metadata[index].key : NULL;
}

const gguf_value *gguf_metadata_value(const gguf_file *file, uint64_t index)
{
    return index < file->metadata_count ? &file->metadata[index].value : NULL;
}

const gguf_value *gguf_find(const gguf_file *file, const char *key)
{
    uint64_t position;
    if (!name_index_find(&file->keys, key, &position))
        return NULL;
    return &file->metadata[position].value;
}

/* Looks key up for a typed getter. An absent key sets *found to false, or is
 * an error naming the key when the caller passed found == NULL (a required key). */
static strata_status find_for_getter(const gguf_file *file, const char *key, bool *found,
                                     const gguf_value **value, strata_error *err)
{
    *value = gguf_find(file, key);
    if (found != NULL) {
        *found = *value != NULL;
        return STRATA_OK;
    }
    if (*value == NULL)
        return strata_fail(err, STRATA_E_FORMAT, "%s: required key '%s' is missing", file->name,
                           key);
    return STRATA_OK;
}

static strata_status wrong_type(const gguf_file *file, const char *key, const gguf_value *value,
                                const char *expected, strata_error *err)
{
    return strata_fail(err, STRATA_E_FORMAT, "%s: key '%s' has type %s, but %s is expected",
                       file->name, key, gguf_value_type_name(value->type), expected);
}

static bool value_is_unsigned(gguf_value_type type)
{
    return type == GGUF_TYPE_UINT8 || type == GGUF_TYPE_UINT16 || type == GGUF_TYPE_UINT32 ||
           type == GGUF_TYPE_UINT64;
}

static bool value_is_signed(gguf_value_type type)
{
    return type == GGUF_TYPE_INT8 || type == GGUF_TYPE_INT16 || type == GGUF_TYPE_INT32 ||
           type == GGUF_TYPE_INT64;
}

strata_status gguf_get_uint(const gguf_file *file, const char *key, uint64_t *out, bool *found,
                            strata_error *err)
{
    const gguf_value *value;
    strata_status status = find_for_getter(file, key, found, &value, err);
    if (status != STRATA_OK || value == NULL)
        return status;
    if (value_is_unsigned(value->type)) {
        *out = value->as.u64;
        return STRATA_OK;
    }
    if (!value_is_signed(value->type))
        return wrong_type(file, key, value, "an integer", err);
    if (value->as.i64 < 0)
        return strata_fail(err, STRATA_E_FORMAT,
                           "%s: key '%s' is %" PRId64 ", but it must not be negative", file->name,
                           key, value->as.i64);
    *out = (uint64_t)value->as.i64;
    return STRATA_OK;
}

strata_status gguf_get_float(const gguf_file *file, const char *key, double *out, bool *found,
                             strata_error *err)
{
    const gguf_value *value;
    strata_status status = find_for_getter(file, key, found, &value, err);
    if (status != STRATA_OK || value == NULL)
        return status;
    if (value->type == GGUF_TYPE_FLOAT32 || value->type == GGUF_TYPE_FLOAT64)
        *out = value->as.f64;
    else if (value_is_unsigned(value->type))
        *out = (double)value->as.u64;
    else if (value_is_signed(value->type))
        *out = (double)value->as.i64;
    else
        return wrong_type(file, key, value, "a number", err);
    return STRATA_OK;
}

strata_status gguf_get_bool(const gguf_file *file, const char *key, bool *out, bool *found,
                            strata_error *err)
{
    const gguf_value *value;
    strata_status status = find_for_getter(file, key, found, &value, err);
    if (status != STRATA_OK || value == NULL)
        return status;
    if (value->type != GGUF_TYPE_BOOL)
        return wrong_type(file, key, value, "bool", err);
    *out = value->as.u64 != 0;
    return STRATA_OK;
}

strata_status gguf_get_string(const gguf_file *file, const char *key, gguf_string *out, bool *found,
                              strata_error *err)
{
    const gguf_value *value;
    strata_status status = find_for_getter(file, key, found, &value, err);
    if (status != STRATA_OK || value == NULL)
        return status;
    if (value->type != GGUF_TYPE_STRING)
        return wrong_type(file, key, value, "string", err);
    *out = value->as.string;
    return STRATA_OK;
}

uint64_t gguf_tensor_count(const gguf_file *file)
{
    return file->tensor_count;
}

const gguf_tensor *gguf_tensor_at(const gguf_file *file, uint64_t index)
{
    return index < file->tensor_count ? &file->tensors[index] : NULL;
}

const gguf_tensor *gguf_tensor_find(const gguf_file *file, const char *name)
{
    uint64_t position;
    if (!name_index_find(&file->tensor_names, name, &position))
        return NULL;
    return &file->tensors[position];
}

const char *gguf_value_type_name(gguf_value_type type)
{
    if ((unsigned)type >= GGUF_TYPE_COUNT)
        return "unknown";
    return gguf_value_types[type].name;
}
