"""The batch tier end to end (issue 6): raw HTTP -> bedrock-gateway -> fake_bedrock, which also
plays S3 (path style, SigV4 for `s3`) and the Bedrock control plane (batch jobs that move from
Submitted through InProgress to Completed and write a `.jsonl.out` file).

Waits are on what the gateway logs (`batch_job_submitted`, `batch_job_finished`) or on what the
fake saw, each with a deadline; nothing sleeps to synchronise. The kill -9 tests restart the
gateway on the same spool and check that every accepted record completes exactly once.
"""

import json
import os
import re
import unittest

import bgw_e2e

GATEWAY_KEY = "AKIDGATEWAYBATCH"
GATEWAY_SECRET = "gateway/batch+secret/EXAMPLEKEY0123456789"
BUCKET = "bgw-test-bucket"
ROLE = "arn:aws:iam::123456789012:role/bedrock-batch"
MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
WAIT_S = 20.0


PRICE_IN, PRICE_OUT = 0.5, 2.5  # USD per 1k tokens on demand


def gateway_config(endpoint, spool_dir, **batch):
    settings = {"bucket": BUCKET, "prefix": "gw", "role_arn": ROLE, "spool_dir": spool_dir,
                "min_records": 3, "max_wait_s": 3600, "underfull": "wait",
                "poll_interval_s": 0.05}
    settings.update(batch)
    return bgw_e2e.base_config(
        {"us-east-1": {"endpoint": endpoint, "control_endpoint": endpoint,
                       "s3_endpoint": endpoint}},
        routes={"cheap": {"targets": [
            {"region": "us-east-1", "tier": "batch", "model_id": MODEL}]}},
        batch=settings,
        prices={MODEL: {"input_per_1k": PRICE_IN, "output_per_1k": PRICE_OUT}},
        log_level="info",
    )


