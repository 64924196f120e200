#!/usr/bin/env bash
# Builds docker/Dockerfile and runs the image against the fake Bedrock, as CI does, on a plain
# Debian machine: no Docker daemon, no Docker Hub. Needs root, podman, buildah, runc and
# debootstrap (scripts/install-deps.sh all), and a built build/tests/fake_bedrock.
#
#   1. base image: `debootstrap --variant=minbase bookworm` from the Debian mirror this machine's
#      apt sources name, imported with `podman import` under every name the Dockerfile's FROM
#      lines use (so nothing is pulled);
#   2. `buildah bud --isolation chroot --network host --format docker` (the docker format keeps
#      HEALTHCHECK, which OCI drops);
#   3. the image runs read-only, with every capability dropped and no-new-privileges, on the host
#      network, signing for the fake Bedrock on 127.0.0.1 (the fake checks every signature).
#      Checked: a non-root uid and no capabilities, /healthz and /readyz on admin_listen, the
#      image's HEALTHCHECK with that admin_listen, an InvokeModel and a ConverseStream verified
#      by the fake, a throttle answered 429, and SIGTERM during a stream: the stream completes
#      and the container exits 0. Then the Dockerfile's example config (docker/gateway.json)
#      starts in the image and passes its HEALTHCHECK (in a network namespace of its own).
#
# Everything podman and buildah make (image store, run state, containers.conf, events log,
# network config) lives in one temporary directory, removed on exit with the containers in it;
# the host's container storage, networks and configuration are not touched (a blob-info cache
# that containers/image writes to /var/lib/containers/cache is removed if this run made it). Prints the image
# size and how long it took. BGW_FAKE_BEDROCK overrides the fake's path.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS

STARTUP_TIMEOUT_S=60
STREAM_TIMEOUT_S=60
SUITE=bookworm
IMAGE=localhost/bedrock-gateway:container-test
ACCESS_KEY="AKIDCONTAINERTEST000"
SECRET_KEY="container/test+secret/NOT-A-REAL-KEY-01"
MODEL="anthropic.claude-3-haiku-20240307-v1:0"
THROTTLED_MODEL="fake-error-429-ThrottlingException"
STALLED_MODEL="fake-stream-stall-2000" # one event, 2 s of silence, then the rest

fail() {
  echo "container-test: $*" >&2
  exit 1
}

fake="${BGW_FAKE_BEDROCK:-build/tests/fake_bedrock}"
[ "$(id -u)" = 0 ] || fail "needs root (debootstrap, podman import, buildah --isolation chroot)"
for tool in podman buildah runc debootstrap curl python3; do
  command -v "$tool" >/dev/null || fail "$tool not found: bash scripts/install-deps.sh all"
done
[ -x "$fake" ] || fail "no fake Bedrock at $fake: build first (bash scripts/build.sh build)"

work="$(mktemp -d -t bgw-container.XXXXXX)"
chmod 755 "$work" # the config files below are read by the container's uid 10001
fake_pid=""
client_pid=""
containers=()
# containers/image keeps a blob-info cache in /var/lib/containers/cache whatever the storage
# root: whichever of these paths this run creates is removed again (deepest first).
host_leftovers=()
for p in /var/lib/containers /var/lib/containers/cache \
  /var/lib/containers/cache/blob-info-cache-v1.boltdb; do
  [ -e "$p" ] || host_leftovers=("$p" "${host_leftovers[@]}")
done

cat >"$work/containers.conf" <<EOF
# This VM: crun fails on setrlimit and on the mixed cgroup mode; no systemd, no journald.
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$work/events.log"
tmp_dir = "$work/tmp"
volume_path = "$work/volumes"

[network]
network_config_dir = "$work/networks"
EOF
cat >"$work/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$work/storage"
runroot = "$work/run"
EOF
# No registry is consulted: every image is local, or the build fails.
echo 'unqualified-search-registries = []' >"$work/registries.conf"
export CONTAINERS_CONF="$work/containers.conf" CONTAINERS_STORAGE_CONF="$work/storage.conf" \
  CONTAINERS_REGISTRIES_CONF="$work/registries.conf"
pm() { podman --root "$work/storage" --runroot "$work/run" "$@"; }
bh() { buildah --root "$work/storage" --runroot "$work/run" "$@"; }

