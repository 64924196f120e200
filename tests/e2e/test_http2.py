"""The HTTP/2 front door (issue 19), from the outside: well-behaved and hostile HTTP/2 clients
against the real gateway binary and the fake Bedrock.

The clients are Debian's python3-h2 (a sans-I/O HTTP/2 state machine) over raw sockets, frames
built by hand where a well-behaved client would refuse to send them, and `nghttp` from
nghttp2-client as an independent implementation. Cleartext HTTP/2 with prior knowledge (h2c) on
the HTTP/1.1 port is what the gateway offers, so every connection here starts with the client
preface.

Every wait is on a socket or an event with a deadline; nothing sleeps to let the gateway catch
up. A test ends by itself: each read has a deadline and each flood has a bound.
"""

import http.client
import json
import select
import socket
import struct
import subprocess
import tempfile
import time
import unittest
import uuid

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import hpack

import bgw_e2e

GATEWAY_KEY = "AKIDGATEWAYHTTP2"
GATEWAY_SECRET = "gateway/http2+secret/EXAMPLEKEY0123456789"
JSON = bgw_e2e.JSON_HEADERS

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# RFC 9113 section 6: frame types; section 7: error codes.
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = (
    0x0, 0x1, 0x3, 0x4, 0x6, 0x7, 0x8, 0x9)
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1
NO_ERROR = h2.errors.ErrorCodes.NO_ERROR
PROTOCOL_ERROR = h2.errors.ErrorCodes.PROTOCOL_ERROR
REFUSED_STREAM = h2.errors.ErrorCodes.REFUSED_STREAM
CANCEL = h2.errors.ErrorCodes.CANCEL
ENHANCE_YOUR_CALM = h2.errors.ErrorCodes.ENHANCE_YOUR_CALM

# HTTP/2 forbids these in a message (RFC 9113 section 8.2.2).
CONNECTION_SPECIFIC = ("connection", "transfer-encoding", "keep-alive", "proxy-connection",
                       "upgrade")

# The main gateway's limits, small so that the tests reach them cheaply.
MAX_STREAMS = 10
MAX_HEADER_BYTES = 8192
MAX_HEADER_COUNT = 40
MAX_BODY_BYTES = 128 * 1024
MAX_TARGET_BYTES = 1024
# The timeout gateway's client_idle_timeout_ms: short, so its tests wait little.
IDLE_MS = 800


def converse_path(model):
    return "/model/%s/converse" % model.replace(":", "%3A")


def error_name(code):
    try:
        return h2.errors.ErrorCodes(code).name
    except ValueError:
        return hex(code)


class Stream:
    """What one stream received."""

    def __init__(self):
        self.headers = None     # [(name, value)] of the response, as sent
        self.data = []          # [(monotonic time, bytes)] per DATA frame
        self.trailers = None
        self.ended = False      # END_STREAM received
        self.reset = None       # the RST_STREAM error code, when the peer reset it
        self.sent_at = time.monotonic()

    @property
    def done(self):
        return self.ended or self.reset is not None

    @property
    def status(self):
        return int(self.header(":status")) if self.headers else None

    def header(self, name):
        for k, v in self.headers or ():
            if k == name:
                return v
        return None

    @property
    def body(self):
        return b"".join(d for _, d in self.data)

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def __repr__(self):
        return "Stream(status=%r, reset=%s, ended=%r, headers=%r, body=%r)" % (
            self.status, None if self.reset is None else error_name(self.reset), self.ended,
            self.headers, self.body[:300])


class _Connection(h2.connection.H2Connection):
    """h2's client state machine, with a switch that makes it ignore the peer's
    SETTINGS_MAX_CONCURRENT_STREAMS: a hostile client opens more streams than it was allowed."""

    ignore_stream_limit = False

    @property
    def open_outbound_streams(self):
        if self.ignore_stream_limit:
            return 0
        return super().open_outbound_streams


