"""tests/python/test_reference.py: self-checks of reference.py that involve
no strata: properties the math must have, and the pieces the reference
borrows (gguf's dequantizer) against MODEL-FORMATS.md's own description.
"""

from __future__ import annotations

import dataclasses
import struct

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as T

import make_tiny_models as tiny
import reference

TOKENS = [tiny.BOS] + [int(t) for t in np.random.default_rng(7).integers(3, tiny.N_VOCAB, 39)]


@pytest.fixture(scope="module")
def f32_models(tmp_path_factory):
    """One F32 file per architecture, plus llama with rope_freqs."""
    out = tmp_path_factory.mktemp("reference-models")
    paths = {}
    for name, arch, type_name, cfg in tiny.cases():
        name = name.removesuffix("-F32")
        if type_name == "F32" and name in (*tiny.CONFIGS, "llama-rope-freqs"):
            paths[name] = out / f"{name}.gguf"
            tiny.write_model(paths[name], cfg, "F32", seed=11)
    return paths


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


# -- decoding: gguf.quants against MODEL-FORMATS.md section 2 -------------------
def spec_decode(qtype: T, b: bytes) -> np.ndarray:
    """One block decoded element by element as MODEL-FORMATS.md words it."""
    half = lambda off: float(np.frombuffer(b[off:off + 2], np.float16)[0])  # noqa: E731
    x = np.zeros(32 if qtype in (T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1) else 256)
    if qtype == T.Q8_0:
        x[:] = half(0) * np.frombuffer(b[2:34], np.int8)
    elif qtype in (T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1):
        has_min, five_bit = qtype in (T.Q4_1, T.Q5_1), qtype in (T.Q5_0, T.Q5_1)
        d, m = half(0), (half(2) if has_min else 0.0)
        at = 4 if has_min else 2
        qh = struct.unpack("<I", b[at:at + 4])[0] if five_bit else 0
        qs = b[at + 4:] if five_bit else b[at:]
        offset = 0 if has_min else (16 if five_bit else 8)
        for j in range(16):
            for e, q in ((j, qs[j] & 15), (j + 16, qs[j] >> 4)):
                x[e] = d * ((q | ((qh >> e) & 1) << 4) - offset) + m
    elif qtype in (T.Q4_K, T.Q5_K):
        d, dmin, sb = half(0), half(2), b[4:16]
        sc = [sb[s] & 63 if s < 4 else (sb[s + 4] & 15) | ((sb[s - 4] >> 6) << 4) for s in range(8)]
        mn = [sb[s + 4] & 63 if s < 4 else (sb[s + 4] >> 4) | ((sb[s] >> 6) << 4) for s in range(8)]
        qh, qs = (b[16:48], b[48:]) if qtype == T.Q5_K else (None, b[16:])
        for c in range(4):
            for h in range(2):
                s = 2 * c + h
                for l in range(32):
                    q = (qs[32 * c + l] >> (4 * h)) & 15
                    if qh is not None:
                        q += 16 * ((qh[l] >> s) & 1)
                    x[64 * c + 32 * h + l] = d * sc[s] * q - dmin * mn[s]
    elif qtype == T.Q6_K:
        ql, qh, scales, d = b[:128], b[128:192], np.frombuffer(b[192:208], np.int8), half(208)
        for e in range(256):
            n, r = divmod(e, 128)
            g, l = divmod(r, 32)
            low = ql[64 * n + 32 * (g & 1) + l]
            low = low >> 4 if g >= 2 else low & 15
            high = (qh[32 * n + l] >> (2 * g)) & 3
            x[e] = d * scales[8 * n + l // 16 + 2 * g] * ((low | high << 4) - 32)
    return x


# Byte offsets of each type's fp16 scale fields.
SCALE_FIELDS = {T.Q8_0: [0], T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2],
                T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208]}


@pytest.mark.parametrize("qtype", list(SCALE_FIELDS), ids=lambda t: t.name)
def test_gguf_dequantize_matches_the_format_description(qtype):
    """The reference decodes weights with gguf.quants: check it against an
    element-by-element decoder written from MODEL-FORMATS.md, on random
    blocks (random quant bytes, finite fp16 scales of both signs)."""
    rng = np.random.default_rng(qtype.value)
    block_bytes = gguf.GGML_QUANT_SIZES[qtype][1]
    blocks = rng.integers(0, 256, size=(6, block_bytes), dtype=np.uint8)
    for off in SCALE_FIELDS[qtype]:
        scales = rng.uniform(0.01, 1.0, 6) * rng.choice([-1, 1], 6)
        blocks[:, off:off + 2] = scales.astype(np.float16).reshape(-1, 1).view(np.uint8)
    got = gguf.quants.dequantize(blocks, qtype).reshape(6, -1)
    want = np.stack([spec_decode(qtype, blk.tobytes()) for blk in blocks])
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6 * np.abs(want).max())


def test_bf16_is_the_top_half_of_a_float32():
    values = np.random.default_rng(3).standard_normal(64).astype(np.float32)
    top = (values.view(np.uint32) >> 16).astype(np.uint16)
    got = gguf.quants.dequantize(top.view(np.uint8), T.BF16)
    np.testing.assert_array_equal(got, (top.astype(np.uint32) << 16).view(np.float32))