# shellcheck disable=SC2317 # reached through the traps below
cleanup() {
  local status=$? c m
  trap - EXIT INT TERM
  if [ -n "$client_pid" ]; then kill "$client_pid" 2>/dev/null || true; fi
  for c in "${containers[@]}"; do pm rm -f -t 0 "$c" >/dev/null 2>&1 || true; done
  if [ -d "$work/storage" ]; then
    pm rmi -a -f >/dev/null 2>&1 || true
    # The overlay driver mounts its layers (and its home) under the store: unmount them, deepest
    # first, before removing the directory.
    while read -r m; do umount -l "$m" 2>/dev/null || true; done < <(
      findmnt -rn -o TARGET | grep -F "$work/" | sort -r)
  fi
  if [ -n "$fake_pid" ]; then
    kill -TERM "$fake_pid" 2>/dev/null || true
    wait "$fake_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
  for m in "${host_leftovers[@]}"; do
    if [ -d "$m" ]; then rmdir "$m" 2>/dev/null || true; else rm -f "$m"; fi
  done
  if [ "$status" = 0 ]; then
    echo "container-test: OK in $((SECONDS - started)) s"
  else
    echo "container-test: FAILED after $((SECONDS - started)) s" >&2
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The Debian mirrors this machine's apt uses, from its sources (one-line and deb822 formats):
# prints "URI SUITE" for every deb source of a $SUITE suite.
apt_sources() {
  python3 - "$SUITE" /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
    /etc/apt/sources.list.d/*.sources <<'EOF'
import re, sys
suite = sys.argv[1]
for path in sys.argv[2:]:
    try:
        text = open(path).read()
    except OSError:
        continue
    if path.endswith(".sources"):
        for stanza in re.split(r"\n\s*\n", text):
            fields = {}
            for line in stanza.splitlines():
                m = re.match(r"([A-Za-z-]+):\s*(.*)", line)
                if m and not line.startswith("#"):
                    fields[m.group(1).lower()] = m.group(2).split()
            if "deb" not in fields.get("types", []) or fields.get("enabled", ["yes"]) == ["no"]:
                continue
            for uri in fields.get("uris", []):
                for s in fields.get("suites", []):
                    if s == suite or s.startswith(suite + "-"):
                        print(uri, s)
    else:
        for line in text.splitlines():
            line = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
            if len(line) >= 3 and line[0] == "deb" and (line[2] == suite or line[2].startswith(suite + "-")):
                print(line[1], line[2])
EOF
}

echo "== container: base image ($SUITE minbase via debootstrap)"
mirror="$(apt_sources | awk -v s="$SUITE" '$2 == s {print $1; exit}')"
[ -n "$mirror" ] || fail "no deb source for $SUITE in this machine's apt sources"
echo "mirror: $mirror (from the apt sources)"
if ! debootstrap --variant=minbase "$SUITE" "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1; then
  tail -30 "$work/debootstrap.log" >&2
  fail "debootstrap failed"
fi
# The image's apt uses the same sources as this machine for this suite (updates, security).
rm -f "$work/rootfs/etc/apt/sources.list"
apt_sources | awk '{print "deb " $1 " " $2 " main"}' >"$work/rootfs/etc/apt/sources.list"
# As Debian's slim images are made: no downloaded packages, package lists, documentation
# (but the copyright files), manuals or translations in the base, and dpkg leaves those out of
# what is installed later.
rm -rf "$work"/rootfs/var/cache/apt/archives/*.deb "$work"/rootfs/var/lib/apt/lists/* \
  "$work"/rootfs/usr/share/{man,info,locale,lintian}/*
find "$work/rootfs/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
  'path-exclude /usr/share/man/*' 'path-exclude /usr/share/info/*' \
  'path-exclude /usr/share/locale/*' 'path-exclude /usr/share/lintian/*' \
  >"$work/rootfs/etc/dpkg/dpkg.cfg.d/slim"
# Every FROM of the Dockerfile, as buildah resolves a short name (docker.io/library/...).
mapfile -t bases < <(awk 'toupper($1) == "FROM" {print $2}' docker/Dockerfile | sort -u)
[ "${#bases[@]}" -gt 0 ] || fail "no FROM in docker/Dockerfile"
qualified() {
  case "$1" in
    */*/*) echo "$1" ;;
    */*) echo "docker.io/$1" ;;
    *) echo "docker.io/library/$1" ;;
  esac
}
tar -C "$work/rootfs" -c . | pm import -q - "$(qualified "${bases[0]}")" >/dev/null
for b in "${bases[@]:1}"; do pm tag "$(qualified "${bases[0]}")" "$(qualified "$b")"; done
rm -rf "$work/rootfs"
base_bytes="$(pm image inspect --format '{{.Size}}' "$(qualified "${bases[0]}")")"
echo "imported as ${bases[*]}: $((base_bytes / 1000000)) MB, in $((SECONDS - started)) s"

echo "== container: build (buildah bud, docker format)"
build_started=$SECONDS
if ! bh bud --isolation chroot --network host --format docker --pull=never \
  -f docker/Dockerfile -t "$IMAGE" . >"$work/build.log" 2>&1; then
  tail -60 "$work/build.log" >&2
  fail "image build failed"
