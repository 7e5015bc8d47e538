/* tools/strata/inspect.c: `strata inspect FILE [--all]`.
 *
 * Prints what a GGUF file holds, in three parts: the header (version,
 * alignment, size), every metadata key with its type and value, and a table
 * of tensors (name, type, dimensions, data offset, bytes) with totals by
 * type. Long strings and arrays are shortened (arrays to their first few
 * elements) unless --all is given. Opening the file validates it completely,
 * so a file this command prints is one the engine can read. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "format/gguf.h"

enum {
    INSPECT_ARRAY_ELEMENTS_SHOWN = 8, /* without --all */
    INSPECT_STRING_BYTES_SHOWN = 120, /* without --all */
    INSPECT_KEY_COLUMN = 40,
};

static void print_usage(FILE *stream)
{
    fprintf(stream, "usage: strata inspect FILE [--all]\n"
                    "\n"
                    "Prints a GGUF file's header, metadata and tensor table.\n"
                    "  --all   print every array element and whole strings\n");
}

/* Prints text between quotes, escaping what would garble a terminal. */
static void print_quoted(const char *text, uint64_t length, bool show_all)
{
    uint64_t shown =
        !show_all && length > INSPECT_STRING_BYTES_SHOWN ? INSPECT_STRING_BYTES_SHOWN : length;
    putchar('"');
    for (uint64_t i = 0; i < shown; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c == '\n')
            fputs("\\n", stdout);
        else if (c == '\t')
            fputs("\\t", stdout);
        else if (c < 0x20 || c == 0x7f)
            printf("\\x%02x", c);
        else
            putchar(c);
    }
    putchar('"');
    if (shown < length)
        printf("... (%" PRIu64 " bytes)", length);
}

/* Decodes element index of a packed scalar array as a scalar value. */
static gguf_value array_element(const gguf_value *array, uint64_t index)
{
    static const uint8_t element_bytes[] = {
        [GGUF_TYPE_UINT8] = 1,   [GGUF_TYPE_INT8] = 1,    [GGUF_TYPE_UINT16] = 2,
        [GGUF_TYPE_INT16] = 2,   [GGUF_TYPE_UINT32] = 4,  [GGUF_TYPE_INT32] = 4,
        [GGUF_TYPE_FLOAT32] = 4, [GGUF_TYPE_BOOL] = 1,    [GGUF_TYPE_UINT64] = 8,
        [GGUF_TYPE_INT64] = 8,   [GGUF_TYPE_FLOAT64] = 8,
    };
    gguf_value_type type = array->as.array.element_type;
    unsigned width = element_bytes[type];
    const uint8_t *bytes = (const uint8_t *)array->as.array.data + index * width;
    uint64_t bits = 0;
    for (unsigned i = 0; i < width; i++)
        bits |= (uint64_t)bytes[i] << (8 * i);
    gguf_value element = {.type = type};
    if (type == GGUF_TYPE_FLOAT32) {
        uint32_t narrow = (uint32_t)bits;
        float number;
        memcpy(&number, &narrow, sizeof number);
        element.as.f64 = number;
    } else if (type == GGUF_TYPE_FLOAT64) {
        memcpy(&element.as.f64, &bits, sizeof element.as.f64);
    } else if (type == GGUF_TYPE_INT8 || type == GGUF_TYPE_INT16 || type == GGUF_TYPE_INT32 ||
               type == GGUF_TYPE_INT64) {
        uint64_t sign_bit = (uint64_t)1 << (8 * width - 1);
        element.as.i64 = (bits & sign_bit) ? -(int64_t)(~bits & (sign_bit - 1)) - 1 : (int64_t)bits;
    } else {
        element.as.u64 = bits;
    }
    return element;
}

/* Prints the fewest digits that read back as the same f32 (or f64): 1e-06, not 9.99999997e-07. */
static void print_shortest_float(double number, bool is_f32)
{
    char text[40];
    for (int digits = 6; digits <= 17; digits++) {
        snprintf(text, sizeof text, "%.*g", digits, number);
        bool same = is_f32 ? strtof(text, NULL) == (float)number : strtod(text, NULL) == number;
        if (same || number != number)
            break;
    }
    fputs(text, stdout);
}

static void print_scalar(const gguf_value *value, bool show_all)
{
    switch (value->type) {
    case GGUF_TYPE_INT8:
    case GGUF_TYPE_INT16:
    case GGUF_TYPE_INT32:
    case GGUF_TYPE_INT64:
        printf("%" PRId64, value->as.i64);
        break;
    case GGUF_TYPE_FLOAT32:
        print_shortest_float(value->as.f64, true);
        break;
    case GGUF_TYPE_FLOAT64:
        print_shortest_float(value->as.f64, false);
        break;
    case GGUF_TYPE_BOOL:
        fputs(value->as.u64 ? "true" : "false", stdout);
        break;
    case GGUF_TYPE_STRING:
        print_quoted(value->as.string.data, value->as.string.length, show_all);
        break;
    case GGUF_TYPE_ARRAY:
        break;
    default:
        printf("%" PRIu64, value->as.u64);
        break;
    }
}

