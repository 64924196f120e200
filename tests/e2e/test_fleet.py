"""Fleet mode (issue 20): gateways that share one Redis share their quotas and cool-downs.

A real Redis (Debian's redis-server, started here on a loopback port, nothing persisted) and
three gateway processes in front of one fake upstream. With `shared_state` the three together
admit what one `rpm: 60` allows (burst plus refill over the measured run, to a request or two);
the same three without it admit about three times as much. A throttle one gateway met upstream
holds the others back without an upstream call; tokens spent through one count on the others,
corrected from the answers; a caller key's rpm holds across the fleet. When Redis stops or is
paused, requests keep flowing under the local limits (the fleet budget divided by fleet_size)
with no answer slower than a bound, /readyz stays 200, /metrics and one log line per episode
say so; when Redis answers again the limits are shared again.

No test sleeps to synchronise: every wait polls a condition under a deadline. The long
Retry-After waits are asserted, never waited out.
"""

import hashlib
import http.client
import json
import math
import re
import subprocess
import threading
import time
import unittest

import bgw_e2e

GATEWAY_KEY = "AKIDGATEWAYFLEET"
GATEWAY_SECRET = "gateway/fleet+secret/EXAMPLEKEY0123456789"
KEYS = {"app": "fleet-app-key-5b1e07", "capped": "fleet-capped-key-9d2c44"}
JSON = bgw_e2e.JSON_HEADERS
BODY = bgw_e2e.converse_body()

HAMMERED = "fleet.hammered"  # rpm 60
BUDGET_RPM = 60
DEBT = "fleet.tpm-debt"  # tpm 1000
REFUND = "fleet.tpm-refund"  # tpm 1000
TPM = 1000
PREFIX = "fleet-e2e:"
COOLDOWN_S = 5  # retry.base_delay_ms with one attempt: the rest a throttle starts

# Every answer while Redis is down or paused comes well within this (timeout_ms plus the usual,
# with room for a sanitizer build on a loaded 2-core machine): a bound, not a measurement.
ANSWER_BOUND_S = 2.0
# Reconnects back off from 100 ms doubling to 5 s: a gateway is back within one full step.
RECOVERY_DEADLINE_S = 20.0

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def sha256(text):
    return hashlib.sha256(text.encode()).hexdigest()


def sanitized(binary):
    """True for an AddressSanitizer or ThreadSanitizer build (several times slower)."""
    out = subprocess.run(["ldd", binary], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         timeout=30, check=False).stdout.decode("utf-8", "replace")
    return "libasan" in out or "libtsan" in out


def timeout_ms(binary):
    """The hot-path bound on each Redis call. Tight in a plain build; generous under the
    sanitizers, where a gateway thread can be late to read a reply that came in time (a late
    read is a local decision, and in the hammer test an over-admission)."""
    return 200 if sanitized(binary) else 50


def post(gw, model, body=BODY, key=None, timeout=10.0):
    headers = dict(JSON, **({"x-api-key": key} if key else {}))
    return bgw_e2e.http_request(gw.port, "POST", "/model/%s/converse" % model, body, headers,
                                timeout)


def scrape(gw):
    """The gateway's /metrics as a list of (name, {label: value}, float)."""
    resp = bgw_e2e.http_request(gw.port, "GET", "/metrics", timeout=10.0)
    if resp.status != 200:
        raise AssertionError("%s: GET /metrics gave %r" % (gw.name, resp))
    samples = []
    for line in resp.body.decode().splitlines():
        m = SAMPLE.match(line)
        if m and not line.startswith("#"):
            samples.append((m.group(1), dict(LABEL.findall(m.group(2) or "")),
                            float(m.group(3))))
    return samples


def metric(samples, name, **labels):
    """The sum of `name`'s samples that carry `labels`; None when there is none."""
    values = [v for n, ls, v in samples
              if n == name and all(ls.get(k) == w for k, w in labels.items())]
    return sum(values) if values else None


def shared_state(samples):
    """The fleet metrics of one scrape, for assertions and failure messages."""
    return {
        "up": metric(samples, "bedrock_gateway_shared_state_up"),
        "fallback": metric(samples, "bedrock_gateway_shared_state_fallback_total") or 0,
        "fleet_size": metric(samples, "bedrock_gateway_shared_state_fleet_size"),
        "errors": {kind: metric(samples, "bedrock_gateway_shared_state_errors_total",
                                kind=kind) or 0
                   for kind in ("timeout", "connection", "reply")},
    }


