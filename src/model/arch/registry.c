/* model/arch/registry.c: the table of supported architectures, by name. */
#include <stdio.h>
#include <string.h>

#include "model/arch.h"

static const arch_descriptor *const architectures[] = {
    &arch_llama,
    &arch_qwen2,
    &arch_qwen3,
    &arch_gemma3,
};

const arch_descriptor *arch_find(const char *name, size_t length)
{
    for (size_t i = 0; i < sizeof architectures / sizeof architectures[0]; i++)
        if (strlen(architectures[i]->name) == length && memcmp(architectures[i]->name, name, length) == 0)
            return architectures[i];
    return NULL;
}

void arch_list_names(char *buffer, size_t capacity)
{
    size_t used = 0;
    if (capacity > 0)
        buffer[0] = '\0';
    for (size_t i = 0; i < sizeof architectures / sizeof architectures[0]; i++) {
        int written = snprintf(buffer + used, capacity - used, "%s%s", i == 0 ? "" : ", ",
                               architectures[i]->name);
        if (written < 0 || (size_t)written >= capacity - used)
            return;
        used += (size_t)written;
    }
}
