#!/usr/bin/env bash
# Fresh machine → running gateway: install, build, start with config/gateway.json (or $1).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh build
bash scripts/build.sh build -DBGW_BUILD_TESTS=OFF
exec build/bedrock-gateway --config "${1:-config/gateway.json}"
