"""Fault injection (issue 10): the upstream misbehaves, or the client goes away, at every stage.

tests/e2e/fault_upstream.py plays an upstream that resets before or after its head, sends bytes
that are not HTTP, stalls, stops half-way through a body, and cuts or corrupts event streams
(real frames, real CRCs). For each case the client must get one well-formed answer (the
gateway's 502 / 504, or an event stream ending in an error frame) or, once the response head is
out, a clean close that the client can see is a truncation; never a hang. After each case the
gateway keeps serving, and its open file descriptors come back to the baseline (the pool keeps
at most upstream.max_idle_per_host = 2 idle upstream connections per gateway thread, filled
before the baseline is taken). Upstream TLS that fails verification is refused, and nothing is ever sent in plaintext
instead. Nothing secret (the gateway's keys, a marker in every request body) reaches the log.

Every wait has a deadline and polls a socket, a log line or /proc; nothing sleeps to
synchronise.
"""

import http.client
import json
import os
import socket
import ssl
import struct
import subprocess
import threading
import time
import unittest

import bgw_e2e
from fault_upstream import FaultUpstream

GATEWAY_KEY = "AKIDGATEWAYFAULTS"
GATEWAY_SECRET = "gateway/faults+secret/EXAMPLEKEY0123456789"
MARKER = "BODY-MARKER-7f3c1e-never-logged"
BODY = bgw_e2e.converse_body(MARKER)
JSON = bgw_e2e.JSON_HEADERS
MAX_ATTEMPTS = 2
MAX_IDLE = 2
THREADS = 2  # the gateway's; each thread pools its own upstream connections
MAX_POOLED = MAX_IDLE * THREADS
RESPONSE_TIMEOUT_MS = 800
CONNECT_TIMEOUT_MS = 1000
STREAM_IDLE_TIMEOUT_MS = 800
CLIENT_TIMEOUT_S = 15.0  # a client read longer than this is a hang
SETTLE_S = 15.0          # how long fds may take to come back after a case


# ---- event-stream reading (the client's side) --------------------------------------------------

class Outcome:
    """What a client saw: the head (if any), the body bytes, and whether the body was whole."""

    def __init__(self, status=None, headers=None, body=b"", complete=False, error=None):
        self.status = status
        self.headers = headers or {}
        self.body = body
        self.complete = complete
        self.error = error

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "Outcome(%r, complete=%r, error=%r, %r, %r)" % (
            self.status, self.complete, self.error, self.headers, self.body[:300])


def read_response(conn):
    """Reads one whole response from an http.client connection. A body cut short is reported
    (complete=False), a hang fails the test (the socket timeout is CLIENT_TIMEOUT_S)."""
    try:
        resp = conn.getresponse()
    except socket.timeout:
        raise AssertionError("no response head within %.0f s: the gateway hangs" % CLIENT_TIMEOUT_S)
    except (http.client.RemoteDisconnected, ConnectionError) as e:
        return Outcome(error=e)
    headers = {k.lower(): v for k, v in resp.getheaders()}
    body = b""
    try:
        # In pieces, so that what arrived before a cut is kept (a whole-body read() of a cut
        # chunked body reports no partial bytes).
        while True:
            piece = resp.read(4096)
            if not piece:
                break
            body += piece
        declared = headers.get("content-length")
        complete = declared is None or int(declared) == len(body)
        return Outcome(resp.status, headers, body, complete=complete,
                       error=None if complete else "body shorter than Content-Length")
    except socket.timeout:
        raise AssertionError("the body stalled for %.0f s: the gateway hangs (got %r)"
                             % (CLIENT_TIMEOUT_S, body[:200]))
    except (http.client.IncompleteRead, ConnectionError) as e:
        partial = getattr(e, "partial", b"") or b""
        return Outcome(resp.status, headers, body + partial, complete=False, error=e)


