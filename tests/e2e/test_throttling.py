"""Throttling end to end (issue 4): Debian's python3-boto3 and raw HTTP -> bedrock-gateway ->
fake_bedrock.

The fake throttles in each shape Bedrock uses (400 + `x-amzn-ErrorType`, 400 + `__type` in the
body, 429) and, with `fake-flaky-<n>-<status>-<Code>-<tag>`, fails the first n requests for a
model id and then answers normally. Every test counts what the upstream saw (the fake's request
lines) as well as what the client got. No test sleeps: the gateways under test use millisecond
backoffs, and the long cool-down and rate-limit waits are asserted, never waited out.
"""

import json
import math
import unittest

import boto3
import botocore
from botocore.config import Config
from botocore.exceptions import ClientError

import bgw_e2e

GATEWAY_KEY = "AKIDGATEWAYTHROTTLE"
GATEWAY_SECRET = "gateway/throttle+secret/EXAMPLEKEY0123456789"
LIMITED = "limited.model-v1:0"  # rpm 2
TPM_MODELS = {"tpm.invoke-v1:0", "tpm.converse-v1:0", "tpm.stream-v1:0",
              "tpm.big-v1:0"}  # tpm 1000 each


def gateway_config(endpoint, retry, rate_limits=None):
    config = bgw_e2e.base_config(endpoint, retry=retry, log_level="info")
    if rate_limits:
        config["rate_limits"] = rate_limits
    return config


def invoke_path(model_id):
    return "/model/%s/invoke" % model_id.replace(":", "%3A")


