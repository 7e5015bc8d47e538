#!/usr/bin/env bash
# docs/results/run.sh: the reference sweep of `strata eval` on Gemma 3 270M
# (docs/results/README.md). Resumable: a rerun skips the records already in
# gemma3-270m.jsonl, so a sweep cut short is continued by running it again.
# LENGTHS (default "4096,8192") and SAMPLES (default 10) widen it.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
here="$root/docs/results"
"$root/build/strata" eval -t "${THREADS:-2}" \
    --tasks passkey,niah_single,niah_multikey,variable_tracking,multiturn --haystacks noise \
    --lengths "${LENGTHS:-4096,8192}" --samples "${SAMPLES:-10}" --seed 1 \
    --policies full,q8,q4,kivi4,kivi2,streaming,h2o,snapkv,pyramidkv,cake,windowkv,lazy,duo,merge,quest,mixed \
    --budgets 256,1024,4096 --kv-profile "$here/gemma3-270m-head-profile.txt" \
    --fidelity "${FIDELITY:-2}" -o "$here/gemma3-270m.jsonl"
