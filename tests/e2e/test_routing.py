"""Routing by region and tier end to end (issue 5): boto3 and raw HTTP -> bedrock-gateway -> two
fake regional upstreams.

Each fake accepts only signatures scoped to its own region, so a 200 from it also proves the
gateway re-signed for that region. Every test counts what each upstream saw.
"""

import json
import unittest
import urllib.parse

import boto3
import botocore
import botocore.auth
import botocore.awsrequest
import botocore.credentials
from botocore.config import Config

import bgw_e2e

GATEWAY_KEY = "AKIDGATEWAYROUTE"
GATEWAY_SECRET = "gateway/route+secret/EXAMPLEKEY0123456789"
APP_KEY = "AKIDAPPROUTE"
APP_SECRET = "app-secret-route"
CLAUDE = "anthropic.claude-3-5-sonnet-20240620-v1:0"
PT1 = "arn:aws:bedrock:us-east-1:123456789012:provisioned-model/pt1"
PT1_WIRE = ("/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Aprovisioned-model%2Fpt1"
            "/invoke")
PT_THROTTLED = ("arn:aws:bedrock:us-east-1:123456789012:provisioned-model/"
                "fake-error-429-ThrottlingException")


def gateway_config(us, eu):
    return bgw_e2e.base_config(
        {"us-east-1": us, "eu-west-1": eu},
        retry={"max_attempts": 2, "base_delay_ms": 1, "max_delay_ms": 5},
        routes={
            "claude-prod": {"targets": [
                {"region": "us-east-1", "tier": "provisioned", "model_id": PT1},
                {"region": "us-east-1", "tier": "on-demand", "model_id": CLAUDE},
                {"region": "eu-west-1", "tier": "on-demand", "model_id": CLAUDE,
                 "service_tier": "flex"}]},
            "spill": {"targets": [
                {"region": "us-east-1", "tier": "provisioned", "model_id": PT_THROTTLED},
                {"region": "us-east-1", "tier": "on-demand", "model_id": CLAUDE}]},
            "geo": {"targets": [
                {"region": "us-east-1", "tier": "on-demand",
                 "model_id": "fake-error-429-ThrottlingException"},
                {"region": "eu-west-1", "tier": "on-demand", "model_id": CLAUDE}]},
            "down": {"targets": [
                {"region": "us-east-1", "tier": "on-demand",
                 "model_id": "fake-error-503-ServiceUnavailableException"},
                {"region": "eu-west-1", "tier": "on-demand", "model_id": CLAUDE}]},
            "busy-then-down": {"targets": [
                {"region": "us-east-1", "tier": "on-demand",
                 "model_id": "fake-error-429-ThrottlingException"},
                {"region": "eu-west-1", "tier": "on-demand",
                 "model_id": "fake-error-503-ServiceUnavailableException"}]},
        },
        log_level="info",
    )


