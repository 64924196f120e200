"""Request bodies of every size reach a TLS upstream whole, signed.

Bedrock is HTTPS only. Over an https upstream a body above 16 KiB used to stop after the
request head (one gather write of {head, body} over beast::ssl_stream wrote the head alone and
reported success). The fake here serves TLS with a small receive window, so the gateway's
writes really are partial, and checks every signature and body hash; a plain-HTTP fake takes
the same sizes as the control.
"""

import concurrent.futures
import hashlib
import json
import os
import shutil
import tempfile
import unittest

import bgw_e2e

GATEWAY_KEY = "AKIDGATEWAYTLSBODIES"
GATEWAY_SECRET = "tls-bodies-gateway-secret"
MODEL = "amazon.titan-text-lite-v1"
# Around one TLS record (16 KiB), several, many, and the largest body Bedrock accepts.
SIZES = [0, 1, 16383, 16384, 16385, 64 * 1024, 1024 * 1024, 25_000_000]
HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}


def gateway_config(endpoint):
    return bgw_e2e.base_config(
        endpoint,
        # A single attempt: a body that does not arrive must show as an error, not a retry.
        retry={"max_attempts": 1},
        upstream={"connect_timeout_ms": 5000, "response_timeout_ms": 60000},
        log_level="info",
    )


class TlsBodies(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        binary = bgw_e2e.required_env("BGW_GATEWAY_BINARY")
        fake_binary = bgw_e2e.required_env("BGW_FAKE_BEDROCK")
        bgw_e2e.isolate_sdk_environment(tempfile.gettempdir())
        cls.workdir = tempfile.mkdtemp(prefix="bgw-tls-bodies-")
        cls.tls_fake = bgw_e2e.FakeBedrock(fake_binary, GATEWAY_KEY, GATEWAY_SECRET,
                                           ["us-east-1"], rcvbuf=8192)
        cls.plain_fake = bgw_e2e.FakeBedrock(fake_binary, GATEWAY_KEY, GATEWAY_SECRET,
                                             ["us-east-1"], tls=False)
        cls.tls_gw = bgw_e2e.Gateway(binary, gateway_config(cls.tls_fake.endpoint), cls.workdir,
                                     "gateway-tls", GATEWAY_KEY, GATEWAY_SECRET)
        cls.plain_gw = bgw_e2e.Gateway(binary, gateway_config(cls.plain_fake.endpoint),
                                       cls.workdir, "gateway-plain", GATEWAY_KEY, GATEWAY_SECRET)

    @classmethod
    def tearDownClass(cls):
        try:
            for gw in (cls.tls_gw, cls.plain_gw):
                bgw_e2e.stop_checked(gw)
        finally:
            cls.tls_fake.stop()
            cls.plain_fake.stop()
            shutil.rmtree(cls.workdir, ignore_errors=True)

    def invoke(self, gw, body, path="/model/%s/invoke" % MODEL):
        return bgw_e2e.http_request(gw.port, "POST", path, body, HEADERS, timeout=120)

    def assert_arrived(self, gw, fake, size):
        body = os.urandom(size)
        mark = fake.mark()
        resp = self.invoke(gw, body)
        self.assertEqual(resp.status, 200, resp)
        echo = resp.json()
        self.assertEqual(echo["bodySha256"], hashlib.sha256(body).hexdigest())
        seen = fake.wait_requests(mark, 1)
        self.assertEqual(len(seen), 1, seen)
        self.assertTrue(seen[0]["signatureOk"], seen[0])
        self.assertEqual(seen[0]["bodyLength"], size)
        self.assertEqual(seen[0]["accessKeyId"], GATEWAY_KEY)

    def test_every_size_arrives_whole_and_signed_over_tls(self):
        for size in SIZES:
            with self.subTest(size=size):
                self.assert_arrived(self.tls_gw, self.tls_fake, size)

    def test_every_size_arrives_whole_over_plain_http(self):
        for size in SIZES:
            with self.subTest(size=size):
                self.assert_arrived(self.plain_gw, self.plain_fake, size)

    def test_a_stream_with_a_large_request_over_tls(self):
        text = "x" * (200 * 1024)
        body = json.dumps({"messages": [{"role": "user", "content": [{"text": text}]}]}).encode()
        mark = self.tls_fake.mark()
        resp = self.invoke(self.tls_gw, body, "/model/%s/converse-stream" % MODEL)
        self.assertEqual(resp.status, 200, resp)
        frames, leftover = bgw_e2e.decode_frames(resp.body)
        self.assertEqual(leftover, b"")
        kinds = [f["headers"].get(":event-type") for f in frames]
        self.assertEqual(kinds[0], "messageStart", kinds)
        self.assertEqual(kinds[-1], "metadata", kinds)
        seen = self.tls_fake.wait_requests(mark, 1)[0]
        self.assertTrue(seen["signatureOk"], seen)
        self.assertEqual(seen["bodyLength"], len(body))
        self.assertTrue(self.tls_fake.wait_stream_outcome(seen["requestId"])["completed"])

    def test_parallel_64k_requests_on_pooled_tls_connections(self):
        bodies = [os.urandom(64 * 1024) for _ in range(32)]
        mark = self.tls_fake.mark()
        with concurrent.futures.ThreadPoolExecutor(max_workers=32) as pool:
            answers = list(pool.map(lambda b: self.invoke(self.tls_gw, b), bodies))
        for body, resp in zip(bodies, answers):
            self.assertEqual(resp.status, 200, resp)
            self.assertEqual(resp.json()["bodySha256"], hashlib.sha256(body).hexdigest())
        seen = self.tls_fake.wait_requests(mark, 32)
        self.assertEqual(len(seen), 32)
        self.assertTrue(all(r["signatureOk"] and r["bodyLength"] == 64 * 1024 for r in seen))
        # A second round goes over the connections the first one left in the pool.
        again = list(map(lambda b: self.invoke(self.tls_gw, b), bodies[:4]))
        self.assertTrue(all(r.status == 200 for r in again), again)


if __name__ == "__main__":
    unittest.main()
