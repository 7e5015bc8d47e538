#!/usr/bin/env bash
# bench/precision-vs-llamacpp.sh: KV precisions beside llama.cpp's KV cache types.
#
# Usage: bench/precision-vs-llamacpp.sh [-m MODEL] [-t THREADS] [--depth 16384] [--generate 32]
# For f16, q8 (llama.cpp q8_0) and q4 (q4_0): the KV bytes after a
# DEPTH-token context and the decode speed of GENERATE tokens on top of it.
#   strata: strata-kv-bench policies --kv-type f16 (the base type llama.cpp
#           uses), the precision alone; KV bytes the session holds.
#   llama.cpp: llama-bench -d DEPTH -n GENERATE -ctk T -ctv T -fa on (a
#           quantized V cache needs flash attention there); KV bytes are the
#           buffer sizes its log reports for that context.
# Both engines compute the same model on the same threads, one after the other.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
model="" threads=2 depth=16384 generate=32
while [ $# -gt 0 ]; do
    case "$1" in
        -m) model=$2; shift 2 ;;
        -t) threads=$2; shift 2 ;;
        --depth) depth=$2; shift 2 ;;
        --generate) generate=$2; shift 2 ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "precision-vs-llamacpp: unknown option $1" >&2; exit 2 ;;
    esac
done
[ -n "$model" ] || model=$("$root/scripts/fetch-model.sh")
bench="${STRATA_BUILD:-$root/build}/strata-kv-bench"
[ -x "$bench" ] || { echo "precision-vs-llamacpp: $bench is missing; run 'make build'" >&2; exit 1; }
peer_bin=$("$root/scripts/peer-build.sh")

ours=$("$bench" policies -m "$model" -t "$threads" --kv-type f16 --prompt "$depth" --generate "$generate" \
    --budgets 1 --policies full,q8,q4 --json)
theirs=""
for type in f16 q8_0 q4_0; do
    log=$(mktemp)
    result=$("$peer_bin/llama-bench" -m "$model" -t "$threads" -p 0 -n "$generate" -d "$depth" -r 1 \
        -ctk "$type" -ctv "$type" -fa on -o json -v 2>"$log")
    # The KV buffers llama.cpp allocates for the context (all caches: global and sliding-window layers).
    kv=$(grep -oE 'KV buffer size = +[0-9.]+ MiB' "$log" | awk '{s += $5} END {print s + 0}')
    tg=$(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print(r[-1]["avg_ts"])' "$result")
    theirs+="$type $kv $tg"$'\n'
    rm -f "$log"
done
python3 - "$ours" "$theirs" "$depth" "$generate" "$threads" <<'PY'
import json, sys
ours = {r["policy"]: r for r in map(json.loads, sys.argv[1].splitlines())}
theirs = {}
for line in sys.argv[2].split("\n"):
    if line.strip():
        name, kv, tg = line.split()
        theirs[name] = (float(kv), float(tg))
print(f"depth {sys.argv[3]} tokens, {sys.argv[4]} decoded, {sys.argv[5]} threads")
print(f"{'KV type':<14}{'strata KV MiB':>14}{'llama.cpp KV MiB':>18}{'strata tok/s':>14}{'llama.cpp tok/s':>17}{'ratio':>7}")
for mine, peer in (("full", "f16"), ("q8", "q8_0"), ("q4", "q4_0")):
    r, (kv, tg) = ours[mine], theirs[peer]
    label = f"{mine if mine != 'full' else 'f16'} / {peer}"
    mib = r["kv_bytes_after_decode"] / 1048576
    print(f"{label:<14}{mib:>14.1f}{kv:>18.1f}{r['decode_tok_s']:>14.1f}{tg:>17.1f}{r['decode_tok_s'] / tg:>7.2f}")
PY
