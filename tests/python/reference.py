"""tests/python/reference.py: an independent float64 forward pass of the
decoder-only architectures strata runs (llama, qwen2, qwen3, gemma3).

This is what strata's logits are checked against. It is written from the
math in docs/MODEL-FORMATS.md (shared docs), not from strata's code: every
weight is decoded by gguf.quants.dequantize (the GGUF project's own decoder),
then the whole model runs in numpy float64, so the only error left in the
reference is float64 rounding. A weight matrix with GGUF dims {K, N} is an
[N, K] array here (PyTorch's [out, in]): y = x @ W.T.

    logits(path, token_ids) -> float64 [n_tokens, n_vocab]

teacher-forced: row t holds the logits after seeing token_ids[0..t].

Architecture facts checked against llama.cpp's loader (0.3.36's vendored
llama.cpp, src/models/gemma3.cpp, src/llama-hparams.*), where
MODEL-FORMATS.md marks them unverified:
  - gemma3 local (sliding-window) layers take their RoPE base from
    gemma3.rope.freq_base_swa when the key is present, else 10000;
  - rope.scaling.factor scales the global layers only (local layers keep
    freq_scale 1);
  - the window mask hides key p' from query p iff p - p' >= window;
  - a layer is local iff il % pattern < pattern - 1 with pattern 6 unless
    gemma3.attention.sliding_window_pattern says otherwise;
  - the query scale is 1/sqrt(key_length) (1/sqrt(n_embd/n_head) for the
    62-layer 27B model only).
"""

from __future__ import annotations

import math
from functools import lru_cache

import gguf
import numpy as np

ARCHITECTURES = ("llama", "qwen2", "qwen3", "gemma3")


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    """x / sqrt(mean(x^2) + eps) * weight over the last axis."""
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight


def silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def rope(x: np.ndarray, positions: np.ndarray, n_rot: int, base: float, style: str,
         freq_scale: float = 1.0, freq_factors: np.ndarray | None = None) -> np.ndarray:
    """Rotary position embedding of x [n_tokens, n_heads, head_dim].

    Pair i (i < n_rot/2) turns by theta_i = pos * freq_scale * base^(-2i/n_rot)
    (divided by freq_factors[i] when given). style 'norm' pairs the adjacent
    elements (2i, 2i+1); 'neox' pairs (i, i + n_rot/2). Elements past n_rot
    pass through."""
    half = n_rot // 2
    inv_freq = base ** (-2.0 * np.arange(half) / n_rot)
    if freq_factors is not None:
        inv_freq = inv_freq / freq_factors
    theta = positions.astype(np.float64)[:, None] * freq_scale * inv_freq[None, :]
    cos = np.cos(theta)[:, None, :]
    sin = np.sin(theta)[:, None, :]
    if style == "norm":
        first, second = slice(0, n_rot, 2), slice(1, n_rot, 2)
    elif style == "neox":
        first, second = slice(0, half), slice(half, n_rot)
    else:
        raise ValueError(f"unknown RoPE style {style!r}")
    a, b = x[..., first], x[..., second]
    out = x.copy()
    out[..., first] = a * cos - b * sin
    out[..., second] = a * sin + b * cos
    return out


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float,
              window: int = 0) -> np.ndarray:
    """Causal softmax attention with grouped KV heads, all tokens at once.

    q [n, n_head, d], k [n, n_head_kv, d], v [n, n_head_kv, dv]; query head h
    reads KV head h // (n_head / n_head_kv). Query p sees key p' iff
    0 <= p - p' (and p - p' < window when window > 0). Returns [n, n_head*dv]."""
    n, n_head, _ = q.shape
    group = n_head // k.shape[1]
    q = q.transpose(1, 0, 2)                                # [n_head, n, d]
    k = np.repeat(k, group, axis=1).transpose(1, 2, 0)     # [n_head, d, n]
    v = np.repeat(v, group, axis=1).transpose(1, 0, 2)     # [n_head, n, dv]
    scores = (q @ k) * scale                               # [n_head, query, key]
    distance = np.arange(n)[:, None] - np.arange(n)[None, :]
    visible = distance >= 0
    if window > 0:
        visible &= distance < window
    scores = np.where(visible[None], scores, -np.inf)
    scores -= scores.max(axis=-1, keepdims=True)
    weights = np.exp(scores)
    weights /= weights.sum(axis=-1, keepdims=True)
    return (weights @ v).transpose(1, 0, 2).reshape(n, -1)