class H2Client:
    """One HTTP/2 connection over a plain socket: h2 does the framing, this class the I/O.

    Request bodies are sent as the stream and connection windows allow, and received DATA is
    acknowledged at once (window updates), unless `settings` close the window. `byte_pace`
    sends every byte on its own (the split-reads client)."""

    def __init__(self, port, settings=None, timeout=10.0, byte_pace=None, sock=None):
        self.port = port
        self.sock = sock or socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.byte_pace = byte_pace
        config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8",
                                           validate_inbound_headers=False)
        self.conn = _Connection(config=config)
        initial = {h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 100,
                   h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: 65536}
        initial.update(settings or {})
        self.conn.local_settings = h2.settings.Settings(client=True, initial_values=initial)
        self.conn.initiate_connection()
        self.streams = {}
        self.uploads = {}           # stream id -> [remaining body, end_stream]
        self.peer_settings = {}     # what the gateway advertised
        self.goaway = None          # the ConnectionTerminated event
        self.goaway_at = None
        self.closed = False         # the gateway closed (EOF) or reset the connection
        self.closed_at = None
        # A send failed (the gateway stopped reading): what it sent before is still to be read.
        self.write_closed = False
        self.protocol_error = None  # h2 refused what the gateway sent
        self.flush()

    # ---- sending ----

    def _send(self, data):
        if not data or self.closed or self.write_closed:
            return
        try:
            if self.byte_pace is None:
                self.sock.sendall(data)
                return
            for i in range(len(data)):
                self.sock.sendall(data[i:i + 1])
                # The client's own pace (the behaviour under test: one byte per read at the
                # gateway), not a wait for the gateway.
                time.sleep(self.byte_pace)
        except (BrokenPipeError, ConnectionResetError):
            self.write_closed = True

    def _push_uploads(self):
        for sid, item in list(self.uploads.items()):
            body, end = item
            try:
                while body:
                    n = min(len(body), self.conn.local_flow_control_window(sid),
                            self.conn.max_outbound_frame_size)
                    if n <= 0:
                        break
                    self.conn.send_data(sid, body[:n])
                    body = body[n:]
                item[0] = body
                if not body:
                    if end:
                        self.conn.end_stream(sid)
                    del self.uploads[sid]
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                # Answered or reset before the upload ended: stop, as a real client does.
                del self.uploads[sid]

    def flush(self):
        if self.goaway is None and not self.closed:
            self._push_uploads()
        self._send(self.conn.data_to_send())

    def request(self, method, path, headers=(), body=b"", content_length=True,
                end_stream=True):
        """Opens a stream with this request; returns its id. The body follows as the windows
        allow (pump() keeps it going)."""
        sid = self.conn.get_next_available_stream_id()
        hdrs = [(":method", method), (":scheme", "http"),
                (":authority", "127.0.0.1:%d" % self.port), (":path", path)]
        hdrs += [(k.lower(), v) for k, v in (headers.items() if hasattr(headers, "items")
                                             else headers)]
        if body and content_length:
            hdrs.append(("content-length", str(len(body))))
        self.conn.send_headers(sid, hdrs, end_stream=end_stream and not body)
        self.streams[sid] = Stream()
        if body:
            self.uploads[sid] = [bytes(body), end_stream]
        self.flush()
        return sid

    def converse(self, model, text="x", headers=None):
        return self.request("POST", converse_path(model), dict(JSON, **(headers or {})),
                            bgw_e2e.converse_body(text))

    def reset(self, sid, code=CANCEL):
        self.conn.reset_stream(sid, code)
        self.uploads.pop(sid, None)
        self.flush()

    # ---- receiving ----

    def _mark_closed(self):
        if not self.closed:
            self.closed = True
            self.closed_at = time.monotonic()

    def _on_event(self, ev):
        st = self.streams.get(getattr(ev, "stream_id", None))
        if isinstance(ev, h2.events.ResponseReceived) and st:
            st.headers = ev.headers
        elif isinstance(ev, h2.events.DataReceived):
            if st:
                st.data.append((time.monotonic(), ev.data))
            try:
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            except h2.exceptions.StreamClosedError:
                pass
        elif isinstance(ev, h2.events.TrailersReceived) and st:
            st.trailers = ev.headers
        elif isinstance(ev, h2.events.StreamEnded) and st:
            st.ended = True
        elif isinstance(ev, h2.events.StreamReset) and st:
            st.reset = ev.error_code
            self.uploads.pop(ev.stream_id, None)
        elif isinstance(ev, h2.events.RemoteSettingsChanged):
            for code, change in ev.changed_settings.items():
                self.peer_settings[code] = change.new_value
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self.goaway = ev
            self.goaway_at = time.monotonic()

    def _feed(self, data):
        if self.protocol_error is not None:
            return
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as e:
            self.protocol_error = e
            return
        for ev in events:
            self._on_event(ev)
        self.flush()

    def pump(self, until, timeout):
        """Reads and answers until `until()` holds; False if it did not within `timeout` s (or
        the connection ended first)."""
        deadline = time.monotonic() + timeout
        while not until():
            if self.closed:
                return bool(until())
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if not self._buffered() and not select.select([self.sock], [], [], remaining)[0]:
                continue
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                data = b""
            if not data:
                self._mark_closed()
                continue
            self._feed(data)
        return True

    def _buffered(self):
        """Bytes a TLS socket has decrypted already (select cannot see them)."""
        return getattr(self.sock, "pending", lambda: 0)() > 0

    def poll(self):
        """Reads whatever has already arrived, without waiting."""
        while not self.closed and (self._buffered() or
                                   select.select([self.sock], [], [], 0)[0]):
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                data = b""
            if not data:
                self._mark_closed()
                return
            self._feed(data)

    def handshake(self, timeout=10.0):
        """Waits for the gateway's SETTINGS (h2 acknowledges them at once)."""
        ok = self.pump(lambda: bool(self.peer_settings) or self.goaway is not None, timeout)
        if not ok or self.goaway is not None:
            raise AssertionError("no SETTINGS from the gateway within %s s (goaway=%r, closed=%r)"
                                 % (timeout, self.goaway, self.closed))
        return self

    def wait(self, sid, timeout=20.0):
        st = self.streams[sid]
        if not self.pump(lambda: st.done or self.goaway is not None, timeout):
            raise AssertionError("stream %d unfinished after %s s: %r (goaway=%r, closed=%r)"
                                 % (sid, timeout, st, self.goaway, self.closed))
        return st

    def wait_all(self, sids, timeout=20.0):
        done = lambda: all(self.streams[s].done for s in sids) or self.goaway is not None
        if not self.pump(done, timeout):
            raise AssertionError("streams unfinished after %s s: %r" % (
                timeout, {s: self.streams[s] for s in sids if not self.streams[s].done}))
        return [self.streams[s] for s in sids]

    def wait_closed(self, timeout=10.0):
        """True once the gateway has closed the connection."""
        return self.pump(lambda: self.closed, timeout)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# ---- raw frames, for what h2 will not send ----

