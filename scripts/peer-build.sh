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
stamp="$build/.strata-built"
if [ -f "$stamp" ]; then
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
cmake -S "$root/vendor/llama.cpp" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_SERVER=ON -DBUILD_SHARED_LIBS=ON >&2
cmake --build "$build" --target llama-bench llama-tokenize llama-cli llama-server llama-perplexity -j "$(nproc)" >&2
touch "$stamp"
echo "$build/bin"
