#!/usr/bin/env bash
# Fresh machine → every test passed: install, format check, build, run the suite, clang-tidy;
# build the container image and run it against the fake Bedrock; then the same suite again under
# AddressSanitizer + UndefinedBehaviorSanitizer, and under ThreadSanitizer; then a short run of
# every fuzz target. Needs nothing beside the clone (the test data is in tests/reference). Each
# stage prints how long it took, and the total at the end (CI's budget is 60 minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
suite_started=$SECONDS

# stage NAME COMMAND...: runs one stage and prints its duration.
stage() {
  local name="$1" t0=$SECONDS
  shift
  echo "== $name"
  "$@"
  echo "-- $name: $((SECONDS - t0)) s"
}

deps() {
  bash scripts/install-deps.sh all
  (cd tests/e2e/js && npm ci --no-audit --no-fund)
}

format_check() {
  git ls-files '*.cpp' '*.hpp' | xargs clang-format --dry-run -Werror
}

# --no-tests=error: a build without tests (BGW_BUILD_TESTS=OFF, as scripts/run.sh configures)
# must not pass as an empty run.
build_and_test() {
  bash scripts/build.sh build -DBGW_BUILD_TESTS=ON
  ctest --test-dir build --output-on-failure --no-tests=error -j "$(nproc)"
}

asan() {
  bash scripts/build.sh build-asan -DCMAKE_BUILD_TYPE=Debug "-DBGW_SANITIZE=address;undefined" \
    -DBGW_BUILD_TESTS=ON
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
    ctest --test-dir build-asan --output-on-failure --no-tests=error -j "$(nproc)"
}

# The gateway runs one io_context per thread and shares its policy, metrics, pool and key
# cache between them: the same suite, end-to-end tests included (their gateways are the TSan
# build), with every report written to a file. Any report fails the run.
tsan() {
  bash scripts/build.sh build-tsan -DCMAKE_BUILD_TYPE=Debug -DBGW_SANITIZE=thread \
    -DBGW_BUILD_BENCH=OFF -DBGW_BUILD_TESTS=ON
  local tsan_reports
  tsan_reports=$(mktemp -d)
  TSAN_OPTIONS="log_path=$tsan_reports/report second_deadlock_stack=1" \
    ctest --test-dir build-tsan --output-on-failure --no-tests=error -j "$(nproc)"
  if compgen -G "$tsan_reports/report.*" >/dev/null; then
    cat "$tsan_reports"/report.*
    echo "ThreadSanitizer reported the races above" >&2
    exit 1
  fi
  rm -rf "$tsan_reports"
  echo "ThreadSanitizer: no reports"
}

stage "install dependencies" deps
stage "clang-format check" format_check
stage "build and test (RelWithDebInfo, -Werror)" build_and_test
# Both libraries against .clang-tidy, compiled as the build above did (its compile_commands.json).
stage "clang-tidy" bash scripts/tidy.sh build
# The image from docker/Dockerfile, built with buildah and run with podman against the fake
# Bedrock of the build above (scripts/container-test.sh says what it checks).
stage "container image: build and run" bash scripts/container-test.sh
stage "build and test (ASan + UBSan)" asan
stage "build and test (ThreadSanitizer)" tsan
stage "fuzz (libFuzzer + ASan + UBSan, 10 s per target; longer runs: scripts/fuzz.sh 600)" \
  bash scripts/fuzz.sh 10
echo "== all stages passed in $((SECONDS - suite_started)) s"
