"""tests/python/test_cli.py: the strata command line as a person uses it, on
the default model (Gemma 3 270M, fetched by scripts/fetch-model.sh).

Greedy generation is deterministic and equals each of --parallel's greedy
continuations (which share the prompt's KV blocks and decode in one batch);
stop strings cut the output; generated text goes to stdout and nothing else
does; bad flags and bad files give a message and a non-zero exit, never a
crash.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from strata_cli import require_strata

MODEL = Path(os.environ.get("STRATA_CACHE", Path.home() / ".cache" / "strata")) / "models" / \
    "gemma-3-270m-q4_k_m.gguf"


def run(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    if not MODEL.is_file():
        pytest.fail(f"{MODEL} is missing: run scripts/fetch-model.sh")
    result = subprocess.run([str(require_strata()), *args], capture_output=True, text=True, timeout=timeout)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_greedy_generation_is_deterministic_and_only_text_goes_to_stdout():
    args = ("generate", "-m", str(MODEL), "-p", "The capital of France is", "-n", "16", "--temp", "0", "-t", "2")
    first, second = run(*args), run(*args)
    assert first.stdout == second.stdout
    assert first.stdout.strip() != ""
    assert "tok/s" not in first.stdout and "tok/s" in first.stderr


def test_parallel_greedy_continuations_equal_the_single_one():
    single = run("generate", "-m", str(MODEL), "-p", "Once upon a time", "-n", "12", "--temp", "0", "-t", "2")
    parallel = run("generate", "-m", str(MODEL), "-p", "Once upon a time", "-n", "12", "--temp", "0", "-t", "2",
                   "--parallel", "3")
    sections = parallel.stdout.split("--- continuation ")[1:]
    assert len(sections) == 3
    texts = [section.split("\n", 1)[1].rstrip("\n") for section in sections]
    assert texts[0] == texts[1] == texts[2] == single.stdout.rstrip("\n")
    assert "share the prompt's KV" in parallel.stderr


def test_stop_string_cuts_the_output():
    result = run("generate", "-m", str(MODEL), "-p", "1, 2, 3, 4,", "-n", "40", "--temp", "0", "--stop", " 9")
    assert result.stdout.rstrip("\n").endswith(" 8,") and " 9" not in result.stdout


@pytest.mark.parametrize("args, message", [
    (("generate", "-p", "x", "--temp", "hot"), "--temp expects a number"),
    (("generate", "-p", "x", "--kv-mem", "lots"), "--kv-mem expects a size"),
    (("generate", "-p", "x", "--kv-type", "q3"), "--kv-type expects f32, f16 or bf16"),
    (("generate", "--no-such-flag"), "unknown option"),
    (("generate",), "give the prompt"),
    (("bench", "-p", "-5"), "expects a whole number"),
    (("frobnicate",), "unknown command"),
])
def test_bad_flags_are_usage_errors_with_a_message(args, message):
    result = run(*args, check=False)
    assert result.returncode == 2
    assert message in result.stderr


def test_a_file_that_is_not_a_model_is_refused_with_its_name(tmp_path):
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"this is not a gguf file at all")
    for command in (("generate", "-m", str(bogus), "-p", "x"), ("inspect", str(bogus)),
                    ("tokenize", "-m", str(bogus), "-p", "x")):
        result = run(*command, check=False)
        assert result.returncode == 1
        assert "bogus.gguf" in result.stderr


def test_a_kv_pool_too_small_for_the_prompt_is_a_clean_error():
    prompt = "word " * 300
    result = run("generate", "-m", str(MODEL), "-p", prompt, "-n", "4", "--kv-mem", "1M", check=False)
    assert result.returncode == 1
    assert "KV" in result.stderr or "block" in result.stderr


def test_bench_json_has_the_documented_fields():
    import json

    result = run("bench", "-m", str(MODEL), "-t", "2", "-p", "16", "-n", "4", "-r", "1", "--json")
    record = json.loads(result.stdout)
    for field in ("model", "threads", "n_prompt", "n_gen", "prefill_tok_s", "decode_tok_s"):
        assert field in record, field
    assert record["n_prompt"] == 16 and record["n_gen"] == 4 and record["threads"] == 2
    assert record["prefill_tok_s"] > 0 and record["decode_tok_s"] > 0
