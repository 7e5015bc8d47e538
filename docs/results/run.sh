#!/usr/bin/env bash
# docs/results/run.sh: the reference sweep of `strata eval` on Gemma 3 270M
# (docs/results/README.md). Resumable: a rerun skips the records already in
# gemma3-270m.jsonl, so a sweep cut short is continued by running it again.
# The repository keeps the records gzipped (gemma3-270m.jsonl.gz): they are
# unpacked before the sweep and packed again after it.
#
# 1. Five tasks on the noise haystack at LENGTHS (default 4096, 8192 and 16384),
#    with fidelity on real prose at each length.
# 2. The other four tasks (noise), and niah_single on real prose, at
#    EXTRA_LENGTHS (default 4096).
# SAMPLES (default 10) samples per task and length; every policy at budgets
# 256, 1024 and 4096, the full cache and the precisions alone.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
here="$root/docs/results"
records="$here/gemma3-270m.jsonl"
[ -f "$records" ] || [ ! -f "$records.gz" ] || gzip -dc "$records.gz" > "$records"
sweep() {
    "$root/build/strata" eval -t "${THREADS:-2}" --samples "${SAMPLES:-10}" --seed 1 \
        --policies full,q8,q4,kivi4,kivi2,streaming,h2o,snapkv,pyramidkv,cake,windowkv,lazy,duo,merge,quest,mixed \
        --budgets 256,1024,4096 --kv-profile "$here/gemma3-270m-head-profile.txt" \
        -o "$records" "$@"
}
sweep --tasks passkey,niah_single,niah_multikey,variable_tracking,multiturn --haystacks noise \
    --lengths "${LENGTHS:-4096,8192,16384}" --fidelity "${FIDELITY:-2}"
sweep --tasks niah_multivalue,niah_multiquery,common_words,multirequest --haystacks noise \
    --lengths "${EXTRA_LENGTHS:-4096}"
sweep --tasks niah_single --haystacks prose --lengths "${EXTRA_LENGTHS:-4096}"
gzip -9 -c "$records" > "$records.gz"
