"""The client half of scripts/demo.sh: real boto3 against a running gateway.

Three steps, each printed with what the app got (status, X-Gateway-* headers), what the fake
Bedrock upstream saw (and whether the gateway's SigV4 signature verified there), and the
gateway's own log line for the request:

1. Converse: a 200 with the answer.
2. ConverseStream: the events printed as they arrive (the fake pauses before each one, so a
   gateway that buffered would show them all at once at the end).
3. Converse on a model the fake always throttles: after its own retries the gateway answers
   with its uniform 429 ThrottlingException, Retry-After included.

Exits 0 when all three behaved as expected, 1 otherwise. The app side is unsigned: the gateway
signs with its own credentials, so the app needs none.
"""

import argparse
import json
import sys
import time

try:
    import boto3
    import botocore
    from botocore import UNSIGNED
    from botocore.config import Config
    from botocore.exceptions import ClientError, UnknownServiceError
except ImportError as missing:
    sys.exit("demo: %s; install boto3 (Debian: python3-boto3, in scripts/install-deps.sh all)"
             % missing)

REGION = "us-east-1"
MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
# The fake's scripted model ids (tests/fakes/fake_bedrock.hpp): a pause before each streamed
# event, and a 429 ThrottlingException for every request.
STREAM_PAUSE_MS = 150
STREAM_MODEL = "fake-delay-%d" % STREAM_PAUSE_MS
THROTTLED_MODEL = "fake-error-429-ThrottlingException"
LOG_WAIT_S = 10.0  # the gateway writes a request's log line just after the response


def client(gateway_url):
    # total_max_attempts=1: every retry in the output is the gateway's, none is boto3's.
    return boto3.client(
        "bedrock-runtime", region_name=REGION, endpoint_url=gateway_url,
        config=Config(signature_version=UNSIGNED, retries={"total_max_attempts": 1},
                      connect_timeout=5, read_timeout=60))


def messages(text):
    return [{"role": "user", "content": [{"text": text}]}]


def json_objects(path):
    """(raw line, object) for each line of a log that carries a JSON object, from its first
    '{' on, so a line that puts a time and level before its object counts too."""
    out = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            at = line.find("{")
            if at < 0:
                continue
            try:
                obj = json.loads(line[at:])
            except ValueError:
                continue
            if isinstance(obj, dict):
                out.append((line.rstrip("\n"), obj))
    return out


def request_entry(obj):
    """The gateway's request record in a log object, at the top level or one level down."""
    if obj.get("event") == "request":
        return obj
    for value in obj.values():
        if isinstance(value, dict) and value.get("event") == "request":
            return value
    return None


def gateway_log_line(path, request_id, operation, model):
    """The gateway's log line for a request: the one naming the upstream's request id, else the
    one for this operation and model (each step's pair is its own). Polls the log with a
    deadline: the line may still be on its way when the client has the answer."""
    deadline = time.monotonic() + LOG_WAIT_S
    while True:
        for raw, obj in json_objects(path):
            entry = request_entry(obj)
            if entry and request_id in (entry.get("upstream_request_id"), entry.get("id")):
                return raw, entry
        for raw, obj in json_objects(path):
            entry = request_entry(obj)
            if entry and (entry.get("operation"), entry.get("model")) == (operation, model):
                return raw, entry
        if time.monotonic() >= deadline:
            return None, None
        time.sleep(0.05)


def upstream_requests(path, request_id=None, model=None):
    """What the fake saw: its request lines, by the request id it answered with or by model."""
    out = []
    for _, obj in json_objects(path):
        if "wirePath" not in obj:
            continue
        if request_id is not None and obj.get("requestId") == request_id:
            out.append(obj)
        elif model is not None and "/model/%s/" % model in obj["wirePath"]:
            out.append(obj)
    return out


