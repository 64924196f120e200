"""The optional TLS listener (issue 19): `tls: {listen, cert_file, key_file}`, for clients that
insist on https:// (LangChain's `endpointHost`), from the outside.

Clients: Python's ssl module (HTTP/1.1, with and without ALPN), Debian's python3-h2 over TLS
with ALPN h2, and boto3 with `verify=`. The certificates come from bgw_e2e.e2e_pki() (made by the
openssl command, not by the gateway's code); the reload tests rotate to a second leaf of the
same CA (bgw_e2e.e2e_leaf) and compare what a new and an old connection are served, byte for
byte against the PEM files. Waits are on log lines, sockets or processes, each with a deadline.
"""

import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import unittest

import boto3
import botocore
from botocore.config import Config
import h2.config
import h2.connection
import h2.events

import bgw_e2e

GATEWAY_KEY = "AKIDGATEWAYTLSLISTEN"
GATEWAY_SECRET = "tls-listener/gateway+secret/EXAMPLEKEY01"
MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
CONVERSE = "/model/%s/converse" % MODEL.replace(":", "%3A")
CONVERSE_STREAM = "/model/%s/converse-stream" % MODEL.replace(":", "%3A")
# Short, so the handshake-timeout test waits little; long enough for a sanitizer build's
# handshakes on a busy 2-core machine.
HEADER_TIMEOUT_MS = 2000
CONNECTION_SPECIFIC = ("connection", "transfer-encoding", "keep-alive", "proxy-connection",
                       "upgrade")
DEADLINE_S = 15.0


def der_of(pem_path):
    """The DER bytes of the first certificate in a PEM file (the leaf of a chain)."""
    with open(pem_path, encoding="ascii") as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


def install(src, dst):
    """Replaces `dst` with a copy of `src` in one rename, as a certificate manager does."""
    shutil.copyfile(src, dst + ".new")
    os.replace(dst + ".new", dst)


def client_context(alpn=None, cafile=None):
    """A verifying client context trusting the test CA (or `cafile`), offering `alpn`."""
    ctx = ssl.create_default_context(cafile=cafile or bgw_e2e.e2e_pki()["ca"])
    if alpn is not None:
        ctx.set_alpn_protocols(alpn)
    return ctx


def tls_connect(port, alpn=None, server_hostname="127.0.0.1", ctx=None):
    """A TLS socket to the gateway's TLS port, handshake done (certificate verified)."""
    ctx = ctx or client_context(alpn)
    raw = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE_S)
    try:
        return ctx.wrap_socket(raw, server_hostname=server_hostname)
    except Exception:
        raw.close()
        raise


def read_to_eof(sock, deadline_s=DEADLINE_S):
    """Everything `sock` receives until the peer closes (or resets). Fails at the deadline."""
    sock.settimeout(deadline_s)
    got = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return got
            got += chunk
    except ConnectionResetError:
        return got
    except socket.timeout:
        raise AssertionError("the gateway kept the connection open for %.0f s; received %r"
                             % (deadline_s, got[:200]))