class RoutingEndToEnd(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        binary = bgw_e2e.required_env("BGW_GATEWAY_BINARY")
        fake_binary = bgw_e2e.required_env("BGW_FAKE_BEDROCK")
        bgw_e2e.required_env("AWS_DATA_PATH")
        cls.workdir = bgw_e2e.class_workdir(cls, "bgw-route-")
        cls.us = bgw_e2e.FakeBedrock(fake_binary, GATEWAY_KEY, GATEWAY_SECRET, ["us-east-1"])
        cls.addClassCleanup(cls.us.stop)
        cls.eu = bgw_e2e.FakeBedrock(fake_binary, GATEWAY_KEY, GATEWAY_SECRET, ["eu-west-1"])
        cls.addClassCleanup(cls.eu.stop)
        cls.gateway = bgw_e2e.Gateway(binary, gateway_config(cls.us.endpoint, cls.eu.endpoint),
                                      cls.workdir, "gateway", GATEWAY_KEY, GATEWAY_SECRET)
        cls.addClassCleanup(cls.stop_gateway, cls.gateway)

    @staticmethod
    def stop_gateway(gateway):
        bgw_e2e.stop_checked(gateway)

    def setUp(self):
        self.marks = (self.us.mark(), self.eu.mark())

    def tearDown(self):
        self.assertEqual(self.gateway.sanitizer_reports(), [], self.gateway.output())
        self.assertTrue(self.gateway.alive(), self.gateway.output())

    # --- helpers ----------------------------------------------------------------------------

    def saw(self, us, eu):
        """Exactly `us` and `eu` requests upstream since setUp, all signed for their region."""
        seen = []
        for fake, mark, count, region in ((self.us, self.marks[0], us, "us-east-1"),
                                          (self.eu, self.marks[1], eu, "eu-west-1")):
            got = fake.wait_requests(mark, count) if count else []
            fake.sync()  # so an extra request cannot hide behind the reader thread
            self.assertEqual(len(fake.requests()) - mark, count,
                             "%s saw %r" % (region, fake.requests()[mark:]))
            for s in got:
                self.assertTrue(s["signatureOk"], s)
                self.assertEqual(s["region"], region)
            seen.append(got)
        return seen

    def invoke(self, model_id, headers=None, prefix=""):
        h = dict(bgw_e2e.JSON_HEADERS)
        h.update(headers or {})
        path = "%s/model/%s/invoke" % (prefix, model_id.replace(":", "%3A").replace("/", "%2F"))
        return bgw_e2e.http_request(self.gateway.port, "POST", path, b"{}", h)

    def assert_ran(self, resp, region, tier, attempts):
        self.assertEqual(resp.headers.get("x-gateway-region"), region, resp)
        self.assertEqual(resp.headers.get("x-gateway-tier"), tier, resp)
        self.assertEqual(resp.headers.get("x-gateway-attempts"), str(attempts), resp)

    def client(self, endpoint_path="", region="us-east-1", signed=False):
        config = Config(retries={"total_max_attempts": 1, "mode": "standard"},
                        signature_version=None if signed else botocore.UNSIGNED)
        session = boto3.session.Session(aws_access_key_id=APP_KEY if signed else None,
                                        aws_secret_access_key=APP_SECRET if signed else None,
                                        region_name=region)
        client = session.client("bedrock-runtime", endpoint_url=self.gateway.url + endpoint_path,
                                config=config)
        self.addCleanup(client.close)
        return client

    # --- region intent ------------------------------------------------------------------

    def test_no_intent_goes_to_the_default_region(self):
        out = self.client().invoke_model(modelId="plain.model-v1:0", body=b"{}")
        self.assertEqual(json.loads(out["body"].read())["region"], "us-east-1")
        headers = out["ResponseMetadata"]["HTTPHeaders"]
        self.assertEqual(headers["x-gateway-region"], "us-east-1")
        self.assertEqual(headers["x-gateway-tier"], "on-demand")
        self.assertEqual(headers["x-gateway-attempts"], "1")
        self.saw(1, 0)

    def test_region_header_pins_the_region(self):
        resp = self.invoke("plain.model-v1:0", {"X-Gateway-Region": "eu-west-1"})
        self.assertEqual(resp.status, 200, resp)
        self.assert_ran(resp, "eu-west-1", "on-demand", 1)
        self.assertEqual(resp.json()["region"], "eu-west-1")
        self.saw(0, 1)

    def test_endpoint_url_path_prefix_pins_the_region(self):
        # An SDK endpoint URL with a path: botocore puts it before /model/...
        out = self.client("/eu-west-1").invoke_model(modelId="plain.model-v1:0", body=b"{}")
        self.assertEqual(json.loads(out["body"].read())["region"], "eu-west-1")
        seen = self.saw(0, 1)[1]
        self.assertEqual(seen[0]["wirePath"], "/model/plain.model-v1%3A0/invoke")

    def test_credential_scope_of_a_signed_app_chooses_the_region(self):
        out = self.client(region="eu-west-1", signed=True).invoke_model(
            modelId="plain.model-v1:0", body=b"{}")
        self.assertEqual(json.loads(out["body"].read())["region"], "eu-west-1")
        seen = self.saw(0, 1)[1]
        self.assertEqual(seen[0]["accessKeyId"], GATEWAY_KEY)  # re-signed, never the app's

    def test_regions_outside_the_allow_list_or_not_regions_never_reach_upstream(self):
        cases = [
            ({"X-Gateway-Region": "ap-south-1"}, "", 403, "AccessDeniedException"),
            ({"X-Gateway-Region": "evil.example.com"}, "", 400, "ValidationException"),
            ({"X-Gateway-Region": "../x"}, "", 400, "ValidationException"),
            ({}, "/ap-south-1", 403, "AccessDeniedException"),
            ({}, "/evil.example.com", 400, "ValidationException"),
            ({}, "/..", 400, "ValidationException"),
        ]
        for headers, prefix, status, code in cases:
            with self.subTest(headers=headers, prefix=prefix):
                resp = self.invoke("plain.model-v1:0", headers, prefix)
                self.assertEqual(resp.status, status, resp)
                self.assertEqual(resp.error_code(), code)
                self.assertTrue(resp.json()["message"], resp)
        self.saw(0, 0)

    # --- routes and tiers ---------------------------------------------------------------

    def test_route_rewrites_to_the_provisioned_arn(self):
        resp = self.invoke("claude-prod")
        self.assertEqual(resp.status, 200, resp)
        self.assert_ran(resp, "us-east-1", "provisioned", 1)
        seen = self.saw(1, 0)[0]
        self.assertEqual(seen[0]["wirePath"], PT1_WIRE)
        self.assertEqual(resp.json()["modelId"], PT1)
        log = self.gateway.wait_log(
            lambda e: e.get("upstream_request_id") == seen[0]["requestId"])
        self.assertEqual((log["route"], log["tier"], log["region"]),
                         ("claude-prod", "provisioned", "us-east-1"))

    def test_tier_header_filters_the_route(self):
        resp = self.invoke("claude-prod", {"X-Gateway-Tier": "on-demand"})
        self.assertEqual(resp.status, 200, resp)
        self.assert_ran(resp, "us-east-1", "on-demand", 1)
        self.assertEqual(self.saw(1, 0)[0][0]["wirePath"],
                         "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/invoke")

    def test_region_and_tier_pick_the_target_with_its_service_tier(self):
        resp = self.invoke("claude-prod", {"X-Gateway-Region": "eu-west-1"})
        self.assertEqual(resp.status, 200, resp)
        self.assert_ran(resp, "eu-west-1", "on-demand", 1)
        self.assertEqual(resp.json()["serviceTier"], "flex")  # the fake echoes the header
        self.saw(0, 1)

    def test_tier_intents_that_cannot_be_served_are_refused(self):
        for headers, status, code in (
                ({"X-Gateway-Tier": "spot"}, 400, "ValidationException"),
                ({"X-Gateway-Tier": "batch"}, 501, "NotImplementedException"),
                ({"X-Gateway-Tier": "provisioned", "X-Gateway-Region": "eu-west-1"}, 400,
                 "ValidationException")):
            with self.subTest(headers=headers):
                resp = self.invoke("claude-prod", headers)
                self.assertEqual(resp.status, status, resp)
                self.assertEqual(resp.error_code(), code)
        self.saw(0, 0)

    # --- moving when a target is saturated ----------------------------------------------

    def test_a_throttled_provisioned_target_spills_over_to_on_demand(self):
        resp = self.invoke("spill")
        self.assertEqual(resp.status, 200, resp)
        self.assert_ran(resp, "us-east-1", "on-demand", 2)
        seen = self.saw(2, 0)[0]
        self.assertIn("provisioned-model%2Ffake-error-429", seen[0]["wirePath"])
        self.assertEqual(seen[1]["wirePath"],
                         "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/invoke")
        log = self.gateway.wait_log(
            lambda e: e.get("upstream_request_id") == seen[1]["requestId"])
        self.assertEqual(len(log["tried"]), 1)
        self.assertIn("throttled (429 ThrottlingException)", log["tried"][0])

    def test_a_region_that_throttles_fails_over_to_the_next_region_at_once(self):
        resp = self.invoke("geo")
        self.assertEqual(resp.status, 200, resp)
        self.assert_ran(resp, "eu-west-1", "on-demand", 2)
        self.saw(1, 1)

    def test_a_region_that_is_down_fails_over_too(self):
        resp = self.invoke("down")
        self.assertEqual(resp.status, 200, resp)
        self.assert_ran(resp, "eu-west-1", "on-demand", 2)
        self.saw(1, 1)

    def test_an_explicit_region_that_throttles_gives_429_not_failover(self):
        resp = self.invoke("geo", {"X-Gateway-Region": "us-east-1"})
        self.assertEqual(resp.status, 429, resp)
        self.assertEqual(resp.error_code(), "ThrottlingException")
        self.assertGreaterEqual(int(resp.headers["retry-after"]), 1)
        self.assert_ran(resp, "us-east-1", "on-demand", 2)  # retried: the last target
        self.saw(2, 0)

    def test_throttled_then_failing_everywhere_is_the_uniform_429(self):
        # The throttled region frees first: the client's best next try is a 429 that says when,
        # not the last region's 503.
        resp = self.invoke("busy-then-down")
        self.assertEqual(resp.status, 429, resp)
        self.assertEqual(resp.error_code(), "ThrottlingException")
        self.assertGreaterEqual(int(resp.headers["retry-after"]), 1)
        self.assertIn("us-east-1", resp.json()["message"])
        self.assert_ran(resp, "eu-west-1", "on-demand", 3)  # 1 + the last target's 2 attempts
        self.saw(1, 2)

    def test_final_errors_stop_the_walk(self):
        # ValidationException is the app's fault: no other target would answer differently.
        resp = self.invoke("fake-error-400-ValidationException",
                           {"X-Gateway-Region": "eu-west-1"})
        self.assertEqual(resp.status, 400, resp)
        self.assert_ran(resp, "eu-west-1", "on-demand", 1)
        self.saw(0, 1)

    # --- client compatibility (issue 19) ------------------------------------------------

    def presigned_path(self, path, region, token="app-session-token"):
        """`path` query-signed by botocore's own SigV4 query signer (what aws4fetch's
        `signQuery: true` also sends): the seven X-Amz-* parameters in the query, no
        Authorization header. Signed with the app's keys: the gateway must drop it, not check it.
        Signed without the body, which botocore's query signer (written for query-protocol
        services) would move into the query; the signature need not verify anyway."""
        request = botocore.awsrequest.AWSRequest(method="POST", url=self.gateway.url + path,
                                                 headers=dict(bgw_e2e.JSON_HEADERS))
        credentials = botocore.credentials.Credentials(APP_KEY, APP_SECRET, token)
        botocore.auth.SigV4QueryAuth(credentials, "bedrock", region, expires=300).add_auth(request)
        url = urllib.parse.urlsplit(request.url)
        self.assertEqual(
            sorted(k for k, _ in urllib.parse.parse_qsl(url.query)),
            ["X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
             "X-Amz-Security-Token", "X-Amz-Signature", "X-Amz-SignedHeaders"])
        return url.path + "?" + url.query

    def assert_gateway_signed(self, seen, wire_path):
        """What the fake got: the gateway's header signature (verified by the fake), the
        canonical path and no query at all."""
        self.assertTrue(seen["signatureOk"], seen)
        self.assertEqual(seen["accessKeyId"], GATEWAY_KEY)
        self.assertEqual(seen["auth"], "sigv4", seen)
        self.assertEqual(seen["wirePath"], wire_path)
        self.assertEqual(seen["target"], wire_path)  # no "?X-Amz-...", no "//"
        self.assertEqual(seen["query"], "")
        self.assertNotIn("x-amz-security-token", seen["headers"])  # the app's token stayed here

    def converse(self, path, headers=None):
        h = dict(bgw_e2e.JSON_HEADERS)
        h.update(headers or {})
        return bgw_e2e.http_request(self.gateway.port, "POST", path, bgw_e2e.converse_body(), h)

    def test_a_query_signed_converse_goes_upstream_signed_in_headers(self):
        # Signed for eu-west-1 in the query: the same weak region intent as a signed header.
        resp = self.converse(self.presigned_path("/model/plain.model-v1%3A0/converse",
                                                 "eu-west-1"))
        self.assertEqual(resp.status, 200, resp)
        self.assertEqual(resp.headers.get("x-gateway-region"), "eu-west-1", resp)
        seen = self.saw(0, 1)[1]
        self.assert_gateway_signed(seen[0], "/model/plain.model-v1%3A0/converse")

    def test_other_query_parameters_are_still_refused(self):
        for query in ("X-Amz-Signature=00&foo=1", "x-amz-signature=00",
                      "X-Amz-Content-Sha256=UNSIGNED-PAYLOAD"):
            with self.subTest(query=query):
                resp = self.converse("/model/plain.model-v1%3A0/converse?" + query)
                self.assertEqual(resp.status, 400, resp)
                self.assertEqual(resp.error_code(), "ValidationException")
                self.assertIn("takes no query parameters", resp.json()["message"])
        self.saw(0, 0)

    def test_an_empty_segment_after_the_region_prefix_is_ignored(self):
        resp = self.converse("/eu-west-1//model/plain.model-v1%3A0/converse")
        self.assertEqual(resp.status, 200, resp)
        self.assert_ran(resp, "eu-west-1", "on-demand", 1)
        seen = self.saw(0, 1)[1]
        self.assert_gateway_signed(seen[0], "/model/plain.model-v1%3A0/converse")

    def test_a_bare_double_slash_is_the_path_without_it(self):
        # Endpoint `http://127.0.0.1:8080/` joined to `/model/...` by concatenation.
        resp = self.converse("//model/plain.model-v1%3A0/converse")
        self.assertEqual(resp.status, 200, resp)
        self.assert_ran(resp, "us-east-1", "on-demand", 1)
        seen = self.saw(1, 0)[0]
        self.assert_gateway_signed(seen[0], "/model/plain.model-v1%3A0/converse")

    def test_presigned_behind_a_trailing_slash_endpoint(self):
        # Both at once, with an ARN whose %2F must stay inside its label; the prefix pins
        # eu-west-1 over the us-east-1 the query was signed for.
        arn = "arn%3Aaws%3Abedrock%3Aeu-west-1%3A123456789012%3Aprovisioned-model%2Fpt9"
        resp = self.converse(self.presigned_path("/eu-west-1//model/%s/converse" % arn,
                                                 "us-east-1"))
        self.assertEqual(resp.status, 200, resp)
        self.assert_ran(resp, "eu-west-1", "on-demand", 1)
        seen = self.saw(0, 1)[1]
        self.assert_gateway_signed(seen[0], "/model/%s/converse" % arn)

    def test_boto3_at_an_endpoint_ending_in_slashes_after_the_region(self):
        # botocore drops one trailing slash of an endpoint's path before appending /model/...,
        # so `/eu-west-1/` sends `/eu-west-1/model/...` and `/eu-west-1//` sends the doubled
        # slash other SDKs send for `/eu-west-1/`; both must land in eu-west-1.
        for endpoint_path, sent_prefix in (("/eu-west-1/", "/eu-west-1/model/"),
                                           ("/eu-west-1//", "/eu-west-1//model/")):
            with self.subTest(endpoint_path=endpoint_path):
                mark = self.eu.mark()
                client = self.client(endpoint_path)
                sent = []
                client.meta.events.register(
                    "before-send.bedrock-runtime.Converse",
                    lambda request, record=sent.append, **_: record(
                        urllib.parse.urlsplit(request.url).path))
                out = client.converse(
                    modelId="plain.model-v1:0",
                    messages=[{"role": "user", "content": [{"text": "x"}]}])
                self.assertEqual(out["ResponseMetadata"]["HTTPStatusCode"], 200)
                self.assertEqual(out["ResponseMetadata"]["HTTPHeaders"]["x-gateway-region"],
                                 "eu-west-1")
                self.assertEqual(len(sent), 1)
                self.assertTrue(sent[0].startswith(sent_prefix), sent)
                seen = self.eu.wait_requests(mark, 1)
                self.assert_gateway_signed(seen[0], "/model/plain.model-v1%3A0/converse")
        self.saw(0, 2)


if __name__ == "__main__":
    unittest.main()
