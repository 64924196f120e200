"""Metrics and logs after known traffic (issue 8): /metrics parsed as Prometheus text format
0.0.4 with exact counts, every log line JSON with the fields, the text format readable, and no
secret in any of it.

The expected figures come from what the clients saw (usage in the answers, statuses) and from
the fake's own request list, never from the gateway's output.
"""

import math
import re
import time
import unittest

import boto3
import botocore
from botocore.config import Config

import bgw_e2e

GATEWAY_KEY = "AKIDGATEWAYMETRICS"
GATEWAY_SECRET = "gateway/metrics+secret/EXAMPLEKEY01234567"
MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
LIMITED = "fake-limited-model"
THROTTLED = "fake-error-429-ThrottlingException"
PT_ARN = "arn:aws:bedrock:us-east-1:123456789012:provisioned-model/ptmetrics"
PRICE_IN, PRICE_OUT = 0.25, 1.25  # USD per 1k tokens: round numbers for exact sums
PT_USD_PER_HOUR = 3600.0  # one model unit at 1 USD per second

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')


def parse_exposition(text):
    """{(name, frozenset(labels)): value} from the text format; raises on a malformed line."""
    samples, types = {}, {}
    assert text.endswith("\n"), "the exposition must end with a newline"
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "histogram"), line
            types[name] = kind
            continue
        m = SAMPLE.match(line)
        assert m, "not a sample line: %r" % line
        labels = {}
        rest = m.group(3) or ""
        while rest:
            lm = LABEL.match(rest)
            assert lm, "bad labels in %r" % line
            labels[lm.group(1)] = lm.group(2)
            rest = rest[lm.end():]
        key = (m.group(1), frozenset(labels.items()))
        assert key not in samples, "duplicate series %r" % line
        value = m.group(4)
        samples[key] = math.inf if value == "+Inf" else float(value)
    return samples, types


def get(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())))


