"""A scriptable raw-socket fake upstream for fault injection (issue 10).

The C++ fake (tests/fakes/fake_bedrock.hpp) is a well-behaved HTTP server: it cannot reset a
connection before the status line, send bytes that are not HTTP, or stop half-way through a
Content-Length body. This one can, because it writes the bytes itself. It accepts any signature
(the C++ fake judges those) but otherwise speaks real HTTP/1.1: status lines, Content-Length or
chunked bodies, Bedrock's `x-amzn-ErrorType` / `x-amzn-RequestId`, and for the streaming
operations real AWS event-stream frames with correct CRCs (prelude total_len, headers_len,
prelude CRC, headers, payload, message CRC; zlib.crc32 is the CRC-32 the format uses).

The model id in `/model/{modelId}/{operation}` picks the script:

  fault-ok                       200, a small JSON body (or a complete event stream for the
                                 streaming operations); connection kept alive
  fault-error-<status>-<Code>    that status with `x-amzn-ErrorType: <Code>` and `{"message"}`
  fault-reset-before-headers     reads the request, then resets the connection (RST, no byte)
  fault-reset-after-headers      a 200 head announcing a Content-Length body, then RST
  fault-close-mid-body           a 200 head, half the Content-Length body, then a clean FIN
  fault-garbage                  bytes that are not an HTTP response, then a close
  fault-huge-head                a 200 head with a 200 KiB header (over any sane head limit)
  fault-stall                    reads the request and never answers (until the peer leaves)
  fault-stall-body               a 200 head and part of a Content-Length body, then silence
  fault-stream-reset             an event stream: two events, then RST mid-body
  fault-stream-corrupt           an event stream: one event, then a frame whose message CRC is
                                 wrong, then silence (until the peer leaves)
  fault-stream-stall             an event stream: one event, then silence

Everything else answers like `fault-ok`. Every request is recorded (`requests()`: model,
operation, whether its body arrived whole) before its script runs; `open_connections()` counts
connections the fake still holds, and `peer_closed` events let a test see the gateway give up on
an upstream connection. Silences end when the peer closes or the fake stops, never by a sleep.

Run alone (`python3 fault_upstream.py`) it prints `listening on 127.0.0.1:PORT` and serves until
SIGTERM / SIGINT, like the C++ fake.
"""

import fcntl
import json
import re
import select
import socket
import struct
import sys
import termios
import threading
import time
import uuid
import zlib

MODEL_PATH = re.compile(r"^/model/([^/]+)/([^/?]+)")
STREAM_OPERATIONS = ("invoke-with-response-stream", "converse-stream")
MAX_HEAD = 256 * 1024
IO_TIMEOUT_S = 30.0  # a socket operation the fake starts never waits longer than this


# ---- AWS event-stream encoding -----------------------------------------------------------------

def _string_header(name, value):
    n = name.encode()
    v = value.encode()
    return struct.pack(">B", len(n)) + n + struct.pack(">BH", 7, len(v)) + v


def event_frame(headers, payload, corrupt_crc=False):
    """One event-stream message: headers is a list of (name, string value)."""
    hbytes = b"".join(_string_header(k, v) for k, v in headers)
    total = 12 + len(hbytes) + len(payload) + 4
    prelude = struct.pack(">II", total, len(hbytes))
    prelude += struct.pack(">I", zlib.crc32(prelude) & 0xFFFFFFFF)
    message = prelude + hbytes + payload
    crc = zlib.crc32(message) & 0xFFFFFFFF
    if corrupt_crc:
        crc ^= 0xDEADBEEF
    return message + struct.pack(">I", crc)


def event(event_type, payload_obj, corrupt_crc=False):
    return event_frame([(":event-type", event_type), (":content-type", "application/json"),
                        (":message-type", "event")],
                       json.dumps(payload_obj, separators=(",", ":")).encode(), corrupt_crc)


