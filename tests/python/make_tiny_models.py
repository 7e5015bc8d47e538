"""tests/python/make_tiny_models.py: tiny random-weight GGUF models of every
architecture (llama, qwen2, qwen3, gemma3) and every weight type strata
loads (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K).

Shapes are small but real: n_embd 256 (K-quant rows need multiples of 256),
4 query heads over 2 KV heads (GQA), FFN 512, a 500-token SentencePiece-style
vocabulary. Every matrix, token_embd included, is stored in the file's type;
norms, biases and rope_freqs stay F32. Types gguf.quants can quantize are
quantized from Gaussian weights (std 1/sqrt(row length)); for the K-quants,
which it cannot, the blocks are random quant bytes with finite fp16 scales
chosen to give the same spread around zero.

Besides one file per (architecture, type), a few variants cover optional
features: llama with rope_freqs.weight, gemma3 with final-logit soft-capping.
qwen2 always carries Q/K/V biases, qwen3 a head_dim of 128 (n_head*head_dim
512 != n_embd), gemma3 7 layers with a window of 8 (layers 0-4 and 6 local,
5 global). Seeds are derived from the case name, so every run writes the
same bytes.

    python3 tests/python/make_tiny_models.py OUT_DIR    # writes all cases
"""

from __future__ import annotations

import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
from gguf import GGMLQuantizationType as T

TYPES = {t.name: t for t in (T.F32, T.F16, T.BF16, T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0,
                             T.Q5_1, T.Q4_K, T.Q5_K, T.Q6_K)}
N_VOCAB = 500
BOS, EOS, UNK = 1, 2, 0

# general.file_type (llama_ftype) of a file whose matrices are all of a type.
FILE_TYPE = {"F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q5_0": 8, "Q5_1": 9,
             "Q4_K": 15, "Q5_K": 17, "Q6_K": 18, "BF16": 32}


@dataclass
class Config:
    arch: str
    n_layer: int
    head_dim: int = 64
    n_embd: int = 256
    n_head: int = 4
    n_head_kv: int = 2
    n_ff: int = 512
    eps: float = 1e-5
    rope_base: float = 10000.0
    tied_output: bool = True
    qkv_bias: bool = False
    qk_norm: bool = False
    sliding_window: int = 0
    softcap: float = 0.0
    rope_freqs: bool = False


CONFIGS = {
    "llama": Config("llama", n_layer=3, tied_output=False),
    "qwen2": Config("qwen2", n_layer=2, rope_base=1e6, qkv_bias=True, eps=1e-6),
    "qwen3": Config("qwen3", n_layer=2, head_dim=128, rope_base=1e6, qk_norm=True, eps=1e-6),
    "gemma3": Config("gemma3", n_layer=7, rope_base=1e6, qk_norm=True, eps=1e-6, sliding_window=8),
}

# Variants beyond one file per (architecture, type): (name, arch, types, changes).
VARIANTS = [
    ("llama-rope-freqs", "llama", ("F32", "Q4_K"), {"rope_freqs": True}),
    ("gemma3-softcap", "gemma3", ("F32", "Q8_0"), {"softcap": 3.0}),
]


@dataclass
class Case:
    name: str
    arch: str
    type_name: str
    path: Path


# -- weights -----------------------------------------------------------------
def pack_k_scales(sc: np.ndarray, mins: np.ndarray) -> np.ndarray:
    """The 12 scale bytes of a Q4_K/Q5_K block from 8 six-bit scales and mins
    (MODEL-FORMATS.md section 2, inverted)."""
    out = np.empty((sc.shape[0], 12), dtype=np.uint8)
    out[:, 0:4] = sc[:, 0:4] | ((sc[:, 4:8] >> 4) << 6)
    out[:, 4:8] = mins[:, 0:4] | ((mins[:, 4:8] >> 4) << 6)
    out[:, 8:12] = (sc[:, 4:8] & 15) | ((mins[:, 4:8] & 15) << 4)
    return out


def fp16_bytes(values: np.ndarray) -> np.ndarray:
    return values.astype(np.float16).reshape(-1, 1).view(np.uint8)


