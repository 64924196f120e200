// One request through a real npm client's own retry loop, at the client's default retry
// settings, timed exchange by exchange. Started by ../test_throttle_clients.py (twice per case:
// through the gateway, and straight to the fake Bedrock), which compares the two runs.
//
//   node throttle_clients.mjs '<json>'
//   json: {client: "aws-sdk" | "anthropic", baseUrl, model, seed, accessKey, secretKey,
//          timeoutMs?, maxRetries?}
//
// Prints one JSON line: {ok, status, error, elapsedMs, exchanges: [{startMs, ms, status,
// headers}]}. Math.random is replaced by a PRNG seeded from `seed`, so both runs of a case draw
// the same backoff jitter and their times can be compared as a ratio.
import { BedrockRuntimeClient, InvokeModelCommand } from "@aws-sdk/client-bedrock-runtime";
import AnthropicBedrock from "@anthropic-ai/bedrock-sdk";
import { NodeHttpHandler } from "@smithy/node-http-handler";

const args = JSON.parse(process.argv[2]);

// mulberry32: small, deterministic, good enough for jitter.
let state = args.seed >>> 0;
Math.random = () => {
  state = (state + 0x6d2b79f5) >>> 0;
  let t = state;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
};

const WATCHED = ["retry-after", "x-amz-retry-after", "retry-after-ms", "x-gateway-attempts"];
const exchanges = [];
const t0 = performance.now();

function record(start, status, get) {
  const headers = {};
  for (const h of WATCHED) {
    const v = get(h);
    if (v !== undefined && v !== null) headers[h] = String(v);
  }
  exchanges.push({ startMs: start - t0, ms: performance.now() - start, status, headers });
}

// The SDK's HTTP/1.1 handler, timed. BedrockRuntimeClient defaults to HTTP/2
// (NodeHttp2Handler); the fake upstream of the direct run speaks HTTP/1.1 only, so both runs
// use this handler and the same transport.
class TimedHandler extends NodeHttpHandler {
  async handle(request, options) {
    const start = performance.now();
    const out = await super.handle(request, options);
    const { response } = out;
    record(start, response.statusCode, (h) => response.headers[h]);
    return out;
  }
}

async function timedFetch(url, init) {
  const start = performance.now();
  const res = await fetch(url, init);
  record(start, res.status, (h) => res.headers.get(h));
  return res;
}

async function runAwsSdk() {
  // Defaults: standard retry mode, maxAttempts 3.
  const client = new BedrockRuntimeClient({
    region: "us-east-1",
    endpoint: args.baseUrl,
    requestHandler: new TimedHandler(),
    credentials: { accessKeyId: args.accessKey, secretAccessKey: args.secretKey },
  });
  try {
    const out = await client.send(
      new InvokeModelCommand({ modelId: args.model, contentType: "application/json", body: "{}" }),
    );
    return { ok: true, status: out.$metadata.httpStatusCode };
  } catch (err) {
    return { ok: false, status: err.$metadata?.httpStatusCode ?? null, error: err.name };
  } finally {
    client.destroy();
  }
}

async function runAnthropic() {
  // Defaults: maxRetries 2, timeout 10 minutes (unless the case sets them).
  const options = {
    awsRegion: "us-east-1",
    baseURL: args.baseUrl,
    awsAccessKey: args.accessKey,
    awsSecretKey: args.secretKey,
    fetch: timedFetch,
  };
  if (args.timeoutMs !== undefined) options.timeout = args.timeoutMs;
  if (args.maxRetries !== undefined) options.maxRetries = args.maxRetries;
  const client = new AnthropicBedrock(options);
  try {
    await client.messages.create({
      model: args.model,
      max_tokens: 16,
      messages: [{ role: "user", content: "hi" }],
    });
    return { ok: true, status: 200 };
  } catch (err) {
    return { ok: false, status: err.status ?? null, error: err.constructor.name };
  }
}

const result = args.client === "aws-sdk" ? await runAwsSdk() : await runAnthropic();
result.elapsedMs = performance.now() - t0;
result.exchanges = exchanges;
process.stdout.write(JSON.stringify(result) + "\n");
