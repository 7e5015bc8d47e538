#!/usr/bin/env bash
# scripts/run-tests.sh RELEASE_BUILD SANITIZE_BUILD: run the whole suite.
#
# The C test programs (CTest) run twice, from the Release build and from the
# ASan+UBSan build; the Python tests (pytest: numerics against independent
# references, end-to-end CLI checks) run against the Release binary, and the
# tiny-model and HTTP server ones again against the sanitized binary. The last line counts
# every test: "tests: N passed, N failed".
set -uo pipefail
release=${1:-build}
sanitize=${2:-build-sanitize}
passed=0
failed=0

run_ctest() {
    local build=$1 log
    log=$(mktemp)
    ctest --test-dir "$build" --output-on-failure 2>&1 | tee "$log"
    local total fails
    total=$(grep -Eo 'tests passed, [0-9]+ tests failed out of [0-9]+' "$log" | grep -Eo '[0-9]+$' | tail -1)
    fails=$(grep -Eo '[0-9]+ tests failed out of' "$log" | grep -Eo '^[0-9]+' | tail -1)
    if [ -z "$total" ]; then
        echo "run-tests: ctest in $build reported no result" >&2
        failed=$((failed + 1))
    else
        passed=$((passed + total - fails))
        failed=$((failed + fails))
    fi
    rm -f "$log"
}

run_pytest() {
    local log
    log=$(mktemp)
    python3 -m pytest -q "$@" 2>&1 | tee "$log"
    local summary p f e
    summary=$(tail -1 "$log")
    p=$(echo "$summary" | grep -Eo '[0-9]+ passed' | grep -Eo '[0-9]+')
    f=$(echo "$summary" | grep -Eo '[0-9]+ failed' | grep -Eo '[0-9]+')
    e=$(echo "$summary" | grep -Eo '[0-9]+ errors?' | grep -Eo '[0-9]+')
    passed=$((passed + ${p:-0}))
    failed=$((failed + ${f:-0} + ${e:-0}))
    if [ -z "$p$f$e" ]; then
        echo "run-tests: pytest $* reported no result" >&2
        failed=$((failed + 1))
    fi
    rm -f "$log"
}

echo "== C tests, Release build"
run_ctest "$release"
echo "== C tests, ASan + UBSan build"
ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 UBSAN_OPTIONS=print_stacktrace=1 run_ctest "$sanitize"
echo "== Python tests against the Release binary"
STRATA_BIN="$release/strata" run_pytest tests/python
echo "== tiny-model and server tests against the ASan + UBSan binary"
STRATA_BIN="$sanitize/strata" ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 \
    run_pytest tests/python/test_tiny_models.py tests/python/test_serve.py

echo "tests: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