def gateway_headers(headers):
    return "  ".join("%s: %s" % (name, headers[name.lower()])
                     for name in ("X-Gateway-Region", "X-Gateway-Tier", "X-Gateway-Attempts")
                     if name.lower() in headers)


class Step:
    """Collects what one step printed and whether each expectation held."""

    def __init__(self, number, title):
        self.failures = []
        print("\n[%d/3] %s" % (number, title))

    def say(self, text):
        print("      " + text)

    def expect(self, ok, what):
        if not ok:
            self.failures.append(what)
            print("      EXPECTED: " + what)

    def show_upstream(self, seen):
        # Identical requests (the throttled step's retries) on one line, with a count.
        lines = []
        for req in seen:
            line = "%s %s  SigV4 by %s, signature verified: %s" % (
                req["method"], req["wirePath"], req["accessKeyId"] or "(nobody)",
                "yes" if req["signatureOk"] else "NO")
            if lines and lines[-1][0] == line:
                lines[-1][1] += 1
            else:
                lines.append([line, 1])
        for line, count in lines:
            self.say("upstream saw: %s%s" % ("%d x " % count if count > 1 else "", line))
        self.expect(seen and all(r["signatureOk"] for r in seen),
                    "the fake verifies the gateway's signature on every upstream request")

    def show_log(self, raw):
        self.expect(raw is not None, "a gateway log line for the request")
        if raw is not None:
            self.say("gateway log: " + raw)

    def done(self):
        print("      => " + ("OK" if not self.failures else "NOT AS EXPECTED"))
        return not self.failures


def step_converse(args):
    step = Step(1, "Converse through the gateway (boto3, unsigned, endpoint_url = gateway)")
    text = "Hello through bedrock-gateway"
    out = client(args.gateway).converse(modelId=MODEL, messages=messages(text))
    meta = out["ResponseMetadata"]
    headers = meta["HTTPHeaders"]
    answer = "".join(block.get("text", "") for block in out["output"]["message"]["content"])
    step.say("-> HTTP %d  %s" % (meta["HTTPStatusCode"], gateway_headers(headers)))
    step.say("answer: %r  usage: %s" % (answer, json.dumps(out.get("usage"))))
    step.expect(meta["HTTPStatusCode"] == 200, "HTTP 200")
    step.expect(answer == text, "the fake's answer (it echoes the prompt)")
    step.expect(headers.get("x-gateway-attempts") == "1", "X-Gateway-Attempts: 1")
    step.show_upstream(upstream_requests(args.fake_log, request_id=meta["RequestId"]))
    raw, entry = gateway_log_line(args.gateway_log, meta["RequestId"], "Converse", MODEL)
    step.show_log(raw)
    step.expect(entry is None or entry.get("status") == 200, "status 200 in the log line")
    return step.done()


def step_converse_stream(args):
    step = Step(2, "ConverseStream: the events printed as they arrive (the fake pauses %d ms "
                   "before each)" % STREAM_PAUSE_MS)
    started = time.monotonic()
    out = client(args.gateway).converse_stream(
        modelId=STREAM_MODEL, messages=messages("Streams arrive frame by frame"))
    meta = out["ResponseMetadata"]
    step.say("-> HTTP %d  %s  (status line and headers after %.0f ms)" % (
        meta["HTTPStatusCode"], gateway_headers(meta["HTTPHeaders"]),
        (time.monotonic() - started) * 1000))
    names = []
    arrivals = []
    for event in out["stream"]:
        arrivals.append(time.monotonic())
        name, body = next(iter(event.items()))
        names.append(name)
        step.say("+%5.0f ms  %-18s %s" % ((arrivals[-1] - started) * 1000, name,
                                           json.dumps(body)))
    step.expect(meta["HTTPStatusCode"] == 200, "HTTP 200")
    step.expect(names[:1] == ["messageStart"] and "contentBlockDelta" in names and
                names[-2:] == ["messageStop", "metadata"],
                "messageStart, contentBlockDelta..., messageStop, metadata")
    # Spread out as the fake sent them: a buffering relay would deliver them all at the end.
    spread = arrivals[-1] - arrivals[0] if arrivals else 0.0
    step.expect(spread >= 0.5 * STREAM_PAUSE_MS / 1000 * (len(arrivals) - 1),
                "events arriving one by one, not bunched at the end")
    step.show_upstream(upstream_requests(args.fake_log, request_id=meta["RequestId"]))
    raw, entry = gateway_log_line(args.gateway_log, meta["RequestId"], "ConverseStream",
                                  STREAM_MODEL)
    step.show_log(raw)
    step.expect(entry is None or entry.get("stream_events") == len(names),
                "stream_events in the log line equal to the events received (%d)" % len(names))
    return step.done()


