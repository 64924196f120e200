// The AWS SDK for JavaScript v3 at its defaults through bedrock-gateway (issue 19): the app
// changes nothing but the endpoint. BedrockRuntimeClient's default handler is NodeHttp2Handler,
// which speaks only HTTP/2 (cleartext with prior knowledge for an http:// endpoint), so every
// answer here travelled over the gateway's HTTP/2 front door. Started by ../test_js_sdk.py, which
// runs the fake Bedrock and the gateway, passes BGW_GATEWAY_URL and afterwards checks that the
// fake saw every request signed with the gateway's key.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { test } from "node:test";

import {
  BedrockRuntimeClient,
  ConverseCommand,
  ConverseStreamCommand,
  InvokeModelCommand,
  InvokeModelWithResponseStreamCommand,
  ThrottlingException,
} from "@aws-sdk/client-bedrock-runtime";
import { NodeHttp2Handler } from "@smithy/node-http-handler";

const endpoint = process.env.BGW_GATEWAY_URL;
assert.ok(endpoint, "BGW_GATEWAY_URL must be set (test_js_sdk.py does)");

// The app's own keys, unrelated to the gateway's: the fake only accepts the gateway's signature.
const credentials = { accessKeyId: "AKIDJSAPP", secretAccessKey: "js-app-secret", sessionToken: "js-app-token" };

// Exactly what a user writes: no requestHandler, no maxAttempts (the SDK's 3 attempts).
function defaultClient(region = "us-east-1") {
  return new BedrockRuntimeClient({ region, endpoint, credentials });
}

// HTTP/2 forbids connection-specific header fields (RFC 9113 section 8.2.2); Node's http2 client
// would already refuse a response carrying one, this names the rule the gateway must follow.
const CONNECTION_SPECIFIC = ["connection", "transfer-encoding", "keep-alive", "proxy-connection", "upgrade"];

// Records each attempt's raw response: the deserialize step runs once per attempt, inside the
// SDK's retry loop.
function recordResponses(client) {
  const seen = [];
  client.middlewareStack.add(
    (next) => async (args) => {
      try {
        const out = await next(args);
        seen.push({ status: out.response.statusCode, headers: out.response.headers });
        return out;
      } catch (err) {
        if (err.$response) seen.push({ status: err.$response.statusCode, headers: err.$response.headers });
        throw err;
      }
    },
    { step: "deserialize", name: "bgwRecordResponses" },
  );
  return seen;
}

function assertHttp2Headers(headers) {
  for (const name of Object.keys(headers)) {
    assert.equal(name, name.toLowerCase(), `HTTP/2 header names are lowercase: ${name}`);
    assert.ok(!CONNECTION_SPECIFIC.includes(name), `connection-specific header ${name} over HTTP/2`);
  }
}

const decode = (bytes) => JSON.parse(new TextDecoder().decode(bytes));

test("the client's default request handler is the SDK's HTTP/2 one", () => {
  const client = defaultClient();
  // The premise of every other test in this file: nothing here picks HTTP/1.1.
  assert.ok(client.config.requestHandler instanceof NodeHttp2Handler, String(client.config.requestHandler));
  client.destroy();
});

test("Converse at the SDK's defaults", async () => {
  const client = defaultClient("eu-west-1");
  const seen = recordResponses(client);
  const text = "héllo over h2 — 日本語 🚀";
  const out = await client.send(
    new ConverseCommand({ modelId: "amazon.nova-lite-v1:0", messages: [{ role: "user", content: [{ text }] }] }),
  );
  assert.equal(out.$metadata.httpStatusCode, 200);
  assert.equal(out.$metadata.attempts, 1);
  assert.equal(out.output.message.content[0].text, text);
  assert.equal(out.stopReason, "end_turn");
  assert.ok(out.usage.inputTokens > 0);
  assert.equal(seen.length, 1);
  assertHttp2Headers(seen[0].headers);
  assert.equal(seen[0].headers["x-gateway-region"], "eu-west-1");
  assert.ok(seen[0].headers["x-amzn-requestid"], JSON.stringify(seen[0].headers));
  client.destroy();
});

test("ConverseStream at the SDK's defaults: every event, the text and the usage", async () => {
  const client = defaultClient();
  const seen = recordResponses(client);
  const text = "stream me over h2 — ünïcode ✓ with several words to split";
  const out = await client.send(
    new ConverseStreamCommand({ modelId: "amazon.nova-lite-v1:0", messages: [{ role: "user", content: [{ text }] }] }),
  );
  assert.equal(out.$metadata.httpStatusCode, 200);
  assert.match(seen[0].headers["content-type"], /application\/vnd\.amazon\.eventstream/);
  assertHttp2Headers(seen[0].headers);
  const kinds = [];
  let streamed = "";
  let usage;
  let metrics;
  for await (const event of out.stream) {
    const kind = Object.keys(event).find((k) => event[k] !== undefined);
    kinds.push(kind);
    if (kind === "contentBlockDelta") streamed += event.contentBlockDelta.delta.text;
    if (kind === "metadata") ({ usage, metrics } = event.metadata);
  }
  assert.equal(kinds[0], "messageStart");
  assert.ok(kinds.filter((k) => k === "contentBlockDelta").length > 1, kinds.join(","));
  assert.deepEqual(kinds.slice(-3), ["contentBlockStop", "messageStop", "metadata"]);
  assert.equal(streamed, text);
  assert.ok(usage.inputTokens > 0 && usage.outputTokens > 0, JSON.stringify(usage));
  assert.equal(usage.totalTokens, usage.inputTokens + usage.outputTokens);
  assert.ok(metrics === undefined || metrics.latencyMs >= 0);
  client.destroy();
});

