#!/usr/bin/env python3
"""bench/loadgen.py: a load generator for OpenAI-compatible LLM servers
(strata serve, llama.cpp's llama-server, vLLM), in the spirit of vLLM's
benchmark_serving and with its metric names. Python standard library only.

It replays a request trace in BurstGPT's CSV format

    Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type

(Timestamp in seconds from the start of the trace, multiplied by --time-scale;
rows with 0 response tokens, BurstGPT's failed requests, are skipped), or
generates a Poisson load (--poisson RATE --requests N --prompt-tokens MEAN
--output-tokens MEAN). Each request is sent at its arrival time on its own
thread (at most --concurrency-limit in flight, if given) to
/v1/completions, or /v1/chat/completions with --chat, as

    {"prompt": TEXT, "max_tokens": RESPONSE_TOKENS, "temperature": 0,
     "ignore_eos": true, "stream": true, "stream_options": {"include_usage": true}}

so each request generates exactly its trace's response tokens. TEXT is built
deterministically (from --seed) out of common English words, each one token
for Gemma 3's vocabulary (and most others), sized to about the trace's request
tokens; with --shared-prefix R the first R of its words are the same for every
request (like a long system prompt) and the rest are the request's own.

Per request it measures TTFT (send to the first chunk that carries text), ITL
(the gaps between text-bearing chunks), TPOT ((end - first token) /
(output tokens - 1)), E2E latency, output tokens (the final usage chunk's
completion_tokens, else the number of text-bearing chunks) and the prompt
tokens the server served from its prefix cache (usage.prompt_tokens_details.
cached_tokens, where the server reports it). A request fails on an HTTP status
other than 200, a connection error or timeout, an error object in the stream,
a stream that ends without `data: [DONE]`, or no text at all.

It prints a table and with --json FILE writes every metric at the top level
(vLLM's: completed, request_throughput, output_throughput,
total_token_throughput, request_goodput, mean/median/std/p50/p90/p99 of
ttft_ms, tpot_ms, itl_ms and e2el_ms; and ours: errors, short_outputs, the
completed requests that got fewer tokens than asked, total_cached_tokens and
peak_in_flight), plus the options under "config" and every request's
measurements under "requests". It exits 0 when every request completed, 1
when one failed (or the JSON could not be written), 2 on bad options or a bad
trace.

    python3 bench/loadgen.py --url http://127.0.0.1:8080 \\
        --trace bench/traces/burstgpt-synthetic.csv --goodput ttft:2000 tpot:100 --json out.json
    python3 bench/loadgen.py --poisson 1 --requests 20 --prompt-tokens 256 --output-tokens 32
"""

from __future__ import annotations

import argparse
import csv
import http.client
import json
import math
import random
import socket
import statistics
import sys
import threading
import time
import urllib.parse
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Iterator

TRACE_COLUMNS = ("Timestamp", "Model", "Request tokens", "Response tokens", "Total tokens", "Log Type")

# Common English words that Gemma 3's tokenizer (and Llama's, Qwen's) keeps as
# one token each, with or without a leading space: a prompt of N words is about
# N tokens. Measured with `build/strata tokenize -p TEXT` on Gemma 3 270M: 2000
# words of a prompt built here are 2000 tokens plus BOS.
WORDS = tuple("""
able action activity age air apple area arm art attention autumn baby back bad best
bird blue body book boy bread bridge bright building business car care careful case
center change child city class clear cloud cold college color community company
computer control cost country couple court dark data day death decision development
difference different director doctor door drug early education effect effort end event
evidence experience eye face fact family father field figure film fire foot force
forest form free fresh friend full game garden girl glass gold good government great
green ground group guy hair hand happy hard head health heart heavy high history home
horse hour house idea image important industry information interest island issue job
kid kind land large law leader letter level life light line little local long lot love
man market matter member metal mind minute model moment money month morning mother
mountain movie music name nation national need new news night north number ocean office
official oil old open organization others paper parent part party patient people person
phone picture piece place plan player point police policy poor population position
power practice president price private problem process product program project public
question quick quiet rain rate ready real reason record relationship report research
result rich right river road role room same school season sense service show side
silver simple site situation slow small snow social society soft son song source space
spring star state step stone story street strong student study summer support system
table tax teacher team technology test thing time town tree truth type value view
village voice wall war warm water way week wife wind window winter woman word work
worker world year yellow young
""".split())
WORDS_PER_TOKEN = 1.0
BOS_TOKENS = 1          # the tokenizer's BOS counts toward the trace's request tokens
SLO_METRICS = ("ttft", "tpot", "e2el")
PERCENTILES = (50, 90, 99)


