"""Throttling as real apps meet it (issue 17): the npm clients' own retry loops at their default
settings, each case run twice in the same test, through the gateway and straight to the same
fake Bedrock, compared as ratios (never absolute times).

- The AWS SDK for JavaScript v3 (`@aws-sdk/client-bedrock-runtime`, standard retry mode,
  3 attempts), with the SDK's own HTTP/1.1 `NodeHttpHandler` (timed per exchange), in both runs:
  the fake upstream speaks HTTP/1.1 only. Its default HTTP/2 handler against the gateway is
  tests/e2e/js/default_handler.test.mjs's.
- `@anthropic-ai/bedrock-sdk` (2 retries, reads `retry-after-ms`).

Both runs of a case use the same seeded Math.random (js/throttle_clients.mjs), so the SDK draws
the same backoff jitter through the gateway as without it. The gateway runs at its default retry
settings: the claim is about defaults. Each case uses its own model id, so no cool-down or
throttle count carries over from one case to the next.
"""

import http.server
import json
import os
import re
import subprocess
import threading
import time
import unittest
import uuid

import bgw_e2e

ACCESS_KEY = "AKIDGATEWAYCLIENTS"
SECRET_KEY = "gateway/clients+secret/EXAMPLEKEY0123456789"
JS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "js")
MAX_HOLD_MS = 1000  # retry.max_hold_ms's default: the gateway runs with its defaults
SEED = 20261207
# What a loaded 2-core CI machine may add to one exchange besides the hold and the upstream
# round trip (process scheduling, the client's own parsing): an allowance, not a measurement.
SCHEDULING_ALLOWANCE_MS = 150


def invoke_path(model_id):
    return "/model/%s/invoke" % model_id.replace(":", "%3A")


class RetryAfterUpstream(http.server.ThreadingHTTPServer):
    """An upstream that throttles with its own wait: `/model/ra-<seconds>-<tag>/invoke` answers
    429 ThrottlingException with `Retry-After: <seconds>`. The C++ fake sends no Retry-After,
    and this is all a test of following upstream's wait needs; it counts what it is asked."""

    daemon_threads = True

    def __init__(self):
        self.seen = []
        self.lock = threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(handler):  # noqa: N805 (the server is `self` here)
                length = int(handler.headers.get("Content-Length", "0"))
                handler.rfile.read(length)
                m = re.match(r"^/model/ra-(\d+)-", handler.path)
                with self.lock:
                    self.seen.append(handler.path)
                body = b'{"message":"slow down"}'
                handler.send_response(429)
                handler.send_header("Content-Type", "application/json")
                handler.send_header("x-amzn-ErrorType", "ThrottlingException")
                handler.send_header("x-amzn-RequestId", uuid.uuid4().hex)
                handler.send_header("Retry-After", m.group(1) if m else "1")
                handler.send_header("Content-Length", str(len(body)))
                handler.end_headers()
                handler.wfile.write(body)

            def log_message(handler, *args):  # quiet
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def endpoint(self):
        return "http://127.0.0.1:%d" % self.server_address[1]

    def calls(self, tag):
        with self.lock:
            return len([p for p in self.seen if tag in p])

    def stop(self):
        self.shutdown()
        self.server_close()