class H2OverTls:
    """One HTTP/2 connection over TLS (ALPN h2): h2 does the framing, this class the I/O."""

    def __init__(self, port):
        self.port = port
        self.sock = tls_connect(port, alpn=["h2"])
        self.conn = h2.connection.H2Connection(config=h2.config.H2Configuration(
            client_side=True, header_encoding="utf-8"))
        self.conn.initiate_connection()
        self.sock.sendall(self.conn.data_to_send())
        self.responses = {}  # stream id -> {"headers", "data", "ended", "reset"}

    def close(self):
        try:
            self.conn.close_connection()
            self.sock.sendall(self.conn.data_to_send())
        except OSError:
            pass
        self.sock.close()

    def request(self, path, body, headers=()):
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, [
            (":method", "POST"), (":scheme", "https"), (":authority", "127.0.0.1:%d" % self.port),
            (":path", path), ("content-type", "application/json"),
            ("content-length", str(len(body)))] + list(headers))
        self.conn.send_data(sid, body, end_stream=True)  # small bodies: within every window
        self.sock.sendall(self.conn.data_to_send())
        self.responses[sid] = {"headers": None, "data": b"", "ended": False, "reset": None}
        return sid

    def wait(self, sid, deadline_s=DEADLINE_S):
        """The response of stream `sid` once it has ended (or was reset)."""
        deadline = time.monotonic() + deadline_s
        resp = self.responses[sid]
        while not resp["ended"] and resp["reset"] is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError("stream %d did not end within %.0f s: %r"
                                     % (sid, deadline_s, resp))
            self.sock.settimeout(remaining)
            data = self.sock.recv(65536)
            if not data:
                raise AssertionError("the gateway closed the HTTP/2 connection: %r" % resp)
            for event in self.conn.receive_data(data):
                self._on(event)
            self.sock.sendall(self.conn.data_to_send())
        return resp

    def _on(self, event):
        r = self.responses.get(getattr(event, "stream_id", None))
        if isinstance(event, h2.events.ResponseReceived):
            r["headers"] = event.headers
        elif isinstance(event, h2.events.DataReceived):
            r["data"] += event.data
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            r["ended"] = True
        elif isinstance(event, h2.events.StreamReset):
            r["reset"] = event.error_code


def tls_config(fake_endpoint, cert, key, **settings):
    return bgw_e2e.base_config(fake_endpoint, tls={
        "listen": "127.0.0.1:0", "cert_file": cert, "key_file": key}, **settings)


