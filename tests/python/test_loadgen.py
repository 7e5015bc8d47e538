"""tests/python/test_loadgen.py: bench/loadgen.py's own logic, with no model
and no strata binary.

The BurstGPT trace parser takes the six columns, skips failed requests (0
response tokens) and rejects a bad row with its line number; percentiles,
TPOT and goodput equal hand-computed values; prompts are the same for the
same seed and share exactly the asked fraction of their words; bad options
give an argparse message, not a traceback; and a replay against a fake
OpenAI-compatible server in this process (http.server in a thread, streaming
chunks with known delays) counts completions, errors and output tokens, and
measures a TTFT close to the server's delay.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import loadgen  # noqa: E402
import make_trace  # noqa: E402

HEADER = "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"


def parse(text: str) -> tuple[list[loadgen.TraceRequest], int]:
    return loadgen.parse_trace(text.splitlines(keepends=True), "t.csv")


# ---------------------------------------------------------------- the trace

def test_trace_rows_become_requests_relative_to_the_first_arrival():
    requests, skipped = parse(HEADER + "10,ChatGPT,472,18,490,Conversation log\n"
                                       "12.5,GPT-4,30,0,30,API log\n"
                                       "\n"
                                       "11,ChatGPT,100.0,64,164,Conversation log\n")
    assert skipped == 1
    assert requests == [loadgen.TraceRequest(0.0, 472, 18), loadgen.TraceRequest(1.0, 100, 64)]


@pytest.mark.parametrize("body, message", [
    ("", "empty file"),
    ("Time,Model,Request tokens,Response tokens,Total tokens,Log Type\n", "line 1: header is Time,"),
    (HEADER + "0,ChatGPT,10,5,15\n", "line 2: 5 fields, expected 6"),
    (HEADER + "0,ChatGPT,10,5,15,Conversation log\nsoon,ChatGPT,1,1,2,x\n", "line 3: Timestamp 'soon'"),
    (HEADER + "-1,ChatGPT,10,5,15,Conversation log\n", "line 2: Timestamp '-1'"),
    (HEADER + "0,ChatGPT,ten,5,15,Conversation log\n", "line 2: Request tokens 'ten' is not a number"),
    (HEADER + "0,ChatGPT,10,2.5,12.5,Conversation log\n", "line 2: Response tokens '2.5' is not a whole"),
    (HEADER + "0,ChatGPT,10,0,10,Conversation log\n", "no request with response tokens > 0"),
])
def test_a_bad_trace_is_rejected_with_the_line_and_the_reason(body: str, message: str):
    with pytest.raises(loadgen.TraceError) as error:
        parse(body)
    assert message in str(error.value)
    assert str(error.value).startswith("t.csv")


def test_a_bad_trace_on_the_command_line_is_an_argparse_error_not_a_traceback(tmp_path, capsys):
    trace = tmp_path / "bad.csv"
    trace.write_text(HEADER + "0,ChatGPT,10\n")
    with pytest.raises(SystemExit) as exit_:
        loadgen.main(["--trace", str(trace), "--url", "http://127.0.0.1:9"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "bad.csv: line 2: 3 fields, expected 6" in err and "Traceback" not in err


@pytest.mark.parametrize("argv, message", [
    (["--poisson", "1"], "--poisson needs --requests"),
    ([], "give either --trace"),
    (["--poisson", "1", "--requests", "2", "--goodput", "ttft=5"], "is not METRIC:MS"),
    (["--poisson", "1", "--requests", "2", "--shared-prefix", "1.5"], "1.5 is not in 0..1"),
    (["--poisson", "1", "--requests", "2", "--url", "ftp://x"], "is not an http:// or https:// URL"),
    (["--trace", "/nonexistent/t.csv"], "/nonexistent/t.csv: cannot read"),
])
def test_bad_options_exit_2_with_a_message(argv: list[str], message: str, capsys):
    with pytest.raises(SystemExit) as exit_:
        loadgen.main(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_the_shipped_trace_is_what_make_trace_writes_and_parses():
    shipped = Path(loadgen.__file__).parent / "traces" / "burstgpt-synthetic.csv"
    rows = make_trace.make_rows(make_trace.TraceShape(48, 0.5, 0.5, 200, 1024, 48, 128), seed=2)
    assert [(float(t), req, resp) for t, req, resp in rows] == [
        (r.arrival_s, r.prompt_tokens, r.output_tokens) for r in loadgen.load_trace(str(shipped))[0]]
    assert shipped.read_text().startswith(HEADER)
    assert all(1 <= req <= 1024 and 1 <= resp <= 128 for _, req, resp in rows)


def test_time_scale_multiplies_arrivals():
    requests = [loadgen.TraceRequest(0.0, 1, 1), loadgen.TraceRequest(4.0, 1, 1)]
    assert [r.arrival_s for r in loadgen.scale_arrivals(requests, 0.5)] == [0.0, 2.0]


def test_poisson_load_is_seeded_with_the_asked_rate_and_lengths():
    first = loadgen.poisson_requests(4.0, 2000, 100, 20, seed=3)
    assert first == loadgen.poisson_requests(4.0, 2000, 100, 20, seed=3)
    assert first != loadgen.poisson_requests(4.0, 2000, 100, 20, seed=4)
    assert first[0].arrival_s == 0.0
    assert first[-1].arrival_s / 1999 == pytest.approx(0.25, rel=0.1)
    assert all(50 <= r.prompt_tokens <= 150 and 10 <= r.output_tokens <= 30 for r in first)
    assert sum(r.prompt_tokens for r in first) / 2000 == pytest.approx(100, rel=0.05)


# ---------------------------------------------------------------- metrics

def test_percentiles_interpolate_linearly_between_ranks():
    values = [4.0, 1.0, 3.0, 2.0]
    assert loadgen.percentile(values, 50) == pytest.approx(2.5)
    assert loadgen.percentile(values, 90) == pytest.approx(3.7)    # rank 2.7: 3 + 0.7
    assert loadgen.percentile(values, 99) == pytest.approx(3.97)
    assert loadgen.percentile([7.0], 99) == 7.0
    assert loadgen.percentile([], 50) is None
    stats = loadgen.distribution("ttft", [1.0, 3.0])
    assert stats == {"mean_ttft_ms": 2.0, "median_ttft_ms": 2.0, "std_ttft_ms": 1.0, "p50_ttft_ms": 2.0,
                     "p90_ttft_ms": pytest.approx(2.8), "p99_ttft_ms": pytest.approx(2.98)}


def finished(index: int, ttft: float, e2el: float, tokens: int, itl: list[float] | None = None,
             ok: bool = True) -> loadgen.RequestResult:
    return loadgen.RequestResult(index, 0.0, 100, tokens, ok=ok, ttft_s=ttft, e2el_s=e2el,
                                 output_tokens=tokens if ok else 0, itl_s=itl or [])


def test_tpot_is_decode_time_per_token_after_the_first():
    assert finished(0, 0.1, 1.0, 10).tpot_s == pytest.approx(0.1)
    assert finished(0, 0.1, 1.0, 1).tpot_s is None
    assert finished(0, 0.1, 1.0, 10, ok=False).tpot_s is None


def test_summary_throughput_and_goodput_match_hand_computation():
    results = [
        finished(0, 0.2, 1.1, 10, [0.1] * 9),    # ttft 200 ms, tpot 100 ms: meets both
        finished(1, 0.6, 1.5, 10, [0.1] * 9),    # ttft 600 ms: misses ttft:500
        finished(2, 0.3, 3.0, 10, [0.3] * 9),    # tpot 300 ms: misses tpot:150
        finished(3, 0.1, 0.1, 1),                # one token: no tpot, meets both
        finished(4, None, None, 10, ok=False),   # an error
    ]
    metrics = loadgen.summarize(results, 2.0, {"ttft": 500, "tpot": 150})
    assert metrics["completed"] == 4 and metrics["errors"] == 1
    assert metrics["total_output_tokens"] == 31 and metrics["total_input_tokens"] == 400
    assert metrics["request_throughput"] == pytest.approx(2.0)
    assert metrics["output_throughput"] == pytest.approx(15.5)
    assert metrics["total_token_throughput"] == pytest.approx(215.5)
    assert metrics["request_goodput"] == pytest.approx(1.0)         # requests 0 and 3 in 2 s
    assert metrics["mean_tpot_ms"] == pytest.approx((100 + 100 + 300) / 3)
    assert metrics["median_ttft_ms"] == pytest.approx(250)
    assert metrics["mean_itl_ms"] == pytest.approx((0.1 * 18 + 0.3 * 9) / 27 * 1000)
    assert loadgen.summarize(results, 2.0, {})["request_goodput"] is None
    assert loadgen.summarize(results, 2.0, {"e2el": 1200})["request_goodput"] == pytest.approx(1.0)


def test_goodput_option_parses_each_metric():
    assert loadgen.parse_goodput(["ttft:500", "tpot:50.5"]) == {"ttft": 500.0, "tpot": 50.5}
    for bad in ("ttft", "speed:5", "ttft:fast", "tpot:-1"):
        with pytest.raises(ValueError):
            loadgen.parse_goodput([bad])


# ---------------------------------------------------------------- prompts

def common_prefix(a: list[str], b: list[str]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def test_prompts_are_deterministic_and_sized_in_words():
    one, two = loadgen.PromptBuilder(seed=5), loadgen.PromptBuilder(seed=5)
    assert one.prompt(3, 200) == two.prompt(3, 200)
    assert one.prompt(3, 200) != one.prompt(4, 200)
    assert one.prompt(3, 200) != loadgen.PromptBuilder(seed=6).prompt(3, 200)
    assert len(one.prompt(0, 201).split()) == 200          # one token is the BOS
    assert len(one.prompt(0, 1).split()) == 1              # never empty
    assert set(one.prompt(0, 500).split()) <= set(loadgen.WORDS)


@pytest.mark.parametrize("ratio", [0.0, 0.25, 0.5, 1.0])
def test_shared_prefix_is_exactly_the_asked_fraction_of_each_prompt(ratio: float):
    builder = loadgen.PromptBuilder(seed=1, shared_prefix=ratio)
    stream = loadgen.PromptBuilder(seed=1).shared_words(2000)
    prompts = [builder.prompt(i, tokens).split() for i, tokens in enumerate((401, 801, 201, 401))]
    for words in prompts:
        assert common_prefix(words, stream) == round(len(words) * ratio)
    # two requests share at least the shorter shared part and, past it, only chance matches
    assert common_prefix(prompts[0], prompts[3]) - round(400 * ratio) in range(0, 3)
    assert common_prefix(prompts[1], prompts[2]) == round(200 * ratio)


def test_request_body_asks_for_a_streamed_greedy_exact_length_completion():
    body = loadgen.request_body("a b", 17, chat=False, model=None)
    assert body == {"prompt": "a b", "max_tokens": 17, "temperature": 0, "ignore_eos": True,
                    "stream": True, "stream_options": {"include_usage": True}}
    chat = loadgen.request_body("a b", 17, chat=True, model="m")
    assert chat["messages"] == [{"role": "user", "content": "a b"}] and chat["model"] == "m"


def test_sse_events_join_data_lines_and_pass_llama_server_error_lines():
    lines = iter([b": keep-alive\n", b"data: {\"a\":\n", b"data: 1}\n", b"\n",
                  b"error: {\"error\": {\"message\": \"boom\"}}\n", b"\n", b"data: [DONE]", b""])
    assert list(loadgen.sse_events(lambda: next(lines))) == [
        ("data", "{\"a\":\n1}"), ("error", "{\"error\": {\"message\": \"boom\"}}"), ("data", "[DONE]")]


# ---------------------------------------------------------------- a replay

FIRST_DELAY = 0.25      # the fake server's time to first token
GAP = 0.02              # and between tokens
FAIL_HTTP = 13          # max_tokens that the fake server answers with HTTP 503
FAIL_STREAM = 7         # max_tokens that gets an error object after one token
NO_DONE = 9             # max_tokens whose stream ends without [DONE]


class FakeOpenAI(BaseHTTPRequestHandler):
    """/v1/completions (or chat) streaming max_tokens one-word chunks, then
    usage, then [DONE]; a chat stream opens with a role chunk without text,
    as llama-server's does."""

    bodies: list[dict] = []

    def log_message(self, *args: object) -> None:
        pass

    def send_event(self, obj: object) -> None:
        data = obj if isinstance(obj, str) else json.dumps(obj)
        self.wfile.write(f"data: {data}\n\n".encode())
        self.wfile.flush()

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeOpenAI.bodies.append(body | {"path": self.path, "auth": self.headers.get("Authorization")})
        n = body["max_tokens"]
        if n == FAIL_HTTP:
            self.send_response(503)
            self.end_headers()
            self.wfile.write(b'{"error": {"message": "loading"}}')
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        chat = self.path.endswith("/chat/completions")
        if chat:
            self.send_event({"choices": [{"index": 0, "delta": {"role": "assistant", "content": None}}]})
        time.sleep(FIRST_DELAY)
        for i in range(n):
            if i > 0:
                time.sleep(GAP)
            choice = {"delta": {"content": " w"}} if chat else {"text": " w"}
            self.send_event({"choices": [choice | {"index": 0, "finish_reason": None}]})
            if n == FAIL_STREAM:
                self.send_event({"error": {"message": "out of KV memory", "code": 500}})
                return
        self.send_event({"choices": [], "usage": {"prompt_tokens": 50, "completion_tokens": n,
                                                   "prompt_tokens_details": {"cached_tokens": 10}}})
        if n != NO_DONE:
            self.send_event("[DONE]")


