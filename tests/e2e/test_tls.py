"""Upstream TLS is verified: a real nginx terminates TLS in front of the fake Bedrock.

The gateway must reach https://localhost:PORT when it trusts the test CA (upstream.ca_file),
and must refuse with 502 when the certificate is signed by a CA it does not trust, or does not
name the host it connected to.
"""

import http.client
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import unittest

import bgw_e2e

GATEWAY = os.environ.get("BGW_GATEWAY_BINARY")
FAKE = os.environ.get("BGW_FAKE_BEDROCK")
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
ACCESS_KEY = "AKIDGATEWAYTLS"
SECRET_KEY = "tls-test-gateway-secret"
# An app signature scoped to eu-west-1 steers the request to that region's endpoint.
EU_AUTH = ("AWS4-HMAC-SHA256 Credential=AKIDAPP/20260101/eu-west-1/bedrock/aws4_request, "
           "SignedHeaders=host;x-amz-date, Signature=" + "0" * 64)


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE, timeout=60)


def make_ca(cwd, name):
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
            "/CN=%s" % name, "-keyout", name + ".key", "-out", name + ".pem", cwd=cwd)


def make_server_cert(cwd, ca, name, dns):
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=%s" % dns, "-keyout",
            name + ".key", "-out", name + ".csr", cwd=cwd)
    with open(os.path.join(cwd, name + ".ext"), "w", encoding="ascii") as f:
        f.write("subjectAltName=DNS:%s\n" % dns)
    openssl("x509", "-req", "-in", name + ".csr", "-CA", ca + ".pem", "-CAkey", ca + ".key",
            "-CAcreateserial", "-days", "2", "-extfile", name + ".ext", "-out", name + ".pem",
            cwd=cwd)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_connectable(port, proc, timeout=20.0):
    """nginx prints nothing when ready: poll for an accepting socket, with a deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError("nginx exited with %r" % proc.returncode)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("nginx did not accept on port %d within %.0f s" % (port, timeout))


class UpstreamTlsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not (GATEWAY and FAKE):
            raise AssertionError("BGW_GATEWAY_BINARY and BGW_FAKE_BEDROCK must be set (ctest does)")
        cls.dir = tempfile.mkdtemp(prefix="bgw-tls-")
        os.chmod(cls.dir, 0o755)  # nginx workers may run as nobody
        make_ca(cls.dir, "ca")
        make_ca(cls.dir, "other-ca")
        make_server_cert(cls.dir, "ca", "server", "localhost")
        # Plain HTTP behind nginx: nginx terminates the TLS the gateway verifies.
        cls.fake = bgw_e2e.FakeBedrock(FAKE, ACCESS_KEY, SECRET_KEY, ["us-east-1", "eu-west-1"],
                                       tls=False)

        cls.tls_port = free_port()
        conf = os.path.join(cls.dir, "nginx.conf")
        with open(conf, "w", encoding="ascii") as f:
            f.write("""
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {d}/server.pem;
    ssl_certificate_key {d}/server.key;
    location / {{
      proxy_pass {upstream};
      proxy_http_version 1.1;
      proxy_set_header Host $http_host;
      proxy_set_header Connection "";
    }}
  }}
}}
""".format(d=cls.dir, port=cls.tls_port, upstream=cls.fake.endpoint))
        cls.nginx = subprocess.Popen([NGINX, "-c", conf, "-p", cls.dir, "-e",
                                      os.path.join(cls.dir, "error.log")],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        wait_connectable(cls.tls_port, cls.nginx)

        regions = {
            "us-east-1": {"endpoint": "https://localhost:%d" % cls.tls_port},
            # Same server, but the certificate names localhost, not 127.0.0.1.
            "eu-west-1": {"endpoint": "https://127.0.0.1:%d" % cls.tls_port},
        }
        cls.trusting = bgw_e2e.Gateway(
            GATEWAY, bgw_e2e.base_config(
                regions, upstream={"ca_file": os.path.join(cls.dir, "ca.pem")}),
            cls.dir, "gw-trusting", ACCESS_KEY, SECRET_KEY)
        cls.other_ca = bgw_e2e.Gateway(
            GATEWAY, bgw_e2e.base_config(
                regions, upstream={"ca_file": os.path.join(cls.dir, "other-ca.pem")}),
            cls.dir, "gw-other-ca", ACCESS_KEY, SECRET_KEY)
        cls.system_ca = bgw_e2e.Gateway(GATEWAY, bgw_e2e.base_config(regions), cls.dir,
                                        "gw-system-ca", ACCESS_KEY, SECRET_KEY)

    @classmethod
    def tearDownClass(cls):
        reports = []
        for proc in (cls.trusting, cls.other_ca, cls.system_ca, cls.fake):
            proc.stop()
            reports += proc.sanitizer_reports()
        cls.nginx.terminate()
        cls.nginx.wait(10)
        shutil.rmtree(cls.dir, ignore_errors=True)
        if reports:
            raise AssertionError("sanitizer reports:\n" + "\n".join(reports))

    def invoke(self, gateway, headers=None):
        conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=30)
        try:
            conn.request("POST", "/model/amazon.titan-text-express-v1/invoke",
                         body=b'{"inputText":"hi"}',
                         headers=dict(bgw_e2e.JSON_HEADERS, **(headers or {})))
            res = conn.getresponse()
            return res.status, dict(res.getheaders()), res.read()
        finally:
            conn.close()

    def test_trusted_ca_and_matching_name_reaches_upstream(self):
        mark = self.fake.mark()
        status, _, body = self.invoke(self.trusting)
        self.assertEqual(status, 200, body)
        seen = self.fake.wait_requests(mark)[0]
        self.assertTrue(seen["signatureOk"], seen)
        self.assertEqual(seen["headers"]["host"], "localhost:%d" % self.tls_port)
        self.assertEqual(json.loads(body)["modelId"], "amazon.titan-text-express-v1")

    def assert_refused(self, status, headers, body):
        self.assertEqual(status, 502, body)
        self.assertEqual(headers.get("x-amzn-ErrorType"), "BadGatewayException")
        self.assertIn("certificate", json.loads(body)["message"].lower())

    def test_certificate_not_naming_the_host_is_refused(self):
        mark = self.fake.mark()
        self.assert_refused(*self.invoke(self.trusting, {"Authorization": EU_AUTH}))
        self.assertEqual(self.fake.mark(), mark, "nothing may reach the upstream")

    def test_untrusted_ca_is_refused(self):
        mark = self.fake.mark()
        self.assert_refused(*self.invoke(self.other_ca))
        self.assert_refused(*self.invoke(self.system_ca))
        self.assertEqual(self.fake.mark(), mark, "nothing may reach the upstream")


if __name__ == "__main__":
    unittest.main()