# -- attention and RoPE ----------------------------------------------------------
def test_attention_matches_a_loop_over_heads_and_positions():
    """GQA grouping (query head h reads KV head h // group), the causal and
    window masks (p sees p' iff 0 <= p - p' < window) and the softmax."""
    rng = np.random.default_rng(5)
    n, n_head, n_kv, d, window = 9, 4, 2, 8, 3
    q, k, v = (rng.standard_normal((n, heads, d)) for heads in (n_head, n_kv, n_kv))
    want = np.zeros((n, n_head, d))
    for p in range(n):
        for h in range(n_head):
            g = h // (n_head // n_kv)
            keys = [j for j in range(n) if 0 <= p - j < window]
            s = np.array([q[p, h] @ k[j, g] * 0.5 for j in keys])
            w = np.exp(s - s.max()) / np.exp(s - s.max()).sum()
            want[p, h] = sum(wi * v[j, g] for wi, j in zip(w, keys))
    got = reference.attention(q, k, v, 0.5, window)
    np.testing.assert_allclose(got, want.reshape(n, -1), rtol=1e-12, atol=1e-12)


def test_rope_angles_on_a_hand_worked_example():
    """n_rot 4 of head_dim 6, base 100, position 3, freq_scale 0.5, factors
    (1, 2): pair 0 turns by 3*0.5 = 1.5 rad, pair 1 by 3*0.5*100^(-1/2)/2
    = 0.075 rad; elements 4 and 5 pass through."""
    x = np.arange(1.0, 7.0).reshape(1, 1, 6)
    c0, s0, c1, s1 = np.cos(1.5), np.sin(1.5), np.cos(0.075), np.sin(0.075)
    args = (np.array([3]), 4, 100.0)
    kwargs = dict(freq_scale=0.5, freq_factors=np.array([1.0, 2.0]))
    neox = reference.rope(x, *args, "neox", **kwargs).ravel()  # pairs (0,2), (1,3)
    norm = reference.rope(x, *args, "norm", **kwargs).ravel()  # pairs (0,1), (2,3)
    np.testing.assert_allclose(neox, [1 * c0 - 3 * s0, 2 * c1 - 4 * s1, 1 * s0 + 3 * c0,
                                      2 * s1 + 4 * c1, 5, 6], rtol=1e-14)
    np.testing.assert_allclose(norm, [1 * c0 - 2 * s0, 1 * s0 + 2 * c0, 3 * c1 - 4 * s1,
                                      3 * s1 + 4 * c1, 5, 6], rtol=1e-14)


@pytest.mark.parametrize("name", ["llama", "llama-rope-freqs"])
def test_norm_rope_on_gguf_rows_equals_neox_rope_on_hf_rows(name, f32_models):
    """llama GGUFs carry attn_q/attn_k rows permuted within each head (GGUF
    row 2i+a = HF row a*hd/2 + i) so that NORM RoPE on them equals NEOX RoPE
    on the unpermuted rows: run the model both ways."""
    norm = reference.Model(f32_models[name])
    neox = reference.Model(f32_models[name])
    neox.rope_style = "neox"
    hd = neox.head_dim_k
    gguf_to_hf = np.array([(j % 2) * hd // 2 + j // 2 for j in range(hd)])
    for il in range(neox.n_layer):
        for w in ("attn_q", "attn_k"):
            rows = neox.weight(f"blk.{il}.{w}.weight")
            heads = rows.reshape(-1, hd, rows.shape[1])
            hf = np.empty_like(heads)
            hf[:, gguf_to_hf] = heads
            neox._cache[f"blk.{il}.{w}.weight"] = hf.reshape(rows.shape)
    assert relative_error(neox.logits(TOKENS), norm.logits(TOKENS)) < 1e-12


@pytest.mark.parametrize("arch", tiny.CONFIGS)
def test_logits_depend_on_relative_positions_only(arch, f32_models):
    """Without absolute position embeddings, shifting every position by the
    same amount leaves the logits unchanged (RoPE angles subtract)."""
    model = reference.Model(f32_models[arch])
    assert relative_error(model.logits(TOKENS, pos0=517), model.logits(TOKENS)) < 1e-9


@pytest.mark.parametrize("arch", tiny.CONFIGS)
def test_logits_are_causal(arch, f32_models):
    model = reference.Model(f32_models[arch])
    changed = TOKENS[:20] + [(t + 1) % tiny.N_VOCAB for t in TOKENS[20:]]
    a, b = model.logits(TOKENS), model.logits(changed)
    assert relative_error(b[:20], a[:20]) < 1e-12
    assert relative_error(b[20:], a[20:]) > 1e-3


@pytest.mark.parametrize("window", [4, 0])
def test_sliding_window_bounds_what_a_token_sees(window, tmp_path):
    """5 gemma3 layers are all local (il % 6 < 5). With window w each layer
    reaches w-1 positions further back, so token 0 reaches positions up to
    5*(w-1) and no further; without a window it reaches every position."""
    cfg = dataclasses.replace(tiny.CONFIGS["gemma3"], n_layer=5, sliding_window=window)
    path = tmp_path / "gemma3-local.gguf"
    tiny.write_model(path, cfg, "F32", seed=3)
    model = reference.Model(path)
    assert model.local_layers == [window > 0] * 5
    changed = [TOKENS[0] + 1] + TOKENS[1:]
    moved = np.abs(model.logits(changed) - model.logits(TOKENS)).max(axis=1)
    reach = 5 * (window - 1) if window else len(TOKENS) - 1
    assert moved[reach] > 1e-6
    assert np.all(moved[reach + 1:] == 0.0)
