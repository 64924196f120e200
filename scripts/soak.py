#!/usr/bin/env python3
"""Soak: N minutes of mixed load through the real gateway, checking that it neither loses
answers nor grows (issue 10).

Starts the bundled fake Bedrock (tests/fakes, it checks every SigV4 signature) and the gateway
(build/bedrock-gateway) on 127.0.0.1, then runs a bounded number of concurrent clients for the
given time (and at most --max-requests requests):

  invoke   InvokeModel                                   ~30 %
  converse Converse                                      ~25 %
  cstream  ConverseStream                                ~20 %
  istream  InvokeModelWithResponseStream                 ~14 %
  throttle a model the fake always throttles (429)       ~10 %
  reset    a stream the fake cuts mid-body (fake-stream-cut) ~1 %

Every response is checked whole: the status, a body as long as its Content-Length, JSON that
parses; event streams decoded frame by frame (both CRCs) and ending with their final event;
throttles the gateway's 429 ThrottlingException with Retry-After; cut streams a 200 whose body
ends early after the frames the fake sent. The gateway's RSS and open fds are sampled every
--sample-seconds. At the end the figures are printed (requests by kind and status, p50/p99
latency, RSS and fd min/max), the gateway's log must hold one `request` line per request, and
the log (all of it, stdout and stderr) must contain neither the gateway's secret key, nor the
caller key every request presents, nor the marker every request body carries.

Exit status: 0 when every response was complete and as expected and RSS / fds stayed within
their bounds; 1 otherwise (the reasons are printed).

    python3 scripts/soak.py --minutes 5
    python3 scripts/soak.py --seconds 20 --concurrency 8
"""

import argparse
import base64
import hashlib
import http.client
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The e2e helpers read streams and count fds the same way for the soak as for the tests.
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
import bgw_e2e  # noqa: E402
GATEWAY_KEY = "AKIDSOAKGATEWAY"
GATEWAY_SECRET = "soak/gateway+secret/EXAMPLEKEY0123456789ab"
CALLER_KEY = "soak-caller-key-5d41402abc4b2a76b9719d911017c592"
MARKER = "SOAK-BODY-MARKER-9b1e7c"
MAX_IDLE = 8
STARTUP_TIMEOUT_S = 30.0
CLIENT_TIMEOUT_S = 30.0
LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")

KINDS = [  # (kind, weight, model id, operation)
    ("invoke", 30, "anthropic.claude-3-haiku-20240307-v1:0", "invoke"),
    ("converse", 25, "amazon.nova-lite-v1:0", "converse"),
    ("cstream", 20, "amazon.nova-lite-v1:0", "converse-stream"),
    ("istream", 14, "anthropic.claude-3-haiku-20240307-v1:0", "invoke-with-response-stream"),
    ("throttle", 10, "fake-error-429-ThrottlingException", "converse"),
    ("reset", 1, "fake-stream-cut", "converse-stream"),
]


# ---- processes ---------------------------------------------------------------------------------

class Child:
    """A child whose stdout goes, line by line, to a file (never kept in memory: a soak writes
    hundreds of thousands of lines), counting lines that contain `count_marker`."""

    def __init__(self, name, argv, env, logdir, count_marker=None):
        self.name = name
        self.out_path = os.path.join(logdir, name + ".stdout")
        self.err_path = os.path.join(logdir, name + ".stderr")
        self._err = open(self.err_path, "wb")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=self._err, env=env)
        self.port = None
        self.counted = 0
        self._marker = count_marker
        self._cond = threading.Condition()
        self._eof = False
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self):
        with open(self.out_path, "wb") as out:
            for raw in iter(self.proc.stdout.readline, b""):
                out.write(raw)
                line = raw.decode("utf-8", "replace")
                with self._cond:
                    m = LISTENING.search(line) if self.port is None else None
                    if m:
                        self.port = int(m.group(1))
                        self._cond.notify_all()
                    if self._marker and self._marker in line:
                        self.counted += 1
                        self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def wait_listening(self):
        with self._cond:
            if not self._cond.wait_for(lambda: self.port is not None or self._eof,
                                       STARTUP_TIMEOUT_S) or self.port is None:
                raise SystemExit("%s did not start listening (exit %r); see %s"
                                 % (self.name, self.proc.poll(), self.err_path))
        return self.port

    def wait_counted(self, n, timeout):
        with self._cond:
            self._cond.wait_for(lambda: self.counted >= n or self._eof, timeout)
            return self.counted

    def stop(self, timeout=15.0):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self._thread.join(timeout)
                self._err.close()
                return "hung"
        self._thread.join(timeout)
        self._err.close()
        return self.proc.returncode