class MetricsEndToEnd(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.binary = bgw_e2e.required_env("BGW_GATEWAY_BINARY")
        fake_binary = bgw_e2e.required_env("BGW_FAKE_BEDROCK")
        bgw_e2e.required_env("AWS_DATA_PATH")
        cls.workdir = bgw_e2e.class_workdir(cls, "bgw-metrics-")
        cls.fake = bgw_e2e.FakeBedrock(fake_binary, GATEWAY_KEY, GATEWAY_SECRET, ["us-east-1"])
        cls.addClassCleanup(cls.fake.stop)

    def config(self, **extra):
        config = bgw_e2e.base_config(
            self.fake.endpoint,
            retry={"max_attempts": 2, "base_delay_ms": 1, "max_delay_ms": 5},
            rate_limits={LIMITED: {"rpm": 1}},
            routes={"pt-route": {"targets": [
                {"region": "us-east-1", "tier": "provisioned", "model_id": PT_ARN}]}},
            prices={MODEL: {"input_per_1k": PRICE_IN, "output_per_1k": PRICE_OUT},
                    PT_ARN: {"model_unit_hour": PT_USD_PER_HOUR, "model_units": 1}},
        )
        config.update(extra)
        return config

    def start(self, name, **kwargs):
        gw = bgw_e2e.Gateway(self.binary, kwargs.pop("config", None) or self.config(),
                             self.workdir, name, GATEWAY_KEY, GATEWAY_SECRET, **kwargs)
        self.addCleanup(bgw_e2e.stop_checked, gw)
        return gw

    def client(self, gw):
        config = Config(retries={"total_max_attempts": 1, "mode": "standard"},
                        signature_version=botocore.UNSIGNED)
        client = boto3.session.Session(region_name="us-east-1").client(
            "bedrock-runtime", endpoint_url=gw.url, config=config)
        self.addCleanup(client.close)
        return client

    def scrape(self, gw):
        resp = bgw_e2e.http_request(gw.port, "GET", "/metrics")
        self.assertEqual(resp.status, 200, resp)
        self.assertEqual(resp.headers["content-type"], "text/plain; version=0.0.4; charset=utf-8")
        return parse_exposition(resp.body.decode("utf-8"))

    def test_metrics_after_known_traffic_are_exact(self):
        before_start = time.monotonic()
        gw = self.start("metrics")
        client = self.client(gw)
        messages = [{"role": "user", "content": [{"text": "count me"}]}]
        tokens_in = tokens_out = 0
        for _ in range(2):
            usage = client.converse(modelId=MODEL, messages=messages)["usage"]
            tokens_in += usage["inputTokens"]
            tokens_out += usage["outputTokens"]
        stream_usage = None
        for event in client.converse_stream(modelId=MODEL, messages=messages)["stream"]:
            if "metadata" in event:
                stream_usage = event["metadata"]["usage"]
        self.assertIsNotNone(stream_usage)
        tokens_in += stream_usage["inputTokens"]
        tokens_out += stream_usage["outputTokens"]
        invoke = client.invoke_model(modelId=MODEL, body=b'{"prompt":"hi"}')
        headers = invoke["ResponseMetadata"]["HTTPHeaders"]
        invoke["body"].read()
        tokens_in += int(headers["x-amzn-bedrock-input-token-count"])
        tokens_out += int(headers["x-amzn-bedrock-output-token-count"])
        with self.assertRaises(client.exceptions.ThrottlingException):
            client.converse(modelId=THROTTLED, messages=messages)
        client.converse(modelId=LIMITED, messages=messages)
        with self.assertRaises(client.exceptions.ThrottlingException):
            client.converse(modelId=LIMITED, messages=messages)  # rpm 1: refused locally
        client.converse(modelId="pt-route", messages=messages)
        self.assertEqual(bgw_e2e.http_request(gw.port, "GET", "/no/such/path").status, 404)
        # The log line follows the response: wait for all 9 before reading the counters.
        gw.wait_log(lambda e: len(gw.request_logs()) >= 9)
        self.fake.sync()  # every attempt's line is in (the reader thread may lag)
        upstream = [r for r in self.fake.requests() if r.get("accessKeyId") == GATEWAY_KEY]
        throttled_attempts = [r for r in upstream if THROTTLED in r["wirePath"]]
        self.assertEqual(len(throttled_attempts), 2)  # retry.max_attempts

        samples, types = self.scrape(gw)
        elapsed = time.monotonic() - before_start
        req = "bedrock_gateway_requests_total"
        od = {"region": "us-east-1", "tier": "on-demand"}
        self.assertEqual(get(samples, req, operation="Converse", model=MODEL, status="200", **od), 2)
        self.assertEqual(
            get(samples, req, operation="ConverseStream", model=MODEL, status="200", **od), 1)
        self.assertEqual(
            get(samples, req, operation="InvokeModel", model=MODEL, status="200", **od), 1)
        self.assertEqual(
            get(samples, req, operation="Converse", model=THROTTLED, status="429", **od), 1)
        self.assertEqual(
            get(samples, req, operation="Converse", model=LIMITED, status="200", **od), 1)
        self.assertEqual(
            get(samples, req, operation="Converse", model=LIMITED, status="429", **od), 1)
        self.assertEqual(get(samples, req, operation="Converse", model="pt-route", status="200",
                             region="us-east-1", tier="provisioned"), 1)
        self.assertEqual(get(samples, req, operation="-", model="", status="404", region="",
                             tier=""), 1)
        self.assertEqual(types[req], "counter")

        thr = "bedrock_gateway_throttles_total"
        self.assertEqual(get(samples, thr, region="us-east-1", model=THROTTLED, source="upstream"), 2)
        self.assertEqual(get(samples, thr, region="us-east-1", model=LIMITED, source="local"), 1)
        self.assertEqual(get(samples, "bedrock_gateway_retries_total"), 1)
        self.assertEqual(get(samples, "bedrock_gateway_failovers_total"), 0)

        tok = "bedrock_gateway_tokens_total"
        self.assertEqual(get(samples, tok, direction="input", model=MODEL, **od), tokens_in)
        self.assertEqual(get(samples, tok, direction="output", model=MODEL, **od), tokens_out)
        cost = get(samples, "bedrock_gateway_estimated_cost_usd_total", model=MODEL, **od)
        self.assertAlmostEqual(cost, tokens_in / 1000 * PRICE_IN + tokens_out / 1000 * PRICE_OUT,
                               places=9)
        # Provisioned throughput costs by the hour from start-up: 1 USD a second here.
        pt_cost = get(samples, "bedrock_gateway_estimated_cost_usd_total", region="us-east-1",
                      tier="provisioned", model=PT_ARN)
        self.assertGreater(pt_cost, 0)
        self.assertLessEqual(pt_cost, elapsed)

        # Upstream latency: one observation per attempt that got an answer.
        lat = "bedrock_gateway_upstream_latency_seconds_count"
        converse_attempts = len([r for r in upstream if r["wirePath"].endswith("/converse")])
        self.assertEqual(get(samples, lat, region="us-east-1", operation="Converse"),
                         converse_attempts)
        self.assertEqual(get(samples, lat, region="us-east-1", operation="InvokeModel"), 1)
        self.assertEqual(types["bedrock_gateway_upstream_latency_seconds"], "histogram")
        bucket = "bedrock_gateway_upstream_latency_seconds_bucket"
        self.assertEqual(get(samples, bucket, region="us-east-1", operation="Converse", le="+Inf"),
                         converse_attempts)
        ttfe = "bedrock_gateway_time_to_first_event_seconds_count"
        self.assertEqual(get(samples, ttfe, region="us-east-1", operation="ConverseStream"), 1)
        self.assertEqual(get(samples, "bedrock_gateway_inflight_requests"), 1)  # this scrape
        # Static keys never expire: no expiry sample.
        self.assertIsNone(get(samples, "bedrock_gateway_credentials_expiry_seconds"))

        # The request log lines carry the fields, and nothing secret is anywhere in the output.
        logs = gw.request_logs()
        converse = [e for e in logs if e["operation"] == "Converse" and e["model"] == MODEL]
        self.assertEqual(len(converse), 2)
        for entry in converse:
            for field in ("time", "level", "id", "operation", "model", "region", "tier",
                          "status", "attempts", "latency_ms", "bytes_in", "bytes_out",
                          "input_tokens", "output_tokens"):
                self.assertIn(field, entry)
        self.assertEqual(sum(e["input_tokens"] for e in logs if e.get("model") == MODEL),
                         tokens_in)
        output = gw.output()
        self.assertNotIn(GATEWAY_SECRET, output)
        self.assertNotIn(GATEWAY_KEY, output)  # at most its last four characters
        self.assertNotIn("count me", output)  # bodies are never logged

    def test_text_log_format_is_one_readable_line_per_request(self):
        gw = self.start("text-log", env_extra={"BEDROCK_GATEWAY_LOG_FORMAT": "text"})
        client = self.client(gw)
        client.converse(modelId=MODEL,
                        messages=[{"role": "user", "content": [{"text": "plain words"}]}])

        def line(lines):
            found = [x for x in lines if " request " in x and "operation=Converse" in x]
            return found or None

        found = gw.stdout.wait_for(line, 10)
        self.assertIsNotNone(found, gw.output())
        self.assertRegex(found[0], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO  request id=\S+ "
                                   r"operation=Converse model=\S+ region=us-east-1 status=200 ")
        self.assertFalse(any(x.startswith("{") for x in gw.stdout.lines()), gw.output())
        self.assertNotIn("plain words", gw.output())


if __name__ == "__main__":
    unittest.main()