class TraceError(ValueError):
    """A trace file that is not BurstGPT's CSV format; the message names the line."""


@dataclass(frozen=True)
class TraceRequest:
    """One request to send: when (seconds after the start) and how long."""

    arrival_s: float
    prompt_tokens: int
    output_tokens: int


# ---------------------------------------------------------------- the trace

def parse_count(text: str, column: str, where: str) -> int:
    """A non-negative whole number of tokens ("472" or "472.0")."""
    try:
        value = float(text)
    except ValueError:
        raise TraceError(f"{where}: {column} '{text}' is not a number") from None
    if not math.isfinite(value) or value < 0 or value != int(value):
        raise TraceError(f"{where}: {column} '{text}' is not a whole number >= 0")
    return int(value)


def parse_trace(lines: Iterable[str], source: str = "trace") -> tuple[list[TraceRequest], int]:
    """The requests of a BurstGPT CSV, by arrival (first at 0 s), and how many
    rows were skipped for having 0 response tokens (BurstGPT's failures)."""
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None:
        raise TraceError(f"{source}: empty file; expected the header {','.join(TRACE_COLUMNS)}")
    header = [name.strip().lstrip("\ufeff") for name in header]
    if tuple(header) != TRACE_COLUMNS:
        raise TraceError(f"{source}: line 1: header is {','.join(header)}; "
                         f"expected BurstGPT's columns {','.join(TRACE_COLUMNS)}")
    rows: list[tuple[float, int, int]] = []
    skipped = 0
    for row in reader:
        where = f"{source}: line {reader.line_num}"
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != len(TRACE_COLUMNS):
            raise TraceError(f"{where}: {len(row)} fields, expected {len(TRACE_COLUMNS)} "
                             f"({','.join(TRACE_COLUMNS)})")
        try:
            timestamp = float(row[0])
        except ValueError:
            raise TraceError(f"{where}: Timestamp '{row[0]}' is not a number of seconds") from None
        if not math.isfinite(timestamp) or timestamp < 0:
            raise TraceError(f"{where}: Timestamp '{row[0]}' is not a time >= 0 s")
        request = parse_count(row[2], "Request tokens", where)
        response = parse_count(row[3], "Response tokens", where)
        if response == 0:
            skipped += 1
            continue
        rows.append((timestamp, request, response))
    if not rows:
        raise TraceError(f"{source}: no request with response tokens > 0")
    rows.sort(key=lambda r: r[0])
    start = rows[0][0]
    return [TraceRequest(t - start, max(1, req), resp) for t, req, resp in rows], skipped


def load_trace(path: str) -> tuple[list[TraceRequest], int]:
    try:
        with open(path, newline="") as f:
            return parse_trace(f, path)
    except OSError as e:
        raise TraceError(f"{path}: cannot read: {e.strerror}") from None
    except UnicodeDecodeError:
        raise TraceError(f"{path}: not a text (UTF-8) CSV file") from None


def scale_arrivals(requests: list[TraceRequest], time_scale: float) -> list[TraceRequest]:
    """Arrival times multiplied by time_scale (0.5 replays twice as fast)."""
    return [TraceRequest(r.arrival_s * time_scale, r.prompt_tokens, r.output_tokens) for r in requests]