def random_k_blocks(qtype: T, n_blocks: int, std: float, rng: np.random.Generator) -> np.ndarray:
    """n_blocks random, valid K-quant blocks whose values have about this
    std around zero. Scales are 6-bit (Q4_K/Q5_K) or int8 (Q6_K); the block
    scale d varies by a factor of 2 between blocks and stays a normal fp16."""
    u8 = lambda n: rng.integers(0, 256, size=(n_blocks, n), dtype=np.uint8)  # noqa: E731
    jitter = rng.uniform(0.7, 1.4, size=n_blocks)
    if qtype in (T.Q4_K, T.Q5_K):
        levels = 16 if qtype == T.Q4_K else 32
        sc = rng.integers(24, 64, size=(n_blocks, 8), dtype=np.uint8)
        d = std / (levels / np.sqrt(12.0) * 43.5) * jitter  # q std, mean sc
        # x = d*sc*q - dmin*m; dmin = d*levels/2 and m ~ sc*(levels-1)/levels
        # centre each sub-block on zero.
        dmin = d * levels / 2
        mins = np.clip(np.rint(sc * ((levels - 1) / levels)), 0, 63).astype(np.uint8)
        parts = [fp16_bytes(d), fp16_bytes(dmin), pack_k_scales(sc, mins)]
        if qtype == T.Q5_K:
            parts.append(u8(32))
        parts.append(u8(128))
    elif qtype == T.Q6_K:
        # x = d*scale*(q - 32): q - 32 has std 18.5, |scale| averages 18.
        scales = rng.integers(4, 33, size=(n_blocks, 16)) * rng.choice([-1, 1], size=(n_blocks, 16))
        d = std / (18.5 * 18) * jitter
        parts = [u8(128), u8(64), scales.astype(np.int8).view(np.uint8), fp16_bytes(d)]
    else:
        raise ValueError(f"no random block builder for {qtype.name}")
    assert np.all(np.abs(d) >= 2.0**-14), "block scale would be a subnormal fp16"
    return np.concatenate(parts, axis=1)


