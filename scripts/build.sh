#!/usr/bin/env bash
# Configure and build into DIR (default build/) with extra CMake arguments.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-build}"; shift || true
cmake -S . -B "$dir" -DBGW_WERROR=ON "$@"
cmake --build "$dir" -j "$(nproc)"
