"""Streaming end to end: Debian's python3-boto3 -> bedrock-gateway -> fake_bedrock.

The fake answers /invoke-with-response-stream and /converse-stream with real event-stream frames
(CRCs included), pausing between events as Bedrock does, and reports how each stream ended
(`stream_end` lines: parts sent, whether its peer closed first). The gateway logs what it learnt
from each stream on the side (`stream_events`, `input_tokens`, `output_tokens`,
`stream_exception`). Every wait has a deadline; nothing sleeps to synchronise.
"""

import http.client
import json
import socket
import struct
import threading
import time
import unittest

import boto3
import botocore
from botocore.config import Config
from botocore.exceptions import EventStreamError

import bgw_e2e

GATEWAY_KEY = "AKIDGATEWAYSTREAM"
GATEWAY_SECRET = "gateway/stream+secret/EXAMPLEKEY0123456789"
TEXT = "Streams arrive frame by frame — ünïcode ✓ included"
DEFAULT_TEXT = "Hello from fake Bedrock"  # what the fake's invoke stream says




def gateway_config(endpoint, stream_idle_timeout_ms=300000):
    return bgw_e2e.base_config(endpoint,
                               upstream={"stream_idle_timeout_ms": stream_idle_timeout_ms},
                               log_level="info")


def converse_body(text=TEXT):
    return {"messages": [{"role": "user", "content": [{"text": text}]}]}