def settle(pid, port, fake_port, other_bound):
    """Polls (with a deadline) until the gateway holds no client connection, at most MAX_IDLE
    pooled upstream connections and at most `other_bound` other fds; the last census."""
    deadline = time.monotonic() + 15
    while True:
        census = bgw_e2e.fd_census(pid, port, fake_port)
        clients, pool, other = census
        if (clients == 0 and pool <= MAX_IDLE and other <= other_bound) or \
                time.monotonic() > deadline:
            return census
        time.sleep(0.05)  # polling /proc with the deadline above


def proc_figures(pid):
    fds = len(os.listdir("/proc/%d/fd" % pid))
    with open("/proc/%d/status" % pid, encoding="ascii") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return rss, fds


# ---- checking one response ---------------------------------------------------------------------

def read_whole(resp):
    """The body and whether it arrived whole (a cut chunked or Content-Length body: False)."""
    body = b""
    try:
        while True:
            piece = resp.read(65536)
            if not piece:
                break
            body += piece
    except (http.client.IncompleteRead, ConnectionError) as e:
        return body + (getattr(e, "partial", b"") or b""), False
    declared = resp.getheader("Content-Length")
    return body, declared is None or int(declared) == len(body)


def check(kind, status, headers, body, whole):
    """None when the response is what `kind` must get, else why not."""
    if kind == "throttle":
        if status != 429 or not whole:
            return "status %s whole=%s" % (status, whole)
        if headers.get("x-amzn-errortype") != "ThrottlingException" or \
                not headers.get("retry-after"):
            return "429 without ThrottlingException / Retry-After: %r" % headers
        json.loads(body)
        return None
    if kind == "reset":
        if status != 200 or whole:
            return "a cut stream arrived as status %s whole=%s" % (status, whole)
        frames, _ = bgw_e2e.decode_frames(body)
        return None if len(frames) == 2 else "%d frames before the cut, not 2" % len(frames)
    if status != 200 or not whole:
        return "status %s whole=%s body %r" % (status, whole, body[:200])
    if kind in ("invoke", "converse"):
        json.loads(body)
        return None
    frames, rest = bgw_e2e.decode_frames(body)
    if rest or not frames:
        return "stream leaves %d bytes / %d frames" % (len(rest), len(frames))
    last, payload = frames[-1]["headers"], frames[-1]["payload"]
    if last.get(":message-type") != "event":
        return "stream ends with %r" % last
    if kind == "cstream":
        return None if last.get(":event-type") == "metadata" else "last event %r" % last
    inner = json.loads(base64.b64decode(json.loads(payload)["bytes"]))
    return None if inner.get("type") == "message_stop" else "last chunk %r" % inner


# ---- load --------------------------------------------------------------------------------------

class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.by_kind = {}     # kind -> {status -> count}
        self.latency = {}     # kind -> [seconds]
        self.failures = []    # (kind, why)
        self.sent = 0

    def record(self, kind, status, seconds, why):
        with self.lock:
            self.by_kind.setdefault(kind, {}).setdefault(status, 0)
            self.by_kind[kind][status] += 1
            self.latency.setdefault(kind, []).append(seconds)
            if why:
                self.failures.append((kind, why))


def worker(port, deadline, budget, stats, seed):
    rng = random.Random(seed)
    weights = [w for _, w, _, _ in KINDS]
    conn = None
    while time.monotonic() < deadline:
        with stats.lock:
            if stats.sent >= budget:
                break
            stats.sent += 1
            n = stats.sent
        kind, _, model, op = rng.choices(KINDS, weights)[0]
        text = "%s request %d %s" % (MARKER, n, "x" * rng.randrange(0, 400))
        if op == "invoke":
            body = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 64,
                    "messages": [{"role": "user", "content": text}]}
        else:
            body = {"messages": [{"role": "user", "content": [{"text": text}]}]}
        if conn is None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=CLIENT_TIMEOUT_S)
        started = time.monotonic()
        status, why = None, None
        try:
            conn.request("POST", "/model/%s/%s" % (model, op), body=json.dumps(body).encode(),
                         headers={"Content-Type": "application/json", "x-api-key": CALLER_KEY})
            resp = conn.getresponse()
            status = resp.status
            data, whole = read_whole(resp)
            headers = {k.lower(): v for k, v in resp.getheaders()}
            why = check(kind, status, headers, data, whole)
            if not whole or resp.will_close:
                conn.close()
                conn = None
        except (OSError, http.client.HTTPException, ValueError) as e:
            why = "%s: %r" % (type(e).__name__, e)
            if conn is not None:
                conn.close()
            conn = None
        stats.record(kind, status, time.monotonic() - started, why)
    if conn is not None:
        conn.close()


