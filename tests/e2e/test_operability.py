"""Health and graceful shutdown (issue 8, first part): /healthz, /readyz, and SIGTERM draining.

A SIGTERM stops accepting at once (new connections are refused), flips readiness on the
connections still open, lets in-flight requests and streams finish within shutdown_grace_s, and
then the gateway exits 0. Waits are on log lines, fake request lists or socket events, never
sleeps.
"""

import http.client
import json
import shutil
import signal
import socket
import tempfile
import threading
import unittest

import boto3
import botocore
from botocore.config import Config

import bgw_e2e

GATEWAY_KEY = "AKIDGATEWAYOPS"
GATEWAY_SECRET = "gateway/ops+secret/EXAMPLEKEY0123456789"


def gateway_config(endpoint, grace_s=30):
    return {
        "listen": "127.0.0.1:0",
        "default_region": "us-east-1",
        "regions": {"us-east-1": {"endpoint": endpoint}},
        "shutdown_grace_s": grace_s,
        "log_level": "info",
    }


class OperabilityEndToEnd(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.binary = bgw_e2e.required_env("BGW_GATEWAY_BINARY")
        fake_binary = bgw_e2e.required_env("BGW_FAKE_BEDROCK")
        bgw_e2e.required_env("AWS_DATA_PATH")
        cls.workdir = tempfile.mkdtemp(prefix="bgw-ops-")
        cls.addClassCleanup(shutil.rmtree, cls.workdir, ignore_errors=True)
        bgw_e2e.isolate_sdk_environment(cls.workdir)
        cls.fake = bgw_e2e.FakeBedrock(fake_binary, GATEWAY_KEY, GATEWAY_SECRET, ["us-east-1"])
        cls.addClassCleanup(cls.fake.stop)

    def start(self, name, keys=True, **kwargs):
        gw = bgw_e2e.Gateway(self.binary, gateway_config(self.fake.endpoint, **kwargs),
                             self.workdir, name, GATEWAY_KEY if keys else None,
                             GATEWAY_SECRET if keys else None)
        self.addCleanup(self.stop_gateway, gw)
        return gw

    def stop_gateway(self, gw):
        bgw_e2e.stop_checked(gw)

    def test_healthz_and_readyz_when_all_is_well(self):
        gw = self.start("healthy")
        for path in ("/healthz", "/readyz"):
            resp = bgw_e2e.http_request(gw.port, "GET", path)
            self.assertEqual(resp.status, 200, resp)
            self.assertEqual(resp.json()["status"], "ok")
        wrong = bgw_e2e.http_request(gw.port, "POST", "/readyz", b"{}")
        self.assertEqual(wrong.status, 405, wrong)

    def test_readyz_says_why_without_credentials_while_healthz_stays_ok(self):
        gw = self.start("no-creds", keys=False)
        self.assertEqual(bgw_e2e.http_request(gw.port, "GET", "/healthz").status, 200)
        resp = bgw_e2e.http_request(gw.port, "GET", "/readyz")
        self.assertEqual(resp.status, 503, resp)
        reasons = resp.json()["reasons"]
        self.assertEqual(len(reasons), 1, reasons)
        self.assertTrue(reasons[0].startswith("credentials: "), reasons)

    def test_sigterm_lets_a_long_stream_finish_refuses_new_connections_and_exits_0(self):
        gw = self.start("drain")
        # A keep-alive connection opened before the signal, to ask for readiness during drain.
        kept = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=30)
        kept.request("GET", "/healthz")
        first = kept.getresponse()
        first.read()
        self.assertEqual(first.status, 200)

        config = Config(retries={"total_max_attempts": 1, "mode": "standard"},
                        read_timeout=60, signature_version=botocore.UNSIGNED)
        client = boto3.session.Session(region_name="us-east-1").client(
            "bedrock-runtime", endpoint_url=gw.url, config=config)
        self.addCleanup(client.close)
        first_event = threading.Event()
        outcome = {}

        def stream():
            try:
                # fake-delay-<ms>: that pause before every event, so the stream lasts seconds.
                out = client.converse_stream(
                    modelId="fake-delay-300",
                    messages=[{"role": "user", "content": [{"text": "a long answer"}]}])
                kinds = []
                for event in out["stream"]:
                    kinds.append(next(iter(event)))
                    first_event.set()
                outcome["kinds"] = kinds
            except Exception as e:  # noqa: BLE001 - reported by the assertions below
                outcome["error"] = repr(e)
                first_event.set()

        reader = threading.Thread(target=stream, daemon=True)
        reader.start()
        self.assertTrue(first_event.wait(30), gw.output())
        self.assertNotIn("error", outcome)

        gw.proc.send_signal(signal.SIGTERM)
        stopping = gw.stdout.wait_for(
            lambda lines: [line for line in lines if '"event":"stopping"' in line] or None, 10)
        self.assertIsNotNone(stopping, gw.output())
        # The listener is closed: a new connection is refused.
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", gw.port), timeout=5).close()
        # The connection that was already open hears that the gateway is not ready any more.
        kept.request("GET", "/readyz")
        resp = kept.getresponse()
        body = json.loads(resp.read())
        self.assertEqual(resp.status, 503)
        self.assertTrue(any(r.startswith("draining") for r in body["reasons"]), body)
        kept.close()

        reader.join(30)
        self.assertFalse(reader.is_alive())
        self.assertNotIn("error", outcome, outcome)
        self.assertEqual(outcome["kinds"][0], "messageStart")
        self.assertEqual(outcome["kinds"][-1], "metadata")  # the whole stream, not a cut one
        self.assertEqual(gw.proc.wait(30), 0, gw.output())
        drained = [line for line in gw.stdout.lines() if '"event":"drained"' in line]
        self.assertEqual(len(drained), 1, gw.output())
        self.assertIn('"unfinished":0', drained[0])

    def test_a_stream_longer_than_the_grace_is_cut_and_the_gateway_still_exits(self):
        gw = self.start("impatient", grace_s=0.2)
        config = Config(retries={"total_max_attempts": 1, "mode": "standard"},
                        read_timeout=60, signature_version=botocore.UNSIGNED)
        client = boto3.session.Session(region_name="us-east-1").client(
            "bedrock-runtime", endpoint_url=gw.url, config=config)
        self.addCleanup(client.close)
        out = client.converse_stream(
            modelId="fake-delay-1000",
            messages=[{"role": "user", "content": [{"text": "slow"}]}])
        events = iter(out["stream"])
        next(events)
        gw.proc.send_signal(signal.SIGTERM)
        self.assertEqual(gw.proc.wait(30), 0, gw.output())
        drained = [line for line in gw.stdout.lines() if '"event":"drained"' in line]
        self.assertIn('"unfinished":1', drained[0])
        with self.assertRaises(Exception):
            for _ in events:
                pass


if __name__ == "__main__":
    unittest.main()