class StreamingEndToEnd(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        gateway_binary = bgw_e2e.required_env("BGW_GATEWAY_BINARY")
        fake_binary = bgw_e2e.required_env("BGW_FAKE_BEDROCK")
        bgw_e2e.required_env("AWS_DATA_PATH")
        cls.workdir = bgw_e2e.class_workdir(cls, "bgw-stream-")

        cls.fake = bgw_e2e.FakeBedrock(fake_binary, GATEWAY_KEY, GATEWAY_SECRET, ["us-east-1"])
        cls.addClassCleanup(cls.fake.stop)
        cls.gateway = bgw_e2e.Gateway(gateway_binary, gateway_config(cls.fake.endpoint),
                                      cls.workdir, "gateway", GATEWAY_KEY, GATEWAY_SECRET)
        cls.addClassCleanup(cls.stop_gateway, cls.gateway)
        cls.idle_gateway = bgw_e2e.Gateway(
            gateway_binary, gateway_config(cls.fake.endpoint, stream_idle_timeout_ms=1000),
            cls.workdir, "idle-gateway", GATEWAY_KEY, GATEWAY_SECRET)
        cls.addClassCleanup(cls.stop_gateway, cls.idle_gateway)

    @staticmethod
    def stop_gateway(gateway):
        bgw_e2e.stop_checked(gateway)

    def tearDown(self):
        for gw in (self.gateway, self.idle_gateway):
            self.assertEqual(gw.sanitizer_reports(), [], gw.output())
            self.assertTrue(gw.alive(), "%s died\n%s" % (gw.name, gw.output()))

    def client(self, gateway=None, read_timeout=30):
        config = Config(retries={"total_max_attempts": 1, "mode": "standard"},
                        connect_timeout=5, read_timeout=read_timeout,
                        signature_version=botocore.UNSIGNED)
        session = boto3.session.Session(region_name="us-east-1")
        client = session.client("bedrock-runtime", endpoint_url=(gateway or self.gateway).url,
                                config=config)
        self.addCleanup(client.close)
        return client

    def log_for(self, gateway, request_id, timeout=10.0):
        """The gateway's log line for the request whose upstream id is `request_id`."""
        return gateway.wait_log(lambda e: e.get("upstream_request_id") == request_id, timeout)

    # --- InvokeModelWithResponseStream ------------------------------------------------------

    def test_invoke_stream_events_in_order_with_usage_logged(self):
        mark = self.fake.mark()
        out = self.client().invoke_model_with_response_stream(
            modelId="anthropic.claude-3-haiku-20240307-v1:0", body=b'{"messages":[]}',
            contentType="application/json", accept="application/json")
        self.assertEqual(out["contentType"], "application/json")  # X-Amzn-Bedrock-Content-Type
        chunks = [json.loads(event["chunk"]["bytes"]) for event in out["body"]]
        self.assertEqual(chunks[0]["type"], "message_start")
        self.assertEqual(chunks[-1]["type"], "message_stop")
        text = "".join(c["delta"]["text"] for c in chunks if c["type"] == "content_block_delta")
        self.assertEqual(text, DEFAULT_TEXT)

        seen = self.fake.wait_requests(mark, 1)[0]
        self.assertTrue(seen["signatureOk"], seen)
        self.assertEqual(seen["wirePath"],
                         "/model/anthropic.claude-3-haiku-20240307-v1%3A0/invoke-with-response-stream")
        request_id = out["ResponseMetadata"]["RequestId"]
        self.assertEqual(request_id, seen["requestId"])
        metrics = chunks[-1]["amazon-bedrock-invocationMetrics"]
        log = self.log_for(self.gateway, request_id)
        self.assertEqual(log["status"], 200)
        self.assertEqual(log["operation"], "InvokeModelWithResponseStream")
        self.assertEqual(log["stream_events"], len(chunks))
        self.assertEqual(log["input_tokens"], metrics["inputTokenCount"])
        self.assertEqual(log["output_tokens"], metrics["outputTokenCount"])
        self.assertNotIn("error", log)

    def test_events_reach_the_client_before_the_upstream_finishes(self):
        # The fake pauses 400 ms before every event. A buffering proxy would deliver them all at
        # once after the last; here each arrives on its own, while the upstream still streams.
        pause = 0.4
        out = self.client().converse_stream(modelId="fake-delay-400", **converse_body())
        request_id = out["ResponseMetadata"]["RequestId"]
        arrivals = []
        ended_at_first_event = None
        for event in out["stream"]:
            arrivals.append(time.monotonic())
            if ended_at_first_event is None:
                ended_at_first_event = self.fake.stream_outcomes(request_id)
        self.assertGreaterEqual(len(arrivals), 5)
        self.assertEqual(ended_at_first_event, [],
                         "the upstream had already finished when the first event arrived")
        self.assertTrue(self.fake.wait_stream_outcome(request_id)["completed"])
        gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
        self.assertTrue(all(gap >= pause * 0.5 for gap in gaps),
                        "events arrived bunched together: gaps %r" % gaps)

    # --- ConverseStream ---------------------------------------------------------------------

    def test_converse_stream_events_and_usage(self):
        out = self.client().converse_stream(modelId="amazon.nova-lite-v1:0", **converse_body())
        events = list(out["stream"])
        kinds = [next(iter(e)) for e in events]
        self.assertEqual(kinds[0], "messageStart")
        self.assertEqual(kinds[-3:], ["contentBlockStop", "messageStop", "metadata"])
        self.assertTrue(all(k == "contentBlockDelta" for k in kinds[1:-3]), kinds)
        text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in events
                       if "contentBlockDelta" in e)
        self.assertEqual(text, TEXT)
        self.assertEqual(events[-2]["messageStop"]["stopReason"], "end_turn")
        usage = events[-1]["metadata"]["usage"]
        log = self.log_for(self.gateway, out["ResponseMetadata"]["RequestId"])
        self.assertEqual(log["operation"], "ConverseStream")
        self.assertEqual(log["stream_events"], len(events))
        self.assertEqual(log["input_tokens"], usage["inputTokens"])
        self.assertEqual(log["output_tokens"], usage["outputTokens"])

    def test_midstream_exception_surfaces_in_the_sdk(self):
        out = self.client().converse_stream(modelId="fake-stream-exception-throttlingException",
                                            **converse_body())
        received = []
        with self.assertRaises(EventStreamError) as caught:
            for event in out["stream"]:
                received.append(event)
        self.assertEqual(caught.exception.response["Error"]["Code"], "throttlingException")
        self.assertEqual(len(received), 2)
        log = self.log_for(self.gateway, out["ResponseMetadata"]["RequestId"])
        self.assertEqual(log["status"], 200)
        self.assertEqual(log["stream_exception"], "throttlingException")

    def test_model_stream_error_in_invoke_stream(self):
        out = self.client().invoke_model_with_response_stream(
            modelId="fake-stream-exception-modelStreamErrorException", body=b"{}")
        with self.assertRaises(EventStreamError) as caught:
            list(out["body"])
        self.assertEqual(caught.exception.response["Error"]["Code"],
                         "modelStreamErrorException")

    def test_corrupt_upstream_frame_ends_the_stream_with_an_error_frame(self):
        # The fake sends one good event, one with a bad CRC, then stalls 30 s holding the
        # connection: the client must get a clear error at once, not a hang.
        out = self.client(read_timeout=20).converse_stream(modelId="fake-stream-corrupt",
                                                           **converse_body())
        received = []
        with self.assertRaises(EventStreamError) as caught:
            for event in out["stream"]:
                received.append(event)
        self.assertEqual(len(received), 1)
        self.assertEqual(caught.exception.response["Error"]["Code"], "InternalServerException")
        self.assertIn("corrupt", caught.exception.response["Error"]["Message"])
        request_id = out["ResponseMetadata"]["RequestId"]
        log = self.log_for(self.gateway, request_id)
        self.assertEqual(log["stream_corrupt"], "Message checksum mismatch")
        # And the upstream connection was dropped, not left hanging for the 30 s stall.
        end = self.fake.wait_stream_outcome(request_id)
        self.assertTrue(end["peerClosed"], end)
        self.assertLess(end["elapsedMs"], 20000, end)

    def test_upstream_cut_mid_stream_truncates_the_client_stream(self):
        out = self.client(read_timeout=20).converse_stream(modelId="fake-stream-cut",
                                                           **converse_body())
        received = []
        with self.assertRaises(Exception) as caught:
            for event in out["stream"]:
                received.append(event)
        self.assertNotIsInstance(caught.exception, botocore.exceptions.ReadTimeoutError)
        self.assertEqual(len(received), 2)
        log = self.log_for(self.gateway, out["ResponseMetadata"]["RequestId"])
        self.assertIn("upstream failed mid-body", log["error"])

    def test_idle_stream_is_ended_after_the_configured_timeout(self):
        # idle-gateway: upstream.stream_idle_timeout_ms = 1000; the fake is silent for 5 s.
        out = self.client(self.idle_gateway).converse_stream(modelId="fake-stream-stall-5000",
                                                             **converse_body())
        received = []
        with self.assertRaises(EventStreamError) as caught:
            for event in out["stream"]:
                received.append(event)
        self.assertEqual(len(received), 1)
        self.assertIn("stream_idle_timeout_ms", caught.exception.response["Error"]["Message"])
        end = self.fake.wait_stream_outcome(out["ResponseMetadata"]["RequestId"])
        self.assertTrue(end["peerClosed"], end)
        self.assertEqual(end["partsSent"], 1, end)

    # --- client going away ------------------------------------------------------------------

    def test_client_abort_closes_the_upstream_at_once(self):
        # 1.5 s before each event. The client reads the first frame and hangs up; the gateway
        # must close the upstream during the next pause (so the fake sent exactly one part),
        # not at its next write.
        conn = http.client.HTTPConnection("127.0.0.1", self.gateway.port, timeout=20)
        body = json.dumps(converse_body()).encode()
        conn.request("POST", "/model/fake-delay-1500/converse-stream", body=body,
                     headers=bgw_e2e.JSON_HEADERS)
        resp = conn.getresponse()
        self.assertEqual(resp.status, 200)
        self.assertEqual(resp.getheader("Content-Type"), "application/vnd.amazon.eventstream")
        request_id = resp.getheader("x-amzn-RequestId")
        prelude = resp.read(12)
        total_length = struct.unpack(">I", prelude[:4])[0]
        rest = resp.read(total_length - 12)
        self.assertEqual(len(rest), total_length - 12)
        conn.sock.shutdown(socket.SHUT_RDWR)
        conn.close()

        end = self.fake.wait_stream_outcome(request_id)
        self.assertTrue(end["peerClosed"], end)
        self.assertFalse(end["completed"], end)
        self.assertEqual(end["partsSent"], 1, end)
        log = self.log_for(self.gateway, request_id)
        self.assertEqual(log["status"], 499)

    # --- concurrency ------------------------------------------------------------------------

    def test_many_streams_do_not_block_each_other_or_plain_requests(self):
        streams = 24
        mark = len(self.fake.stream_outcomes())
        results = [None] * streams
        errors = []

        def run(i):
            try:
                out = self.client().converse_stream(modelId="fake-delay-250",
                                                    **converse_body("stream %d" % i))
                results[i] = "".join(e["contentBlockDelta"]["delta"]["text"]
                                     for e in out["stream"] if "contentBlockDelta" in e)
            except Exception as e:  # noqa: BLE001 - collected and asserted below
                errors.append(e)

        requests_mark = self.fake.mark()
        threads = [threading.Thread(target=run, args=(i,)) for i in range(streams)]
        for t in threads:
            t.start()
        # Once every stream is in flight upstream, a plain request still goes straight through.
        self.fake.wait_requests(requests_mark, streams, timeout=30)
        out = self.client().converse(modelId="amazon.nova-lite-v1:0", **converse_body("quick"))
        finished_when_plain_done = len(self.fake.stream_outcomes()) - mark
        for t in threads:
            t.join(60)
        self.assertEqual(errors, [])
        self.assertEqual(out["output"]["message"]["content"][0]["text"], "quick")
        self.assertLess(finished_when_plain_done, streams,
                        "the plain request waited for every stream to finish")
        self.assertEqual(results, ["stream %d" % i for i in range(streams)])


if __name__ == "__main__":
    unittest.main()
