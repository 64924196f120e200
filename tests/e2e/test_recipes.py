"""The README's "Point your app at it" recipes, run exactly as written against the real gateway.

Each recipe is a fenced block in README.md preceded by `<!-- recipe: NAME -->`. This file reads
them out of the README and runs them unchanged except for the port (`127.0.0.1:8080` becomes the
test gateway's), so the README and the tests cannot drift apart:

  python  written to a file and run with `python3`
  js      written to a .mjs file beside a link to tests/e2e/js/node_modules and run with `node`
  sh      written to a file and run with `bash -e`, in the same directory

The clients are the ones scripts/install-deps.sh installs (Debian's python3-boto3, awscli and
curl; npm ci in tests/e2e/js for the JavaScript packages): a missing one fails its test. They
are looked up with /usr/bin first, so a developer's pyenv or npm shims cannot stand in for them.

Run by CTest with BGW_GATEWAY_BINARY, BGW_FAKE_BEDROCK and AWS_DATA_PATH (shared botocore models)
set. The fake Bedrock answers only requests signed with the gateway's keys; every test asserts
the client's output (which only the fake can have produced) and, from the fake's request log,
the wire path, a verifying signature by the gateway's key and, for streams, that the stream
reached its end.
"""

import hashlib
import json
import os
import re
import shlex
import shutil
import socket
import ssl
import subprocess
import tempfile
import unittest

import bgw_e2e

HERE = os.path.dirname(os.path.abspath(__file__))
README = os.path.join(HERE, "..", "..", "README.md")
JS_DIR = os.path.join(HERE, "js")
SECTION = "## Point your app at it\n"
README_ENDPOINT = "127.0.0.1:8080"
# The TLS listener's recipes: its address and where the README keeps the certificates.
README_TLS_ENDPOINT = "127.0.0.1:8443"
README_TLS_DIR = "/etc/bedrock-gateway/tls"
# HTTPS_PROXY is the trap for requests that ignore the endpoint; an https:// endpoint on
# loopback (the TLS listener) is reached directly, as it is without a proxy set.
LOOPBACK_NO_PROXY = {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}

GATEWAY_KEY = "AKIDGATEWAYRECIPES"
GATEWAY_SECRET = "recipes-gateway-secret/KEY+0123456789"
APP_KEY = "AKIDAPPRECIPES"
APP_SECRET = "app-secret-the-upstream-never-sees"
APP_TOKEN = "app-session-token-must-not-leak"

MODEL_WIRE = "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/"
FAKE_STREAM_TEXT = "Hello from fake Bedrock"  # the fake's answer when the prompt is a plain string
RECIPE_TIMEOUT_S = 120

# Debian's packages install here (scripts/install-deps.sh); searched before the inherited PATH.
SYSTEM_BIN = "/usr/bin:/bin"

RECIPE = re.compile(r"^<!-- recipe: ([a-z0-9-]+) -->\n```([a-z]+)\n(.*?)^```$", re.M | re.S)
FENCE_OPEN = re.compile(r"^```[a-z]*$", re.M)

# Every recipe the README may hold, and the test that runs it.
TESTED = {
    "boto3": "test_boto3",
    "boto3-env": "test_boto3_env",
    "awscli": "test_awscli",
    "js-sdk": "test_js_sdk",
    "js-sdk-env": "test_js_sdk_env",
    "anthropic-python": "test_anthropic_python_is_the_js_twin",
    "anthropic-js": "test_anthropic_js",
    "anthropic-js-env": "test_anthropic_js_env",
    "curl": "test_curl",
    "claude-code": "test_claude_code",
    "langchain-env": "test_langchain_env",
    "langchain-tls": "test_langchain_tls",
    "tls-cert": "test_tls_cert_and_config",
    "tls-config": "test_tls_cert_and_config",
    "boto3-tls": "test_boto3_tls",
}


def readme_section():
    with open(README, encoding="utf-8") as f:
        text = f.read()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    return text[start:] if end < 0 else text[start:end + 1]


def readme_recipes():
    """{name: (language, code)} for every marked block of the section."""
    recipes = {}
    for name, lang, code in RECIPE.findall(readme_section()):
        if name in recipes:
            raise AssertionError("README has two recipes named %r" % name)
        recipes[name] = (lang, code)
    return recipes


def shell_words(script):
    """The words of a recipe's shell commands, line continuations joined."""
    return shlex.split(script.replace("\\\n", " "), comments=True)


