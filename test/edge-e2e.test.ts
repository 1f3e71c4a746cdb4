import { readFileSync } from "node:fs";
import { readEventStream, type StreamEvent, VisionLLMClient } from "@visionllm/protocol";
import Ajv2020 from "ajv/dist/2020";
import addFormats from "ajv-formats";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Spawned, startStack } from "./helpers/processes";
import { metric } from "./helpers/runner-client";

/** End to end through `npm start`'s real processes: the edge in workerd (scripts/edge.ts) in front of the runner. */

const bundle = process.env.TEST_BUNDLE ?? "model/bundle";
const scene = readFileSync("test/fixtures/scene-detect.png").toString("base64");
const dataUrl = `data:image/png;base64,${scene}`;

describe("edge end to end", () => {
  let stack: Spawned & { edge: string; runner: string; apiKey: string };
  let openai: OpenAI;

  beforeAll(async () => {
    stack = await startStack({ RUNNER_BUNDLE: bundle });
    openai = new OpenAI({ apiKey: stack.apiKey, baseURL: `${stack.edge}/v1`, maxRetries: 0 });
  }, 200_000);
  afterAll(async () => {
    const code = await stack?.stop();
    expect(code).toBe(0);
  }, 30_000);

  it("every route's live answers validate against the served OpenAPI document, which carries the model's limits", async () => {
    const doc = (await (await fetch(`${stack.edge}/openapi.json`)).json()) as {
      paths: Record<string, Record<string, { operationId?: string }>>;
      components: { schemas: Record<string, unknown> };
    };
    const ajv = new Ajv2020({ strict: false, allErrors: true });
    addFormats(ajv);
    ajv.addSchema({ $id: "doc", $defs: {}, components: doc.components });
    const check = (name: string, value: unknown) => {
      const validate = ajv.getSchema(`doc#/components/schemas/${name}`);
      if (!validate) throw new Error(`no schema ${name}`);
      expect(validate(value), `${name}: ${ajv.errorsText(validate.errors)}`).toBe(true);
    };
    for (const [path, operations] of Object.entries(doc.paths))
      for (const [method, op] of Object.entries(operations))
        expect(op.operationId, `${method} ${path}`).toBeTruthy();
    const request = doc.components.schemas.ChatCompletionRequest as {
      properties: { max_tokens: { anyOf: { type: string; maximum?: number }[] } };
    };
    const cap = request.properties.max_tokens.anyOf.find((v) => v.type === "integer")?.maximum;
    expect(cap).toBeLessThan(4096);
    const api = (path: string, init: RequestInit = {}) =>
      fetch(`${stack.edge}${path}`, {
        ...init,
        headers: {
          authorization: `Bearer ${stack.apiKey}`,
          "content-type": "application/json",
          ...init.headers,
        },
      });
    check("ModelList", await (await api("/v1/models")).json());
    check("Model", await (await api("/v1/models/visionllm-v2-nano")).json());
    check("ErrorBody", await (await api("/v1/models/gpt-4")).json());
    const tooLong = await api("/v1/chat/completions", {
      method: "POST",
      body: JSON.stringify({
        model: "visionllm-v2-nano",
        max_tokens: (cap ?? 0) + 1,
        messages: [{ role: "user", content: "hi" }],
      }),
    });
    expect(tooLong.status).toBe(400);
    check("ErrorBody", await tooLong.json());
    const chatBody = {
      model: "visionllm-v2-nano",
      max_tokens: 24,
      messages: [
        {
          role: "user",
          content: [
            { type: "image_url", image_url: { url: dataUrl } },
            { type: "text", text: "Detect every circle." },
          ],
        },
      ],
    };
    check(
      "ChatCompletion",
      await (await api("/v1/chat/completions", { method: "POST", body: JSON.stringify(chatBody) })).json(),
    );
    const native = await api("/v1/chat", { method: "POST", body: JSON.stringify(chatBody) });
    for await (const event of readEventStream(native.body as ReadableStream<Uint8Array>))
      check("StreamEvent", event);
    const created = await api("/v1/jobs", {
      method: "POST",
      body: JSON.stringify({ images: [dataUrl], task: { type: "caption" } }),
    });
    const job = (await created.json()) as { id: string };
    check("Job", job);
    check("JobList", await (await api("/v1/jobs")).json());
    check("Job", await (await api(`/v1/jobs/${job.id}`)).json());
    check("Job", await (await api(`/v1/jobs/${job.id}/cancel`, { method: "POST" })).json());
    check("ErrorBody", await (await api("/v1/jobs/job_missing")).json());
    check("WebhookSecret", await (await api("/v1/webhook-secret")).json());
    check("WebhookSecretRotation", await (await api("/v1/webhook-secret/rotate", { method: "POST" })).json());
  });

  it("the official openai client streams a chat about an image: text, super-link outputs, [DONE]", async () => {
    const stream = await openai.chat.completions.create({
      model: "visionllm-v2-nano",
      stream: true,
      stream_options: { include_usage: true },
      max_tokens: 80,
      messages: [
        {
          role: "user",
          content: [
            { type: "image_url", image_url: { url: dataUrl } },
            { type: "text", text: "Where is the red circle?" },
          ],
        },
      ],
    });
    let text = "";
    const outputs: StreamEvent[] = [];
    let usage: unknown;
    let finish: string | null = null;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta.content ?? "";
      finish = chunk.choices[0]?.finish_reason ?? finish;
      if (chunk.usage) usage = chunk.usage;
      const extra = (chunk as unknown as { visionllm_events?: StreamEvent[] }).visionllm_events;
      if (extra) outputs.push(...extra);
    }
    // The SDK's iterator only ends cleanly on `data: [DONE]`.
    expect(finish).toBe("stop");
    expect(text.length).toBeGreaterThan(0);
    expect(text).not.toMatch(/\[(GRD|DET|EMB)/);
    expect(usage).toMatchObject({ prompt_tokens: expect.any(Number), completion_tokens: expect.any(Number) });
    // The answer's [GRD] routing token ran the grounding decoder mid-answer: one box, in pixels.
    const grounding = outputs.filter((e) => e.type === "detections" && e.task === "grounding");
    expect(grounding).toHaveLength(1);
    const item = grounding[0]?.type === "detections" ? grounding[0].items[0] : undefined;
    expect(item?.box).toHaveLength(4);
    expect(item?.mask?.width).toBe(128);
  });

  it("the Responses API through the openai client: typed events, super-link output items, retrieve, replay", async () => {
    const stream = await openai.responses.create({
      model: "visionllm-v2-nano",
      stream: true,
      max_output_tokens: 80,
      input: [
        {
          role: "user",
          content: [
            { type: "input_image", image_url: dataUrl, detail: "auto" },
            { type: "input_text", text: "Where is the red circle?" },
          ],
        },
      ],
    });
    const types: string[] = [];
    const numbers: number[] = [];
    let text = "";
    let id = "";
    for await (const event of stream) {
      types.push(event.type);
      numbers.push(event.sequence_number);
      if (event.type === "response.output_text.delta") text += event.delta;
      if (event.type === "response.completed") id = event.response.id;
    }
    expect(types.slice(0, 2)).toEqual(["response.created", "response.in_progress"]);
    expect(types.at(-1)).toBe("response.completed");
    expect(numbers).toEqual(numbers.map((_, i) => i));
    expect(text.length).toBeGreaterThan(0);
    const stored = (await openai.responses.retrieve(id)) as unknown as {
      status: string;
      output: { type: string; content?: { text: string }[]; items?: unknown[] }[];
    };
    expect(stored.status).toBe("completed");
    expect(stored.output[0]?.content?.[0]?.text).toBe(text);
    // The [GRD] routing token's decoder output is an item of its own, after the message.
    const grounding = stored.output.filter((item) => item.type === "visionllm_detections");
    expect(grounding).toHaveLength(1);
    expect(grounding[0]?.items).toHaveLength(1);
    const replay = await fetch(`${stack.edge}/v1/responses/${id}?stream=true&starting_after=3`, {
      headers: { authorization: `Bearer ${stack.apiKey}` },
    });
    const replayed = (await replay.text()).split("\n").filter((l) => l.startsWith("data: "));
    expect(replayed).toHaveLength(types.length - 4);
    expect(JSON.parse(replayed[0]?.slice(6) ?? "{}").sequence_number).toBe(4);
    const plain = await openai.responses.create({
      model: "visionllm-v2-nano",
      input: "Hello!",
      max_output_tokens: 40,
    });
    expect(["completed", "incomplete"]).toContain(plain.status);
    expect(plain.output_text.length).toBeGreaterThan(0);
  });

  it("resumes a native stream after Last-Event-ID, exactly, and refuses to resume a sampled one", async () => {
    const ask = async (body: Record<string, unknown>, lastEventId?: string) => {
      const response = await fetch(`${stack.edge}/v1/chat`, {
        method: "POST",
        headers: {
          authorization: `Bearer ${stack.apiKey}`,
          "content-type": "application/json",
          "cache-control": "no-cache",
          ...(lastEventId ? { "last-event-id": lastEventId } : {}),
        },
        body: JSON.stringify({
          model: "visionllm-v2-nano",
          messages: [
            {
              role: "user",
              content: [
                { type: "image_url", image_url: { url: dataUrl } },
                { type: "text", text: "Detect every circle." },
              ],
            },
          ],
          ...body,
        }),
      });
      if (!response.ok) return { status: response.status, events: [] as StreamEvent[] };
      const events: StreamEvent[] = [];
      for await (const e of readEventStream(response.body as ReadableStream<Uint8Array>)) events.push(e);
      return { status: response.status, events };
    };
    const whole = await ask({ temperature: 0 });
    const resumed = await ask({ temperature: 0 }, "2");
    expect(resumed.events[0]?.sequence_number).toBe(3);
    expect(resumed.events).toEqual(whole.events.slice(3));
    expect((await ask({ temperature: 1 }, "2")).status).toBe(400);
  });

  it("says where the edge's time went: Server-Timing with every phase of a chat", async () => {
    const response = await fetch(`${stack.edge}/v1/chat/completions`, {
      method: "POST",
      headers: {
        authorization: `Bearer ${stack.apiKey}`,
        "content-type": "application/json",
        "cache-control": "no-cache",
      },
      body: JSON.stringify({
        model: "visionllm-v2-nano",
        max_tokens: 4,
        temperature: 1,
        messages: [{ role: "user", content: "Hello!" }],
      }),
    });
    await response.text();
    const phases = (response.headers.get("server-timing") ?? "")
      .split(",")
      .map((m) => m.trim().split(";")[0]);
    expect(phases).toEqual(
      expect.arrayContaining([
        "auth",
        "ratelimit",
        "prompt",
        "runner",
        "runner-queue",
        "runner-prepare",
        "runner-prefill",
        "runner-ttft",
        "total",
      ]),
    );
    const cachedPath = await fetch(`${stack.edge}/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${stack.apiKey}`, "content-type": "application/json" },
      body: JSON.stringify({
        model: "visionllm-v2-nano",
        max_tokens: 4,
        messages: [{ role: "user", content: "Hello!" }],
      }),
    });
    await cachedPath.text();
    expect(cachedPath.headers.get("server-timing")).toMatch(/cache;dur=/);
  });

  it("a non-streaming call returns the completion with its super-link outputs", async () => {
    const completion = await openai.chat.completions.create({
      model: "visionllm-v2-nano",
      max_tokens: 80,
      messages: [
        {
          role: "user",
          content: [
            { type: "image_url", image_url: { url: dataUrl } },
            { type: "text", text: "How many circles are there?" },
          ],
        },
      ],
    });
    expect(completion.object).toBe("chat.completion");
    expect(completion.choices[0]?.message.content).toMatch(/\d/);
    expect((completion as unknown as { visionllm_events: unknown[] }).visionllm_events).toEqual([]);
  });

  it("the typed client reads the native event stream", async () => {
    const client = new VisionLLMClient({ baseURL: stack.edge, apiKey: stack.apiKey });
    const types: string[] = [];
    for await (const event of client.chat({
      model: "visionllm-v2-nano",
      max_tokens: 40,
      task: { type: "detect", categories: ["person"] },
      messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: dataUrl } }] }],
    })) {
      types.push(event.type);
    }
    expect(types[0]).toBe("start");
    expect(types).toContain("detections");
    expect(types.at(-1)).toBe("done");
  });

  it("answers a repeated deterministic request from cache without reaching the runner", async () => {
    const body = {
      model: "visionllm-v2-nano",
      temperature: 0,
      max_tokens: 30,
      messages: [
        {
          role: "user",
          content: [
            { type: "image_url", image_url: { url: dataUrl } },
            { type: "text", text: "Is there a red circle?" },
          ],
        },
      ],
    };
    const post = () =>
      fetch(`${stack.edge}/v1/chat/completions`, {
        method: "POST",
        headers: { authorization: `Bearer ${stack.apiKey}`, "content-type": "application/json" },
        body: JSON.stringify(body),
      });
    const first = await post();
    expect(first.headers.get("x-cache")).toBe("MISS");
    const firstBody = await first.json();
    await new Promise((r) => setTimeout(r, 500)); // the KV write happens after the response
    const before = await metric(stack.runner, "vllm:e2e_request_latency_seconds_count");
    const second = await post();
    expect(second.headers.get("x-cache")).toBe("HIT");
    const secondBody = await second.json();
    expect(secondBody.choices).toEqual(firstBody.choices);
    expect(await metric(stack.runner, "vllm:e2e_request_latency_seconds_count")).toBe(before);
    const bypass = await fetch(`${stack.edge}/v1/chat/completions`, {
      method: "POST",
      headers: {
        authorization: `Bearer ${stack.apiKey}`,
        "content-type": "application/json",
        "cache-control": "no-cache",
      },
      body: JSON.stringify(body),
    });
    expect(bypass.headers.get("x-cache")).toBe("BYPASS");
    await bypass.text();
  });

  /** A request that would generate 500 tokens, and the runner's count of running sequences. */
  const longAnswer = (path: string, signal: AbortSignal) =>
    fetch(`${stack.edge}${path}`, {
      method: "POST",
      signal,
      headers: { authorization: `Bearer ${stack.apiKey}`, "content-type": "application/json" },
      body: JSON.stringify({
        model: "visionllm-v2-nano",
        temperature: 1,
        max_tokens: 500,
        min_tokens: 500,
        messages: [{ role: "user", content: "Hello!" }],
      }),
    });
  const running = () => metric(stack.runner, "vllm:num_requests_running");
  async function runningBecomes(target: (n: number) => boolean, ms: number): Promise<number> {
    const until = Date.now() + ms;
    let n = await running();
    while (!target(n) && Date.now() < until) {
      await new Promise((r) => setTimeout(r, 50));
      n = await running();
    }
    return n;
  }

  it("a client that disconnects mid-stream stops the runner's work", async () => {
    const controller = new AbortController();
    const response = await longAnswer("/v1/chat", controller.signal);
    expect(response.status).toBe(200);
    const reader = response.body?.getReader();
    await reader?.read();
    await reader?.read();
    expect(await runningBecomes((n) => n >= 1, 3_000)).toBe(1);
    controller.abort();
    expect(await runningBecomes((n) => n === 0, 5_000)).toBe(0);
    expect(
      await metric(stack.runner, 'vllm:request_success_total{finished_reason="canceled"'),
    ).toBeGreaterThanOrEqual(1);
  });
});
