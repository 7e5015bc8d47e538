"""tests/python/test_tiny_models.py: strata's logits on tiny random-weight
models of every architecture and weight type (make_tiny_models.py) against
the float64 reference (reference.py), and chunked decoding against one
batch.

Error measure: max |strata - reference| / max |reference| over all
[n_tokens, n_vocab] logits.

Tolerances (measured when written: strata within 2e-6 of the reference
on every case, chunked within 2e-6 of one batch):
  - F32 weights: 1e-4, the issue's requirement.
  - F16/BF16/quantized weights: 2e-5. The reference decodes the very same
    weights exactly (every type decodes to float32 values), so there is no
    quantization error to allow for, only float32 arithmetic: the reference
    itself run in float32 lands within 2e-6 of float64 on every tiny model,
    and so does strata. 2e-5 leaves 10x for summation order, SIMD partial
    sums, and kernels that apply block scales after summing (in Q4_K/Q5_K
    d*sc*sum(q*x) and dmin*m*sum(x) cancel to a result smaller than
    either), while an activation quantized to 8 bits (~4e-3) fails it.
  - chunked vs one batch: 1e-5, both strata, only summation order differs.

Token count 40 > 4 x the gemma3 window of 8, so local layers drop keys.
"""

from __future__ import annotations

import numpy as np
import pytest

import make_tiny_models as tiny
import reference
from strata_cli import require_strata, strata_logits

F32_TOLERANCE = 1e-4
HALF_AND_QUANT_TOLERANCE = 2e-5
CHUNK_TOLERANCE = 1e-5

CASE_NAMES = [name for name, *_ in tiny.cases()]
CHUNK_CASES = [f"{arch}-{t}" for arch in tiny.CONFIGS for t in ("F32", "Q8_0", "Q4_K")]
TOKENS = [tiny.BOS] + [int(t) for t in np.random.default_rng(2024).integers(3, tiny.N_VOCAB, 39)]


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    return {case.name: case for case in tiny.build_all(tmp_path_factory.mktemp("tiny-models"))}


@pytest.fixture(scope="session")
def strata():
    return require_strata()


_batch_logits: dict[str, np.ndarray] = {}


def batch_logits(case) -> np.ndarray:
    if case.name not in _batch_logits:
        _batch_logits[case.name] = strata_logits(case.path, TOKENS)
    return _batch_logits[case.name]


def check_close(got: np.ndarray, want: np.ndarray, tolerance: float, what: str) -> None:
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    assert np.isfinite(got).all(), f"{what}: non-finite logits"
    diff = np.abs(got.astype(np.float64) - want)
    error = diff.max() / np.abs(want).max()
    position, token = np.unravel_index(diff.argmax(), diff.shape)
    assert error <= tolerance, (
        f"{what}: max |diff| / max |ref| = {error:.3e} > {tolerance:.0e} "
        f"(worst at position {position}, vocab id {token}: {got[position, token]:.6f} "
        f"vs {want[position, token]:.6f})")


@pytest.mark.parametrize("name", CASE_NAMES)
def test_logits_match_reference(name, models, strata):
    case = models[name]
    tolerance = F32_TOLERANCE if case.type_name == "F32" else HALF_AND_QUANT_TOLERANCE
    check_close(batch_logits(case), reference.logits(case.path, TOKENS), tolerance,
                f"{name} vs reference")


@pytest.mark.parametrize("chunk", [1, 3])
@pytest.mark.parametrize("name", CHUNK_CASES)
def test_chunked_matches_one_batch(name, chunk, models, strata):
    case = models[name]
    batch = batch_logits(case).astype(np.float64)
    check_close(strata_logits(case.path, TOKENS, chunk=chunk), batch, CHUNK_TOLERANCE,
                f"{name} --chunk {chunk} vs one batch")
