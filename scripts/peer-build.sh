#!/usr/bin/env bash
# scripts/peer-build.sh: build llama.cpp (the peer strata is measured against)
# once, from the llama-cpp-python source package on PyPI, into a cache folder
# outside the repository. Prints the folder holding the built tools.
#
# The cache is $STRATA_CACHE (default ~/.cache/strata)/peer/llama_cpp_python-VERSION.
set -euo pipefail
version=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
cache=${STRATA_CACHE:-$HOME/.cache/strata}
root="$cache/peer/llama_cpp_python-$version"
build="$root/build"
targets="llama-bench llama-batched-bench llama-tokenize llama-cli llama-server llama-perplexity"
if [ -f "$build/.strata-built" ] && [ "$(cat "$build/.strata-built")" = "$targets" ]; then
    echo "$build/bin"
    exit 0
fi
mkdir -p "$cache/peer"
if [ ! -f "$root/vendor/llama.cpp/CMakeLists.txt" ]; then
    tmp=$(mktemp -d)
    python3 -m pip download --quiet --no-deps --no-binary :all: -d "$tmp" "llama-cpp-python==$version" >&2
    tar -xzf "$tmp"/llama_cpp_python-"$version".tar.gz -C "$cache/peer"
    rm -rf "$tmp"
fi
[ -f "$build/build.ninja" ] || cmake -S "$root/vendor/llama.cpp" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_SERVER=ON -DBUILD_SHARED_LIBS=ON >&2
# shellcheck disable=SC2086
cmake --build "$build" --target $targets -j "$(nproc)" >&2
echo "$targets" > "$build/.strata-built"
echo "$build/bin"
