"""A short soak in the suite (issue 10): scripts/soak.py for 20 s of mixed load (invoke,
converse, both streams, ~10 % throttles, ~1 % streams cut mid-body) through the real gateway
and the fake Bedrock. The script checks every response whole, samples the gateway's RSS and fds,
and scans its log for the secret key, the caller key and the body marker; it exits non-zero on
any of that. `python3 scripts/soak.py --minutes N` is the long run.
"""

import os
import subprocess
import sys
import unittest

import bgw_e2e

SOAK = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))), "scripts", "soak.py")
SECONDS = 20


def sanitized(binary):
    """True for an AddressSanitizer build: its allocator keeps freed memory in a quarantine (up
    to 256 MiB), so RSS there measures the quarantine filling, not leaks; LeakSanitizer checks
    leaks in that build instead."""
    out = subprocess.run(["ldd", binary], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         timeout=30).stdout.decode("utf-8", "replace")
    return "libasan" in out


class ShortSoak(unittest.TestCase):
    def test_short_soak_loses_nothing_and_stays_flat(self):
        gateway = bgw_e2e.required_env("BGW_GATEWAY_BINARY")
        fake = bgw_e2e.required_env("BGW_FAKE_BEDROCK")
        rss_bound = ["--rss-growth-kib", str(512 * 1024)] if sanitized(gateway) else []
        try:
            run = subprocess.run(
                [sys.executable, SOAK, "--seconds", str(SECONDS), "--concurrency", "8",
                 "--gateway", gateway, "--fake", fake] + rss_bound,
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                timeout=SECONDS + 150)
        except subprocess.TimeoutExpired as e:
            self.fail("the soak did not finish in time:\n%s"
                      % (e.stdout or b"").decode("utf-8", "replace"))
        out = run.stdout.decode("utf-8", "replace")
        print(out)  # the figures, for the ctest log
        self.assertEqual(run.returncode, 0, out)
        self.assertIn("SOAK OK", out)
        self.assertIn("none present", out)
        for kind in ("invoke", "converse", "cstream", "istream", "throttle"):
            self.assertRegex(out, r"\n%s +[1-9]" % kind)


if __name__ == "__main__":
    unittest.main()
