"""Where the gateway's own AWS credentials come from, end to end (issue 7).

Each test starts small fakes of the credential services on 127.0.0.1 (STS, a container
credentials endpoint, IMDSv2; each records every request it answers), a fake Bedrock that accepts
only the exact keys that source hands out, and a gateway whose environment (and config) selects
the source. One invoke must come back 200 and reach the fake signed with those keys, and the
gateway must say where its credentials came from (`credentials_loaded`, the start-up line).
Bedrock API keys (`Authorization: Bearer`) are covered the same way.

Every test then reads all the gateway wrote (stdout and stderr) for every secret involved:
secret keys, session tokens, the web identity token, the container and IMDS tokens, the Bedrock
API key; none may appear, and access key ids only by their last four characters.
"""

import collections
import datetime
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import socket
import sys
import tempfile
import threading
import time
import unittest
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import bgw_e2e

REGION = "us-east-1"
ACCOUNT = "123456789012"
STS_NS = "https://sts.amazonaws.com/doc/2011-06-15/"
STS_VERSION = "2011-06-15"
FAR_FUTURE = "2099-01-01T00:00:00Z"
WAIT_S = 15.0

Creds = collections.namedtuple("Creds", "key secret token")


def random_upper(n):
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
    return "".join(secrets.choice(alphabet) for _ in range(n))


# --- small fakes of the credential services ------------------------------------------------------

class Recorded:
    """One request a fake answered, as it arrived."""

    def __init__(self, method, path, headers, body):
        self.method = method
        self.path = path
        self.headers = headers  # [(name, value)] in arrival order
        self.body = body
        self.status = None  # what the fake answered
        self.issued = None  # a token the answer handed out (IMDS)

    def header(self, name):
        values = self.header_all(name)
        return values[0] if values else None

    def header_all(self, name):
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def form(self):
        """The body as an HTML form (only when sent as one), one value per name."""
        ctype = (self.header("content-type") or "").split(";")[0].strip().lower()
        if ctype != "application/x-www-form-urlencoded":
            return {}
        pairs = urllib.parse.parse_qsl(self.body.decode("utf-8", "replace"),
                                       keep_blank_values=True)
        return dict(pairs)

    def __repr__(self):
        return "%s %s -> %s %r" % (self.method, self.path, self.status, self.headers)


class _CountingServer(ThreadingHTTPServer):
    daemon_threads = True

    def get_request(self):
        conn = super().get_request()
        self.owner.note_connection()
        return conn


class FakeServer:
    """An HTTP/1.1 server on `host`:0 that records each request before answering it with
    self.answer(recorded) -> (status, {header: value}, body bytes), and counts connections."""

    def __init__(self, name, host="127.0.0.1"):
        self.name = name
        self.host = host
        self._requests = []
        self._connections = 0
        self._cond = threading.Condition()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _read_body(self):
                if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                    out = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return out
                        out += self.rfile.read(size)
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _handle(self):
                rec = Recorded(self.command, self.path, list(self.headers.items()),
                               self._read_body())
                try:
                    status, headers, payload = owner.answer(rec)
                except Exception as e:  # a bug in a fake must show up, not hang the gateway
                    status, headers = 500, {"Content-Type": "text/plain"}
                    payload = ("%s threw %r" % (owner.name, e)).encode()
                rec.status = status
                # Recorded before the answer is written: whoever holds the answer sees the record.
                with owner._cond:
                    owner._requests.append(rec)
                    owner._cond.notify_all()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_PUT = do_POST = do_DELETE = do_PATCH = _handle

            def log_message(self, *args):
                pass

        self.httpd = _CountingServer((host, 0), Handler)
        self.httpd.owner = self
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name=name, daemon=True)
        self._thread.start()

    @property
    def url(self):
        return "http://%s:%d" % (self.host, self.port)

    def note_connection(self):
        with self._cond:
            self._connections += 1

    def connections(self):
        with self._cond:
            return self._connections

    def requests(self):
        with self._cond:
            return list(self._requests)

    def wait_requests(self, count, timeout=WAIT_S):
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._requests) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("%s saw %d request(s), expected %d: %r"
                                         % (self.name, len(self._requests), count, self._requests))
                self._cond.wait(left)
            return list(self._requests)

    def issued_secrets(self):
        """Secrets this fake made up itself (IMDS tokens)."""
        return []

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(5)

    def answer(self, rec):
        raise NotImplementedError


def _json(status, obj):
    return status, {"Content-Type": "application/json"}, json.dumps(obj).encode()


def _text(status, text):
    return status, {"Content-Type": "text/plain"}, text.encode()


# STS (Query protocol over a POSTed form; XML answers).

