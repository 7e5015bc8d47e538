"""tests/python/test_serve.py: `strata serve` end to end, a real server process
on the default model (Gemma 3 270M, fetched by scripts/fetch-model.sh) spoken
to over real sockets with the standard library's HTTP client.

Greedy answers are the same streamed and not (both endpoints, OpenAI's
shapes, `[DONE]` last); 32 streams at once each get exactly their tokens; a
shared system prompt is served from the prefix cache the second time; the API
key guards every endpoint but /health; every malformed request gets its 4xx
with a message naming the problem; a client that hangs up cancels its request
and frees its KV; SIGTERM lets a running request finish and exits 0; a KV pool
far too small for the load preempts and still gives every request the answer
it gets alone; n gives n choices; stop strings cut the text; /metrics is valid
Prometheus text.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from strata_cli import require_strata

MODEL = Path(os.environ.get("STRATA_CACHE", Path.home() / ".cache" / "strata")) / "models" / \
    "gemma-3-270m-q4_k_m.gguf"
TIMEOUT = 120  # seconds for one HTTP exchange; the machine may be busy


class Server:
    """A `strata serve` process on a free port; stderr goes to a file."""

    def __init__(self, *args: str, env: dict | None = None):
        if not MODEL.is_file():
            pytest.fail(f"{MODEL} is missing: run scripts/fetch-model.sh")
        self.log = tempfile.NamedTemporaryFile(prefix="strata-serve-", suffix=".log", delete=False)
        command = [str(require_strata()), "serve", "-m", str(MODEL), "-t", "2", "--port", "0", *args]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=self.log,
                                        env={**os.environ, **(env or {})})
        deadline = time.monotonic() + 60
        while True:
            text = self.stderr()
            found = re.search(r"listening on http://(\S+):(\d+)", text)
            if found:
                self.port = int(found.group(2))
                break
            if self.process.poll() is not None:
                pytest.fail(f"strata serve exited {self.process.returncode} before listening:\n{text}")
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"strata serve did not print its listening line in 60 s:\n{text}")
            time.sleep(0.05)

    def stderr(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)
        Path(self.log.name).unlink(missing_ok=True)

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT)

    def request(self, method: str, path: str, body=None, headers: dict | None = None,
                raw: bytes | None = None) -> tuple[int, dict, bytes]:
        """(status, headers, body) of one exchange; body is JSON-encoded unless raw is given."""
        connection = self.connection()
        try:
            payload = raw if raw is not None else (None if body is None else json.dumps(body).encode())
            all_headers = {"Content-Type": "application/json", **(headers or {})}
            connection.request(method, path, body=payload, headers=all_headers)
            response = connection.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            connection.close()

    def post(self, path: str, body, headers: dict | None = None) -> tuple[int, dict]:
        status, _, data = self.request("POST", path, body, headers)
        return status, json.loads(data)

    def stream(self, path: str, body) -> tuple[list, dict]:
        """The events of a streamed answer (parsed JSON, and the literal "[DONE]") and the headers."""
        connection = self.connection()
        try:
            connection.request("POST", path, body=json.dumps({**body, "stream": True}).encode(),
                               headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            assert response.status == 200, response.read()
            headers = {k.lower(): v for k, v in response.getheaders()}
            events = []
            for line in response:
                line = line.decode().rstrip("\r\n")
                if not line:
                    continue
                assert line.startswith("data: "), line
                data = line[len("data: "):]
                events.append(data if data == "[DONE]" else json.loads(data))
            return events, headers
        finally:
            connection.close()

    def metrics(self) -> dict[str, float]:
        status, headers, data = self.request("GET", "/metrics")
        assert status == 200
        values = {}
        for line in data.decode().splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                values[name] = float(value)
        return values


@pytest.fixture(scope="module")
def server():
    s = Server("--max-body", "64K")
    yield s
    s.stop()


def joined_text(events: list, chat: bool) -> dict[int, str]:
    texts: dict[int, str] = {}
    for event in events:
        if event == "[DONE]":
            continue
        for choice in event["choices"]:
            piece = choice["delta"].get("content", "") if chat else choice["text"]
            texts[choice["index"]] = texts.get(choice["index"], "") + (piece or "")
    return texts


def finish_reasons(events: list) -> dict[int, str]:
    reasons = {}
    for event in events:
        if event == "[DONE]":
            continue
        for choice in event["choices"]:
            if choice["finish_reason"] is not None:
                assert choice["index"] not in reasons, "a choice finished twice"
                reasons[choice["index"]] = choice["finish_reason"]
    return reasons


# ------------------------------------------------------------ the endpoints

def test_completion_streamed_and_not_give_the_same_greedy_text(server):
    body = {"model": "anything", "prompt": "The capital of France is", "max_tokens": 12, "temperature": 0}
    status, plain = server.post("/v1/completions", body)
    assert status == 200, plain
    assert plain["object"] == "text_completion" and plain["id"].startswith("cmpl-")
    assert isinstance(plain["created"], int) and plain["model"] == "gemma-3-270m-q4_k_m"
    [choice] = plain["choices"]
    assert choice["index"] == 0 and choice["logprobs"] is None and choice["text"].strip() != ""
    assert choice["finish_reason"] in ("stop", "length")
    usage = plain["usage"]
    assert usage["prompt_tokens"] > 0 and 0 < usage["completion_tokens"] <= 12
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert "cached_tokens" in usage["prompt_tokens_details"]
    if choice["finish_reason"] == "length":
        assert usage["completion_tokens"] == 12

    events, headers = server.stream("/v1/completions", {**body, "stream_options": {"include_usage": True}})
    assert headers["content-type"].startswith("text/event-stream")
    assert headers["cache-control"] == "no-cache"
    assert events[-1] == "[DONE]" and events.count("[DONE]") == 1
    chunks = events[:-1]
    assert all(c["object"] == "text_completion" and c["id"] == chunks[0]["id"] for c in chunks)
    assert joined_text(events, chat=False) == {0: choice["text"]}
    assert finish_reasons(events) == {0: choice["finish_reason"]}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == usage["completion_tokens"]
    assert chunks[-1]["usage"]["prompt_tokens"] == usage["prompt_tokens"]

    # The same prompt as an array of one string.
    status, again = server.post("/v1/completions", {**body, "prompt": [body["prompt"]]})
    assert status == 200 and again["choices"][0]["text"] == choice["text"]


def test_chat_of_several_messages_streamed_and_not_give_the_same_greedy_text(server):
    body = {"messages": [{"role": "system", "content": "You answer in one word."},
                         {"role": "user", "content": "Name a colour."},
                         {"role": "assistant", "content": "Blue."},
                         {"role": "user", "content": [{"type": "text", "text": "Name "},
                                                      {"type": "text", "text": "a fruit."}]}],
            "max_tokens": 8, "temperature": 0}
    status, plain = server.post("/v1/chat/completions", body)
    assert status == 200, plain
    assert plain["object"] == "chat.completion" and plain["id"].startswith("chatcmpl-")
    [choice] = plain["choices"]
    assert choice["message"]["role"] == "assistant" and isinstance(choice["message"]["content"], str)
    assert choice["finish_reason"] in ("stop", "length")
    assert plain["usage"]["prompt_tokens"] > 20

    events, _ = server.stream("/v1/chat/completions", body)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-1]["choices"][0]["delta"] == {} and chunks[-1]["choices"][0]["finish_reason"] == \
        choice["finish_reason"]
    assert joined_text(events, chat=True) == {0: choice["message"]["content"]}


def test_n_gives_that_many_choices_streamed_and_not(server):
    body = {"prompt": "My favourite animal is", "max_tokens": 6, "n": 3, "temperature": 0.9, "seed": 7,
            "ignore_eos": True}
    status, plain = server.post("/v1/completions", body)
    assert status == 200, plain
    assert [c["index"] for c in plain["choices"]] == [0, 1, 2]
    assert all(c["finish_reason"] == "length" for c in plain["choices"])
    assert plain["usage"]["completion_tokens"] == 18
    events, _ = server.stream("/v1/completions", body)
    assert finish_reasons(events) == {0: "length", 1: "length", 2: "length"}
    # The same seed gives the same samples.
    assert joined_text(events, chat=False) == {c["index"]: c["text"] for c in plain["choices"]}


def test_stop_strings_cut_the_text(server):
    body = {"prompt": "1, 2, 3, 4,", "max_tokens": 40, "temperature": 0, "stop": [" 9", "never"]}
    status, plain = server.post("/v1/completions", body)
    assert status == 200, plain
    [choice] = plain["choices"]
    assert choice["finish_reason"] == "stop"
    assert choice["text"].endswith(" 8,") and " 9" not in choice["text"]
    events, _ = server.stream("/v1/completions", {**body, "stop": " 9"})
    assert joined_text(events, chat=False) == {0: choice["text"]}
    assert finish_reasons(events) == {0: "stop"}


def test_models_and_health(server):
    status, _, data = server.request("GET", "/v1/models")
    models = json.loads(data)
    assert status == 200 and models["object"] == "list"
    assert models["data"][0]["id"] == "gemma-3-270m-q4_k_m" and models["data"][0]["owned_by"] == "strata"
    assert models["data"][0]["object"] == "model" and isinstance(models["data"][0]["created"], int)
    status, _, data = server.request("GET", "/health")
    assert status == 200 and json.loads(data) == {"status": "ok"}


def test_32_concurrent_streams_each_get_their_tokens(server):
    results: dict[int, list] = {}
    errors: list = []

    def one(i: int) -> None:
        try:
            results[i], _ = server.stream("/v1/completions", {
                "prompt": f"Story number {i}: once upon a time", "max_tokens": 8, "ignore_eos": True,
                "temperature": 0.8, "seed": i, "stream_options": {"include_usage": True}})
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(f"stream {i}: {e!r}")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    assert len(results) == 32
    for i, events in results.items():
        assert events[-1] == "[DONE]", i
        assert events[-2]["usage"]["completion_tokens"] == 8, i
        text_chunks = [e for e in events[:-2] if e["choices"][0]["text"]]
        assert 1 <= len(text_chunks) <= 8, i
        assert finish_reasons(events) == {0: "length"}, i


def test_a_shared_system_prompt_is_served_from_the_prefix_cache(server):
    system = "You are a careful assistant for a library. " + " ".join(
        f"Rule {i}: keep every book in its place and answer politely." for i in range(12))
    before = server.metrics()["strata_prompt_cached_tokens_total"]
    usages = []
    for question in ("Where are the atlases?", "When do you open?"):
        status, answer = server.post("/v1/chat/completions", {
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": question}],
            "max_tokens": 2, "temperature": 0, "cache_namespace": "library"})
        assert status == 200, answer
        usages.append(answer["usage"])
    assert usages[0]["prompt_tokens"] > 100
    assert usages[1]["prompt_tokens_details"]["cached_tokens"] > 64
    assert server.metrics()["strata_prompt_cached_tokens_total"] > before
    # Another namespace does not see that cache.
    status, answer = server.post("/v1/chat/completions", {
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": "Hello?"}],
        "max_tokens": 2, "temperature": 0, "cache_namespace": "another tenant"})
    assert status == 200 and answer["usage"]["prompt_tokens_details"]["cached_tokens"] == 0


def test_metrics_are_prometheus_text(server):
    status, headers, data = server.request("GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    text = data.decode()
    for name, kind in [("strata_requests_total", "counter"), ("strata_requests_rejected_total", "counter"),
                       ("strata_prompt_tokens_total", "counter"), ("strata_prompt_cached_tokens_total", "counter"),
                       ("strata_generation_tokens_total", "counter"), ("strata_preemptions_total", "counter"),
                       ("strata_steps_total", "counter"), ("strata_requests_running", "gauge"),
                       ("strata_requests_waiting", "gauge"), ("strata_kv_used_bytes", "gauge"),
                       ("strata_kv_free_bytes", "gauge"), ("strata_kv_budget_bytes", "gauge"),
                       ("strata_prefix_cache_hit_tokens_total", "counter"),
                       ("strata_time_to_first_token_seconds", "histogram"),
                       ("strata_time_per_output_token_seconds", "histogram"),
                       ("strata_request_latency_seconds", "histogram")]:
        assert f"# TYPE {name} {kind}\n" in text and f"# HELP {name} " in text, name
    for reason in ("stop", "length", "cancelled", "error"):
        assert f'strata_requests_total{{finish_reason="{reason}"}} ' in text
    for name in ("strata_time_to_first_token_seconds", "strata_request_latency_seconds"):
        buckets = [(le, float(v)) for le, v in re.findall(rf'^{name}_bucket{{le="([^"]+)"}} (\S+)$', text, re.M)]
        assert buckets[-1][0] == "+Inf"
        counts = [v for _, v in buckets]
        assert counts == sorted(counts), "buckets must be cumulative"
        count = float(re.search(rf"^{name}_count (\S+)$", text, re.M).group(1))
        assert counts[-1] == count > 0
        assert re.search(rf"^{name}_sum \S+$", text, re.M)


# ------------------------------------------------------------- bad requests

TOKENS_100 = list(range(1000, 1100))


@pytest.mark.parametrize("path, body, param, message", [
    ("/v1/completions", {}, "prompt", "prompt is required"),
    ("/v1/completions", {"prompt": 5}, "prompt", "prompt must be a string"),
    ("/v1/completions", {"prompt": ["a", "b"]}, "prompt", "one prompt per request"),
    ("/v1/completions", {"prompt": [1, "b"]}, "prompt", "token ids"),
    ("/v1/completions", {"prompt": [-1, 5]}, "prompt", "token ids from 0"),
    ("/v1/completions", {"prompt": "x", "model": 3}, "model", "model must be a string"),
    ("/v1/completions", {"prompt": "x", "temperature": "hot"}, "temperature", "temperature must be a number"),
    ("/v1/completions", {"prompt": "x", "temperature": 2.5}, "temperature", "from 0 to 2"),
    ("/v1/completions", {"prompt": "x", "top_p": 0}, "top_p", "top_p must be"),
    ("/v1/completions", {"prompt": "x", "top_k": 1.5}, "top_k", "top_k must be a whole number"),
    ("/v1/completions", {"prompt": "x", "min_p": 2}, "min_p", "min_p must be"),
    ("/v1/completions", {"prompt": "x", "max_tokens": 0}, "max_tokens", "max_tokens must be a whole number"),
    ("/v1/completions", {"prompt": "x", "max_tokens": "5"}, "max_tokens", "max_tokens must be"),
    ("/v1/completions", {"prompt": "x", "n": 0}, "n", "n must be a whole number from 1 to 16"),
    ("/v1/completions", {"prompt": "x", "n": 17}, "n", "from 1 to 16"),
    ("/v1/completions", {"prompt": "x", "seed": "s"}, "seed", "seed must be a whole number"),
    ("/v1/completions", {"prompt": "x", "stop": 5}, "stop", "stop must be a string or an array"),
    ("/v1/completions", {"prompt": "x", "stop": ["a"] * 9}, "stop", "at most 8"),
    ("/v1/completions", {"prompt": "x", "stream": "yes"}, "stream", "stream must be true or false"),
    ("/v1/completions", {"prompt": "x", "stream_options": {"include_usage": 1}}, "stream_options", "true or false"),
    ("/v1/completions", {"prompt": "x", "ignore_eos": 1}, "ignore_eos", "true or false"),
    ("/v1/completions", {"prompt": "x", "repetition_penalty": 0}, "repetition_penalty", "above 0"),
    ("/v1/completions", {"prompt": "x", "kv_budget": "lots"}, "kv_budget", "percentage"),
    ("/v1/completions", {"prompt": "x", "kv_params": [1]}, "kv_params", "kv_params must be"),
    ("/v1/completions", {"prompt": "x", "cache_namespace": 7}, "cache_namespace", "must be a string"),
    ("/v1/completions", {"prompt": "x", "logprobs": 2}, "logprobs", "not supported"),
    ("/v1/completions", {"prompt": "x", "echo": True}, "echo", "not supported"),
    ("/v1/completions", {"prompt": "x", "best_of": 3}, "best_of", "not supported"),
    ("/v1/completions", {"prompt": "x", "suffix": "end"}, "suffix", "not supported"),
    ("/v1/chat/completions", {"messages": "hi"}, "messages", "messages must be a non-empty array"),
    ("/v1/chat/completions", {"messages": []}, "messages", "non-empty array"),
    ("/v1/chat/completions", {"messages": [{"role": 1, "content": "x"}]}, "messages", "role must be a string"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages",
     "only text parts"),
    ("/v1/chat/completions", {"messages": [{"role": "robot", "content": "x"}]}, "messages", "role 'robot'"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": -1},
     "max_completion_tokens", "at least 1"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]},
     "tools", "not supported"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "logprobs": True}, "logprobs",
     "not supported"),
])
def test_a_bad_field_is_a_400_naming_it(server, path, body, param, message):
    status, answer = server.post(path, body)
    assert status == 400, answer
    error = answer["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert message in error["message"], error["message"]


def test_bad_json_and_bad_bodies_are_400_with_the_problem(server):
    status, _, data = server.request("POST", "/v1/completions", raw=b'{"prompt": "x", "max_tokens": }')
    error = json.loads(data)["error"]
    assert status == 400 and "not valid JSON" in error["message"] and "line 1, column" in error["message"]
    status, _, data = server.request("POST", "/v1/completions", raw=b"")
    assert status == 400 and "not valid JSON" in json.loads(data)["error"]["message"]
    status, _, data = server.request("POST", "/v1/completions", raw=b'["a list"]')
    assert status == 400 and "JSON object" in json.loads(data)["error"]["message"]


def test_unknown_fields_and_nulls_are_ignored(server):
    status, answer = server.post("/v1/completions", {
        "prompt": "Hello", "max_tokens": 2, "frobnicate": {"deep": [1, 2]}, "user": "me", "temperature": None,
        "logprobs": None, "best_of": 1, "presence_penalty": 0.5})
    assert status == 200, answer
    assert answer["usage"]["completion_tokens"] <= 2


def test_token_ids_as_the_prompt_and_the_context_limit(server):
    status, answer = server.post("/v1/completions", {"prompt": TOKENS_100, "max_tokens": 2, "temperature": 0})
    assert status == 200 and answer["usage"]["prompt_tokens"] == 100
    status, answer = server.post("/v1/completions", {"prompt": TOKENS_100, "max_tokens": 8150})
    assert status == 400 and "context" in answer["error"]["message"], answer
    status, answer = server.post("/v1/chat/completions", {
        "messages": [{"role": "user", "content": "word " * 9000}], "max_tokens": 4})
    assert status == 400 and "context" in answer["error"]["message"], answer


def test_a_body_over_the_limit_is_413(server):
    big = json.dumps({"prompt": "x" * 100_000}).encode()
    status, _, data = server.request("POST", "/v1/completions", raw=big)
    assert status == 413 and "at most" in json.loads(data)["error"]["message"]
    # The same, sent in chunks with no declared length.
    connection = server.connection()
    connection.putrequest("POST", "/v1/completions")
    connection.putheader("Transfer-Encoding", "chunked")
    connection.endheaders()
    for start in range(0, len(big), 16384):
        piece = big[start:start + 16384]
        connection.send(b"%x\r\n%s\r\n" % (len(piece), piece))
    connection.send(b"0\r\n\r\n")
    response = connection.getresponse()
    assert response.status == 413 and "at most" in json.loads(response.read())["error"]["message"]
    connection.close()


def test_unknown_paths_are_404_and_wrong_methods_405(server):
    status, _, data = server.request("GET", "/v1/engines")
    assert status == 404 and "/v1/engines" in json.loads(data)["error"]["message"]
    status, headers, _ = server.request("GET", "/v1/completions")
    assert status == 405 and headers["allow"] == "POST"
    status, headers, _ = server.request("POST", "/v1/models", {})
    assert status == 405 and "GET" in headers["allow"]


# --------------------------------------------------------- other servers

@pytest.mark.parametrize("how", ["flag", "environment"])
def test_the_api_key_guards_every_endpoint_but_health(how):
    s = Server("--api-key", "sesame") if how == "flag" else Server(env={"STRATA_API_KEY": "sesame"})
    try:
        for method, path, body in [("GET", "/v1/models", None), ("GET", "/metrics", None),
                                   ("POST", "/v1/completions", {"prompt": "Hi", "max_tokens": 1})]:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "sesame"}):
                status, _, data = s.request(method, path, body, headers)
                assert status == 401, (path, headers)
                if path != "/metrics":
                    assert json.loads(data)["error"]["type"] == "authentication_error"
            status, _, data = s.request(method, path, body, {"Authorization": "Bearer sesame"})
            assert status == 200, (path, data)
        status, _, _ = s.request("GET", "/health")
        assert status == 200
    finally:
        s.stop()


def open_raw_stream(port: int, body: dict) -> tuple[socket.socket, bytes]:
    """Starts a streamed completion on a plain socket; returns it and the bytes up to the first event."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    payload = json.dumps({**body, "stream": True}).encode()
    sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(payload), payload))
    received = b""
    while not re.search(rb"data: [^\n]*\n\n", received):
        chunk = sock.recv(4096)
        assert chunk, f"the server closed the stream early: {received!r}"
        received += chunk
    return sock, received


