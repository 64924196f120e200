"""Process plumbing for the end-to-end tests: the fake upstream, the gateway, raw HTTP.

Both child processes announce readiness with a `listening on 127.0.0.1:PORT` line on stdout.
Their output is drained continuously on threads (a child blocked on a full pipe would look like
a hung gateway) and every wait has a deadline, so a broken build fails loudly instead of hanging.
"""

import atexit
import http.client
import json
import os
import random
import re
import select
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
import time
import types
import uuid
import zlib

LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")

# Lines that mean a sanitizer found something (ASan, LSan, UBSan, TSan).
SANITIZER_MARKERS = (
    "ERROR: AddressSanitizer",
    "ERROR: LeakSanitizer",
    "runtime error:",
    "UndefinedBehaviorSanitizer",
    "WARNING: ThreadSanitizer",
)

STARTUP_TIMEOUT_S = 30.0  # generous: sanitizer builds start slowly on a shared 2-core machine
STOP_TIMEOUT_S = 10.0


# ---- fixtures the suites share ----

# Read only (shared by every suite): extend it as dict(JSON_HEADERS, **more).
JSON_HEADERS = types.MappingProxyType({"Content-Type": "application/json"})


def converse_body(text="x"):
    """A minimal Converse request body, as bytes: one user message saying `text`."""
    return json.dumps({"messages": [{"role": "user", "content": [{"text": text}]}]}).encode()


def class_workdir(test_class, prefix):
    """A temporary directory for a test class's files, removed once the class is done (the
    cleanup registered first, so it runs after every later one), with this process's SDK
    clients isolated in it."""
    workdir = tempfile.mkdtemp(prefix=prefix)
    test_class.addClassCleanup(shutil.rmtree, workdir, ignore_errors=True)
    isolate_sdk_environment(workdir)
    return workdir


def base_config(regions, **settings):
    """The config every suite starts from: the gateway on an ephemeral loopback port, us-east-1
    the default region. `regions` is us-east-1's endpoint URL, or a map from a region to its
    endpoint URL or to its whole settings; `settings` adds or replaces top-level keys."""
    if isinstance(regions, str):
        regions = {"us-east-1": regions}
    config = {
        "listen": "127.0.0.1:0",
        "default_region": "us-east-1",
        "regions": {name: value if isinstance(value, dict) else {"endpoint": value}
                    for name, value in regions.items()},
    }
    config.update(settings)
    return config


def required_env(name):
    """A variable ctest sets (tests/CMakeLists.txt); a clear failure when run some other way."""
    value = os.environ.get(name)
    if not value:
        raise AssertionError("%s is not set; run this through ctest (see tests/CMakeLists.txt)"
                             % name)
    return value


def isolate_sdk_environment(workdir):
    """This process's own SDK clients must not read the developer's ~/.aws, call IMDS or pick
    up credentials from the environment."""
    os.environ["AWS_CONFIG_FILE"] = os.path.join(workdir, "no-config")
    os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.path.join(workdir, "no-credentials")
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_PROFILE", "AWS_DEFAULT_REGION", "AWS_REGION"):
        os.environ.pop(name, None)