class BatchEndToEnd(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.binary = bgw_e2e.required_env("BGW_GATEWAY_BINARY")
        cls.fake_binary = bgw_e2e.required_env("BGW_FAKE_BEDROCK")
        cls.workdir = bgw_e2e.class_workdir(cls, "bgw-batch-")
        cls.fake = bgw_e2e.FakeBedrock(cls.fake_binary, GATEWAY_KEY, GATEWAY_SECRET,
                                       ["us-east-1"], extra_args=["--batch-polls", "2"])
        cls.addClassCleanup(cls.fake.stop)

    def start(self, name, **batch):
        spool = os.path.join(self.workdir, name + "-spool")
        gw = bgw_e2e.Gateway(self.binary, gateway_config(self.fake.endpoint, spool, **batch),
                             self.workdir, name, GATEWAY_KEY, GATEWAY_SECRET)
        self.addCleanup(self.stop_gateway, gw)
        return gw

    def restart(self, gw):
        """The same config and spool, a new process."""
        again = bgw_e2e.Gateway(self.binary, gw.config, self.workdir, gw.name + "-again",
                                GATEWAY_KEY, GATEWAY_SECRET)
        self.addCleanup(self.stop_gateway, again)
        return again

    def stop_gateway(self, gw):
        bgw_e2e.stop_checked(gw, (0, -15, -9))

    # --- helpers ----------------------------------------------------------------------------

    def send(self, gw, body, model="m.batch-v1:0", op="invoke", tier=True):
        headers = dict(bgw_e2e.JSON_HEADERS)
        if tier:
            headers["X-Gateway-Tier"] = "batch"
        resp = bgw_e2e.http_request(gw.port, "POST", "/model/%s/%s" % (model, op),
                                    json.dumps(body).encode(), headers)
        self.assertEqual(resp.status, 202, resp)
        record = resp.json()["recordId"]
        self.assertEqual(resp.json()["status"], "queued")
        self.assertEqual(resp.headers["location"], "/gateway/batch/records/" + record)
        self.assertEqual(resp.headers["x-gateway-tier"], "batch")
        return record

    def get(self, gw, record):
        return bgw_e2e.http_request(gw.port, "GET", "/gateway/batch/records/" + record)

    def wait_event(self, gw, event, count=1):
        def enough(lines):
            found = [line for line in lines if '"event":"%s"' % event in line]
            return found if len(found) >= count else None

        found = gw.stdout.wait_for(enough, WAIT_S)
        self.assertIsNotNone(found, "%s never logged %s\n%s" % (gw.name, event, gw.output()))
        return [json.loads(line[line.index("{"):]) for line in found]

    def fake_since(self, mark, **match):
        self.fake.sync()  # the gateway has its answers: the fake's lines exist, maybe unread
        return [r for r in self.fake.requests()[mark:]
                if all(r.get(k) == v for k, v in match.items())]

    # --- the happy path -----------------------------------------------------------------

    def test_records_become_one_job_and_each_result_is_collected(self):
        gw = self.start("happy")
        mark = self.fake.mark()
        records = [self.send(gw, {"prompt": "p%d" % i, "max_tokens": 10}) for i in range(3)]
        pending = self.get(gw, records[0])
        self.assertEqual(pending.status, 202, pending)
        self.assertIn(pending.json()["status"], ("queued", "submitted"))
        finished = self.wait_event(gw, "batch_job_finished")[0]
        self.assertEqual((finished["status"], finished["records"], finished["failed"]),
                         ("Completed", 3, 0))
        for record in records:
            resp = self.get(gw, record)
            self.assertEqual(resp.status, 200, resp)
            # The fake's batch output for InvokeModel names the record it answers.
            self.assertEqual(resp.json(), {"fakeBatch": True, "recordId": record,
                                           "modelId": "m.batch-v1:0"})
        # Upstream: one input file, one job (clientRequestToken = jobName), one output read.
        puts = self.fake_since(mark, service="s3", method="PUT")
        self.assertEqual(len(puts), 1, puts)
        self.assertEqual(puts[0]["s3Bucket"], BUCKET)
        self.assertRegex(puts[0]["s3Key"], r"^gw/input/bgw-\d{8}-\d{6}-[0-9a-f]{8}\.jsonl$")
        self.assertEqual(len(self.fake_since(mark, createdJob=True)), 1)
        gets = self.fake_since(mark, service="s3", method="GET")
        self.assertEqual(len(gets), 1, gets)
        self.assertTrue(gets[0]["s3Key"].endswith(".jsonl.out"))
        for r in self.fake_since(mark):
            self.assertTrue(r["signatureOk"], r)
        jobs = bgw_e2e.http_request(gw.port, "GET", "/gateway/batch/jobs").json()["jobs"]
        self.assertEqual(len(jobs), 1)
        self.assertEqual((jobs[0]["state"], jobs[0]["status"], jobs[0]["records"]),
                         ("finished", "Completed", 3))
        self.assertTrue(jobs[0]["jobArn"].startswith("arn:aws:bedrock:us-east-1:"))

    def test_a_batch_route_takes_converse_without_a_tier_header_and_a_record_can_fail(self):
        gw = self.start("converse")
        body = {"messages": [{"role": "user", "content": [{"text": "hi"}]}]}
        bad = {"messages": [{"role": "user", "content": [{"text": "fake-record-error"}]}]}
        records = [self.send(gw, body, "cheap", "converse", tier=False),
                   self.send(gw, bad, "cheap", "converse", tier=False),
                   self.send(gw, body, "cheap", "converse", tier=False)]
        finished = self.wait_event(gw, "batch_job_finished")[0]
        self.assertEqual((finished["status"], finished["failed"]), ("PartiallyCompleted", 1))
        ok = self.get(gw, records[0])
        self.assertEqual(ok.status, 200, ok)
        self.assertEqual(ok.json()["stopReason"], "end_turn")  # a Converse-shaped answer
        failed = self.get(gw, records[1])
        self.assertEqual(failed.status, 400, failed)
        self.assertEqual(failed.json()["status"], "failed")
        self.assertIn("scripted record error", failed.json()["message"])
        # The answers' usage shows in the metrics at the batch tier's half price.
        usage = [ok.json()["usage"], self.get(gw, records[2]).json()["usage"]]
        tokens_in = sum(u["inputTokens"] for u in usage)
        tokens_out = sum(u["outputTokens"] for u in usage)
        metrics = bgw_e2e.http_request(gw.port, "GET", "/metrics").body.decode()
        labels = 'region="us-east-1",tier="batch",model="%s"' % MODEL

        def value(series):
            found = re.search(r"^%s (\S+)$" % re.escape(series), metrics, re.M)
            self.assertIsNotNone(found, series + "\n" + metrics)
            return float(found.group(1))

        self.assertEqual(value('bedrock_gateway_tokens_total{direction="input",%s}' % labels),
                         tokens_in)
        self.assertEqual(value('bedrock_gateway_tokens_total{direction="output",%s}' % labels),
                         tokens_out)
        on_demand = tokens_in / 1000 * PRICE_IN + tokens_out / 1000 * PRICE_OUT
        self.assertAlmostEqual(
            value("bedrock_gateway_estimated_cost_usd_total{%s}" % labels), on_demand / 2)
        self.assertAlmostEqual(value('bedrock_gateway_batch_savings_usd_total{region="us-east-1",'
                                     'model="%s"}' % MODEL), on_demand / 2)
        self.assertEqual(value('bedrock_gateway_batch_records{state="done"}'), 2)
        self.assertEqual(value('bedrock_gateway_batch_records{state="failed"}'), 1)

    # --- cancelling and the edges of the API ---------------------------------------------

    def test_a_queued_record_can_be_cancelled_and_is_never_sent(self):
        gw = self.start("cancel")
        mark = self.fake.mark()
        record = self.send(gw, {"prompt": "never"})
        resp = bgw_e2e.http_request(gw.port, "DELETE", "/gateway/batch/records/" + record)
        self.assertEqual(resp.status, 200, resp)
        self.assertEqual(resp.json()["status"], "cancelled")
        self.assertEqual(self.get(gw, record).status, 410)
        missing = self.get(gw, "no-such-record")
        self.assertEqual((missing.status, missing.error_code()),
                         (404, "ResourceNotFoundException"))
        # Three more fill a job; the cancelled one is not in it.
        others = [self.send(gw, {"prompt": "p%d" % i}) for i in range(3)]
        self.wait_event(gw, "batch_job_finished")
        put = self.fake_since(mark, service="s3", method="PUT")
        self.assertEqual(len(put), 1)
        for record_id in others:
            self.assertEqual(self.get(gw, record_id).status, 200)
        done = bgw_e2e.http_request(gw.port, "DELETE", "/gateway/batch/records/" + others[0])
        self.assertEqual((done.status, done.error_code()), (409, "ConflictException"))

    def test_bad_batch_requests_are_refused_before_the_spool(self):
        gw = self.start("refuse")
        for path, body, headers, status in (
                ("/model/m/invoke", b"[1,2]", {"X-Gateway-Tier": "batch"}, 400),
                ("/model/m/invoke", b"{", {"X-Gateway-Tier": "batch"}, 400),
                ("/model/m/converse-stream", b"{}", {"X-Gateway-Tier": "batch"}, 400)):
            with self.subTest(path=path, body=body):
                resp = bgw_e2e.http_request(gw.port, "POST", path, body, headers)
                self.assertEqual(resp.status, status, resp)
                self.assertTrue(resp.json()["message"])
        jobs = bgw_e2e.http_request(gw.port, "GET", "/gateway/batch/jobs").json()["jobs"]
        self.assertEqual(jobs, [])

    # --- underfull groups ----------------------------------------------------------------

    def test_an_underfull_group_runs_on_demand_at_its_deadline(self):
        gw = self.start("underfull", min_records=100, max_wait_s=0.1, underfull="on-demand")
        mark = self.fake.mark()
        records = [self.send(gw, {"prompt": "u%d" % i}) for i in range(2)]
        finished = self.wait_event(gw, "batch_job_finished")[0]
        self.assertEqual(finished["status"], "on-demand")
        for record in records:
            resp = self.get(gw, record)
            self.assertEqual(resp.status, 200, resp)
            self.assertEqual(resp.json()["modelId"], "m.batch-v1:0")  # the runtime's echo
        self.assertEqual(len(self.fake_since(mark, wirePath="/model/m.batch-v1%3A0/invoke")), 2)
        self.assertEqual(self.fake_since(mark, createdJob=True), [])

    # --- restart safety ------------------------------------------------------------------

    def test_kill_9_between_accept_and_submission_loses_nothing(self):
        gw = self.start("crash-accept")
        mark = self.fake.mark()
        first = [self.send(gw, {"prompt": "a%d" % i}) for i in range(2)]
        gw.kill()  # SIGKILL: the records exist only in the spool now
        again = self.restart(gw)
        third = self.send(again, {"prompt": "a2"})
        self.wait_event(again, "batch_job_finished")
        for record in first + [third]:
            resp = self.get(again, record)
            self.assertEqual(resp.status, 200, resp)
            self.assertEqual(resp.json()["recordId"], record)
        self.assertEqual(len(self.fake_since(mark, createdJob=True)), 1)

    def test_kill_9_between_submission_and_completion_never_submits_twice(self):
        gw = self.start("crash-running", poll_interval_s=0.5)
        mark = self.fake.mark()
        records = [self.send(gw, {"prompt": "r%d" % i}) for i in range(3)]
        self.wait_event(gw, "batch_job_submitted")
        gw.kill()
        again = self.restart(gw)
        finished = self.wait_event(again, "batch_job_finished")[0]
        self.assertEqual(finished["records"], 3)
        for record in records:
            self.assertEqual(self.get(again, record).status, 200)
        # One job created upstream, ever; the restarted gateway only polled it.
        self.assertEqual(len(self.fake_since(mark, createdJob=True)), 1)
        creates = self.fake_since(mark, method="POST", wirePath="/model-invocation-job")
        self.assertEqual(len(creates), 1, creates)
        jobs = bgw_e2e.http_request(again.port, "GET", "/gateway/batch/jobs").json()["jobs"]
        self.assertEqual(len(jobs), 1)


if __name__ == "__main__":
    unittest.main()
