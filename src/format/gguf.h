/* format/gguf.h: reading GGUF files (versions 2 and 3) over mmap.
 *
 * gguf_open maps the whole file read-only and validates it completely before
 * returning: every count, string length, array length, tensor shape, type,
 * offset and size is checked against the file's size with overflow-safe
 * arithmetic, so a truncated or corrupted file is refused with a sentence
 * naming the problem and nothing later can read outside the mapping.
 * Metadata values and tensor data point into the mapping and live until
 * gguf_close. String-array values are indexed once at open so element i is
 * O(1). */
#ifndef STRATA_FORMAT_GGUF_H
#define STRATA_FORMAT_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "strata.h"
#include "quant/types.h"

typedef enum gguf_value_type {
    GGUF_TYPE_UINT8 = 0,
    GGUF_TYPE_INT8 = 1,
    GGUF_TYPE_UINT16 = 2,
    GGUF_TYPE_INT16 = 3,
    GGUF_TYPE_UINT32 = 4,
    GGUF_TYPE_INT32 = 5,
    GGUF_TYPE_FLOAT32 = 6,
    GGUF_TYPE_BOOL = 7,
    GGUF_TYPE_STRING = 8,
    GGUF_TYPE_ARRAY = 9,
    GGUF_TYPE_UINT64 = 10,
    GGUF_TYPE_INT64 = 11,
    GGUF_TYPE_FLOAT64 = 12,
} gguf_value_type;

/* A GGUF string: bytes inside the mapping, not NUL-terminated. */
typedef struct gguf_string {
    const char *data;
    uint64_t length;
} gguf_string;

/* One metadata value. Scalars are decoded; arrays keep their packed elements
 * in the mapping (data, count, element_type), and string arrays also have
 * strings[count] indexed at open. */
typedef struct gguf_value {
    gguf_value_type type;
    union {
        uint64_t u64;  /* UINT8, UINT16, UINT32, UINT64 and BOOL */
        int64_t i64;   /* INT8, INT16, INT32, INT64 */
        double f64;    /* FLOAT32, FLOAT64 */
        gguf_string string;
        struct {
            gguf_value_type element_type;
            uint64_t count;
            const void *data;           /* packed elements (not for strings) */
            const gguf_string *strings; /* for element_type == GGUF_TYPE_STRING */
        } array;
    } as;
} gguf_value;

typedef struct gguf_tensor {
    char name[256];     /* NUL-terminated copy of the name */
    uint32_t n_dims;
    uint64_t ne[4];     /* elements per dimension, innermost first; unused ones are 1 */
    tensor_type type;
    uint64_t offset;    /* from the start of the data section */
    uint64_t bytes;     /* total size in bytes */
    const void *data;   /* inside the mapping */
} gguf_tensor;

typedef struct gguf_file gguf_file;

/* Maps and validates a GGUF file; on failure *out is NULL and err says why. */
strata_status gguf_open(const char *path, gguf_file **out, strata_error *err);
/* Validates a GGUF image already in memory (not copied: it must outlive the result). */
strata_status gguf_open_memory(const void *bytes, size_t size, const char *name, gguf_file **out,
                               strata_error *err);
/* Unmaps and frees; accepts NULL. */
void gguf_close(gguf_file *file);

/* Returns the GGUF version (2 or 3). */
uint32_t gguf_version(const gguf_file *file);
/* Returns the alignment of the data section. */
uint32_t gguf_alignment(const gguf_file *file);
/* Returns the file size in bytes. */
uint64_t gguf_file_size(const gguf_file *file);

/* Returns the number of metadata key/value pairs. */
uint64_t gguf_metadata_count(const gguf_file *file);
/* Returns the key of the index-th pair (NUL-terminated copy). */
const char *gguf_metadata_key(const gguf_file *file, uint64_t index);
/* Returns the value of the index-th pair. */
const gguf_value *gguf_metadata_value(const gguf_file *file, uint64_t index);
/* Returns the value stored under key, or NULL. */
const gguf_value *gguf_find(const gguf_file *file, const char *key);

/* Reads an integer key of any integer type into *out; returns false when the
 * key is absent. A present key of a non-integer type, or a negative value,
 * is a format error. */
strata_status gguf_get_uint(const gguf_file *file, const char *key, uint64_t *out, bool *found,
                            strata_error *err);
/* Reads a float key (f32 or f64, or any integer) into *out; *found false when absent. */
strata_status gguf_get_float(const gguf_file *file, const char *key, double *out, bool *found,
                             strata_error *err);
/* Reads a bool key into *out; *found false when absent. */
strata_status gguf_get_bool(const gguf_file *file, const char *key, bool *out, bool *found,
                            strata_error *err);
/* Reads a string key (a pointer into the mapping, not NUL-terminated); *found false when absent. */
strata_status gguf_get_string(const gguf_file *file, const char *key, gguf_string *out, bool *found,
                              strata_error *err);

/* Returns the number of tensors. */
uint64_t gguf_tensor_count(const gguf_file *file);
/* Returns the index-th tensor. */
const gguf_tensor *gguf_tensor_at(const gguf_file *file, uint64_t index);
/* Returns the tensor with this name, or NULL. */
const gguf_tensor *gguf_tensor_find(const gguf_file *file, const char *name);

/* Returns a short name for a value type ("u32", "string", "array"). */
const char *gguf_value_type_name(gguf_value_type type);

#endif
