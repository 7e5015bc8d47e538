#!/usr/bin/env bash
# bench/serve-vs-llamacpp.sh: `strata serve` against llama.cpp's llama-server
# under the same load: the same trace (BurstGPT CSV) replayed by
# bench/loadgen.py against each server in turn, with the same model, threads,
# parallel slots and context. Prints the loadgen metrics side by side (strata,
# llama.cpp, ratio strata/llama.cpp) and keeps both JSONs and server logs.
#
# Usage: bench/serve-vs-llamacpp.sh [-m MODEL] [-t THREADS] [--trace CSV] [--parallel N]
#            [-c CTX_PER_SLOT] [--shared-prefix R] [--time-scale S] [--max-requests N]
#            [--goodput "ttft:MS tpot:MS"] [--port-base P] [--out DIR] [--kv-mem SIZE]
#            [--max-batch-tokens N] [--strata-args "ARGS"] [--peer-args "ARGS"]
#            [--only strata|llamacpp]
#
# -c is the context of one slot (the peer gets -c N*CTX); --time-scale multiplies
# the trace's timestamps (0.5: twice the rate); --max-requests replays only the
# first N; --shared-prefix makes that fraction of every prompt common to all
# (bench/loadgen.py); --strata-args and --peer-args add flags to each server
# (e.g. --max-running N -c CTX to strata, --swa-full to llama-server);
# --only runs one server (a one-column table: the peer half works before strata
# has a server). Exits 1 if a server fails to start; failed requests are
# counted in the table (errors) and named in the JSONs.
#
# Defaults: the fetched Gemma 3 270M, -t 2, bench/traces/burstgpt-synthetic.csv
# (48 requests, ~200 prompt and ~50 response tokens, 0.5 req/s: 2-3 minutes per
# server on 2 cores), --parallel 2, -c 2048 per slot, goodput ttft:2000 tpot:100,
# ports 8180 (strata) and 8181 (llama.cpp), results in build/serve-bench/.
# The shipped trace was made with
#   python3 bench/make_trace.py --requests 48 --rate 0.5 --seed 2 \
#       --mean-request-tokens 200 --max-request-tokens 1024 \
#       --mean-response-tokens 48 --max-response-tokens 128 \
#       -o bench/traces/burstgpt-synthetic.csv
#
# The servers:
#   strata serve -m MODEL -t T --host 127.0.0.1 --port P --kv-mem BYTES --max-batch-tokens B [STRATA_ARGS]
#     where BYTES holds N x CTX tokens of full-attention KV at strata's default
#     KV type (f32): layers x KV heads x (key + value length) x 4 bytes a token,
#     read from `strata inspect` (or --kv-mem SIZE); B defaults to 512, the
#     peer's physical batch (-ub).
#   llama-server -m MODEL -t T -c N*CTX -np N --host 127.0.0.1 --port P [PEER_ARGS]
#     (llama.cpp from llama-cpp-python 0.3.36, scripts/peer-build.sh) and
#     otherwise its defaults, which are: continuous batching on (-cb);
#     -np given, so no unified KV (-kvu off): each slot owns CTX tokens; -b 2048
#     -ub 512; --cache-prompt on (a request goes to the slot whose last prompt
#     it shares most of, and reuses that common prefix), --cache-ram 8192 MiB
#     (a host-memory prompt cache), --cache-reuse 0 (no KV shifting); KV f16;
#     -fa auto; SWA cache of the window only (--swa-full off). With Gemma 3's
#     sliding-window layers that last default means llama-server re-evaluates
#     the whole prompt even when a slot holds its prefix (observed: 1 cached
#     token of a 100-token common prefix), so --shared-prefix helps it only
#     with --peer-args --swa-full (then 56 of a 111-token prompt were cached).
# Each server is waited for on GET /health (200 when ready; llama-server says
# 503 while loading), loaded with the trace, then stopped with SIGTERM.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
model="" threads=2 trace="$root/bench/traces/burstgpt-synthetic.csv" parallel=2 ctx=2048
shared_prefix=0 time_scale=1 max_requests="" goodput="ttft:2000 tpot:100" port_base=8180
out="$root/build/serve-bench" kv_mem="" max_batch_tokens=512 strata_args="" peer_args="" only=""
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
need() { [ $# -ge 2 ] || { echo "serve-vs-llamacpp: $1 needs a value" >&2; exit 2; }; }
while [ $# -gt 0 ]; do
    case "$1" in
        -m) need "$@"; model=$2; shift 2 ;;
        -t) need "$@"; threads=$2; shift 2 ;;
        -c) need "$@"; ctx=$2; shift 2 ;;
        --trace) need "$@"; trace=$2; shift 2 ;;
        --parallel) need "$@"; parallel=$2; shift 2 ;;
        --shared-prefix) need "$@"; shared_prefix=$2; shift 2 ;;
        --time-scale) need "$@"; time_scale=$2; shift 2 ;;
        --max-requests) need "$@"; max_requests=$2; shift 2 ;;
        --goodput) need "$@"; goodput=$2; shift 2 ;;
        --port-base) need "$@"; port_base=$2; shift 2 ;;
        --out) need "$@"; out=$2; shift 2 ;;
        --kv-mem) need "$@"; kv_mem=$2; shift 2 ;;
        --max-batch-tokens) need "$@"; max_batch_tokens=$2; shift 2 ;;
        --strata-args) need "$@"; strata_args=$2; shift 2 ;;
        --peer-args) need "$@"; peer_args=$2; shift 2 ;;
        --only) need "$@"; only=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "serve-vs-llamacpp: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