fi
# Compiler warnings of the Release build, each with the last object make announced before it.
awk '/Building CXX object/ {tu = $NF} /warning:/ {print "build warning (" tu "): " $0}' \
  "$work/build.log"
size_bytes="$(pm image inspect --format '{{.Size}}' "$IMAGE")"
echo "image: $IMAGE, $((size_bytes / 1000000)) MB ($size_bytes bytes), built in $((SECONDS - build_started)) s"
echo "its layers (newest first):"
pm history --format '    {{.Size}}  {{.CreatedBy}}' "$IMAGE" | cut -c1-100
healthcheck="$(pm image inspect --format '{{json .Config.Healthcheck}}' "$IMAGE")"
case "$healthcheck" in
  *--probe*) ;;
  *) fail "the image has no HEALTHCHECK (got: $healthcheck)" ;;
esac

# ---- the gateway in the image, against the fake Bedrock --------------------------------------

# Waits for `listening on 127.0.0.1:PORT` in a log that `$2...` prints; prints PORT.
wait_listening() {
  local name="$1" deadline=$((SECONDS + STARTUP_TIMEOUT_S)) port
  shift
  while :; do
    port="$("$@" 2>&1 | grep -m1 -o 'listening on 127\.0\.0\.1:[0-9]*' | cut -d: -f2 || true)"
    if [ -n "$port" ]; then
      echo "$port"
      return 0
    fi
    [ "$SECONDS" -lt "$deadline" ] || { "$@" >&2 || true; fail "$name did not start listening"; }
    sleep 0.1
  done
}
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
# The fake's JSON line for the first request whose target contains $1: it must carry a verified
# signature with our key, for service bedrock. Prints nothing, fails otherwise.
fake_verified() {
  python3 - "$work/fake.log" "$1" "$ACCESS_KEY" <<'EOF'
import json, sys
log, needle, key = sys.argv[1:]
for line in open(log):
    if not line.startswith("{"):
        continue
    r = json.loads(line)
    if needle in r.get("target", ""):
        ok = r["signatureOk"] and r["accessKeyId"] == key and r["service"] == "bedrock"
        sys.exit(0 if ok else "fake Bedrock: bad signature on " + line)
sys.exit("fake Bedrock never saw " + needle)
EOF
}
# True once the fake has logged a completed stream_end.
fake_stream_completed() {
  python3 - "$work/fake.log" <<'EOF'
import json, sys
ends = [json.loads(l) for l in open(sys.argv[1]) if l.startswith('{"event":"stream_end"')]
sys.exit(0 if ends and all(e["completed"] and not e["peerClosed"] for e in ends) else 1)
EOF
}

echo "== container: run against the fake Bedrock"
"$fake" --access-key "$ACCESS_KEY" --secret-key "$SECRET_KEY" --regions us-east-1 \
  >"$work/fake.log" 2>&1 &
fake_pid=$!
fake_port="$(wait_listening fake_bedrock cat "$work/fake.log")"
admin_port="$(free_port)"
cat >"$work/gateway.json" <<EOF
{
  "listen": "127.0.0.1:0",
  "admin_listen": "127.0.0.1:$admin_port",
  "default_region": "us-east-1",
  "regions": { "us-east-1": { "endpoint": "http://127.0.0.1:$fake_port" } },
  "retry": { "max_attempts": 2, "base_delay_ms": 20, "max_delay_ms": 100 },
  "shutdown_grace_s": 30,
  "log_level": "info"
}
EOF
chmod 644 "$work/gateway.json"
name="bgw-container-test-$$"
containers+=("$name")
# --health-interval disable: no systemd timer for it here; `podman healthcheck run` runs it.
pm run -d --name "$name" --read-only --cap-drop ALL --security-opt no-new-privileges \
  --network host --health-interval disable \
  -v "$work/gateway.json:/etc/bedrock-gateway/gateway.json:ro" \
  -e AWS_ACCESS_KEY_ID="$ACCESS_KEY" -e AWS_SECRET_ACCESS_KEY="$SECRET_KEY" \
  -e AWS_EC2_METADATA_DISABLED=true -e BEDROCK_GATEWAY_LOG_FORMAT=json \
  "$IMAGE" >/dev/null 2>"$work/run.err" || { cat "$work/run.err" >&2; fail "podman run failed"; }
port="$(wait_listening bedrock-gateway pm logs "$name")"
gw="http://127.0.0.1:$port"
admin="http://127.0.0.1:$admin_port"
echo "gateway in the container: $gw (admin $admin), fake Bedrock: 127.0.0.1:$fake_port"

pid="$(pm inspect --format '{{.State.Pid}}' "$name")"
uid="$(awk '/^Uid:/ {print $2}' "/proc/$pid/status")"
caps="$(awk '/^CapEff:/ {print $2}' "/proc/$pid/status")"
[ "$uid" != 0 ] || fail "the gateway runs as root"
[ "$caps" = 0000000000000000 ] || fail "the gateway has capabilities $caps"
echo "ok: runs as uid $uid with no capabilities"

