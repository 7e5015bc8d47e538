/* kv/policy/snapkv_select.h: SnapKV's choice of slots, shared by the
 * policies that score keys as SnapKV does (snapkv, pyramidkv) and differ
 * only in how many slots each layer keeps. Private to kv/policy/. */
#ifndef STRATA_KV_POLICY_SNAPKV_SELECT_H
#define STRATA_KV_POLICY_SNAPKV_SELECT_H

#include <stdint.h>

#include "kv/policy.h"
#include "strata.h"

/* The first parameters of every SnapKV-style policy, in this order. */
enum { SNAPKV_OBSERVATION = 0, SNAPKV_KERNEL = 1, SNAPKV_POOLING = 2 };

/* Compresses every table of a global layer that holds more than
 * layer_budgets[layer] slots (NULL: view->budget for every layer) to that
 * many: the last min(observation, budget) slots plus the rest of the budget
 * by pooled observation mass, as kv/policy/snapkv.c explains. Budgets of
 * windowed layers are not read; each budget must be at least 0. policy
 * names the caller in error messages. */
strata_status snapkv_compress(const kv_policy_view *view, const int64_t *layer_budgets, const char *policy,
                              strata_error *err);

#endif