class Model:
    """One GGUF file: its hyperparameters and lazily dequantized weights."""

    def __init__(self, path: str, dtype=np.float64):
        self.path = str(path)
        self.dtype = dtype
        self.reader = gguf.GGUFReader(self.path)
        self.tensors = {t.name: t for t in self.reader.tensors}
        self._cache: dict[str, np.ndarray] = {}
        self.arch = self._key("general.architecture", required=True)
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"{path}: architecture {self.arch!r} is not one of {ARCHITECTURES}")
        self._read_hparams()

    def _key(self, key: str, default=None, required: bool = False):
        field = self.reader.get_field(key)
        if field is None:
            if required:
                raise KeyError(f"{self.path}: missing key {key}")
            return default
        return field.contents()

    def _arch_key(self, key: str, default=None, required: bool = False):
        return self._key(f"{self.arch}.{key}", default, required)

    def _read_hparams(self) -> None:
        self.n_embd = int(self._arch_key("embedding_length", required=True))
        self.n_layer = int(self._arch_key("block_count", required=True))
        self.n_head = int(self._arch_key("attention.head_count", required=True))
        self.n_head_kv = int(self._arch_key("attention.head_count_kv", self.n_head))
        self.head_dim_k = int(self._arch_key("attention.key_length", self.n_embd // self.n_head))
        self.head_dim_v = int(self._arch_key("attention.value_length", self.n_embd // self.n_head))
        self.n_rot = int(self._arch_key("rope.dimension_count", self.head_dim_k))
        self.eps = float(self._arch_key("attention.layer_norm_rms_epsilon", required=True))
        self.rope_base = float(self._arch_key("rope.freq_base", 10000.0))
        self.rope_style = "norm" if self.arch == "llama" else "neox"

        scaling = self._arch_key("rope.scaling.type", "linear")
        factor = float(self._arch_key("rope.scaling.factor", 0.0))
        if scaling == "none" or factor == 0.0:
            self.freq_scale = 1.0
        elif scaling == "linear":
            self.freq_scale = 1.0 / factor
        else:
            raise NotImplementedError(f"{self.path}: rope scaling {scaling!r} is not in the reference")

        self.attn_scale = 1.0 / math.sqrt(self.head_dim_k)
        self.softcap = 0.0
        self.local_layers = [False] * self.n_layer
        self.window = 0
        self.rope_base_local = self.rope_base
        if self.arch == "gemma3":
            if self.n_layer == 62:  # gemma-3-27b: query_pre_attn_scalar = n_embd / n_head
                self.attn_scale = 1.0 / math.sqrt(self.n_embd // self.n_head)
            self.softcap = float(self._arch_key("final_logit_softcapping", 0.0))
            self.window = int(self._arch_key("attention.sliding_window", 0))
            if self.window > 0:
                pattern = int(self._arch_key("attention.sliding_window_pattern", 6))
                self.local_layers = [il % pattern < pattern - 1 for il in range(self.n_layer)]
                self.rope_base_local = float(self._arch_key("rope.freq_base_swa", 10000.0))

    # -- weights -----------------------------------------------------------
    def has(self, name: str) -> bool:
        return name in self.tensors

    def weight_f32(self, name: str) -> np.ndarray:
        """The tensor decoded to float32 (exact: every GGUF type decodes to
        values a float32 holds), shaped [rows, row_length] like ggml."""
        tensor = self.tensors[name]
        values = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
        shape = tuple(int(d) for d in reversed(tensor.shape))
        return np.asarray(values, dtype=np.float32).reshape(shape)

    def weight(self, name: str) -> np.ndarray:
        if name not in self._cache:
            self._cache[name] = self.weight_f32(name).astype(self.dtype)
        return self._cache[name]

    def linear(self, x: np.ndarray, name: str) -> np.ndarray:
        """x @ W.T plus the bias tensor NAME.bias when the file has one."""
        y = x @ self.weight(f"{name}.weight").T
        if self.has(f"{name}.bias"):
            y = y + self.weight(f"{name}.bias")
        return y

    @property
    def n_vocab(self) -> int:
        return int(self.tensors["token_embd.weight"].shape[1])

    # -- forward -----------------------------------------------------------
    def embed(self, tokens: np.ndarray) -> np.ndarray:
        rows = self.weight_f32("token_embd.weight")[tokens]
        if self.arch == "gemma3":
            # llama.cpp scales by sqrtf(n_embd) in float32.
            rows = rows * np.sqrt(np.float32(self.n_embd))
        return rows.astype(self.dtype)

    def qkv(self, h: np.ndarray, il: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        prefix = f"blk.{il}."
        n_q = self.n_head * self.head_dim_k
        n_k = self.n_head_kv * self.head_dim_k
        if self.has(prefix + "attn_qkv.weight"):  # fused: Q rows, then K, then V
            fused = self.linear(h, prefix + "attn_qkv")
            q, k, v = fused[:, :n_q], fused[:, n_q:n_q + n_k], fused[:, n_q + n_k:]
        else:
            q = self.linear(h, prefix + "attn_q")
            k = self.linear(h, prefix + "attn_k")
            v = self.linear(h, prefix + "attn_v")
        n = h.shape[0]
        return (q.reshape(n, self.n_head, self.head_dim_k),
                k.reshape(n, self.n_head_kv, self.head_dim_k),
                v.reshape(n, self.n_head_kv, self.head_dim_v))

    def attention_block(self, h: np.ndarray, il: int, positions: np.ndarray) -> np.ndarray:
        prefix = f"blk.{il}."
        q, k, v = self.qkv(h, il)
        if self.has(prefix + "attn_q_norm.weight"):  # qwen3, gemma3: per-head RMSNorm
            q = rms_norm(q, self.weight(prefix + "attn_q_norm.weight"), self.eps)
            k = rms_norm(k, self.weight(prefix + "attn_k_norm.weight"), self.eps)
        local = self.local_layers[il]
        base = self.rope_base_local if local else self.rope_base
        freq_scale = 1.0 if local else self.freq_scale
        factors = self.weight("rope_freqs.weight") if self.has("rope_freqs.weight") else None
        q = rope(q, positions, self.n_rot, base, self.rope_style, freq_scale, factors)
        k = rope(k, positions, self.n_rot, base, self.rope_style, freq_scale, factors)
        a = attention(q, k, v, self.attn_scale, self.window if local else 0)
        return self.linear(a, prefix + "attn_output")

    def ffn_block(self, h: np.ndarray, il: int) -> np.ndarray:
        prefix = f"blk.{il}."
        act = gelu_tanh if self.arch == "gemma3" else silu
        gated = act(self.linear(h, prefix + "ffn_gate")) * self.linear(h, prefix + "ffn_up")
        return self.linear(gated, prefix + "ffn_down")

    def hidden(self, token_ids, pos0: int = 0) -> np.ndarray:
        """The final normed hidden state [n_tokens, n_embd] (before the
        output projection). pos0 shifts every position (self-checks only)."""
        tokens = np.asarray(token_ids, dtype=np.int64)
        if tokens.ndim != 1 or tokens.size == 0:
            raise ValueError("token_ids must be a non-empty 1-D sequence")
        if tokens.min() < 0 or tokens.max() >= self.n_vocab:
            raise ValueError(f"token id out of range [0, {self.n_vocab})")
        positions = pos0 + np.arange(tokens.size)
        x = self.embed(tokens)
        gemma = self.arch == "gemma3"
        for il in range(self.n_layer):
            prefix = f"blk.{il}."
            h = rms_norm(x, self.weight(prefix + "attn_norm.weight"), self.eps)
            out = self.attention_block(h, il, positions)
            if gemma:
                out = rms_norm(out, self.weight(prefix + "post_attention_norm.weight"), self.eps)
            x = x + out
            h = rms_norm(x, self.weight(prefix + "ffn_norm.weight"), self.eps)
            out = self.ffn_block(h, il)
            if gemma:
                out = rms_norm(out, self.weight(prefix + "post_ffw_norm.weight"), self.eps)
            x = x + out
        return rms_norm(x, self.weight("output_norm.weight"), self.eps)

    def output_name(self) -> str:
        return "output" if self.has("output.weight") else "token_embd"  # tied when absent

    def project(self, hidden: np.ndarray) -> np.ndarray:
        """Logits from final hidden states."""
        z = self.linear(hidden, self.output_name())
        if self.softcap > 0.0:
            z = self.softcap * np.tanh(z / self.softcap)
        return z

    def logits(self, token_ids, pos0: int = 0) -> np.ndarray:
        return self.project(self.hidden(token_ids, pos0))


@lru_cache(maxsize=4)
def load(path: str) -> Model:
    return Model(path)


def logits(path, token_ids) -> np.ndarray:
    """float64 [n_tokens, n_vocab]: teacher-forced logits of every position."""
    return load(str(path)).logits(token_ids)
