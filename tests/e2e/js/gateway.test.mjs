// The AWS SDK for JavaScript v3 through bedrock-gateway over HTTP/1.1, with the SDK's own
// NodeHttpHandler: apps that pick it keep working now that the SDK's default (HTTP/2) does too
// (default_handler.test.mjs). Started by ../test_js_sdk.py, which
// runs the fake Bedrock and the gateway and passes BGW_GATEWAY_URL. The fake answers 403 to any
// request whose SigV4 signature does not verify with the *gateway's* key, and echoes what it
// received (wire path, region, body hash), so a 200 here proves the re-signing.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { test } from "node:test";

import {
  BedrockRuntimeClient,
  ConverseCommand,
  ConverseStreamCommand,
  InvokeModelCommand,
  InvokeModelWithResponseStreamCommand,
  ValidationException,
  ThrottlingException,
} from "@aws-sdk/client-bedrock-runtime";
import { NodeHttpHandler } from "@smithy/node-http-handler";

const endpoint = process.env.BGW_GATEWAY_URL;
assert.ok(endpoint, "BGW_GATEWAY_URL must be set (test_js_sdk.py does)");

function client(region) {
  // The app signs with its own, unrelated keys: the gateway must drop that signature.
  // BedrockRuntimeClient defaults to HTTP/2 (NodeHttp2Handler); this app chooses HTTP/1.1.
  return new BedrockRuntimeClient({
    region,
    endpoint,
    requestHandler: new NodeHttpHandler(),
    maxAttempts: 1,
    credentials: { accessKeyId: "AKIDJSAPP", secretAccessKey: "js-app-secret", sessionToken: "js-app-token" },
  });
}

const decode = (bytes) => JSON.parse(new TextDecoder().decode(bytes));

test("InvokeModel with a ':' model id, signed for a configured region", async () => {
  const body = JSON.stringify({ inputText: "hello" });
  const out = await client("eu-west-1").send(
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
  assert.equal(echo.bodySha256, createHash("sha256").update(body).digest("hex"));
});

test("InvokeModel with a provisioned-model ARN and a 1 MiB body, region outside the allow-list", async () => {
  const arn = "arn:aws:bedrock:us-east-1:123456789012:provisioned-model/abcdefghijkl";
  const body = JSON.stringify({ inputText: "x".repeat(1024 * 1024) });
  const out = await client("ap-south-1").send(
    new InvokeModelCommand({ modelId: arn, contentType: "application/json", body }),
  );
  const echo = decode(out.body);
  assert.equal(echo.modelId, arn);
  assert.equal(
    echo.wirePath,
    "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Aprovisioned-model%2Fabcdefghijkl/invoke",
  );
  assert.equal(echo.region, "us-east-1", "unconfigured app region falls back to default_region");
  assert.equal(echo.bodyLength, Buffer.byteLength(body));
  assert.equal(echo.bodySha256, createHash("sha256").update(body).digest("hex"));
});

test("Converse round-trips non-ASCII text", async () => {
  const text = "héllo wörld — 日本語 🚀";
  const out = await client("us-east-1").send(
    new ConverseCommand({
      modelId: "amazon.nova-lite-v1:0",
      messages: [{ role: "user", content: [{ text }] }],
    }),
  );
  assert.equal(out.output.message.content[0].text, text);
  assert.equal(out.stopReason, "end_turn");
  assert.ok(out.usage.inputTokens > 0);
});

test("upstream errors reach the SDK as its modeled exceptions", async () => {
  const c = client("us-east-1");
  await assert.rejects(
    c.send(new InvokeModelCommand({ modelId: "fake-error-400-ValidationException", body: "{}" })),
    (err) => err instanceof ValidationException && err.$metadata.httpStatusCode === 400,
  );
  await assert.rejects(
    c.send(new InvokeModelCommand({ modelId: "fake-error-429-ThrottlingException", body: "{}" })),
    (err) => err instanceof ThrottlingException && err.$metadata.httpStatusCode === 429,
  );
});

test("ConverseStream events arrive in order, with the text and usage", async () => {
  const text = "stream me — ünïcode ✓ please";
  const out = await client("us-east-1").send(
    new ConverseStreamCommand({
      modelId: "amazon.nova-lite-v1:0",
      messages: [{ role: "user", content: [{ text }] }],
    }),
  );
  const kinds = [];
  let streamed = "";
  let usage;
  for await (const event of out.stream) {
    const kind = Object.keys(event).find((k) => event[k] !== undefined);
    kinds.push(kind);
    if (kind === "contentBlockDelta") streamed += event.contentBlockDelta.delta.text;
    if (kind === "metadata") usage = event.metadata.usage;
  }
  assert.equal(kinds[0], "messageStart");
  assert.deepEqual(kinds.slice(-3), ["contentBlockStop", "messageStop", "metadata"]);
  assert.equal(streamed, text);
  assert.ok(usage.inputTokens > 0 && usage.outputTokens > 0);
});

test("a mid-stream exception is raised by the SDK as its modeled exception", async () => {
  const out = await client("us-east-1").send(
    new ConverseStreamCommand({
      modelId: "fake-stream-exception-throttlingException",
      messages: [{ role: "user", content: [{ text: "a b c" }] }],
    }),
  );
  let received = 0;
  await assert.rejects(
    (async () => {
      for await (const _event of out.stream) received += 1;
    })(),
    (err) => err instanceof ThrottlingException && /mid-stream/.test(err.message),
  );
  assert.equal(received, 2);
});

test("InvokeModelWithResponseStream chunks decode to the model's JSON", async () => {
  const out = await client("us-east-1").send(
    new InvokeModelWithResponseStreamCommand({
      modelId: "anthropic.claude-3-haiku-20240307-v1:0",
      body: JSON.stringify({ messages: [] }),
    }),
  );
  const chunks = [];
  for await (const event of out.body) chunks.push(decode(event.chunk.bytes));
  assert.equal(chunks[0].type, "message_start");
  assert.ok(chunks.at(-1)["amazon-bedrock-invocationMetrics"].outputTokenCount > 0);
});