def wait_for(condition, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {seconds} s")
        time.sleep(0.1)


def test_a_client_that_hangs_up_cancels_its_request_and_frees_its_kv(server):
    before = server.metrics()
    sock, received = open_raw_stream(server.port, {"prompt": "Tell me a long story.", "max_tokens": 4000,
                                                   "ignore_eos": True, "temperature": 0.7})
    assert b"200 OK" in received.split(b"\r\n", 1)[0]
    during = wait_for(lambda: (m := server.metrics())["strata_requests_running"] >= 1 and m, 10,
                      "the stream running")
    assert during["strata_kv_used_bytes"] > before["strata_kv_used_bytes"]
    sock.shutdown(socket.SHUT_RDWR)
    sock.close()
    cancelled = 'strata_requests_total{finish_reason="cancelled"}'
    after = wait_for(lambda: (m := server.metrics())[cancelled] == before[cancelled] + 1 and
                     m["strata_requests_running"] == 0 and m, 5, "the cancellation")
    assert after["strata_kv_used_bytes"] < during["strata_kv_used_bytes"]
    assert after["strata_generation_tokens_total"] - before["strata_generation_tokens_total"] < 3000


def kv_bytes_of_a_running_stream(server, body: dict) -> float:
    """The pool's used bytes added while a stream of body runs (it is then hung up and cancelled)."""
    before = server.metrics()
    sock, _ = open_raw_stream(server.port, body)
    try:
        # Decoding: the prompt's KV is all there.
        generated = before["strata_generation_tokens_total"]
        during = wait_for(lambda: (m := server.metrics())["strata_requests_running"] >= 1 and
                          m["strata_generation_tokens_total"] > generated + 2 and m, 60, "the stream decoding")
    finally:
        sock.close()
    wait_for(lambda: server.metrics()["strata_requests_running"] == 0, 10, "the cancellation")
    return during["strata_kv_used_bytes"] - before["strata_kv_used_bytes"]


def test_a_request_chooses_its_kv_policy(server):
    # Two prompts of about 900 tokens, different from each other and from every other test's.
    words = "river stone cloud lamp garden window paper violin harbor meadow".split()
    prompts = [" ".join(words[(i * 7 + k) % 10] + str(i % 97) for i in range(450)) for k in (1, 3)]
    base = {"max_tokens": 3000, "ignore_eos": True, "temperature": 0}
    full = kv_bytes_of_a_running_stream(server, {**base, "prompt": prompts[0]})
    packed = kv_bytes_of_a_running_stream(server, {**base, "prompt": prompts[1], "kv_policy": "q8"})
    # q8 packs every full block to 34 bytes per 32 values instead of 128: under half, whatever is in flight.
    assert 0 < packed < 0.5 * full, (packed, full)
    status, answer = server.post("/v1/completions", {
        "prompt": prompts[1], "max_tokens": 4, "kv_policy": "snapkv+kivi4", "kv_budget": "25%",
        "kv_params": {"observation": 16}})
    assert status == 200 and answer["usage"]["completion_tokens"] == 4, answer
    for body, param_text in (({"kv_policy": "nosuch", "kv_budget": 64}, "nosuch"),
                             ({"kv_policy": "snapkv"}, "kv_budget"),
                             ({"kv_policy": "snapkv", "kv_budget": 64, "kv_params": "nosuch=1"}, "nosuch")):
        status, answer = server.post("/v1/completions", {"prompt": "Hi", "max_tokens": 2, **body})
        assert status == 400 and param_text in answer["error"]["message"], answer


def test_a_plain_request_whose_client_hangs_up_is_cancelled_too(server):
    before = server.metrics()
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
    payload = json.dumps({"prompt": "Count:", "max_tokens": 4000, "ignore_eos": True}).encode()
    sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(payload), payload))
    wait_for(lambda: server.metrics()["strata_requests_running"] >= 1, 10, "the request running")
    sock.close()
    cancelled = 'strata_requests_total{finish_reason="cancelled"}'
    wait_for(lambda: (m := server.metrics())[cancelled] == before[cancelled] + 1 and
             m["strata_requests_running"] == 0, 5, "the cancellation")