def make_tls_material(workdir):
    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=workdir, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, timeout=60)

    for ca in ("ca", "other-ca"):
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
                "/CN=faults-%s" % ca, "-keyout", ca + ".key", "-out", ca + ".pem")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout",
            "server.key", "-out", "server.csr")
    with open(os.path.join(workdir, "server.ext"), "w", encoding="ascii") as f:
        f.write("subjectAltName=DNS:localhost\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", "server.ext", "-out", "server.pem")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(os.path.join(workdir, "server.pem"), os.path.join(workdir, "server.key"))
    return ctx


class FaultsEndToEnd(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        binary = bgw_e2e.required_env("BGW_GATEWAY_BINARY")
        cls.workdir = bgw_e2e.class_workdir(cls, "bgw-faults-")
        cls.up = FaultUpstream()
        cls.addClassCleanup(cls.up.stop)
        cls.refused = bgw_e2e.closed_port()
        cls.addClassCleanup(cls.refused.close)
        tls_ctx = make_tls_material(cls.workdir)
        cls.tls_up = FaultUpstream(tls_ctx)
        cls.addClassCleanup(cls.tls_up.stop)
        # Accepts TCP connections (the kernel does, from its backlog) and never says a word:
        # a TLS handshake that stalls.
        cls.silent = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        cls.silent.bind(("127.0.0.1", 0))
        cls.silent.listen(64)
        cls.addClassCleanup(cls.silent.close)
        regions = {
            "us-east-1": {"endpoint": cls.up.endpoint},
            # Nobody listens there: connection refused.
            "us-west-2": {"endpoint": "http://127.0.0.1:%d" % cls.refused.getsockname()[1]},
            # A TLS endpoint whose server speaks only plaintext HTTP: no downgrade allowed.
            "eu-west-1": {"endpoint": "https://localhost:%d" % cls.up.port},
            # A TLS server whose certificate names localhost, reached as 127.0.0.1.
            "eu-central-1": {"endpoint": "https://127.0.0.1:%d" % cls.tls_up.port},
            # The same server under its own name, but the gateway trusts another CA (below).
            "ap-northeast-1": {"endpoint": "https://localhost:%d" % cls.tls_up.port},
            "ap-southeast-2": {"endpoint": "https://127.0.0.1:%d" % cls.silent.getsockname()[1]},
        }
        cls.gw = bgw_e2e.Gateway(binary, bgw_e2e.base_config(
            regions,
            upstream={"connect_timeout_ms": CONNECT_TIMEOUT_MS,
                      "response_timeout_ms": RESPONSE_TIMEOUT_MS,
                      "stream_idle_timeout_ms": STREAM_IDLE_TIMEOUT_MS,
                      "max_idle_per_host": MAX_IDLE,
                      "ca_file": os.path.join(cls.workdir, "other-ca.pem")},
            limits={"client_idle_timeout_ms": 1500, "header_timeout_ms": 1500},
            threads=THREADS,
            retry={"max_attempts": MAX_ATTEMPTS, "base_delay_ms": 10, "max_delay_ms": 50},
        ), cls.workdir, "faults", GATEWAY_KEY, GATEWAY_SECRET)
        cls.addClassCleanup(cls.stop_and_scan)
        cls.warm_up()
        # Listener, log pipes, epoll, ...: what the gateway holds besides client connections
        # and its pool of idle upstream connections (at most MAX_POOLED). Taken after the
        # warm-up, since some of it is made on first use.
        deadline = time.monotonic() + SETTLE_S
        while cls.census()[0] and time.monotonic() < deadline:
            time.sleep(0.02)  # polling /proc, with the deadline above
        cls.baseline_other = cls.census()[2]

    @classmethod
    def stop_and_scan(cls):
        bgw_e2e.stop_checked(cls.gw)
        out = cls.gw.output()
        for secret in (GATEWAY_SECRET, MARKER):
            if secret in out:
                raise AssertionError("the gateway logged %r:\n%s" % (secret, out))

    # ---- plumbing ------------------------------------------------------------------------

    @classmethod
    def fds(cls):
        return len(os.listdir("/proc/%d/fd" % cls.gw.proc.pid))

    @classmethod
    def census(cls):
        return bgw_e2e.fd_census(cls.gw.proc.pid, cls.gw.port, cls.up.port)

    @classmethod
    def rss_kib(cls):
        with open("/proc/%d/status" % cls.gw.proc.pid, encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS")

    @classmethod
    def warm_up(cls):
        """Fills the upstream pool (more concurrent requests than it keeps), so that the cases
        run with pooled connections as well as fresh ones."""
        statuses = []

        def ok():
            statuses.append(bgw_e2e.http_request(cls.gw.port, "POST", "/model/fault-ok/converse",
                                                 BODY, JSON, timeout=CLIENT_TIMEOUT_S).status)

        threads = [threading.Thread(target=ok) for _ in range(MAX_POOLED + 2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(CLIENT_TIMEOUT_S)
        if statuses != [200] * (MAX_POOLED + 2):
            raise AssertionError("warm-up failed: %r\n%s" % (statuses, cls.gw.output()))

    def request(self, model, operation="converse", body=BODY, headers=None, conn=None):
        own = conn is None
        if own:
            conn = http.client.HTTPConnection("127.0.0.1", self.gw.port, timeout=CLIENT_TIMEOUT_S)
        try:
            conn.request("POST", "/model/%s/%s" % (model, operation), body=body,
                         headers=dict(JSON, **(headers or {})))
            return read_response(conn)
        finally:
            if own:
                conn.close()

    def assert_still_serving(self, conn=None):
        out = self.request("fault-ok", conn=conn)
        self.assertEqual(out.status, 200, out)
        self.assertTrue(out.complete, out)
        self.assertEqual(out.json()["output"]["message"]["content"][0]["text"],
                         "fault upstream ok")

    def assert_fds_settle(self, what):
        """The gateway's fd count comes back to the baseline (no clients; a pool of at most
        MAX_POOLED idle upstream connections)."""
        deadline = time.monotonic() + SETTLE_S
        while True:
            clients, pool, other = self.census()
            if clients == 0 and pool <= MAX_POOLED and other <= self.baseline_other:
                return
            if time.monotonic() > deadline:
                self.fail("%s: the gateway holds %d client connections (0 expected), %d pooled "
                          "(at most %d) and %d other fds (baseline %d)"
                          % (what, clients, pool, MAX_POOLED, other, self.baseline_other))
            time.sleep(0.02)  # polling /proc, with the deadline above

    def assert_gateway_error(self, out, status, code):
        self.assertEqual(out.status, status, out)
        self.assertTrue(out.complete, out)
        self.assertEqual(out.headers.get("x-amzn-errortype"), code, out)
        self.assertIn("message", out.json())

    def log_for_model(self, model, after):
        """The first request log line for `model` after the first `after` lines."""
        def find(_lines):
            seen = [e for e in self.gw.request_logs()[after:] if e.get("model") == model]
            return seen[0] if seen else None

        entry = self.gw.stdout.wait_for(find, 10.0)
        self.assertIsNotNone(entry, "no log line for %s\n%s" % (model, self.gw.output()))
        return entry

    def tearDown(self):
        self.assertTrue(self.gw.alive(), "the gateway died\n" + self.gw.output())
        self.assertEqual(self.gw.sanitizer_reports(), [], self.gw.output())
        self.assert_still_serving()
        self.assert_fds_settle(self.id())

    # ---- upstream faults before the response head: one gateway answer ---------------------

    def test_connection_refused_is_502(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.gw.port, timeout=CLIENT_TIMEOUT_S)
        self.addCleanup(conn.close)
        out = self.request("m", headers={"X-Gateway-Region": "us-west-2"}, conn=conn)
        self.assert_gateway_error(out, 502, "BadGatewayException")
        self.assertIn("Connection refused", out.json()["message"])
        self.assert_still_serving(conn)  # the client connection stays usable

    def test_reset_before_headers_is_retried_then_502(self):
        before = len(self.up.requests())
        out = self.request("fault-reset-before-headers")
        self.assert_gateway_error(out, 502, "BadGatewayException")
        self.assertIn("reset", out.json()["message"].lower())
        tries = len([r for r in self.up.requests()[before:]
                     if r.model == "fault-reset-before-headers"])
        # max_attempts, plus at most one free resend when the first went out on a pooled
        # connection (a reset there looks like a keep-alive connection the upstream closed).
        self.assertGreaterEqual(tries, MAX_ATTEMPTS)
        self.assertLessEqual(tries, MAX_ATTEMPTS + 1)

    def test_garbage_http_is_502(self):
        out = self.request("fault-garbage")
        self.assert_gateway_error(out, 502, "BadGatewayException")

    def test_oversized_upstream_head_is_502(self):
        out = self.request("fault-huge-head")
        self.assert_gateway_error(out, 502, "BadGatewayException")

    def test_stall_before_headers_is_504_after_the_response_timeout(self):
        before = self.up.peer_closes()
        started = time.monotonic()
        out = self.request("fault-stall")
        elapsed = time.monotonic() - started
        self.assert_gateway_error(out, 504, "GatewayTimeoutException")
        self.assertGreaterEqual(elapsed, RESPONSE_TIMEOUT_MS / 1000.0 * 0.9)
        self.assertLess(elapsed, MAX_ATTEMPTS * (RESPONSE_TIMEOUT_MS / 1000.0) + 5)
        # Each timed-out attempt closed its upstream connection.
        self.assertTrue(self.up.wait(lambda u: u.peer_closes() >= before + MAX_ATTEMPTS, 10),
                        "the gateway kept a timed-out upstream connection open")

    def test_upstream_error_passes_through_with_its_type(self):
        out = self.request("fault-error-400-ValidationException")
        self.assert_gateway_error(out, 400, "ValidationException:http://internal.amazon.com/coral/")

    # ---- faults after the response head: a visible truncation, never a hang ----------------

    def assert_cut(self, out):
        self.assertEqual(out.status, 200, out)
        self.assertFalse(out.complete, "a cut upstream body reached the client as whole: %r"
                         % out)

    def test_reset_after_headers_cuts_the_client_response(self):
        out = self.request("fault-reset-after-headers")
        self.assert_cut(out)
        self.assertLess(len(out.body), int(out.headers["content-length"]))

    def test_close_mid_body_cuts_the_client_response(self):
        out = self.request("fault-close-mid-body")
        self.assert_cut(out)
        self.assertLess(len(out.body), int(out.headers["content-length"]))

    def test_stall_mid_body_cuts_after_the_response_timeout(self):
        started = time.monotonic()
        out = self.request("fault-stall-body")
        self.assert_cut(out)
        self.assertLess(time.monotonic() - started, RESPONSE_TIMEOUT_MS / 1000.0 + 5)

    # ---- event streams ---------------------------------------------------------------------

    def test_complete_stream_arrives_whole(self):
        out = self.request("fault-ok", "converse-stream")
        self.assertEqual(out.status, 200, out)
        self.assertTrue(out.complete, out)
        frames, rest = bgw_e2e.decode_frames(out.body)
        self.assertEqual(rest, b"")
        self.assertEqual([f["headers"][":event-type"] for f in frames][-2:],
                         ["messageStop", "metadata"])

    def test_reset_mid_stream_cuts_the_client_stream(self):
        started = time.monotonic()
        out = self.request("fault-stream-reset", "converse-stream")
        self.assert_cut(out)
        frames, rest = bgw_e2e.decode_frames(out.body)
        self.assertEqual(len(frames), 2, out)  # the sound frames before the reset
        self.assertEqual(rest, b"")
        self.assertLess(time.monotonic() - started, 5)

    def assert_error_frame_ends(self, out, good_frames, text):
        self.assertEqual(out.status, 200, out)
        self.assertTrue(out.complete, out)  # the chunked body ends properly after the frame
        frames, rest = bgw_e2e.decode_frames(out.body)
        self.assertEqual(rest, b"")
        self.assertEqual(len(frames), good_frames + 1, frames)
        last = frames[-1]["headers"]
        self.assertEqual(last[":message-type"], "error", frames[-1])
        self.assertEqual(last[":error-code"], "InternalServerException")
        self.assertIn(text, last[":error-message"])

    def test_corrupt_frame_ends_the_stream_with_an_error_frame(self):
        before = self.up.peer_closes()
        after = len(self.gw.request_logs())
        out = self.request("fault-stream-corrupt", "converse-stream")
        self.assert_error_frame_ends(out, 1, "corrupt")
        # The upstream connection was dropped, not left to its silence.
        self.assertTrue(self.up.wait(lambda u: u.peer_closes() > before, 10))
        log = self.log_for_model("fault-stream-corrupt", after)
        self.assertEqual(log["stream_corrupt"], "Message checksum mismatch")

    def test_stalled_stream_ends_with_an_error_frame_at_the_idle_timeout(self):
        before = self.up.peer_closes()
        started = time.monotonic()
        out = self.request("fault-stream-stall", "invoke-with-response-stream")
        self.assertGreaterEqual(time.monotonic() - started, STREAM_IDLE_TIMEOUT_MS / 1000.0 * 0.9)
        self.assert_error_frame_ends(out, 1, "stream_idle_timeout_ms")
        self.assertTrue(self.up.wait(lambda u: u.peer_closes() > before, 10))

    # ---- upstream TLS: refused, never downgraded -------------------------------------------

    def assert_tls_refused(self, region, up):
        before_requests = len(up.requests())
        before_conns = len(up.first_bytes())
        out = self.request("m", headers={"X-Gateway-Region": region})
        self.assert_gateway_error(out, 502, "BadGatewayException")
        self.assertEqual(len(up.requests()), before_requests, "a request reached the upstream")
        firsts = up.first_bytes()[before_conns:]
        self.assertTrue(firsts, "the gateway never connected")
        # Every connection opened with a TLS handshake record: no plaintext retry.
        self.assertEqual(set(firsts), {b"\x16"}, firsts)
        return out

    def test_tls_to_a_plaintext_server_is_refused_not_downgraded(self):
        self.assert_tls_refused("eu-west-1", self.up)

    def test_tls_certificate_for_another_name_is_refused(self):
        out = self.assert_tls_refused("eu-central-1", self.tls_up)
        self.assertIn("certificate", out.json()["message"].lower())

    def test_tls_certificate_from_an_untrusted_ca_is_refused(self):
        out = self.assert_tls_refused("ap-northeast-1", self.tls_up)
        self.assertIn("certificate", out.json()["message"].lower())

    def test_tls_handshake_that_stalls_is_504_after_the_connect_timeout(self):
        started = time.monotonic()
        out = self.request("m", headers={"X-Gateway-Region": "ap-southeast-2"})
        elapsed = time.monotonic() - started
        self.assert_gateway_error(out, 504, "GatewayTimeoutException")
        self.assertIn("connect", out.json()["message"])
        self.assertGreaterEqual(elapsed, CONNECT_TIMEOUT_MS / 1000.0 * 0.9)
        self.assertLess(elapsed, MAX_ATTEMPTS * CONNECT_TIMEOUT_MS / 1000.0 + 5)

    # ---- the client goes away, at every stage ----------------------------------------------

    def raw_client(self):
        s = socket.create_connection(("127.0.0.1", self.gw.port), timeout=CLIENT_TIMEOUT_S)
        self.addCleanup(s.close)
        return s

    @staticmethod
    def head(model, operation="converse", length=len(BODY)):
        return ("POST /model/%s/%s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                "application/json\r\nContent-Length: %d\r\n\r\n"
                % (model, operation, length)).encode()

    @staticmethod
    def reset(s):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()

    def test_client_leaves_before_the_head_is_complete(self):
        for abrupt in (False, True):
            s = self.raw_client()
            s.sendall(self.head("fault-ok")[:25])
            if abrupt:
                self.reset(s)
            else:
                s.close()

    def test_client_leaves_after_the_head_before_the_body(self):
        before = len(self.up.requests())
        for abrupt in (False, True):
            s = self.raw_client()
            s.sendall(self.head("fault-ok"))
            s.sendall(BODY[:5])
            if abrupt:
                self.reset(s)
            else:
                s.close()
        self.assert_still_serving()
        self.assertEqual([r.model for r in self.up.requests()[before:]], ["fault-ok"],
                         "a request whose body never arrived went upstream")

    def test_client_leaves_while_the_gateway_waits_upstream(self):
        for abrupt in (False, True):
            after = len(self.gw.request_logs())
            closes = self.up.peer_closes()
            count = len(self.up.requests())
            s = self.raw_client()
            s.sendall(self.head("fault-stall") + BODY)
            self.up.wait_requests(count + 1)
            if abrupt:
                self.reset(s)
            else:
                s.close()
            # The gateway gives up on the upstream at once, well before the response timeout
            # would: the stall ends because the gateway closed its connection.
            self.assertTrue(self.up.wait(lambda u: u.peer_closes() > closes, 10))
            log = self.log_for_model("fault-stall", after)
            self.assertEqual(log["status"], 499, log)

    def test_client_leaves_mid_stream(self):
        for abrupt in (False, True):
            after = len(self.gw.request_logs())
            closes = self.up.peer_closes()
            s = self.raw_client()
            s.sendall(self.head("fault-stream-stall", "converse-stream") + BODY)
            got = b""
            while b"\r\n\r\n" not in got or len(got) < got.index(b"\r\n\r\n") + 20:
                piece = s.recv(65536)
                self.assertTrue(piece, "the gateway closed before the first frame")
                got += piece
            self.assertTrue(got.startswith(b"HTTP/1.1 200"), got[:100])
            if abrupt:
                self.reset(s)
            else:
                s.close()
            self.assertTrue(self.up.wait(lambda u: u.peer_closes() > closes, 10))
            log = self.log_for_model("fault-stream-stall", after)
            self.assertEqual(log["status"], 499, log)

    def test_client_leaves_mid_body(self):
        s = self.raw_client()
        closes = self.up.peer_closes()
        s.sendall(self.head("fault-stall-body") + BODY)
        got = b""
        while b"\r\n\r\n" not in got:
            piece = s.recv(65536)
            self.assertTrue(piece)
            got += piece
        self.reset(s)
        self.assertTrue(self.up.wait(lambda u: u.peer_closes() > closes, 10))

    def test_client_leaves_before_reading_its_answer(self):
        for model, op in (("fault-ok", "converse"), ("fault-ok", "converse-stream")):
            s = self.raw_client()
            s.sendall(self.head(model, op) + BODY)
            self.reset(s)

    # ---- repetition: no fd or memory growth ------------------------------------------------

    def test_every_fault_repeated_leaves_no_fds_behind(self):
        rounds = 8
        rss_before = self.rss_kib()
        for _ in range(rounds):
            self.assertEqual(self.request("fault-reset-before-headers").status, 502)
            self.assertEqual(self.request("fault-garbage").status, 502)
            self.assertFalse(self.request("fault-reset-after-headers").complete)
            self.assertFalse(self.request("fault-stream-reset", "converse-stream").complete)
            self.assertTrue(self.request("fault-stream-corrupt", "converse-stream").complete)
            self.assertEqual(self.request("m", headers={"X-Gateway-Region": "us-west-2"}).status,
                             502)
            s = self.raw_client()
            s.sendall(self.head("fault-ok", "converse-stream") + BODY)
            self.reset(s)
        self.assert_still_serving()
        self.assert_fds_settle("after %d rounds of every fault" % rounds)
        growth = self.rss_kib() - rss_before
        # Generous: allocator caches settle over the first requests; a leak per request of
        # the buffers involved would show as far more.
        self.assertLess(growth, 16 * 1024, "RSS grew by %d KiB" % growth)


if __name__ == "__main__":
    unittest.main()