def poisson_requests(rate: float, count: int, prompt_mean: int, output_mean: int, seed: int,
                     range_ratio: float = 0.5) -> list[TraceRequest]:
    """`count` requests with exponential gaps of mean 1/rate (the first at 0 s)
    and lengths uniform in mean*(1 - range_ratio) .. mean*(1 + range_ratio)."""
    rng = random.Random(f"poisson/{seed}")

    def length(mean: int) -> int:
        low, high = mean * (1 - range_ratio), mean * (1 + range_ratio)
        return max(1, round(rng.uniform(low, high)))

    requests = []
    now = 0.0
    for i in range(count):
        if i > 0:
            now += rng.expovariate(rate)
        requests.append(TraceRequest(now, length(prompt_mean), length(output_mean)))
    return requests


# ---------------------------------------------------------------- prompts

class PromptBuilder:
    """Prompt texts of a given token count, the same for the same seed.

    The first round(words * shared_prefix) words of every prompt come from one
    shared stream of words; the rest come from the request's own stream, whose
    first word differs from the shared stream's next one, so a prompt shares
    exactly its shared part with the shared stream."""

    def __init__(self, seed: int = 0, shared_prefix: float = 0.0,
                 words_per_token: float = WORDS_PER_TOKEN, bos_tokens: int = BOS_TOKENS) -> None:
        if not 0.0 <= shared_prefix <= 1.0:
            raise ValueError(f"shared prefix ratio {shared_prefix} is not in 0..1")
        self.seed = seed
        self.shared_prefix = shared_prefix
        self.words_per_token = words_per_token
        self.bos_tokens = bos_tokens
        self._shared_rng = random.Random(f"shared/{seed}")
        self._shared: list[str] = []

    def word_count(self, tokens: int) -> int:
        return max(1, round((tokens - self.bos_tokens) * self.words_per_token))

    def shared_words(self, count: int) -> list[str]:
        """The first `count` words of the shared stream."""
        while len(self._shared) < count:
            self._shared.append(self._shared_rng.choice(WORDS))
        return self._shared[:count]

    def split(self, tokens: int) -> tuple[int, int]:
        """(shared words, own words) of a prompt of `tokens` tokens."""
        words = self.word_count(tokens)
        shared = round(words * self.shared_prefix)
        return shared, words - shared

    def prompt(self, index: int, tokens: int) -> str:
        shared_count, own_count = self.split(tokens)
        shared = self.shared_words(shared_count + 1)
        rng = random.Random(f"request/{self.seed}/{index}")
        own = []
        for i in range(own_count):
            word = rng.choice(WORDS)
            while i == 0 and word == shared[shared_count]:
                word = rng.choice(WORDS)
            own.append(word)
        return " ".join(shared[:shared_count] + own)


# ---------------------------------------------------------------- one request

@dataclass
class RequestResult:
    """What one request measured; times in seconds."""

    index: int
    arrival_s: float                 # when the trace asked for it
    prompt_tokens: int               # the trace's request tokens
    max_tokens: int                  # the trace's response tokens
    start_s: float = 0.0             # when it was sent, from the start of the run
    ok: bool = False
    error: str = ""
    status: int | None = None
    ttft_s: float | None = None
    itl_s: list[float] = field(default_factory=list)
    e2el_s: float | None = None
    output_tokens: int = 0
    text_chunks: int = 0
    usage_prompt_tokens: int | None = None
    usage_completion_tokens: int | None = None
    usage_cached_tokens: int | None = None   # usage.prompt_tokens_details.cached_tokens

    @property
    def tpot_s(self) -> float | None:
        if not self.ok or self.output_tokens < 2 or self.ttft_s is None or self.e2el_s is None:
            return None
        return (self.e2el_s - self.ttft_s) / (self.output_tokens - 1)

    @property
    def input_tokens(self) -> int:
        return self.usage_prompt_tokens if self.usage_prompt_tokens is not None else self.prompt_tokens