class ThrottlingEndToEnd(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        binary = bgw_e2e.required_env("BGW_GATEWAY_BINARY")
        fake_binary = bgw_e2e.required_env("BGW_FAKE_BEDROCK")
        bgw_e2e.required_env("AWS_DATA_PATH")
        cls.workdir = bgw_e2e.class_workdir(cls, "bgw-throttle-")
        cls.fake = bgw_e2e.FakeBedrock(fake_binary, GATEWAY_KEY, GATEWAY_SECRET, ["us-east-1"])
        cls.addClassCleanup(cls.fake.stop)

        def start(name, retry, rate_limits=None):
            gw = bgw_e2e.Gateway(binary, gateway_config(cls.fake.endpoint, retry, rate_limits),
                                 cls.workdir, name, GATEWAY_KEY, GATEWAY_SECRET)
            cls.addClassCleanup(cls.stop_gateway, gw)
            return gw

        # Retries with millisecond backoffs, and local quotas.
        limits = {LIMITED: {"rpm": 2}}
        limits.update({m: {"tpm": 1000} for m in TPM_MODELS})
        cls.gateway = start("gateway", {"max_attempts": 3, "base_delay_ms": 1,
                                        "max_delay_ms": 20}, limits)
        # No retries, and a cool-down long enough to observe (5 s, never waited out).
        cls.cooling = start("cooling", {"max_attempts": 1, "base_delay_ms": 5000,
                                        "max_delay_ms": 5000})
        # Its own retry budget (500 tokens, 5 per retry), for the storm test alone.
        cls.storm = start("storm", {"max_attempts": 3, "base_delay_ms": 1, "max_delay_ms": 1})

    @staticmethod
    def stop_gateway(gateway):
        bgw_e2e.stop_checked(gateway)

    def tearDown(self):
        for gw in (self.gateway, self.cooling, self.storm):
            self.assertEqual(gw.sanitizer_reports(), [], gw.output())
            self.assertTrue(gw.alive(), "%s died\n%s" % (gw.name, gw.output()))

    # --- helpers ----------------------------------------------------------------------------

    def client(self, gateway=None):
        config = Config(retries={"total_max_attempts": 1, "mode": "standard"},
                        connect_timeout=5, read_timeout=30, signature_version=botocore.UNSIGNED)
        session = boto3.session.Session(region_name="us-east-1")
        client = session.client("bedrock-runtime", endpoint_url=(gateway or self.gateway).url,
                                config=config)
        self.addCleanup(client.close)
        return client

    def invoke(self, model_id, gateway=None, body=b"{}"):
        return bgw_e2e.http_request((gateway or self.gateway).port, "POST", invoke_path(model_id),
                                    body, bgw_e2e.JSON_HEADERS)

    def upstream_saw(self, mark, count):
        """Exactly `count` upstream requests after `mark`, every one signed by the gateway."""
        seen = self.fake.wait_requests(mark, count) if count else []
        self.assertEqual(len(self.fake.requests()) - mark, count, self.fake.requests()[mark:])
        for s in seen:
            self.assertTrue(s["signatureOk"], s)
        return seen

    def assert_uniform_429(self, resp, source_word):
        """The one shape every final throttle takes, whatever upstream sent."""
        self.assertEqual(resp.status, 429, resp)
        self.assertEqual(resp.error_code(), "ThrottlingException", resp)
        seconds = int(resp.headers["retry-after"])
        millis = int(resp.headers["x-amz-retry-after"])
        self.assertGreaterEqual(seconds, 1)
        self.assertGreaterEqual(millis, 1)
        self.assertEqual(seconds, max(1, math.ceil(millis / 1000)), resp.headers)
        body = resp.json()
        self.assertEqual(body["retryAfterSeconds"], seconds)
        self.assertIn(source_word, body["message"])
        self.assertTrue(resp.headers.get("x-amzn-requestid"), resp.headers)
        return seconds, millis

    # --- every upstream throttle shape becomes the uniform 429 ------------------------------

    def test_each_throttle_shape_is_retried_then_answered_with_the_uniform_429(self):
        shapes = [
            "fake-error-400-ThrottlingException",        # 400 + x-amzn-ErrorType
            "fake-errorbody-400-ThrottlingException",    # 400 + __type only
            "fake-error-429-ThrottlingException",        # 429
            "fake-errorbody-429-TooManyRequestsException",
            "fake-error-400-ProvisionedThroughputExceededException",
        ]
        for model_id in shapes:
            with self.subTest(model_id=model_id):
                mark = self.fake.mark()
                resp = self.invoke(model_id)
                seconds, _ = self.assert_uniform_429(resp, "upstream")
                self.assertLessEqual(seconds, 1)  # the 20 ms backoff cap, rounded up
                seen = self.upstream_saw(mark, 3)  # retry.max_attempts counts the first try
                # The request id is the one of the upstream answer that ended the request.
                self.assertEqual(resp.headers["x-amzn-requestid"], seen[-1]["requestId"])
                log = self.gateway.wait_log(
                    lambda e: e.get("upstream_request_id") == seen[-1]["requestId"])
                self.assertEqual(log["status"], 429)
                self.assertEqual(log["attempts"], 3)
                self.assertEqual(log["upstream_throttles"], 3)
                self.assertEqual(log["throttle"], "upstream")

    def test_boto3_sees_throttling_exception_with_status_429_and_retry_after(self):
        mark = self.fake.mark()
        with self.assertRaises(ClientError) as caught:
            self.client().invoke_model(modelId="fake-flaky-9-400-ThrottlingException-boto",
                                       body=b"{}")
        err = caught.exception.response
        self.assertEqual(err["Error"]["Code"], "ThrottlingException")
        self.assertEqual(err["ResponseMetadata"]["HTTPStatusCode"], 429)
        headers = err["ResponseMetadata"]["HTTPHeaders"]
        self.assertGreaterEqual(int(headers["retry-after"]), 1)
        self.assertGreaterEqual(int(headers["x-amz-retry-after"]), 1)
        self.upstream_saw(mark, 3)

    # --- what is retried, and what is not --------------------------------------------------

    def test_throttled_once_then_ok_is_retried_and_succeeds(self):
        for model_id in ("fake-flaky-1-429-ThrottlingException-once",
                         "fake-flaky-1-400-ThrottlingException-once",
                         "fake-flaky-1-503-ServiceUnavailableException-once",
                         "fake-flaky-1-500-InternalServerException-once",
                         "fake-flaky-1-429-ModelNotReadyException-once"):
            with self.subTest(model_id=model_id):
                mark = self.fake.mark()
                out = self.client().invoke_model(modelId=model_id, body=b'{"n":1}')
                self.assertEqual(out["ResponseMetadata"]["HTTPStatusCode"], 200)
                echo = json.loads(out["body"].read())
                self.assertEqual(echo["modelId"], model_id)
                seen = self.upstream_saw(mark, 2)
                self.assertNotEqual(seen[0]["status"], 200)
                self.assertEqual(seen[1]["status"], 200)
                # Both attempts carry the client's body unchanged, each signed by the gateway.
                self.assertEqual(seen[0]["bodySha256"], seen[1]["bodySha256"])
                log = self.gateway.wait_log(
                    lambda e: e.get("upstream_request_id") == seen[1]["requestId"])
                self.assertEqual((log["status"], log["attempts"]), (200, 2))

    def test_a_stream_is_retried_before_its_first_byte(self):
        mark = self.fake.mark()
        out = self.client().converse_stream(
            modelId="fake-flaky-1-429-ThrottlingException-stream",
            messages=[{"role": "user", "content": [{"text": "hi"}]}])
        kinds = [next(iter(event)) for event in out["stream"]]
        self.assertEqual(kinds[0], "messageStart")
        self.assertEqual(kinds[-1], "metadata")
        self.upstream_saw(mark, 2)

    def test_final_errors_pass_through_after_one_attempt(self):
        for model_id, status, code in (
                ("fake-error-400-ValidationException", 400, "ValidationException"),
                ("fake-error-403-AccessDeniedException", 403, "AccessDeniedException"),
                ("fake-error-400-ServiceQuotaExceededException", 400,
                 "ServiceQuotaExceededException"),
                ("fake-errorbody-404-ResourceNotFoundException", 404,
                 "ResourceNotFoundException")):
            with self.subTest(model_id=model_id):
                mark = self.fake.mark()
                resp = self.invoke(model_id)
                seen = self.upstream_saw(mark, 1)
                self.assertEqual(resp.status, status, resp)
                self.assertNotIn("retry-after", resp.headers)
                self.assertEqual(resp.headers["x-amzn-requestid"], seen[0]["requestId"])
                if model_id.startswith("fake-errorbody-"):
                    self.assertEqual(resp.json()["__type"], "com.amazon.bedrock#" + code)
                else:
                    self.assertEqual(resp.error_code(), code)

    def test_transient_errors_out_of_retries_reach_the_client_as_upstream_sent_them(self):
        mark = self.fake.mark()
        resp = self.invoke("fake-error-503-ServiceUnavailableException")
        seen = self.upstream_saw(mark, 3)
        self.assertEqual(resp.status, 503, resp)
        self.assertEqual(resp.error_code(), "ServiceUnavailableException")
        self.assertEqual(resp.headers["x-amzn-requestid"], seen[-1]["requestId"])
        self.assertEqual(resp.json()["message"],
                         "fake-bedrock scripted ServiceUnavailableException")

    # --- cool-downs ------------------------------------------------------------------------

    def test_a_throttled_model_cools_down_and_is_answered_at_once(self):
        model_id = "fake-flaky-1-429-ThrottlingException-cool"
        mark = self.fake.mark()
        first = self.invoke(model_id, self.cooling)
        self.assert_uniform_429(first, "upstream")
        self.assertEqual(first.headers["retry-after"], "5")  # the 5 s rest that just began
        self.upstream_saw(mark, 1)
        # Upstream would answer now, but the model rests: 429 at once, upstream never asked.
        mark = self.fake.mark()
        second = self.invoke(model_id, self.cooling)
        seconds, millis = self.assert_uniform_429(second, "cool-down")
        self.assertLessEqual(millis, 5000)
        self.assertGreaterEqual(seconds, 1)
        # Other models are not held back.
        self.assertEqual(self.invoke("other.model-v1:0", self.cooling).status, 200)
        self.upstream_saw(mark, 1)
        log = self.cooling.wait_log(lambda e: e.get("throttle") == "cooldown")
        self.assertEqual((log["status"], log["attempts"]), (429, 0))

    def test_a_throttle_inside_a_stream_starts_a_cool_down(self):
        model_id = "fake-stream-exception-throttlingException"
        client = self.client(self.cooling)
        out = client.invoke_model_with_response_stream(modelId=model_id, body=b"{}")
        with self.assertRaises(botocore.exceptions.EventStreamError):
            for _ in out["body"]:
                pass
        # The policy learns of the throttle when the gateway has finished the stream, which is
        # when it writes the stream's log line (the client can be faster than that).
        self.cooling.wait_log(lambda e: e.get("stream_exception") == "throttlingException")
        mark = self.fake.mark()
        resp = self.invoke(model_id, self.cooling)
        self.assert_uniform_429(resp, "cool-down")
        self.upstream_saw(mark, 0)

    # --- local quotas --------------------------------------------------------------------

    def test_rpm_limit_is_answered_locally_with_the_exact_wait(self):
        mark = self.fake.mark()
        self.assertEqual(self.invoke(LIMITED).status, 200)
        self.assertEqual(self.invoke(LIMITED).status, 200)
        third = self.invoke(LIMITED)
        seconds, millis = self.assert_uniform_429(third, "local rate limit")
        # rpm 2: a slot frees 30 s after the first was taken, less the time since then.
        self.assertGreater(millis, 25000)
        self.assertLessEqual(millis, 30000)
        self.assertEqual(seconds, 30)
        self.upstream_saw(mark, 2)  # the excess never left the gateway
        log = self.gateway.wait_log(lambda e: e.get("throttle") == "local_limit")
        self.assertEqual(log["attempts"], 0)

    def test_token_estimates_are_corrected_from_actual_usage(self):
        # tpm 1000: each request asks for up to 900 output tokens, so two could never fit on
        # the estimate alone; the fake reports ~20 tokens used, and the refund makes room.
        big = {"max_tokens": 900, "inferenceConfig": {"maxTokens": 900}}
        cases = {
            "tpm.invoke-v1:0": lambda c, m: c.invoke_model(modelId=m, body=json.dumps(big)),
            "tpm.converse-v1:0": lambda c, m: c.converse(
                modelId=m, messages=[{"role": "user", "content": [{"text": "hi"}]}],
                inferenceConfig={"maxTokens": 900}),
            "tpm.stream-v1:0": lambda c, m: list(c.converse_stream(
                modelId=m, messages=[{"role": "user", "content": [{"text": "hi"}]}],
                inferenceConfig={"maxTokens": 900})["stream"]),
        }
        for model_id, call in cases.items():
            with self.subTest(model_id=model_id):
                client = self.client()
                mark = self.fake.mark()
                for _ in range(3):
                    call(client, model_id)
                self.upstream_saw(mark, 3)

    def test_tokens_over_the_minute_quota_are_refused_locally(self):
        # 6,000 bytes of prompt and no output cap: estimated at ~1,500 tokens (admitted, as a
        # request above a whole minute's quota is once the bucket is full). The fake reports
        # the input it saw plus 7 output tokens, so the bucket ends ~500 tokens in debt and
        # even a tiny request must wait ~30 s for the refill: refused locally, not sent.
        mark = self.fake.mark()
        first = self.invoke("tpm.big-v1:0", body=json.dumps({"prompt": "x" * 6000}).encode())
        self.assertEqual(first.status, 200, first)
        second = self.invoke("tpm.big-v1:0", body=json.dumps({"max_tokens": 10}).encode())
        seconds, _ = self.assert_uniform_429(second, "local rate limit")
        self.assertGreaterEqual(seconds, 25)
        self.assertLessEqual(seconds, 35)
        self.upstream_saw(mark, 1)

    # --- the retry budget ----------------------------------------------------------------

    def test_the_retry_budget_stops_a_storm(self):
        # 60 requests, each to its own always-throttled model (so no cool-down holds any back).
        # The budget of 500 pays for 100 retries at 5 each: the first 50 requests make 3
        # attempts, the other 10 only 1. Without a budget upstream would see 180.
        mark = self.fake.mark()
        for i in range(60):
            resp = self.invoke("fake-flaky-1000-429-ThrottlingException-storm%d" % i, self.storm)
            self.assertEqual(resp.status, 429, resp)
        self.upstream_saw(mark, 50 * 3 + 10)
        log = self.storm.wait_log(lambda e: "retry budget" in e.get("error", ""))
        self.assertEqual(log["attempts"], 1)


if __name__ == "__main__":
    unittest.main()
