"""tests/python/gemma_reference.py: the real-model check's common parts,
shared by test_gemma_reference.py and scripts/correctness_report.py.

The model is gemma-3-270m Q4_K_M from the cache (scripts/fetch-model.sh).
Its float reference is reference.py's float64 forward pass over the file's
own weights, dequantized exactly: a perfect engine running these weights
would reproduce it up to float64 rounding. Each engine (strata, llama.cpp)
is scored per prompt and overall on

  max_abs_error    max |engine logit - reference logit| over positions x vocab
  mean_abs_error   the mean of the same
  top1_agreement   fraction of positions whose argmax token matches

The prompts (tests/fixtures/gemma_prompts.json) are token ids from
llama.cpp's tokenizer, so the check does not depend on strata's.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

import reference

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("STRATA_CACHE", Path.home() / ".cache" / "strata"))
MODEL_PATH = CACHE / "models" / "gemma-3-270m-q4_k_m.gguf"
PROMPTS_FIXTURE = REPO_ROOT / "tests" / "fixtures" / "gemma_prompts.json"
LLAMACPP_FIXTURE = REPO_ROOT / "tests" / "fixtures" / "gemma_llamacpp_figures.json"

# name -> True when larger is closer to the reference.
FIGURES = {"max_abs_error": False, "mean_abs_error": False, "top1_agreement": True}
MIN_POSITIONS = 256


def model_path() -> Path:
    if not MODEL_PATH.is_file():
        raise FileNotFoundError(f"{MODEL_PATH} is missing: run scripts/fetch-model.sh")
    return MODEL_PATH


def load_model() -> reference.Model:
    return reference.Model(model_path())


def load_prompts() -> list[dict]:
    """[{name, kind, text, tokens}] from the committed fixture."""
    return json.loads(PROMPTS_FIXTURE.read_text())["prompts"]


def tokens_digest(prompts: list[dict]) -> str:
    """Identifies the token ids the llama.cpp figures were measured on."""
    ids = json.dumps([[p["name"], p["tokens"]] for p in prompts]).encode()
    return hashlib.sha256(ids).hexdigest()


def figures(logits: np.ndarray, ref: np.ndarray) -> dict:
    """The three figures of one prompt, plus its position count."""
    if logits.shape != ref.shape:
        raise ValueError(f"logits shape {logits.shape} != reference {ref.shape}")
    worst, total = 0.0, 0.0
    for rows in np.array_split(np.arange(ref.shape[0]), max(1, ref.shape[0] // 64)):
        diff = np.abs(logits[rows].astype(np.float64) - ref[rows])  # 64 rows at a time: memory
        worst, total = max(worst, float(diff.max())), total + float(diff.sum())
    return {"max_abs_error": worst,
            "mean_abs_error": total / ref.size,
            "top1_agreement": float(np.mean(logits.argmax(axis=1) == ref.argmax(axis=1))),
            "positions": int(ref.shape[0])}


def overall(per_prompt: list[dict]) -> dict:
    """All prompts as one set of positions (every position has the same
    vocabulary, so means weigh prompts by their position counts)."""
    n = np.array([f["positions"] for f in per_prompt], dtype=np.float64)
    mean = lambda key: float(np.dot(n, [f[key] for f in per_prompt]) / n.sum())  # noqa: E731
    return {"max_abs_error": max(f["max_abs_error"] for f in per_prompt),
            "mean_abs_error": mean("mean_abs_error"),
            "top1_agreement": mean("top1_agreement"),
            "positions": int(n.sum())}


def not_as_close(ours: dict, theirs: dict) -> list[str]:
    """Descriptions of the figures on which ours is further from the
    reference than theirs (empty when ours is at least as close on all)."""
    worse = []
    for key, larger_is_better in FIGURES.items():
        if (ours[key] < theirs[key]) if larger_is_better else (ours[key] > theirs[key]):
            worse.append(f"{key}: {ours[key]:.6g} vs llama.cpp {theirs[key]:.6g}")
    return worse
