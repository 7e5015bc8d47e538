#!/usr/bin/env bash
# bench/kv-vs-llamacpp.sh: the KV cache core's benchmarks on one model.
#
# Usage: bench/kv-vs-llamacpp.sh [-m MODEL] [-t THREADS] [--quick]
#   1. batched decode, 1 / 4 / 16 sequences (32-token prompts, 32 steps):
#      strata-kv-bench batch beside llama.cpp's llama-batched-bench with the
#      same prompt length, steps, batch sizes and threads (its S_TG column);
#   2. 16 continuations of one 4096-token prompt: KV bytes when forked
#      (shared prompt blocks) versus each prefilling its own copy;
#   3. 32 requests sharing a 2048-token system prompt, each with its own
#      64-token question: time to first token, prefix cache off versus on
#      (llama.cpp has no cross-request prefix cache in its CLI tools; the
#      "off" column is the engine computing every prompt in full).
# --quick shrinks 2 and 3 (1024-token prompt, 8 requests of 512 + 32) for CI-sized runs.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
model="" threads=2 quick=0
while [ $# -gt 0 ]; do
    case "$1" in
        -m) model=$2; shift 2 ;;
        -t) threads=$2; shift 2 ;;
        --quick) quick=1; shift ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "kv-vs-llamacpp: unknown option $1" >&2; exit 2 ;;
    esac
done
[ -n "$model" ] || model=$("$root/scripts/fetch-model.sh")
bench="${STRATA_BUILD:-$root/build}/strata-kv-bench"
[ -x "$bench" ] || { echo "kv-vs-llamacpp: $bench is missing; run 'make build'" >&2; exit 1; }
peer_bin=$("$root/scripts/peer-build.sh")

echo "== batched decode (tok/s over all sequences), $threads threads"
ours=$("$bench" batch -m "$model" -t "$threads" --sequences 1,4,16 --prompt 32 --steps 32 --json)
theirs=$("$peer_bin/llama-batched-bench" -m "$model" -c 4096 -b 2048 -ub 512 -npp 32 -ntg 32 -npl 1,4,16 \
    -t "$threads" 2>/dev/null | grep -E '^\|\s+32 \|')
python3 - "$ours" "$theirs" <<'PY'
import json, sys
ours = {r["sequences"]: r["decode_tok_s"] for r in map(json.loads, sys.argv[1].splitlines())}
theirs = {}
for line in sys.argv[2].splitlines():
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    theirs[int(cells[2])] = float(cells[7])  # B, S_TG t/s
print(f"{'sequences':>10}{'strata':>10}{'llama.cpp':>11}{'ratio':>8}")
for n in sorted(ours):
    t = theirs.get(n)
    print(f"{n:>10}{ours[n]:>10.1f}{t:>11.1f}{ours[n] / t:>8.2f}" if t else f"{n:>10}{ours[n]:>10.1f}{'-':>11}")
PY

if [ "$quick" = 1 ]; then
    fork_args="--prompt 1024" prefix_args="--requests 8 --system 512 --question 32"
else
    fork_args="--prompt 4096" prefix_args="--requests 32 --system 2048 --question 64"
fi
echo "== parallel continuations: KV shared by forking vs copied"
# shellcheck disable=SC2086
"$bench" fork -m "$model" -t "$threads" --parallel 16 --generate 32 $fork_args
echo "== shared system prompt: time to first token"
# shellcheck disable=SC2086
"$bench" prefix -m "$model" -t "$threads" $prefix_args