class ThrottleClientsEndToEnd(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        binary = bgw_e2e.required_env("BGW_GATEWAY_BINARY")
        fake_binary = bgw_e2e.required_env("BGW_FAKE_BEDROCK")
        if not os.path.isdir(os.path.join(JS_DIR, "node_modules", "@aws-sdk")):
            raise AssertionError("run `npm ci` in tests/e2e/js first (scripts/test.sh does)")
        cls.workdir = bgw_e2e.class_workdir(cls, "bgw-clients-")
        cls.fake = bgw_e2e.FakeBedrock(fake_binary, ACCESS_KEY, SECRET_KEY, ["us-east-1"])
        cls.addClassCleanup(cls.fake.stop)
        config = bgw_e2e.base_config(cls.fake.endpoint, log_level="info")
        cls.gateway = bgw_e2e.Gateway(binary, config, cls.workdir, "gw-clients", ACCESS_KEY,
                                      SECRET_KEY)
        cls.addClassCleanup(bgw_e2e.stop_checked, cls.gateway)
        # A second gateway, also at its defaults, in front of an upstream that says how long.
        cls.ra_upstream = RetryAfterUpstream()
        cls.addClassCleanup(cls.ra_upstream.stop)
        ra_config = dict(config, regions={"us-east-1": {"endpoint": cls.ra_upstream.endpoint}})
        cls.ra_gateway = bgw_e2e.Gateway(binary, ra_config, cls.workdir, "gw-retry-after",
                                         ACCESS_KEY, SECRET_KEY)
        cls.addClassCleanup(bgw_e2e.stop_checked, cls.ra_gateway)

    def tearDown(self):
        for gw in (self.gateway, self.ra_gateway):
            self.assertEqual(gw.sanitizer_reports(), [], gw.output())
            self.assertTrue(gw.alive(), gw.output())

    # --- helpers ----------------------------------------------------------------------------

    def run_client(self, client, base_url, model, **extra):
        args = {"client": client, "baseUrl": base_url, "model": model, "seed": SEED,
                "accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}
        args.update(extra)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        # The fake serves TLS with the test CA: the direct runs must trust it, as the gateway does.
        env.update({"AWS_EC2_METADATA_DISABLED": "true", "HOME": self.workdir,
                    "NODE_EXTRA_CA_CERTS": bgw_e2e.e2e_pki()["ca"]})
        run = subprocess.run(["node", "throttle_clients.mjs", json.dumps(args)], cwd=JS_DIR,
                             env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, timeout=120)
        out = run.stdout.decode("utf-8", "replace")
        self.assertEqual(run.returncode, 0, out + run.stderr.decode("utf-8", "replace"))
        return json.loads(out.strip().splitlines()[-1])

    def upstream_calls(self, model):
        """How many requests for `model` the fake has seen (all of them signed with its key)."""
        self.fake.sync()
        seen = [r for r in self.fake.requests() if model.replace(":", "%3A") in r["target"]]
        for r in seen:
            self.assertTrue(r["signatureOk"], r)
        return len(seen)

    def both_ways(self, client, behaviour, **extra):
        """The case run straight to the fake, then through the gateway, each with its own
        model id of the same behaviour."""
        tag = uuid.uuid4().hex[:8]
        direct_model = "%s-d%s" % (behaviour, tag)
        gateway_model = "%s-g%s" % (behaviour, tag)
        direct = self.run_client(client, self.fake.endpoint, direct_model, **extra)
        direct["upstream"] = self.upstream_calls(direct_model)
        via = self.run_client(client, self.gateway.url, gateway_model, **extra)
        via["upstream"] = self.upstream_calls(gateway_model)
        print("%s %s: direct %.0f ms, %d upstream calls; gateway %.0f ms, %d upstream calls"
              % (client, behaviour, direct["elapsedMs"], direct["upstream"], via["elapsedMs"],
                 via["upstream"]))
        return direct, via

    def assert_every_429_prompt(self, direct, via):
        """Every 429 through the gateway came within max_hold_ms plus one upstream round trip
        (the slowest exchange of the direct run), and said when to come back in all three
        forms, the same wait each."""
        round_trip = max(e["ms"] for e in direct["exchanges"])
        throttles = [e for e in via["exchanges"] if e["status"] == 429]
        self.assertTrue(throttles, via)
        for e in throttles:
            self.assertLessEqual(e["ms"], MAX_HOLD_MS + round_trip + SCHEDULING_ALLOWANCE_MS,
                                 (e, round_trip))
            h = e["headers"]
            millis = int(h["x-amz-retry-after"])
            self.assertEqual(int(h["retry-after-ms"]), millis, h)
            self.assertEqual(int(h["retry-after"]), max(1, -(-millis // 1000)), h)
            self.assertIn("x-gateway-attempts", h)

    # --- an always-throttling model ---------------------------------------------------------

    def check_always_throttled(self, client):
        direct, via = self.both_ways(client, "fake-flaky-1000-429-ThrottlingException")
        for run in (direct, via):
            self.assertFalse(run["ok"], run)
            self.assertEqual(run["status"], 429, run)
        # No multiplication: no more upstream calls through the gateway than without it.
        self.assertLessEqual(via["upstream"], direct["upstream"])
        # The client gives up no later than 1.5 times as late as it does without the gateway.
        self.assertLessEqual(via["elapsedMs"], 1.5 * direct["elapsedMs"], (direct, via))
        self.assert_every_429_prompt(direct, via)
        # Each retry came after the advertised wait and was sent upstream: the wait was true
        # (a retry refused locally for the same cool-down would cost no upstream call).
        self.assertEqual(via["upstream"], len(via["exchanges"]), via)

    def test_aws_sdk_always_throttled(self):
        self.check_always_throttled("aws-sdk")

    def test_anthropic_sdk_always_throttled(self):
        self.check_always_throttled("anthropic")

    # --- a model that throttles once ------------------------------------------------------

    def test_throttled_once_is_a_200_through_the_gateway(self):
        for client in ("aws-sdk", "anthropic"):
            with self.subTest(client=client):
                direct, via = self.both_ways(client, "fake-flaky-1-429-ThrottlingException")
                self.assertTrue(via["ok"], via)
                self.assertEqual(via["status"], 200, via)
                self.assertTrue(direct["ok"], direct)
                self.assertLessEqual(via["upstream"], direct["upstream"])
                self.assert_every_429_prompt(direct, via)

    def test_an_app_without_retries_has_one_throttle_absorbed(self):
        # No SDK retry headers: the gateway retries itself, within its hold budget.
        model = "fake-flaky-1-429-ThrottlingException-raw%s" % uuid.uuid4().hex[:8]
        resp = bgw_e2e.http_request(self.gateway.port, "POST", invoke_path(model), b"{}",
                                    bgw_e2e.JSON_HEADERS)
        self.assertEqual(resp.status, 200, resp)
        self.assertEqual(resp.headers["x-gateway-attempts"], "2")
        self.assertEqual(self.upstream_calls(model), 2)

    # --- a failure that stays a failure ---------------------------------------------------

    def test_a_final_5xx_carries_retry_after_and_is_not_multiplied(self):
        direct, via = self.both_ways("aws-sdk", "fake-flaky-1000-503-ServiceUnavailableException")
        self.assertEqual(via["status"], 503, via)
        self.assertLessEqual(via["upstream"], direct["upstream"])
        for e in via["exchanges"]:
            self.assertEqual(e["status"], 503, e)
            self.assertGreaterEqual(int(e["headers"]["retry-after"]), 1, e)
            self.assertGreaterEqual(int(e["headers"]["x-amz-retry-after"]), 1, e)
            self.assertEqual(e["headers"]["x-gateway-attempts"], "1", e)

    # --- Retry-After is the truth -------------------------------------------------------------

    def test_a_client_back_after_exactly_retry_after_is_sent_upstream(self):
        model = "fake-flaky-1000-429-ThrottlingException-exact%s" % uuid.uuid4().hex[:8]
        headers = dict(bgw_e2e.JSON_HEADERS, **{"X-Gateway-Max-Attempts": "1"})
        for i in range(4):  # rests of 100, 200, 400, 800 ms
            resp = bgw_e2e.http_request(self.gateway.port, "POST", invoke_path(model), b"{}",
                                        headers)
            self.assertEqual(resp.status, 429, resp)
            self.assertEqual(self.upstream_calls(model), i + 1)  # sent upstream, every time
            log = self.gateway.wait_log(
                lambda e, n=i + 1: e.get("model") == model and e.get("upstream_throttles") and
                len([x for x in self.gateway.request_logs() if x.get("model") == model]) >= n)
            self.assertEqual(log["throttle"], "upstream")
            # Waiting what was advertised is the behaviour under test, not synchronisation.
            time.sleep(int(resp.headers["x-amz-retry-after"]) / 1000.0)
        for entry in self.gateway.request_logs():
            if entry.get("model") == model:
                self.assertNotEqual(entry.get("throttle"), "cooldown", entry)

    def test_an_app_without_retries_waits_a_short_cool_down_and_no_longer(self):
        # No SDK retry headers, so the gateway's own 3 attempts: throttled, rest 100 ms (waited),
        # throttled, rest 200 ms (waited), throttled: out of attempts, 429 with the 400 ms left.
        model = "fake-flaky-1000-429-ThrottlingException-hold%s" % uuid.uuid4().hex[:8]
        headers = bgw_e2e.JSON_HEADERS
        first = bgw_e2e.http_request(self.gateway.port, "POST", invoke_path(model), b"{}",
                                     headers)
        self.assertEqual(first.status, 429, first)
        self.assertEqual(first.headers["x-gateway-attempts"], "3")
        self.assertEqual(self.upstream_calls(model), 3)
        self.assertLessEqual(int(first.headers["x-amz-retry-after"]), 400)
        # At once again: the rest left (at most 400 ms) fits the hold, so it is waited out and
        # the request goes upstream as it ends; its throttle rests the model 800 ms, beyond
        # the 1000 ms hold less what was waited: the 429 at once, with those 800 ms.
        second = bgw_e2e.http_request(self.gateway.port, "POST", invoke_path(model), b"{}",
                                      headers)
        self.assertEqual(second.status, 429, second)
        self.assertEqual(self.upstream_calls(model), 4)
        self.assertEqual(second.headers["x-gateway-attempts"], "1")
        self.assertGreater(int(second.headers["x-amz-retry-after"]), 400)
        self.assertLessEqual(int(second.headers["x-amz-retry-after"]), 800)

    def test_upstreams_own_retry_after_is_the_cool_down_within_the_cap(self):
        for seconds, expect_ms in ((2, 2000), (3600, 10000)):  # retry.max_cooldown_ms: 10 s
            with self.subTest(upstream_retry_after=seconds):
                tag = uuid.uuid4().hex[:8]
                model = "ra-%d-%s" % (seconds, tag)
                resp = bgw_e2e.http_request(self.ra_gateway.port, "POST", invoke_path(model),
                                            b"{}", bgw_e2e.JSON_HEADERS)
                self.assertEqual(resp.status, 429, resp)
                # Beyond the 1 s hold: answered after one attempt, at once, with upstream's wait.
                self.assertEqual(self.ra_upstream.calls(tag), 1)
                millis = int(resp.headers["x-amz-retry-after"])
                self.assertLessEqual(millis, expect_ms)
                self.assertGreater(millis, expect_ms - 1000)
                self.assertEqual(resp.headers["retry-after"], str(expect_ms // 1000))

    # --- client deadlines ----------------------------------------------------------------------

    def test_no_wait_outlives_the_clients_deadline(self):
        # Upstream takes 3 s; the client will wait 600 ms: a 504 with Retry-After before then
        # (the deadline keeps a margin of a fifth), not a closed connection.
        start = time.monotonic()
        resp = bgw_e2e.http_request(self.gateway.port, "POST", invoke_path("fake-delay-3000"),
                                    b"{}", dict(bgw_e2e.JSON_HEADERS,
                                                      **{"X-Gateway-Timeout-Ms": "600"}))
        took = time.monotonic() - start
        self.assertEqual(resp.status, 504, resp)
        self.assertIn("deadline", resp.json()["message"])
        self.assertIn("retry-after", resp.headers)
        self.assertLess(took, 3.0 / 2)  # well before upstream would have answered

    def test_an_anthropic_client_timeout_is_met_with_an_answer(self):
        # X-Stainless-Timeout: 2 (s): the SDK gets the gateway's 504 (at 1.6 s, the deadline
        # less its margin), not its own timeout.
        out = self.run_client("anthropic", self.gateway.url, "fake-delay-5000", timeoutMs=2000,
                              maxRetries=0)
        self.assertFalse(out["ok"], out)
        self.assertEqual(out["status"], 504, out)

    def test_bad_client_headers_are_refused_clearly(self):
        for name, value in (("X-Gateway-Max-Attempts", "0"), ("X-Gateway-Timeout-Ms", "soon")):
            with self.subTest(header=name):
                resp = bgw_e2e.http_request(self.gateway.port, "POST", invoke_path("m"), b"{}",
                                            dict(bgw_e2e.JSON_HEADERS, **{name: value}))
                self.assertEqual(resp.status, 400, resp)
                self.assertEqual(resp.error_code(), "ValidationException")
                self.assertIn(name, resp.json()["message"])


if __name__ == "__main__":
    unittest.main()
