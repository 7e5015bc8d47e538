/* kv/policy/registry.c: the list of KV compression policies, in the order
 * --help prints them. Adding a policy is one file in kv/policy/ and one line
 * here; kv/policy.c finds policies by name in this table. */
#include "kv/policy.h"

extern const kv_policy_ops *const kv_policies[];
extern const int kv_policy_count;

const kv_policy_ops *const kv_policies[] = {
    &kv_policy_full,
    &kv_policy_streaming,
    &kv_policy_h2o,
    &kv_policy_snapkv,
    &kv_policy_pyramidkv,
    &kv_policy_merge,
    &kv_policy_quest,
    &kv_policy_duo,
    &kv_policy_cake,
    &kv_policy_windowkv,
    &kv_policy_lazy,
};

const int kv_policy_count = (int)(sizeof kv_policies / sizeof kv_policies[0]);