@dataclass(frozen=True)
class Endpoint:
    """Where requests go: scheme, host, port and the full request path."""

    scheme: str
    host: str
    port: int
    path: str

    @classmethod
    def from_url(cls, url: str, chat: bool) -> "Endpoint":
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"--url '{url}' is not an http:// or https:// URL with a host")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise ValueError(f"--url '{url}' has a bad port") from None
        base = parts.path.rstrip("/")
        if base.endswith("/v1"):
            base = base[:-3]
        path = base + ("/v1/chat/completions" if chat else "/v1/completions")
        return cls(parts.scheme, parts.hostname, port, path)

    def connect(self, timeout: float) -> http.client.HTTPConnection:
        if self.scheme == "https":
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout)
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)


def request_body(prompt: str, max_tokens: int, chat: bool, model: str | None) -> dict:
    body: dict = {"messages": [{"role": "user", "content": prompt}]} if chat else {"prompt": prompt}
    if model:
        body["model"] = model
    body.update({"max_tokens": max_tokens, "temperature": 0, "ignore_eos": True, "stream": True,
                 "stream_options": {"include_usage": True}})
    return body


def sse_events(readline: Callable[[], bytes]) -> Iterator[tuple[str, str]]:
    """(event field, data) per server-sent event: `data:` lines joined by
    newlines, or a non-standard `error:` line as llama-server writes one."""
    data: list[str] = []
    while True:
        raw = readline()
        if not raw:
            break
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if not line:
            if data:
                yield "data", "\n".join(data)
                data = []
            continue
        if line.startswith(":"):
            continue                                # an SSE comment (keep-alive)
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            data.append(value)
        elif name == "error":
            yield "error", value
    if data:
        yield "data", "\n".join(data)


def chunk_text(chunk: dict) -> str:
    """The text a completion or chat chunk carries (all choices together)."""
    pieces = []
    for choice in chunk.get("choices") or []:
        if not isinstance(choice, dict):
            continue
        if isinstance(choice.get("text"), str):
            pieces.append(choice["text"])
        delta = choice.get("delta")
        if isinstance(delta, dict):
            for key in ("content", "reasoning_content"):
                if isinstance(delta.get(key), str):
                    pieces.append(delta[key])
    return "".join(pieces)


def error_message(value: object) -> str:
    if isinstance(value, dict):
        return str(value.get("message") or json.dumps(value))
    return str(value)


def read_stream(result: RequestResult, events: Iterable[tuple[str, str]], sent: float,
                deadline: float, clock: Callable[[], float]) -> None:
    """Fill `result`'s timings from a stream of SSE events of one request sent
    at `sent` (a clock() time)."""
    last_text: float | None = None
    done = False
    for kind, data in events:
        now = clock()
        if now > deadline:
            result.error = f"timed out after {now - sent:.1f} s"
            return
        if kind == "error":
            try:
                result.error = "error in stream: " + error_message(json.loads(data).get("error", data))
            except (ValueError, AttributeError):
                result.error = f"error in stream: {data}"
            return
        if data.strip() == "[DONE]":
            done = True
            break
        try:
            chunk = json.loads(data)
        except ValueError:
            result.error = f"stream chunk is not JSON: {data[:120]!r}"
            return
        if not isinstance(chunk, dict):
            result.error = f"stream chunk is not a JSON object: {data[:120]!r}"
            return
        if chunk.get("error") is not None:
            result.error = "error in stream: " + error_message(chunk["error"])
            return
        if chunk_text(chunk):
            if last_text is None:
                result.ttft_s = now - sent
            else:
                result.itl_s.append(now - last_text)
            last_text = now
            result.text_chunks += 1
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            if isinstance(usage.get("prompt_tokens"), int):
                result.usage_prompt_tokens = usage["prompt_tokens"]
            if isinstance(usage.get("completion_tokens"), int):
                result.usage_completion_tokens = usage["completion_tokens"]
            details = usage.get("prompt_tokens_details")
            if isinstance(details, dict) and isinstance(details.get("cached_tokens"), int):
                result.usage_cached_tokens = details["cached_tokens"]
    result.e2el_s = clock() - sent
    if not done:
        result.error = "stream ended before data: [DONE]"
    elif result.text_chunks == 0:
        result.error = "stream carried no text"
    else:
        result.ok = True
        result.output_tokens = (result.usage_completion_tokens if result.usage_completion_tokens is not None
                                else result.text_chunks)