def test_sigterm_lets_the_running_request_finish_then_exits_0():
    # A drain limit well above the request's time, also under the sanitizers (several times slower).
    s = Server("--drain-timeout", "600")
    try:
        outcome: dict = {}

        def long_request() -> None:
            outcome["status"], outcome["answer"] = s.post("/v1/completions", {
                "prompt": "Once upon a time", "max_tokens": 120, "ignore_eos": True, "temperature": 0})

        worker = threading.Thread(target=long_request)
        worker.start()
        wait_for(lambda: s.metrics()["strata_requests_running"] >= 1, 10, "the request running")
        s.process.send_signal(signal.SIGTERM)
        wait_for(lambda: "draining" in s.stderr(), 5, "draining")
        assert worker.is_alive(), "120 tokens took under a second: make the request longer"
        # While it drains, new work is refused and /health says so.
        status, _, data = s.request("GET", "/health")
        assert status == 503 and json.loads(data) == {"status": "draining"}
        status, answer = s.post("/v1/completions", {"prompt": "Hi", "max_tokens": 1})
        assert status == 503 and "shutting down" in answer["error"]["message"], answer
        worker.join(timeout=TIMEOUT)
        assert outcome["status"] == 200, outcome
        assert outcome["answer"]["usage"]["completion_tokens"] == 120
        assert s.process.wait(timeout=60) == 0, s.stderr()
    finally:
        s.stop()