def encode(rows: int, cols: int, type_name: str, std: float, rng: np.random.Generator):
    """A [rows, cols] matrix in type_name: (array for GGUFWriter, raw_dtype)."""
    qtype = TYPES[type_name]
    if qtype in (T.Q4_K, T.Q5_K, T.Q6_K):
        block_bytes = gguf.GGML_QUANT_SIZES[qtype][1]
        blocks = random_k_blocks(qtype, rows * cols // 256, std, rng)
        return blocks.reshape(rows, cols // 256 * block_bytes), qtype
    values = (rng.standard_normal((rows, cols)) * std).astype(np.float32)
    if qtype == T.F32:
        return values, None
    return gguf.quants.quantize(values, qtype), qtype


def norm_weight(n: int, rng: np.random.Generator) -> np.ndarray:
    return (1.0 + 0.2 * rng.standard_normal(n)).astype(np.float32)


# -- vocabulary ----------------------------------------------------------------
def vocabulary() -> tuple[list[str], list[float], list[int]]:
    """A minimal SentencePiece vocabulary: <unk> <s> </s>, the 256 byte
    tokens, then pieces of letters until N_VOCAB."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [2, 3, 3] + [6] * 256
    letters = "abcdefghijklmnopqrstuvwxyz"
    pieces = ["\u2581"] + list(letters) + ["\u2581" + c for c in letters]
    pieces += [a + b for a in letters for b in letters]
    pieces = pieces[:N_VOCAB - len(tokens)]
    scores = [0.0] * len(tokens) + [-float(i) for i in range(len(pieces))]
    return tokens + pieces, scores, types + [1] * len(pieces)


# -- one file ------------------------------------------------------------------
def write_model(path: Path, cfg: Config, type_name: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), cfg.arch)
    w.add_name(f"tiny-{cfg.arch}-{type_name}")
    w.add_file_type(FILE_TYPE[type_name])
    w.add_context_length(2048)
    w.add_embedding_length(cfg.n_embd)
    w.add_block_count(cfg.n_layer)
    w.add_feed_forward_length(cfg.n_ff)
    w.add_head_count(cfg.n_head)
    w.add_head_count_kv(cfg.n_head_kv)
    w.add_key_length(cfg.head_dim)
    w.add_value_length(cfg.head_dim)
    w.add_rope_dimension_count(cfg.head_dim)
    w.add_rope_freq_base(cfg.rope_base)
    w.add_layer_norm_rms_eps(cfg.eps)
    if cfg.sliding_window:
        w.add_sliding_window(cfg.sliding_window)
    if cfg.softcap:
        w.add_final_logit_softcapping(cfg.softcap)

    tokens, scores, types = vocabulary()
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(BOS)
    w.add_eos_token_id(EOS)
    w.add_unk_token_id(UNK)
    w.add_add_bos_token(True)
    w.add_add_space_prefix(cfg.arch != "gemma3")

    def matrix(name: str, rows: int, cols: int) -> None:
        data, raw = encode(rows, cols, type_name, 1.0 / np.sqrt(cols), rng)
        w.add_tensor(name, data, raw_dtype=raw)

    def vector(name: str, values: np.ndarray) -> None:
        w.add_tensor(name, values.astype(np.float32))

    n_q = cfg.n_head * cfg.head_dim
    n_kv = cfg.n_head_kv * cfg.head_dim
    matrix("token_embd.weight", N_VOCAB, cfg.n_embd)
    vector("output_norm.weight", norm_weight(cfg.n_embd, rng))
    if not cfg.tied_output:
        matrix("output.weight", N_VOCAB, cfg.n_embd)
    if cfg.rope_freqs:  # Llama-3.1-style: pair i's angle divided by factor i
        vector("rope_freqs.weight", np.geomspace(1.0, 8.0, cfg.head_dim // 2))
    for il in range(cfg.n_layer):
        p = f"blk.{il}."
        vector(p + "attn_norm.weight", norm_weight(cfg.n_embd, rng))
        matrix(p + "attn_q.weight", n_q, cfg.n_embd)
        matrix(p + "attn_k.weight", n_kv, cfg.n_embd)
        matrix(p + "attn_v.weight", n_kv, cfg.n_embd)
        if cfg.qkv_bias:
            for name, n in (("q", n_q), ("k", n_kv), ("v", n_kv)):
                vector(p + f"attn_{name}.bias", 0.5 * rng.standard_normal(n))
        if cfg.qk_norm:
            vector(p + "attn_q_norm.weight", norm_weight(cfg.head_dim, rng))
            vector(p + "attn_k_norm.weight", norm_weight(cfg.head_dim, rng))
        matrix(p + "attn_output.weight", cfg.n_embd, n_q)
        vector(p + "ffn_norm.weight", norm_weight(cfg.n_embd, rng))
        matrix(p + "ffn_gate.weight", cfg.n_ff, cfg.n_embd)
        matrix(p + "ffn_up.weight", cfg.n_ff, cfg.n_embd)
        matrix(p + "ffn_down.weight", cfg.n_embd, cfg.n_ff)
        if cfg.arch == "gemma3":
            vector(p + "post_attention_norm.weight", norm_weight(cfg.n_embd, rng))
            vector(p + "post_ffw_norm.weight", norm_weight(cfg.n_embd, rng))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def cases() -> list[tuple[str, str, str, Config]]:
    """Every (name, arch, type, config) to write."""
    out = [(f"{arch}-{t}", arch, t, cfg) for arch, cfg in CONFIGS.items() for t in TYPES]
    for name, arch, type_names, changes in VARIANTS:
        cfg = Config(**{**CONFIGS[arch].__dict__, **changes})
        out += [(f"{name}-{t}", arch, t, cfg) for t in type_names]
    return out


def build_all(out_dir) -> list[Case]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    built = []
    for name, arch, type_name, cfg in cases():
        path = out_dir / f"tiny-{name}.gguf"
        write_model(path, cfg, type_name, seed=zlib.crc32(name.encode()))
        built.append(Case(name, arch, type_name, path))
    return built


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: make_tiny_models.py OUT_DIR")
    for case in build_all(sys.argv[1]):
        print(case.path)