def send_request(endpoint: Endpoint, body: dict, result: RequestResult, api_key: str | None,
                 timeout: float, clock: Callable[[], float] = time.perf_counter) -> RequestResult:
    """POST one streaming request and measure it into `result`."""
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    payload = json.dumps(body).encode()
    sent = clock()
    conn = endpoint.connect(timeout)
    try:
        conn.request("POST", endpoint.path, body=payload, headers=headers)
        response = conn.getresponse()
        result.status = response.status
        if response.status != 200:
            detail = response.read(2000).decode("utf-8", errors="replace").strip()
            result.error = f"HTTP {response.status} {response.reason}: {detail[:300]}"
            result.e2el_s = clock() - sent
            return result
        read_stream(result, sse_events(response.readline), sent, sent + timeout, clock)
    except socket.timeout:
        result.error = f"timed out after {clock() - sent:.1f} s (--timeout {timeout:g})"
    except (OSError, http.client.HTTPException) as e:
        result.error = f"{type(e).__name__}: {e}"
    finally:
        conn.close()
    return result


# ---------------------------------------------------------------- the run

@dataclass
class RunOptions:
    """How requests are sent."""

    endpoint: Endpoint
    chat: bool = False
    model: str | None = None
    api_key: str | None = None
    timeout: float = 600.0
    concurrency_limit: int | None = None


def replay(requests: list[TraceRequest], prompts: list[str], options: RunOptions,
           progress: Callable[[RequestResult, int], None] | None = None) -> tuple[list[RequestResult], float, int]:
    """Send every request at its arrival time; returns the results (in trace
    order), the run's duration in seconds and the peak number in flight."""
    results = [RequestResult(i, r.arrival_s, r.prompt_tokens, r.output_tokens) for i, r in enumerate(requests)]
    slots = threading.BoundedSemaphore(options.concurrency_limit) if options.concurrency_limit else None
    lock = threading.Lock()
    state = {"in_flight": 0, "peak": 0, "finished": 0}
    start = time.perf_counter()

    def run_one(result: RequestResult, body: dict) -> None:
        try:
            send_request(options.endpoint, body, result, options.api_key, options.timeout)
        except Exception as e:                      # a bug here must not hang the run
            result.error = f"{type(e).__name__}: {e}"
        finally:
            with lock:
                state["in_flight"] -= 1
                state["finished"] += 1
                if progress:
                    progress(result, state["finished"])
            if slots:
                slots.release()

    threads = []
    for result, request, prompt in zip(results, requests, prompts):
        delay = start + request.arrival_s - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        if slots:
            slots.acquire()
        with lock:
            state["in_flight"] += 1
            state["peak"] = max(state["peak"], state["in_flight"])
        result.start_s = time.perf_counter() - start
        body = request_body(prompt, request.output_tokens, options.chat, options.model)
        thread = threading.Thread(target=run_one, args=(result, body), daemon=True)
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join()
    return results, time.perf_counter() - start, state["peak"]


# ---------------------------------------------------------------- metrics