for pair in "-t:$threads" "--parallel:$parallel" "-c:$ctx" "--port-base:$port_base" \
            "--max-batch-tokens:$max_batch_tokens" ${max_requests:+"--max-requests:$max_requests"}; do
    case "${pair#*:}" in
        ''|*[!0-9]*|0) echo "serve-vs-llamacpp: ${pair%%:*} '${pair#*:}' is not a positive integer" >&2; exit 2 ;;
    esac
done
case "$only" in
    ''|strata|llamacpp) ;;
    *) echo "serve-vs-llamacpp: --only is strata or llamacpp, not '$only'" >&2; exit 2 ;;
esac
[ -f "$trace" ] || { echo "serve-vs-llamacpp: trace $trace is missing" >&2; exit 2; }
[ -n "$model" ] || model=$("$root/scripts/fetch-model.sh")
[ -f "$model" ] || { echo "serve-vs-llamacpp: model $model is missing" >&2; exit 2; }
strata="${STRATA_BIN:-$root/build/strata}"
total_ctx=$((parallel * ctx))
mkdir -p "$out"

# Loadgen options shared by both runs (checked once here, before any server starts).
# shellcheck disable=SC2206
loadgen=(python3 "$root/bench/loadgen.py" --trace "$trace" --time-scale "$time_scale"
         --shared-prefix "$shared_prefix" --timeout 600 -q)
[ -z "$max_requests" ] || loadgen+=(--max-requests "$max_requests")
# shellcheck disable=SC2206
[ -z "$goodput" ] || loadgen+=(--goodput $goodput)
python3 -c '
import sys
sys.path.insert(0, sys.argv[1])
import loadgen
parser = loadgen.build_parser()
parser.prog = "serve-vs-llamacpp (loadgen options)"
args = parser.parse_args(sys.argv[2:])
try:
    loadgen.parse_goodput(args.goodput)
except ValueError as e:
    parser.error(str(e))
loadgen.load_requests(args, parser)
' "$root/bench" "${loadgen[@]:2}"
ran=()

server_pid=""
stop_server() {
    [ -n "$server_pid" ] || return 0
    kill -TERM "$server_pid" 2> /dev/null || true
    for _ in $(seq 1 100); do
        kill -0 "$server_pid" 2> /dev/null || break
        sleep 0.1
    done
    if kill -0 "$server_pid" 2> /dev/null; then
        echo "serve-vs-llamacpp: server $server_pid ignored SIGTERM for 10 s; sending SIGKILL" >&2
        kill -KILL "$server_pid" 2> /dev/null || true
    fi
    wait "$server_pid" 2> /dev/null || true
    server_pid=""
}
trap stop_server EXIT
trap 'exit 130' INT TERM

# wait_ready NAME PORT LOG: poll GET /health until 200, while the server lives.
wait_ready() {
    python3 - "$1" "$2" "$3" "$server_pid" <<'PY'
import http.client, os, sys, time
name, port, log, pid = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
deadline = time.monotonic() + 120
status = "no answer"
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        sys.exit(f"serve-vs-llamacpp: {name} exited while starting; see {log}")
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/health")
        code = conn.getresponse().status
        conn.close()
        if code == 200:
            sys.exit(0)
        status = f"HTTP {code}"
    except OSError as e:
        status = str(e)
    time.sleep(0.25)
sys.exit(f"serve-vs-llamacpp: {name} on port {port} not ready after 120 s ({status}); see {log}")
PY
}

# run_one NAME PORT COMMAND...: start a server, replay the trace, stop it.
run_one() {
    local name=$1 port=$2
    shift 2
    echo "serve-vs-llamacpp: starting $name: $*" >&2
    "$@" > "$out/$name.log" 2>&1 &
    server_pid=$!
    wait_ready "$name" "$port" "$out/$name.log"
    echo "serve-vs-llamacpp: replaying $(basename "$trace") against $name" >&2
    local rc=0
    rm -f "$out/$name.json"
    "${loadgen[@]}" --url "http://127.0.0.1:$port" --label "$name" --json "$out/$name.json" \
        > "$out/$name.txt" || rc=$?
    stop_server
    ran+=("$name")
    [ "$rc" -le 1 ] || { echo "serve-vs-llamacpp: loadgen failed against $name (exit $rc)" >&2; exit 1; }
    [ "$rc" -eq 0 ] || echo "serve-vs-llamacpp: some requests to $name failed; see $out/$name.json" >&2
}