def frame(ftype, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + \
        struct.pack(">I", sid & 0x7FFFFFFF) + payload


def never_indexed_block(headers):
    """An HPACK block of literal, never-indexed fields: it leaves both dynamic tables alone, so
    it can be sent next to h2's own header blocks without desynchronising them."""
    return hpack.Encoder().encode([hpack.NeverIndexedHeaderTuple(k, v) for k, v in headers],
                                  huffman=False)


class RawReader:
    """Parses the frames the gateway sends on a socket h2 no longer reads."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.frames = []        # (type, flags, stream id, payload)
        self.closed = False

    def _read(self, timeout):
        if not select.select([self.sock], [], [], max(0.0, timeout))[0]:
            return
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            self.closed = True
            return
        buf = self.buf + data
        pos = 0
        while len(buf) - pos >= 9:
            length = int.from_bytes(buf[pos:pos + 3], "big")
            if len(buf) - pos < 9 + length:
                break
            ftype, flags = buf[pos + 3], buf[pos + 4]
            sid = int.from_bytes(buf[pos + 5:pos + 9], "big") & 0x7FFFFFFF
            self.frames.append((ftype, flags, sid, buf[pos + 9:pos + 9 + length]))
            pos += 9 + length
        self.buf = buf[pos:]

    def poll(self):
        while not self.closed and select.select([self.sock], [], [], 0)[0]:
            self._read(0)

    def read_until(self, predicate, timeout):
        deadline = time.monotonic() + timeout
        while not predicate():
            remaining = deadline - time.monotonic()
            if self.closed or remaining <= 0:
                return bool(predicate())
            self._read(remaining)
        return True

    def goaway(self):
        """(last stream id, error code, debug data) of the first GOAWAY, or None."""
        for ftype, _, _, payload in self.frames:
            if ftype == GOAWAY and len(payload) >= 8:
                last, code = struct.unpack(">II", payload[:8])
                return last & 0x7FFFFFFF, code, payload[8:]
        return None


# ---- the suites ----

class GatewayCase(unittest.TestCase):
    """A fake Bedrock and a gateway per class, checked after each test."""

    LIMITS = {}

    @classmethod
    def setUpClass(cls):
        cls.binary = bgw_e2e.required_env("BGW_GATEWAY_BINARY")
        fake_binary = bgw_e2e.required_env("BGW_FAKE_BEDROCK")
        cls.workdir = bgw_e2e.class_workdir(cls, "bgw-http2-")
        cls.fake = bgw_e2e.FakeBedrock(fake_binary, GATEWAY_KEY, GATEWAY_SECRET,
                                       ["us-east-1", "eu-west-1"])
        cls.addClassCleanup(cls.fake.stop)
        cls.gw = cls.start_gateway(cls.LIMITS, cls.__name__.lower())

    @classmethod
    def start_gateway(cls, limits, name):
        config = bgw_e2e.base_config({"us-east-1": cls.fake.endpoint,
                                      "eu-west-1": cls.fake.endpoint}, limits=dict(limits))
        gw = bgw_e2e.Gateway(cls.binary, config, cls.workdir, name, GATEWAY_KEY, GATEWAY_SECRET)
        cls.addClassCleanup(bgw_e2e.stop_checked, gw)
        return gw

    def setUp(self):
        self.clients = []

    def tearDown(self):
        for c in self.clients:
            c.close()
        self.assertEqual(self.gw.sanitizer_reports(), [], self.gw.output())
        self.assertTrue(self.gw.alive(), self.gw.output())

    def client(self, gw=None, **kwargs):
        c = H2Client((gw or self.gw).port, **kwargs)
        self.clients.append(c)
        return c

    def assert_serves(self, gw=None):
        """A new HTTP/2 connection and a new HTTP/1.1 one both get a Converse answered."""
        gw = gw or self.gw
        c = self.client(gw).handshake()
        st = c.wait(c.converse("h2-health-check", "still here"))
        self.assertEqual(st.status, 200, st)
        self.assertEqual(st.json()["output"]["message"]["content"][0]["text"], "still here")
        c.close()
        resp = bgw_e2e.http_request(gw.port, "POST", converse_path("h1-health-check"),
                                    bgw_e2e.converse_body(), JSON)
        self.assertEqual(resp.status, 200, resp)

    def assert_http2_headers(self, st):
        for name, _ in st.headers:
            self.assertEqual(name, name.lower(), st.headers)
            self.assertNotIn(name, CONNECTION_SPECIFIC, st.headers)

    def assert_nothing_upstream(self, mark, model_part):
        self.fake.sync()
        seen = [r["wirePath"] for r in self.fake.requests()[mark:]]
        self.assertFalse([p for p in seen if model_part in p], seen)


class Http2FrontDoor(GatewayCase):
    LIMITS = {"h2_max_concurrent_streams": MAX_STREAMS, "max_header_bytes": MAX_HEADER_BYTES,
              "max_header_count": MAX_HEADER_COUNT, "max_body_bytes": MAX_BODY_BYTES,
              "max_target_bytes": MAX_TARGET_BYTES, "client_idle_timeout_ms": 30000}

    # ---- well-behaved clients ----

    def test_settings_advertise_the_stream_limit(self):
        c = self.client().handshake()
        self.assertEqual(
            c.peer_settings.get(h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS), MAX_STREAMS,
            c.peer_settings)

    def test_converse_over_h2c(self):
        mark = self.fake.mark()
        model = "h2-converse-%s" % uuid.uuid4().hex[:8]
        c = self.client().handshake()
        st = c.wait(c.converse(model, "héllo over h2 ✓"))
        self.assertEqual(st.status, 200, st)
        self.assertIsNone(c.protocol_error)
        self.assert_http2_headers(st)
        self.assertEqual(st.json()["output"]["message"]["content"][0]["text"], "héllo over h2 ✓")
        self.assertEqual(st.header("x-gateway-region"), "us-east-1", st.headers)
        self.assertEqual(st.header("x-gateway-attempts"), "1", st.headers)
        self.assertTrue(st.header("x-amzn-requestid"), st.headers)
        if st.header("content-length") is not None:
            self.assertEqual(st.header("content-length"), str(len(st.body)), st.headers)
        # Upstream, it is an ordinary request signed by the gateway.
        (req,) = self.fake.wait_requests(mark)
        self.assertEqual(req["wirePath"], converse_path(model))
        self.assertTrue(req["signatureOk"], req)
        self.assertEqual(req["accessKeyId"], GATEWAY_KEY)
        # One access-log line for the stream, as for an HTTP/1.1 request.
        entry = self.gw.wait_log(lambda e: e.get("model") == model)
        self.assertEqual(entry["status"], 200, entry)
        self.assertEqual(entry.get("operation"), "Converse", entry)
        self.assertEqual(len([e for e in self.gw.request_logs() if e.get("model") == model]), 1)

    def test_region_header_and_errors_as_over_http11(self):
        # The same pipeline: pinning, and the same error for the same mistake.
        c = self.client().handshake()
        st = c.wait(c.converse("h2-pinned", headers={"X-Gateway-Region": "eu-west-1"}))
        self.assertEqual(st.status, 200, st)
        self.assertEqual(st.header("x-gateway-region"), "eu-west-1")
        for method, path in (("POST", "/model/m/not-an-operation"), ("GET", converse_path("m")),
                             ("POST", "/no/such/path")):
            with self.subTest(method=method, path=path):
                h1 = bgw_e2e.http_request(self.gw.port, method, path, bgw_e2e.converse_body(),
                                          JSON)
                st = c.wait(c.request(method, path, JSON, bgw_e2e.converse_body()))
                self.assertEqual(st.status, h1.status, (st, h1))
                self.assertGreaterEqual(st.status, 400, st)
                self.assertEqual(st.header("x-amzn-errortype"), h1.headers.get("x-amzn-errortype"))
                self.assertEqual(st.json(), h1.json())

    def test_converse_stream_events_arrive_as_data_frames(self):
        # The fake pauses 60 ms before each event: a relay that forwards frame by frame sends
        # each in its own DATA frame, as it comes.
        words = "one two three four five"
        c = self.client().handshake()
        sid = c.request("POST", "/model/fake-delay-60/converse-stream", JSON,
                        bgw_e2e.converse_body(words))
        st = c.wait(sid)
        self.assertEqual(st.status, 200, st)
        self.assertTrue(st.ended, st)
        self.assert_http2_headers(st)
        self.assertIn("application/vnd.amazon.eventstream", st.header("content-type"))
        frames, leftover = bgw_e2e.decode_frames(st.body)
        self.assertEqual(leftover, b"")
        kinds = [f["headers"][":event-type"] for f in frames]
        self.assertEqual(kinds[0], "messageStart")
        self.assertEqual(kinds[-3:], ["contentBlockStop", "messageStop", "metadata"])
        text = "".join(json.loads(f["payload"])["delta"]["text"] for f in frames
                       if f["headers"][":event-type"] == "contentBlockDelta")
        self.assertEqual(text, words)
        usage = json.loads(frames[-1]["payload"])["usage"]
        self.assertGreater(usage["outputTokens"], 0)
        # Relayed as they came: at least one DATA frame per event, spread over the pauses.
        pieces = [(t, d) for t, d in st.data if d]
        self.assertGreaterEqual(len(pieces), len(frames), [len(d) for _, d in pieces])
        self.assertGreaterEqual(pieces[-1][0] - pieces[0][0], 0.5 * 0.060 * (len(frames) - 1))
        # Each DATA frame carries whole event-stream frames: none is split or merged.
        for _, data in pieces:
            whole, rest = bgw_e2e.decode_frames(data)
            self.assertTrue(whole and rest == b"", len(data))

    def test_invoke_with_response_stream(self):
        c = self.client().handshake()
        st = c.wait(c.request("POST", "/model/anthropic.claude-3-haiku-20240307-v1%3A0/"
                              "invoke-with-response-stream", JSON, b'{"messages":[]}'))
        self.assertEqual(st.status, 200, st)
        frames, leftover = bgw_e2e.decode_frames(st.body)
        self.assertEqual(leftover, b"")
        self.assertEqual({f["headers"][":event-type"] for f in frames}, {"chunk"})
        self.assertGreater(len(frames), 2)

    def test_many_concurrent_streams_on_one_connection(self):
        # Each answer takes 400 ms upstream: ten at once on one connection take about that
        # long, ten one after another ten times as long.
        c = self.client().handshake()
        texts = ["stream %d" % i for i in range(MAX_STREAMS)]
        started = time.monotonic()
        sids = [c.converse("fake-delay-400", t) for t in texts]
        streams = c.wait_all(sids, timeout=30)
        elapsed = time.monotonic() - started
        for st, text in zip(streams, texts):
            self.assertEqual(st.status, 200, st)
            self.assertEqual(st.json()["output"]["message"]["content"][0]["text"], text)
        self.assertLess(elapsed, MAX_STREAMS * 0.4 / 2, "streams were not served concurrently")
        self.assertIsNone(c.goaway)

    def test_more_requests_than_the_stream_limit_through_one_connection(self):
        # Three times the limit, never more than the limit open at once: all answered.
        c = self.client().handshake()
        todo = ["req %d" % i for i in range(3 * MAX_STREAMS)]
        sids = {}
        deadline = time.monotonic() + 60
        while len(sids) < len(todo) or not all(c.streams[s].done for s in sids):
            self.assertLess(time.monotonic(), deadline, "requests unfinished after 60 s")
            while len(sids) < len(todo) and c.conn.open_outbound_streams < MAX_STREAMS:
                text = todo[len(sids)]
                sids[c.converse("fake-delay-50", text)] = text
            open_now = [s for s in sids if not c.streams[s].done]
            c.pump(lambda: any(c.streams[s].done for s in open_now) or c.goaway is not None,
                   timeout=max(0.0, deadline - time.monotonic()))
            self.assertIsNone(c.goaway)
        for sid, text in sids.items():
            st = c.streams[sid]
            self.assertEqual(st.status, 200, st)
            self.assertEqual(st.json()["output"]["message"]["content"][0]["text"], text)

    def test_nghttp_multiplexes_on_one_connection(self):
        # nghttp2's own client, 20 copies of one request on one connection. -M: nghttp sends
        # its first requests before the gateway's SETTINGS arrive, assuming 100 streams; told the
        # limit, it holds back what is over it instead of having it refused (see
        # test_first_flight_beyond_the_stream_limit_is_refused).
        with tempfile.NamedTemporaryFile(dir=self.workdir, suffix=".json", delete=False) as f:
            f.write(bgw_e2e.converse_body("from nghttp"))
        run = subprocess.run(
            ["nghttp", "-v", "-n", "-m", "20", "-M", str(MAX_STREAMS), "-t", "30s", "-d", f.name,
             "-H", "content-type: application/json",
             "http://127.0.0.1:%d%s" % (self.gw.port, converse_path("nghttp-model"))],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            timeout=60)
        out = run.stdout.decode("utf-8", "replace")
        self.assertEqual(run.returncode, 0, out[-3000:])
        self.assertEqual(out.count(":status: 200"), 20, out[-3000:])
        self.assertNotIn("GOAWAY", out.replace("send GOAWAY", ""), out[-3000:])

    def test_nghttp_converse_stream(self):
        with tempfile.NamedTemporaryFile(dir=self.workdir, suffix=".json", delete=False) as f:
            f.write(bgw_e2e.converse_body("streamed to nghttp"))
        run = subprocess.run(
            ["nghttp", "-t", "30s", "-d", f.name, "-H", "content-type: application/json",
             "http://127.0.0.1:%d/model/nghttp-model/converse-stream" % self.gw.port],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            timeout=60)
        self.assertEqual(run.returncode, 0, run.stderr.decode("utf-8", "replace"))
        frames, leftover = bgw_e2e.decode_frames(run.stdout)
        self.assertEqual(leftover, b"")
        text = "".join(json.loads(f["payload"])["delta"]["text"] for f in frames
                       if f["headers"][":event-type"] == "contentBlockDelta")
        self.assertEqual(text, "streamed to nghttp")

    def test_large_request_body_within_limit_with_flow_control(self):
        # Just under max_body_bytes and over the 65535-byte initial windows: the upload only
        # finishes if the gateway opens its windows as it reads.
        mark = self.fake.mark()
        body = json.dumps({"inputText": "z" * (MAX_BODY_BYTES - 100)}).encode()
        self.assertGreater(len(body), 65535)
        c = self.client().handshake()
        st = c.wait(c.request("POST", "/model/h2-big-body/invoke", JSON, body,
                              content_length=False))
        self.assertEqual(st.status, 200, st)
        self.assertEqual(st.json()["bodyLength"], len(body))
        (req,) = self.fake.wait_requests(mark)
        self.assertTrue(req["signatureOk"], req)

    def test_split_reads_one_byte_at_a_time(self):
        # Preface, SETTINGS, HEADERS and DATA each arrive one byte per read.
        c = self.client(byte_pace=0.001)
        st = c.wait(c.converse("h2-split-reads", "byte by byte"))
        self.assertEqual(st.status, 200, st)
        self.assertEqual(st.json()["output"]["message"]["content"][0]["text"], "byte by byte")

    # ---- limits on one stream, the connection stays ----

    def test_first_flight_beyond_the_stream_limit_is_refused(self):
        # A client's first requests may leave before it has the gateway's SETTINGS (nghttp
        # does this): those over the limit are refused with REFUSED_STREAM, which tells the
        # client they were not processed and may be retried; the rest are answered.
        c = self.client()
        c.conn.ignore_stream_limit = True  # h2 would wait for SETTINGS; this client does not
        sids = [c.converse("fake-delay-300", "first %d" % i) for i in range(MAX_STREAMS + 5)]
        c.conn.ignore_stream_limit = False
        streams = c.wait_all(sids, timeout=30)
        for st in streams[:MAX_STREAMS]:
            self.assertEqual(st.status, 200, st)
        for st in streams[MAX_STREAMS:]:
            self.assertEqual(st.reset, REFUSED_STREAM, st)
        st = c.wait(c.converse("h2-after-refusal"))
        self.assertEqual(st.status, 200, st)
        self.assertIsNone(c.goaway)

    def test_stream_beyond_the_acknowledged_stream_limit(self):
        # A client that has acknowledged SETTINGS_MAX_CONCURRENT_STREAMS and opens one more.
        # RFC 9113 section 5.1.2 makes that a stream error (PROTOCOL_ERROR or REFUSED_STREAM),
        # which an endpoint may treat as a connection error (section 5.4). Either way the
        # client must learn that the extra stream was not processed.
        c = self.client().handshake()
        held = [c.converse("fake-delay-1500", "held %d" % i) for i in range(MAX_STREAMS)]
        c.conn.ignore_stream_limit = True  # from here on, a client that ignores the limit
        extra = c.converse("h2-one-too-many")
        c.conn.ignore_stream_limit = False
        st = c.wait(extra, timeout=10)
        if c.goaway is None:
            # Refused alone: the other streams and the connection carry on.
            self.assertIn(st.reset, (REFUSED_STREAM, PROTOCOL_ERROR), st)
            for held_st in c.wait_all(held, timeout=30):
                self.assertEqual(held_st.status, 200, held_st)
            self.assertEqual(c.wait(c.converse("h2-after-refusal")).status, 200)
        else:
            # The connection ended (libnghttp2's choice): its GOAWAY excludes the extra stream.
            self.assertEqual(c.goaway.error_code, PROTOCOL_ERROR, c.goaway)
            self.assertLess(c.goaway.last_stream_id, extra, c.goaway)
            self.assertTrue(c.wait_closed(10), "GOAWAY but the connection stayed open")
            print("stream over the acknowledged limit: GOAWAY %s, last stream %d; %d of %d held "
                  "streams answered" % (error_name(c.goaway.error_code), c.goaway.last_stream_id,
                                        len([s for s in held if c.streams[s].status]), len(held)))
        self.assert_serves()

    def test_header_limits_answer_on_that_stream_only(self):
        mark = self.fake.mark()
        c = self.client().handshake()
        busy = c.converse("fake-delay-500", "in flight")
        cases = {
            "bytes": (431, "limits.max_header_bytes", "",
                      [("x-big", "a" * (MAX_HEADER_BYTES + 1000))]),
            "count": (431, "limits.max_header_count", "",
                      [("x-field-%d" % i, "v") for i in range(MAX_HEADER_COUNT + 10)]),
            "target": (414, "limits.max_target_bytes", "-" + "t" * MAX_TARGET_BYTES, []),
        }
        for what, (status, limit, path_pad, extra) in cases.items():
            with self.subTest(what=what):
                sid = c.request("POST", converse_path("h2-too-many-headers-" + what + path_pad),
                                list(JSON.items()) + extra, bgw_e2e.converse_body())
                st = c.wait(sid, timeout=10)
                self.assertEqual(st.status, status, st)
                self.assertIn(limit, st.json()["message"])
                self.assertIn("json", st.header("content-type"))
        st = c.wait(busy)
        self.assertEqual(st.status, 200, st)
        st = c.wait(c.converse("h2-after-431"))
        self.assertEqual(st.status, 200, st)
        self.assertIsNone(c.goaway)
        self.assert_nothing_upstream(mark, "h2-too-many-headers")

    def test_body_over_max_body_bytes_is_413(self):
        mark = self.fake.mark()
        c = self.client().handshake()
        body = json.dumps({"inputText": "q" * (MAX_BODY_BYTES + 1000)}).encode()
        for declared in (True, False):
            with self.subTest(content_length=declared):
                st = c.wait(c.request("POST", "/model/h2-body-too-big/invoke", JSON, body,
                                      content_length=declared))
                self.assertEqual(st.status, 413, st)
                self.assertIn("limits.max_body_bytes", st.json()["message"])
        st = c.wait(c.converse("h2-after-413"))
        self.assertEqual(st.status, 200, st)
        self.assertIsNone(c.goaway)
        self.assert_nothing_upstream(mark, "h2-body-too-big")

    # ---- hostile connections: they end, the gateway stays ----

    def test_rapid_reset_gets_enhance_your_calm(self):
        # CVE-2023-44487: open a stream, reset it at once, again and again.
        c = self.client().handshake()
        headers = [(":method", "POST"), (":scheme", "http"), (":authority", "x"),
                   (":path", converse_path("fake-delay-5000")),
                   ("content-type", "application/json")]
        resets = 0
        while c.goaway is None and not c.closed and not c.write_closed and resets < 20000:
            for _ in range(10):
                sid = c.conn.get_next_available_stream_id()
                c.conn.send_headers(sid, headers)
                c.conn.reset_stream(sid, CANCEL)
                resets += 1
            c.flush()
            c.poll()
        c.pump(lambda: c.goaway is not None, 10)  # what came before a reset of the connection
        self.assertIsNotNone(c.goaway, "no GOAWAY after %d resets (closed=%r)" % (resets, c.closed))
        self.assertEqual(c.goaway.error_code, ENHANCE_YOUR_CALM,
                         "%s after %d resets" % (error_name(c.goaway.error_code), resets))
        self.assertTrue(c.wait_closed(10), "the gateway kept the connection open after GOAWAY")
        print("rapid reset: GOAWAY %s after %d resets" % (error_name(c.goaway.error_code), resets))
        self.assert_serves()

    def test_continuation_flood_ends_the_connection(self):
        # HEADERS without END_HEADERS, then CONTINUATION frames that never end the block.
        c = self.client().handshake()
        raw = RawReader(c.sock)
        block = never_indexed_block([(":method", "POST"), (":scheme", "http"),
                                     (":authority", "x"), (":path", converse_path("flood"))])
        piece = never_indexed_block([("x-flood", "f" * 100)])
        c._send(frame(HEADERS, 0, 1, block))
        sent = 0
        batch = b"".join(frame(CONTINUATION, 0, 1, piece) for _ in range(20))
        while not raw.closed and raw.goaway() is None and sent < 50000:
            try:
                c.sock.sendall(batch)
            except OSError:  # closed, reset, or no longer read (the socket's 10 s timeout)
                break
            sent += 20
            raw.poll()
        ended = raw.read_until(lambda: raw.closed, 10)
        self.assertTrue(ended, "connection still open after %d CONTINUATION frames" % sent)
        goaway = raw.goaway()
        print("CONTINUATION flood: GOAWAY %s, connection closed; %d frames sent before either "
              "was seen" % (goaway and error_name(goaway[1]), sent))
        if goaway is not None:
            self.assertNotEqual(goaway[1], NO_ERROR, goaway)
        self.assert_serves()

    def test_ping_and_settings_floods_end_the_connection(self):
        # Frames that each oblige the gateway to answer (PING, SETTINGS), sent without reading
        # the answers: the bound on queued acknowledgements ends the connection.
        floods = {"ping": frame(PING, 0, 0, b"12345678"), "settings": frame(SETTINGS, 0, 0)}
        for name, one in floods.items():
            with self.subTest(flood=name):
                c = self.client().handshake()
                sent = 0
                while sent < 200000:
                    try:  # blocks once the gateway stops reading: the socket's 10 s timeout
                        c.sock.sendall(one * 1000)
                    except OSError:  # closed, reset, or no longer read
                        break
                    sent += 1000
                raw = RawReader(c.sock)
                self.assertTrue(raw.read_until(lambda: raw.closed, 20),
                                "connection still open after %d %s frames" % (sent, name))
                goaway = raw.goaway()
                print("%s flood: GOAWAY %s; %d frames sent in all"
                      % (name, goaway and error_name(goaway[1]), sent))
                self.assertIsNotNone(goaway, raw.frames[-5:])
                self.assertEqual(goaway[1], ENHANCE_YOUR_CALM, error_name(goaway[1]))
        self.assert_serves()

    def test_garbage_after_the_preface_is_a_protocol_error(self):
        with socket.create_connection(("127.0.0.1", self.gw.port), timeout=10) as s:
            s.sendall(PREFACE + b"this is not an HTTP/2 frame at all\r\n\r\n")
            raw = RawReader(s)
            self.assertTrue(raw.read_until(lambda: raw.closed, 10),
                            "connection still open: %r" % raw.frames)
            goaway = raw.goaway()
            self.assertIsNotNone(goaway, raw.frames)
            self.assertEqual(goaway[1], PROTOCOL_ERROR, error_name(goaway[1]))
        self.assert_serves()

    def test_a_client_that_leaves_mid_upload(self):
        # A stream whose client goes away half-way through its body: nothing upstream, no leak.
        mark = self.fake.mark()
        c = self.client().handshake()
        c.request("POST", converse_path("h2-abandoned"), JSON, b"{" + b" " * 10000,
                  end_stream=False)
        c.close()
        self.assert_serves()
        self.assert_nothing_upstream(mark, "h2-abandoned")


class Http2Timeouts(GatewayCase):
    LIMITS = {"client_idle_timeout_ms": IDLE_MS}

    def test_idle_connection_gets_goaway(self):
        c = self.client().handshake()
        st = c.wait(c.converse("h2-before-idle"))
        self.assertEqual(st.status, 200, st)
        idle_from = time.monotonic()
        self.assertTrue(c.pump(lambda: c.goaway is not None, IDLE_MS / 1000 + 10),
                        "no GOAWAY on an idle connection (closed=%r)" % c.closed)
        waited = c.goaway_at - idle_from
        self.assertEqual(c.goaway.error_code, NO_ERROR, error_name(c.goaway.error_code))
        self.assertEqual(c.goaway.last_stream_id, 1)
        self.assertGreaterEqual(waited, 0.8 * IDLE_MS / 1000, waited)
        self.assertTrue(c.wait_closed(10), "GOAWAY but the connection stayed open")
        self.assert_serves()

    def test_a_connection_that_never_sends_a_stream_gets_goaway(self):
        c = self.client().handshake()
        self.assertTrue(c.pump(lambda: c.goaway is not None, IDLE_MS / 1000 + 10))
        self.assertEqual(c.goaway.error_code, NO_ERROR, error_name(c.goaway.error_code))
        self.assertTrue(c.wait_closed(10))

    def test_closed_window_stream_is_reset(self):
        # INITIAL_WINDOW_SIZE 0: the answer's DATA can never be sent. After
        # client_idle_timeout_ms the gateway gives the stream up (and logs the client as gone).
        model = "h2-closed-window-%s" % uuid.uuid4().hex[:8]
        c = self.client(settings={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0}).handshake()
        sid = c.converse(model, "a window that never opens")
        st = c.wait(sid, timeout=IDLE_MS / 1000 + 15)
        self.assertIsNotNone(st.reset, st)
        self.assertEqual(st.body, b"")
        waited = time.monotonic() - st.sent_at
        self.assertGreaterEqual(waited, 0.8 * IDLE_MS / 1000, waited)
        # Logged as the client's failure: 499 (client gone), or the status already sent with
        # the client named in the error, as HTTP/1.1 logs a client whose writes time out.
        entry = self.gw.wait_log(lambda e: e.get("model") == model)
        self.assertTrue(entry["status"] == 499 or entry.get("error", "").startswith("client"),
                        entry)
        self.assert_serves()


class Http2GatewayWideStreams(GatewayCase):
    # Open streams count with connections against max_connections.
    LIMITS = {"max_connections": 5}

    def test_streams_beyond_max_connections_are_refused(self):
        # One connection and its streams: 7 streams are over the bound however the connection
        # itself is counted.
        c = self.client().handshake()
        sids = [c.converse("fake-delay-1000", "s%d" % i) for i in range(7)]
        streams = c.wait_all(sids, timeout=30)
        # Refused with REFUSED_STREAM, or answered 503 with Retry-After as HTTP/1.1 answers a
        # connection over the bound: both tell a client to come back.
        refused = [st for st in streams if st.reset == REFUSED_STREAM or (
            st.status == 503 and st.header("x-amzn-errortype") == "ServiceUnavailableException"
            and int(st.header("retry-after")) >= 1)]
        answered = [st for st in streams if st.status == 200]
        self.assertGreaterEqual(len(refused), 2, streams)
        self.assertGreaterEqual(len(answered), 2, streams)
        self.assertEqual(len(refused) + len(answered), len(streams), streams)
        self.assertIsNone(c.goaway)
        c.close()
        self.clients.remove(c)
        self.assert_serves()


class Http2OverTls(GatewayCase):
    """The optional TLS listener: ALPN picks h2 or http/1.1, the same pipeline behind both."""

    @classmethod
    def start_gateway(cls, limits, name):
        pki = bgw_e2e.e2e_pki()
        config = bgw_e2e.base_config(cls.fake.endpoint, limits=dict(limits),
                                     tls={"listen": "127.0.0.1:0", "cert_file": pki["cert"],
                                          "key_file": pki["key"]})
        gw = bgw_e2e.Gateway(cls.binary, config, cls.workdir, name, GATEWAY_KEY, GATEWAY_SECRET)
        cls.addClassCleanup(bgw_e2e.stop_checked, gw)
        (started,) = gw.events("listening")
        cls.tls_port = int(started["tls_address"].rsplit(":", 1)[1])
        return gw

    def tls_socket(self, alpn):
        ctx = bgw_e2e.e2e_ca_context()
        ctx.set_alpn_protocols(alpn)
        raw = socket.create_connection(("127.0.0.1", self.tls_port), timeout=10)
        return ctx.wrap_socket(raw, server_hostname="localhost")

    def test_alpn_h2_converse_and_stream(self):
        sock = self.tls_socket(["h2", "http/1.1"])
        self.assertEqual(sock.selected_alpn_protocol(), "h2")
        c = H2Client(self.tls_port, sock=sock)
        self.clients.append(c)
        c.handshake()
        st = c.wait(c.converse("h2-over-tls", "over TLS"))
        self.assertEqual(st.status, 200, st)
        self.assert_http2_headers(st)
        self.assertEqual(st.json()["output"]["message"]["content"][0]["text"], "over TLS")
        st = c.wait(c.request("POST", "/model/fake-delay-20/converse-stream", JSON,
                              bgw_e2e.converse_body("streamed over TLS")))
        self.assertEqual(st.status, 200, st)
        frames, leftover = bgw_e2e.decode_frames(st.body)
        self.assertEqual(leftover, b"")
        self.assertEqual("".join(json.loads(f["payload"])["delta"]["text"] for f in frames
                                 if f["headers"][":event-type"] == "contentBlockDelta"),
                         "streamed over TLS")

    def test_alpn_http11_on_the_tls_listener(self):
        sock = self.tls_socket(["http/1.1"])
        self.assertEqual(sock.selected_alpn_protocol(), "http/1.1")
        with sock:
            body = bgw_e2e.converse_body("h1 over TLS")
            sock.sendall(b"POST /model/h1-over-tls/converse HTTP/1.1\r\nHost: localhost\r\n"
                         b"Content-Type: application/json\r\nContent-Length: %d\r\n"
                         b"Connection: close\r\n\r\n" % len(body) + body)
            resp = http.client.HTTPResponse(sock)
            resp.begin()
            self.assertEqual(resp.status, 200)
            answer = json.loads(resp.read())
        self.assertEqual(answer["output"]["message"]["content"][0]["text"], "h1 over TLS")


if __name__ == "__main__":
    unittest.main()