@pytest.fixture
def fake_server():
    FakeOpenAI.bodies = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeOpenAI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_replay_against_a_fake_server_measures_what_it_streams(fake_server, tmp_path, capsys):
    trace = tmp_path / "t.csv"
    trace.write_text(HEADER + "0,ChatGPT,40,5,45,Conversation log\n"
                              "0.1,ChatGPT,40,8,48,Conversation log\n"
                              f"0.1,ChatGPT,40,{FAIL_HTTP},53,Conversation log\n"
                              f"0.2,ChatGPT,40,{FAIL_STREAM},47,Conversation log\n"
                              f"0.2,ChatGPT,40,{NO_DONE},49,Conversation log\n"
                              "0.3,ChatGPT,40,1,41,Conversation log\n")
    out = tmp_path / "out.json"
    code = loadgen.main(["--trace", str(trace), "--url", fake_server, "--api-key", "k", "-q",
                         "--goodput", "ttft:5000", "--json", str(out), "--timeout", "10"])
    assert code == 1                                       # some requests failed
    report = json.loads(out.read_text())
    assert report["completed"] == 3 and report["errors"] == 3
    assert report["total_output_tokens"] == 5 + 8 + 1
    assert report["total_input_tokens"] == 150           # from the usage chunks
    assert report["short_outputs"] == 0
    assert report["total_cached_tokens"] == 30
    assert FIRST_DELAY <= report["mean_ttft_ms"] / 1000 < FIRST_DELAY + 0.5
    assert GAP * 0.9 <= report["median_itl_ms"] / 1000 < GAP + 0.2
    assert report["request_goodput"] == pytest.approx(report["request_throughput"])
    errors = sorted(r["error"] for r in report["requests"] if r["error"])
    assert errors[0].startswith("HTTP 503")
    assert errors[1] == "error in stream: out of KV memory"
    assert errors[2] == "stream ended before data: [DONE]"
    assert len(FakeOpenAI.bodies) == 6
    assert all(b["path"] == "/v1/completions" and b["auth"] == "Bearer k" and b["ignore_eos"] is True
               and b["temperature"] == 0 and b["stream_options"] == {"include_usage": True}
               for b in FakeOpenAI.bodies)
    assert sorted(b["max_tokens"] for b in FakeOpenAI.bodies) == [1, 5, 7, 8, 9, 13]
    table = capsys.readouterr().out
    assert "request_throughput" in table and "p99_e2el_ms" in table


