"""Operability (issue 8): /healthz, /readyz, SIGTERM draining, the admin listener, SIGHUP
reload, the command line (--listen, env overrides, --check-config, --probe).

A SIGTERM stops accepting at once (new connections are refused), flips readiness on the
connections still open, lets in-flight requests and streams finish within shutdown_grace_s, and
then the gateway exits 0. Waits are on log lines, fake request lists or socket events, never
sleeps.
"""

import http.client
import json
import os
import signal
import socket
import subprocess
import threading
import unittest

import boto3
import botocore
import yaml
from botocore.config import Config

import bgw_e2e

GATEWAY_KEY = "AKIDGATEWAYOPS"
GATEWAY_SECRET = "gateway/ops+secret/EXAMPLEKEY0123456789"


def gateway_config(endpoint, grace_s=30, admin_listen=None):
    config = bgw_e2e.base_config(endpoint, shutdown_grace_s=grace_s, log_level="info")
    if admin_listen:
        config["admin_listen"] = admin_listen
    return config


class OperabilityEndToEnd(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.binary = bgw_e2e.required_env("BGW_GATEWAY_BINARY")
        fake_binary = bgw_e2e.required_env("BGW_FAKE_BEDROCK")
        bgw_e2e.required_env("AWS_DATA_PATH")
        cls.workdir = bgw_e2e.class_workdir(cls, "bgw-ops-")
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


    # --- admin listener ----------------------------------------------------------------------

    def admin_port(self, gw):
        listening = gw.events("listening")
        self.assertEqual(len(listening), 1, gw.output())
        return int(listening[0]["admin_address"].rsplit(":", 1)[1])

    def test_admin_listen_takes_health_and_metrics_off_the_main_listener(self):
        gw = self.start("admin", admin_listen="127.0.0.1:0")
        admin = self.admin_port(gw)
        self.assertNotEqual(admin, gw.port)
        for path in ("/healthz", "/readyz", "/metrics"):
            self.assertEqual(bgw_e2e.http_request(admin, "GET", path).status, 200, path)
            main = bgw_e2e.http_request(gw.port, "GET", path)
            self.assertEqual(main.status, 404, path)
            self.assertIn("admin_listen", main.json()["message"])
        # The admin listener serves nothing else: no runtime call goes upstream through it.
        mark = self.fake.mark()
        body = bgw_e2e.converse_body()
        resp = bgw_e2e.http_request(admin, "POST", "/model/m/converse", body,
                                    bgw_e2e.JSON_HEADERS)
        self.assertEqual(resp.status, 404, resp)
        self.assertEqual(self.fake.requests()[mark:], [])
        # While the main listener still serves the runtime API.
        ok = bgw_e2e.http_request(gw.port, "POST", "/model/m/converse", body,
                                  bgw_e2e.JSON_HEADERS)
        self.assertEqual(ok.status, 200, ok)

    def test_readiness_flips_on_the_admin_listener_while_draining(self):
        gw = self.start("admin-drain", admin_listen="127.0.0.1:0")
        admin = self.admin_port(gw)
        config = Config(retries={"total_max_attempts": 1, "mode": "standard"},
                        read_timeout=60, signature_version=botocore.UNSIGNED)
        client = boto3.session.Session(region_name="us-east-1").client(
            "bedrock-runtime", endpoint_url=gw.url, config=config)
        self.addCleanup(client.close)
        out = client.converse_stream(modelId="fake-delay-200",
                                     messages=[{"role": "user", "content": [{"text": "slow"}]}])
        events = iter(out["stream"])
        next(events)  # in flight now
        gw.proc.send_signal(signal.SIGTERM)
        self.assertIsNotNone(gw.stdout.wait_for(
            lambda lines: [x for x in lines if '"event":"stopping"' in x] or None, 10))
        ready = bgw_e2e.http_request(admin, "GET", "/readyz")
        self.assertEqual(ready.status, 503, ready)
        self.assertTrue(any(r.startswith("draining") for r in ready.json()["reasons"]), ready)
        self.assertEqual(bgw_e2e.http_request(admin, "GET", "/healthz").status, 200)
        kinds = [next(iter(e)) for e in events]
        self.assertEqual(kinds[-1], "metadata")  # the stream ran to its end
        self.assertEqual(gw.proc.wait(30), 0, gw.output())

    # --- SIGHUP -------------------------------------------------------------------------------

    def rewrite(self, gw, config):
        if isinstance(config, dict):
            config = bgw_e2e.trust_test_ca(config)  # as the running file does
        with open(gw.config_path + ".new", "w", encoding="utf-8") as f:
            f.write(config if isinstance(config, str) else json.dumps(config))
        os.replace(gw.config_path + ".new", gw.config_path)  # as an editor or a ConfigMap does

    def hangup(self, gw, event, count):
        """Sends SIGHUP and waits for the `count`-th line of `event`."""
        gw.proc.send_signal(signal.SIGHUP)
        found = gw.stdout.wait_for(
            lambda lines: (lambda got: got if len(got) >= count else None)(
                [json.loads(x) for x in lines if '"event":"%s"' % event in x]), 10)
        self.assertIsNotNone(found, gw.output())
        return found[count - 1]

    def test_sighup_applies_a_good_file_and_refuses_a_bad_one(self):
        gw = self.start("reload")
        body = bgw_e2e.converse_body()
        headers = bgw_e2e.JSON_HEADERS
        for _ in range(3):  # no local limit yet
            ok = bgw_e2e.http_request(gw.port, "POST", "/model/reloaded/converse", body, headers)
            self.assertEqual(ok.status, 200, ok)

        good = gateway_config(self.fake.endpoint)
        good["rate_limits"] = {"reloaded": {"rpm": 1}}
        self.rewrite(gw, good)
        self.hangup(gw, "config_reloaded", 1)
        first = bgw_e2e.http_request(gw.port, "POST", "/model/reloaded/converse", body, headers)
        self.assertEqual(first.status, 200, first)
        limited = bgw_e2e.http_request(gw.port, "POST", "/model/reloaded/converse", body, headers)
        self.assertEqual(limited.status, 429, limited)  # the new limit holds

        # Not JSON: refused with where and why; the running config stays.
        self.rewrite(gw, '{"listen": "127.0.0.1:0",')
        refused = self.hangup(gw, "config_reload_refused", 1)
        self.assertIn("not valid JSON", refused["error"])
        self.assertEqual(bgw_e2e.http_request(gw.port, "POST", "/model/reloaded/converse", body,
                                              headers).status, 429)
        # A bad key: named.
        bad = dict(good, retry={"max_attempts": 0})
        self.rewrite(gw, bad)
        refused = self.hangup(gw, "config_reload_refused", 2)
        self.assertIn("retry.max_attempts", refused["error"])
        # A restart-only key: refused whole, even with a good change beside it.
        moved = dict(good, listen="127.0.0.1:1", rate_limits={})
        self.rewrite(gw, moved)
        refused = self.hangup(gw, "config_reload_refused", 3)
        self.assertIn("listen", refused["error"])
        self.assertIn("need a restart", refused["error"])
        self.assertEqual(bgw_e2e.http_request(gw.port, "POST", "/model/reloaded/converse", body,
                                              headers).status, 429)  # still the good file's limit
        metrics = bgw_e2e.http_request(gw.port, "GET", "/metrics").body.decode()
        self.assertIn('bedrock_gateway_config_reloads_total{result="ok"} 1\n', metrics)
        self.assertIn('bedrock_gateway_config_reloads_total{result="error"} 3\n', metrics)

    # --- command line ---------------------------------------------------------------------------

    def run_binary(self, *args, env=None):
        return subprocess.run([self.binary] + list(args), stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30,
                              env=env, text=True)

    def test_listen_flag_and_environment_override_the_file(self):
        blocker = bgw_e2e.closed_port()  # bound, never listening: the file's address is taken
        self.addCleanup(blocker.close)
        taken = "127.0.0.1:%d" % blocker.getsockname()[1]
        config = dict(gateway_config(self.fake.endpoint), listen=taken)
        gw = bgw_e2e.Gateway(self.binary, config, self.workdir, "listen-env", GATEWAY_KEY,
                             GATEWAY_SECRET, env_extra={"BEDROCK_GATEWAY_LISTEN": "127.0.0.1:0"})
        self.addCleanup(self.stop_gateway, gw)
        self.assertEqual(bgw_e2e.http_request(gw.port, "GET", "/healthz").status, 200)
        # The flag beats the environment.
        gw2 = bgw_e2e.Gateway(self.binary, config, self.workdir, "listen-flag", GATEWAY_KEY,
                              GATEWAY_SECRET, env_extra={"BEDROCK_GATEWAY_LISTEN": taken},
                              args=["--listen", "127.0.0.1:0"])
        self.addCleanup(self.stop_gateway, gw2)
        self.assertEqual(bgw_e2e.http_request(gw2.port, "GET", "/healthz").status, 200)
        # Without either, the taken address is a clear start-up failure.
        path = os.path.join(self.workdir, "taken.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(config, f)
        env = dict(os.environ, AWS_ACCESS_KEY_ID=GATEWAY_KEY, AWS_SECRET_ACCESS_KEY=GATEWAY_SECRET)
        failed = self.run_binary("--config", path, env=env)
        self.assertEqual(failed.returncode, 2, failed)
        self.assertIn("cannot listen on " + taken, failed.stdout + failed.stderr)
        bad = self.run_binary("--config", path, "--listen", "8080", env=env)
        self.assertEqual(bad.returncode, 2)
        self.assertIn("--listen: must be host:port", bad.stderr)

    def test_check_config_names_the_bad_key_and_why(self):
        cases = {
            "{": "not valid JSON",
            '{"listen": 8080}': "listen: must be a string",
            '{"upstream": {"connect_timeout_ms": "3s"}}': "upstream.connect_timeout_ms",
            '{"regoins": {}}': "regoins: unknown key",
            '{"regions": {"us-east-1": {}}, "default_region": "eu-west-1"}': "default_region",
            '{"prices": {"m": {"input_per_1k": -1}}}': "prices.m.input_per_1k",
            '{"log_format": "xml"}': "log_format: must be json or text",
        }
        for text, expect in cases.items():
            path = os.path.join(self.workdir, "broken.json")
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
            got = self.run_binary("--check-config", path)
            self.assertEqual(got.returncode, 2, (text, got))
            self.assertIn(expect, got.stderr, text)
        missing = self.run_binary("--check-config", os.path.join(self.workdir, "absent.json"))
        self.assertEqual(missing.returncode, 2)
        self.assertIn("cannot read config file", missing.stderr)
        root = os.path.join(os.path.dirname(__file__), "..", "..")
        # Every config the repository ships: the default, the fleet example (issue 20), and the
        # one inside the Kubernetes example's ConfigMap.
        shipped = [os.path.join(root, "config", "gateway.json"),
                   os.path.join(root, "docker", "gateway.json"),
                   os.path.join(root, "docker", "gateway.fleet.json")]
        with open(os.path.join(root, "docker", "k8s-sidecar.yaml"), encoding="utf-8") as f:
            maps = [d for d in yaml.safe_load_all(f) if d and d.get("kind") == "ConfigMap"]
        embedded = [m["data"]["gateway.json"] for m in maps if "gateway.json" in m.get("data", {})]
        self.assertEqual(len(embedded), 1)
        k8s = os.path.join(self.workdir, "k8s-gateway.json")
        with open(k8s, "w", encoding="utf-8") as f:
            f.write(embedded[0])
        for path in shipped + [k8s]:
            good = self.run_binary("--check-config", path)
            self.assertEqual(good.returncode, 0, (path, good))
        version = self.run_binary("--version")
        self.assertEqual(version.returncode, 0)
        self.assertRegex(version.stdout, r"^bedrock-gateway \d+\.\d+\.\d+\n$")
        usage = self.run_binary("--help")
        self.assertEqual(usage.returncode, 0)
        for flag in ("--listen", "--log-level", "--log-format", "--check-config", "--probe",
                     "BEDROCK_GATEWAY_LISTEN"):
            self.assertIn(flag, usage.stdout)
        self.assertEqual(self.run_binary("--no-such-flag").returncode, 2)

    def test_probe_is_a_health_check_without_curl(self):
        gw = self.start("probe", keys=False)
        ok = self.run_binary("--probe", "http://127.0.0.1:%d/healthz" % gw.port)
        self.assertEqual(ok.returncode, 0, ok)
        not_ready = self.run_binary("--probe", "http://127.0.0.1:%d/readyz" % gw.port)
        self.assertEqual(not_ready.returncode, 1, not_ready)
        self.assertIn("503", not_ready.stderr)
        closed = bgw_e2e.closed_port()
        self.addCleanup(closed.close)
        refused = self.run_binary("--probe", "http://127.0.0.1:%d/healthz" % closed.getsockname()[1])
        self.assertEqual(refused.returncode, 1)
        self.assertIn("cannot connect", refused.stderr)
        self.assertEqual(self.run_binary("--probe", "https://127.0.0.1/healthz").returncode, 1)

    def test_readme_config_table_names_every_key_the_parser_knows(self):
        # The parser's own lists, from its error for an unknown key in each section.
        probes = {
            "": {"zz": 1},
            "upstream": {"upstream": {"zz": 1}},
            "limits": {"limits": {"zz": 1}},
            "retry": {"retry": {"zz": 1}},
            "batch": {"batch": {"zz": 1}},
            "credentials": {"credentials": {"zz": 1}},
            "auth": {"auth": {"zz": 1}},
            "rate_limits": {"rate_limits": {"m": {"zz": 1}}},
            "routes": {"routes": {"r": {"zz": 1}}},
            "routes.targets": {"routes": {"r": {"targets": [{"zz": 1}]}}},
            "regions": {"regions": {"us-east-1": {"zz": 1}}},
            "prices": {"prices": {"m": {"zz": 1}}},
            "shared_state": {"shared_state": {"zz": 1}},
            "shared_state.redis": {"shared_state": {"redis": {"url": "redis://x", "zz": 1}}},
        }
        readme = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "README.md")
        with open(readme, encoding="utf-8") as f:
            text = f.read()
        section = text[text.index("## Configuration"):text.index("\n## ", text.index(
            "## Configuration") + 5)]
        rows = [line for line in section.splitlines() if line.startswith("| `")]
        self.assertGreater(len(rows), 20)
        path = os.path.join(self.workdir, "probe.json")
        for where, doc in probes.items():
            with open(path, "w", encoding="utf-8") as f:
                json.dump(doc, f)
            got = self.run_binary("--check-config", path)
            self.assertEqual(got.returncode, 2, got)
            known = got.stderr.split("known here: ", 1)[1].rstrip(")\n").split(", ")
            top = where.split(".")[0]
            for key in known:
                if not where:
                    documented = any(row.startswith("| `%s`" % key) or "`%s." % key in row
                                     for row in rows)
                else:
                    # `section.key` anywhere in the table, or the key named in its section's row.
                    own_rows = [row for row in rows if row.startswith("| `%s" % top)]
                    documented = any(("`%s.%s`" % (top, key)) in row or
                                     ("`%s.{r}.%s`" % (top, key)) in row or
                                     ("`%s.%s`" % (where, key)) in row or
                                     ("`%s.%s." % (where, key)) in row for row in rows) or \
                        any(('"%s"' % key) in row or ("`%s`" % key) in row for row in own_rows)
                self.assertTrue(documented, "README's config table lacks %s %r"
                                % (where or "top-level key", key))


if __name__ == "__main__":
    unittest.main()