class LineCollector:
    """Reads a pipe to EOF on a daemon thread and keeps every line for later assertions."""

    def __init__(self, stream, name):
        self._lines = []
        self._eof = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, args=(stream,), name=name, daemon=True)
        self._thread.start()

    def _run(self, stream):
        for raw in iter(stream.readline, b""):
            with self._cond:
                self._lines.append(raw.decode("utf-8", "replace").rstrip("\r\n"))
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def lines(self):
        with self._cond:
            return list(self._lines)

    def wait_for(self, predicate, timeout):
        """Returns predicate(lines) once it is not None; None at EOF or after `timeout` s."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = predicate(self._lines)
                if found is not None:
                    return found
                remaining = deadline - time.monotonic()
                if self._eof or remaining <= 0:
                    return None
                self._cond.wait(remaining)

    def join(self, timeout):
        self._thread.join(timeout)


class ChildProcess:
    """A child whose stdout/stderr are collected, started and stopped with deadlines."""

    def __init__(self, name, argv, env=None):
        self.name = name
        self.argv = argv
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=env)
        self.stdout = LineCollector(self.proc.stdout, name + "-stdout")
        self.stderr = LineCollector(self.proc.stderr, name + "-stderr")
        self.port = None

    def output(self):
        return "\n".join(["--- stdout:"] + self.stdout.lines() + ["--- stderr:"] +
                         self.stderr.lines())

    def wait_listening(self, timeout=STARTUP_TIMEOUT_S):
        def find(lines):
            for line in lines:
                m = LISTENING.search(line)
                if m:
                    return int(m.group(1))
            return None

        port = self.stdout.wait_for(find, timeout)
        if port is None:
            self.kill()
            raise AssertionError(
                "%s did not print 'listening on 127.0.0.1:PORT' within %.0f s (exit code %r)\n"
                "argv: %s\n%s" % (self.name, timeout, self.proc.poll(), self.argv, self.output()))
        self.port = port
        return port

    def alive(self):
        return self.proc.poll() is None

    def sanitizer_reports(self):
        return [line for line in self.stdout.lines() + self.stderr.lines()
                if any(marker in line for marker in SANITIZER_MARKERS)]

    def stop(self, timeout=STOP_TIMEOUT_S):
        """SIGTERM, then wait; kills and raises if the process does not exit in time."""
        hung = False
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                hung = True
                self.kill()
        self.stdout.join(timeout)
        self.stderr.join(timeout)
        self.proc.stdout.close()
        self.proc.stderr.close()
        if hung:
            raise AssertionError("%s did not exit within %.0f s of SIGTERM\n%s"
                                 % (self.name, timeout, self.output()))
        return self.proc.returncode

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


_PKI = None


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE, timeout=60)


def e2e_pki():
    """A test CA and a certificate it signed for 127.0.0.1 and localhost, made once per test
    process with the openssl command (not the gateway's code): {"ca", "cert", "key"} paths.
    Bedrock is HTTPS only, so the fakes serve TLS by default and gateways trust this CA."""
    global _PKI
    if _PKI is None:
        d = tempfile.mkdtemp(prefix="bgw-e2e-pki-")
        atexit.register(shutil.rmtree, d, True)
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
        _openssl("req", "-x509", *ec, "-days", "2", "-subj", "/CN=bedrock-gateway e2e CA",
                 "-keyout", "ca.key", "-out", "ca.pem", cwd=d)
        _openssl("req", *ec, "-subj", "/CN=localhost", "-keyout", "server.key",
                 "-out", "server.csr", cwd=d)
        with open(os.path.join(d, "server.ext"), "w", encoding="ascii") as f:
            f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
        _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "2", "-extfile", "server.ext", "-out", "server.pem",
                 cwd=d)
        _PKI = {name: os.path.join(d, file) for name, file in
                (("ca", "ca.pem"), ("cert", "server.pem"), ("key", "server.key"))}
    return _PKI


def e2e_leaf(name):
    """Another certificate the test CA signed for 127.0.0.1 and localhost, with its own key and
    serial (a certificate rotation: the TLS listener's reload tests): {"cert", "key"} paths in
    e2e_pki()'s directory, made once per name and test process."""
    pki = e2e_pki()
    d = os.path.dirname(pki["ca"])
    cert, key = os.path.join(d, name + ".pem"), os.path.join(d, name + ".key")
    if not os.path.exists(cert):
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
        _openssl("req", *ec, "-subj", "/CN=localhost", "-keyout", name + ".key",
                 "-out", name + ".csr", cwd=d)
        _openssl("x509", "-req", "-in", name + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "2", "-extfile", "server.ext", "-out", name + ".pem",
                 cwd=d)
    return {"cert": cert, "key": key}


def e2e_ca_context():
    """An ssl context for this process's own clients that trusts the test CA."""
    return ssl.create_default_context(cafile=e2e_pki()["ca"])


class FakeBedrock(ChildProcess):
    """tests/fakes/fake_bedrock_main.cpp: logs one JSON line per request it received.

    It serves HTTPS (test_pki's certificate) unless tls=False: every real upstream is TLS.
    rcvbuf gives it a small receive window, so the gateway's writes to it are partial."""

    def __init__(self, binary, access_key, secret_key, regions, session_token=None,
                 extra_args=(), tls=True, rcvbuf=None):
        argv = [binary, "--access-key", access_key, "--secret-key", secret_key,
                "--regions", ",".join(regions)]
        if session_token:
            argv += ["--session-token", session_token]
        if tls:
            argv += ["--tls-cert", e2e_pki()["cert"], "--tls-key", e2e_pki()["key"]]
        if rcvbuf:
            argv += ["--rcvbuf", str(rcvbuf)]
        argv += list(extra_args)
        super().__init__("fake_bedrock", argv)
        self.tls = tls
        self.wait_listening()

    @property
    def endpoint(self):
        return "%s://127.0.0.1:%d" % ("https" if self.tls else "http", self.port)

    def connection(self, timeout=10.0):
        """An http.client connection straight to the fake (TLS when it serves TLS)."""
        if self.tls:
            return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout,
                                               context=e2e_ca_context())
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    @staticmethod
    def _parse(lines, event=None):
        """Request lines (event=None) or the lines of one event kind ("stream_end")."""
        out = []
        for line in lines:
            if line.startswith("{"):
                obj = json.loads(line)
                if obj.get("event") == event:
                    out.append(obj)
        return out

    @classmethod
    def _stream_ends(cls, lines, request_id=None):
        ends = cls._parse(lines, "stream_end")
        return ends if request_id is None else [e for e in ends if e["requestId"] == request_id]

    def stream_outcomes(self, request_id=None):
        """The stream_end lines so far (of one request, when `request_id` is given)."""
        return self._stream_ends(self.stdout.lines(), request_id)

    def wait_stream_outcome(self, request_id, timeout=10.0):
        """The stream_end line of the stream whose request id is `request_id`, once it is there.

        Waiting for the next stream_end line is not enough: a stream from an earlier test may
        end first and would be taken for this one."""
        match = self.stdout.wait_for(lambda lines: self._stream_ends(lines, request_id) or None,
                                     timeout)
        if match is None:
            raise AssertionError("fake_bedrock has no stream_end for request %s; it has %r"
                                 % (request_id, self.stream_outcomes()))
        if len(match) != 1:
            raise AssertionError("fake_bedrock ended request %s %d times"
                                 % (request_id, len(match)))
        return match[0]

    SYNC_PREFIX = "/__bgw_e2e_sync/"

    def _requests_in(self, lines):
        return [r for r in self._parse(lines)
                if not r.get("target", "").startswith(self.SYNC_PREFIX)]

    def requests(self):
        return self._requests_in(self.stdout.lines())

    def sync(self, timeout=10.0):
        """Returns once every request the fake has logged so far is in requests(). The fake
        writes its line before answering, but this process reads that output on a thread that
        may lag: a request of our own, sent straight to the fake, marks the point in the
        stream, and waiting for its line waits for everything logged before it."""
        token = uuid.uuid4().hex
        conn = self.connection(timeout)
        try:
            conn.request("GET", self.SYNC_PREFIX + token)
            conn.getresponse().read()
        finally:
            conn.close()
        seen = self.stdout.wait_for(
            lambda lines: any(token in line for line in lines) or None, timeout)
        if seen is None:
            raise AssertionError("fake_bedrock never logged the sync request\n" + self.output())

    def mark(self):
        """The number of requests seen so far; pass it to wait_requests() after acting."""
        self.sync()
        return len(self.requests())

    def wait_requests(self, mark, count=1, timeout=10.0):
        """The requests after `mark`, once there are at least `count` of them."""
        def enough(lines):
            seen = self._requests_in(lines)[mark:]
            return seen if len(seen) >= count else None

        seen = self.stdout.wait_for(enough, timeout)
        if seen is None:
            raise AssertionError("fake_bedrock saw %d request(s) after mark %d, expected %d"
                                 % (len(self.requests()) - mark, mark, count))
        return seen


class Gateway(ChildProcess):
    """The real gateway binary with a config file and credentials from the environment.

    access_key=None leaves AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY out (the gateway must find
    credentials elsewhere); env_extra adds variables last, a None value removing one (such as
    AWS_EC2_METADATA_DISABLED)."""

    def __init__(self, binary, config, workdir, name, access_key=None, secret_key=None,
                 env_extra=None, args=()):
        config = trust_test_ca(config)
        path = os.path.join(workdir, name + ".json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2)
        # Only the credentials we mean to give it: nothing inherited from the developer's
        # environment or ~/.aws may leak into what the gateway signs with.
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update({"AWS_EC2_METADATA_DISABLED": "true", "HOME": workdir})
        if access_key is not None:
            env.update({"AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key})
        for k, v in (env_extra or {}).items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
        super().__init__(name, [binary, "--config", path] + list(args), env)
        self.config = config
        self.config_path = path
        self.text_log = (config.get("log_format") == "text" or
                         env.get("BEDROCK_GATEWAY_LOG_FORMAT") == "text" or
                         "text" in list(args))
        self.wait_listening()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def events(self, name=None):
        """The gateway's log lines (one JSON object each) of the event `name`, or all of them."""
        out = []
        for line in self.stdout.lines():
            if line.startswith("{"):
                obj = json.loads(line)
                if name is None or obj.get("event") == name:
                    out.append(obj)
        return out

    def request_logs(self):
        """The gateway's per-request log lines (`{"time":..,"event":"request",...}`)."""
        return self.events("request")

    def wait_log(self, predicate, timeout=10.0):
        """The first request log line that satisfies `predicate`, once it is written (the
        line follows the response, so a client may hold its answer before the line exists)."""
        def find(_lines):
            for entry in self.request_logs():
                if predicate(entry):
                    return entry
            return None

        entry = self.stdout.wait_for(find, timeout)
        if entry is None:
            raise AssertionError("%s wrote no matching request log line\n%s"
                                 % (self.name, self.output()))
        return entry


def gateway_event(gateway, name, count=1, timeout=10.0):
    """The `count`-th log line of the lifecycle event `name` (`tls_reloaded`, ...) of
    `gateway`, once it is written; raises with the gateway's output after `timeout` s."""
    def find(lines):
        got = [json.loads(x) for x in lines
               if x.startswith("{") and '"event":"%s"' % name in x]
        got = [obj for obj in got if obj.get("event") == name]
        return got[count - 1] if len(got) >= count else None

    found = gateway.stdout.wait_for(find, timeout)
    if found is None:
        raise AssertionError("%s wrote no %d-th %r line within %.0f s\n%s"
                             % (gateway.name, count, name, timeout, gateway.output()))
    return found


def tls_port(gateway):
    """The TLS listener's port, from the `tls_address` of the gateway's `listening` line."""
    listening = gateway.events("listening")
    if len(listening) != 1 or "tls_address" not in listening[0]:
        raise AssertionError("%s's listening line has no tls_address\n%s"
                             % (gateway.name, gateway.output()))
    return int(listening[0]["tls_address"].rsplit(":", 1)[1])


def _names_https_loopback(value):
    if isinstance(value, dict):
        return any(_names_https_loopback(v) for v in value.values())
    if isinstance(value, list):
        return any(_names_https_loopback(v) for v in value)
    return isinstance(value, str) and value.startswith(("https://127.0.0.1:", "https://localhost:"))


def trust_test_ca(config):
    """`config` with upstream.ca_file set to the test CA when its regions name an https
    endpoint on this machine (a TLS fake) and it does not choose a CA file itself (an empty
    one means the system's store, which cannot know the test CA)."""
    if not _names_https_loopback(config.get("regions", {})):
        return config
    upstream = dict(config.get("upstream", {}))
    if upstream.get("ca_file"):
        return config
    upstream["ca_file"] = e2e_pki()["ca"]
    return dict(config, upstream=upstream)


def stop_checked(gateway, exit_codes=(0, -15)):
    """Stops `gateway` (SIGTERM) and raises if it printed a sanitizer report or exited with a
    code outside `exit_codes`. Returns the exit code."""
    code = gateway.stop()
    reports = gateway.sanitizer_reports()
    if reports:
        raise AssertionError("%s printed a sanitizer report:\n%s\n%s"
                             % (gateway.name, "\n".join(reports), gateway.output()))
    if code not in exit_codes:
        raise AssertionError("%s exited with %r after SIGTERM\n%s"
                             % (gateway.name, code, gateway.output()))
    check_json_log(gateway)
    return code


def check_json_log(gateway):
    """Every line the gateway wrote to stdout (the JSON log format, the default) is one JSON
    object with time, level and event: a log shipper never meets a line it cannot parse."""
    if getattr(gateway, "text_log", False):
        return
    for line in gateway.stdout.lines():
        try:
            obj = json.loads(line)
        except ValueError as e:
            raise AssertionError("%s wrote a log line that is not JSON (%s): %r"
                                 % (gateway.name, e, line))
        missing = [k for k in ("time", "level", "event") if k not in obj]
        if not isinstance(obj, dict) or missing:
            raise AssertionError("%s log line lacks %s: %r" % (gateway.name, missing, line))


def closed_port():
    """A port nobody listens on. The socket stays bound (never listening) so connecting to it
    is refused and no other process can take the port while the test runs. Close it after use."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    return s


class RawResponse:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # lower-case name -> value
        self.body = body

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def error_code(self):
        """The code part of x-amzn-ErrorType, as botocore reads it."""
        return self.headers.get("x-amzn-errortype", "").split(":", 1)[0]

    def __repr__(self):
        return "RawResponse(%d, %r, %r)" % (self.status, self.headers, self.body[:300])


def raw_exchange(port, head, body=b"", timeout=30.0):
    """Writes bytes to the gateway exactly as given (no client-side normalisation) and parses
    the one response. The body is sent in pieces and sending stops as soon as the gateway
    answers, as a real client does when a server rejects an upload early."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(head)
        view = memoryview(body)
        deadline = time.monotonic() + timeout
        while view:
            readable, writable, _ = select.select([s], [s], [], max(0.0, deadline - time.monotonic()))
            if readable:
                break  # the answer (or a close) is already here
            if not writable:
                raise AssertionError("gateway neither read the body nor answered within %s s"
                                     % timeout)
            try:
                sent = s.send(view[:65536])
            except (BrokenPipeError, ConnectionResetError):
                break
            view = view[sent:]
        resp = http.client.HTTPResponse(s)
        resp.begin()
        data = resp.read()
        return RawResponse(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)


def http_request(port, method, path, body=b"", headers=None, timeout=30.0):
    """One request with http.client, which sends the path bytes unchanged (':' stays raw)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return RawResponse(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
    finally:
        conn.close()


# ---- shared with scripts/soak.py: the client's view of a stream, and a process's fds ----

def decode_frames(data):
    """Frames in `data`, each {"headers": {...}, "payload": bytes}; checks both CRCs. Returns
    (frames, leftover bytes). A frame that does not decode raises ValueError."""
    frames = []
    while len(data) >= 12:
        total, hlen, pcrc = struct.unpack(">III", data[:12])
        if zlib.crc32(data[:8]) & 0xFFFFFFFF != pcrc:
            raise ValueError("prelude CRC mismatch in a frame the client received")
        if len(data) < total:
            break
        frame, data = data[:total], data[total:]
        (mcrc,) = struct.unpack(">I", frame[-4:])
        if zlib.crc32(frame[:-4]) & 0xFFFFFFFF != mcrc:
            raise ValueError("message CRC mismatch in a frame the client received")
        headers, pos, hend = {}, 12, 12 + hlen
        while pos < hend:
            nlen = frame[pos]
            name = frame[pos + 1:pos + 1 + nlen].decode()
            pos += 1 + nlen
            vtype = frame[pos]
            pos += 1
            if vtype != 7:
                raise ValueError("unexpected header type %d" % vtype)
            (vlen,) = struct.unpack(">H", frame[pos:pos + 2])
            headers[name] = frame[pos + 2:pos + 2 + vlen].decode()
            pos += 2 + vlen
        frames.append({"headers": headers, "payload": frame[hend:-4]})
    return frames, data


def fd_census(pid, listen_port, pool_port):
    """The fds of process `pid` in three groups: (client connections to `listen_port`,
    connections to the upstream at `pool_port` (the pool's), everything else)."""
    sockets = {}  # inode -> (local port, remote port, state)
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            sockets[cols[9]] = (int(cols[1].rsplit(":", 1)[1], 16),
                                int(cols[2].rsplit(":", 1)[1], 16), cols[3])
    clients = pool = other = 0
    fd_dir = "/proc/%d/fd" % pid
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue  # closed meanwhile
        inode = target[len("socket:["):-1] if target.startswith("socket:[") else None
        info = sockets.get(inode)
        if info and info[0] == listen_port and info[2] != "0A":  # 0A: LISTEN
            clients += 1
        elif info and info[1] == pool_port:
            pool += 1
        else:
            other += 1
    return clients, pool, other


# ---- Redis, for the fleet tests (issue 20): Debian's redis-server, spoken to in RESP ----

REDIS_SERVER = "/usr/bin/redis-server"


def _below_ephemeral_port():
    """A free loopback port below the kernel's ephemeral range. Redis is stopped and started
    again on its port: while it is down, a port from the ephemeral range could become the
    source port of any outgoing connection on this machine (ctest runs suites in parallel)
    and the restart would fail to bind."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(10000, max(10001, low))
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port below %d for redis-server" % low)


def _resp_encode(args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class RedisError(Exception):
    """An error reply (`-ERR ...`) from Redis."""


def _resp_read(f):
    line = f.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError("redis closed the connection mid-reply")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RedisError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)
        if len(data) != n + 2:
            raise ConnectionError("redis closed the connection mid-reply")
        return data[:-2]
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [_resp_read(f) for _ in range(n)]
    raise ConnectionError("unexpected RESP reply %r" % line)


def redis_command(port, *args, timeout=2.0):
    """One command on a fresh connection to 127.0.0.1:`port`; the reply as Python values
    (bulk strings as bytes). Raises OSError when Redis does not answer within `timeout`."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(_resp_encode(args))
        with s.makefile("rb") as f:
            return _resp_read(f)


class RedisServer:
    """A redis-server of the test's own on a loopback port, with nothing persisted (`--save ''
    --appendonly no`, its directory under `workdir`). start() returns once it answers PING;
    stop() and start() again keep the port (a restart, as the gateways see it); pause() and
    resume() are SIGSTOP and SIGCONT (a Redis that accepts connections and answers nothing)."""

    def __init__(self, workdir, binary=REDIS_SERVER):
        self.binary = binary
        self.dir = tempfile.mkdtemp(prefix="redis-", dir=workdir)
        self.port = None
        self.child = None
        self.paused = False
        self.starts = 0

    @property
    def url(self):
        return "redis://127.0.0.1:%d/0" % self.port

    def running(self):
        return self.child is not None and self.child.alive()

    def start(self, timeout=STARTUP_TIMEOUT_S):
        """Starts redis-server (on its earlier port when it ran before) and waits until it
        answers PING. A first start whose port was taken meanwhile tries another one."""
        if self.running():
            raise AssertionError("redis-server is already running on port %d" % self.port)
        for _ in range(5 if self.port is None else 1):
            port = self.port or _below_ephemeral_port()
            if self._start_on(port, timeout):
                self.port = port
                self.starts += 1
                return self
            if self.port is not None:
                break
        raise AssertionError("redis-server did not answer PING on port %d within %.0f s\n%s"
                             % (port, timeout, self.child.output() if self.child else ""))

    def _start_on(self, port, timeout):
        self.child = ChildProcess("redis-server", [
            self.binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", self.dir, "--protected-mode", "no",
            "--loglevel", "notice"])
        self.paused = False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.child.alive():
                self.child.stop()
                return False  # the port was taken (or worse): the caller decides
            try:
                if redis_command(port, "PING", timeout=1.0) == "PONG":
                    return True
            except (OSError, ConnectionError, RedisError):
                pass
            time.sleep(0.02)  # poll interval, bounded by the deadline above
        self.child.kill()
        self.child.stop()
        return False

    def stop(self):
        """SIGTERM (after SIGCONT when paused) and wait for the exit; a no-op when stopped."""
        if self.child is None:
            return
        if self.paused:
            self.resume()
        child, self.child = self.child, None
        child.stop()

    def restart(self, timeout=STARTUP_TIMEOUT_S):
        """Stops it (if running) and starts it again on the same port, empty."""
        self.stop()
        return self.start(timeout)

    def pause(self):
        """SIGSTOP: connections are still accepted by the kernel, but nothing is answered."""
        self.child.proc.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self):
        self.child.proc.send_signal(signal.SIGCONT)
        self.paused = False

    def command(self, *args, timeout=2.0):
        """One command to this Redis (see redis_command)."""
        return redis_command(self.port, *args, timeout=timeout)

    def keys(self, pattern="*"):
        """The key names matching `pattern`, as str, sorted."""
        return sorted(k.decode() for k in self.command("KEYS", pattern))
