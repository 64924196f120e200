#!/usr/bin/env bash
# Fresh machine → every test passed: install, format check, build, run the suite; then the same
# suite again under AddressSanitizer + UndefinedBehaviorSanitizer, and under ThreadSanitizer;
# then a short run of every fuzz target.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh all
(cd tests/e2e/js && npm ci --no-audit --no-fund)

echo "== clang-format check"
git ls-files '*.cpp' '*.hpp' | xargs clang-format --dry-run -Werror

echo "== build and test (RelWithDebInfo, -Werror)"
bash scripts/build.sh build
ctest --test-dir build --output-on-failure -j "$(nproc)"

echo "== build and test (ASan + UBSan)"
bash scripts/build.sh build-asan -DCMAKE_BUILD_TYPE=Debug "-DBGW_SANITIZE=address;undefined"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --test-dir build-asan --output-on-failure -j "$(nproc)"

echo "== build and test (ThreadSanitizer)"
# The gateway runs one io_context per thread and shares its policy, metrics, pool and key
# cache between them: the same suite, end-to-end tests included (their gateways are the TSan
# build), with every report written to a file. Any report fails the run.
bash scripts/build.sh build-tsan -DCMAKE_BUILD_TYPE=Debug -DBGW_SANITIZE=thread \
  -DBGW_BUILD_BENCH=OFF
tsan_reports=$(mktemp -d)
TSAN_OPTIONS="log_path=$tsan_reports/report second_deadlock_stack=1" \
  ctest --test-dir build-tsan --output-on-failure -j "$(nproc)"
if compgen -G "$tsan_reports/report.*" >/dev/null; then
  cat "$tsan_reports"/report.*
  echo "ThreadSanitizer reported the races above" >&2
  exit 1
fi
echo "ThreadSanitizer: no reports"

echo "== fuzz (libFuzzer + ASan + UBSan, 10 s per target; longer runs: scripts/fuzz.sh 600)"
bash scripts/fuzz.sh 10