def sts_error(status, code, message):
    body = ('<ErrorResponse xmlns="%s">\n  <Error>\n    <Type>Sender</Type>\n'
            '    <Code>%s</Code>\n    <Message>%s</Message>\n  </Error>\n'
            '  <RequestId>%s</RequestId>\n</ErrorResponse>\n'
            % (STS_NS, code, message, secrets.token_hex(8)))
    return status, {"Content-Type": "text/xml"}, body.encode()


def sts_credentials_xml(action, creds, role_arn, session_name, extra=""):
    role_name = role_arn.rsplit("/", 1)[-1]
    # The element order of real STS answers (SessionToken first), not the one of the docs' table.
    body = ('<%(a)sResponse xmlns="%(ns)s">\n  <%(a)sResult>\n%(extra)s'
            '    <AssumedRoleUser>\n'
            '      <AssumedRoleId>AROA%(rid)s:%(session)s</AssumedRoleId>\n'
            '      <Arn>arn:aws:sts::%(acct)s:assumed-role/%(role)s/%(session)s</Arn>\n'
            '    </AssumedRoleUser>\n'
            '    <Credentials>\n'
            '      <SessionToken>%(token)s</SessionToken>\n'
            '      <SecretAccessKey>%(secret)s</SecretAccessKey>\n'
            '      <Expiration>%(exp)s</Expiration>\n'
            '      <AccessKeyId>%(key)s</AccessKeyId>\n'
            '    </Credentials>\n'
            '  </%(a)sResult>\n'
            '  <ResponseMetadata>\n    <RequestId>%(req)s</RequestId>\n  </ResponseMetadata>\n'
            '</%(a)sResponse>\n'
            % {"a": action, "ns": STS_NS, "extra": extra, "rid": random_upper(16),
               "session": session_name, "acct": ACCOUNT, "role": role_name,
               "token": creds.token, "secret": creds.secret, "exp": FAR_FUTURE,
               "key": creds.key, "req": secrets.token_hex(8)})
    return 200, {"Content-Type": "text/xml"}, body.encode()


SIGV4_AUTH = re.compile(r"^AWS4-HMAC-SHA256 Credential=([^/,\s]+)/(\d{8})/([^/,\s]+)/([^/,\s]+)"
                        r"/aws4_request,\s*SignedHeaders=([a-z0-9;.\-_]+),\s*"
                        r"Signature=([0-9a-f]{64})$")


