"""Caller keys (issue 10): who may spend the gateway's AWS identity, and on what.

A request without a known key gets a 401 and never reaches upstream; a key limited to models
or regions gets a 403 outside them, or runs only in its regions; a key's own rpm gives a 429;
an SDK's SigV4 signature is not a key; listening beyond loopback without keys is refused at
start; a batch record is seen only with the key that spooled it. Keys never appear in the
output, only their names.
"""

import hashlib
import json
import os
import subprocess
import unittest

import boto3
import botocore
from botocore.config import Config

import bgw_e2e

GATEWAY_KEY = "AKIDGATEWAYCALLERS"
GATEWAY_SECRET = "gateway/callers+secret/EXAMPLEKEY01234567"
KEYS = {"app": "app-key-0f3a9c", "eu": "eu-key-77b1d2", "slow": "slow-key-c5e0aa"}
PEER_KEY = "peer-key-3d9e41"  # a second key for the batch gateway only
ROLE = "arn:aws:iam::123456789012:role/bedrock-batch"
BODY = bgw_e2e.converse_body()
JSON = bgw_e2e.JSON_HEADERS


def sha256(text):
    return hashlib.sha256(text.encode()).hexdigest()


class CallerKeysEndToEnd(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.binary = bgw_e2e.required_env("BGW_GATEWAY_BINARY")
        fake_binary = bgw_e2e.required_env("BGW_FAKE_BEDROCK")
        bgw_e2e.required_env("AWS_DATA_PATH")
        cls.workdir = bgw_e2e.class_workdir(cls, "bgw-callers-")
        cls.fake = bgw_e2e.FakeBedrock(fake_binary, GATEWAY_KEY, GATEWAY_SECRET,
                                       ["us-east-1", "eu-west-1"])
        cls.addClassCleanup(cls.fake.stop)
        cls.config = bgw_e2e.base_config(
            {"us-east-1": cls.fake.endpoint, "eu-west-1": cls.fake.endpoint},
            routes={"both": {"targets": [
                {"region": "us-east-1", "tier": "on-demand", "model_id": "m"},
                {"region": "eu-west-1", "tier": "on-demand", "model_id": "m"}]}},
            caller_keys={
                "app": {"sha256": sha256(KEYS["app"]), "models": ["m", "both"]},
                "eu": {"sha256": sha256(KEYS["eu"]), "regions": ["eu-west-1"]},
                "slow": {"sha256": sha256(KEYS["slow"]), "rpm": 1},
            },
        )
        cls.gw = bgw_e2e.Gateway(cls.binary, cls.config, cls.workdir, "callers", GATEWAY_KEY,
                                 GATEWAY_SECRET)
        cls.addClassCleanup(cls.check_and_stop)

    @classmethod
    def check_and_stop(cls):
        bgw_e2e.stop_checked(cls.gw)
        output = cls.gw.output()
        for key in KEYS.values():
            assert key not in output, "a caller key was logged"

    def post(self, path, headers=None):
        return bgw_e2e.http_request(self.gw.port, "POST", path, BODY, dict(JSON, **(headers or {})))

    def assert_refused(self, resp, status, error_type, mark):
        self.assertEqual(resp.status, status, resp)
        self.assertEqual(resp.headers["x-amzn-errortype"].split(":")[0], error_type)
        self.assertEqual(self.fake.requests()[mark:], [])
        self.fake.sync()
        self.assertEqual(self.fake.requests()[mark:], [])

    def test_no_key_or_an_unknown_one_is_401_and_never_upstream(self):
        mark = self.fake.mark()
        for headers in ({}, {"x-api-key": "nope"}, {"Authorization": "Bearer nope"}):
            resp = self.post("/model/m/converse", headers)
            self.assert_refused(resp, 401, "UnrecognizedClientException", mark)
            self.assertEqual(resp.headers["www-authenticate"], 'Bearer realm="bedrock-gateway"')
        # Batch results are guarded too.
        resp = bgw_e2e.http_request(self.gw.port, "GET", "/gateway/batch/jobs")
        self.assertEqual(resp.status, 401, resp)
        # Health stays open: probes carry no keys.
        self.assertEqual(bgw_e2e.http_request(self.gw.port, "GET", "/healthz").status, 200)

    def test_a_key_as_header_or_bearer_token_reaches_upstream_signed_by_the_gateway(self):
        for headers in ({"x-api-key": KEYS["app"]}, {"Authorization": "Bearer " + KEYS["app"]}):
            mark = self.fake.mark()
            resp = self.post("/model/m/converse", headers)
            self.assertEqual(resp.status, 200, resp)
            seen = self.fake.wait_requests(mark, 1)[0]
            self.assertTrue(seen["signatureOk"], seen)
            self.assertEqual(seen["accessKeyId"], GATEWAY_KEY)
            self.assertNotIn("x-api-key", seen["headers"])  # the key stays here
        entry = self.gw.wait_log(lambda e: e.get("caller") == "app")
        self.assertEqual(entry["status"], 200)

    def test_boto3_signs_with_sigv4_which_is_not_a_key_and_adds_one_with_a_hook(self):
        config = Config(retries={"total_max_attempts": 1, "mode": "standard"})
        session = boto3.session.Session(aws_access_key_id="AKIDAPP", aws_secret_access_key="s",
                                        region_name="us-east-1")
        client = session.client("bedrock-runtime", endpoint_url=self.gw.url, config=config)
        self.addCleanup(client.close)
        messages = [{"role": "user", "content": [{"text": "hi"}]}]
        with self.assertRaises(botocore.exceptions.ClientError) as refused:
            client.converse(modelId="m", messages=messages)
        self.assertEqual(refused.exception.response["ResponseMetadata"]["HTTPStatusCode"], 401)

        def add_key(request, **_):
            request.headers["x-api-key"] = KEYS["app"]

        client.meta.events.register("before-send.bedrock-runtime.*", add_key)
        reply = client.converse(modelId="m", messages=messages)
        self.assertEqual(reply["ResponseMetadata"]["HTTPStatusCode"], 200)

    def test_a_key_limited_to_models_gets_403_elsewhere(self):
        mark = self.fake.mark()
        resp = self.post("/model/other/converse", {"x-api-key": KEYS["app"]})
        self.assert_refused(resp, 403, "AccessDeniedException", mark)
        self.assertIn("app may not call model other", resp.json()["message"])
        resp = bgw_e2e.http_request(self.gw.port, "GET", "/async-invoke",
                                    headers={"x-api-key": KEYS["app"]})
        self.assertEqual(resp.status, 403, resp)  # names no model: not for a model-bound key

    def test_a_key_bound_to_a_region_runs_only_there(self):
        mark = self.fake.mark()
        # The route's first target is us-east-1: this key's requests skip it.
        resp = self.post("/model/both/converse", {"x-api-key": KEYS["eu"]})
        self.assertEqual(resp.status, 200, resp)
        self.assertEqual(resp.headers["x-gateway-region"], "eu-west-1")
        seen = self.fake.wait_requests(mark, 1)[0]
        self.assertEqual(seen["region"], "eu-west-1")
        mark = self.fake.mark()
        # A model without a route runs in default_region, which this key may not use.
        refused = self.post("/model/m/converse", {"x-api-key": KEYS["eu"]})
        self.assert_refused(refused, 403, "AccessDeniedException", mark)
        pinned = self.post("/model/both/converse",
                           {"x-api-key": KEYS["eu"], "X-Gateway-Region": "us-east-1"})
        self.assert_refused(pinned, 403, "AccessDeniedException", mark)

    def test_a_key_over_its_own_rpm_gets_429_without_reaching_upstream(self):
        first = self.post("/model/m/converse", {"x-api-key": KEYS["slow"]})
        self.assertEqual(first.status, 200, first)
        mark = self.fake.mark()
        second = self.post("/model/m/converse", {"x-api-key": KEYS["slow"]})
        self.assertEqual(second.status, 429, second)
        self.assertGreaterEqual(int(second.headers["retry-after"]), 59)
        self.assertIn("slow is over its own rpm", second.json()["message"])
        self.fake.sync()
        self.assertEqual(self.fake.requests()[mark:], [])
        # Another key is not held back by it.
        self.assertEqual(self.post("/model/m/converse", {"x-api-key": KEYS["app"]}).status, 200)

    def test_a_batch_record_is_seen_only_with_the_key_that_spooled_it(self):
        # A gateway of its own with a batch tier. Records stay queued (min_records is never
        # reached), so nothing goes upstream and the answers are about ownership alone.
        config = dict(self.config,
                      caller_keys={"app": {"sha256": sha256(KEYS["app"])},
                                   "peer": {"sha256": sha256(PEER_KEY)}},
                      batch={"bucket": "bgw-callers", "role_arn": ROLE,
                             "spool_dir": os.path.join(self.workdir, "owned-spool"),
                             "min_records": 1000, "max_wait_s": 3600, "underfull": "wait"})
        config["regions"] = {name: dict(region, control_endpoint=self.fake.endpoint,
                                        s3_endpoint=self.fake.endpoint)
                             for name, region in self.config["regions"].items()}

        def call(gw, key, method, path, body=b"", headers=None):
            return bgw_e2e.http_request(gw.port, method, path, body,
                                        dict(headers or {}, **{"x-api-key": key}))

        first = bgw_e2e.Gateway(self.binary, config, self.workdir, "owned", GATEWAY_KEY,
                                GATEWAY_SECRET)
        self.addCleanup(bgw_e2e.stop_checked, first)
        spooled = call(first, KEYS["app"], "POST", "/model/m/invoke", BODY,
                       dict(JSON, **{"X-Gateway-Tier": "batch"}))
        self.assertEqual(spooled.status, 202, spooled)
        location, record = spooled.headers["location"], spooled.json()["recordId"]
        unknown = call(first, PEER_KEY, "GET", "/gateway/batch/records/no-such-record")
        self.assertEqual((unknown.status, unknown.error_code()),
                         (404, "ResourceNotFoundException"))
        bgw_e2e.stop_checked(first)
        # The owner is in the spool: the restarted gateway still knows whose the record is.
        again = bgw_e2e.Gateway(self.binary, config, self.workdir, "owned-again", GATEWAY_KEY,
                                GATEWAY_SECRET)
        self.addCleanup(bgw_e2e.stop_checked, again)
        mine = call(again, KEYS["app"], "GET", location)
        self.assertEqual((mine.status, mine.json()["status"]), (202, "queued"), mine)
        # Another key gets the very answer an unknown id gets: nothing says the record exists.
        for method in ("GET", "DELETE"):
            theirs = call(again, PEER_KEY, method, location)
            self.assertEqual((theirs.status, theirs.error_code()),
                             (404, "ResourceNotFoundException"), theirs)
            self.assertEqual(theirs.body,
                             unknown.body.replace(b"no-such-record", record.encode()))
        # The other key's DELETE cancelled nothing, and its job list holds nothing of app's.
        self.assertEqual(call(again, KEYS["app"], "GET", location).json()["status"], "queued")
        self.assertEqual(call(again, PEER_KEY, "GET", "/gateway/batch/jobs").json(),
                         {"jobs": []})
        entry = again.wait_log(lambda e: e.get("operation") == "GatewayBatch" and
                               e.get("caller") == "peer")
        self.assertEqual(entry["status"], 404)
        for gw in (first, again):
            self.assertNotIn(PEER_KEY, gw.output())

    def test_listening_beyond_loopback_without_keys_is_refused_at_start(self):
        path = os.path.join(self.workdir, "open.json")
        config = dict(self.config, listen="0.0.0.0:0")
        del config["caller_keys"]
        with open(path, "w", encoding="utf-8") as f:
            json.dump(config, f)
        env = dict(os.environ, AWS_ACCESS_KEY_ID=GATEWAY_KEY,
                   AWS_SECRET_ACCESS_KEY=GATEWAY_SECRET)
        got = subprocess.run([self.binary, "--config", path], stdin=subprocess.DEVNULL,
                             capture_output=True, text=True, timeout=30, env=env)
        self.assertEqual(got.returncode, 2, got)
        self.assertIn("not a loopback address and no caller_keys", got.stderr)
        # The same through the environment: the check runs after overrides.
        loop = dict(config, listen="127.0.0.1:0")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(loop, f)
        got = subprocess.run([self.binary, "--check-config", path], capture_output=True,
                             text=True, timeout=30,
                             env=dict(env, BEDROCK_GATEWAY_LISTEN="0.0.0.0:8080"))
        self.assertEqual(got.returncode, 2, got)
        self.assertIn("not a loopback address", got.stderr)


if __name__ == "__main__":
    unittest.main()
