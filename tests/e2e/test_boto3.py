"""End to end with a real SDK: Debian's python3-boto3 -> bedrock-gateway -> fake_bedrock.

Run by CTest (tests/CMakeLists.txt) with /usr/bin/python3 and these environment variables:
  BGW_GATEWAY_BINARY  the gateway under test
  BGW_FAKE_BEDROCK    tests/fakes/fake_bedrock_main.cpp: checks SigV4 like AWS, logs what it saw
  AWS_DATA_PATH       tests/reference/botocore-models (botocore 1.29 has no bedrock-runtime)

The fake rejects anything not signed with the gateway's key for service `bedrock`, so a 200 here
also proves the gateway re-signed the request. Every test asserts on what the upstream saw (the
fake's JSON log lines), not only on what the client got back.
"""

import hashlib
import json
import os
import re
import time
import unittest

import boto3
import botocore
from botocore.config import Config
from botocore.exceptions import ClientError

import bgw_e2e

GATEWAY_KEY = "AKIDGATEWAY"
GATEWAY_SECRET = "gateway/secret+KEY/EXAMPLEKEY0123456789"
APP_KEY = "AKIDAPPUNRELATED"
APP_SECRET = "app-secret-not-known-upstream"
APP_TOKEN = "app-session-token-must-not-leak"

CLAUDE = "anthropic.claude-3-5-sonnet-20240620-v1:0"
CLAUDE_WIRE = "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/invoke"
PROVISIONED = "arn:aws:bedrock:us-east-1:123456789012:provisioned-model/abcdefghijkl"
PROVISIONED_WIRE = ("/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Aprovisioned-model"
                    "%2Fabcdefghijkl/invoke")
NON_ASCII = "héllo wörld — 日本語 🚀"
MAX_BODY = 1536 * 1024  # above the 1 MiB test body, below the over-limit one
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")




def gateway_config(regions, response_timeout_ms=120000):
    return bgw_e2e.base_config(
        regions,
        upstream={"ca_file": "", "connect_timeout_ms": 3000,
                  "response_timeout_ms": response_timeout_ms},
        limits={"max_body_bytes": MAX_BODY},
        log_level="info",
    )