def percentile(values: list[float], p: float) -> float | None:
    """The p-th percentile with linear interpolation between closest ranks
    (numpy's default); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def distribution(name: str, values_ms: list[float]) -> dict[str, float | None]:
    """mean_, median_, std_ (population) and p50/p90/p99 of `name`_ms."""
    stats: dict[str, float | None] = {
        f"mean_{name}_ms": statistics.fmean(values_ms) if values_ms else None,
        f"median_{name}_ms": percentile(values_ms, 50),
        f"std_{name}_ms": statistics.pstdev(values_ms) if values_ms else None,
    }
    for p in PERCENTILES:
        stats[f"p{p}_{name}_ms"] = percentile(values_ms, p)
    return stats


def meets_slo(result: RequestResult, slo_ms: dict[str, float]) -> bool:
    """A completed request within every SLO; a request of one output token
    has no TPOT and meets a TPOT SLO (as in vLLM)."""
    if not result.ok:
        return False
    measured = {"ttft": result.ttft_s, "tpot": result.tpot_s or 0.0, "e2el": result.e2el_s}
    return all(measured[key] is not None and measured[key] * 1000 <= limit for key, limit in slo_ms.items())


def summarize(results: list[RequestResult], duration_s: float, slo_ms: dict[str, float]) -> dict:
    """Every metric of a run, under vLLM's benchmark_serving names."""
    done = [r for r in results if r.ok]
    input_tokens = sum(r.input_tokens for r in done)
    output_tokens = sum(r.output_tokens for r in done)
    per_s = (lambda x: x / duration_s) if duration_s > 0 else (lambda x: 0.0)
    metrics: dict = {
        "duration": duration_s,
        "completed": len(done),
        "errors": len(results) - len(done),
        "total_input_tokens": input_tokens,
        "total_output_tokens": output_tokens,
        "total_cached_tokens": sum(r.usage_cached_tokens or 0 for r in done),
        "short_outputs": sum(1 for r in done if r.output_tokens < r.max_tokens),
        "request_throughput": per_s(len(done)),
        "output_throughput": per_s(output_tokens),
        "total_token_throughput": per_s(input_tokens + output_tokens),
        "request_goodput": per_s(sum(1 for r in done if meets_slo(r, slo_ms))) if slo_ms else None,
    }
    metrics.update(distribution("ttft", [r.ttft_s * 1000 for r in done if r.ttft_s is not None]))
    metrics.update(distribution("tpot", [r.tpot_s * 1000 for r in done if r.tpot_s is not None]))
    metrics.update(distribution("itl", [gap * 1000 for r in done for gap in r.itl_s]))
    metrics.update(distribution("e2el", [r.e2el_s * 1000 for r in done if r.e2el_s is not None]))
    return metrics


TABLE_ROWS = (
    ("completed", "requests"), ("errors", "requests"), ("short_outputs", "requests"),
    ("duration", "s"), ("total_input_tokens", "tokens"), ("total_output_tokens", "tokens"),
    ("total_cached_tokens", "tokens"),
    ("request_throughput", "req/s"), ("output_throughput", "tok/s"), ("total_token_throughput", "tok/s"),
    ("request_goodput", "req/s"),
) + tuple((f"{stat}_{name}_ms", "ms") for name in ("ttft", "tpot", "itl", "e2el")
          for stat in ("mean", "median", "p90", "p99"))


def format_value(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)


def format_table(metrics: dict) -> str:
    lines = [f"{'metric':<26}{'value':>12}  unit"]
    for key, unit in TABLE_ROWS:
        if key == "request_goodput" and metrics.get(key) is None:
            continue
        lines.append(f"{key:<26}{format_value(metrics.get(key)):>12}  {unit}")
    return "\n".join(lines)


# ---------------------------------------------------------------- command line

def positive(kind: type) -> Callable[[str], float]:
    def check(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not {'an integer' if kind is int else 'a number'}") from None
        if not value > 0 or (kind is float and math.isinf(value)):
            raise argparse.ArgumentTypeError(f"{text} is not positive")
        return value
    return check


def ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not in 0..1")
    return value


def non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not 0.0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"{text} is not a finite number >= 0")
    return value


