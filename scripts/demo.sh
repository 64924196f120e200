#!/usr/bin/env bash
# The gateway working end to end without an AWS account, in one command:
#
#     bash scripts/demo.sh
#
# Starts the bundled fake Bedrock (it verifies every SigV4 signature, and always throttles the
# model fake-error-429-ThrottlingException), starts the gateway in front of it with throwaway
# static keys, then drives it with real boto3 (scripts/demo.py): a Converse, a ConverseStream
# printed event by event, and a throttled call that comes back as the gateway's uniform 429.
# Exits 0 only if all three behaved as expected and the gateway then shut down cleanly.
#
# Binaries: BGW_GATEWAY_BINARY and BGW_FAKE_BEDROCK, else build/bedrock-gateway and
# build/tests/fake_bedrock, which are built first when missing. BGW_PYTHON picks the Python
# (default python3). Everything listens on 127.0.0.1 only, on ports the processes pick
# themselves, and both processes are stopped on exit, however the script ends.
set -euo pipefail

STARTUP_TIMEOUT_S=30 # sanitizer builds start slowly on a small machine
STOP_TIMEOUT_S=10

# Binaries given relative to where the script was called from, before moving to the repo root.
absolute() { case "$1" in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
gateway="$(absolute "${BGW_GATEWAY_BINARY:-$(dirname "$0")/../build/bedrock-gateway}")"
fake="$(absolute "${BGW_FAKE_BEDROCK:-$(dirname "$0")/../build/tests/fake_bedrock}")"
python="${BGW_PYTHON:-python3}"
cd "$(dirname "$0")/.."

if [ ! -x "$gateway" ] || [ ! -x "$fake" ]; then
  if [ -n "${BGW_GATEWAY_BINARY:-}" ] || [ -n "${BGW_FAKE_BEDROCK:-}" ]; then
    # Named binaries that are not there are a mistake to report, not a reason to build.
    echo "demo: no executable at $gateway or $fake (BGW_GATEWAY_BINARY / BGW_FAKE_BEDROCK)" >&2
    exit 2
  fi
  echo "== building the gateway and the fake Bedrock (first run only)"
  # The fake lives in the test tree, so the test dependencies (GoogleTest, boto3) are needed.
  bash scripts/install-deps.sh all
  bash scripts/build.sh build
fi

# botocore learns the Bedrock runtime API from its service models; Debian's is older than the
# API. Use the same models as the tests (tests/reference, see tests/CMakeLists.txt).
if [ -z "${AWS_DATA_PATH:-}" ]; then
  AWS_DATA_PATH="$(pwd)/tests/reference/botocore-models"
  export AWS_DATA_PATH
fi
# A proxy from the environment must not carry loopback traffic elsewhere.
export NO_PROXY="127.0.0.1${NO_PROXY:+,$NO_PROXY}" no_proxy="127.0.0.1${no_proxy:+,$no_proxy}"

# Throwaway keys: the fake accepts only requests signed with them, the gateway signs with them.
ACCESS_KEY="AKIDDEMOGATEWAY0DEMO"
SECRET_KEY="demo/gateway+secret/NOT-A-REAL-KEY-0123456"

work="$(mktemp -d -t bgw-demo.XXXXXX)"
fake_pid=""
gateway_pid=""
client_pid=""

# Sends SIGTERM, waits up to STOP_TIMEOUT_S (then SIGKILL) and leaves the exit status in
# stopped_status. Not run in $(...): only this shell can wait for its own children.
stopped_status=""
stop_process() {
  local pid="$1" deadline=$((SECONDS + STOP_TIMEOUT_S))
  kill -TERM "$pid" 2>/dev/null || true
  # Bash reaps its children as they exit, so kill -0 fails once the process is gone.
  while kill -0 "$pid" 2>/dev/null; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "demo: pid $pid did not exit within ${STOP_TIMEOUT_S} s of SIGTERM; killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.05
  done
  stopped_status=0
  wait "$pid" 2>/dev/null || stopped_status=$?
}

# shellcheck disable=SC2317 # reached through the traps below
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if [ -n "$client_pid" ]; then stop_process "$client_pid"; fi
  if [ -n "$gateway_pid" ]; then stop_process "$gateway_pid"; fi
  if [ -n "$fake_pid" ]; then stop_process "$fake_pid"; fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Waits for the `listening on 127.0.0.1:PORT` line a process prints once it accepts, and prints
# PORT. Polls its log with a deadline; fails at once if the process dies first.
wait_listening() {
  local name="$1" pid="$2" log="$3" deadline port
  deadline=$((SECONDS + STARTUP_TIMEOUT_S))
  while :; do
    port="$(grep -m1 -o 'listening on 127\.0\.0\.1:[0-9]*' "$log" | cut -d: -f2 || true)"
    if [ -n "$port" ]; then
      echo "$port"
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
      echo "demo: $name did not start listening within ${STARTUP_TIMEOUT_S} s; its output:" >&2
      cat "$log" >&2
      return 1
    fi
    sleep 0.05
  done
}

echo "== bedrock-gateway demo: boto3 -> gateway -> fake Bedrock, all on 127.0.0.1, no AWS account"

"$fake" --access-key "$ACCESS_KEY" --secret-key "$SECRET_KEY" --regions us-east-1 \
  >"$work/fake.log" 2>&1 &
fake_pid=$!
fake_port="$(wait_listening fake_bedrock "$fake_pid" "$work/fake.log")"
echo "fake Bedrock  http://127.0.0.1:$fake_port  (accepts only requests signed with $ACCESS_KEY)"

# Port 0: the gateway picks a free port and says which. Backoffs of tens of milliseconds keep
# the throttle step short; they are real backoffs all the same.
cat >"$work/gateway.json" <<EOF
{
  "listen": "127.0.0.1:0",
  "default_region": "us-east-1",
  "regions": { "us-east-1": { "endpoint": "http://127.0.0.1:$fake_port" } },
  "retry": { "max_attempts": 3, "base_delay_ms": 50, "max_delay_ms": 400 },
  "shutdown_grace_s": 5,
  "log_level": "info"
}
EOF
"$gateway" --check-config "$work/gateway.json" >/dev/null

# Only the credentials we mean to give it: none of the caller's AWS_* (a session token, a
# profile, a Bedrock API key) and none of the BEDROCK_GATEWAY_* overrides may change what it does.
(
  while read -r name; do unset "$name"; done < <(compgen -e | grep -E '^(AWS_|BEDROCK_GATEWAY_)')
  # JSON lines whatever the default: demo.py reads the request lines back.
  AWS_ACCESS_KEY_ID="$ACCESS_KEY" AWS_SECRET_ACCESS_KEY="$SECRET_KEY" \
    AWS_EC2_METADATA_DISABLED=true HOME="$work" BEDROCK_GATEWAY_LOG_FORMAT=json \
    exec "$gateway" --config "$work/gateway.json"
) >"$work/gateway.log" 2>&1 &
gateway_pid=$!
gateway_port="$(wait_listening bedrock-gateway "$gateway_pid" "$work/gateway.log")"
echo "gateway       http://127.0.0.1:$gateway_port  (signs with the same keys, from its environment)"
echo "gateway config:"
sed 's/^/    /' "$work/gateway.json"
echo "gateway startup log:"
sed -n '1,/listening on/s/^/    /p' "$work/gateway.log"

# The client sends unsigned requests to an explicit endpoint; nothing of the caller's AWS setup
# (a profile that does not exist here, an endpoint override) may get in the way, except the
# service models' AWS_DATA_PATH. In the background and waited for, so a SIGTERM to this script
# is handled at once (bash runs traps only between foreground commands).
(
  while read -r name; do unset "$name"; done < <(compgen -e | grep '^AWS_' | grep -vx AWS_DATA_PATH)
  AWS_CONFIG_FILE="$work/no-config" AWS_SHARED_CREDENTIALS_FILE="$work/no-credentials" \
    AWS_EC2_METADATA_DISABLED=true \
    exec "$python" scripts/demo.py --gateway "http://127.0.0.1:$gateway_port" \
    --gateway-log "$work/gateway.log" --fake-log "$work/fake.log"
) &
client_pid=$!
client_status=0
wait "$client_pid" || client_status=$?
client_pid=""

# A clean stop is part of the demo: SIGTERM drains and exits 0 (sanitizer builds exit non-zero
# on a finding, so this also catches those).
stop_process "$gateway_pid"
gateway_pid=""
gateway_status="$stopped_status"
echo
if [ "$gateway_status" = 0 ]; then
  echo "gateway stopped cleanly on SIGTERM (exit 0)"
else
  echo "gateway exited with status $gateway_status on SIGTERM"
fi

if [ "$client_status" = 0 ] && [ "$gateway_status" = 0 ]; then
  echo "DEMO OK"
  exit 0
fi
# Everything both processes said, to see why.
echo "--- gateway output:"
cat "$work/gateway.log"
echo "--- fake Bedrock output:"
cat "$work/fake.log"
echo "DEMO FAILED"
exit 1
