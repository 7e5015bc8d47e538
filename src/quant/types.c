/* quant/types.c: the table of ggml tensor types, indexed by type id.
 *
 * One row per id that ggml defines and strata knows the layout of; ids ggml
 * retired (4 and 5 were Q4_2 and Q4_3) or that strata does not know are left
 * empty, so a file naming them is refused when it is opened. `computable`
 * marks the types the quant kernels can dequantize and multiply with. */
#include "quant/types.h"

#include <stddef.h>

static const tensor_type_info tensor_types[TENSOR_TYPE_LIMIT] = {
    [TENSOR_F32] = {"F32", 1, 4, true},
    [TENSOR_F16] = {"F16", 1, 2, true},
    [TENSOR_Q4_0] = {"Q4_0", 32, 18, true},
    [TENSOR_Q4_1] = {"Q4_1", 32, 20, true},
    [TENSOR_Q5_0] = {"Q5_0", 32, 22, true},
    [TENSOR_Q5_1] = {"Q5_1", 32, 24, true},
    [TENSOR_Q8_0] = {"Q8_0", 32, 34, true},
    [TENSOR_Q8_1] = {"Q8_1", 32, 36, false},
    [TENSOR_Q2_K] = {"Q2_K", 256, 84, false},
    [TENSOR_Q3_K] = {"Q3_K", 256, 110, false},
    [TENSOR_Q4_K] = {"Q4_K", 256, 144, true},
    [TENSOR_Q5_K] = {"Q5_K", 256, 176, true},
    [TENSOR_Q6_K] = {"Q6_K", 256, 210, true},
    [TENSOR_Q8_K] = {"Q8_K", 256, 292, false},
    [TENSOR_I8] = {"I8", 1, 1, false},
    [TENSOR_I16] = {"I16", 1, 2, false},
    [TENSOR_I32] = {"I32", 1, 4, false},
    [TENSOR_I64] = {"I64", 1, 8, false},
    [TENSOR_F64] = {"F64", 1, 8, false},
    [TENSOR_BF16] = {"BF16", 1, 2, true},
};

const tensor_type_info *tensor_type_lookup(uint32_t type)
{
    if (type >= TENSOR_TYPE_LIMIT || tensor_types[type].name == NULL)
        return NULL;
    return &tensor_types[type];
}

const char *tensor_type_name(uint32_t type)
{
    const tensor_type_info *info = tensor_type_lookup(type);
    return info != NULL ? info->name : "unknown";
}

uint64_t tensor_row_bytes(tensor_type type, uint64_t n)
{
    const tensor_type_info *info = tensor_type_lookup((uint32_t)type);
    if (info == NULL)
        return 0;
    return n / info->block_elements * info->block_bytes;
}
