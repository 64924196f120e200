// LangChain's ChatBedrockConverse (@langchain/aws) and the AWS SDK for JavaScript v3 at their
// defaults, through bedrock-gateway's TLS listener and its plain port. Started by
// ../test_langchain.py (`node --test langchain.mjs`; the name keeps it out of a bare
// `node --test`, which test_js_sdk.py runs against a gateway without TLS), once per mode:
//
//   BGW_MODE=endpointHost  only `endpointHost: BGW_TLS_HOST` in code (LangChain makes it
//                          https://), the test CA trusted through NODE_EXTRA_CA_CERTS; and the
//                          SDK's default handler (HTTP/2, ALPN h2) at https://BGW_TLS_HOST
//   BGW_MODE=environment   no endpoint in code, AWS_ENDPOINT_URL_BEDROCK_RUNTIME=http://...
//   BGW_MODE=untrusted     endpointHost without the CA: the client must refuse the certificate
//
// The app signs with its own keys from the environment; the fake Bedrock answers only what the
// gateway re-signed, and echoes the prompt, so a reply equal to the prompt proves the round trip.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  BedrockRuntimeClient,
  ConverseCommand,
  ConverseStreamCommand,
  InvokeModelCommand,
  InvokeModelWithResponseStreamCommand,
} from "@aws-sdk/client-bedrock-runtime";
import { ChatBedrockConverse } from "@langchain/aws";

const mode = process.env.BGW_MODE;
const tlsHost = process.env.BGW_TLS_HOST;
const model = "anthropic.claude-3-5-sonnet-20240620-v1:0";
assert.ok(["endpointHost", "environment", "untrusted"].includes(mode), `BGW_MODE=${mode}`);

// What an AIMessage(Chunk) says, whether its content is a string or text blocks.
function textOf(message) {
  if (typeof message.content === "string") return message.content;
  return message.content.map((block) => block.text ?? "").join("");
}

async function invokeAndStream(chat, prompt) {
  const reply = await chat.invoke(prompt);
  assert.equal(textOf(reply), prompt);

  let streamed = "";
  let usage;
  for await (const chunk of await chat.stream(`${prompt}, streamed`)) {
    streamed += textOf(chunk);
    if (chunk.usage_metadata) usage = chunk.usage_metadata;
  }
  assert.equal(streamed, `${prompt}, streamed`);
  // ConverseStream's metadata event reached LangChain: the stream ran to its end.
  assert.ok(usage && usage.input_tokens > 0 && usage.output_tokens > 0, JSON.stringify(usage));
}

if (mode === "endpointHost") {
  assert.ok(tlsHost, "BGW_TLS_HOST must be set (test_langchain.py does)");
  assert.ok(process.env.NODE_EXTRA_CA_CERTS, "NODE_EXTRA_CA_CERTS must name the test CA");

  test("ChatBedrockConverse with only endpointHost: invoke and stream over TLS", async () => {
    const chat = new ChatBedrockConverse({ model, region: "us-east-1", endpointHost: tlsHost });
    await invokeAndStream(chat, "Hello through the TLS listener");
  });

  test("the SDK at its default handler (HTTP/2 over TLS): four runtime operations", async () => {
    const client = new BedrockRuntimeClient({
      region: "us-east-1",
      endpoint: `https://${tlsHost}`,
      maxAttempts: 1,
    });
    // The default for this service is the HTTP/2 handler: nothing here chose it.
    assert.equal(client.config.requestHandler.constructor.name, "NodeHttp2Handler");
    try {
      const messages = [{ role: "user", content: [{ text: "h2 over tls" }] }];
      const reply = await client.send(new ConverseCommand({ modelId: model, messages }));
      assert.equal(reply.output.message.content[0].text, "h2 over tls");

      const { stream } = await client.send(new ConverseStreamCommand({ modelId: model, messages }));
      const kinds = [];
      let streamed = "";
      for await (const event of stream) {
        const kind = Object.keys(event).find((k) => event[k] !== undefined);
        kinds.push(kind);
        if (kind === "contentBlockDelta") streamed += event.contentBlockDelta.delta.text;
      }
      assert.equal(streamed, "h2 over tls");
      assert.deepEqual(kinds.slice(-2), ["messageStop", "metadata"]);

      const body = JSON.stringify({ inputText: "invoke over tls" });
      const out = await client.send(new InvokeModelCommand({
        modelId: model, contentType: "application/json", accept: "application/json", body,
      }));
      const echo = JSON.parse(new TextDecoder().decode(out.body));
      assert.equal(echo.wirePath, "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/invoke");
      assert.equal(echo.bodyLength, Buffer.byteLength(body));

      const streamed2 = await client.send(new InvokeModelWithResponseStreamCommand({
        modelId: model,
        body: JSON.stringify({ messages: [] }),
      }));
      const chunks = [];
      for await (const event of streamed2.body) {
        chunks.push(JSON.parse(new TextDecoder().decode(event.chunk.bytes)));
      }
      assert.equal(chunks[0].type, "message_start");
      assert.ok(chunks.at(-1)["amazon-bedrock-invocationMetrics"].outputTokenCount > 0);
    } finally {
      client.destroy();
    }
  });
}

if (mode === "environment") {
  assert.ok(process.env.AWS_ENDPOINT_URL_BEDROCK_RUNTIME?.startsWith("http://"),
    "AWS_ENDPOINT_URL_BEDROCK_RUNTIME must name the plain port (test_langchain.py sets it)");

  test("ChatBedrockConverse, no endpoint in code: AWS_ENDPOINT_URL_BEDROCK_RUNTIME", async () => {
    const chat = new ChatBedrockConverse({ model, region: "us-east-1" });
    await invokeAndStream(chat, "Hello through the environment");
  });
}

if (mode === "untrusted") {
  assert.ok(tlsHost, "BGW_TLS_HOST must be set (test_langchain.py does)");
  assert.equal(process.env.NODE_EXTRA_CA_CERTS, undefined);

  test("without NODE_EXTRA_CA_CERTS the gateway's certificate is refused", async () => {
    const chat = new ChatBedrockConverse({
      model, region: "us-east-1", endpointHost: tlsHost, maxRetries: 0,
      clientOptions: { maxAttempts: 1 },
    });
    await assert.rejects(chat.invoke("never answered"), (err) => {
      const text = `${err.code ?? ""} ${err.message} ${err.cause?.code ?? ""}`;
      assert.match(text, /certificate|CERT|SELF_SIGNED|UNABLE_TO_GET_ISSUER/, text);
      return true;
    });
  });
}
