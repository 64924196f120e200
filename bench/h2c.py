"""A minimal HTTP/2 cleartext client for bench/run's idle-connection memory stage (issue 19).

Prior knowledge (RFC 9113 section 3.3): the connection preface, a SETTINGS exchange, at most one
request, PING. Python 3 stdlib only, like the harness: a request's header block is written with
HPACK literals (RFC 7541 section 6.2.2, no Huffman, no dynamic table), which every decoder must
accept, and a response's header block is not decoded: its status is read from the one-byte
static-table forms a server uses for common statuses (`:status 200` is index 8). That is all the
bench needs, and it keeps the client small enough to trust at a glance; h2load does the load.
"""

import asyncio
import struct

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types and flags (RFC 9113 section 6).
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE = 0x0, 0x1, 0x3, 0x4, 0x6, 0x7, 0x8
END_STREAM = ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY = 0x20

SETTINGS_ENABLE_PUSH = 0x2

# HPACK static-table entries a server encodes as one byte (RFC 7541 appendix A, indices 8-14).
STATIC_STATUS = {0x88: 200, 0x89: 204, 0x8a: 206, 0x8b: 304, 0x8c: 400, 0x8d: 404, 0x8e: 500}

PING_PAYLOAD = b"bgwbench"


class H2Error(Exception):
    """The peer did something this client does not expect of a healthy connection."""


def frame(kind, flags, stream, payload=b""):
    """One frame: 24-bit length, type, flags, 31-bit stream id, payload."""
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + \
        struct.pack(">I", stream & 0x7FFFFFFF) + payload


def _hpack_int(value, prefix_bits):
    """An HPACK integer with an N-bit prefix, the prefix's other bits zero (RFC 7541 5.1)."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([value])
    out = bytearray([limit])
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def literal(name, value):
    """A literal header field without indexing, new name, neither string Huffman-coded."""
    name, value = name.encode("latin-1"), value.encode("latin-1")
    return b"\x00" + _hpack_int(len(name), 7) + name + _hpack_int(len(value), 7) + value


def response_status(block):
    """The status of a response header block, or None when it is not in a one-byte form (a
    rarer status: this client does not decode Huffman strings). Leading dynamic-table size
    updates (001xxxxx) are skipped; a server puts :status first (RFC 9113 8.3)."""
    i = 0
    while i < len(block) and block[i] & 0xE0 == 0x20:
        i += 1
        if block[i - 1] & 0x1F == 0x1F:  # a multi-byte size
            while i < len(block) and block[i] & 0x80:
                i += 1
            i += 1
    return STATIC_STATUS.get(block[i]) if i < len(block) else None


class Connection:
    """One h2c connection on asyncio streams. Frames the server sends unasked (its SETTINGS,
    WINDOW_UPDATE) are taken in passing; GOAWAY and a reset of our stream are errors."""

    def __init__(self, reader, writer):
        self.reader = reader
        self.writer = writer
        self.next_stream = 1

    @classmethod
    async def open(cls, host, port):
        """Connects and completes the handshake: our preface and SETTINGS, the server's
        SETTINGS acknowledged, ours acknowledged, and a PING answered (so the server has
        processed everything sent before it when this returns)."""
        reader, writer = await asyncio.open_connection(host, port)
        conn = cls(reader, writer)
        try:
            writer.write(PREFACE + frame(SETTINGS, 0, 0,
                                         struct.pack(">HI", SETTINGS_ENABLE_PUSH, 0)))
            ours_acked = theirs_seen = False
            while not (ours_acked and theirs_seen):
                kind, flags, _, payload = await conn.read_frame()
                if kind == SETTINGS and flags & ACK:
                    ours_acked = True
                elif kind == SETTINGS:
                    theirs_seen = True
                    writer.write(frame(SETTINGS, ACK, 0))
            await conn.ping()
        except BaseException:
            writer.close()
            raise
        return conn

    async def read_frame(self):
        """(type, flags, stream id, payload) of the next frame; GOAWAY raises."""
        head = await self.reader.readexactly(9)
        length = int.from_bytes(head[:3], "big")
        kind, flags = head[3], head[4]
        stream = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
        payload = await self.reader.readexactly(length) if length else b""
        if kind == GOAWAY:
            code = int.from_bytes(payload[4:8], "big") if len(payload) >= 8 else -1
            raise H2Error("GOAWAY (error code %d): %r" % (code, payload[8:200]))
        if kind == PING and not flags & ACK:
            self.writer.write(frame(PING, ACK, 0, payload))
        return kind, flags, stream, payload

    async def ping(self):
        """A PING and its ACK: proves the connection is open and served."""
        self.writer.write(frame(PING, 0, 0, PING_PAYLOAD))
        while True:
            kind, flags, _, payload = await self.read_frame()
            if kind == PING and flags & ACK and payload == PING_PAYLOAD:
                return

    async def request(self, method, authority, path, headers, body):
        """Sends one request on a new stream and reads its response to the end:
        (status or None, body bytes). `headers` are (name, value) pairs, names lowercase."""
        sid = self.next_stream
        self.next_stream += 2
        block = b"".join(literal(n, v) for n, v in
                         [(":method", method), (":scheme", "http"), (":authority", authority),
                          (":path", path)] + list(headers) +
                         [("content-length", str(len(body)))])
        # One HEADERS and one DATA frame: the bench's bodies fit the default 16 KiB frame and
        # 64 KiB window, which the server must accept before its SETTINGS arrive.
        self.writer.write(frame(HEADERS, END_HEADERS | (0 if body else END_STREAM), sid, block) +
                          (frame(DATA, END_STREAM, sid, body) if body else b""))
        status, data = None, bytearray()
        while True:
            kind, flags, stream, payload = await self.read_frame()
            if stream != sid:
                continue
            if kind == RST_STREAM:
                raise H2Error("stream %d reset (error code %d)"
                              % (sid, int.from_bytes(payload[:4], "big")))
            if kind in (HEADERS, DATA) and flags & PADDED:
                payload = payload[1:len(payload) - payload[0]]
            if kind == HEADERS and status is None:
                status = response_status(payload[5:] if flags & PRIORITY else payload)
            elif kind == DATA:
                data += payload
                if payload:  # give the window back, as a client that stays open would
                    inc = struct.pack(">I", len(payload))
                    self.writer.write(frame(WINDOW_UPDATE, 0, 0, inc))
                    if not flags & END_STREAM:  # a closed stream takes no more frames
                        self.writer.write(frame(WINDOW_UPDATE, 0, sid, inc))
            if flags & END_STREAM and kind in (HEADERS, DATA):
                return status, bytes(data)

    def close(self):
        self.writer.close()