# kv_bytes TOKENS: strata's f32 KV bytes for TOKENS tokens of every layer.
kv_bytes() {
    "$strata" inspect "$model" | python3 -c '
import re, sys
keys = ("block_count", "embedding_length", "attention.head_count", "attention.head_count_kv",
        "attention.key_length", "attention.value_length")
meta = {}
for line in sys.stdin:                  # "  gemma3.block_count   u32   18"
    m = re.match(r"\s+[^.\s]+\.(\S+)\s+\S+\s+(\d+)\s*$", line)
    if m and m.group(1) in keys:
        meta.setdefault(m.group(1), int(m.group(2)))
heads = meta.get("attention.head_count", 0)
kv_heads = meta.get("attention.head_count_kv", heads)
head_dim = meta.get("embedding_length", 0) // heads if heads else 0
k, v = meta.get("attention.key_length", head_dim), meta.get("attention.value_length", head_dim)
if not (meta.get("block_count") and kv_heads and k and v):
    sys.exit("serve-vs-llamacpp: cannot read layers and KV heads from strata inspect; give --kv-mem")
print(int(sys.argv[1]) * meta["block_count"] * kv_heads * (k + v) * 4)
' "$1"
}

strata_port=$port_base llama_port=$((port_base + 1))
if [ "$only" != llamacpp ]; then
    [ -x "$strata" ] || { echo "serve-vs-llamacpp: $strata is missing; run 'make build'" >&2; exit 1; }
    if ! "$strata" serve --help > /dev/null 2>&1; then
        echo "serve-vs-llamacpp: $strata has no 'serve' command yet; use --only llamacpp" >&2
        exit 1
    fi
    [ -n "$kv_mem" ] || kv_mem=$(kv_bytes "$total_ctx")
    # shellcheck disable=SC2086
    run_one strata "$strata_port" "$strata" serve -m "$model" -t "$threads" --host 127.0.0.1 \
        --port "$strata_port" --kv-mem "$kv_mem" --max-batch-tokens "$max_batch_tokens" $strata_args
fi
if [ "$only" != strata ]; then
    peer_bin=$("$root/scripts/peer-build.sh")
    # shellcheck disable=SC2086
    run_one llamacpp "$llama_port" "$peer_bin/llama-server" -m "$model" -t "$threads" -c "$total_ctx" \
        -np "$parallel" --host 127.0.0.1 --port "$llama_port" $peer_args
fi

python3 - "$out" "$model" "$threads" "$parallel" "$ctx" "$trace" "$shared_prefix" "$time_scale" "${ran[@]}" <<'PY'
import json, os, sys
out, model, threads, parallel, ctx, trace, shared_prefix, time_scale, *names = sys.argv[1:]
runs = {name: json.load(open(os.path.join(out, name + ".json"))) for name in names}
rows = [("completed", "", None), ("errors", "", "lower"), ("short_outputs", "", "lower"),
        ("duration", "s", "lower"), ("total_cached_tokens", "", None),
        ("peak_in_flight", "", None),
        ("request_throughput", "req/s", "higher"), ("output_throughput", "tok/s", "higher"),
        ("total_token_throughput", "tok/s", "higher"), ("request_goodput", "req/s", "higher")]
rows += [(f"{stat}_{metric}_ms", "ms", "lower") for metric in ("ttft", "tpot", "itl", "e2el")
         for stat in ("mean", "median", "p90", "p99")]
cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
           "unknown CPU")
print(f"model: {os.path.basename(model)}; threads: {threads}; slots: {parallel} x {ctx} tokens; "
      f"trace: {os.path.basename(trace)} (time scale {time_scale}, shared prefix {shared_prefix}); "
      f"machine: {cpu}, {os.cpu_count()} cores")
def fmt(value):
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) and abs(value) < 100 else (
        f"{value:.1f}" if isinstance(value, float) else str(value))
header = f"{'metric':<24}{'unit':>6}" + "".join(f"{n:>12}" for n in names)
if len(names) == 2:
    header += f"{'ratio':>8}  better"
print(header)
summary = {"model": os.path.basename(model), "threads": int(threads), "parallel": int(parallel),
           "ctx_per_slot": int(ctx), "trace": trace, "metrics": {}}
for key, unit, better in rows:
    values = [runs[n].get(key) for n in names]
    line = f"{key:<24}{unit:>6}" + "".join(f"{fmt(v):>12}" for v in values)
    ratio = None
    if len(names) == 2 and all(isinstance(v, (int, float)) for v in values) and values[1]:
        ratio = values[0] / values[1]
        line += f"{ratio:>8.2f}  {better or ''}"
    print(line)
    summary["metrics"][key] = dict(zip(names, values), ratio=ratio)
json.dump(summary, open(os.path.join(out, "comparison.json"), "w"), indent=1)
print(f"JSONs: {', '.join(os.path.join(out, n + '.json') for n in names)}, {os.path.join(out, 'comparison.json')}")
PY
