"""Limits (issue 10): every bound a client can hit gets a clear HTTP answer, nothing goes
upstream, and the gateway keeps serving: header count (431), target length (414), a head that
trickles in (408 at header_timeout_ms, whatever the keep-alive time), connections (503 with
Retry-After before reading anything), event streams (503 with Retry-After).
"""

import http.client
import json
import select
import socket
import threading
import time
import unittest

import bgw_e2e

GATEWAY_KEY = "AKIDGATEWAYLIMITS"
GATEWAY_SECRET = "gateway/limits+secret/EXAMPLEKEY012345678"
BODY = bgw_e2e.converse_body()
JSON = bgw_e2e.JSON_HEADERS


class LimitsEndToEnd(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.binary = bgw_e2e.required_env("BGW_GATEWAY_BINARY")
        fake_binary = bgw_e2e.required_env("BGW_FAKE_BEDROCK")
        cls.workdir = bgw_e2e.class_workdir(cls, "bgw-limits-")
        cls.fake = bgw_e2e.FakeBedrock(fake_binary, GATEWAY_KEY, GATEWAY_SECRET, ["us-east-1"])
        cls.addClassCleanup(cls.fake.stop)
        cls.gw = bgw_e2e.Gateway(cls.binary, bgw_e2e.base_config(
            cls.fake.endpoint,
            limits={"max_header_count": 20, "max_target_bytes": 512,
                    "header_timeout_ms": 400, "client_idle_timeout_ms": 30000,
                    "max_connections": 6, "max_streams": 1},
        ), cls.workdir, "limits", GATEWAY_KEY, GATEWAY_SECRET)
        cls.addClassCleanup(bgw_e2e.stop_checked, cls.gw)

    def assert_still_serving(self):
        ok = bgw_e2e.http_request(self.gw.port, "POST", "/model/m/converse", BODY, JSON)
        self.assertEqual(ok.status, 200, ok)

    def assert_nothing_upstream(self, mark, path_part):
        self.assert_still_serving()  # its record follows any stray one in the fake's list
        seen = [r["wirePath"] for r in self.fake.requests()[mark:]]
        self.assertFalse([p for p in seen if path_part in p], seen)

    def test_too_many_header_fields_is_431(self):
        mark = self.fake.mark()
        headers = dict(JSON, **{"X-Extra-%d" % i: "v" for i in range(25)})
        resp = bgw_e2e.http_request(self.gw.port, "POST", "/model/many-headers/converse", BODY,
                                    headers)
        self.assertEqual(resp.status, 431, resp)
        self.assertIn("limits.max_header_count (20)", resp.json()["message"])
        self.assert_nothing_upstream(mark, "many-headers")

    def test_a_long_target_is_414(self):
        mark = self.fake.mark()
        resp = bgw_e2e.http_request(self.gw.port, "POST",
                                    "/model/" + "long" + "m" * 600 + "/converse", BODY, JSON)
        self.assertEqual(resp.status, 414, resp)
        self.assertIn("limits.max_target_bytes (512 bytes)", resp.json()["message"])
        self.assert_nothing_upstream(mark, "longm")

    def test_a_head_that_trickles_in_gets_408_at_header_timeout(self):
        # A slowloris client: one byte every 50 ms keeps each read short, but the head as a
        # whole has 400 ms from its first byte, far less than the 30 s keep-alive time.
        head = b"POST /model/slow/converse HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 200
        with socket.create_connection(("127.0.0.1", self.gw.port), timeout=10) as s:
            started = time.monotonic()
            answered = False
            for byte in head:
                # The answer may come between two bytes: look before sending the next one (a
                # send after the gateway closed could reset the connection and lose it).
                if select.select([s], [], [], 0)[0]:
                    answered = True
                    break
                s.sendall(bytes([byte]))
                time.sleep(0.05)  # the attack's own pace, not a wait for the gateway
            self.assertTrue(answered, "the gateway waited for the whole trickled head")
            resp = http.client.HTTPResponse(s)
            resp.begin()
            body = json.loads(resp.read())
            elapsed = time.monotonic() - started
        self.assertEqual(resp.status, 408)
        self.assertIn("limits.header_timeout_ms", body["message"])
        self.assertLess(elapsed, 5.0)  # bounded by header_timeout, not by the keep-alive time
        self.assert_still_serving()

    def test_connections_beyond_the_limit_get_503_and_a_close(self):
        held = []
        try:
            # Fill up to the limit with kept-alive connections that each answered a request
            # (so each is surely counted); the class's own checks use fresh connections.
            for _ in range(6):
                conn = http.client.HTTPConnection("127.0.0.1", self.gw.port, timeout=10)
                conn.request("GET", "/healthz")
                resp = conn.getresponse()
                resp.read()
                if resp.status == 503:
                    conn.close()
                    break
                self.assertEqual(resp.status, 200)
                held.append(conn)
            self.assertEqual(len(held), 6)
            resp = bgw_e2e.http_request(self.gw.port, "GET", "/healthz")
            self.assertEqual(resp.status, 503, resp)
            self.assertEqual(resp.headers["retry-after"], "1")
            self.assertIn("limits.max_connections (6)", resp.json()["message"])
        finally:
            for conn in held:
                conn.close()
        # Closed connections give their places back, once the gateway has seen them close.
        deadline = time.monotonic() + 10
        while bgw_e2e.http_request(self.gw.port, "GET", "/healthz").status != 200:
            self.assertLess(time.monotonic(), deadline, "places never came back")
            time.sleep(0.01)

    def test_streams_beyond_the_limit_get_503_while_other_requests_pass(self):
        # One slow stream holds the only place: fake-delay pauses before every event.
        first_byte = threading.Event()
        done = {}

        def slow_stream():
            conn = http.client.HTTPConnection("127.0.0.1", self.gw.port, timeout=30)
            conn.request("POST", "/model/fake-delay-300/converse-stream", BODY, JSON)
            resp = conn.getresponse()
            resp.read(1)
            first_byte.set()
            done["rest"] = resp.read()
            done["status"] = resp.status
            conn.close()

        reader = threading.Thread(target=slow_stream, daemon=True)
        reader.start()
        self.assertTrue(first_byte.wait(10))
        resp = bgw_e2e.http_request(self.gw.port, "POST", "/model/m/converse-stream", BODY, JSON)
        self.assertEqual(resp.status, 503, resp)
        self.assertEqual(resp.headers["retry-after"], "1")
        self.assertIn("limits.max_streams (1)", resp.json()["message"])
        self.assert_still_serving()  # a plain request is not a stream
        reader.join(30)
        self.assertEqual(done.get("status"), 200)
        # The slot is free again once the gateway has finished the stream (which may be a
        # moment after the client read its last byte): the gauge says when.
        deadline = time.monotonic() + 10
        while "\nbedrock_gateway_open_streams 0\n" not in bgw_e2e.http_request(
                self.gw.port, "GET", "/metrics").body.decode():
            self.assertLess(time.monotonic(), deadline, "the stream's slot never came back")
            time.sleep(0.01)
        again = bgw_e2e.http_request(self.gw.port, "POST", "/model/m/converse-stream", BODY, JSON)
        self.assertEqual(again.status, 200, again)


if __name__ == "__main__":
    unittest.main()
