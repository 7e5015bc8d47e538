"""tests/python/test_gemma_reference.py: strata on the real gemma-3-270m
Q4_K_M must be at least as close to the float reference as llama.cpp is, on
every figure (max abs error, mean abs error, top-1 agreement), for every
prompt and overall.

llama.cpp's figures are committed (tests/fixtures/gemma_llamacpp_figures.json,
made by scripts/correctness_report.py on the same token ids), so only
strata and the numpy reference run here. llama.cpp quantizes activations to
8 bits for its quantized dot products and keeps the KV cache in f16; strata
keeps activations in f32, so it should be clearly closer.
"""

from __future__ import annotations

import json

import pytest

import gemma_reference as gr
from strata_cli import require_strata, strata_logits

PROMPTS = gr.load_prompts()


@pytest.fixture(scope="module")
def model():
    try:
        return gr.load_model()
    except FileNotFoundError as e:
        pytest.fail(str(e))


@pytest.fixture(scope="module")
def strata():
    return require_strata()


@pytest.fixture(scope="module")
def llamacpp():
    return json.loads(gr.LLAMACPP_FIXTURE.read_text())


_strata_figures: dict[str, dict] = {}


def strata_figures(prompt: dict, model) -> dict:
    name = prompt["name"]
    if name not in _strata_figures:
        ref = model.logits(prompt["tokens"])
        _strata_figures[name] = gr.figures(strata_logits(gr.MODEL_PATH, prompt["tokens"]), ref)
    return _strata_figures[name]


def test_prompts_are_long_varied_and_match_the_llamacpp_figures(llamacpp):
    assert len(PROMPTS) >= 5
    assert len({p["kind"] for p in PROMPTS}) == len(PROMPTS)
    for prompt in PROMPTS:
        assert len(prompt["tokens"]) >= gr.MIN_POSITIONS, prompt["name"]
    assert max(len(p["tokens"]) for p in PROMPTS) > 512, "no prompt crosses the 512 window"
    assert llamacpp["tokens_sha256"] == gr.tokens_digest(PROMPTS), (
        "gemma_llamacpp_figures.json was measured on other token ids: "
        "rerun scripts/correctness_report.py")


@pytest.mark.parametrize("prompt", PROMPTS, ids=[p["name"] for p in PROMPTS])
def test_strata_as_close_as_llamacpp(prompt, model, strata, llamacpp):
    ours = strata_figures(prompt, model)
    worse = gr.not_as_close(ours, llamacpp["prompts"][prompt["name"]])
    assert not worse, f"{prompt['name']}: strata further from the reference than llama.cpp: {worse}"


def test_strata_as_close_as_llamacpp_overall(model, strata, llamacpp):
    ours = gr.overall([strata_figures(p, model) for p in PROMPTS])
    worse = gr.not_as_close(ours, llamacpp["overall"])
    assert not worse, f"overall: strata further from the reference than llama.cpp: {worse}"
