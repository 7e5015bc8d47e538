/* format/gguf_writer.h: building GGUF files in memory and writing them out.
 *
 * A writer collects metadata pairs and tensors, then lays them out the way
 * format/gguf.c reads them: header, pairs in the order they were first set,
 * tensor infos in the order they were added, padding, then each tensor's data
 * padded to the alignment. Files are version 3 unless gguf_writer_set_version
 * asks for 2 (same layout).
 *
 * The alignment is general.alignment when that key holds a u32 power of two,
 * and 32 otherwise. Any other value of general.alignment is still written as
 * given, so tests can build files a reader must refuse. Setting a key twice
 * replaces its value in place. Keys, strings, array elements and tensor bytes
 * are copied: nothing the caller passes has to outlive the call. */
#ifndef STRATA_FORMAT_GGUF_WRITER_H
#define STRATA_FORMAT_GGUF_WRITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "format/gguf.h"
#include "quant/types.h"
#include "strata.h"

typedef struct gguf_writer gguf_writer;

/* Creates an empty writer (version 3, no pairs, no tensors). */
strata_status gguf_writer_create(gguf_writer **out, strata_error *err);
/* Frees the writer and everything it copied; accepts NULL. */
void gguf_writer_destroy(gguf_writer *writer);
/* Chooses the GGUF version of the header: 2 or 3. */
strata_status gguf_writer_set_version(gguf_writer *writer, uint32_t version, strata_error *err);

/* Sets key to a u8 value. */
strata_status gguf_writer_set_u8(gguf_writer *writer, const char *key, uint8_t value,
                                 strata_error *err);
/* Sets key to an i8 value. */
strata_status gguf_writer_set_i8(gguf_writer *writer, const char *key, int8_t value,
                                 strata_error *err);
/* Sets key to a u16 value. */
strata_status gguf_writer_set_u16(gguf_writer *writer, const char *key, uint16_t value,
                                  strata_error *err);
/* Sets key to an i16 value. */
strata_status gguf_writer_set_i16(gguf_writer *writer, const char *key, int16_t value,
                                  strata_error *err);
/* Sets key to a u32 value. */
strata_status gguf_writer_set_u32(gguf_writer *writer, const char *key, uint32_t value,
                                  strata_error *err);
/* Sets key to an i32 value. */
strata_status gguf_writer_set_i32(gguf_writer *writer, const char *key, int32_t value,
                                  strata_error *err);
/* Sets key to a u64 value. */
strata_status gguf_writer_set_u64(gguf_writer *writer, const char *key, uint64_t value,
                                  strata_error *err);
/* Sets key to an i64 value. */
strata_status gguf_writer_set_i64(gguf_writer *writer, const char *key, int64_t value,
                                  strata_error *err);
/* Sets key to an f32 value. */
strata_status gguf_writer_set_f32(gguf_writer *writer, const char *key, float value,
                                  strata_error *err);
/* Sets key to an f64 value. */
strata_status gguf_writer_set_f64(gguf_writer *writer, const char *key, double value,
                                  strata_error *err);
/* Sets key to a bool value. */
strata_status gguf_writer_set_bool(gguf_writer *writer, const char *key, bool value,
                                   strata_error *err);
/* Sets key to a NUL-terminated string. */
strata_status gguf_writer_set_string(gguf_writer *writer, const char *key, const char *value,
                                     strata_error *err);
/* Sets key to an array of count scalars. elements holds them as C values of
 * the element type (uint8_t ... int64_t, float, double, bool), in host order. */
strata_status gguf_writer_set_array(gguf_writer *writer, const char *key,
                                    gguf_value_type element_type, const void *elements,
                                    uint64_t count, strata_error *err);
/* Sets key to an array of count NUL-terminated strings. */
strata_status gguf_writer_set_string_array(gguf_writer *writer, const char *key,
                                           const char *const *strings, uint64_t count,
                                           strata_error *err);

/* Adds a tensor of n_dims dimensions ne[] (innermost first). bytes must be
 * the size the shape and type call for; data is copied, or zeros when NULL. */
strata_status gguf_writer_add_tensor(gguf_writer *writer, const char *name, uint32_t n_dims,
                                     const uint64_t *ne, tensor_type type, const void *data,
                                     uint64_t bytes, strata_error *err);

/* Lays the file out into a new buffer (*bytes, *size) the caller frees with free(). */
strata_status gguf_writer_write_memory(const gguf_writer *writer, uint8_t **bytes, size_t *size,
                                       strata_error *err);
/* Lays the file out and writes it to path, replacing what was there. */
strata_status gguf_writer_write_file(const gguf_writer *writer, const char *path,
                                     strata_error *err);

#endif
