"""The AWS SDK for JavaScript v3 against the real gateway: runs `node --test` in js/, both the
SDK at its defaults (HTTP/2, default_handler.test.mjs) and with its HTTP/1.1 NodeHttpHandler
(gateway.test.mjs)."""

import os
import shutil
import subprocess
import tempfile
import unittest

import bgw_e2e

GATEWAY = os.environ.get("BGW_GATEWAY_BINARY")
FAKE = os.environ.get("BGW_FAKE_BEDROCK")
JS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "js")
ACCESS_KEY = "AKIDGATEWAYJS"
SECRET_KEY = "js-test-gateway-secret"


class JsSdkTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not (GATEWAY and FAKE):
            raise AssertionError("BGW_GATEWAY_BINARY and BGW_FAKE_BEDROCK must be set (ctest does)")
        if not os.path.isdir(os.path.join(JS_DIR, "node_modules", "@aws-sdk")):
            raise AssertionError("run `npm ci` in tests/e2e/js first (scripts/test.sh does)")
        cls.dir = tempfile.mkdtemp(prefix="bgw-js-")
        cls.fake = bgw_e2e.FakeBedrock(FAKE, ACCESS_KEY, SECRET_KEY, ["us-east-1", "eu-west-1"])
        regions = {r: cls.fake.endpoint for r in ("us-east-1", "eu-west-1")}
        cls.gateway = bgw_e2e.Gateway(GATEWAY, bgw_e2e.base_config(regions), cls.dir, "gw-js",
                                      ACCESS_KEY, SECRET_KEY)

    @classmethod
    def tearDownClass(cls):
        reports = []
        for proc in (cls.gateway, cls.fake):
            proc.stop()
            reports += proc.sanitizer_reports()
        shutil.rmtree(cls.dir, ignore_errors=True)
        if reports:
            raise AssertionError("sanitizer reports:\n" + "\n".join(reports))

    def test_node_suite(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env["BGW_GATEWAY_URL"] = self.gateway.url
        # The SDKs also read ~/.aws (an endpoint_url there would change where they go).
        env.update({"AWS_CONFIG_FILE": os.path.join(self.dir, "no-config"),
                    "AWS_SHARED_CREDENTIALS_FILE": os.path.join(self.dir, "no-credentials"),
                    "AWS_EC2_METADATA_DISABLED": "true"})
        run = subprocess.run(["node", "--test"], cwd=JS_DIR, env=env, stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=240)
        out = run.stdout.decode("utf-8", "replace")
        print(out)
        self.assertEqual(run.returncode, 0, out)
        self.assertIn("# fail 0", out)
        self.assertNotIn("# pass 0", out)
        # Every JS request reached the upstream signed by the gateway, not by the app.
        self.fake.sync()
        seen = self.fake.requests()
        # Both files' requests: the HTTP/1.1 ones and at least the 20 of the default handler.
        self.assertGreaterEqual(len(seen), 25)
        for req in seen:
            self.assertTrue(req["signatureOk"], req)
            self.assertEqual(req["accessKeyId"], ACCESS_KEY)
            self.assertNotIn("x-amz-security-token", req["headers"])


if __name__ == "__main__":
    unittest.main()