def percentile(values, p):
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100.0 * len(values)))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=None)
    ap.add_argument("--seconds", type=float, default=None)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--max-requests", type=int, default=2_000_000)
    ap.add_argument("--sample-seconds", type=float, default=2.0)
    ap.add_argument("--rss-growth-kib", type=int, default=32 * 1024,
                    help="allowed RSS growth from the first sample after warm-up to the largest")
    ap.add_argument("--gateway", default=os.environ.get(
        "BGW_GATEWAY_BINARY", os.path.join(ROOT, "build", "bedrock-gateway")))
    ap.add_argument("--fake", default=os.environ.get(
        "BGW_FAKE_BEDROCK", os.path.join(ROOT, "build", "tests", "fake_bedrock")))
    ap.add_argument("--keep-logs", action="store_true")
    args = ap.parse_args()
    duration = (args.seconds if args.seconds is not None else
                60.0 * (args.minutes if args.minutes is not None else 1.0))

    workdir = tempfile.mkdtemp(prefix="bgw-soak-")
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    clean_env.update({"HOME": workdir, "AWS_EC2_METADATA_DISABLED": "true"})
    failures = []
    fake = gw = None
    try:
        fake = Child("fake_bedrock", [args.fake, "--access-key", GATEWAY_KEY, "--secret-key",
                                      GATEWAY_SECRET, "--regions", "us-east-1"],
                     clean_env, workdir)
        fake_port = fake.wait_listening()
        config = {
            "listen": "127.0.0.1:0",
            "default_region": "us-east-1",
            "regions": {"us-east-1": {"endpoint": "http://127.0.0.1:%d" % fake_port}},
            "upstream": {"connect_timeout_ms": 2000, "response_timeout_ms": 10000,
                         "stream_idle_timeout_ms": 10000, "max_idle_per_host": MAX_IDLE},
            "limits": {"client_idle_timeout_ms": 10000},
            "retry": {"max_attempts": 2, "base_delay_ms": 5, "max_delay_ms": 50},
            "caller_keys": {"soak": {"sha256": hashlib.sha256(CALLER_KEY.encode()).hexdigest()}},
            "log_level": "info",
        }
        config_path = os.path.join(workdir, "gateway.json")
        with open(config_path, "w", encoding="utf-8") as f:
            json.dump(config, f)
        env = dict(clean_env, AWS_ACCESS_KEY_ID=GATEWAY_KEY, AWS_SECRET_ACCESS_KEY=GATEWAY_SECRET)
        gw = Child("gateway", [args.gateway, "--config", config_path], env, workdir,
                   count_marker='"event":"request"')
        port = gw.wait_listening()
        pid = gw.proc.pid
        # A few requests first: some fds (and memory) are made on first use.
        for kind, _, model, op in KINDS:
            warm = http.client.HTTPConnection("127.0.0.1", port, timeout=CLIENT_TIMEOUT_S)
            warm.request("POST", "/model/%s/%s" % (model, op), body=b'{"messages":[]}',
                         headers={"Content-Type": "application/json", "x-api-key": CALLER_KEY})
            read_whole(warm.getresponse())
            warm.close()
        idle_census = settle(pid, port, fake_port, 1 << 30)
        idle_rss, idle_fds = proc_figures(pid)

        stats = Stats()
        samples = []  # (t, rss KiB, fds)
        started = time.monotonic()
        deadline = started + duration
        stop_sampling = threading.Event()

        def sampler():
            while True:
                samples.append((time.monotonic() - started,) + proc_figures(pid))
                if stop_sampling.wait(args.sample_seconds):
                    return

        sampling = threading.Thread(target=sampler, daemon=True)
        sampling.start()
        workers = [threading.Thread(target=worker, args=(port, deadline, args.max_requests,
                                                         stats, i), daemon=True)
                   for i in range(args.concurrency)]
        for t in workers:
            t.start()
        for t in workers:
            t.join(duration + 2 * CLIENT_TIMEOUT_S)
            if t.is_alive():
                failures.append("a client thread is stuck (a response never finished)")
        elapsed = time.monotonic() - started
        stop_sampling.set()
        sampling.join(10)
        samples.append((time.monotonic() - started,) + proc_figures(pid))

        # Once the clients are gone the gateway's fds come back: listener, logs, the pool.
        end_census = settle(pid, port, fake_port, idle_census[2])
        end_rss, end_fds = proc_figures(pid)

        total = sum(sum(v.values()) for v in stats.by_kind.values())
        logged = gw.wait_counted(total + len(KINDS), 15) - len(KINDS)  # less the warm-up

        # ---- figures ----
        print("soak: %.1f s, %d requests (%.0f/s), concurrency %d"
              % (elapsed, total, total / max(elapsed, 1e-9), args.concurrency))
        print("%-9s %8s  %-28s %9s %9s" % ("kind", "count", "statuses", "p50 ms", "p99 ms"))
        for kind, _, _, _ in KINDS:
            counts = stats.by_kind.get(kind, {})
            lat = stats.latency.get(kind, [])
            print("%-9s %8d  %-28s %9.2f %9.2f" % (
                kind, sum(counts.values()),
                " ".join("%s:%d" % (s, c) for s, c in sorted(counts.items(), key=str)),
                percentile(lat, 50) * 1000, percentile(lat, 99) * 1000))
        all_lat = [x for v in stats.latency.values() for x in v]
        print("all       %8d  %-28s %9.2f %9.2f" % (total, "", percentile(all_lat, 50) * 1000,
                                                    percentile(all_lat, 99) * 1000))
        warm = [s for s in samples if s[0] >= min(10.0, duration / 4)] or samples
        rss = [s[1] for s in samples]
        fds = [s[2] for s in samples]
        print("RSS KiB: idle %d, min %d, max %d, after warm-up %d, end %d"
              % (idle_rss, min(rss), max(rss), warm[0][1], end_rss))
        print("fds: idle %d, min %d, max %d, end %d (%d samples every %.1f s); at the end %d "
              "client connections, %d pooled upstream, %d other (idle: %d other)"
              % (idle_fds, min(fds), max(fds), end_fds, len(samples), args.sample_seconds,
                 end_census[0], end_census[1], end_census[2], idle_census[2]))
        print("gateway request log lines: %d" % logged)

        # ---- verdicts ----
        if stats.failures:
            failures.append("%d response(s) not as expected, e.g. %s"
                            % (len(stats.failures), stats.failures[:5]))
        for kind, _, _, _ in KINDS:
            if kind != "reset" and not stats.by_kind.get(kind):
                failures.append("no %s request ran" % kind)
        if logged != total:
            failures.append("the gateway logged %d request lines for %d requests"
                            % (logged, total))
        growth = max(s[1] for s in warm) - warm[0][1]
        if growth > args.rss_growth_kib:
            failures.append("RSS grew by %d KiB after warm-up (bound %d)"
                            % (growth, args.rss_growth_kib))
        fd_bound = idle_fds + 2 * args.concurrency + MAX_IDLE + 8
        if max(fds) > fd_bound:
            failures.append("fds reached %d (bound %d)" % (max(fds), fd_bound))
        if end_census[0] or end_census[1] > MAX_IDLE or end_census[2] > idle_census[2]:
            failures.append("fds did not come back: %d client connections, %d pooled (at most "
                            "%d), %d other (%d when idle)" % (end_census + (MAX_IDLE,) +
                                                               (idle_census[2],)))
        if not gw.proc.poll() is None:
            failures.append("the gateway exited during the soak (%r)" % gw.proc.returncode)
    finally:
        codes = {}
        for child in (gw, fake):
            if child is not None:
                codes[child.name] = child.stop()
    if codes.get("gateway") not in (0, -15):
        failures.append("the gateway stopped with %r" % codes.get("gateway"))

    # ---- nothing secret in the log ----
    for path in (gw.out_path, gw.err_path):
        with open(path, "rb") as f:
            data = f.read()
        for secret in (GATEWAY_SECRET, CALLER_KEY, MARKER):
            if secret.encode() in data:
                failures.append("%s contains %r" % (os.path.basename(path), secret))
        for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
            if marker.encode() in data:
                failures.append("%s holds a sanitizer report" % os.path.basename(path))
    print("log scan: gateway secret key, caller key, body marker: %s"
          % ("found!" if any("contains" in f for f in failures) else "none present"))

    if args.keep_logs:
        print("logs kept in", workdir)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    if failures:
        print("SOAK FAILED:")
        for f in failures:
            print("  -", f)
        return 1
    print("SOAK OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