def test_chat_replay_counts_only_chunks_with_content(fake_server):
    options = loadgen.RunOptions(loadgen.Endpoint.from_url(fake_server, chat=True), chat=True, timeout=10)
    results, _, _ = loadgen.replay([loadgen.TraceRequest(0.0, 10, 4)], ["x"], options)
    assert results[0].ok and results[0].text_chunks == 4 and results[0].output_tokens == 4
    assert results[0].ttft_s >= FIRST_DELAY and len(results[0].itl_s) == 3
    assert FakeOpenAI.bodies[0]["path"] == "/v1/chat/completions"
    assert FakeOpenAI.bodies[0]["messages"] == [{"role": "user", "content": "x"}]


def test_concurrency_limit_caps_requests_in_flight(fake_server):
    requests = [loadgen.TraceRequest(0.0, 10, 2) for _ in range(4)]
    options = loadgen.RunOptions(loadgen.Endpoint.from_url(fake_server + "/v1", chat=False),
                                 timeout=10, concurrency_limit=2)
    results, duration, peak = loadgen.replay(requests, ["x"] * 4, options)
    assert peak == 2 and all(r.ok for r in results)
    assert duration >= 2 * FIRST_DELAY                  # two waves


def closed_port() -> int:
    """A local port nothing listens on (bound, then closed again)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_unreachable_server_counts_as_errors():
    options = loadgen.RunOptions(loadgen.Endpoint.from_url(f"http://127.0.0.1:{closed_port()}", chat=True),
                                 timeout=5)
    results, _, _ = loadgen.replay([loadgen.TraceRequest(0.0, 10, 2)], ["x"], options)
    assert not results[0].ok and "Connection" in results[0].error
    assert loadgen.summarize(results, 1.0, {})["errors"] == 1
