import { createServer, type IncomingMessage } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Spawned, startStack } from "./helpers/processes";

/** The examples in examples/, each with its third-party client, against `npm start`'s real stack. */

const bundle = process.env.TEST_BUNDLE ?? "model/bundle";
const question = "Detect every circle.";

describe("third-party clients (examples/)", () => {
  let stack: Spawned & { edge: string; apiKey: string };
  let image = "";

  beforeAll(async () => {
    stack = await startStack({ RUNNER_BUNDLE: bundle });
    // The examples read the server and key from the environment, as their README says.
    process.env.VISIONLLM_URL = stack.edge;
    process.env.VISIONLLM_KEY = stack.apiKey;
    image = (await import("../examples/shared")).imageDataUrl("test/fixtures/scene-detect.png");
  }, 200_000);
  afterAll(async () => {
    await stack?.stop();
  }, 30_000);

  it("openai: chat completions carry detections in visionllm_events; the Responses API as output items", async () => {
    const { detectWithOpenAI } = await import("../examples/openai");
    const result = await detectWithOpenAI(image, question);
    expect(result.text).toMatch(/circle/);
    expect(result.events.some((e) => e.type === "detections")).toBe(true);
    expect(result.responseText).toBe(result.text);
    expect(result.items.some((item) => item.type === "visionllm_detections")).toBe(true);
  });

  it("the AI SDK: text parts, and the detections in raw chunks", async () => {
    const { detectWithAISDK } = await import("../examples/ai-sdk");
    const result = await detectWithAISDK(image, question);
    expect(result.text).toMatch(/circle/);
    expect(result.events.some((e) => e.type === "detections")).toBe(true);
  });

  it("the AI SDK's own OpenAI provider: text, usage, and the detections in raw chunks", async () => {
    const { detectWithAISDKOpenAI } = await import("../examples/ai-sdk-openai");
    const result = await detectWithAISDKOpenAI(image, question);
    expect(result.text).toMatch(/circle/);
    expect(result.events.some((e) => e.type === "detections")).toBe(true);
    expect(result.usage.inputTokens).toBeGreaterThan(0);
  });

  it("eventsource: a connection cut mid-answer resumes by itself after Last-Event-ID; nothing lost or repeated", async () => {
    const { streamNative } = await import("../examples/eventsource");
    const proxy = await cuttingProxy(stack.edge, 4);
    try {
      const reconnectedWith: Array<string | null> = [];
      const { events, connections } = await streamNative(
        {
          // Sampled: the answer cannot be produced again, only the stream's log can resume it.
          temperature: 1,
          max_tokens: 300,
          min_tokens: 300,
          messages: [{ role: "user", content: "Hello!" }],
        },
        { url: `${proxy.url}/v1/chat`, onOpen: (id) => reconnectedWith.push(id) },
      );
      expect(connections).toBe(2);
      expect(reconnectedWith).toEqual([null, "3"]);
      expect(events.map((e) => e.sequence_number)).toEqual(events.map((_, i) => i));
      expect(events.at(-1)).toMatchObject({ type: "done", finish_reason: "length" });
      // The events the edge sent on the first connection, read to the end by the proxy: the same.
      expect(events).toEqual(await proxy.firstStream);
    } finally {
      proxy.close();
    }
  }, 120_000);

  it("LangChain: text chunks, and the detections in the raw responses", async () => {
    const { detectWithLangChain } = await import("../examples/langchain");
    const result = await detectWithLangChain(image, question);
    expect(result.text).toMatch(/circle/);
    expect(result.events.some((e) => e.type === "detections")).toBe(true);
  });
});

async function readAll(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/**
 * A proxy in front of the edge that drops its client's first connection after `frames` SSE frames,
 * as a flaky mobile network does, while its own request to the edge reads on to the end (so the
 * answer keeps running there). `firstStream` is everything the edge sent on that first request.
 */
async function cuttingProxy(edge: string, frames: number) {
  let first = true;
  let resolveFirst: (events: unknown[]) => void = () => {};
  const firstStream = new Promise<unknown[]>((resolve) => {
    resolveFirst = resolve;
  });
  const server = createServer(async (req, res) => {
    const headers = new Headers();
    for (const name of ["authorization", "content-type", "last-event-id", "accept"]) {
      const value = req.headers[name];
      if (typeof value === "string") headers.set(name, value);
    }
    const upstream = await fetch(`${edge}${req.url ?? "/"}`, {
      method: req.method ?? "GET",
      headers,
      body: req.method === "GET" ? null : new Uint8Array(await readAll(req)),
    });
    res.writeHead(upstream.status, {
      "content-type": upstream.headers.get("content-type") ?? "text/event-stream",
    });
    const cut = first;
    first = false;
    const seen: unknown[] = [];
    let buffer = "";
    let sent = 0;
    const decoder = new TextDecoder();
    const reader = (upstream.body as ReadableStream<Uint8Array>).getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let end = buffer.indexOf("\n\n");
      while (end >= 0) {
        const frame = buffer.slice(0, end + 2);
        buffer = buffer.slice(end + 2);
        const data = frame.split("\n").find((l) => l.startsWith("data: "));
        if (data && cut) seen.push(JSON.parse(data.slice(6)));
        if (!cut || sent < frames) {
          if (data) sent++;
          // The cut comes once the frames are on the wire: a dropped connection, not lost bytes.
          if (cut && sent === frames) res.write(frame, () => setTimeout(() => res.socket?.destroy(), 50));
          else res.write(frame);
        }
        end = buffer.indexOf("\n\n");
      }
    }
    if (cut) resolveFirst(seen);
    else res.end();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}`, firstStream, close: () => server.close() };
}