def step_throttled(args):
    step = Step(3, "Converse on a model the fake always throttles (%s)" % THROTTLED_MODEL)
    try:
        client(args.gateway).converse(modelId=THROTTLED_MODEL, messages=messages("Hello"))
        step.expect(False, "a ThrottlingException")
        return step.done()
    except ClientError as e:
        response = e.response
    meta = response["ResponseMetadata"]
    headers = meta["HTTPHeaders"]
    step.say("-> HTTP %d  x-amzn-ErrorType: %s  (boto3 raised %s)" % (
        meta["HTTPStatusCode"], headers.get("x-amzn-errortype"), response["Error"]["Code"]))
    step.say("Retry-After: %s  x-amz-retry-after: %s  %s" % (
        headers.get("retry-after"), headers.get("x-amz-retry-after"), gateway_headers(headers)))
    step.say("message: %s" % response["Error"].get("Message"))
    step.expect(meta["HTTPStatusCode"] == 429, "HTTP 429")
    step.expect(response["Error"]["Code"] == "ThrottlingException", "ThrottlingException")
    retry_after = headers.get("retry-after", "")
    step.expect(retry_after.isdigit() and int(retry_after) >= 1,
                "Retry-After in whole seconds, at least 1")
    seen = upstream_requests(args.fake_log, model=THROTTLED_MODEL)
    attempts = headers.get("x-gateway-attempts")
    step.say("the gateway asked upstream %d time(s), backing off between attempts, then gave "
             "the app one 429" % len(seen))
    step.expect(attempts is not None and str(len(seen)) == attempts,
                "X-Gateway-Attempts equal to the upstream requests")
    step.show_upstream(seen)
    raw, entry = gateway_log_line(args.gateway_log, meta["RequestId"], "Converse",
                                  THROTTLED_MODEL)
    step.show_log(raw)
    step.expect(entry is None or (entry.get("status") == 429 and
                                  entry.get("throttle") == "upstream"),
                "status 429 and throttle \"upstream\" in the log line")
    return step.done()


def has_converse(gateway_url):
    """Older botocore (Debian bookworm's 1.29) knows no bedrock-runtime, or no Converse."""
    try:
        return "converse" in client(gateway_url).meta.method_to_api_mapping
    except UnknownServiceError:
        return False


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateway", required=True, help="the gateway's URL")
    parser.add_argument("--gateway-log", required=True, help="file the gateway logs to")
    parser.add_argument("--fake-log", required=True, help="file the fake Bedrock logs to")
    args = parser.parse_args()

    if not has_converse(args.gateway):
        print("demo: this botocore (%s) has no Bedrock Converse API; point AWS_DATA_PATH at "
              "newer service models (the tests use tests/reference/botocore-models)"
              % botocore.__version__, file=sys.stderr)
        return 2

    results = []
    for step in (step_converse, step_converse_stream, step_throttled):
        try:
            results.append(step(args))
        except Exception as e:  # one broken step must not hide the others
            print("      => FAILED: %s: %s" % (type(e).__name__, e))
            results.append(False)
    print("\n%d of %d steps as expected" % (sum(results), len(results)))
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
