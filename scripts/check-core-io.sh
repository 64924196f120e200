#!/usr/bin/env bash
# The pure core (bgw_core: src/{aws,batch,config,fleet,http,pipeline,policy,routing,util} and their headers) moves
# no bytes: it must never include Asio's I/O headers, even through another header. Each
# file's full include list comes from the compiler (-M); any of these in it fails the check:
# ip/, ssl, io_context, co_spawn, awaitable, steady_timer. (Asio's buffer types, which
# Beast's message headers bring, are plain data and allowed.)
#   usage: scripts/check-core-io.sh [c++ compiler]   (default: c++)
set -euo pipefail
cd "$(dirname "$0")/.."
cxx="${1:-c++}"
forbidden='boost/asio/(ip/|ssl[/.]|io_context\.hpp|co_spawn\.hpp|awaitable\.hpp|steady_timer\.hpp)'
dirs=(aws batch config fleet http pipeline policy routing util)
files=()
for d in "${dirs[@]}"; do  # subfolders included (aws/credentials, ...)
  mapfile -t -O "${#files[@]}" files < <(find src/"$d" include/bgw/"$d" -name '*.[ch]pp' | sort)
done
files+=(include/bgw/error.hpp src/error.cpp)
checked=0
bad=0
for f in "${files[@]}"; do
  [ -f "$f" ] || continue
  deps="$("$cxx" -std=c++20 -Iinclude -x c++ -M "$f")" || { echo "check-core-io: $f does not preprocess" >&2; exit 1; }
  hits="$(tr ' \\' '\n\n' <<<"$deps" | grep -E "$forbidden" | sort -u || true)"
  if [ -n "$hits" ]; then
    echo "check-core-io: $f reaches Asio I/O headers:" >&2
    sed 's/^/    /' <<<"$hits" >&2
    bad=1
  fi
  checked=$((checked + 1))
done
[ "$checked" -gt 0 ] || { echo "check-core-io: no files found" >&2; exit 1; }
[ "$bad" = 0 ] || exit 1
echo "check-core-io: $checked files of the core, none reaches Asio's I/O headers"