def parse_goodput(items: list[str]) -> dict[str, float]:
    """`ttft:MS tpot:MS e2el:MS` (any of them) to {metric: milliseconds}."""
    slo: dict[str, float] = {}
    for item in items:
        key, sep, value = item.partition(":")
        if not sep or key not in SLO_METRICS:
            raise ValueError(f"--goodput '{item}' is not METRIC:MS with METRIC one of {', '.join(SLO_METRICS)}")
        try:
            ms = float(value)
        except ValueError:
            raise ValueError(f"--goodput '{item}': '{value}' is not a number of milliseconds") from None
        if not ms > 0 or math.isinf(ms):
            raise ValueError(f"--goodput '{item}': the limit must be a positive number of milliseconds")
        slo[key] = ms
    return slo


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Replay a BurstGPT-format trace (or a Poisson load) against an OpenAI-compatible "
                    "server with streaming requests; report TTFT, TPOT, ITL, E2E latency, throughput "
                    "and goodput under vLLM's metric names.")
    source = parser.add_argument_group("the load (one of --trace and --poisson)")
    source.add_argument("--trace", metavar="CSV", help="BurstGPT-format CSV to replay")
    source.add_argument("--time-scale", type=non_negative, default=1.0, metavar="S",
                        help="multiply the trace's timestamps by S (0.5: twice as fast; 0: all at once) (1)")
    source.add_argument("--poisson", type=positive(float), metavar="RATE",
                        help="instead of a trace, send Poisson arrivals at RATE requests per second")
    source.add_argument("--requests", type=positive(int), metavar="N", help="with --poisson: how many")
    source.add_argument("--prompt-tokens", type=positive(int), default=256, metavar="MEAN",
                        help="with --poisson: mean prompt tokens (256)")
    source.add_argument("--output-tokens", type=positive(int), default=64, metavar="MEAN",
                        help="with --poisson: mean output tokens (64)")
    source.add_argument("--range-ratio", type=ratio, default=0.5, metavar="R",
                        help="with --poisson: lengths uniform in MEAN*(1-R)..MEAN*(1+R) (0.5)")
    source.add_argument("--max-requests", type=positive(int), metavar="N", help="send only the first N requests")
    prompts = parser.add_argument_group("prompts")
    prompts.add_argument("--shared-prefix", type=ratio, default=0.0, metavar="R",
                         help="fraction of each prompt's tokens that is a prefix common to all requests (0)")
    prompts.add_argument("--seed", type=int, default=0, help="seed of the prompt texts and of --poisson (0)")
    prompts.add_argument("--words-per-token", type=positive(float), default=WORDS_PER_TOKEN,
                         help=f"words of prompt text per token ({WORDS_PER_TOKEN:g}, measured on Gemma 3)")
    server = parser.add_argument_group("the server")
    server.add_argument("--url", default="http://127.0.0.1:8080", help="base URL (http://127.0.0.1:8080)")
    server.add_argument("--chat", action="store_true", help="use /v1/chat/completions, not /v1/completions")
    server.add_argument("--model", help="the request's model field (default: not sent)")
    server.add_argument("--api-key", help="sent as Authorization: Bearer KEY")
    server.add_argument("--concurrency-limit", type=positive(int), metavar="N",
                        help="at most N requests in flight; later arrivals wait (default: no limit)")
    server.add_argument("--timeout", type=positive(float), default=600.0, metavar="S",
                        help="seconds a request may take in all (600)")
    report = parser.add_argument_group("the report")
    report.add_argument("--goodput", nargs="+", metavar="METRIC:MS", default=[],
                        help="SLOs for request_goodput, e.g. ttft:2000 tpot:100 (metrics: ttft tpot e2el)")
    report.add_argument("--json", metavar="FILE", help="write every metric, the options and each request here")
    report.add_argument("--label", default="", help="a name for this run, kept in the JSON")
    report.add_argument("-q", "--quiet", action="store_true", help="no line per finished request on stderr")
    return parser


