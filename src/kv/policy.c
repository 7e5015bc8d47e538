/* kv/policy.c: the machinery every KV compression policy shares: finding a
 * policy by name, parsing its parameters, compacting a table together with
 * its statistics, and ranking slots by score. The policies themselves are
 * in kv/policy/, listed in kv/policy/registry.c. */
#include "kv/policy.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"

extern const kv_policy_ops *const kv_policies[];
extern const int kv_policy_count;

const kv_policy_ops *kv_policy_find(const char *name)
{
    for (int i = 0; i < kv_policy_count; i++)
        if (strcmp(kv_policies[i]->name, name) == 0)
            return kv_policies[i];
    return NULL;
}

void kv_policy_list_names(char *buffer, size_t capacity)
{
    size_t used = 0;
    if (capacity > 0)
        buffer[0] = '\0';
    for (int i = 0; i < kv_policy_count; i++) {
        int written = snprintf(buffer + used, capacity - used, "%s%s", i == 0 ? "" : ", ", kv_policies[i]->name);
        if (written < 0 || (size_t)written >= capacity - used)
            return;
        used += (size_t)written;
    }
}

int kv_policy_registry(const kv_policy_ops *const **out)
{
    *out = kv_policies;
    return kv_policy_count;
}

/* Lists a policy's parameters ("sinks (default 4)") for error messages. */
static void list_params(const kv_policy_ops *ops, char *buffer, size_t capacity)
{
    size_t used = 0;
    buffer[0] = '\0';
    if (ops->param_count == 0)
        snprintf(buffer, capacity, "none");
    for (int i = 0; i < ops->param_count; i++) {
        int written = snprintf(buffer + used, capacity - used, "%s%s (%.10g..%.10g, default %.10g)", i == 0 ? "" : ", ",
                               ops->params[i].name, ops->params[i].minimum, ops->params[i].maximum,
                               ops->params[i].default_value);
        if (written < 0 || (size_t)written >= capacity - used)
            return;
        used += (size_t)written;
    }
}

strata_status kv_policy_parse_params(const kv_policy_ops *ops, const char *text, double *values, strata_error *err)
{
    for (int i = 0; i < ops->param_count; i++)
        values[i] = ops->params[i].default_value;
    char valid[384];
    const char *cursor = text != NULL ? text : "";
    while (*cursor != '\0') {
        const char *end = strchr(cursor, ',');
        size_t length = end != NULL ? (size_t)(end - cursor) : strlen(cursor);
        const char *equals = memchr(cursor, '=', length);
        int index = -1;
        for (int i = 0; equals != NULL && i < ops->param_count; i++)
            if (strlen(ops->params[i].name) == (size_t)(equals - cursor) &&
                memcmp(ops->params[i].name, cursor, (size_t)(equals - cursor)) == 0)
                index = i;
        if (index < 0) {
            list_params(ops, valid, sizeof valid);
            return strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                               "KV policy '%s' has no parameter '%.*s' (give name=value; its parameters: %s)",
                               ops->name, (int)(equals != NULL ? (size_t)(equals - cursor) : length), cursor, valid);
        }
        char number[64];
        size_t number_length = length - (size_t)(equals + 1 - cursor);
        snprintf(number, sizeof number, "%.*s", (int)(number_length < 63 ? number_length : 63), equals + 1);
        char *parsed_end = NULL;
        errno = 0;
        double value = strtod(number, &parsed_end);
        const kv_policy_param *param = &ops->params[index];
        if (parsed_end == number || *parsed_end != '\0' || errno != 0 || !isfinite(value) ||
            value < param->minimum || value > param->maximum)
            return strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                               "KV policy '%s': parameter '%s' expects a number in %.10g..%.10g, got '%s'", ops->name,
                               param->name, param->minimum, param->maximum, number);
        values[index] = value;
        cursor += length + (end != NULL ? 1 : 0);
    }
    return STRATA_OK;
}

static bool has_param(const kv_policy_ops *ops, const char *name, size_t length)
{
    for (int i = 0; ops != NULL && i < ops->param_count; i++)
        if (strlen(ops->params[i].name) == length && memcmp(ops->params[i].name, name, length) == 0)
            return true;
    return false;
}

strata_status kv_policy_parse_composed(const kv_policy_ops *policy, const kv_policy_ops *precision, const char *text,
                                       double *policy_values, double *precision_values, strata_error *err)
{
    char policy_text[512] = "", precision_text[512] = "";
    size_t policy_used = 0, precision_used = 0;
    const char *cursor = text != NULL ? text : "";
    if (strlen(cursor) >= sizeof policy_text)
        return strata_fail(err, STRATA_E_INVALID_ARGUMENT, "KV policy parameters are %zu characters, more than %zu",
                           strlen(cursor), sizeof policy_text - 1);
    /* Each name=value goes to the policy that has the name: the eviction policy first. */
    while (*cursor != '\0') {
        const char *end = strchr(cursor, ',');
        size_t length = end != NULL ? (size_t)(end - cursor) : strlen(cursor);
        const char *equals = memchr(cursor, '=', length);
        size_t name_length = equals != NULL ? (size_t)(equals - cursor) : length;
        if (precision != NULL && !has_param(policy, cursor, name_length) &&
            !has_param(precision, cursor, name_length)) {
            char policy_valid[384], precision_valid[384];
            list_params(policy, policy_valid, sizeof policy_valid);
            list_params(precision, precision_valid, sizeof precision_valid);
            return strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                               "KV policy '%s+%s' has no parameter '%.*s' (give name=value; %s takes: %s; %s takes: %s)",
                               policy->name, precision->name, (int)name_length, cursor, policy->name, policy_valid,
                               precision->name, precision_valid);
        }
        bool to_precision = precision != NULL && !has_param(policy, cursor, name_length);
        char *target = to_precision ? precision_text : policy_text;
        size_t *used = to_precision ? &precision_used : &policy_used;
        *used += (size_t)snprintf(target + *used, sizeof policy_text - *used, "%s%.*s", *used > 0 ? "," : "",
                                  (int)length, cursor);
        cursor += length + (end != NULL ? 1 : 0);
    }
    strata_status status = kv_policy_parse_params(policy, policy_text, policy_values, err);
    if (status == STRATA_OK && precision != NULL)
        status = kv_policy_parse_params(precision, precision_text, precision_values, err);
    return status;
}

