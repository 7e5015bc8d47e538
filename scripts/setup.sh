#!/usr/bin/env bash
# scripts/setup.sh: install what strata needs to build, test and run on a
# fresh Debian 12 machine: Debian packages (compiler, CMake, Ninja, PCRE2),
# Python packages (numpy, gguf, pytest, matplotlib), the default model and the
# byte-level BPE vocabularies the tokenizer tests use. Safe to run again: it
# only installs what is missing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

packages="gcc make cmake ninja-build pkg-config libpcre2-dev libjansson-dev libmicrohttpd-dev python3 python3-pip"
missing=""
for package in $packages; do
    dpkg -s "$package" >/dev/null 2>&1 || missing="$missing $package"
done
if [ -n "$missing" ]; then
    echo "setup: installing Debian packages:$missing" >&2
    if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
    $sudo apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q $missing >&2
fi

python_missing=""
python3 -c 'import numpy' 2>/dev/null || python_missing="$python_missing numpy"
python3 -c 'import gguf' 2>/dev/null || python_missing="$python_missing gguf==0.19.0"
python3 -c 'import pytest' 2>/dev/null || python_missing="$python_missing pytest"
python3 -c 'import matplotlib' 2>/dev/null || python_missing="$python_missing matplotlib"
if [ -n "$python_missing" ]; then
    echo "setup: installing Python packages:$python_missing" >&2
    python3 -m pip install --quiet --disable-pip-version-check $python_missing >&2 ||
        python3 -m pip install --quiet --disable-pip-version-check --break-system-packages $python_missing >&2
fi

"$here/fetch-model.sh" >/dev/null
"$here/fetch-prose.sh" >/dev/null
if [ -x "$here/fetch-vocabs.sh" ]; then
    "$here/fetch-vocabs.sh" >/dev/null
fi
