"""LangChain's ChatBedrockConverse (@langchain/aws) and the AWS SDK for JavaScript v3 at its
default handler, through the gateway with its TLS listener (issue 19): runs js/langchain.mjs
with `node --test`, once per way an app names the endpoint.

- `endpointHost` only: LangChain always makes it `https://`, so it needs the TLS listener; Node
  trusts the test CA through NODE_EXTRA_CA_CERTS (as the README says). The SDK's default
  handler (HTTP/2, ALPN h2) runs against `https://` in the same node process.
- `AWS_ENDPOINT_URL_BEDROCK_RUNTIME=http://...` only (no endpoint in code): the plain port,
  HTTP/2 cleartext from the SDK LangChain builds.
- `endpointHost` without the CA: Node must refuse the certificate (the TLS is real).

The apps sign with their own keys; the fake Bedrock's log must show every request signed by the
gateway's key and no app credential.
"""

import os
import subprocess
import unittest

import bgw_e2e

JS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "js")
GATEWAY_KEY = "AKIDGATEWAYLANGCHAIN"
GATEWAY_SECRET = "langchain/gateway+secret/EXAMPLEKEY0123"
APP_KEY = "AKIDAPPLANGCHAIN"
APP_SECRET = "langchain-app-secret-the-upstream-never-sees"
APP_TOKEN = "langchain-app-token-must-not-leak"
MODEL_WIRE = "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/"


class LangChainTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        gateway_binary = bgw_e2e.required_env("BGW_GATEWAY_BINARY")
        fake_binary = bgw_e2e.required_env("BGW_FAKE_BEDROCK")
        if not os.path.isdir(os.path.join(JS_DIR, "node_modules", "@langchain", "aws")):
            raise AssertionError("run `npm ci` in tests/e2e/js first (scripts/test.sh does)")
        cls.workdir = bgw_e2e.class_workdir(cls, "bgw-langchain-")
        cls.pki = bgw_e2e.e2e_pki()
        cls.fake = bgw_e2e.FakeBedrock(fake_binary, GATEWAY_KEY, GATEWAY_SECRET, ["us-east-1"])
        cls.addClassCleanup(cls.fake.stop)
        config = bgw_e2e.base_config(cls.fake.endpoint, tls={
            "listen": "127.0.0.1:0", "cert_file": cls.pki["cert"], "key_file": cls.pki["key"]})
        cls.gateway = bgw_e2e.Gateway(gateway_binary, config, cls.workdir, "gw-langchain",
                                      GATEWAY_KEY, GATEWAY_SECRET)
        cls.addClassCleanup(bgw_e2e.stop_checked, cls.gateway)
        cls.tls_host = "127.0.0.1:%d" % bgw_e2e.tls_port(cls.gateway)
        # Anything that would leave for a real AWS host goes to this bound, never-listening
        # port and fails there (an endpoint setting that was ignored).
        cls.trap = bgw_e2e.closed_port()
        cls.addClassCleanup(cls.trap.close)

    def tearDown(self):
        self.assertEqual(self.gateway.sanitizer_reports(), [], self.gateway.output())
        self.assertTrue(self.gateway.alive(), self.gateway.output())

    def node(self, mode, **extra):
        """Runs js/langchain.mjs in `mode`; returns (exit code, output)."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("AWS_", "NODE_EXTRA_CA_CERTS", "BEDROCK_AWS_"))
               and not k.lower().endswith("_proxy")}
        trap = "http://127.0.0.1:%d" % self.trap.getsockname()[1]
        env.update({
            "BGW_MODE": mode,
            "HOME": self.workdir,
            # The app's own credentials, from the environment as an app has them.
            "AWS_ACCESS_KEY_ID": APP_KEY, "AWS_SECRET_ACCESS_KEY": APP_SECRET,
            "AWS_SESSION_TOKEN": APP_TOKEN,
            "AWS_CONFIG_FILE": os.path.join(self.workdir, "no-config"),
            "AWS_SHARED_CREDENTIALS_FILE": os.path.join(self.workdir, "no-credentials"),
            "AWS_EC2_METADATA_DISABLED": "true",
            "HTTPS_PROXY": trap, "https_proxy": trap,
        })
        env.update(extra)
        run = subprocess.run(["node", "--test", "langchain.mjs"], cwd=JS_DIR, env=env,
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, timeout=240)
        out = run.stdout.decode("utf-8", "replace")
        print(out)
        return run.returncode, out

    def assert_passed(self, code, out, tests):
        self.assertEqual(code, 0, out)
        self.assertIn("# pass %d" % tests, out)
        self.assertIn("# fail 0", out)

    def assert_signed_by_gateway(self, mark, operations):
        """The requests after `mark` are exactly `operations` on the model, in order, each
        signed by the gateway's key (not the app's) and answered 200."""
        seen = self.fake.wait_requests(mark, len(operations))
        self.fake.sync()  # so an extra request cannot hide behind the reader thread
        self.assertEqual([r["wirePath"] for r in self.fake.requests()[mark:]],
                         [MODEL_WIRE + op for op in operations])
        for req in seen:
            self.assertEqual(req["auth"], "sigv4", req)
            self.assertTrue(req["signatureOk"], req)
            self.assertEqual(req["accessKeyId"], GATEWAY_KEY, req)
            self.assertEqual(req["status"], 200, req)
            self.assertNotIn("x-amz-security-token", req["headers"], req)
        for req in seen:
            if req["wirePath"].endswith("-stream"):
                outcome = self.fake.wait_stream_outcome(req["requestId"])
                self.assertTrue(outcome["completed"], outcome)
        return seen

    def test_endpoint_host_only_through_the_tls_listener(self):
        mark = self.fake.mark()
        code, out = self.node("endpointHost", BGW_TLS_HOST=self.tls_host,
                              NODE_EXTRA_CA_CERTS=self.pki["ca"])
        self.assert_passed(code, out, 2)
        self.assert_signed_by_gateway(mark, [
            "converse", "converse-stream",  # LangChain invoke, stream
            "converse", "converse-stream", "invoke", "invoke-with-response-stream",  # the SDK
        ])

    def test_endpoint_from_the_environment_only(self):
        mark = self.fake.mark()
        code, out = self.node("environment",
                              AWS_ENDPOINT_URL_BEDROCK_RUNTIME=self.gateway.url)
        self.assert_passed(code, out, 1)
        self.assert_signed_by_gateway(mark, ["converse", "converse-stream"])

    def test_without_the_test_ca_node_refuses_the_certificate(self):
        mark = self.fake.mark()
        code, out = self.node("untrusted", BGW_TLS_HOST=self.tls_host)
        self.assert_passed(code, out, 1)
        self.fake.sync()
        self.assertEqual(self.fake.requests()[mark:], [])


if __name__ == "__main__":
    unittest.main()
