#!/usr/bin/env bash
# scripts/fetch-vocabs.sh: fetch the vocab-only GGUF files the tokenizer test
# reads (byte-level BPE: qwen2, llama-bpe, gpt-2; SPM: llama-spm) and their
# .inp test strings. They ship inside the llama-cpp-python 0.3.36 source
# package on PyPI; this downloads it and extracts only those files, into the
# folder where scripts/peer-build.sh unpacks the whole package, then checks
# their SHA-256. Files already there are left alone. Prints the folder.
#
# The cache is $STRATA_CACHE (default ~/.cache/strata).
set -euo pipefail
version=0.3.36
cache=${STRATA_CACHE:-$HOME/.cache/strata}
inner="llama_cpp_python-$version/vendor/llama.cpp/models"
models="$cache/peer/$inner"
files="ggml-vocab-qwen2.gguf 44c2f46b715f585c6ab513970e8a006bfa5badd6108560054921cf598d154d8c
ggml-vocab-llama-bpe.gguf 97272e430d53bc7688f52d5e0ad8ea8f163ede9f1bbd1694feaa504797d5d96e
ggml-vocab-gpt-2.gguf cedc56ca6e2e89f63e781696d1fd76b4b1d49e6720dee86463e915f6e90016ac
ggml-vocab-llama-spm.gguf 16c3724582d59aa8bf84711894e833f916ee46a31d80e21312759c48bf8d0e69
ggml-vocab-qwen2.gguf.inp be0a11f7071f0c67d3053a2d377d8f35f0dbcb77ff11a60300fb57d36b477cf0
ggml-vocab-llama-bpe.gguf.inp be0a11f7071f0c67d3053a2d377d8f35f0dbcb77ff11a60300fb57d36b477cf0
ggml-vocab-gpt-2.gguf.inp be0a11f7071f0c67d3053a2d377d8f35f0dbcb77ff11a60300fb57d36b477cf0
ggml-vocab-llama-spm.gguf.inp be0a11f7071f0c67d3053a2d377d8f35f0dbcb77ff11a60300fb57d36b477cf0"

missing=()
while read -r name _; do
    [ -f "$models/$name" ] || missing+=("$inner/$name")
done <<< "$files"

if [ ${#missing[@]} -gt 0 ]; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    python3 -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: -d "$tmp" \
        "llama-cpp-python==$version" >&2
    mkdir -p "$cache/peer"
    tar -xzf "$tmp/llama_cpp_python-$version.tar.gz" -C "$cache/peer" "${missing[@]}"
fi

while read -r name expected; do
    actual=$(sha256sum "$models/$name" | cut -d' ' -f1)
    if [ "$actual" != "$expected" ]; then
        echo "fetch-vocabs: $models/$name has SHA-256 $actual, expected $expected" >&2
        exit 1
    fi
done <<< "$files"
echo "$models"
