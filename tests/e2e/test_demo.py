"""scripts/demo.sh (issue 8): the one-command demo runs, shows its three outcomes, and leaves
nothing behind.

The demo is run as a user would, with BGW_GATEWAY_BINARY / BGW_FAKE_BEDROCK naming the binaries
under test so it never builds. It runs in its own session, so every process it started can be
found afterwards (a process keeps its session id when its parent dies) and none may be left.
Waits are on the demo's output or its exit, each with a deadline.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

import bgw_e2e

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEMO = os.path.join(REPO, "scripts", "demo.sh")
# The demo's own steps take a few seconds; sanitizer builds are several times slower.
DEMO_TIMEOUT_S = 180.0


def session_members(sid):
    """Pids of the live processes in session `sid` (field 6 of /proc/PID/stat)."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name, encoding="utf-8") as f:
                stat = f.read()
        except OSError:
            continue  # gone meanwhile
        # The command name in parentheses may hold spaces; the fields after it are fixed.
        fields = stat[stat.rfind(")") + 2:].split()
        state, session = fields[0], int(fields[3])
        if session == sid and state != "Z":
            pids.append(int(name))
    return pids


def section(output, number):
    """The text of step `number` of 3, from its `[n/3]` heading to the next one."""
    m = re.search(r"^\[%d/3\].*?(?=^\[\d/3\]|^\d+ of \d+ steps)" % number, output,
                  re.MULTILINE | re.DOTALL)
    return m.group(0) if m else ""


class DemoEndToEnd(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.env = dict(os.environ)
        cls.env.update({
            "BGW_GATEWAY_BINARY": bgw_e2e.required_env("BGW_GATEWAY_BINARY"),
            "BGW_FAKE_BEDROCK": bgw_e2e.required_env("BGW_FAKE_BEDROCK"),
            "AWS_DATA_PATH": bgw_e2e.required_env("AWS_DATA_PATH"),
            # The same interpreter (and so the same boto3) as this test.
            "BGW_PYTHON": sys.executable,
        })
        cls.workdir = tempfile.mkdtemp(prefix="bgw-demo-test-")
        cls.addClassCleanup(shutil.rmtree, cls.workdir, ignore_errors=True)
        # A temp dir of our own, to see that the demo removes the one it makes.
        cls.env["TMPDIR"] = cls.workdir

    def start_demo(self):
        proc = subprocess.Popen(["bash", DEMO], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        self.addCleanup(self.reap, proc)
        return proc

    def reap(self, proc):
        """Kills whatever of the demo's session is still alive, so a failing test leaves
        nothing running either."""
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in session_members(proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.stdout.close()

    def assert_nothing_left(self, proc, output):
        # The demo's children are stopped before it exits; allow the kernel a moment to
        # finish tearing down a process that has already exited.
        deadline = time.monotonic() + 5.0
        while session_members(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(session_members(proc.pid), [],
                         "the demo left processes running\n" + output)
        self.assertEqual(os.listdir(self.workdir), [],
                         "the demo left its temporary files\n" + output)

    def test_demo_shows_a_converse_a_stream_and_a_throttle(self):
        proc = self.start_demo()
        try:
            output, _ = proc.communicate(timeout=DEMO_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
            self.fail("demo.sh did not finish within %.0f s\n%s"
                      % (DEMO_TIMEOUT_S, output.decode("utf-8", "replace")))
        output = output.decode("utf-8", "replace")
        self.assertEqual(proc.returncode, 0, output)
        self.assertIn("3 of 3 steps as expected", output)
        self.assertIn("DEMO OK", output)
        self.assertNotIn("NOT AS EXPECTED", output)
        reports = [line for line in output.splitlines()
                   if any(marker in line for marker in bgw_e2e.SANITIZER_MARKERS)]
        self.assertEqual(reports, [], output)

        converse = section(output, 1)
        self.assertRegex(converse, r"-> HTTP 200 .*X-Gateway-Attempts: 1")
        self.assertIn("signature verified: yes", converse)
        self.assertIn('"operation":"Converse"', converse)  # the gateway's log line

        stream = section(output, 2)
        self.assertIn("-> HTTP 200", stream)
        events = re.findall(r"^\s+\+\s*\d+ ms\s+(\w+)", stream, re.MULTILINE)
        self.assertEqual(events[0], "messageStart", stream)
        self.assertIn("contentBlockDelta", events)
        self.assertEqual(events[-2:], ["messageStop", "metadata"], stream)
        self.assertIn('"stream_events":%d' % len(events), stream)

        throttled = section(output, 3)
        self.assertIn("-> HTTP 429  x-amzn-ErrorType: ThrottlingException", throttled)
        retry_after = re.search(r"Retry-After: (\d+)", throttled)
        self.assertIsNotNone(retry_after, throttled)
        self.assertGreaterEqual(int(retry_after.group(1)), 1)
        self.assertIn('"throttle":"upstream"', throttled)

        self.assertIn("gateway stopped cleanly on SIGTERM (exit 0)", output)
        self.assert_nothing_left(proc, output)

    def test_sigterm_mid_demo_stops_everything(self):
        proc = self.start_demo()
        lines = bgw_e2e.LineCollector(proc.stdout, "demo-stdout")
        # Mid-stream: the ConverseStream step takes over a second, event by event.
        started = lines.wait_for(
            lambda ls: True if any(re.search(r"\+\s*\d+ ms\s+messageStart", l) for l in ls)
            else None, DEMO_TIMEOUT_S)
        output = "\n".join(lines.lines())
        self.assertTrue(started, "the demo never reached its stream step\n" + output)
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.fail("demo.sh did not exit within 30 s of SIGTERM\n" + output)
        lines.join(10)
        output = "\n".join(lines.lines())
        self.assertEqual(code, 128 + signal.SIGTERM, output)
        self.assertNotIn("DEMO OK", output)
        self.assert_nothing_left(proc, output)


if __name__ == "__main__":
    unittest.main()
