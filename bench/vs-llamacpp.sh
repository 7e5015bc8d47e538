#!/usr/bin/env bash
# bench/vs-llamacpp.sh: strata against llama.cpp on the same model, machine and
# thread count: prefill (pp) and decode (tg) tokens per second, and the ratio.
#
# Usage: bench/vs-llamacpp.sh [-m MODEL] [-t THREADS] [-p N_PROMPT] [-n N_GEN] [-r ROUNDS] [--json FILE]
# llama.cpp is built once from the llama-cpp-python source package
# (scripts/peer-build.sh). The two engines take turns, ROUNDS times, each
# round a 3-repetition run of each, so machine noise hits both alike; the
# figures printed are medians over all repetitions.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
model="" threads=2 n_prompt=512 n_gen=128 rounds=3 json_out=""
while [ $# -gt 0 ]; do
    case "$1" in
        -m) model=$2; shift 2 ;;
        -t) threads=$2; shift 2 ;;
        -p) n_prompt=$2; shift 2 ;;
        -n) n_gen=$2; shift 2 ;;
        -r) rounds=$2; shift 2 ;;
        --json) json_out=$2; shift 2 ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        *) echo "vs-llamacpp: unknown option $1" >&2; exit 2 ;;
    esac
done
[ -n "$model" ] || model=$("$root/scripts/fetch-model.sh")
strata="${STRATA_BIN:-$root/build/strata}"
[ -x "$strata" ] || { echo "vs-llamacpp: $strata is missing; run 'make build'" >&2; exit 1; }
peer_bin=$("$root/scripts/peer-build.sh")
results=$(mktemp -d)
trap 'rm -rf "$results"' EXIT

for round in $(seq 1 "$rounds"); do
    echo "round $round/$rounds" >&2
    "$strata" bench -m "$model" -t "$threads" -p "$n_prompt" -n "$n_gen" -r 3 --json > "$results/strata-$round.json"
    "$peer_bin/llama-bench" -m "$model" -t "$threads" -p "$n_prompt" -n "$n_gen" -r 3 -o json \
        > "$results/llama-$round.json" 2>/dev/null
done

python3 - "$results" "$rounds" "$model" "$threads" "$n_prompt" "$n_gen" "$json_out" <<'PY'
import json, os, platform, statistics, subprocess, sys
results, rounds, model, threads, n_prompt, n_gen, json_out = sys.argv[1:]
strata = {"pp": [], "tg": []}
llama = {"pp": [], "tg": []}
for r in range(1, int(rounds) + 1):
    s = json.load(open(f"{results}/strata-{r}.json"))
    strata["pp"].append(s["prefill_tok_s"])
    strata["tg"].append(s["decode_tok_s"])
    for test in json.load(open(f"{results}/llama-{r}.json")):
        kind = "pp" if test["n_prompt"] > 0 else "tg"
        llama[kind].extend(test.get("samples_ts") or [test["avg_ts"]])
cpu = "unknown CPU"
try:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
except OSError:
    pass
print(f"model: {os.path.basename(model)}; threads: {threads}; machine: {cpu}, {os.cpu_count()} cores")
print(f"{'test':<8}{'strata tok/s':>14}{'llama.cpp tok/s':>17}{'ratio':>8}")
summary = {"model": os.path.basename(model), "threads": int(threads), "machine": cpu}
for kind, label in (("pp", f"pp{n_prompt}"), ("tg", f"tg{n_gen}")):
    if not strata[kind] or not llama[kind]:
        continue
    ours, theirs = statistics.median(strata[kind]), statistics.median(llama[kind])
    print(f"{label:<8}{ours:>14.1f}{theirs:>17.1f}{ours / theirs:>8.2f}")
    summary[label] = {"strata_tok_s": ours, "llamacpp_tok_s": theirs, "ratio": ours / theirs}
if json_out:
    json.dump(summary, open(json_out, "w"), indent=2)
PY