static void print_array(const gguf_value *value, bool show_all)
{
    uint64_t count = value->as.array.count;
    uint64_t shown =
        !show_all && count > INSPECT_ARRAY_ELEMENTS_SHOWN ? INSPECT_ARRAY_ELEMENTS_SHOWN : count;
    putchar('[');
    for (uint64_t i = 0; i < shown; i++) {
        if (i > 0)
            fputs(", ", stdout);
        if (value->as.array.element_type == GGUF_TYPE_STRING) {
            gguf_string string = value->as.array.strings[i];
            print_quoted(string.data, string.length, show_all);
        } else {
            gguf_value element = array_element(value, i);
            print_scalar(&element, show_all);
        }
    }
    if (shown < count)
        printf(", ... %" PRIu64 " more", count - shown);
    putchar(']');
}

static void print_metadata(const gguf_file *file, bool show_all)
{
    printf("metadata:  %" PRIu64 " keys\n", gguf_metadata_count(file));
    for (uint64_t i = 0; i < gguf_metadata_count(file); i++) {
        const gguf_value *value = gguf_metadata_value(file, i);
        char type[48];
        if (value->type == GGUF_TYPE_ARRAY)
            snprintf(type, sizeof type, "%s[%" PRIu64 "]",
                     gguf_value_type_name(value->as.array.element_type), value->as.array.count);
        else
            snprintf(type, sizeof type, "%s", gguf_value_type_name(value->type));
        printf("  %-*s %-16s ", INSPECT_KEY_COLUMN, gguf_metadata_key(file, i), type);
        if (value->type == GGUF_TYPE_ARRAY)
            print_array(value, show_all);
        else
            print_scalar(value, show_all);
        putchar('\n');
    }
}

static void format_dims(const gguf_tensor *tensor, char *buffer, size_t capacity)
{
    size_t used = 0;
    buffer[0] = '\0';
    for (uint32_t d = 0; d < tensor->n_dims && used < capacity; d++) {
        int written =
            snprintf(buffer + used, capacity - used, "%s%" PRIu64, d ? " x " : "", tensor->ne[d]);
        if (written < 0)
            break;
        used += (size_t)written;
    }
}

static double mebibytes(uint64_t bytes)
{
    return (double)bytes / (1024.0 * 1024.0);
}

static void print_tensors(const gguf_file *file)
{
    uint64_t count = gguf_tensor_count(file);
    int name_column = 4;
    for (uint64_t i = 0; i < count; i++) {
        int length = (int)strlen(gguf_tensor_at(file, i)->name);
        name_column = length > name_column ? length : name_column;
    }
    printf("tensors:   %" PRIu64 "\n", count);
    printf("  %-*s %-6s %-28s %14s %14s\n", name_column, "name", "type", "dims", "offset", "bytes");
    uint64_t total_bytes = 0;
    uint64_t count_by_type[TENSOR_TYPE_LIMIT] = {0};
    uint64_t bytes_by_type[TENSOR_TYPE_LIMIT] = {0};
    for (uint64_t i = 0; i < count; i++) {
        const gguf_tensor *tensor = gguf_tensor_at(file, i);
        char dims[96];
        format_dims(tensor, dims, sizeof dims);
        printf("  %-*s %-6s %-28s %14" PRIu64 " %14" PRIu64 "\n", name_column, tensor->name,
               tensor_type_name(tensor->type), dims, tensor->offset, tensor->bytes);
        total_bytes += tensor->bytes;
        count_by_type[tensor->type]++;
        bytes_by_type[tensor->type] += tensor->bytes;
    }
    printf("totals:    %" PRIu64 " tensors, %" PRIu64 " bytes (%.1f MiB)\n", count, total_bytes,
           mebibytes(total_bytes));
    for (int type = 0; type < TENSOR_TYPE_LIMIT; type++)
        if (count_by_type[type] > 0)
            printf("  %-6s %6" PRIu64 " tensors %14" PRIu64 " bytes (%.1f MiB)\n",
                   tensor_type_name((uint32_t)type), count_by_type[type], bytes_by_type[type],
                   mebibytes(bytes_by_type[type]));
}

int command_inspect(int argc, char **argv)
{
    const char *path = NULL;
    bool show_all = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            print_usage(stdout);
            return 0;
        }
        if (strcmp(argv[i], "--all") == 0) {
            show_all = true;
        } else if (argv[i][0] == '-' && argv[i][1] != '\0') {
            fprintf(stderr, "strata inspect: unknown option '%s'\n", argv[i]);
            print_usage(stderr);
            return 2;
        } else if (path != NULL) {
            fprintf(stderr, "strata inspect: one FILE only (got '%s' and '%s')\n", path, argv[i]);
            print_usage(stderr);
            return 2;
        } else {
            path = argv[i];
        }
    }
    if (path == NULL) {
        print_usage(stderr);
        return 2;
    }

    gguf_file *file = NULL;
    strata_error err;
    if (gguf_open(path, &file, &err) != STRATA_OK) {
        fprintf(stderr, "strata inspect: %s\n", err.message);
        return 1;
    }
    printf("file:      %s (%" PRIu64 " bytes, %.1f MiB)\n", path, gguf_file_size(file),
           mebibytes(gguf_file_size(file)));
    printf("version:   %" PRIu32 "\n", gguf_version(file));
    printf("alignment: %" PRIu32 "\n", gguf_alignment(file));
    print_metadata(file, show_all);
    print_tensors(file);
    gguf_close(file);
    return 0;
}
