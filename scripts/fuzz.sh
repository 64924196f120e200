#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz) with clang into build-fuzz/ (the top-level project
# with -DBGW_FUZZ=ON: bgw_core and the targets, instrumented alike), seeds each target's
# corpus from tests/reference and tests/fuzz/seeds, runs each for SECONDS (default 600) and
# prints per target: executions, exec/s, coverage (cov/ft), corpus size and findings.
# Exits non-zero if any target found a crash, leak, timeout or out-of-memory.
#
#   scripts/fuzz.sh            600 s per target (the long run)
#   scripts/fuzz.sh 10         CI: 10 s per target
#   scripts/fuzz.sh 60 sigv4   only the named targets
#
# Environment: BGW_REFERENCE_DIR (default tests/reference),
# BGW_FUZZ_BUILD (default build-fuzz), BGW_FUZZ_JOBS (build jobs, default 2),
# BGW_FUZZ_KEEP_CORPUS=1 to keep growing the corpora of earlier runs instead of starting afresh.
# Nothing here writes outside the build directory; the targets touch no file or network.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
seconds="${1:-600}"
shift || true
all_targets=(eventstream runtime_path config sigv4 credentials front_parser h2_server)
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then targets=("${all_targets[@]}"); fi
ref="${BGW_REFERENCE_DIR:-$root/tests/reference}"
build="${BGW_FUZZ_BUILD:-build-fuzz}"
jobs="${BGW_FUZZ_JOBS:-2}"
if [ ! -d "$ref" ]; then
  echo "fuzz: reference directory $ref not found (set BGW_REFERENCE_DIR)" >&2
  exit 2
fi
ref="$(cd "$ref" && pwd)"

echo "== fuzz: build ($build, clang, -fsanitize=fuzzer,address,undefined)"
# A build directory configured from elsewhere (the standalone tests/fuzz project this replaced)
# cannot be reconfigured from here: start its configuration afresh.
if [ -f "$build/CMakeCache.txt" ] &&
  ! grep -qxF "CMAKE_HOME_DIRECTORY:INTERNAL=$root" "$build/CMakeCache.txt"; then
  rm -rf "$build/CMakeCache.txt" "$build/CMakeFiles" "$build"/fuzz_*
fi
CC=clang CXX=clang++ cmake -S . -B "$build" -DBGW_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  "-DBGW_REFERENCE_DIR=$ref" >/dev/null
if ! cmake --build "$build" -j "$jobs" >"$build/build.log" 2>&1; then
  tail -50 "$build/build.log" >&2
  echo "fuzz: build failed (full log: $build/build.log)" >&2
  exit 1
fi
for t in "${targets[@]}"; do
  [ -x "$build/fuzz_$t" ] || { echo "fuzz: $build/fuzz_$t was not built" >&2; exit 1; }
done

# Largest input per target: room for several frames / a long config or request, still fast.
max_len() {
  case "$1" in
    eventstream) echo 16384 ;;
    config) echo 16384 ;;
    runtime_path) echo 8192 ;;
    *) echo 8192 ;;
  esac
}

# Copies the reference files a target starts from into its seed directory.
seed() {
  local t="$1" dir="$2"
  local -a files=()
  case "$t" in
    eventstream)
      files=("$ref"/eventstream/bedrock-frames/*.bin "$ref"/eventstream/aws-sdk-go-testdata/encoded/*/*) ;;
    runtime_path | sigv4)
      mapfile -t files < <(find "$ref/sigv4-bedrock-vectors" "$ref/sigv4-testsuite" -name '*.req')
      mapfile -t -O "${#files[@]}" files < <(find "$ref/sigv4-testsuite-crt" -name request.txt) ;;
    config)
      files=("$root/config/gateway.json")
      mapfile -t -O 1 files < <(find "$ref/eventstream" "$ref/sigv4-testsuite-crt" \
        "$ref/botocore-models/misc" -name '*.json' -size -16k) ;;
    credentials) ;;
    front_parser)
      # The requests of the SigV4 suites, as a client would send them (a split byte first).
      mapfile -t files < <(find "$ref/sigv4-bedrock-vectors" -name '*.req') ;;
  esac
  local i=0 f
  for f in "${files[@]}"; do
    [ -f "$f" ] || continue
    i=$((i + 1))
    cp "$f" "$dir/ref-$i-$(basename "$f")"
  done
  # A decoded reference JSON also makes a credentials-JSON seed ("J" mode).
  if [ "$t" = credentials ]; then
    for f in "$ref"/sigv4-testsuite-crt/*/context.json; do
      i=$((i + 1))
      { printf 'J'; cat "$f"; } >"$dir/ref-$i-context.json"
    done
  fi
  cp tests/fuzz/seeds/"$t"/* "$dir"/ 2>/dev/null || true
}

export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:symbolize=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"

run_dir="$build/run"
summary=()
failed=0
for t in "${targets[@]}"; do
  dir="$run_dir/$t"
  if [ "${BGW_FUZZ_KEEP_CORPUS:-0}" != 1 ]; then rm -rf "$dir/corpus"; fi
  rm -rf "$dir/seeds" "$dir/findings"
  mkdir -p "$dir/corpus" "$dir/seeds" "$dir/findings"
  seed "$t" "$dir/seeds"
  nseeds=$(find "$dir/seeds" -type f | wc -l)
  dict=()
  if [ -f "tests/fuzz/dict/$t.dict" ]; then dict=("-dict=tests/fuzz/dict/$t.dict"); fi
  echo "== fuzz: $t for ${seconds}s ($nseeds seeds, max_len $(max_len "$t"))"
  set +e
  "$build/fuzz_$t" "$dir/corpus" "$dir/seeds" "${dict[@]}" \
    -max_total_time="$seconds" -max_len="$(max_len "$t")" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$dir/findings/" >"$dir/log" 2>&1
  rc=$?
  set -e
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$dir/log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$dir/log" | tail -1)
  last=$(grep -E '^#[0-9]+.*cov: ' "$dir/log" | tail -1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corpus=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$last")
  findings=$(find "$dir/findings" -type f | wc -l)
  line=$(printf '%-13s execs %10s  exec/s %7s  cov %5s  ft %6s  corpus %5s  findings %s' \
    "$t" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "${corpus:-?}" "$findings")
  echo "$line"
  summary+=("$line")
  if [ "$findings" -ne 0 ] || [ "$rc" -ne 0 ]; then
    failed=1
    echo "fuzz: $t FAILED (exit $rc); log $dir/log, inputs:" >&2
    find "$dir/findings" -type f >&2
    grep -E '^(==[0-9]+==ERROR|SUMMARY|invariant failed|.*runtime error)' "$dir/log" | head -5 >&2 || true
  fi
done

echo "== fuzz: summary (${seconds}s per target)"
printf '%s\n' "${summary[@]}"
exit "$failed"