def retry_after(resp):
    """(Retry-After seconds, x-amz-retry-after milliseconds) of a 429."""
    return int(resp.headers["retry-after"]), int(resp.headers["x-amz-retry-after"])


def poll(condition, deadline_s, what, interval_s=0.05):
    """condition() once it is truthy; raises naming `what` (and the last value) after the
    deadline. The interval only paces the polling."""
    deadline = time.monotonic() + deadline_s
    while True:
        got = condition()
        if got:
            return got
        if time.monotonic() >= deadline:
            raise AssertionError("%s: not within %.0f s (last: %r)" % (what, deadline_s, got))
        time.sleep(interval_s)


class Tally:
    """What a hammer run got back."""

    def __init__(self, gateways):
        self.lock = threading.Lock()
        self.admitted = 0
        self.refused = 0
        self.refused_by = set()
        self.unexpected = []  # anything but 200 and 429, or a transport error
        self.sample_429 = None
        self.elapsed = 0.0
        self.per_gateway = {gw.name: [0, 0] for gw in gateways}

    def add(self, gw, status, headers, body):
        with self.lock:
            if status == 200:
                self.admitted += 1
                self.per_gateway[gw.name][0] += 1
            elif status == 429:
                self.refused += 1
                self.per_gateway[gw.name][1] += 1
                self.refused_by.add(gw.name)
                if self.sample_429 is None:
                    self.sample_429 = bgw_e2e.RawResponse(status, headers, body)
            elif len(self.unexpected) < 20:
                self.unexpected.append((gw.name, status, body[:200]))

    def error(self, gw, exc):
        with self.lock:
            if len(self.unexpected) < 20:
                self.unexpected.append((gw.name, repr(exc)))