for path in /healthz /readyz; do
  code="$(curl -sS -o /dev/null -w '%{http_code}' "$admin$path")"
  [ "$code" = 200 ] || fail "$path on admin_listen answered $code"
done
echo "ok: /healthz and /readyz answer 200 on admin_listen"
pm healthcheck run "$name" >/dev/null || fail "HEALTHCHECK failed with admin_listen set"
echo "ok: HEALTHCHECK passes with admin_listen set"

curl_json() { # POST $2 to $1, body to $work/out; prints the status
  curl -sS -o "$work/out" -w '%{http_code}' -X POST -H 'content-type: application/json' \
    --data "$2" "$1"
}
invoke_body='{"anthropic_version":"bedrock-2023-05-31","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}'
code="$(curl_json "$gw/model/$MODEL/invoke" "$invoke_body")"
[ "$code" = 200 ] || fail "InvokeModel answered $code: $(cat "$work/out")"
fake_verified "/model/" || fail "InvokeModel was not signed as expected"
echo "ok: InvokeModel 200, signature verified by the fake"

converse_body='{"messages":[{"role":"user","content":[{"text":"hi"}]}]}'
code="$(curl_json "$gw/model/$MODEL/converse-stream" "$converse_body")"
[ "$code" = 200 ] || fail "ConverseStream answered $code"
grep -q messageStop "$work/out" || fail "ConverseStream ended without messageStop"
fake_verified "/converse-stream" || fail "ConverseStream was not signed as expected"
fake_stream_completed || fail "the fake did not see the stream complete"
echo "ok: ConverseStream 200 to messageStop, signature verified by the fake"

code="$(curl_json "$gw/model/$THROTTLED_MODEL/invoke" "$invoke_body")"
[ "$code" = 429 ] || fail "a throttled model answered $code, not 429"
echo "ok: throttled upstream -> 429 ($(cat "$work/out"))"

# SIGTERM while a stream is half sent: the stream still completes, then the container exits 0.
curl -sS -N -o "$work/stream" -X POST -H 'content-type: application/json' \
  --data "$converse_body" "$gw/model/$STALLED_MODEL/converse-stream" &
client_pid=$!
deadline=$((SECONDS + STREAM_TIMEOUT_S))
until grep -q messageStart "$work/stream" 2>/dev/null; do
  [ "$SECONDS" -lt "$deadline" ] || fail "the stalled stream never started"
  sleep 0.05
done
pm kill --signal TERM "$name" >/dev/null
client_status=0
wait "$client_pid" || client_status=$?
client_pid=""
[ "$client_status" = 0 ] || fail "the stream in flight failed at SIGTERM (curl $client_status)"
grep -q messageStop "$work/stream" || fail "the stream in flight was cut at SIGTERM"
exit_code="$(pm wait "$name")"
[ "$exit_code" = 0 ] || { pm logs "$name" >&2; fail "the container exited $exit_code on SIGTERM"; }
fake_stream_completed || fail "the fake saw a stream cut short"
# Into a file first: `pm logs | grep -q` under pipefail fails when grep stops reading early.
pm logs "$name" >"$work/drain.log" 2>&1 || true
grep -q '"drained"' "$work/drain.log" || {
  tail -n 20 "$work/drain.log" >&2
  fail "no drained line in the gateway's log"
}
echo "ok: SIGTERM during a stream: the stream completed, the container exited 0"

# ---- the Dockerfile's example config, as written ---------------------------------------------
# Its own network namespace (nothing published, no network change on the host): the example
# config starts in the image and its HEALTHCHECK passes.
example="bgw-container-example-$$"
containers+=("$example")
pm run -d --name "$example" --read-only --cap-drop ALL --security-opt no-new-privileges \
  --network none --health-interval disable \
  -v "$PWD/docker/gateway.json:/etc/bedrock-gateway/gateway.json:ro" \
  -e AWS_EC2_METADATA_DISABLED=true "$IMAGE" >/dev/null 2>"$work/run.err" ||
  { cat "$work/run.err" >&2; fail "podman run failed"; }
deadline=$((SECONDS + STARTUP_TIMEOUT_S))
until pm healthcheck run "$example" >/dev/null 2>&1; do
  state="$(pm inspect --format '{{.State.Status}}' "$example")"
  if [ "$state" != running ] || [ "$SECONDS" -ge "$deadline" ]; then
    pm logs "$example" >&2 || true
    fail "the example config (docker/gateway.json) did not become healthy ($state)"
  fi
  sleep 0.2
done
echo "ok: docker/gateway.json starts in the image and passes its HEALTHCHECK"

echo "container test: image $((size_bytes / 1000000)) MB, $((SECONDS - started)) s"