def sigv4_problem(rec, creds, region, service):
    """None when `rec` is SigV4-signed by `creds` for region/service, else (status, code, msg)
    as AWS's Query services answer."""
    auth = rec.header("authorization")
    if auth is None:
        return 403, "MissingAuthenticationToken", "Request is missing Authentication Token"
    m = SIGV4_AUTH.match(auth.strip())
    if not m:
        return 400, "IncompleteSignature", "Authorization header is not a SigV4 signature"
    key, day, scope_region, scope_service, signed, signature = m.groups()
    if key != creds.key:
        return 403, "InvalidClientTokenId", "The security token included in the request is invalid."
    if rec.header("x-amz-security-token") != creds.token:
        return 403, "InvalidClientTokenId", "The security token included in the request is invalid."
    if scope_region != region or scope_service != service:
        return 403, "SignatureDoesNotMatch", ("Credential should be scoped to a valid region / "
                                              "correct service: %r" % auth.split(",")[0])
    amz_date = rec.header("x-amz-date") or ""
    try:
        when = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(
            tzinfo=datetime.timezone.utc)
    except ValueError:
        return 400, "IncompleteSignature", "X-Amz-Date missing or malformed: %r" % amz_date
    now = datetime.datetime.now(datetime.timezone.utc)
    if abs((now - when).total_seconds()) > 300 or amz_date[:8] != day:
        return 403, "SignatureDoesNotMatch", "Signature expired or date mismatch"
    names = signed.split(";")
    if "host" not in names or names != sorted(names):
        return 403, "SignatureDoesNotMatch", "SignedHeaders must be sorted and include host"
    canonical_headers = ""
    for name in names:
        values = rec.header_all(name)
        if not values:
            return 403, "SignatureDoesNotMatch", "signed header %s was not sent" % name
        canonical_headers += "%s:%s\n" % (name, ",".join(" ".join(v.split()) for v in values))
    path, _, query = rec.path.partition("?")
    canonical_uri = urllib.parse.quote(path or "/", safe="/-_.~")
    pairs = sorted((urllib.parse.quote(k, safe="-_.~"), urllib.parse.quote(v, safe="-_.~"))
                   for k, v in urllib.parse.parse_qsl(query, keep_blank_values=True))
    canonical_query = "&".join("%s=%s" % kv for kv in pairs)
    canonical_request = "\n".join([rec.method, canonical_uri, canonical_query, canonical_headers,
                                   signed, hashlib.sha256(rec.body).hexdigest()])
    scope = "%s/%s/%s/aws4_request" % (day, scope_region, scope_service)
    string_to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                                hashlib.sha256(canonical_request.encode()).hexdigest()])
    k = ("AWS4" + creds.secret).encode()
    for part in (day, scope_region, scope_service, "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    expected = hmac.new(k, string_to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature):
        return 403, "SignatureDoesNotMatch", (
            "The request signature we calculated does not match the signature you provided.")
    return None


WebIdentityGrant = collections.namedtuple("WebIdentityGrant", "token role_arn creds")
AssumeRoleGrant = collections.namedtuple("AssumeRoleGrant", "source role_arn creds")


class FakeSts(FakeServer):
    """AssumeRoleWithWebIdentity (unsigned; the token and role must match the grant) and
    AssumeRole (SigV4 by the grant's source credentials, scoped REGION/sts)."""

    def __init__(self, web_identity=None, assume_role=None):
        self.web_identity = web_identity
        self.assume_role = assume_role
        super().__init__("fake-sts")

    def answer(self, rec):
        if rec.method != "POST" or rec.path.partition("?")[0] != "/":
            return sts_error(400, "InvalidAction", "this fake STS takes POST / with a form body")
        params = rec.form()
        action = params.get("Action")
        if not action:
            return sts_error(400, "MissingAction", "Missing Action")
        if params.get("Version") != STS_VERSION:
            return sts_error(400, "InvalidAction", "Could not find operation %s for version %s"
                             % (action, params.get("Version") or "NO_VERSION_SPECIFIED"))
        for name in ("RoleArn", "RoleSessionName"):
            if not params.get(name):
                return sts_error(400, "ValidationError",
                                 "1 validation error detected: Value null at '%s%s' failed to "
                                 "satisfy constraint: Member must not be null"
                                 % (name[0].lower(), name[1:]))
        if not re.fullmatch(r"[\w+=,.@-]{2,64}", params["RoleSessionName"]):
            return sts_error(400, "ValidationError", "roleSessionName fails its pattern")
        if action == "AssumeRoleWithWebIdentity":
            return self._web_identity(params)
        if action == "AssumeRole":
            return self._assume_role(rec, params)
        return sts_error(400, "InvalidAction", "Could not find operation %s for version %s"
                         % (action, STS_VERSION))

    def _web_identity(self, params):
        grant = self.web_identity
        if grant is None or params.get("RoleArn") != grant.role_arn:
            return sts_error(403, "AccessDenied",
                             "Not authorized to perform sts:AssumeRoleWithWebIdentity")
        if params.get("WebIdentityToken") != grant.token:
            return sts_error(400, "InvalidIdentityToken",
                             "The web identity token that was passed could not be validated by "
                             "AWS. Get a new identity token from the identity provider and then "
                             "retry the request.")
        extra = ("    <Audience>sts.amazonaws.com</Audience>\n"
                 "    <SubjectFromWebIdentityToken>system:serviceaccount:bgw:gateway"
                 "</SubjectFromWebIdentityToken>\n"
                 "    <Provider>arn:aws:iam::%s:oidc-provider/oidc.example</Provider>\n"
                 % ACCOUNT)
        return sts_credentials_xml("AssumeRoleWithWebIdentity", grant.creds, grant.role_arn,
                                   params["RoleSessionName"], extra)

    def _assume_role(self, rec, params):
        grant = self.assume_role
        if grant is None:
            return sts_error(403, "AccessDenied", "Not authorized to perform sts:AssumeRole")
        problem = sigv4_problem(rec, grant.source, REGION, "sts")
        if problem:
            return sts_error(*problem)
        if params.get("RoleArn") != grant.role_arn:
            return sts_error(403, "AccessDenied", "Not authorized to perform sts:AssumeRole")
        return sts_credentials_xml("AssumeRole", grant.creds, grant.role_arn,
                                   params["RoleSessionName"])


class FakeContainerEndpoint(FakeServer):
    """An ECS/EKS Pod Identity style endpoint: GET `path` with `Authorization: <token>`."""

    PATH = "/v1/credentials/bgw-e2e"

    def __init__(self, token, creds, host="127.0.0.1"):
        self.token = token
        self.creds = creds
        super().__init__("fake-container", host)

    def answer(self, rec):
        if rec.method != "GET":
            return _json(405, {"code": "MethodNotAllowed", "message": "GET only"})
        if rec.path != self.PATH:
            return _json(404, {"code": "NotFound", "message": "no such credentials"})
        if rec.header("authorization") != self.token:
            return _json(401, {"code": "InvalidToken", "message": "Unauthorized"})
        return _json(200, {"AccessKeyId": self.creds.key,
                           "SecretAccessKey": self.creds.secret,
                           "Token": self.creds.token,
                           "AccountId": ACCOUNT,
                           "RoleArn": "arn:aws:iam::%s:role/bgw-task" % ACCOUNT,
                           "Expiration": FAR_FUTURE})


class FakeImds(FakeServer):
    """EC2 IMDSv2: PUT /latest/api/token (with the TTL header) hands out a session token; every
    GET needs one (401 otherwise, as IMDS does when v2 is required)."""

    ROLE = "bgw-instance-role"

    def __init__(self, creds):
        self.creds = creds
        self.tokens = []
        super().__init__("fake-imds")

    def issued_secrets(self):
        return list(self.tokens)

    def answer(self, rec):
        if rec.method == "PUT" and rec.path == "/latest/api/token":
            ttl = rec.header("x-aws-ec2-metadata-token-ttl-seconds") or ""
            if not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
                return _text(400, "Bad Request")
            token = "imds-token-" + secrets.token_urlsafe(24)
            self.tokens.append(token)
            rec.issued = token
            return (200, {"Content-Type": "text/plain",
                          "X-aws-ec2-metadata-token-ttl-seconds": ttl}, token.encode())
        if rec.method != "GET":
            return _text(405, "Method Not Allowed")
        if rec.header("x-aws-ec2-metadata-token") not in self.tokens:
            return _text(401, "Unauthorized")
        base = "/latest/meta-data/iam/security-credentials/"
        if rec.path == base:
            return _text(200, self.ROLE)
        if rec.path == base + self.ROLE:
            now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            return _json(200, {"Code": "Success", "LastUpdated": now, "Type": "AWS-HMAC",
                               "AccessKeyId": self.creds.key,
                               "SecretAccessKey": self.creds.secret,
                               "Token": self.creds.token, "Expiration": FAR_FUTURE})
        return _text(404, "Not Found")


def own_ipv4():
    """This machine's non-loopback IPv4 address (no packet is sent), or None."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("192.0.2.1", 9))
        ip = s.getsockname()[0]
    except OSError:
        return None
    finally:
        s.close()
    return None if ip.startswith("127.") or ip == "0.0.0.0" else ip


# --- the tests -----------------------------------------------------------------------------------

class CredentialSources(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.binary = bgw_e2e.required_env("BGW_GATEWAY_BINARY")
        cls.fake_binary = bgw_e2e.required_env("BGW_FAKE_BEDROCK")

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="bgw-creds-")
        self.addCleanup(shutil.rmtree, self.dir, ignore_errors=True)
        self.secrets = []  # must never appear in the gateway's output
        self.key_ids = []  # may appear only as their last four characters
        self.servers = []

    # --- set-up helpers -------------------------------------------------------------------------

    def secret(self, value):
        self.secrets.append(value)
        return value

    def make_creds(self, tag, temporary=True):
        """Keys that look like AWS's, unique to this run, registered for the output scan."""
        key = ("ASIA" if temporary else "AKIA") + tag + random_upper(16 - len(tag))
        secret = self.secret(tag.lower() + "/" + secrets.token_urlsafe(24) + "+S3cr3t")
        token = self.secret("IQoJb3JpZ2luX2Vj" + tag + secrets.token_urlsafe(48)) \
            if temporary else None
        self.key_ids.append(key)
        return Creds(key, secret, token)

    def write(self, name, text, mode=0o600):
        path = os.path.join(self.dir, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(path, mode)
        return path

    def serve(self, server):
        self.servers.append(server)
        self.addCleanup(server.stop)
        return server

    def fake_bedrock(self, creds, extra_args=()):
        fake = bgw_e2e.FakeBedrock(self.fake_binary, creds.key, creds.secret, [REGION],
                                   session_token=creds.token, extra_args=extra_args)
        self.addCleanup(fake.stop)
        return fake

    def start_gateway(self, upstream, env, config_extra=None):
        config = bgw_e2e.base_config(
            {REGION: upstream.endpoint}, default_region=REGION,
            upstream={"ca_file": "", "connect_timeout_ms": 3000, "response_timeout_ms": 30000},
            log_level="info")
        config.update(config_extra or {})
        gw = bgw_e2e.Gateway(self.binary, config, self.dir, "gateway", env_extra=env)
        # Cleanups run last-in first-out: the gateway stops (and its output is scanned) before
        # the fakes it talked to go away.
        self.addCleanup(self.stop_and_scan, gw)
        return gw

    def stop_and_scan(self, gw):
        code = gw.stop()
        lines = gw.stdout.lines() + gw.stderr.lines()
        reports = gw.sanitizer_reports()
        if reports:
            raise AssertionError("gateway printed a sanitizer report:\n" + "\n".join(reports))
        if code not in (0, -15):
            raise AssertionError("gateway exited with %r\n%s" % (code, gw.output()))
        if not lines:
            raise AssertionError("the gateway wrote nothing: there was no output to scan")
        everything = list(self.secrets)
        for server in self.servers:
            everything += server.issued_secrets()
        leaks = []
        for value in everything:
            leaks += ["secret %r... in: %s" % (value[:12], line) for line in lines if value in line]
        for key in self.key_ids:
            leaks += ["access key id %s unredacted in: %s" % (key, line)
                      for line in lines if key[:-4] in line]
        if leaks:
            raise AssertionError("the gateway's output shows secrets:\n" + "\n".join(leaks))

    # --- assertion helpers ----------------------------------------------------------------------

    def invoke(self, gw):
        return bgw_e2e.http_request(gw.port, "POST", "/model/m/invoke", b"{}",
                                    bgw_e2e.JSON_HEADERS)

    def assert_invoke_signed_with(self, gw, upstream, creds):
        """One invoke: 200, and the fake saw it signed with exactly `creds`."""
        mark = upstream.mark()
        resp = self.invoke(gw)
        self.assertEqual(resp.status, 200, "%r\n%s" % (resp, gw.output()))
        seen = upstream.wait_requests(mark, 1)
        self.assertEqual(len(seen), 1, seen)
        self.assertEqual(seen[0]["accessKeyId"], creds.key, seen[0])
        self.assertEqual(seen[0]["auth"], "sigv4", seen[0])
        self.assertTrue(seen[0]["signatureOk"], seen[0])
        self.assertEqual(seen[0]["headers"].get("x-amz-security-token"), creds.token, seen[0])
        self.assertEqual(seen[0]["status"], 200, seen[0])
        gw.wait_log(lambda e: e.get("status") == 200)  # all of it is in the output to scan
        return seen[0]

    def credentials_loaded(self, gw):
        def find(lines):
            for line in lines:
                if line.startswith("{") and json.loads(line).get("event") == "credentials_loaded":
                    return json.loads(line)
            return None

        event = gw.stdout.wait_for(find, WAIT_S)
        if event is None:
            raise AssertionError("no credentials_loaded line\n" + gw.output())
        return event

    def listening_line(self, gw):
        """The start-up event's `credentials` field: a source and at most 4 key characters."""
        found = gw.events("listening")
        if not found:
            raise AssertionError("no listening line\n" + gw.output())
        return found[0]["credentials"]

    def assert_loaded(self, gw, source, creds):
        """credentials_loaded names `source` ("profile" may say which: "profile app") and shows
        the key id's last four characters; so does the start-up line."""
        event = self.credentials_loaded(gw)
        self.assertTrue(event.get("source") == source or
                        str(event.get("source")).startswith(source + " "), event)
        shown = event.get("access_key", "")
        self.assertTrue(shown.endswith(creds.key[-4:]), event)
        self.assertNotIn(creds.key[:-4], shown, event)
        shown_at_start = self.listening_line(gw)
        self.assertTrue(shown_at_start.startswith(event["source"] + " "), shown_at_start)
        self.assertTrue(shown_at_start.endswith(creds.key[-4:]), shown_at_start)
        self.assertNotIn(creds.key[:-4], shown_at_start)
        return event

    def assert_unavailable(self, gw, upstream):
        """An invoke gets the gateway's own 503 and nothing reaches the upstream."""
        mark = upstream.mark()
        resp = self.invoke(gw)
        self.assertEqual(resp.status, 503, "%r\n%s" % (resp, gw.output()))
        self.assertEqual(resp.error_code(), "ServiceUnavailableException", resp)
        gw.wait_log(lambda e: e.get("status") == 503)
        self.assertEqual(upstream.requests()[mark:], [])
        return resp.json().get("message", "")

    # --- web identity -----------------------------------------------------------------------------

    def test_web_identity_assumes_the_role_with_the_token_files_content(self):
        role = "arn:aws:iam::%s:role/bgw-web-identity" % ACCOUNT
        token = self.secret("eyJhbGciOiJSUzI1NiJ9.web-identity." + secrets.token_urlsafe(32))
        token_file = self.write("web-identity-token", token)
        creds = self.make_creds("WEBID")
        sts = self.serve(FakeSts(web_identity=WebIdentityGrant(token, role, creds)))
        upstream = self.fake_bedrock(creds)
        gw = self.start_gateway(upstream, {
            "AWS_WEB_IDENTITY_TOKEN_FILE": token_file,
            "AWS_ROLE_ARN": role,
            "AWS_ROLE_SESSION_NAME": "bgw-e2e-session",
            "AWS_ENDPOINT_URL_STS": sts.url,
        })

        self.assert_invoke_signed_with(gw, upstream, creds)
        self.assert_loaded(gw, "web-identity", creds)
        calls = sts.requests()
        self.assertEqual(len(calls), 1, calls)
        self.assertEqual(calls[0].status, 200, calls)
        self.assertIsNone(calls[0].header("authorization"), "AssumeRoleWithWebIdentity is unsigned")
        form = calls[0].form()
        self.assertEqual(form.get("Action"), "AssumeRoleWithWebIdentity")
        self.assertEqual(form.get("RoleArn"), role)
        self.assertEqual(form.get("WebIdentityToken"), token)
        self.assertEqual(form.get("RoleSessionName"), "bgw-e2e-session")

    def test_web_identity_refused_by_sts_is_a_503_that_says_why(self):
        role = "arn:aws:iam::%s:role/bgw-web-identity" % ACCOUNT
        good = self.secret("eyJhbGciOiJSUzI1NiJ9.expected." + secrets.token_urlsafe(32))
        stale = self.secret("eyJhbGciOiJSUzI1NiJ9.stale." + secrets.token_urlsafe(32))
        token_file = self.write("web-identity-token", stale)
        creds = self.make_creds("WEBID")
        sts = self.serve(FakeSts(web_identity=WebIdentityGrant(good, role, creds)))
        upstream = self.fake_bedrock(creds)
        gw = self.start_gateway(upstream, {
            "AWS_WEB_IDENTITY_TOKEN_FILE": token_file,
            "AWS_ROLE_ARN": role,
            "AWS_ENDPOINT_URL_STS": sts.url,
        })

        message = self.assert_unavailable(gw, upstream)
        self.assertIn("InvalidIdentityToken", message)
        calls = sts.wait_requests(1)
        self.assertEqual(calls[0].status, 400)
        self.assertEqual(calls[0].form().get("WebIdentityToken"), stale)
        self.assertRegex(calls[0].form().get("RoleSessionName", ""), r"^[\w+=,.@-]{2,64}$")

    # --- shared config files ------------------------------------------------------------------------

    def test_profile_credential_process(self):
        creds = self.make_creds("PROC")
        ran = os.path.join(self.dir, "credential-process-ran")
        script = self.write("credential-process.py", "\n".join([
            "#!" + sys.executable,
            "import json, sys",
            "if sys.argv[1:] != ['--role', 'gateway']:",
            "    sys.stderr.write('unexpected arguments %r\\n' % sys.argv[1:])",
            "    sys.exit(3)",
            "with open(%r, 'a') as f:" % ran,
            "    f.write('ran\\n')",
            "print(json.dumps(%s))" % json.dumps({
                "Version": 1, "AccessKeyId": creds.key, "SecretAccessKey": creds.secret,
                "SessionToken": creds.token, "Expiration": FAR_FUTURE}),
            ""]), mode=0o700)
        config_file = self.write("aws-config", "\n".join([
            "[default]",
            "region = us-west-2",
            "",
            "[profile tool]",
            "credential_process = %s --role gateway" % script,
            ""]))
        upstream = self.fake_bedrock(creds)
        gw = self.start_gateway(upstream, {
            "AWS_CONFIG_FILE": config_file,
            "AWS_SHARED_CREDENTIALS_FILE": os.path.join(self.dir, "no-credentials"),
            "AWS_PROFILE": "tool",
        })

        self.assert_invoke_signed_with(gw, upstream, creds)
        self.assert_loaded(gw, "profile", creds)
        with open(ran, encoding="utf-8") as f:
            self.assertEqual(f.read(), "ran\n", "credential_process ran exactly once")

    def test_profile_role_arn_with_source_profile_assumes_the_role_through_sts(self):
        role = "arn:aws:iam::%s:role/bgw-app" % ACCOUNT
        base = self.make_creds("BASE", temporary=False)
        creds = self.make_creds("ROLE")
        sts = self.serve(FakeSts(assume_role=AssumeRoleGrant(base, role, creds)))
        credentials_file = self.write("aws-credentials", "\n".join([
            "[base]",
            "aws_access_key_id = " + base.key,
            "aws_secret_access_key = " + base.secret,
            ""]))
        config_file = self.write("aws-config", "\n".join([
            "[profile app]",
            "role_arn = " + role,
            "source_profile = base",
            ""]))
        upstream = self.fake_bedrock(creds)
        gw = self.start_gateway(upstream, {
            "AWS_CONFIG_FILE": config_file,
            "AWS_SHARED_CREDENTIALS_FILE": credentials_file,
            "AWS_PROFILE": "app",
            "AWS_ENDPOINT_URL_STS": sts.url,
        })

        self.assert_invoke_signed_with(gw, upstream, creds)
        self.assert_loaded(gw, "profile", creds)
        calls = sts.requests()
        self.assertEqual(len(calls), 1, calls)
        # 200 means the fake verified the whole signature with the source profile's secret.
        self.assertEqual(calls[0].status, 200, calls[0].body)
        auth = calls[0].header("authorization") or ""
        self.assertIn("Credential=%s/" % base.key, auth)
        self.assertRegex(auth, r"Credential=[^/]+/\d{8}/%s/sts/aws4_request," % REGION)
        form = calls[0].form()
        self.assertEqual(form.get("Action"), "AssumeRole")
        self.assertEqual(form.get("RoleArn"), role)

    # --- container endpoint -----------------------------------------------------------------------

    def check_container(self, use_token_file):
        token = self.secret("container-auth-" + secrets.token_urlsafe(32))
        creds = self.make_creds("CTNR")
        container = self.serve(FakeContainerEndpoint(token, creds))
        env = {"AWS_CONTAINER_CREDENTIALS_FULL_URI": container.url + container.PATH}
        if use_token_file:
            env["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"] = self.write("eks-pod-identity-token",
                                                                       token)
        else:
            env["AWS_CONTAINER_AUTHORIZATION_TOKEN"] = token
        upstream = self.fake_bedrock(creds)
        gw = self.start_gateway(upstream, env)

        self.assert_invoke_signed_with(gw, upstream, creds)
        self.assert_loaded(gw, "container", creds)
        calls = container.requests()
        self.assertEqual(len(calls), 1, calls)
        self.assertEqual((calls[0].method, calls[0].path, calls[0].status),
                         ("GET", container.PATH, 200))
        self.assertEqual(calls[0].header_all("authorization"), [token])

    def test_container_full_uri_with_token(self):
        self.check_container(use_token_file=False)

    def test_container_full_uri_with_token_file(self):
        self.check_container(use_token_file=True)

    def test_container_full_uri_to_a_disallowed_host_is_refused(self):
        # 192.0.2.10 (TEST-NET-1) is neither loopback nor an ECS/EKS agent address.
        token = self.secret("container-auth-" + secrets.token_urlsafe(32))
        upstream = self.fake_bedrock(self.make_creds("UNUSED"))
        gw = self.start_gateway(upstream, {
            "AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://192.0.2.10/creds",
            "AWS_CONTAINER_AUTHORIZATION_TOKEN": token,
        })

        message = self.assert_unavailable(gw, upstream)
        self.assertRegex(message, r"192\.0\.2\.10|AWS_CONTAINER_CREDENTIALS_FULL_URI")
        self.assertRegex(message.lower(), r"not allowed|refus|disallow|forbidden|not permitted|"
                                          r"only")
        # Refused by looking at the URL, not by failing to connect.
        self.assertNotRegex(message.lower(), r"cannot reach|no answer|timed out|timeout")

    def test_container_full_uri_to_a_disallowed_host_is_never_contacted(self):
        # The same refusal, with a listener on this machine's own (non-loopback) address that
        # counts connections: the gateway must not even connect.
        ip = own_ipv4()
        if ip is None:
            self.skipTest("this machine has no non-loopback IPv4 address")
        token = self.secret("container-auth-" + secrets.token_urlsafe(32))
        creds = self.make_creds("CTNR")
        container = self.serve(FakeContainerEndpoint(token, creds, host=ip))
        upstream = self.fake_bedrock(creds)
        gw = self.start_gateway(upstream, {
            "AWS_CONTAINER_CREDENTIALS_FULL_URI": container.url + container.PATH,
            "AWS_CONTAINER_AUTHORIZATION_TOKEN": token,
        })

        message = self.assert_unavailable(gw, upstream)
        self.assertRegex(message.lower(), r"not allowed|refus|disallow|forbidden|not permitted|"
                                          r"only")
        self.assertEqual(container.connections(), 0, container.requests())

    # --- IMDSv2 -------------------------------------------------------------------------------------

    def check_imds_calls(self, imds):
        """A token first; then every GET carries a token handed out before it, and none is
        refused; the role name is asked for before its credentials."""
        calls = imds.requests()
        self.assertGreaterEqual(len(calls), 3, calls)
        self.assertEqual((calls[0].method, calls[0].path, calls[0].status),
                         ("PUT", "/latest/api/token", 200), calls)
        issued = []
        for call in calls:
            self.assertIn(call.method, ("PUT", "GET"), calls)
            self.assertEqual(call.status, 200, calls)
            if call.method == "PUT":
                self.assertEqual(call.path, "/latest/api/token", calls)
                issued.append(call.issued)
            else:
                self.assertIn(call.header("x-aws-ec2-metadata-token"), issued, call)
        paths = [c.path for c in calls if c.method == "GET"]
        self.assertIn("/latest/meta-data/iam/security-credentials/", paths)
        self.assertIn("/latest/meta-data/iam/security-credentials/" + FakeImds.ROLE, paths)
        self.assertLess(paths.index("/latest/meta-data/iam/security-credentials/"),
                        paths.index("/latest/meta-data/iam/security-credentials/" + FakeImds.ROLE))

    def test_imds_v2_token_then_role_then_credentials(self):
        creds = self.make_creds("IMDS")
        imds = self.serve(FakeImds(creds))
        upstream = self.fake_bedrock(creds)
        gw = self.start_gateway(upstream, {
            "AWS_EC2_METADATA_DISABLED": None,
            "AWS_EC2_METADATA_SERVICE_ENDPOINT": imds.url,
        })

        self.assert_invoke_signed_with(gw, upstream, creds)
        self.assert_loaded(gw, "imds", creds)
        self.check_imds_calls(imds)

    # --- the chain's order and a pinned source --------------------------------------------------

    def test_environment_keys_come_before_a_container_endpoint(self):
        env_creds = self.make_creds("ENVK")
        token = self.secret("container-auth-" + secrets.token_urlsafe(32))
        container = self.serve(FakeContainerEndpoint(token, self.make_creds("CTNR")))
        upstream = self.fake_bedrock(env_creds)
        gw = self.start_gateway(upstream, {
            "AWS_ACCESS_KEY_ID": env_creds.key,
            "AWS_SECRET_ACCESS_KEY": env_creds.secret,
            "AWS_SESSION_TOKEN": env_creds.token,
            "AWS_CONTAINER_CREDENTIALS_FULL_URI": container.url + container.PATH,
            "AWS_CONTAINER_AUTHORIZATION_TOKEN": token,
        })

        self.assert_invoke_signed_with(gw, upstream, env_creds)
        self.assert_loaded(gw, "environment", env_creds)
        self.assertEqual(container.requests(), [])
        self.assertEqual(container.connections(), 0)

    def test_pinned_imds_source_ignores_environment_keys(self):
        env_creds = self.make_creds("ENVK")
        creds = self.make_creds("IMDS")
        imds = self.serve(FakeImds(creds))
        upstream = self.fake_bedrock(creds)
        gw = self.start_gateway(upstream, {
            "AWS_ACCESS_KEY_ID": env_creds.key,
            "AWS_SECRET_ACCESS_KEY": env_creds.secret,
            "AWS_SESSION_TOKEN": env_creds.token,
            "AWS_EC2_METADATA_DISABLED": None,
            "AWS_EC2_METADATA_SERVICE_ENDPOINT": imds.url,
        }, config_extra={"credentials": {"source": "imds"}})

        self.assert_invoke_signed_with(gw, upstream, creds)
        self.assert_loaded(gw, "imds", creds)
        self.check_imds_calls(imds)

    # --- Bedrock API keys ---------------------------------------------------------------------------

    def assert_bearer_invoke(self, gw, upstream):
        mark = upstream.mark()
        resp = self.invoke(gw)
        self.assertEqual(resp.status, 200, "%r\n%s" % (resp, gw.output()))
        seen = upstream.wait_requests(mark, 1)
        self.assertEqual(len(seen), 1, seen)
        self.assertEqual(seen[0]["auth"], "bearer", seen[0])
        self.assertEqual(seen[0]["accessKeyId"], "", seen[0])
        self.assertTrue(seen[0]["signatureOk"], seen[0])
        self.assertNotIn("x-amz-security-token", seen[0]["headers"], seen[0])
        self.assertTrue(self.listening_line(gw).startswith("bearer"), self.listening_line(gw))
        gw.wait_log(lambda e: e.get("status") == 200)

    def test_bearer_key_from_the_environment(self):
        key = self.secret("ABSKQmVkcm9ja0FQSUtleS1" + secrets.token_urlsafe(40))
        upstream = self.fake_bedrock(self.make_creds("SIGV", temporary=False),
                                     extra_args=["--bearer-token", key])
        gw = self.start_gateway(upstream, {"AWS_BEARER_TOKEN_BEDROCK": key})
        self.assert_bearer_invoke(gw, upstream)

    def test_bearer_key_from_a_token_file_in_the_config(self):
        key = self.secret("ABSKQmVkcm9ja0FQSUtleS1" + secrets.token_urlsafe(40))
        token_file = self.write("bedrock-api-key", key + "\n")
        upstream = self.fake_bedrock(self.make_creds("SIGV", temporary=False),
                                     extra_args=["--bearer-token", key])
        gw = self.start_gateway(upstream, {},
                                config_extra={"auth": {"mode": "bearer", "token_file": token_file}})
        self.assert_bearer_invoke(gw, upstream)


if __name__ == "__main__":
    unittest.main()