double kv_policy_param_value(const kv_policy_ops *ops, const double *values, const char *name)
{
    for (int i = 0; i < ops->param_count; i++)
        if (strcmp(ops->params[i].name, name) == 0)
            return values[i];
    return 0.0;
}

/* MiKV-style: instead of dropping the slots not kept, packs every full block
 * holding none of the kept slots. A full pool leaves the rest unpacked. */
static strata_status demote_unkept_blocks(const kv_policy_view *view, int32_t layer, int32_t kv_head,
                                          const int64_t *keep, int64_t count, strata_error *err)
{
    int64_t block_tokens = kv_pool_configuration(kv_seq_pool(view->seq))->block_tokens;
    int64_t full_blocks = kv_seq_table(view->seq, layer, kv_head)->slot_count / block_tokens;
    int64_t next = 0; /* the first kept slot not yet passed */
    for (int64_t b = 0; b < full_blocks; b++) {
        while (next < count && keep[next] < b * block_tokens)
            next++;
        if (next < count && keep[next] < (b + 1) * block_tokens)
            continue; /* the block holds a kept slot */
        strata_status status = kv_seq_convert_block(view->seq, layer, kv_head, (int32_t)b, view->demote_to, err);
        if (status == STRATA_E_KV_FULL)
            return STRATA_OK;
        if (status != STRATA_OK)
            return status;
    }
    return STRATA_OK;
}

strata_status kv_policy_keep(const kv_policy_view *view, int32_t layer, int32_t kv_head, const int64_t *keep,
                             int64_t count, strata_error *err)
{
    const kv_pool_config *config = kv_pool_configuration(kv_seq_pool(view->seq));
    if (view->demote_to != config->storage)
        return demote_unkept_blocks(view, layer, kv_head, keep, count, err);
    strata_status status = kv_seq_keep(view->seq, layer, kv_head, keep, count, err);
    if (status != STRATA_OK)
        return status;
    int64_t table = (int64_t)layer * view->kv_head_count + kv_head;
    float *arrays[2 + KV_POLICY_MAX_SLOT_ARRAYS];
    int array_count = 0;
    arrays[array_count++] = view->mass != NULL ? view->mass[table] : NULL;
    arrays[array_count++] = view->mass_squares != NULL ? view->mass_squares[table] : NULL;
    for (int k = 0; k < view->slot_array_count; k++)
        arrays[array_count++] = view->slot_arrays[table * view->slot_array_count + k];
    for (int a = 0; a < array_count; a++)
        if (arrays[a] != NULL)
            for (int64_t j = 0; j < count; j++) /* keep[j] >= j: moving forward in order is safe */
                arrays[a][j] = arrays[a][keep[j]];
    return STRATA_OK;
}

strata_status kv_policy_largest_table(const kv_policy_view *view, int64_t budget, bool needs_mass, const char *policy,
                                      int64_t *most_slots, strata_error *err)
{
    *most_slots = 0;
    for (int32_t layer = 0; layer < view->layer_count; layer++) {
        if (view->layer_is_windowed != NULL && view->layer_is_windowed[layer])
            continue;
        for (int32_t head = 0; head < view->kv_head_count; head++) {
            int64_t slots = kv_seq_table(view->seq, layer, head)->slot_count;
            if (needs_mass && slots > budget &&
                (view->mass == NULL || view->mass[(int64_t)layer * view->kv_head_count + head] == NULL))
                return strata_fail(err, STRATA_E_INVALID_ARGUMENT,
                                   "%s: no attention mass for layer %" PRId32 " KV head %" PRId32
                                   " (the session must keep the statistics the policy declares)",
                                   policy, layer, head);
            if (slots > *most_slots)
                *most_slots = slots;
        }
    }
    return STRATA_OK;
}

strata_status kv_policy_keep_sinks_and_recent(const kv_policy_view *view, int32_t layer, int32_t kv_head,
                                              int64_t sinks, int64_t *keep, strata_error *err)
{
    if (sinks >= view->budget)
        sinks = 0; /* too small a budget for sinks: a plain window of the last `budget` slots */
    int64_t recent = view->budget - sinks;
    int64_t slots = kv_seq_table(view->seq, layer, kv_head)->slot_count, count = 0;
    for (int64_t i = 0; i < sinks; i++)
        keep[count++] = i;
    for (int64_t i = slots - recent; i < slots; i++)
        keep[count++] = i;
    return kv_policy_keep(view, layer, kv_head, keep, count, err);
}

static int by_score_descending(const void *a, const void *b, void *context)
{
    const float *scores = context;
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    if (scores[x] != scores[y])
        return scores[x] < scores[y] ? 1 : -1;
    return (x > y) - (x < y);
}

void kv_policy_rank(const float *scores, int64_t n, int64_t *order)
{
    for (int64_t i = 0; i < n; i++)
        order[i] = i;
    qsort_r(order, (size_t)n, sizeof *order, by_score_descending, (void *)scores);
}

static int by_index(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

void kv_policy_sort_indices(int64_t *indices, int64_t n)
{
    qsort(indices, (size_t)n, sizeof *indices, by_index);
}