class TlsListenerTest(unittest.TestCase):
    """One gateway with both listeners, serving e2e_pki()'s certificate."""

    @classmethod
    def setUpClass(cls):
        cls.binary = bgw_e2e.required_env("BGW_GATEWAY_BINARY")
        fake_binary = bgw_e2e.required_env("BGW_FAKE_BEDROCK")
        cls.workdir = bgw_e2e.class_workdir(cls, "bgw-tls-listener-")
        cls.pki = bgw_e2e.e2e_pki()
        cls.fake = bgw_e2e.FakeBedrock(fake_binary, GATEWAY_KEY, GATEWAY_SECRET, ["us-east-1"])
        cls.addClassCleanup(cls.fake.stop)
        config = tls_config(cls.fake.endpoint, cls.pki["cert"], cls.pki["key"],
                            limits={"header_timeout_ms": HEADER_TIMEOUT_MS})
        cls.gateway = bgw_e2e.Gateway(cls.binary, config, cls.workdir, "gw-tls-listener",
                                      GATEWAY_KEY, GATEWAY_SECRET)
        cls.addClassCleanup(bgw_e2e.stop_checked, cls.gateway)
        cls.port = bgw_e2e.tls_port(cls.gateway)

    def tearDown(self):
        self.assertEqual(self.gateway.sanitizer_reports(), [], self.gateway.output())
        self.assertTrue(self.gateway.alive(), "gateway died (exit %r)\n%s"
                        % (self.gateway.proc.poll(), self.gateway.output()))

    def assert_signed_by_gateway(self, mark, paths):
        """The fake saw exactly `paths` after `mark`, each signed by the gateway's key."""
        seen = self.fake.wait_requests(mark, len(paths))
        self.fake.sync()
        self.assertEqual(len(self.fake.requests()), mark + len(paths),
                         self.fake.requests()[mark:])
        for req, path in zip(seen, paths):
            self.assertEqual(req["wirePath"], path, req)
            self.assertTrue(req["signatureOk"], req)
            self.assertEqual(req["accessKeyId"], GATEWAY_KEY, req)
        return seen

    def https1(self, alpn, path=CONVERSE, body=None):
        """One HTTP/1.1 request over TLS offering `alpn`: (negotiated protocol, RawResponse)."""
        sock = tls_connect(self.port, alpn=alpn)
        with sock:
            negotiated = sock.selected_alpn_protocol()
            body = body if body is not None else bgw_e2e.converse_body("over tls")
            sock.sendall(b"POST %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                         b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                         % (path.encode(), self.port, len(body)) + body)
            resp = http.client.HTTPResponse(sock)
            resp.begin()
            data = resp.read()
            return negotiated, bgw_e2e.RawResponse(
                resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)

    # --- the listener -----------------------------------------------------------------------

    def test_listening_line_names_both_addresses(self):
        listening = self.gateway.events("listening")[0]
        self.assertEqual(listening["tls_address"], "127.0.0.1:%d" % self.port)
        self.assertNotEqual(self.port, self.gateway.port)
        # The plain listener is untouched by the TLS one.
        ok = bgw_e2e.http_request(self.gateway.port, "POST", CONVERSE, bgw_e2e.converse_body(),
                                  bgw_e2e.JSON_HEADERS)
        self.assertEqual(ok.status, 200, ok)

    def test_http11_over_tls_with_alpn(self):
        mark = self.fake.mark()
        negotiated, resp = self.https1(["http/1.1"])
        self.assertEqual(negotiated, "http/1.1")
        self.assertEqual(resp.status, 200, resp)
        self.assertEqual(resp.json()["output"]["message"]["content"][0]["text"], "over tls")
        self.assertEqual(resp.headers.get("x-gateway-region"), "us-east-1", resp)
        self.assertEqual(resp.headers.get("x-gateway-tier"), "on-demand", resp)
        self.assertEqual(resp.headers.get("x-gateway-attempts"), "1", resp)
        self.assert_signed_by_gateway(mark, [CONVERSE])
        entry = self.gateway.wait_log(lambda e: e.get("status") == 200 and
                                      e.get("operation") == "Converse")
        self.assertEqual(entry["region"], "us-east-1")

    def test_no_alpn_is_http11(self):
        mark = self.fake.mark()
        negotiated, resp = self.https1(None)
        self.assertIsNone(negotiated)
        self.assertEqual(resp.status, 200, resp)
        self.assertIn("x-gateway-region", resp.headers)
        self.assert_signed_by_gateway(mark, [CONVERSE])

    def test_h2_is_preferred_when_offered_with_http11(self):
        for offer in (["http/1.1", "h2"], ["h2", "http/1.1"]):
            with tls_connect(self.port, alpn=offer) as sock:
                self.assertEqual(sock.selected_alpn_protocol(), "h2", offer)

    def test_only_tls12_and_later(self):
        with tls_connect(self.port) as sock:
            self.assertIn(sock.version(), ("TLSv1.2", "TLSv1.3"))
        ctx = client_context()
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        with tls_connect(self.port, ctx=ctx) as sock:
            self.assertEqual(sock.version(), "TLSv1.2")

    def test_h2_over_tls_converse_and_converse_stream(self):
        mark = self.fake.mark()
        client = H2OverTls(self.port)
        self.addCleanup(client.close)
        self.assertEqual(client.sock.selected_alpn_protocol(), "h2")
        # Two streams at once on the one connection.
        first = client.request(CONVERSE, bgw_e2e.converse_body("h2 over tls"))
        second = client.request(CONVERSE_STREAM, bgw_e2e.converse_body("streamed over tls"))
        for sid in (first, second):
            resp = client.wait(sid)
            self.assertIsNone(resp["reset"], resp)
            headers = dict(resp["headers"])
            self.assertEqual(headers[":status"], "200", resp)
            for name, _ in resp["headers"]:
                self.assertEqual(name, name.lower(), resp["headers"])
                self.assertNotIn(name, CONNECTION_SPECIFIC, resp["headers"])
            self.assertEqual(headers.get("x-gateway-region"), "us-east-1", headers)
            self.assertEqual(headers.get("x-gateway-attempts"), "1", headers)
        reply = json.loads(client.responses[first]["data"])
        self.assertEqual(reply["output"]["message"]["content"][0]["text"], "h2 over tls")
        stream = client.responses[second]
        self.assertEqual(dict(stream["headers"])["content-type"],
                         "application/vnd.amazon.eventstream")
        frames, leftover = bgw_e2e.decode_frames(stream["data"])  # checks both CRCs
        self.assertEqual(leftover, b"")
        kinds = [f["headers"].get(":event-type") for f in frames]
        self.assertEqual(kinds[0], "messageStart", kinds)
        self.assertEqual(kinds[-2:], ["messageStop", "metadata"], kinds)
        text = "".join(json.loads(f["payload"])["delta"]["text"]
                       for f in frames if f["headers"].get(":event-type") == "contentBlockDelta")
        self.assertEqual(text, "streamed over tls")
        seen = self.fake.wait_requests(mark, 2)
        self.assertEqual(sorted(r["wirePath"] for r in seen), sorted([CONVERSE, CONVERSE_STREAM]))
        for req in seen:
            self.assertTrue(req["signatureOk"], req)
            self.assertEqual(req["accessKeyId"], GATEWAY_KEY, req)
        outcome = self.fake.wait_stream_outcome(
            [r for r in seen if r["wirePath"] == CONVERSE_STREAM][0]["requestId"])
        self.assertTrue(outcome["completed"], outcome)

    def test_boto3_with_an_https_endpoint(self):
        mark = self.fake.mark()
        config = Config(signature_version=botocore.UNSIGNED, retries={"total_max_attempts": 1})
        client = boto3.session.Session(region_name="us-east-1").client(
            "bedrock-runtime", endpoint_url="https://127.0.0.1:%d" % self.port,
            verify=self.pki["ca"], config=config)
        self.addCleanup(client.close)
        messages = [{"role": "user", "content": [{"text": "boto3 over tls"}]}]
        reply = client.converse(modelId=MODEL, messages=messages)
        self.assertEqual(reply["output"]["message"]["content"][0]["text"], "boto3 over tls")
        self.assertEqual(reply["ResponseMetadata"]["HTTPHeaders"].get("x-gateway-region"),
                         "us-east-1")
        stream = client.converse_stream(modelId=MODEL, messages=messages)["stream"]
        text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in stream
                       if "contentBlockDelta" in e)
        self.assertEqual(text, "boto3 over tls")
        self.assert_signed_by_gateway(mark, [CONVERSE, CONVERSE_STREAM])

    def test_boto3_trusts_the_ca_from_aws_ca_bundle(self):
        # What the README tells apps that cannot pass verify= in code.
        mark = self.fake.mark()
        old = os.environ.get("AWS_CA_BUNDLE")
        os.environ["AWS_CA_BUNDLE"] = self.pki["ca"]
        self.addCleanup(lambda: os.environ.pop("AWS_CA_BUNDLE", None) if old is None
                        else os.environ.__setitem__("AWS_CA_BUNDLE", old))
        config = Config(signature_version=botocore.UNSIGNED, retries={"total_max_attempts": 1})
        client = boto3.session.Session(region_name="us-east-1").client(
            "bedrock-runtime", endpoint_url="https://127.0.0.1:%d" % self.port, config=config)
        self.addCleanup(client.close)
        reply = client.converse(modelId=MODEL,
                                messages=[{"role": "user", "content": [{"text": "bundle"}]}])
        self.assertEqual(reply["output"]["message"]["content"][0]["text"], "bundle")
        self.assert_signed_by_gateway(mark, [CONVERSE])

    def test_served_certificate_verifies_against_the_test_ca(self):
        # Both names on the certificate verify, and the bytes are the configured file's.
        for name in ("127.0.0.1", "localhost"):
            with tls_connect(self.port, server_hostname=name) as sock:
                self.assertEqual(sock.getpeercert(binary_form=True), der_of(self.pki["cert"]))
        # A client that does not trust the test CA refuses it: the verification above is real.
        with self.assertRaises(ssl.SSLCertVerificationError):
            tls_connect(self.port, ctx=ssl.create_default_context())  # the system's store
        # Nor does the certificate name a host it was not made for.
        with self.assertRaises(ssl.SSLCertVerificationError):
            tls_connect(self.port, server_hostname="example.com")

    # --- what is not TLS --------------------------------------------------------------------

    def test_plain_http_to_the_tls_port_is_closed_unanswered(self):
        mark = self.fake.mark()
        body = bgw_e2e.converse_body()
        with socket.create_connection(("127.0.0.1", self.port), timeout=DEADLINE_S) as s:
            s.sendall(b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
                      b"\r\nContent-Length: %d\r\n\r\n" % (CONVERSE.encode(), len(body)) + body)
            got = read_to_eof(s)
        self.assertFalse(got.startswith(b"HTTP/"), got[:200])
        self.assertNotIn(b"HTTP/1.1", got)
        self.fake.sync()
        self.assertEqual(self.fake.requests()[mark:], [])
        # The listener and the gateway are fine.
        negotiated, resp = self.https1(["http/1.1"])
        self.assertEqual(resp.status, 200, resp)
        health = bgw_e2e.http_request(self.gateway.port, "GET", "/healthz")
        self.assertEqual(health.status, 200, health)

    def test_a_silent_client_is_closed_after_the_header_timeout(self):
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", self.port), timeout=DEADLINE_S) as s:
            got = read_to_eof(s)  # the handshake never starts
        elapsed = time.monotonic() - started
        self.assertEqual(got, b"")
        self.assertGreaterEqual(elapsed, HEADER_TIMEOUT_MS / 1000.0 * 0.9)
        # A handshake begun and left half way is bounded the same way.
        with socket.create_connection(("127.0.0.1", self.port), timeout=DEADLINE_S) as s:
            s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a ClientHello's start
            got = read_to_eof(s)
        self.assertFalse(got.startswith(b"HTTP/"), got[:200])
        self.assertEqual(bgw_e2e.http_request(self.gateway.port, "GET", "/healthz").status, 200)


