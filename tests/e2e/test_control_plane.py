"""The read-only Bedrock control plane through the gateway's one endpoint (boto3's `bedrock`
client, shared service model): the four reads are signed for `bedrock` with the gateway's
credentials and sent to the region's control endpoint; every other control-plane call is
refused and never reaches upstream; answers are cached for control_plane.cache_s.

Each fake accepts only signatures scoped to its own region, so its 200 also proves the region.
"""

import shutil
import tempfile
import unittest

import boto3
import botocore
from botocore.config import Config

import bgw_e2e

GATEWAY_KEY = "AKIDGATEWAYCONTROL"
GATEWAY_SECRET = "gateway/control+secret/EXAMPLEKEY01234567"
APP_KEY = "AKIDAPPCONTROL"
APP_SECRET = "app-secret-control"
PROFILE = "us.anthropic.claude-3-5-sonnet-20240620-v1:0"
MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"


class ControlPlane(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        binary = bgw_e2e.required_env("BGW_GATEWAY_BINARY")
        fake_binary = bgw_e2e.required_env("BGW_FAKE_BEDROCK")
        cls.workdir = tempfile.mkdtemp(prefix="bgw-control-")
        bgw_e2e.isolate_sdk_environment(cls.workdir)
        cls.us = bgw_e2e.FakeBedrock(fake_binary, GATEWAY_KEY, GATEWAY_SECRET, ["us-east-1"])
        cls.eu = bgw_e2e.FakeBedrock(fake_binary, GATEWAY_KEY, GATEWAY_SECRET, ["eu-west-1"])
        regions = {name: {"endpoint": fake.endpoint, "control_endpoint": fake.endpoint}
                   for name, fake in (("us-east-1", cls.us), ("eu-west-1", cls.eu))}
        config = bgw_e2e.base_config(regions, log_level="info", control_plane={"cache_s": 600})
        cls.gw = bgw_e2e.Gateway(binary, config, cls.workdir, "gateway", GATEWAY_KEY,
                                 GATEWAY_SECRET)

    @classmethod
    def tearDownClass(cls):
        try:
            bgw_e2e.stop_checked(cls.gw)
        finally:
            cls.us.stop()
            cls.eu.stop()
            shutil.rmtree(cls.workdir, ignore_errors=True)

    def client(self, region="us-east-1", signed=True):
        config = Config(retries={"total_max_attempts": 1, "mode": "standard"},
                        signature_version=None if signed else botocore.UNSIGNED)
        client = boto3.session.Session(
            aws_access_key_id=APP_KEY, aws_secret_access_key=APP_SECRET,
            region_name=region).client("bedrock", endpoint_url=self.gw.url, config=config)
        self.addCleanup(client.close)
        return client

    def upstream(self, fake, mark, count=1):
        seen = fake.wait_requests(mark, count)
        fake.sync()
        self.assertEqual(len(fake.requests()) - mark, count, fake.requests()[mark:])
        for r in seen:
            self.assertTrue(r["signatureOk"], r)
            self.assertEqual(r["service"], "bedrock")
            self.assertEqual(r["accessKeyId"], GATEWAY_KEY)
        return seen

    def test_list_inference_profiles_is_signed_for_bedrock_and_keeps_the_app_user_agent(self):
        mark = self.us.mark()
        out = self.client().list_inference_profiles(typeEquals="SYSTEM_DEFINED", maxResults=11)
        ids = [p["inferenceProfileId"] for p in out["inferenceProfileSummaries"]]
        self.assertEqual(ids, [PROFILE])
        seen = self.upstream(self.us, mark)[0]
        self.assertEqual((seen["method"], seen["wirePath"]), ("GET", "/inference-profiles"))
        self.assertIn("type=SYSTEM_DEFINED", seen["query"])  # the wire name of typeEquals
        agent = seen["headers"]["user-agent"]
        self.assertIn("Botocore/", agent)  # the app's, so CloudTrail still shows who called
        self.assertTrue(agent.endswith(" bedrock-gateway/" + agent.rsplit("/", 1)[1]), agent)
        entry = self.gw.wait_log(lambda e: e.get("operation") == "ListInferenceProfiles")
        self.assertEqual((entry["status"], entry["region"]), (200, "us-east-1"))

    def test_get_inference_profile_and_an_unknown_one(self):
        mark = self.us.mark()
        got = self.client().get_inference_profile(inferenceProfileIdentifier=PROFILE)
        self.assertEqual(got["type"], "SYSTEM_DEFINED")
        seen = self.upstream(self.us, mark)[0]
        self.assertEqual(seen["wirePath"],
                         "/inference-profiles/us.anthropic.claude-3-5-sonnet-20240620-v1%3A0")
        # Errors are passed through as they came, and never cached: each one goes upstream.
        for _ in range(2):
            with self.assertRaises(botocore.exceptions.ClientError) as e:
                self.client().get_inference_profile(inferenceProfileIdentifier="no-such-profile")
            self.assertEqual(e.exception.response["Error"]["Code"], "ResourceNotFoundException")
            self.assertEqual(e.exception.response["ResponseMetadata"]["HTTPStatusCode"], 404)
        self.upstream(self.us, mark, 3)

    def test_foundation_models_in_the_region_the_app_signed_for(self):
        mark = self.eu.mark()
        eu = self.client("eu-west-1")
        models = eu.list_foundation_models(byProvider="Anthropic")["modelSummaries"]
        self.assertEqual([m["modelId"] for m in models], [MODEL])
        self.assertIn(":eu-west-1:", models[0]["modelArn"])
        details = eu.get_foundation_model(modelIdentifier=MODEL)["modelDetails"]
        self.assertEqual(details["providerName"], "Anthropic")
        self.upstream(self.eu, mark, 2)

    def test_path_prefix_and_header_pin_the_region(self):
        mark = self.eu.mark()
        prefixed = bgw_e2e.http_request(self.gw.port, "GET", "/eu-west-1/foundation-models?x=1")
        self.assertEqual(prefixed.status, 200, prefixed)
        header = bgw_e2e.http_request(self.gw.port, "GET", "/foundation-models?x=2",
                                      headers={"X-Gateway-Region": "eu-west-1"})
        self.assertEqual(header.status, 200, header)
        self.upstream(self.eu, mark, 2)
        outside = bgw_e2e.http_request(self.gw.port, "GET", "/ap-south-1/foundation-models")
        self.assertEqual(outside.status, 403, outside)

    def test_a_second_read_within_cache_s_is_not_sent(self):
        mark = self.us.mark()
        first = bgw_e2e.http_request(self.gw.port, "GET", "/foundation-models?byProvider=cache")
        second = bgw_e2e.http_request(self.gw.port, "GET", "/foundation-models?byProvider=cache")
        self.assertEqual((first.status, second.status), (200, 200))
        self.assertEqual(first.headers["x-gateway-cache"], "miss")
        self.assertEqual(second.headers["x-gateway-cache"], "hit")
        self.assertEqual(first.body, second.body)
        self.upstream(self.us, mark, 1)
        # Another query is another answer.
        other = bgw_e2e.http_request(self.gw.port, "GET", "/foundation-models?byProvider=other")
        self.assertEqual(other.headers["x-gateway-cache"], "miss")
        self.upstream(self.us, mark, 2)

    def test_writes_and_other_control_plane_calls_never_reach_upstream(self):
        marks = (self.us.mark(), self.eu.mark())
        client = self.client()
        calls = [
            lambda: client.create_inference_profile(
                inferenceProfileName="mine", modelSource={"copyFrom": "arn:aws:bedrock:x"}),
            lambda: client.delete_inference_profile(inferenceProfileIdentifier=PROFILE),
            lambda: client.list_provisioned_model_throughputs(),
            lambda: client.delete_guardrail(guardrailIdentifier="g"),
        ]
        for call in calls:
            with self.assertRaises(botocore.exceptions.ClientError) as e:
                call()
            err = e.exception.response
            self.assertEqual(err["Error"]["Code"], "AccessDeniedException")
            self.assertEqual(err["ResponseMetadata"]["HTTPStatusCode"], 403)
            self.assertIn("read-only", err["Error"]["Message"])
        for fake, mark in zip((self.us, self.eu), marks):
            fake.sync()
            self.assertEqual(fake.requests()[mark:], [])

    def test_metrics_name_the_operation(self):
        self.client().list_foundation_models(byOutputModality="TEXT")
        metrics = bgw_e2e.http_request(self.gw.port, "GET", "/metrics").body.decode()
        self.assertIn('operation="ListFoundationModels"', metrics)


if __name__ == "__main__":
    unittest.main()