def converse_stream_events(text="fault upstream says hi"):
    words = text.split(" ")
    frames = [event("messageStart", {"role": "assistant", "p": "abc"})]
    for i, w in enumerate(words):
        frames.append(event("contentBlockDelta", {
            "contentBlockIndex": 0, "delta": {"text": w if i == 0 else " " + w}, "p": "x"}))
    frames += [event("contentBlockStop", {"contentBlockIndex": 0, "p": "x"}),
               event("messageStop", {"stopReason": "end_turn", "p": "x"}),
               event("metadata", {"usage": {"inputTokens": 5, "outputTokens": len(words),
                                            "totalTokens": 5 + len(words)},
                                  "metrics": {"latencyMs": 1}, "p": "x"})]
    return frames


# ---- the server --------------------------------------------------------------------------------

class Request:
    def __init__(self, method, target, headers, body, complete):
        self.method = method
        self.target = target
        self.headers = headers  # lower-case name -> value
        self.body = body
        self.complete = complete
        m = MODEL_PATH.match(target)
        self.model = m.group(1).replace("%3A", ":").replace("%3a", ":") if m else ""
        self.operation = m.group(2) if m else ""

    def __repr__(self):
        return "Request(%s %s, %d body bytes)" % (self.method, self.target, len(self.body))


class _Conn:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""


