"""tests/python/strata_cli.py: runs `strata logits` for the Python checks.

Contract of the command:

    strata logits -m MODEL.gguf --tokens 1,2,3 [--chunk N] [-t THREADS] -o OUT.npy

writes a float32 .npy of shape [n_tokens, n_vocab], the logits of every
position with the tokens teacher-forced; --chunk N feeds N tokens per step
(default: all at once). The binary is $STRATA_BIN, else build/strata in the
repository root.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]


class StrataMissing(RuntimeError):
    pass


def strata_binary() -> Path:
    """The strata executable, or StrataMissing saying how to get one."""
    path = Path(os.environ.get("STRATA_BIN", REPO_ROOT / "build" / "strata"))
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise StrataMissing(
            f"strata binary not found at {path}: build it (cmake -S . -B build && "
            f"cmake --build build) or point STRATA_BIN at it")
    return path


def require_strata() -> Path:
    """strata_binary() for tests: a missing binary fails the test, never skips it."""
    import pytest

    try:
        return strata_binary()
    except StrataMissing as e:
        pytest.fail(str(e))


def strata_logits(model, tokens, chunk: int | None = None, threads: int | None = None,
                  timeout: float = 600) -> np.ndarray:
    """float32 [len(tokens), n_vocab] from `strata logits`; raises
    RuntimeError with strata's stderr when the command fails or writes
    something other than the contract's array."""
    tokens = [int(t) for t in tokens]
    with tempfile.TemporaryDirectory(prefix="strata-logits-") as tmp:
        out = Path(tmp) / "logits.npy"
        cmd = [str(strata_binary()), "logits", "-m", str(model),
               "--tokens", ",".join(map(str, tokens)), "-o", str(out)]
        if chunk is not None:
            cmd += ["--chunk", str(chunk)]
        if threads is not None:
            cmd += ["-t", str(threads)]
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if run.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[:4])} ... exited {run.returncode}:\n{run.stderr[-4000:]}")
        if not out.is_file():
            raise RuntimeError(f"strata logits exited 0 but wrote no {out}")
        logits = np.load(out)
    if logits.dtype != np.float32 or logits.ndim != 2 or logits.shape[0] != len(tokens):
        raise RuntimeError(f"strata logits wrote {logits.dtype} {logits.shape}, "
                           f"expected float32 [{len(tokens)}, n_vocab]")
    return logits
