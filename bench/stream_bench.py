#!/usr/bin/python3
"""Streaming benchmark (issue 3): prints figures, never asserts on them.

1. Time to first event (TTFE) of ConverseStream, through the gateway vs straight to the upstream,
   measured in the same run with the same boto3 client code (the direct client signs itself).
   The upstream is tests/fakes' fake_bedrock on loopback, so the difference is the gateway's own
   cost: accept, parse, re-sign, connect/pool, relay of the first frame.
2. Gateway RSS with N concurrent slow streams (default 1000) open at once, against its idle RSS
   in the same run: the per-stream memory the relay holds.

Usage: bench/stream_bench.py [--build build] [--ttfe-requests 200] [--streams 1000]
Needs a built tree (scripts/build.sh) and Debian's python3-boto3.
"""

import argparse
import json
import os
import resource
import socket
import statistics
import struct
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))

import bgw_e2e  # noqa: E402

KEY = "AKIDBENCHGATEWAY"
SECRET = "bench/gateway+secret/EXAMPLEKEY0123456789"
BODY = json.dumps({"messages": [{"role": "user", "content": [{"text": "one two three"}]}]})


def rss_kib(pid):
    with open("/proc/%d/status" % pid, encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def boto_client(endpoint, signed):
    import boto3
    import botocore
    from botocore.config import Config

    config = Config(retries={"total_max_attempts": 1, "mode": "standard"},
                    signature_version=None if signed else botocore.UNSIGNED)
    session = boto3.session.Session(aws_access_key_id=KEY if signed else None,
                                    aws_secret_access_key=SECRET if signed else None,
                                    region_name="us-east-1")
    return session.client("bedrock-runtime", endpoint_url=endpoint, config=config)


def ttfe_ms(client, n):
    """Milliseconds from the call to the first event, n times (after 10 warm-up calls)."""
    body = json.loads(BODY)
    out = []
    for i in range(n + 10):
        start = time.perf_counter()
        resp = client.converse_stream(modelId="amazon.nova-lite-v1:0", **body)
        stream = iter(resp["stream"])
        next(stream)
        first = time.perf_counter()
        for _ in stream:
            pass
        if i >= 10:
            out.append((first - start) * 1000)
    return out


def open_slow_streams(port, n, pause_ms):
    """n raw connections, each with a ConverseStream whose events come every pause_ms; returns
    the sockets once every one has received its response head and first frame."""
    socks = []
    body = BODY.encode()
    head = ("POST /model/fake-delay-%d/converse-stream HTTP/1.1\r\nHost: bench\r\n"
            "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
            % (pause_ms, len(body))).encode()
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=60)
        s.sendall(head + body)
        socks.append(s)
    for s in socks:
        got = b""
        while b"\r\n\r\n" not in got:
            chunk = s.recv(4096)
            if not chunk:
                raise RuntimeError("gateway closed a stream early: %r" % got[:200])
            got += chunk
        # First chunk: "<hex size>\r\n" then the first frame (prelude gives its length).
        rest = got.split(b"\r\n\r\n", 1)[1]
        while rest.count(b"\r\n") < 1 or len(rest) < rest.index(b"\r\n") + 2 + 12:
            rest += s.recv(4096)
        size_line, frame = rest.split(b"\r\n", 1)
        total = struct.unpack(">I", frame[:4])[0]
        while len(frame) < total:
            frame += s.recv(4096)
    return socks


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--ttfe-requests", type=int, default=200)
    ap.add_argument("--streams", type=int, default=1000)
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * args.streams + 256)), hard))
    os.environ["AWS_DATA_PATH"] = os.environ.get(
        "AWS_DATA_PATH", os.path.join(ROOT, "tests", "reference", "botocore-models"))
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"

    work = tempfile.mkdtemp(prefix="bgw-bench-")
    fake = bgw_e2e.FakeBedrock(os.path.join(args.build, "tests", "fake_bedrock"), KEY, SECRET,
                               ["us-east-1"])
    gw = bgw_e2e.Gateway(os.path.join(args.build, "bedrock-gateway"),
                         {"listen": "127.0.0.1:0", "default_region": "us-east-1",
                          "regions": {"us-east-1": {"endpoint": fake.endpoint}},
                          "log_level": "info"},
                         work, "bench-gateway", KEY, SECRET)
    try:
        direct = ttfe_ms(boto_client(fake.endpoint, signed=True), args.ttfe_requests)
        via = ttfe_ms(boto_client(gw.url, signed=False), args.ttfe_requests)
        p50d, p50g = statistics.median(direct), statistics.median(via)
        p99d = sorted(direct)[int(len(direct) * 0.99) - 1]
        p99g = sorted(via)[int(len(via) * 0.99) - 1]
        print("time to first event, ConverseStream, %d requests each (boto3, loopback):"
              % args.ttfe_requests)
        print("  direct to upstream : p50 %.2f ms  p99 %.2f ms" % (p50d, p99d))
        print("  through gateway    : p50 %.2f ms  p99 %.2f ms" % (p50g, p99g))
        print("  ratio gateway/direct p50 %.2f  (+%.2f ms)" % (p50g / p50d, p50g - p50d))

        idle = rss_kib(gw.proc.pid)
        t0 = time.perf_counter()
        socks = open_slow_streams(gw.port, args.streams, pause_ms=3000)
        opened = time.perf_counter() - t0
        loaded = rss_kib(gw.proc.pid)
        print("%d concurrent slow streams (an event every 3 s), all with a first event after "
              "%.1f s:" % (args.streams, opened))
        print("  gateway RSS idle %.1f MiB, loaded %.1f MiB, %.1f KiB per stream"
              % (idle / 1024, loaded / 1024, (loaded - idle) / args.streams))
        for s in socks:
            s.close()
    finally:
        gw.stop()
        fake.stop()


if __name__ == "__main__":
    main()
