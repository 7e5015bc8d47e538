/* quant/types.h: the ggml tensor types strata reads, and their block layouts.
 *
 * Type ids are ggml's (they are stored in GGUF files). A quantized type packs
 * block_elements values into block_bytes bytes; a row of n values (n a
 * multiple of block_elements) is n / block_elements consecutive blocks. The
 * packed layouts are described in quant/dequantize.c. */
#ifndef STRATA_QUANT_TYPES_H
#define STRATA_QUANT_TYPES_H

#include <stdbool.h>
#include <stdint.h>

typedef enum tensor_type {
    TENSOR_F32 = 0,
    TENSOR_F16 = 1,
    TENSOR_Q4_0 = 2,
    TENSOR_Q4_1 = 3,
    TENSOR_Q5_0 = 6,
    TENSOR_Q5_1 = 7,
    TENSOR_Q8_0 = 8,
    TENSOR_Q8_1 = 9,
    TENSOR_Q2_K = 10,
    TENSOR_Q3_K = 11,
    TENSOR_Q4_K = 12,
    TENSOR_Q5_K = 13,
    TENSOR_Q6_K = 14,
    TENSOR_Q8_K = 15,
    TENSOR_I8 = 24,
    TENSOR_I16 = 25,
    TENSOR_I32 = 26,
    TENSOR_I64 = 27,
    TENSOR_F64 = 28,
    TENSOR_BF16 = 30,
    TENSOR_TYPE_LIMIT = 40, /* ids at or above this are unknown */
} tensor_type;

typedef struct tensor_type_info {
    const char *name;        /* "Q4_K" */
    uint32_t block_elements; /* values per block (1 for plain types) */
    uint32_t block_bytes;    /* bytes per block */
    bool computable;         /* strata can dequantize it and multiply with it */
} tensor_type_info;

/* Returns the layout of a type id, or NULL for ids ggml does not define. */
const tensor_type_info *tensor_type_lookup(uint32_t type);
/* Returns the type's name, or "unknown". */
const char *tensor_type_name(uint32_t type);
/* Returns the bytes of one row of n values (n must be a multiple of the block). */
uint64_t tensor_row_bytes(tensor_type type, uint64_t n);

#endif