def load_requests(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[TraceRequest]:
    if (args.trace is None) == (args.poisson is None):
        parser.error("give either --trace CSV or --poisson RATE (with --requests N)")
    if args.poisson is not None:
        if args.requests is None:
            parser.error("--poisson needs --requests N")
        requests = poisson_requests(args.poisson, args.requests, args.prompt_tokens, args.output_tokens,
                                    args.seed, args.range_ratio)
    else:
        if args.requests is not None:
            parser.error("--requests goes with --poisson; to replay part of a trace use --max-requests")
        try:
            requests, skipped = load_trace(args.trace)
        except TraceError as e:
            parser.error(str(e))
        if skipped:
            print(f"loadgen: skipped {skipped} rows with 0 response tokens (failed requests in BurstGPT)",
                  file=sys.stderr)
        requests = scale_arrivals(requests, args.time_scale)
    return requests[:args.max_requests] if args.max_requests else requests


def print_progress(total: int) -> Callable[[RequestResult, int], None]:
    def show(result: RequestResult, finished: int) -> None:
        head = f"[{finished:>{len(str(total))}}/{total}] request {result.index}"
        if result.ok:
            tpot = result.tpot_s
            print(f"{head}: ttft {result.ttft_s * 1000:.0f} ms, "
                  f"tpot {'-' if tpot is None else f'{tpot * 1000:.1f}'} ms, "
                  f"e2el {result.e2el_s * 1000:.0f} ms, {result.output_tokens}/{result.max_tokens} tokens",
                  file=sys.stderr)
        else:
            print(f"{head}: error: {result.error}", file=sys.stderr)
    return show


def write_json(path: str, metrics: dict, config: dict, results: list[RequestResult]) -> None:
    report = dict(metrics)
    report["config"] = config
    report["requests"] = [dict(asdict(r), tpot_s=r.tpot_s) for r in results]
    with open(path, "w") as f:
        json.dump(report, f, indent=1)
        f.write("\n")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        slo = parse_goodput(args.goodput)
        endpoint = Endpoint.from_url(args.url, args.chat)
    except ValueError as e:
        parser.error(str(e))
    requests = load_requests(args, parser)
    builder = PromptBuilder(args.seed, args.shared_prefix, args.words_per_token)
    prompts = [builder.prompt(i, r.prompt_tokens) for i, r in enumerate(requests)]
    options = RunOptions(endpoint, args.chat, args.model, args.api_key, args.timeout, args.concurrency_limit)
    print(f"loadgen: {len(requests)} requests to {args.url}{endpoint.path} over "
          f"{requests[-1].arrival_s:.1f} s of arrivals", file=sys.stderr)
    try:
        results, duration, peak = replay(requests, prompts, options,
                                         None if args.quiet else print_progress(len(requests)))
    except KeyboardInterrupt:
        print("loadgen: interrupted", file=sys.stderr)
        return 130
    metrics = summarize(results, duration, slo)
    metrics["peak_in_flight"] = peak
    print(format_table(metrics))
    errors = [r for r in results if not r.ok]
    for r in errors[:5]:
        print(f"loadgen: request {r.index} failed: {r.error}", file=sys.stderr)
    if args.json:
        config = {key: value for key, value in vars(args).items() if key not in ("api_key", "quiet")}
        config.update(endpoint=f"{endpoint.scheme}://{endpoint.host}:{endpoint.port}{endpoint.path}",
                      goodput_slo_ms=slo)
        try:
            write_json(args.json, metrics, config, results)
        except OSError as e:
            print(f"loadgen: cannot write {args.json}: {e.strerror}", file=sys.stderr)
            return 1
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