class TlsReloadTest(unittest.TestCase):
    """SIGHUP reads the certificate and key again; each test has its own gateway and files."""

    @classmethod
    def setUpClass(cls):
        cls.binary = bgw_e2e.required_env("BGW_GATEWAY_BINARY")
        fake_binary = bgw_e2e.required_env("BGW_FAKE_BEDROCK")
        cls.workdir = bgw_e2e.class_workdir(cls, "bgw-tls-reload-")
        cls.pki = bgw_e2e.e2e_pki()
        cls.second = bgw_e2e.e2e_leaf("rotated")
        cls.fake = bgw_e2e.FakeBedrock(fake_binary, GATEWAY_KEY, GATEWAY_SECRET, ["us-east-1"])
        cls.addClassCleanup(cls.fake.stop)

    def start(self, name, settle=True):
        """A gateway serving copies of the first leaf from its own directory. With `settle`,
        once it has served a request: its event loop runs, so its signal handlers are in place
        (test_sighup_right_after_the_listening_line is about the moment before)."""
        d = os.path.join(self.workdir, name)
        os.makedirs(d)
        cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
        install(self.pki["cert"], cert)
        install(self.pki["key"], key)
        gw = bgw_e2e.Gateway(self.binary, tls_config(self.fake.endpoint, cert, key),
                             self.workdir, name, GATEWAY_KEY, GATEWAY_SECRET)
        self.addCleanup(bgw_e2e.stop_checked, gw)
        port = bgw_e2e.tls_port(gw)
        if settle:
            with tls_connect(port, alpn=["http/1.1"]) as sock:
                self.assertEqual(self.converse_on(sock, port, "up"), 200)
        return gw, port, cert, key

    def converse_on(self, sock, port, text):
        """One keep-alive HTTP/1.1 Converse on an open TLS socket; returns the status."""
        body = bgw_e2e.converse_body(text)
        sock.sendall(b"POST %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json"
                     b"\r\nContent-Length: %d\r\n\r\n" % (CONVERSE.encode(), port, len(body))
                     + body)
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        data = resp.read()
        self.assertEqual(json.loads(data)["output"]["message"]["content"][0]["text"], text)
        return resp.status

    def test_sighup_serves_the_new_certificate_to_new_connections_only(self):
        gw, port, cert, key = self.start("gw-rotate")
        first, second = der_of(self.pki["cert"]), der_of(self.second["cert"])
        self.assertNotEqual(first, second)
        old = tls_connect(port, alpn=["http/1.1"])
        self.addCleanup(old.close)
        self.assertEqual(old.getpeercert(binary_form=True), first)
        self.assertEqual(self.converse_on(old, port, "before"), 200)

        install(self.second["cert"], cert)
        install(self.second["key"], key)
        gw.proc.send_signal(signal.SIGHUP)
        bgw_e2e.gateway_event(gw, "tls_reloaded")
        self.assertEqual(gw.events("tls_reload_refused"), [])

        with tls_connect(port) as new:
            served = new.getpeercert(binary_form=True)
            self.assertEqual(served, second)
            self.assertNotEqual(new.getpeercert()["serialNumber"],
                                old.getpeercert()["serialNumber"])
        # The connection opened before the reload still works, on its own certificate.
        self.assertEqual(self.converse_on(old, port, "after"), 200)
        self.assertEqual(old.getpeercert(binary_form=True), first)
        # Over HTTP/2 as well, on a new connection.
        client = H2OverTls(port)
        self.addCleanup(client.close)
        self.assertEqual(client.sock.getpeercert(binary_form=True), second)
        resp = client.wait(client.request(CONVERSE, bgw_e2e.converse_body("h2")))
        self.assertEqual(dict(resp["headers"])[":status"], "200", resp)

    def test_a_broken_key_at_reload_is_refused_and_the_old_certificate_stays(self):
        gw, port, cert, key = self.start("gw-broken")
        first = der_of(self.pki["cert"])
        cases = [
            # The new certificate with the old key: they do not match.
            ("mismatched", lambda: install(self.second["cert"], cert)),
            # A key file that is not a key at all.
            ("garbage", lambda: self.write(key, "-----BEGIN PRIVATE KEY-----\nnot a key\n"
                                                "-----END PRIVATE KEY-----\n")),
            # No key file.
            ("missing", lambda: os.remove(key)),
        ]
        for count, (what, breakage) in enumerate(cases, start=1):
            breakage()
            gw.proc.send_signal(signal.SIGHUP)
            refused = bgw_e2e.gateway_event(gw, "tls_reload_refused", count)
            self.assertEqual(refused["level"], "error", refused)
            self.assertTrue(refused.get("error"), refused)
            self.assertEqual(gw.events("tls_reloaded"), [], what)
            with tls_connect(port, alpn=["http/1.1"]) as sock:
                self.assertEqual(sock.getpeercert(binary_form=True), first, what)
                self.assertEqual(self.converse_on(sock, port, what), 200)
        self.assertTrue(gw.alive())
        # Once the files are good again, the next SIGHUP takes them.
        install(self.second["cert"], cert)
        install(self.second["key"], key)
        gw.proc.send_signal(signal.SIGHUP)
        bgw_e2e.gateway_event(gw, "tls_reloaded")
        with tls_connect(port) as sock:
            self.assertEqual(sock.getpeercert(binary_form=True), der_of(self.second["cert"]))

    def test_tls_listen_cannot_change_on_reload(self):
        gw, port, cert, key = self.start("gw-relisten")
        config = tls_config(self.fake.endpoint, cert, key)
        self.rewrite(gw, config)  # the running file, unchanged: a reload that goes through
        gw.proc.send_signal(signal.SIGHUP)
        bgw_e2e.gateway_event(gw, "config_reloaded")
        closed = bgw_e2e.closed_port()
        self.addCleanup(closed.close)
        config["tls"]["listen"] = "127.0.0.1:%d" % closed.getsockname()[1]
        self.rewrite(gw, config)
        gw.proc.send_signal(signal.SIGHUP)
        refused = bgw_e2e.gateway_event(gw, "config_reload_refused")
        self.assertIn("tls.listen", refused.get("error", ""), refused)
        with tls_connect(port) as sock:
            self.assertEqual(sock.getpeercert(binary_form=True), der_of(self.pki["cert"]))

    def test_sighup_right_after_the_listening_line(self):
        # A supervisor that rotates a certificate may signal as soon as the gateway says it
        # listens. SIGHUP's default action ends the process: the handler must be in place
        # before the `listening` line is written.
        gw, port, cert, key = self.start("gw-early-hup", settle=False)
        gw.proc.send_signal(signal.SIGHUP)
        bgw_e2e.gateway_event(gw, "tls_reloaded")
        self.assertTrue(gw.alive(), gw.output())

    @staticmethod
    def write(path, text):
        with open(path + ".new", "w", encoding="ascii") as f:
            f.write(text)
        os.replace(path + ".new", path)

    @staticmethod
    def rewrite(gw, config):
        config = bgw_e2e.trust_test_ca(config)  # as the running file does
        with open(gw.config_path + ".new", "w", encoding="utf-8") as f:
            json.dump(config, f)
        os.replace(gw.config_path + ".new", gw.config_path)


