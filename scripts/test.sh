#!/usr/bin/env bash
# Fresh machine → every test passed: install, format check, build, run the suite; then the same
# suite again under AddressSanitizer + UndefinedBehaviorSanitizer; then a short run of every fuzz
# target.
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

echo "== fuzz (libFuzzer + ASan + UBSan, 10 s per target; longer runs: scripts/fuzz.sh 600)"
bash scripts/fuzz.sh 10
