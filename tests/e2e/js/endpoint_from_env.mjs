// An app deployed with AWS_ENDPOINT_URL_BEDROCK_RUNTIME pointing at the gateway: its code names
// no endpoint and no request handler, exactly as it would against Bedrock itself. Started by
// default_handler.test.mjs with that variable set (and no BGW_GATEWAY_URL); prints one JSON line.
import {
  BedrockRuntimeClient,
  ConverseCommand,
  ConverseStreamCommand,
} from "@aws-sdk/client-bedrock-runtime";

if (!process.env.AWS_ENDPOINT_URL_BEDROCK_RUNTIME || process.env.BGW_GATEWAY_URL) {
  throw new Error("run by default_handler.test.mjs with only AWS_ENDPOINT_URL_BEDROCK_RUNTIME set");
}

const client = new BedrockRuntimeClient({
  region: "us-east-1",
  credentials: { accessKeyId: "AKIDJSENVAPP", secretAccessKey: "js-env-app-secret" },
});

let gatewayRegion;
client.middlewareStack.add(
  (next) => async (args) => {
    const out = await next(args);
    gatewayRegion = out.response.headers["x-gateway-region"];
    return out;
  },
  { step: "deserialize", name: "bgwGatewayRegion" },
);

const messages = (text) => [{ role: "user", content: [{ text }] }];
const out = await client.send(
  new ConverseCommand({ modelId: "amazon.nova-lite-v1:0", messages: messages("from the environment") }),
);
const stream = await client.send(
  new ConverseStreamCommand({ modelId: "amazon.nova-lite-v1:0", messages: messages("streamed from the environment") }),
);
let streamed = "";
for await (const event of stream.stream) {
  if (event.contentBlockDelta) streamed += event.contentBlockDelta.delta.text;
}
client.destroy();

process.stdout.write(
  JSON.stringify({
    handler: client.config.requestHandler.constructor.name,
    status: out.$metadata.httpStatusCode,
    text: out.output.message.content[0].text,
    streamed,
    gatewayRegion,
  }) + "\n",
);
