"""tests/python/test_calibrate.py: `strata calibrate` and the duo KV policy on
the default model (Gemma 3 270M, fetched by scripts/fetch-model.sh).

Calibration writes a head profile in the documented format (a header, a
model line, one line of scores per layer), its scores lie in [0, 1], and it
finds a real signal: some global layer retrieves far more than the average
table (Gemma 3 has induction heads). `generate --kv-policy duo` runs with
that profile, keeps the best-scoring global layer whole and cuts the
worst-scoring one to the budget; without a profile, or with one for another
model shape, it stops with a message saying what to do.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from strata_cli import require_strata

MODEL = Path(os.environ.get("STRATA_CACHE", Path.home() / ".cache" / "strata")) / "models" / \
    "gemma-3-270m-q4_k_m.gguf"
LAYERS = 18
GLOBAL_LAYERS = (5, 11, 17)  # Gemma 3: every sixth layer is global, the rest see a 512-token window
BUDGET = 64
PROMPT = " ".join(f"Item {i}: the {w} is kept in box {i * 7 % 31}." for i, w in
                  enumerate(["key", "coin", "map", "ring", "lamp", "book", "cup", "pen", "hat", "shoe"]))


def run(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    if not MODEL.is_file():
        pytest.fail(f"{MODEL} is missing: run scripts/fetch-model.sh")
    result = subprocess.run([str(require_strata()), *args], capture_output=True, text=True, timeout=timeout)
    if check:
        assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def profile(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("calibrate") / "profile.txt"
    run("calibrate", "-m", str(MODEL), "-o", str(path), "-t", "2", "--samples", "2", "--length", "256",
        "--seed", "1")
    return path


def read_scores(path: Path) -> list[list[float]]:
    lines = path.read_text().splitlines()
    assert lines[0] == "# strata head profile v1"
    content = [line for line in lines[1:] if line.strip() and not line.startswith("#")]
    model = re.fullmatch(r"model (\S+) layers (\d+) kv_heads (\d+)", content[0])
    assert model, content[0]
    layers, heads = int(model.group(2)), int(model.group(3))
    assert (layers, heads) == (LAYERS, 1)
    rows = [[float(x) for x in line.split()] for line in content[1:]]
    assert len(rows) == layers and all(len(row) == heads for row in rows)
    return rows


def test_calibrate_writes_scores_in_0_1_with_a_retrieval_signal_in_a_global_layer(profile):
    scores = read_scores(profile)
    flat = [s for row in scores for s in row]
    assert all(0.0 <= s <= 1.0 for s in flat), flat
    mean = sum(flat) / len(flat)
    best_global = max(max(scores[layer]) for layer in GLOBAL_LAYERS)
    assert best_global > 0.05 and best_global > 3 * mean, scores


def test_generate_with_duo_keeps_the_best_global_layer_whole_and_cuts_the_worst(profile):
    result = run("generate", "-m", str(MODEL), "-p", PROMPT, "-n", "8", "--temp", "0", "-t", "2",
                 "--kv-policy", "duo", "--kv-profile", str(profile), "--kv-budget", str(BUDGET), "--kv-report")
    assert result.stdout.strip() != ""
    prompt_tokens = int(re.search(r"(\d+) prompt tokens", result.stderr).group(1))
    assert prompt_tokens > 2 * BUDGET
    slots = {int(m.group(1)): int(m.group(2))
             for m in re.finditer(r"layer +(\d+): head 0 (\d+) slots", result.stderr)}
    scores = read_scores(profile)
    ranked = sorted(GLOBAL_LAYERS, key=lambda layer: -scores[layer][0])
    assert slots[ranked[0]] >= prompt_tokens  # a retrieval head keeps everything
    assert slots[ranked[-1]] == BUDGET        # a streaming head keeps sinks + recent


def test_duo_without_a_profile_says_to_run_calibrate():
    result = run("generate", "-m", str(MODEL), "-p", "x", "-n", "1", "--kv-policy", "duo",
                 "--kv-budget", str(BUDGET), check=False)
    assert result.returncode == 1
    assert "strata calibrate" in result.stderr


def test_a_profile_of_another_shape_is_refused_with_its_name(tmp_path):
    other = tmp_path / "other.txt"
    other.write_text("# strata head profile v1\nmodel other layers 2 kv_heads 1\n0.5\n0.1\n")
    result = run("generate", "-m", str(MODEL), "-p", "x", "-n", "1", "--kv-policy", "duo",
                 "--kv-profile", str(other), "--kv-budget", str(BUDGET), check=False)
    assert result.returncode == 1
    assert "other.txt" in result.stderr and "2 layers x 1 KV heads" in result.stderr


def test_calibrate_flags_are_checked():
    assert "--samples" in run("calibrate", "--help").stdout
    result = run("calibrate", "--samples", "0", check=False)
    assert result.returncode == 2 and "--samples expects a whole number" in result.stderr