def hammer(gateways, model, key, min_s=3.0, max_s=20.0, clients=6):
    """`clients` threads, each with a keep-alive connection to every gateway, sending Converse
    requests round-robin over the gateways as fast as they are answered, for at least `min_s`
    and until every gateway has refused one (its share of the budget is spent), at most
    `max_s`. elapsed runs from just before the first request to just after the last answer:
    the longest time a bucket could have refilled during the run."""
    tally = Tally(gateways)
    path = "/model/%s/converse" % model
    headers = dict(JSON, **{"x-api-key": key})
    start = threading.Barrier(clients + 1)
    stop = threading.Event()

    def client(index):
        conns = {gw.name: http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
                 for gw in gateways}
        start.wait()
        n = index
        try:
            while not stop.is_set():
                gw = gateways[n % len(gateways)]
                n += 1
                conn = conns[gw.name]
                try:
                    conn.request("POST", path, body=BODY, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                except (OSError, http.client.HTTPException) as e:
                    tally.error(gw, e)
                    conn.close()  # http.client opens a new one for the next request
                    continue
                tally.add(gw, resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
        finally:
            for conn in conns.values():
                conn.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    started = time.monotonic()
    start.wait()
    names = {gw.name for gw in gateways}
    while True:
        now = time.monotonic() - started
        with tally.lock:
            spent = tally.refused_by == names
        if now >= max_s or (now >= min_s and spent):
            break
        time.sleep(0.05)  # paces the check; the clients run meanwhile
    stop.set()
    for t in threads:
        t.join(30)
    tally.elapsed = time.monotonic() - started
    return tally


def gateway_config(endpoint, redis=None, **redis_settings):
    """The fleet's config: two threads (two Redis connections each), no retries and a 5 s
    cool-down after a throttle, the limited models, caller keys; `shared_state` when `redis`
    is given."""
    config = bgw_e2e.base_config(
        endpoint, threads=2, log_level="info",
        retry={"max_attempts": 1, "base_delay_ms": COOLDOWN_S * 1000,
               "max_delay_ms": COOLDOWN_S * 1000},
        rate_limits={HAMMERED: {"rpm": BUDGET_RPM}, DEBT: {"tpm": TPM}, REFUND: {"tpm": TPM}},
        caller_keys={"app": {"sha256": sha256(KEYS["app"])},
                     "capped": {"sha256": sha256(KEYS["capped"]), "rpm": 2}})
    if redis is not None:
        config["shared_state"] = {"redis": dict({"url": redis.url}, **redis_settings)}
    return config


def start_fake_and_redis(cls, prefix):
    """A test class's fake upstream and Redis, stopped when the class is done; returns the
    gateway binary."""
    binary = bgw_e2e.required_env("BGW_GATEWAY_BINARY")
    fake_binary = bgw_e2e.required_env("BGW_FAKE_BEDROCK")
    cls.workdir = bgw_e2e.class_workdir(cls, prefix)
    cls.fake = bgw_e2e.FakeBedrock(fake_binary, GATEWAY_KEY, GATEWAY_SECRET, ["us-east-1"])
    cls.addClassCleanup(cls.fake.stop)
    cls.redis = bgw_e2e.RedisServer(cls.workdir)
    cls.addClassCleanup(cls.redis.stop)
    cls.redis.start()
    cls.timeout_ms = timeout_ms(binary)
    return binary


class FleetSharesLimits(unittest.TestCase):
    """Three gateways on one Redis (A, B, C) and three without it (the baseline), all in
    front of one fake upstream."""

    @classmethod
    def setUpClass(cls):
        binary = start_fake_and_redis(cls, "bgw-fleet-")

        def start(name, config):
            gw = bgw_e2e.Gateway(binary, config, cls.workdir, name, GATEWAY_KEY, GATEWAY_SECRET)
            cls.addClassCleanup(bgw_e2e.stop_checked, gw)
            return gw

        # The baseline first: it needs nothing of fleet mode.
        local = gateway_config(cls.fake.endpoint)
        cls.local = [start("local-%s" % n, local) for n in "abc"]
        shared = gateway_config(cls.fake.endpoint, cls.redis, timeout_ms=cls.timeout_ms,
                                key_prefix=PREFIX)
        cls.shared = [start("shared-%s" % n, shared) for n in "abc"]
        # Each connects to Redis after it listens: a decision before that is a local one.
        poll(lambda: all(shared_state(scrape(gw))["up"] == 1 for gw in cls.shared),
             RECOVERY_DEADLINE_S, "every shared gateway connected to Redis")

    def tearDown(self):
        for gw in self.local + self.shared:
            self.assertEqual(gw.sanitizer_reports(), [], gw.output())
            self.assertTrue(gw.alive(), "%s died\n%s" % (gw.name, gw.output()))

    def fallbacks(self):
        return {gw.name: shared_state(scrape(gw))["fallback"] for gw in self.shared}

    def upstream_saw(self, mark, count):
        """Exactly `count` upstream requests after `mark`."""
        seen = self.fake.wait_requests(mark, count) if count else []
        self.fake.sync()
        self.assertEqual(len(self.fake.requests()) - mark, count,
                         [r["wirePath"] for r in self.fake.requests()[mark:]])
        return seen

    def assert_429(self, resp, min_s, max_s):
        self.assertEqual(resp.status, 429, resp)
        self.assertEqual(resp.error_code(), "ThrottlingException", resp)
        seconds, millis = retry_after(resp)
        self.assertEqual(seconds, max(1, math.ceil(millis / 1000)), resp.headers)
        self.assertGreaterEqual(seconds, min_s, resp)
        self.assertLessEqual(seconds, max_s, resp)
        return seconds, millis

    # --- 1. rpm: the fleet admits one budget, three local gateways three -----------------

    def test_three_gateways_admit_one_rpm_budget_and_without_redis_three(self):
        local = hammer(self.local, HAMMERED, KEYS["app"])
        fallback_before = self.fallbacks()
        mark = self.fake.mark()
        shared = hammer(self.shared, HAMMERED, KEYS["app"])
        fallback_after = self.fallbacks()
        decided_locally = {n: fallback_after[n] - fallback_before[n] for n in fallback_after}
        print("\nfleet admitted: shared=%d local=%d over %.1f s (shared run %.2f s, %d refused, "
              "decided locally %s; local run %.2f s, %d refused; per gateway [admitted, "
              "refused]: shared %s, local %s)"
              % (shared.admitted, local.admitted, max(shared.elapsed, local.elapsed),
                 shared.elapsed, shared.refused, decided_locally, local.elapsed, local.refused,
                 shared.per_gateway, local.per_gateway), flush=True)
        self.assertEqual(local.unexpected, [])
        self.assertEqual(shared.unexpected, [])
        self.assertEqual(shared.refused_by, {gw.name for gw in self.shared},
                         "the shared run never spent the budget")

        # Burst plus refill over the measured run, to a request or two: a bucket cannot have
        # refilled for longer than the run, nor been spent less while clients were waiting.
        # (A decision taken locally, Redis late beyond timeout_ms, may over-admit: the message
        # says how many there were.)
        allowed = BUDGET_RPM + BUDGET_RPM / 60.0 * shared.elapsed
        detail = "shared admitted %d over %.2f s (allowed %.1f); local decisions in the run: %s" % (
            shared.admitted, shared.elapsed, allowed, decided_locally)
        self.assertLessEqual(shared.admitted, allowed + 2, detail)
        self.assertGreaterEqual(shared.admitted, 0.9 * allowed, detail)
        # Only what was admitted went upstream.
        self.upstream_saw(mark, shared.admitted)
        # The 429 of a shared limit is as exact as a local one: rpm 60 frees a slot within 1 s.
        _, millis = self.assert_429(shared.sample_429, 1, 1)
        self.assertLessEqual(millis, 1000)

        # Each gateway on its own admits its own 60 and refill: three times the fleet's.
        self.assertEqual(local.refused_by, {gw.name for gw in self.local})
        self.assertGreaterEqual(local.admitted, 3 * BUDGET_RPM - 3, local.per_gateway)
        self.assertLessEqual(local.admitted,
                             3 * (BUDGET_RPM + BUDGET_RPM / 60.0 * local.elapsed + 2),
                             local.per_gateway)
        self.assertGreater(local.admitted, 2.5 * shared.admitted,
                           "shared=%d local=%d" % (shared.admitted, local.admitted))

        # What the fleet keeps in Redis is under its key_prefix.
        keys = self.redis.keys()
        self.assertTrue(keys, "the shared gateways wrote nothing to Redis")
        self.assertEqual([k for k in keys if not k.startswith(PREFIX)], [], keys)

    # --- 2. a throttle seen by one gateway holds every gateway back ------------------------

    def test_a_throttle_on_one_gateway_makes_the_others_answer_429_without_upstream(self):
        a, b, c = self.shared
        model = "fake-flaky-1-429-ThrottlingException-fleet"  # throttles once, then answers
        mark = self.fake.mark()
        first = post(a, model, key=KEYS["app"])
        self.assert_429(first, COOLDOWN_S, COOLDOWN_S)
        self.upstream_saw(mark, 1)
        # The rest is in Redis before A answered: B and C's very next request is held back.
        mark = self.fake.mark()
        for gw in (b, c, a):
            resp = post(gw, model, key=KEYS["app"])
            self.assert_429(resp, 1, COOLDOWN_S)
            self.assertIn("cool-down", resp.json()["message"], (gw.name, resp))
        self.upstream_saw(mark, 0)  # upstream would have answered 200: it was never asked
        entry = b.wait_log(lambda e: e.get("throttle") == "cooldown")
        self.assertEqual((entry["status"], entry["attempts"]), (429, 0))
        # Other models are not held back.
        self.assertEqual(post(b, "fleet.other", key=KEYS["app"]).status, 200)

        # The baseline: without Redis, B learns nothing from A's throttle and calls upstream.
        la, lb, _ = self.local
        model = "fake-flaky-1-429-ThrottlingException-local"
        self.assert_429(post(la, model, key=KEYS["app"]), COOLDOWN_S, COOLDOWN_S)
        mark = self.fake.mark()
        self.assertEqual(post(lb, model, key=KEYS["app"]).status, 200)
        self.upstream_saw(mark, 1)

    # --- 3. tpm: tokens spent through one gateway count on the others ----------------------

    def test_tokens_spent_through_one_gateway_count_on_the_others_as_corrected(self):
        a, b, c = self.shared
        # A long prompt and no output cap: estimated at its length / 4 (~2,014 tokens; a full
        # bucket admits a request above the whole minute's quota) leaves the shared bucket
        # ~1,000 tokens in debt. The fake reports that input and as many output tokens again
        # (it echoes the text), so the correction puts it ~3,000 in debt: B's tiny request must
        # wait about three minutes, about one before the correction, and not at all with a
        # bucket of its own.
        text = "y" * 8000
        big = bgw_e2e.converse_body(text)
        actual = len(big) // 4 + len(text) // 4
        tiny_estimate = (len(BODY) + 3) // 4
        expected_s = (tiny_estimate - (TPM - actual)) * 60.0 / TPM
        mark = self.fake.mark()
        self.assertEqual(post(a, DEBT, big, KEYS["app"]).status, 200)

        waits = []

        def debt_seen():
            resp = post(b, DEBT, key=KEYS["app"])
            if resp.status != 429:
                raise AssertionError("B admitted a request A's tokens left no room for: %r"
                                     % resp)
            waits.append(retry_after(resp)[0])
            return resp if waits[-1] >= expected_s - 10 else None

        # The correction is fire-and-forget: poll until B sees it (a refusal costs nothing).
        try:
            resp = poll(debt_seen, 5.0, "B's 429 shows A's corrected usage")
        except AssertionError as e:
            raise AssertionError("%s: expected a wait of ~%.0f s, B's Retry-After said %s"
                                 % (e, expected_s, waits)) from None
        self.assert_429(resp, math.floor(expected_s) - 5, math.ceil(expected_s) + 1)
        self.assert_429(post(c, DEBT, key=KEYS["app"]), math.floor(expected_s) - 5,
                        math.ceil(expected_s) + 1)
        self.upstream_saw(mark, 1)

        # The other way: a request that asks for 900 output tokens and uses ~25 gives them
        # back, to the whole fleet. Without the refund the next one would wait ~50 s.
        capped = json.dumps({"messages": [{"role": "user", "content": [{"text": "hi"}]}],
                             "inferenceConfig": {"maxTokens": 900}}).encode()
        mark = self.fake.mark()
        for gw in (a, b, c):
            def admitted(gw=gw):
                resp = post(gw, REFUND, capped, KEYS["app"])
                if resp.status not in (200, 429):
                    raise AssertionError(resp)
                return resp.status == 200
            poll(admitted, 5.0, "%s admitted after the previous request's refund" % gw.name)
        self.upstream_saw(mark, 3)

        # The baseline: each gateway has its own bucket, B's is full whatever A spent.
        la, lb, _ = self.local
        self.assertEqual(post(la, DEBT, big, KEYS["app"]).status, 200)
        self.assertEqual(post(lb, DEBT, key=KEYS["app"]).status, 200)

    # --- 4. a caller key's rpm holds across the fleet ------------------------------------

    def test_a_caller_keys_rpm_is_shared_by_the_fleet(self):
        a, b, c = self.shared
        mark = self.fake.mark()
        self.assertEqual(post(a, "fleet.caller", key=KEYS["capped"]).status, 200)
        self.assertEqual(post(b, "fleet.caller", key=KEYS["capped"]).status, 200)
        self.upstream_saw(mark, 2)
        mark = self.fake.mark()
        third = post(c, "fleet.caller", key=KEYS["capped"])
        # rpm 2: a slot frees 30 s after the first was taken, less the time since.
        self.assert_429(third, 25, 30)
        self.assertIn("capped is over its own rpm", third.json()["message"])
        self.upstream_saw(mark, 0)
        # Another key is not held back by it.
        self.assertEqual(post(c, "fleet.caller", key=KEYS["app"]).status, 200)

        # The baseline: each gateway grants the key its own 2 a minute.
        for gw in self.local:
            self.assertEqual(post(gw, "fleet.caller", key=KEYS["capped"]).status, 200, gw.name)

    # --- the fleet's size, for the fallback ---------------------------------------------

    def test_each_gateway_observes_the_fleet_size_through_redis(self):
        # No fleet_size in the config: each gateway counts the fleet from the heartbeats.
        def sizes():
            got = {gw.name: shared_state(scrape(gw))["fleet_size"] for gw in self.shared}
            return got if set(got.values()) == {3} else None

        poll(sizes, 20.0, "every shared gateway reports bedrock_gateway_shared_state_fleet_size 3",
             interval_s=0.2)
        for gw in self.shared:
            self.assertEqual(shared_state(scrape(gw))["up"], 1, gw.name)


class ReadyWatch:
    """Asks each gateway's /readyz over and over on a thread, until stop(): every answer that
    is not a 200, so "ready throughout" covers the whole episode, not a few moments of it."""

    def __init__(self, gateways):
        self.gateways = gateways
        self.asked = 0
        self.not_ready = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            for gw in self.gateways:
                try:
                    resp = bgw_e2e.http_request(gw.port, "GET", "/readyz", timeout=10.0)
                    status = resp.status
                except OSError as e:
                    status = repr(e)
                self.asked += 1
                if status != 200 and len(self.not_ready) < 20:
                    self.not_ready.append((gw.name, status))
            self._stop.wait(0.02)  # paces the questions

    def stop(self):
        self._stop.set()
        self._thread.join(30)
        return self.not_ready


class FleetOutlivesRedis(unittest.TestCase):
    """Three gateways on one Redis that the tests stop, start again, pause and resume."""

    # Each episode has fresh models: "<episode>.during" (rpm 6: 2 per gateway when each
    # decides alone with fleet_size 3) and "<episode>.after" (rpm 3: the fleet's, shared again).
    EPISODES = ("stop", "pause")
    PROBE = "outage.probe"  # a limit so high it never refuses: it only makes a decision

    @classmethod
    def setUpClass(cls):
        binary = start_fake_and_redis(cls, "bgw-fleet-outage-")
        limits = {cls.PROBE: {"rpm": 1000000}}
        for episode in cls.EPISODES:
            limits.update({episode + ".during": {"rpm": 6}, episode + ".after": {"rpm": 3}})
        config = bgw_e2e.base_config(
            cls.fake.endpoint, threads=2, log_level="info", rate_limits=limits,
            shared_state={"redis": {"url": cls.redis.url, "timeout_ms": cls.timeout_ms,
                                    "key_prefix": "outage-e2e:", "fleet_size": 3}})
        cls.gateways = []
        for name in ("outage-a", "outage-b", "outage-c"):
            gw = bgw_e2e.Gateway(binary, config, cls.workdir, name, GATEWAY_KEY, GATEWAY_SECRET)
            cls.addClassCleanup(bgw_e2e.stop_checked, gw)
            cls.gateways.append(gw)

    def setUp(self):
        self.wait_shared()

    def tearDown(self):
        # Leave Redis as the next test expects it, whatever this one did.
        if self.redis.paused:
            self.redis.resume()
        if not self.redis.running():
            self.redis.start()
        for gw in self.gateways:
            self.assertEqual(gw.sanitizer_reports(), [], gw.output())
            self.assertTrue(gw.alive(), "%s died\n%s" % (gw.name, gw.output()))

    def states(self):
        return {gw.name: shared_state(scrape(gw)) for gw in self.gateways}

    def wait_shared(self):
        """Polls until every gateway says shared state is up and a round of decisions on each
        (four new connections, so both of its threads are likely met) adds no local one."""
        def settled():
            before = self.states()
            if any(s["up"] != 1 for s in before.values()):
                return None
            for gw in self.gateways:
                for _ in range(4):
                    resp = post(gw, self.PROBE)
                    self.assertEqual(resp.status, 200, resp)
            after = self.states()
            if any(after[n]["fallback"] != before[n]["fallback"] or after[n]["up"] != 1
                   for n in after):
                return None
            return after

        return poll(settled, RECOVERY_DEADLINE_S, "every gateway back on shared state",
                    interval_s=0.1)

    def timed_post(self, gw, model):
        """(status, seconds the answer took); asserts the bound in the caller's thread."""
        started = time.monotonic()
        resp = post(gw, model, timeout=30.0)
        return resp.status, time.monotonic() - started

    def assert_prompt(self, gw, model, timed):
        slow = [took for _, took in timed if took >= ANSWER_BOUND_S]
        self.assertEqual(slow, [], "%s answered %s in %s s with Redis out (bound %.1f s)"
                         % (gw.name, model, slow, ANSWER_BOUND_S))
        return [status for status, _ in timed]

    def episode(self, name, interrupt, restore, error_kind):
        downs = {gw.name: len(gw.events("shared_state_down")) for gw in self.gateways}
        ups = {gw.name: len(gw.events("shared_state_up")) for gw in self.gateways}
        before = self.states()
        ready = ReadyWatch(self.gateways)
        self.addCleanup(ready.stop)

        interrupt()
        # Each gateway notices: at once when Redis closed the connections, after a few calls
        # without a reply when it is paused. Meanwhile every request is answered, promptly.
        for gw in self.gateways:
            def noticed(gw=gw):
                status = self.assert_prompt(gw, self.PROBE, [self.timed_post(gw, self.PROBE)])
                self.assertEqual(status, [200], gw.name)
                return shared_state(scrape(gw))["up"] == 0
            poll(noticed, 10.0, "%s reports bedrock_gateway_shared_state_up 0" % gw.name)
        # Requests keep flowing, each gateway deciding alone on its slice of the budget:
        # rpm 6 over fleet_size 3 is 2 each. Nothing is a 5xx, nothing is slow.
        got = {}
        for gw in self.gateways:
            timed = [self.timed_post(gw, name + ".during") for _ in range(3)]
            got[gw.name] = self.assert_prompt(gw, name + ".during", timed)
        self.assertEqual(got, {gw.name: [200, 200, 429] for gw in self.gateways})
        for gw in self.gateways:  # and concurrently, on connections of their own
            timed = []
            threads = [threading.Thread(
                target=lambda gw=gw: timed.append(self.timed_post(gw, self.PROBE)))
                for _ in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            self.assertEqual(self.assert_prompt(gw, self.PROBE, timed), [200] * 4, gw.name)
        during = self.states()
        for gw in self.gateways:
            s, b = during[gw.name], before[gw.name]
            self.assertEqual(s["up"], 0, (gw.name, s))
            self.assertGreaterEqual(s["fallback"] - b["fallback"], 3, (gw.name, b, s))
            self.assertGreater(s["errors"][error_kind], b["errors"][error_kind], (gw.name, b, s))
            down = bgw_e2e.gateway_event(gw, "shared_state_down", downs[gw.name] + 1)
            self.assertTrue(down.get("reason"), down)

        restore()
        after = self.wait_shared()
        self.assertEqual(ready.stop(), [], "/readyz was not 200 during the episode")
        self.assertGreater(ready.asked, len(self.gateways))
        for gw in self.gateways:
            up = bgw_e2e.gateway_event(gw, "shared_state_up", ups[gw.name] + 1)
            self.assertGreater(up["down_ms"], 0, up)
            # At least the three decisions on "<episode>.during" made after the episode began.
            self.assertGreaterEqual(up["fallback_decisions"], 3, up)
            # One line per episode, however many reconnects failed meanwhile.
            self.assertEqual(len(gw.events("shared_state_down")), downs[gw.name] + 1,
                             gw.events("shared_state_down"))
            self.assertEqual(len(gw.events("shared_state_up")), ups[gw.name] + 1,
                             gw.events("shared_state_up"))
            self.assertEqual(after[gw.name]["up"], 1)

        # Shared again: A alone may take the whole fleet's 3 (deciding alone it would stop at
        # 1), and then B and C are refused.
        a, b, c = self.gateways
        mark = self.fake.mark()
        self.assertEqual([post(a, name + ".after").status for _ in range(3)], [200] * 3)
        self.assertEqual([post(b, name + ".after").status, post(c, name + ".after").status],
                         [429, 429])
        self.fake.wait_requests(mark, 3)
        self.fake.sync()
        self.assertEqual([r["wirePath"] for r in self.fake.requests()[mark:]
                          if name + ".after" in r["wirePath"]],
                         ["/model/%s.after/converse" % name] * 3)

    def test_redis_stopped_then_started_again(self):
        def restart():
            self.redis.start()  # same port, empty: nothing was persisted

        self.episode("stop", self.redis.stop, restart, "connection")
        # Redis came back empty: what is in it now, the gateways wrote since.
        keys = self.redis.keys()
        self.assertTrue(keys, "nothing in Redis after the restart")
        self.assertEqual([k for k in keys if not k.startswith("outage-e2e:")], [], keys)

    def test_redis_paused_then_resumed(self):
        # SIGSTOP: connections are accepted by the kernel and nothing is answered, so every
        # call meets timeout_ms rather than an error.
        self.episode("pause", self.redis.pause, self.redis.resume, "timeout")


if __name__ == "__main__":
    unittest.main()