def value_after(words, flag, nth=0):
    """The word after the nth occurrence of `flag`."""
    at = [i for i, w in enumerate(words) if w == flag][nth]
    return words[at + 1]


def json_documents(text):
    """Every JSON value in `text`, in order (the AWS CLI prints one per command, indented)."""
    decoder = json.JSONDecoder()
    docs, at = [], 0
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        if at == len(text):
            return docs
        doc, at = decoder.raw_decode(text, at)
        docs.append(doc)


class ReadmeRecipes(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        gateway_binary = bgw_e2e.required_env("BGW_GATEWAY_BINARY")
        fake_binary = bgw_e2e.required_env("BGW_FAKE_BEDROCK")
        models = bgw_e2e.required_env("AWS_DATA_PATH")
        cls.recipes = readme_recipes()
        cls.workdir = bgw_e2e.class_workdir(cls, "bgw-recipes-")

        # What the README tells owners of pre-Bedrock clients to give them: only
        # bedrock-runtime/2023-09-30/service-2.json under a directory in AWS_DATA_PATH.
        cls.models = os.path.join(cls.workdir, "aws-models")
        service = os.path.join("bedrock-runtime", "2023-09-30", "service-2.json")
        os.makedirs(os.path.dirname(os.path.join(cls.models, service)))
        shutil.copyfile(os.path.join(models, service), os.path.join(cls.models, service))

        # Anything that would leave for a real AWS host over HTTPS (an SDK ignoring the endpoint
        # setting) goes to this bound, never-listening port instead and fails there.
        cls.trap = bgw_e2e.closed_port()
        cls.addClassCleanup(cls.trap.close)

        cls.fake = bgw_e2e.FakeBedrock(fake_binary, GATEWAY_KEY, GATEWAY_SECRET, ["us-east-1"])
        cls.addClassCleanup(cls.fake.stop)
        config = bgw_e2e.base_config({"us-east-1": {"endpoint": cls.fake.endpoint,
                                                    "control_endpoint": cls.fake.endpoint}})
        cls.gateway = bgw_e2e.Gateway(gateway_binary, config, cls.workdir, "gw-recipes",
                                      GATEWAY_KEY, GATEWAY_SECRET)
        cls.addClassCleanup(bgw_e2e.stop_checked, cls.gateway)

    def tearDown(self):
        self.assertEqual(self.gateway.sanitizer_reports(), [], self.gateway.output())
        self.assertTrue(self.gateway.alive(), "gateway died (exit %r)\n%s"
                        % (self.gateway.proc.poll(), self.gateway.output()))

    # --- running a recipe -------------------------------------------------------------------

    def recipe_env(self, app_credentials):
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("AWS_", "ANTHROPIC_")) and not k.lower().endswith("_proxy")}
        env.update({
            "PATH": SYSTEM_BIN + os.pathsep + os.environ.get("PATH", ""),
            "HOME": os.path.join(self.workdir, "home"),
            "AWS_CONFIG_FILE": os.path.join(self.workdir, "no-config"),
            "AWS_SHARED_CREDENTIALS_FILE": os.path.join(self.workdir, "no-credentials"),
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_DATA_PATH": self.models,
            "HTTPS_PROXY": "http://127.0.0.1:%d" % self.trap.getsockname()[1],
            "https_proxy": "http://127.0.0.1:%d" % self.trap.getsockname()[1],
        })
        if app_credentials:
            # The app's own keys, which the upstream must never see.
            env.update({"AWS_ACCESS_KEY_ID": APP_KEY, "AWS_SECRET_ACCESS_KEY": APP_SECRET,
                        "AWS_SESSION_TOKEN": APP_TOKEN})
        return env

    def require_program(self, env, name):
        path = shutil.which(name, path=env["PATH"])
        self.assertIsNotNone(path, "%s is not installed: scripts/install-deps.sh installs it "
                             "(npm ci in tests/e2e/js for the JavaScript packages)" % name)
        return path

    def run_recipe(self, name, app_credentials=False, programs=(), env_extra=None,
                   replacements=None):
        """Runs the README's recipe `name` against the test gateway; returns its stdout.

        `replacements` (README text to what it becomes here) stand in for the gateway's
        address: the TLS recipes name the TLS listener and the certificates' directory."""
        self.assertIn(name, self.recipes, "README.md has no `<!-- recipe: %s -->` block" % name)
        lang, code = self.recipes[name]
        if replacements is None:
            self.assertIn(README_ENDPOINT, code, "recipe %s does not name the gateway" % name)
            code = code.replace(README_ENDPOINT, "127.0.0.1:%d" % self.gateway.port)
        for old, new in (replacements or {}).items():
            self.assertIn(old, code, "recipe %s does not name %s" % (name, old))
            code = code.replace(old, new)

        env = self.recipe_env(app_credentials)
        env.update(env_extra or {})
        for program in programs:
            self.require_program(env, program)
        rundir = tempfile.mkdtemp(prefix=name + "-", dir=self.workdir)
        if "node" in programs:
            # Node resolves imports from the script's directory (or, for code on stdin, the
            # working directory) upwards: give it the packages tests/e2e/js/package.json pins.
            modules = os.path.join(JS_DIR, "node_modules")
            self.assertTrue(os.path.isdir(os.path.join(modules, "@anthropic-ai", "bedrock-sdk")),
                            "run `npm ci` in tests/e2e/js first (scripts/test.sh does)")
            os.symlink(modules, os.path.join(rundir, "node_modules"))
        if lang == "python":
            script, argv = "recipe.py", [self.require_program(env, "python3"), "recipe.py"]
        elif lang == "js":
            script, argv = "recipe.mjs", [self.require_program(env, "node"), "recipe.mjs"]
        elif lang == "sh":
            script, argv = "recipe.sh", [self.require_program(env, "bash"), "-e", "recipe.sh"]
        else:
            self.fail("recipe %s: no runner for ```%s blocks" % (name, lang))
        with open(os.path.join(rundir, script), "w", encoding="utf-8") as f:
            f.write(code)
        run = subprocess.run(argv, cwd=rundir, env=env, stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             timeout=RECIPE_TIMEOUT_S)
        out = run.stdout.decode("utf-8", "replace")
        err = run.stderr.decode("utf-8", "replace")
        self.assertEqual(run.returncode, 0, "recipe %s failed\n--- stdout:\n%s\n--- stderr:\n%s"
                         % (name, out, err))
        return out

    # --- what the upstream saw --------------------------------------------------------------

    def assert_upstream(self, mark, operations):
        """The requests after `mark` are exactly `operations` on the model, in order, each
        signed by the gateway (not the app) and answered 200."""
        seen = self.fake.wait_requests(mark, len(operations))
        self.fake.sync()  # so an extra request cannot hide behind the reader thread
        self.assertEqual(len(self.fake.requests()), mark + len(operations),
                         "unexpected upstream requests: %r" % self.fake.requests()[mark:])
        for req, op in zip(seen, operations):
            self.assertEqual(req["method"], "POST", req)
            self.assertEqual(req["wirePath"], MODEL_WIRE + op, req)
            self.assertEqual(req["auth"], "sigv4", req)
            self.assertTrue(req["signatureOk"], req)
            self.assertEqual(req["accessKeyId"], GATEWAY_KEY, req)
            self.assertEqual((req["service"], req["region"]), ("bedrock", "us-east-1"), req)
            self.assertEqual(req["status"], 200, req)
            self.assertNotIn("x-amz-security-token", req["headers"], req)
        return seen

    def assert_streams_completed(self, seen):
        """Every streaming request in `seen` (from assert_upstream) was streamed to its end: its
        own stream_end line, found by request id, so another test's stream cannot stand in."""
        streams = [r for r in seen if r["wirePath"].endswith("-stream")]
        self.assertTrue(streams, "no streaming request among %r" % seen)
        for req in streams:
            outcome = self.fake.wait_stream_outcome(req["requestId"])
            self.assertTrue(outcome["completed"], outcome)
            self.assertFalse(outcome["peerClosed"], outcome)

    # --- the README itself ------------------------------------------------------------------

    def test_every_block_of_the_section_is_a_tested_recipe(self):
        section = readme_section()
        self.assertEqual(len(FENCE_OPEN.findall(section)) // 2, len(self.recipes),
                         "a code block in %r has no `<!-- recipe: NAME -->` marker"
                         % SECTION.strip())
        self.assertEqual(sorted(self.recipes), sorted(TESTED))
        for name, test in TESTED.items():
            self.assertTrue(callable(getattr(self, test, None)), "%s runs %s" % (test, name))

    # --- Python ----------------------------------------------------------------------------

    def test_boto3(self):
        mark = self.fake.mark()
        out = self.run_recipe("boto3", programs=["python3"])
        self.assertEqual(out, "Hello\nHello\n")
        self.assert_streams_completed(self.assert_upstream(mark, ["converse", "converse-stream"]))

    def test_boto3_env(self):
        # AWS_ENDPOINT_URL_<SERVICE> arrived in botocore 1.31; Debian bookworm ships 1.29, which
        # would ignore it and send the request to AWS (here: to the closed proxy port). So the
        # recipe must send exactly what its JavaScript twin sends, which runs in test_js_sdk_env
        # with the same variable; and on a botocore that reads the variable, it runs as well.
        _, code = self.recipes["boto3-env"]
        twin = self.recipes["js-sdk-env"][1]
        export = "export AWS_ENDPOINT_URL_BEDROCK_RUNTIME=http://%s" % README_ENDPOINT
        self.assertIn(export, code)
        self.assertIn(export, twin)
        python = code.split("<<'EOF'\n", 1)[1].rsplit("EOF", 1)[0]
        compile(python, "README.md recipe boto3-env", "exec")
        model = re.search(r'modelId="([^"]+)"', python).group(1)
        self.assertIn('modelId: "%s"' % model, twin)
        self.assertIn('"content": [{"text": "Hello"}]', python)
        self.assertIn('content: [{ text: "Hello" }]', twin)
        probe = subprocess.run(
            [self.require_program(self.recipe_env(False), "python3"), "-c",
             "import botocore.configprovider as c; "
             "print('ignore_configured_endpoint_urls' in c.BOTOCORE_DEFAUT_SESSION_VARIABLES)"],
            env=self.recipe_env(False), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            timeout=RECIPE_TIMEOUT_S)
        self.assertEqual(probe.returncode, 0, probe.stderr.decode("utf-8", "replace"))
        if probe.stdout.decode().strip() == "True":
            mark = self.fake.mark()
            out = self.run_recipe("boto3-env", app_credentials=True, programs=["python3"])
            self.assertEqual(out, "Hello\n")
            self.assert_upstream(mark, ["converse"])

    def test_anthropic_python_is_the_js_twin(self):
        # The anthropic package comes only from PyPI, out of reach here: the recipe must at least
        # be valid Python, and send what its JavaScript twins (which do run) send.
        _, code = self.recipes["anthropic-python"]
        compile(code, "README.md recipe anthropic-python", "exec")
        self.assertIn('AnthropicBedrock(base_url="http://%s"' % README_ENDPOINT, code)
        self.assertIn("ANTHROPIC_BEDROCK_BASE_URL=http://%s" % README_ENDPOINT, code)
        self.assertIn("stream=True", code)
        model = re.search(r'model="([^"]+)"', code).group(1)
        max_tokens = re.search(r"max_tokens=(\d+)", code).group(1)
        for twin in ("anthropic-js", "anthropic-js-env"):
            js = self.recipes[twin][1]
            self.assertIn('model: "%s"' % model, js, twin)
            self.assertIn("max_tokens: %s" % max_tokens, js, twin)
            self.assertIn('messages: [{ role: "user", content: "Hello" }]', js, twin)
            self.assertIn("stream: true", js, twin)

    # --- AWS CLI ---------------------------------------------------------------------------

    def test_awscli(self):
        mark = self.fake.mark()
        out = self.run_recipe("awscli", programs=["aws"])
        first, _, rest = out.partition("\n")
        self.assertEqual(first, "Hello")
        docs = json_documents(rest)
        # invoke-model prints the response's content type, then `cat` the body the fake wrote.
        self.assertEqual(len(docs), 2, out)
        self.assertEqual(docs[0], {"contentType": "application/json"})
        converse, invoke = self.assert_upstream(mark, ["converse", "invoke"])
        echo = docs[1]
        self.assertEqual(echo["wirePath"], MODEL_WIRE + "invoke")
        self.assertEqual(echo["modelId"], "anthropic.claude-3-5-sonnet-20240620-v1:0")
        self.assertEqual(echo["contentType"], "application/json")
        self.assertEqual(echo["region"], "us-east-1")
        # --cli-binary-format raw-in-base64-out: the --body text went upstream byte for byte.
        body = value_after(shell_words(self.recipes["awscli"][1]), "--body").encode("utf-8")
        self.assertEqual(echo["bodySha256"], hashlib.sha256(body).hexdigest())
        self.assertEqual(invoke["bodySha256"], echo["bodySha256"])
        self.assertEqual(converse["headers"].get("content-type"), "application/json")

    # --- JavaScript ------------------------------------------------------------------------

    def test_js_sdk(self):
        mark = self.fake.mark()
        out = self.run_recipe("js-sdk", programs=["node"])
        self.assertEqual(out, "Hello\nHello\n")
        self.assert_streams_completed(self.assert_upstream(mark, ["converse", "converse-stream"]))

    def test_js_sdk_env(self):
        mark = self.fake.mark()
        out = self.run_recipe("js-sdk-env", app_credentials=True, programs=["node"])
        self.assertEqual(out, "Hello\n")
        self.assert_upstream(mark, ["converse"])

    def test_anthropic_js(self):
        mark = self.fake.mark()
        out = self.run_recipe("anthropic-js", programs=["node"])
        self.assertEqual(out, FAKE_STREAM_TEXT + "\n")
        self.assert_streams_completed(self.assert_upstream(mark, ["invoke-with-response-stream"]))

    def test_anthropic_js_env(self):
        mark = self.fake.mark()
        out = self.run_recipe("anthropic-js-env", app_credentials=True, programs=["node"])
        self.assertEqual(out, FAKE_STREAM_TEXT + "\n")
        self.assert_streams_completed(self.assert_upstream(mark, ["invoke-with-response-stream"]))

    def test_langchain_env(self):
        mark = self.fake.mark()
        out = self.run_recipe("langchain-env", app_credentials=True, programs=["node"])
        self.assertEqual(out, "Hello\nHello\n")
        self.assert_streams_completed(self.assert_upstream(mark, ["converse", "converse-stream"]))

    # --- the TLS listener ------------------------------------------------------------------

    def tls_gateway(self):
        """(gateway, its TLS port, the certificates' directory): the README's tls-cert recipe
        run as written (in a temporary directory), and a gateway with its tls-config section
        serving what it made. Started once, on first use, so that only the TLS recipes fail
        when TLS does not work."""
        cls = type(self)
        if getattr(cls, "tls", None) is None:
            tls_dir = tempfile.mkdtemp(prefix="tls-", dir=self.workdir)
            self.run_recipe("tls-cert", programs=["openssl"],
                            replacements={README_TLS_DIR: tls_dir})
            _, text = self.recipes["tls-config"]
            section = json.loads(text.replace(README_TLS_DIR, tls_dir))
            self.assertEqual(section["listen"], README_ENDPOINT)
            tls = section["tls"]
            self.assertEqual(sorted(tls), ["cert_file", "key_file", "listen"])
            self.assertEqual(tls["listen"], README_TLS_ENDPOINT)
            tls["listen"] = "127.0.0.1:0"
            config = dict(self.gateway.config, tls=tls)
            gw = bgw_e2e.Gateway(self.gateway.argv[0], config, self.workdir, "gw-recipes-tls",
                                 GATEWAY_KEY, GATEWAY_SECRET)
            cls.addClassCleanup(bgw_e2e.stop_checked, gw)
            cls.tls = (gw, bgw_e2e.tls_port(gw), tls_dir)
        return cls.tls

    def tls_replacements(self):
        _, port, tls_dir = self.tls_gateway()
        return {README_TLS_ENDPOINT: "127.0.0.1:%d" % port, README_TLS_DIR: tls_dir}

    def test_tls_cert_and_config(self):
        gw, port, tls_dir = self.tls_gateway()
        # The certificate the commands made is the one served, and it verifies for both names
        # against the CA they made.
        for name in ("127.0.0.1", "localhost"):
            ctx = ssl.create_default_context(cafile=os.path.join(tls_dir, "ca.pem"))
            with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
                with ctx.wrap_socket(raw, server_hostname=name) as sock:
                    served = sock.getpeercert(binary_form=True)
            with open(os.path.join(tls_dir, "cert.pem"), encoding="ascii") as f:
                self.assertEqual(served, ssl.PEM_cert_to_DER_cert(f.read()), name)
        self.assertTrue(gw.alive(), gw.output())

    def test_langchain_tls(self):
        replacements = self.tls_replacements()
        mark = self.fake.mark()
        out = self.run_recipe("langchain-tls", app_credentials=True, programs=["node"],
                              replacements=replacements)
        self.assertEqual(out, "Hello\nHello\n")
        self.assert_streams_completed(self.assert_upstream(mark, ["converse", "converse-stream"]))

    def test_boto3_tls(self):
        replacements = self.tls_replacements()
        mark = self.fake.mark()
        out = self.run_recipe("boto3-tls", programs=["python3"], app_credentials=True,
                              replacements=replacements, env_extra=LOOPBACK_NO_PROXY)
        self.assertEqual(out, "Hello\n")
        self.assert_upstream(mark, ["converse"])
        # And through AWS_CA_BUNDLE instead of verify=, as the recipe's comment says.
        _, code = self.recipes["boto3-tls"]
        self.assertIn('verify="%s/ca.pem"' % README_TLS_DIR, code)
        env_replacements = {'verify="%s/ca.pem"' % README_TLS_DIR: "verify=None",
                            README_TLS_ENDPOINT: replacements[README_TLS_ENDPOINT]}
        mark = self.fake.mark()
        out = self.run_recipe("boto3-tls", programs=["python3"], app_credentials=True,
                              replacements=env_replacements, env_extra=dict(
                                  LOOPBACK_NO_PROXY, AWS_CA_BUNDLE=os.path.join(
                                      replacements[README_TLS_DIR], "ca.pem")))
        self.assertEqual(out, "Hello\n")
        self.assert_upstream(mark, ["converse"])

    # --- curl ------------------------------------------------------------------------------

    def test_curl(self):
        mark = self.fake.mark()
        out = self.run_recipe("curl", programs=["curl"])
        lines = out.splitlines()
        self.assertEqual(len(lines), 2, out)
        converse, invoke = (json.loads(line) for line in lines)
        self.assertEqual(converse["output"]["message"]["content"][0]["text"], "Hello")
        self.assertEqual(converse["stopReason"], "end_turn")
        seen = self.assert_upstream(mark, ["converse", "invoke"])
        # The raw ':' in the URL went upstream as %3A, and each body byte for byte.
        words = shell_words(self.recipes["curl"][1])
        for nth, req in enumerate(seen):
            body = value_after(words, "-d", nth).encode("utf-8")
            self.assertEqual(req["bodySha256"], hashlib.sha256(body).hexdigest(), req)
            self.assertEqual(req["headers"].get("content-type"), "application/json", req)
        self.assertEqual(invoke["wirePath"], MODEL_WIRE + "invoke")
        self.assertEqual(invoke["bodySha256"], seen[1]["bodySha256"])

    # --- Claude Code -----------------------------------------------------------------------

    def test_claude_code(self):
        # The npm package pinned in tests/e2e/js; nothing leaves the machine (non-essential
        # traffic off, HTTPS to the trap port, a temporary HOME).
        bin_dir = os.path.join(JS_DIR, "node_modules", ".bin")
        self.assertTrue(os.path.exists(os.path.join(bin_dir, "claude")),
                        "run `npm ci` in tests/e2e/js first (scripts/test.sh does)")
        home = tempfile.mkdtemp(prefix="claude-home-", dir=self.workdir)
        mark = self.fake.mark()
        out = self.run_recipe("claude-code", programs=["claude"], env_extra={
            "PATH": SYSTEM_BIN + os.pathsep + bin_dir + os.pathsep + os.environ.get("PATH", ""),
            "HOME": home,
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            # Claude Code sends even an http:// base URL through HTTPS_PROXY (the trap): the
            # gateway on loopback is reached directly, anything else still meets the trap.
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
            "DISABLE_AUTOUPDATER": "1",
        })
        self.assertTrue(out.strip(), "Claude Code printed no answer")
        self.fake.sync()
        seen = self.fake.requests()[mark:]
        # Its control-plane call reached the control plane, signed for bedrock by the gateway.
        profiles = [r for r in seen if r["wirePath"] == "/inference-profiles"]
        self.assertTrue(profiles, "Claude Code listed no inference profiles: %r" % seen)
        turns = [r for r in seen if r["wirePath"].startswith("/model/")]
        self.assertTrue(turns, "Claude Code's turn never reached upstream: %r" % seen)
        for req in profiles + turns:
            self.assertTrue(req["signatureOk"], req)
            self.assertEqual(req["accessKeyId"], GATEWAY_KEY, req)
            self.assertEqual(req["status"], 200, req)
        self.assertTrue(any(r["wirePath"].endswith("/invoke-with-response-stream")
                            for r in turns), turns)
        # No request of the turn was refused by the gateway itself (the 404 it used to give).
        logs = [e for e in self.gateway.request_logs() if e.get("status") == 404]
        self.assertEqual(logs, [])


if __name__ == "__main__":
    unittest.main()