test("InvokeModel at the SDK's defaults", async () => {
  const client = defaultClient("eu-west-1");
  const body = JSON.stringify({ inputText: "hello over h2" });
  const out = await client.send(
    new InvokeModelCommand({
      modelId: "anthropic.claude-3-5-sonnet-20240620-v1:0",
      contentType: "application/json",
      accept: "application/json",
      body,
    }),
  );
  const echo = decode(out.body);
  assert.equal(echo.modelId, "anthropic.claude-3-5-sonnet-20240620-v1:0");
  assert.equal(echo.wirePath, "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/invoke");
  assert.equal(echo.region, "eu-west-1");
  assert.equal(echo.bodyLength, Buffer.byteLength(body));
  client.destroy();
});

test("InvokeModel at the SDK's defaults with a 1 MiB body (request flow control)", async () => {
  // Larger than HTTP/2's 64 KiB initial windows: the upload moves only as the gateway opens them.
  const client = defaultClient();
  const body = JSON.stringify({ inputText: "y".repeat(1024 * 1024) });
  const out = await client.send(new InvokeModelCommand({ modelId: "amazon.titan-text-express-v1", body }));
  const echo = decode(out.body);
  assert.equal(echo.bodyLength, Buffer.byteLength(body));
  client.destroy();
});

test("InvokeModelWithResponseStream at the SDK's defaults", async () => {
  const client = defaultClient();
  const out = await client.send(
    new InvokeModelWithResponseStreamCommand({
      modelId: "anthropic.claude-3-haiku-20240307-v1:0",
      body: JSON.stringify({ messages: [] }),
    }),
  );
  const chunks = [];
  for await (const event of out.body) chunks.push(decode(event.chunk.bytes));
  assert.ok(chunks.length > 2, JSON.stringify(chunks));
  assert.equal(chunks[0].type, "message_start");
  assert.ok(chunks.at(-1)["amazon-bedrock-invocationMetrics"].outputTokenCount > 0);
  client.destroy();
});

test("concurrent requests from one default client all succeed", async () => {
  const client = defaultClient();
  const texts = Array.from({ length: 8 }, (_, i) => `parallel ${i}`);
  const outs = await Promise.all(
    texts.map((text) =>
      client.send(new ConverseCommand({ modelId: "amazon.nova-lite-v1:0", messages: [{ role: "user", content: [{ text }] }] })),
    ),
  );
  assert.deepEqual(
    outs.map((o) => o.output.message.content[0].text),
    texts,
  );
  client.destroy();
});

test("an always-throttled model: ThrottlingException with the gateway's 429, after the SDK's own retries", async () => {
  // The fake throttles this model id on every request (a fresh id: no count from another test).
  const modelId = `fake-flaky-1000-429-ThrottlingException-h2js${randomUUID().slice(0, 8)}`;
  const client = defaultClient();
  const seen = recordResponses(client);
  const err = await client.send(new InvokeModelCommand({ modelId, body: "{}" })).then(
    () => assert.fail("a model the fake always throttles answered 200"),
    (e) => e,
  );
  // What the app sees: the modeled exception, status 429, after the SDK's default 3 attempts.
  assert.ok(err instanceof ThrottlingException, `${err.name}: ${err.message}`);
  assert.equal(err.name, "ThrottlingException");
  assert.equal(err.$metadata.httpStatusCode, 429);
  assert.equal(err.$metadata.attempts, 3);
  assert.equal(seen.length, 3, JSON.stringify(seen));
  for (const { status, headers } of seen) {
    assert.equal(status, 429);
    assertHttp2Headers(headers);
    assert.match(headers["x-amzn-errortype"], /^ThrottlingException/);
    // The gateway says when to come back, in the header the SDK's retry strategy reads.
    assert.ok(Number(headers["retry-after"]) >= 1, JSON.stringify(headers));
    assert.ok(Number(headers["x-gateway-attempts"]) >= 1, JSON.stringify(headers));
  }
  client.destroy();
});

test("a model throttled once: the app just gets its answer", async () => {
  const modelId = `fake-flaky-1-429-ThrottlingException-h2js${randomUUID().slice(0, 8)}`;
  const client = defaultClient();
  const out = await client.send(new InvokeModelCommand({ modelId, body: "{}" }));
  assert.equal(out.$metadata.httpStatusCode, 200);
  assert.equal(decode(out.body).modelId, modelId);
  client.destroy();
});

// Runs endpoint_from_env.mjs in a fresh process whose only pointer to the gateway is
// AWS_ENDPOINT_URL_BEDROCK_RUNTIME, as an app deployed with that variable.
function runWithEndpointFromEnv() {
  const env = { ...process.env, AWS_ENDPOINT_URL_BEDROCK_RUNTIME: endpoint };
  delete env.BGW_GATEWAY_URL;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["endpoint_from_env.mjs"], {
      cwd: new URL(".", import.meta.url),
      env,
      stdio: ["ignore", "pipe", "pipe"],
      timeout: 60_000,
    });
    let out = "";
    let errText = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (errText += d));
    child.on("error", reject);
    child.on("close", (code, signal) => resolve({ code, signal, out, err: errText }));
  });
}

test("the endpoint from AWS_ENDPOINT_URL_BEDROCK_RUNTIME alone, no endpoint in code", async () => {
  const run = await runWithEndpointFromEnv();
  assert.equal(run.code, 0, `exit ${run.code} ${run.signal ?? ""}\n${run.out}\n${run.err}`);
  const result = JSON.parse(run.out.trim().split("\n").at(-1));
  assert.equal(result.handler, "NodeHttp2Handler");
  assert.equal(result.status, 200);
  assert.equal(result.text, "from the environment");
  assert.equal(result.streamed, "streamed from the environment");
  assert.equal(result.gatewayRegion, "us-east-1");
});