class TlsConfigErrorTest(unittest.TestCase):
    """A `tls` section the gateway cannot serve stops it at start: exit 2, saying where."""

    @classmethod
    def setUpClass(cls):
        cls.binary = bgw_e2e.required_env("BGW_GATEWAY_BINARY")
        cls.workdir = bgw_e2e.class_workdir(cls, "bgw-tls-config-")
        cls.pki = bgw_e2e.e2e_pki()
        cls.other = bgw_e2e.e2e_leaf("other-leaf")

    def start_fails(self, tls):
        """Starts the gateway with `tls`; returns its output once it has exited (it must)."""
        config = bgw_e2e.base_config("http://127.0.0.1:9", tls=tls)
        path = os.path.join(self.workdir, "config.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(config, f)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update({"AWS_ACCESS_KEY_ID": GATEWAY_KEY, "AWS_SECRET_ACCESS_KEY": GATEWAY_SECRET,
                    "AWS_EC2_METADATA_DISABLED": "true", "HOME": self.workdir})
        try:
            run = subprocess.run([self.binary, "--config", path], env=env,
                                 stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, timeout=30)
        except subprocess.TimeoutExpired as e:
            raise AssertionError("the gateway started with tls=%r\n%r" % (tls, e.stdout))
        out = run.stdout.decode("utf-8", "replace") + run.stderr.decode("utf-8", "replace")
        self.assertEqual(run.returncode, 2, out)
        self.assertNotIn("listening on", out)
        return out

    def good(self, **change):
        tls = {"listen": "127.0.0.1:0", "cert_file": self.pki["cert"],
               "key_file": self.pki["key"]}
        tls.update(change)
        return tls

    def test_missing_cert_file_names_it(self):
        missing = os.path.join(self.workdir, "no-such-cert.pem")
        self.assertIn(missing, self.start_fails(self.good(cert_file=missing)))

    def test_missing_key_file_names_it(self):
        missing = os.path.join(self.workdir, "no-such-key.pem")
        self.assertIn(missing, self.start_fails(self.good(key_file=missing)))

    def test_a_key_that_does_not_match_the_certificate_names_the_files(self):
        out = self.start_fails(self.good(key_file=self.other["key"]))
        self.assertTrue(self.other["key"] in out or self.pki["cert"] in out, out)

    def test_a_file_that_is_not_a_certificate_names_it(self):
        bogus = os.path.join(self.workdir, "bogus.pem")
        with open(bogus, "w", encoding="ascii") as f:
            f.write("not a certificate\n")
        self.assertIn(bogus, self.start_fails(self.good(cert_file=bogus)))

    def test_an_unknown_key_in_tls_is_refused(self):
        out = self.start_fails(self.good(ciphers="HIGH"))
        self.assertIn("ciphers", out)

    def test_every_key_is_required(self):
        for key in ("listen", "cert_file", "key_file"):
            tls = self.good()
            del tls[key]
            self.assertIn(key, self.start_fails(tls), key)


if __name__ == "__main__":
    unittest.main()