class FaultUpstream:
    def __init__(self, tls_context=None):
        """tls_context: an ssl.SSLContext to serve HTTPS with (the handshake happens on the
        connection's own thread; a failed one is counted in tls_failures())."""
        self._tls = tls_context
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(256)
        self.port = self._listener.getsockname()[1]
        self._stop_r, self._stop_w = socket.socketpair()
        self._lock = threading.Condition()
        self._requests = []
        self._open = 0
        self._peer_closes = 0
        self._first_bytes = []
        self._tls_failures = 0
        self._threads = []
        self._acceptor = threading.Thread(target=self._accept_loop, name="fault-upstream",
                                          daemon=True)
        self._acceptor.start()

    @property
    def endpoint(self):
        return "http://127.0.0.1:%d" % self.port

    # -- observations (thread-safe) --

    def requests(self):
        with self._lock:
            return list(self._requests)

    def open_connections(self):
        with self._lock:
            return self._open

    def peer_closes(self):
        """How many times a silence (stall) ended because the gateway closed the connection."""
        with self._lock:
            return self._peer_closes

    def first_bytes(self):
        """The first byte each connection sent (0x16 opens a TLS handshake; a letter such as
        b"P" is a plaintext HTTP request), in accept order; None for a connection closed
        before sending anything."""
        with self._lock:
            return list(self._first_bytes)

    def tls_failures(self):
        with self._lock:
            return self._tls_failures

    def wait(self, predicate, timeout):
        """Waits until predicate(self) is true; False after `timeout` seconds."""
        with self._lock:
            return self._lock.wait_for(lambda: predicate(self), timeout)

    def wait_requests(self, count, timeout=10.0):
        if not self.wait(lambda s: len(s._requests) >= count, timeout):
            raise AssertionError("fault upstream saw %d request(s), expected %d"
                                 % (len(self.requests()), count))
        return self.requests()

    # -- lifecycle --

    def stop(self):
        try:
            self._stop_w.send(b"x")
        except OSError:
            pass
        self._acceptor.join(IO_TIMEOUT_S)
        for t in list(self._threads):
            t.join(IO_TIMEOUT_S)
        self._listener.close()
        self._stop_r.close()
        self._stop_w.close()

    def _accept_loop(self):
        while True:
            readable, _, _ = select.select([self._listener, self._stop_r], [], [])
            if self._stop_r in readable:
                return
            try:
                sock, _ = self._listener.accept()
            except OSError:
                continue
            with self._lock:
                self._open += 1
                self._threads = [t for t in self._threads if t.is_alive()]
                t = threading.Thread(target=self._serve, args=(sock,), daemon=True)
                self._threads.append(t)
            t.start()

    # -- one connection --

    def _serve(self, sock):
        sock.settimeout(IO_TIMEOUT_S)
        try:
            first = None
            readable, _, _ = select.select([sock, self._stop_r], [], [], IO_TIMEOUT_S)
            if sock in readable:
                first = sock.recv(1, socket.MSG_PEEK) or None
            with self._lock:
                self._first_bytes.append(first)
                self._lock.notify_all()
            if first is None:
                return
            if self._tls is None and first == b"\x16":
                # A TLS ClientHello at a plaintext server: answer as nginx and friends do.
                sock.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
                             b"Connection: close\r\n\r\n")
                return
            if self._tls is not None:
                try:
                    sock = self._tls.wrap_socket(sock, server_side=True)
                except (OSError, ValueError):
                    with self._lock:
                        self._tls_failures += 1
                        self._lock.notify_all()
                    return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Conn(sock)
            while True:
                req = self._read_request(conn)
                if req is None:
                    return
                with self._lock:
                    self._requests.append(req)
                    self._lock.notify_all()
                if not self._answer(conn, req):
                    return
        except OSError:
            return
        finally:
            try:
                sock.close()
            except OSError:
                pass
            with self._lock:
                self._open -= 1
                self._lock.notify_all()

    def _wait_readable(self, conn, timeout=None):
        """True when data or EOF is readable, False when the fake is stopping or timed out."""
        if getattr(conn.sock, "pending", lambda: 0)():
            return True  # TLS: already decrypted, select() cannot see it
        readable, _, _ = select.select([conn.sock, self._stop_r], [], [], timeout)
        return conn.sock in readable and self._stop_r not in readable

    def _recv(self, conn):
        if not self._wait_readable(conn, IO_TIMEOUT_S):
            return b""
        return conn.sock.recv(65536)

    def _read_request(self, conn):
        while b"\r\n\r\n" not in conn.buf:
            if len(conn.buf) > MAX_HEAD:
                return None
            data = self._recv(conn)
            if not data:
                return None
            conn.buf += data
        head, conn.buf = conn.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            return None
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        body = b""
        complete = True
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body, complete = self._read_chunked(conn)
        else:
            length = int(headers.get("content-length", "0") or 0)
            while len(conn.buf) < length:
                data = self._recv(conn)
                if not data:
                    complete = False
                    break
                conn.buf += data
            body, conn.buf = conn.buf[:length], conn.buf[length:]
        return Request(parts[0], parts[1], headers, body, complete)

    def _read_chunked(self, conn):
        body = b""
        while True:
            while b"\r\n" not in conn.buf:
                data = self._recv(conn)
                if not data:
                    return body, False
                conn.buf += data
            size_line, conn.buf = conn.buf.split(b"\r\n", 1)
            size = int(size_line.split(b";")[0], 16)
            while len(conn.buf) < size + 2:
                data = self._recv(conn)
                if not data:
                    return body, False
                conn.buf += data
            body += conn.buf[:size]
            conn.buf = conn.buf[size + 2:]
            if size == 0:
                return body, True

    @staticmethod
    def _head(status, reason, headers):
        lines = ["HTTP/1.1 %d %s" % (status, reason)]
        lines += ["%s: %s" % kv for kv in headers]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    @staticmethod
    def _reset(conn):
        """Closes with RST instead of FIN (SO_LINGER with a zero timeout), once everything
        written so far has left and been acknowledged: an abortive close discards a send
        queue, so without this wait the bytes "before the reset" might never be sent."""
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            queued = struct.unpack("i", fcntl.ioctl(conn.sock.fileno(), termios.TIOCOUTQ,
                                                    b"\0\0\0\0"))[0]
            if queued == 0:
                break
            time.sleep(0.001)  # the kernel's send queue has no event to wait on
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.sock.close()

    def _hold(self, conn):
        """Silence until the peer closes (or the fake stops); reads and drops what arrives."""
        while self._wait_readable(conn):
            try:
                if not conn.sock.recv(65536):
                    with self._lock:
                        self._peer_closes += 1
                        self._lock.notify_all()
                    return
            except OSError:
                with self._lock:
                    self._peer_closes += 1
                    self._lock.notify_all()
                return

    def _answer(self, conn, req):
        """Writes the scripted answer; True when the connection may serve another request."""
        rid = str(uuid.uuid4())
        model = req.model
        streaming = req.operation in STREAM_OPERATIONS
        s = conn.sock
        if model == "fault-reset-before-headers":
            self._reset(conn)
            return False
        if model == "fault-garbage":
            s.sendall(b"SSH-2.0-OpenSSH_9.2 this is not HTTP\r\n\x00\xff\xfe garbage\r\n\r\n")
            return False
        if model == "fault-huge-head":
            s.sendall(self._head(200, "OK", [("Content-Type", "application/json"),
                                             ("x-amzn-RequestId", rid),
                                             ("X-Padding", "p" * (200 * 1024)),
                                             ("Content-Length", "2")]) + b"{}")
            return False
        if model == "fault-stall":
            self._hold(conn)
            return False
        m = re.match(r"^fault-error-(\d{3})-([A-Za-z0-9]+)$", model)
        if m:
            body = json.dumps({"message": "fault upstream scripted %s" % m.group(2)}).encode()
            s.sendall(self._head(int(m.group(1)), "Scripted", [
                ("Content-Type", "application/json"), ("x-amzn-RequestId", rid),
                ("x-amzn-ErrorType", m.group(2) + ":http://internal.amazon.com/coral/"),
                ("Content-Length", str(len(body)))]) + body)
            return True
        if model in ("fault-reset-after-headers", "fault-close-mid-body", "fault-stall-body"):
            body = json.dumps({"output": "x" * 4000}).encode()
            s.sendall(self._head(200, "OK", [("Content-Type", "application/json"),
                                             ("x-amzn-RequestId", rid),
                                             ("Content-Length", str(len(body)))]))
            if model == "fault-reset-after-headers":
                self._reset(conn)
            elif model == "fault-close-mid-body":
                s.sendall(body[:len(body) // 2])
                s.shutdown(socket.SHUT_WR)
                self._hold(conn)
            else:
                s.sendall(body[:len(body) // 2])
                self._hold(conn)
            return False
        if streaming:
            return self._answer_stream(conn, req, rid)
        body = json.dumps({"output": {"message": {"role": "assistant", "content": [
            {"text": "fault upstream ok"}]}}, "stopReason": "end_turn",
            "usage": {"inputTokens": 1, "outputTokens": 3, "totalTokens": 4},
            "metrics": {"latencyMs": 1}}).encode()
        s.sendall(self._head(200, "OK", [("Content-Type", "application/json"),
                                         ("x-amzn-RequestId", rid),
                                         ("Content-Length", str(len(body)))]) + body)
        return req.complete

    def _answer_stream(self, conn, req, rid):
        s = conn.sock
        frames = converse_stream_events()
        s.sendall(self._head(200, "OK", [("Content-Type", "application/vnd.amazon.eventstream"),
                                         ("x-amzn-RequestId", rid),
                                         ("Transfer-Encoding", "chunked")]))

        def chunk(data):
            s.sendall(b"%x\r\n" % len(data) + data + b"\r\n")

        if req.model == "fault-stream-reset":
            for f in frames[:2]:
                chunk(f)
            self._reset(conn)
            return False
        if req.model == "fault-stream-corrupt":
            chunk(frames[0])
            chunk(event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "bad"},
                                              "p": "x"}, corrupt_crc=True))
            self._hold(conn)
            return False
        if req.model == "fault-stream-stall":
            chunk(frames[0])
            self._hold(conn)
            return False
        for f in frames:
            chunk(f)
        s.sendall(b"0\r\n\r\n")
        return req.complete


def main():
    import signal
    server = FaultUpstream()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    print("listening on 127.0.0.1:%d" % server.port, flush=True)
    done.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