def expected_invoke_echo(seen, model_id):
    """The exact bytes the fake's invoke route writes for the request it logged (RapidJSON's
    compact form, keys in this order), so the client's body can be compared byte for byte."""
    headers = seen["headers"]
    echo = {
        "modelId": model_id,
        "wirePath": seen["wirePath"],
        "bodySha256": seen["bodySha256"],
        "bodyLength": seen["bodyLength"],
        "contentType": headers.get("content-type"),
        "accept": headers.get("accept"),
        "serviceTier": headers.get("x-amzn-bedrock-service-tier"),
        "region": seen["region"],
    }
    return json.dumps(echo, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class GatewayEndToEnd(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.gateway_binary = bgw_e2e.required_env("BGW_GATEWAY_BINARY")
        fake_binary = bgw_e2e.required_env("BGW_FAKE_BEDROCK")
        bgw_e2e.required_env("AWS_DATA_PATH")
        # This process's own SDK clients must not read the developer's ~/.aws or call IMDS.
        cls.workdir = bgw_e2e.class_workdir(cls, "bgw-e2e-")

        cls.fake = bgw_e2e.FakeBedrock(fake_binary, GATEWAY_KEY, GATEWAY_SECRET,
                                       ["us-east-1", "eu-west-1"])
        cls.addClassCleanup(cls.fake.stop)
        cls.gateway = cls.start_gateway(
            "gateway", {"us-east-1": cls.fake.endpoint, "eu-west-1": cls.fake.endpoint})
        cls.addClassCleanup(cls.stop_gateway, cls.gateway)

    @classmethod
    def start_gateway(cls, name, regions, **kwargs):
        return bgw_e2e.Gateway(cls.gateway_binary, gateway_config(regions, **kwargs), cls.workdir,
                               name, GATEWAY_KEY, GATEWAY_SECRET)

    @staticmethod
    def stop_gateway(gateway):
        bgw_e2e.stop_checked(gateway)

    def tearDown(self):
        # UBSan reports as it goes and a crash ends the process: pin either on the test that
        # caused it, not on the end of the run.
        reports = self.gateway.sanitizer_reports()
        self.assertEqual(reports, [], self.gateway.output())
        self.assertTrue(self.gateway.alive(),
                        "gateway died (exit %r)\n%s" % (self.gateway.proc.poll(),
                                                        self.gateway.output()))

    # --- helpers ----------------------------------------------------------------------------

    def client(self, region="us-east-1", signed=False):
        """A bedrock-runtime client pointed at the gateway; retries off so each call is one
        request and errors surface as they arrived."""
        config = Config(retries={"total_max_attempts": 1, "mode": "standard"},
                        connect_timeout=5, read_timeout=60,
                        signature_version=None if signed else botocore.UNSIGNED)
        session = boto3.session.Session(
            aws_access_key_id=APP_KEY if signed else None,
            aws_secret_access_key=APP_SECRET if signed else None,
            aws_session_token=APP_TOKEN if signed else None,
            region_name=region)
        client = session.client("bedrock-runtime", endpoint_url=self.gateway.url,
                                config=config)
        self.addCleanup(client.close)
        return client

    def one_upstream_request(self, mark):
        seen = self.fake.wait_requests(mark, 1)
        self.fake.sync()  # so an extra request cannot hide behind the reader thread
        self.assertEqual(len(self.fake.requests()), mark + 1,
                         "expected exactly one upstream request: %r" % self.fake.requests()[mark:])
        return seen[0]

    def assert_signed_by_gateway(self, seen, region):
        self.assertTrue(seen["signatureOk"], seen)
        self.assertEqual(seen["accessKeyId"], GATEWAY_KEY)
        self.assertEqual(seen["region"], region)
        self.assertNotIn("x-amz-security-token", seen["headers"])

    def invoke_and_check(self, client, model_id, wire_path, body, region):
        mark = self.fake.mark()
        resp = client.invoke_model(modelId=model_id, body=body, contentType="application/json",
                                   accept="application/json")
        got = resp["body"].read()
        seen = self.one_upstream_request(mark)
        self.assertEqual(seen["method"], "POST")
        self.assertEqual(seen["wirePath"], wire_path)
        self.assert_signed_by_gateway(seen, region)
        self.assertEqual(seen["bodySha256"], hashlib.sha256(body).hexdigest())
        self.assertEqual(seen["headers"].get("content-type"), "application/json")
        self.assertEqual(seen["headers"].get("accept"), "application/json")
        # The response is relayed unchanged: same bytes, same request id, token headers kept.
        self.assertEqual(got, expected_invoke_echo(seen, model_id))
        self.assertEqual(resp["ResponseMetadata"]["RequestId"], seen["requestId"])
        self.assertRegex(seen["requestId"], UUID)
        headers = resp["ResponseMetadata"]["HTTPHeaders"]
        self.assertIn("x-amzn-bedrock-input-token-count", headers)
        self.assertIn("x-amzn-bedrock-output-token-count", headers)
        return json.loads(got), seen

    # --- invoke and converse through boto3 ------------------------------------------------------

    def test_invoke_unsigned_client_model_id_with_colon(self):
        body = json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 10,
                           "messages": [{"role": "user", "content": "hi"}]}).encode()
        echo, _ = self.invoke_and_check(self.client(), CLAUDE, CLAUDE_WIRE, body, "us-east-1")
        self.assertEqual(echo["modelId"], CLAUDE)

    def test_invoke_signed_by_app_in_configured_region_uses_that_region(self):
        echo, seen = self.invoke_and_check(self.client("eu-west-1", signed=True), CLAUDE,
                                           CLAUDE_WIRE, b'{"prompt":"eu"}', "eu-west-1")
        self.assertEqual(echo["region"], "eu-west-1")
        # The app's date and token were replaced, not passed along.
        self.assertIn("x-amz-date", seen["headers"])

    def test_invoke_signed_by_app_in_unconfigured_region_uses_default_region(self):
        echo, _ = self.invoke_and_check(self.client("ap-south-1", signed=True), CLAUDE,
                                        CLAUDE_WIRE, b'{"prompt":"ap"}', "us-east-1")
        self.assertEqual(echo["region"], "us-east-1")

    def test_invoke_provisioned_model_arn_keeps_slash_inside_the_label(self):
        echo, _ = self.invoke_and_check(self.client(), PROVISIONED, PROVISIONED_WIRE, b"{}",
                                        "us-east-1")
        self.assertEqual(echo["modelId"], PROVISIONED)

    def test_invoke_one_mib_body(self):
        body = os.urandom(1024 * 1024)
        echo, seen = self.invoke_and_check(self.client(), CLAUDE, CLAUDE_WIRE, body, "us-east-1")
        self.assertEqual(seen["bodyLength"], len(body))
        self.assertEqual(echo["bodySha256"], hashlib.sha256(body).hexdigest())

    def test_invoke_service_tier_header_crosses_both_ways(self):
        mark = self.fake.mark()
        resp = self.client().invoke_model(modelId=CLAUDE, body=b"{}", serviceTier="flex")
        echo = json.loads(resp["body"].read())
        seen = self.one_upstream_request(mark)
        self.assertEqual(seen["headers"].get("x-amzn-bedrock-service-tier"), "flex")
        self.assertEqual(echo["serviceTier"], "flex")
        self.assertEqual(resp["ResponseMetadata"]["HTTPHeaders"].get("x-amzn-bedrock-service-tier"),
                         "flex")

    def test_converse_non_ascii_text_round_trips(self):
        mark = self.fake.mark()
        resp = self.client().converse(
            modelId=CLAUDE,
            messages=[{"role": "user", "content": [{"text": "first turn"}]},
                      {"role": "assistant", "content": [{"text": "ok"}]},
                      {"role": "user", "content": [{"text": NON_ASCII}]}])
        seen = self.one_upstream_request(mark)
        self.assertEqual(seen["wirePath"], "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse")
        self.assert_signed_by_gateway(seen, "us-east-1")
        self.assertEqual(resp["output"]["message"]["content"][0]["text"], NON_ASCII)
        self.assertEqual(resp["stopReason"], "end_turn")
        usage = resp["usage"]
        self.assertEqual(usage["totalTokens"], usage["inputTokens"] + usage["outputTokens"])

    # --- the other runtime operations -------------------------------------------------------

    def test_count_tokens(self):
        mark = self.fake.mark()
        resp = self.client().count_tokens(
            modelId=CLAUDE,
            input={"converse": {"messages": [{"role": "user", "content": [{"text": "count me"}]}]}})
        seen = self.one_upstream_request(mark)
        self.assertEqual(seen["wirePath"],
                         "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/count-tokens")
        self.assert_signed_by_gateway(seen, "us-east-1")
        # The fake counts bodyLength / 4; the gateway must not have altered the body.
        self.assertEqual(resp["inputTokens"], max(1, seen["bodyLength"] // 4))

    def test_apply_guardrail(self):
        mark = self.fake.mark()
        resp = self.client().apply_guardrail(
            guardrailIdentifier="gr-abc123", guardrailVersion="DRAFT", source="INPUT",
            content=[{"text": {"text": NON_ASCII}}])
        seen = self.one_upstream_request(mark)
        self.assertEqual(seen["wirePath"], "/guardrail/gr-abc123/version/DRAFT/apply")
        self.assert_signed_by_gateway(seen, "us-east-1")
        self.assertEqual(resp["action"], "NONE")
        self.assertIn("topicPolicyUnits", resp["usage"])

    def test_async_invoke_start_list_get(self):
        client = self.client("eu-west-1", signed=True)
        mark = self.fake.mark()
        started = client.start_async_invoke(
            modelId="amazon.nova-reel-v1:0", modelInput={"taskType": "TEXT_VIDEO"},
            outputDataConfig={"s3OutputDataConfig": {"s3Uri": "s3://bucket/out/"}})
        seen = self.one_upstream_request(mark)
        self.assertEqual((seen["method"], seen["wirePath"]), ("POST", "/async-invoke"))
        self.assert_signed_by_gateway(seen, "eu-west-1")
        arn = started["invocationArn"]
        self.assertTrue(arn.startswith("arn:aws:bedrock:eu-west-1:"), arn)

        mark = self.fake.mark()
        listed = client.list_async_invokes(statusEquals="InProgress", maxResults=5)
        seen = self.one_upstream_request(mark)
        self.assertEqual((seen["method"], seen["wirePath"]), ("GET", "/async-invoke"))
        self.assertEqual(sorted(seen["query"].split("&")), ["maxResults=5", "statusEquals=InProgress"])
        self.assert_signed_by_gateway(seen, "eu-west-1")
        self.assertEqual(listed["asyncInvokeSummaries"], [])

        mark = self.fake.mark()
        got = client.get_async_invoke(invocationArn=arn)
        seen = self.one_upstream_request(mark)
        self.assertEqual(seen["method"], "GET")
        self.assertEqual(seen["wirePath"],
                         "/async-invoke/" + arn.replace(":", "%3A").replace("/", "%2F"))
        self.assert_signed_by_gateway(seen, "eu-west-1")
        self.assertEqual(got["invocationArn"], arn)
        self.assertEqual(got["status"], "InProgress")

    # --- final upstream errors reach the SDK as Bedrock sent them -----------------------------

    def assert_upstream_error(self, model_id, status, code):
        mark = self.fake.mark()
        with self.assertRaises(ClientError) as caught:
            self.client().invoke_model(modelId=model_id, body=b"{}")
        err = caught.exception.response
        seen = self.fake.wait_requests(mark, 1)[0]
        self.assertEqual(seen["wirePath"], "/model/%s/invoke" % model_id)
        self.assertTrue(seen["signatureOk"], seen)
        self.assertEqual(err["Error"]["Code"], code)
        self.assertEqual(err["Error"]["Message"], "fake-bedrock scripted " + code)
        self.assertEqual(err["ResponseMetadata"]["HTTPStatusCode"], status)
        self.assertEqual(err["ResponseMetadata"]["RequestId"], seen["requestId"])

    def test_upstream_validation_error(self):
        self.assert_upstream_error("fake-error-400-ValidationException", 400,
                                   "ValidationException")

    def test_upstream_access_denied(self):
        # Final errors are never retried and never reshaped (throttles are: test_throttling.py).
        self.assert_upstream_error("fake-error-403-AccessDeniedException", 403,
                                   "AccessDeniedException")

    def test_client_hanging_up_right_after_the_response_never_poisons_the_pool(self):
        # A client that closes the moment it has read the last byte races the gateway's
        # hang-up watcher against the end of the relay. Whoever wins, the next request (which
        # takes the pooled upstream connection) must succeed; once it got a closed one: 502.
        for i in range(100):
            resp = bgw_e2e.http_request(self.gateway.port, "POST", CLAUDE_WIRE, b"{}",
                                        bgw_e2e.JSON_HEADERS)
            self.assertEqual(resp.status, 200, "request %d: %r" % (i, resp))

    # --- what other clients send: raw paths and foreign auth headers ---------------------------

    def test_raw_colon_in_path_is_encoded_upstream(self):
        # AnthropicBedrock quotes the model id with safe=":" and sends the colon raw.
        mark = self.fake.mark()
        resp = bgw_e2e.http_request(self.gateway.port, "POST", "/model/a.b:0/invoke", b"{}",
                                    bgw_e2e.JSON_HEADERS)
        self.assertEqual(resp.status, 200, resp)
        seen = self.one_upstream_request(mark)
        self.assertEqual(seen["wirePath"], "/model/a.b%3A0/invoke")
        self.assert_signed_by_gateway(seen, "us-east-1")
        self.assertEqual(resp.json()["modelId"], "a.b:0")

    def test_incoming_auth_headers_never_reach_upstream(self):
        mark = self.fake.mark()
        resp = bgw_e2e.http_request(self.gateway.port, "POST", CLAUDE_WIRE, b"{}", {
            "Content-Type": "application/json",
            "Authorization": "AWS4-HMAC-SHA256 Credential=%s/20000101/eu-west-1/bedrock/"
                             "aws4_request, SignedHeaders=host;x-amz-date, Signature=%s"
                             % (APP_KEY, "0" * 64),
            "X-Amz-Date": "20000101T000000Z",
            "X-Amz-Security-Token": APP_TOKEN,
            "X-Amz-Content-Sha256": "UNSIGNED-PAYLOAD",
        })
        self.assertEqual(resp.status, 200, resp)
        seen = self.one_upstream_request(mark)
        self.assert_signed_by_gateway(seen, "eu-west-1")
        self.assertNotEqual(seen["headers"].get("x-amz-date"), "20000101T000000Z")
        self.assertNotEqual(seen["headers"].get("x-amz-content-sha256"), "UNSIGNED-PAYLOAD")
        self.assertNotIn(APP_TOKEN, json.dumps(seen))
        self.assertNotIn(APP_KEY, json.dumps(seen))

    def test_bearer_token_is_replaced_by_the_gateways_signature(self):
        mark = self.fake.mark()
        resp = bgw_e2e.http_request(self.gateway.port, "POST", CLAUDE_WIRE, b"{}",
                                    {"Authorization": "Bearer bedrock-api-key-xyz"})
        self.assertEqual(resp.status, 200, resp)
        seen = self.one_upstream_request(mark)
        self.assert_signed_by_gateway(seen, "us-east-1")

    # --- bad input gets Bedrock-shaped errors from the gateway itself ---------------------------

    def assert_gateway_error(self, resp, status, code=None):
        self.assertEqual(resp.status, status, resp)
        self.assertTrue(resp.headers.get("content-type", "").startswith("application/json"), resp)
        self.assertIsInstance(resp.json().get("message"), str, resp)
        self.assertTrue(resp.error_code(), "x-amzn-ErrorType missing: %r" % resp)
        if code:
            self.assertEqual(resp.error_code(), code, resp)

    def test_unknown_path_is_404_and_not_forwarded(self):
        mark = self.fake.mark()
        for method, path in (("GET", "/nope"), ("POST", "/model/x/unknown-op"),
                             ("POST", "/model//invoke")):
            resp = bgw_e2e.http_request(self.gateway.port, method, path, b"{}")
            self.assertIn(resp.status, (400, 404), (method, path, resp))
            self.assert_gateway_error(resp, resp.status)
            if resp.status == 404:
                self.assertEqual(resp.error_code(), "UnknownOperationException", resp)
        resp = bgw_e2e.http_request(self.gateway.port, "GET", "/nope")
        self.assert_gateway_error(resp, 404, "UnknownOperationException")
        self.assertEqual(self.fake.mark(), mark, "an unknown path reached the upstream")

    def test_body_over_limit_is_413_and_not_forwarded(self):
        mark = self.fake.mark()
        size = MAX_BODY + 1
        head = ("POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                "Content-Length: %d\r\n\r\n" % (CLAUDE_WIRE, size)).encode()
        resp = bgw_e2e.raw_exchange(self.gateway.port, head, b"x" * size)
        self.assert_gateway_error(resp, 413, "ValidationException")
        self.assertEqual(self.fake.mark(), mark, "an over-limit body reached the upstream")

    def test_malformed_request_line_is_400(self):
        mark = self.fake.mark()
        resp = bgw_e2e.raw_exchange(self.gateway.port, b"GARBAGE\r\n\r\n")
        self.assert_gateway_error(resp, 400)
        self.assertEqual(self.fake.mark(), mark)

    # --- the upstream failing: unreachable and too slow ----------------------------------------

    def test_unreachable_upstream_is_502(self):
        blocker = bgw_e2e.closed_port()
        self.addCleanup(blocker.close)
        gateway = self.start_gateway(
            "gateway-closed-port",
            {"us-east-1": "http://127.0.0.1:%d" % blocker.getsockname()[1]})
        self.addCleanup(self.stop_gateway, gateway)
        resp = bgw_e2e.http_request(gateway.port, "POST", CLAUDE_WIRE, b"{}")
        self.assert_gateway_error(resp, 502)

    def test_slow_upstream_is_504_after_response_timeout(self):
        gateway = self.start_gateway("gateway-short-timeout", {"us-east-1": self.fake.endpoint},
                                     response_timeout_ms=500)
        self.addCleanup(self.stop_gateway, gateway)
        mark = self.fake.mark()
        started = time.monotonic()
        resp = bgw_e2e.http_request(gateway.port, "POST", "/model/fake-delay-3000/invoke", b"{}")
        elapsed = time.monotonic() - started
        self.assert_gateway_error(resp, 504)
        self.assertLess(elapsed, 2.5, "the gateway waited for the upstream instead of timing out")
        seen = self.fake.wait_requests(mark, 1)[0]
        self.assertTrue(seen["signatureOk"], seen)


if __name__ == "__main__":
    unittest.main()