def test_a_pool_far_too_small_preempts_and_every_answer_equals_the_one_alone():
    # Gemma 3 270M, f32 KV: 18 layers x 1 KV head x 16-token blocks of 256-dim keys and values,
    # 32 KiB per block and 576 KiB per 16 tokens of a sequence. 3 MiB holds about 5 such rows:
    # one request (a 1-block prompt growing to 3 blocks) fits alone, eight together cannot.
    s = Server("--kv-mem", "3M")
    try:
        budget = s.metrics()["strata_kv_budget_bytes"]
        assert budget <= 3 * 1024 * 1024
        bodies = [{"prompt": f"Fact {i}: the", "max_tokens": 36, "ignore_eos": True, "temperature": 0}
                  for i in range(8)]
        alone = []
        for body in bodies:
            status, answer = s.post("/v1/completions", body)
            assert status == 200, answer
            alone.append(answer["choices"][0]["text"])
        assert s.metrics()["strata_preemptions_total"] == 0
        together: dict[int, tuple] = {}
        threads = [threading.Thread(target=lambda i=i: together.__setitem__(i, s.post("/v1/completions", bodies[i])))
                   for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        for i in range(8):
            status, answer = together[i]
            assert status == 200, answer
            assert answer["usage"]["completion_tokens"] == 36
            assert answer["choices"][0]["text"] == alone[i], i
        metrics = s.metrics()
        assert metrics["strata_preemptions_total"] > 0
        assert metrics["strata_requests_running"] == 0 and metrics["strata_requests_waiting"] == 0
    finally:
        s.stop()


@pytest.mark.parametrize("args, message", [
    (("--port", "70000"), "--port expects a whole number"),
    (("--max-batch-tokens", "0"), "--max-batch-tokens expects"),
    (("--kv-type", "q3"), "--kv-type expects"),
    (("--no-such-flag",), "unknown option"),
])
def test_bad_serve_flags_are_usage_errors(args, message):
    result = subprocess.run([str(require_strata()), "serve", *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and message in result.stderr
