#!/usr/bin/env bash
# The one list of what bedrock-gateway needs on Debian bookworm: used by the README commands,
# by CI (.ci/run → scripts/test.sh) and by docker/Dockerfile. Idempotent.
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive

# Build: compiler, CMake, the libraries on the design card (Boost 1.81, not bookworm's 1.74 default);
# libnghttp2 drives the HTTP/2 front door (issue 19); libhiredis speaks RESP to Redis for the
# fleet's shared state (issue 20: its reply reader and command formatter, Asio does the I/O).
BUILD_PACKAGES="g++ cmake make ccache pkg-config git ca-certificates
  libboost1.81-dev libssl-dev rapidjson-dev libspdlog-dev libnghttp2-dev libhiredis-dev"
# Tests: GoogleTest, real SDK clients (and the README recipes' AWS CLI and curl), nginx as a real
# TLS peer, format check, clang-tidy (scripts/tidy.sh); the bench (bench/run, its smoke run is a
# test): wrk as the load generator, nginx as the reference proxy, Google Benchmark for the
# micro-benchmarks; clang with its libFuzzer runtime for the fuzz targets (scripts/fuzz.sh);
# valgrind and strace for the hot-path profile (bench/profile); HTTP/2 clients for the front
# door's protocol tests (tests/e2e/test_http2.py): nghttp (and h2load for the bench) from
# nghttp2-client, and python3-h2 to hand-build frames a well-behaved client never sends; a real
# Redis for the shared-state tests (tests/unit/redis_link_test.cpp starts redis-server, paused,
# stopped, with a password and with TLS), redis-tools for redis-cli when checking it by hand.
TEST_PACKAGES="libgtest-dev libgmock-dev python3 python3-boto3 awscli curl clang-format clang-tidy
  nginx-light openssl wrk libbenchmark-dev clang libclang-rt-14-dev valgrind strace
  nghttp2-client python3-h2 redis-server redis-tools"

# The container test (scripts/container-test.sh): builds docker/Dockerfile with buildah on a
# base made by debootstrap, runs it with podman (runc: crun fails on this kind of VM).
CONTAINER_PACKAGES="podman buildah runc debootstrap"

# What the built binary needs at run time (the container's final stage); libnghttp2-14 for HTTP/2,
# libhiredis0.14 for the Redis protocol (shared state).
LIB_PACKAGES="ca-certificates libssl3 libspdlog1.10 libfmt9 libnghttp2-14 libhiredis0.14"

what="${1:-all}"
case "$what" in
  build) packages="$BUILD_PACKAGES" ;;
  libs) packages="$LIB_PACKAGES" ;;
  all) packages="$BUILD_PACKAGES $TEST_PACKAGES $CONTAINER_PACKAGES" ;;
  *) echo "usage: $0 [build|libs|all]" >&2; exit 2 ;;
esac

# The JavaScript SDK tests need Node.js and npm; the machine image may already ship them.
if [ "$what" = all ] && ! command -v npm >/dev/null 2>&1; then
  packages="$packages nodejs npm"
fi

# shellcheck disable=SC2086
if dpkg -s $packages >/dev/null 2>&1; then
  echo "install-deps: everything already installed"
  exit 0
fi
$SUDO apt-get update
# shellcheck disable=SC2086
$SUDO apt-get install -y --no-install-recommends $packages
