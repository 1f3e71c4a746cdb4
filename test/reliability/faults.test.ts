import { execFileSync } from "node:child_process";
import { readEventStream, type StreamEvent } from "@visionllm/protocol";
import OpenAI from "openai";
import { afterAll, describe, expect, it } from "vitest";
import { type Spawned, startEdge, startRunner, startStack } from "../helpers/processes";
import { type Behaviour, startFakeRunner } from "./fake-runner";
import { record } from "./tally";

/** Faults between edge and runner: the client always gets an error event and a clean end, the edge survives. */

const bundle = process.env.TEST_BUNDLE ?? "model/bundle";
const started: Array<{ stop: () => Promise<unknown> }> = [];
afterAll(async () => {
  for (const s of started.reverse()) await s.stop();
}, 60_000);

async function streamThrough(
  edge: string,
  apiKey: string,
  body: Record<string, unknown> = {},
): Promise<{ status: number; events: StreamEvent[] }> {
  const response = await fetch(`${edge}/v1/chat`, {
    method: "POST",
    headers: { authorization: `Bearer ${apiKey}`, "content-type": "application/json" },
    body: JSON.stringify({
      model: "visionllm-v2-nano",
      messages: [{ role: "user", content: "Hello!" }],
      ...body,
    }),
  });
  const events: StreamEvent[] = [];
  if (response.ok && response.body) for await (const e of readEventStream(response.body)) events.push(e);
  else await response.text();
  return { status: response.status, events };
}

describe("faults", () => {
  for (const [behaviour, code] of [
    ["garbage", "bad_upstream"],
    ["half", "runner_unavailable"],
    ["stall", "deadline_exceeded"],
  ] as Array<[Behaviour, string]>) {
    it(`a runner that ${behaviour === "garbage" ? "sends garbage" : behaviour === "half" ? "dies mid-stream" : "stalls"}: error event, clean end, edge alive`, async () => {
      const fake = await startFakeRunner(behaviour);
      started.push({ stop: async () => fake.server.close() });
      const edge = await startEdge({ runnerUrls: fake.url, vars: { RUNNER_IDLE_TIMEOUT_MS: "1500" } });
      started.push(edge);
      const { status, events } = await streamThrough(edge.edge, edge.apiKey);
      expect(status).toBe(200);
      const error = events.find((e) => e.type === "error");
      expect(error).toMatchObject({ type: "error", code, retryable: true });
      record({ suite: "faults", cases: 1, hanging: events.at(-1)?.type === "done" ? 0 : 1 });
      expect(events.at(-1)).toMatchObject({ type: "done", finish_reason: "error" });
      expect(events.map((e) => e.sequence_number)).toEqual(events.map((_, i) => i));
      expect((await fetch(`${edge.edge}/healthz`)).status).toBe(200);
    }, 120_000);
  }

  it("answers from a runner with another bundle are never cached under the card's digest", async () => {
    for (const [digest, second] of [
      [undefined, "HIT"],
      ["a-newer-bundle", "MISS"],
    ] as const) {
      const fake = await startFakeRunner("ok", digest);
      started.push({ stop: async () => fake.server.close() });
      const edge = await startEdge({ runnerUrls: fake.url });
      started.push(edge);
      const ask = async () => {
        const response = await fetch(`${edge.edge}/v1/chat/completions`, {
          method: "POST",
          headers: { authorization: `Bearer ${edge.apiKey}`, "content-type": "application/json" },
          body: JSON.stringify({
            model: "visionllm-v2-nano",
            messages: [{ role: "user", content: "Hello!" }],
          }),
        });
        await response.text();
        return response.headers.get("x-cache");
      };
      expect(await ask()).toBe("MISS");
      // Cache writes happen after the response (waitUntil).
      await new Promise((r) => setTimeout(r, 500));
      expect(await ask(), `second answer, runner digest ${digest ?? "same as the card"}`).toBe(second);
    }
  }, 120_000);

  it("streams the client closed free their slots within 5 s", async () => {
    const fake = await startFakeRunner("slow");
    started.push({ stop: async () => fake.server.close() });
    const edge = await startEdge({ runnerUrls: fake.url, vars: { DEFAULT_MAX_CONCURRENT: "4" } });
    started.push(edge);
    const open = async () => {
      const controller = new AbortController();
      const response = await fetch(`${edge.edge}/v1/chat`, {
        method: "POST",
        signal: controller.signal,
        headers: { authorization: `Bearer ${edge.apiKey}`, "content-type": "application/json" },
        body: JSON.stringify({ model: "visionllm-v2-nano", messages: [{ role: "user", content: "Hello!" }] }),
      });
      return { response, controller };
    };
    for (let round = 0; round < 2; round++) {
      const streams = await Promise.all(Array.from({ length: 4 }, open));
      expect(streams.map((s) => s.response.status)).toEqual([200, 200, 200, 200]);
      for (const s of streams) await s.response.body?.getReader().read();
      const extra = await open();
      expect(extra.response.status).toBe(429);
      await extra.response.text();
      for (const s of streams) s.controller.abort();
      const closedAt = Date.now();
      let admitted: Awaited<ReturnType<typeof open>> | undefined;
      while (!admitted && Date.now() - closedAt < 5000) {
        const attempt = await open();
        if (attempt.response.status === 200) admitted = attempt;
        else {
          await attempt.response.text();
          await new Promise((r) => setTimeout(r, 100));
        }
      }
      record({ suite: "faults", cases: 1, slotReleaseMs: admitted ? [Date.now() - closedAt] : [] });
      expect(
        admitted?.response.status,
        `slot still held ${Date.now() - closedAt} ms after the clients left`,
      ).toBe(200);
      admitted?.controller.abort();
      await new Promise((r) => setTimeout(r, 500));
    }
  }, 120_000);

  for (const path of ["/v1/chat/completions", "/v1/responses"]) {
    it(`a client that gives up on a stream: false call at ${path} stops the runner's work within 2 s`, async () => {
      const fake = await startFakeRunner("slow");
      started.push({ stop: async () => fake.server.close() });
      const edge = await startEdge({ runnerUrls: fake.url });
      started.push(edge);
      const controller = new AbortController();
      const body =
        path === "/v1/responses"
          ? { model: "visionllm-v2-nano", input: "Hello!", stream: false }
          : { model: "visionllm-v2-nano", messages: [{ role: "user", content: "Hello!" }], stream: false };
      const call = fetch(`${edge.edge}${path}`, {
        method: "POST",
        signal: controller.signal,
        headers: { authorization: `Bearer ${edge.apiKey}`, "content-type": "application/json" },
        body: JSON.stringify(body),
      }).then((response) => response.text());
      call.catch(() => undefined);
      await new Promise((r) => setTimeout(r, 1500));
      controller.abort();
      const gaveUpAt = Date.now();
      while (fake.stopped.length === 0 && Date.now() - gaveUpAt < 10_000)
        await new Promise((r) => setTimeout(r, 50));
      record({ suite: "faults", cases: 1, hanging: fake.stopped.length === 0 ? 1 : 0 });
      expect(fake.stopped.length, "the runner was still generating 10 s after the client left").toBe(1);
      expect((fake.stopped[0] ?? Infinity) - gaveUpAt).toBeLessThan(2000);
    }, 60_000);
  }

  /** An edge in front of a fake runner, and a plain `stream: false` completion through it. */
  async function nonStreamingThrough(behaviour: Behaviour) {
    const fake = await startFakeRunner(behaviour);
    started.push({ stop: async () => fake.server.close() });
    const edge = await startEdge({ runnerUrls: fake.url });
    started.push(edge);
    const response = await fetch(`${edge.edge}/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${edge.apiKey}`, "content-type": "application/json" },
      body: JSON.stringify({ model: "visionllm-v2-nano", messages: [{ role: "user", content: "Hello!" }] }),
    });
    return { edge, response };
  }

  it("a stream: false answer that outlasts the head delay still parses as JSON", async () => {
    const { edge, response } = await nonStreamingThrough("ok-slowly");
    expect(response.status).toBe(200);
    const text = await response.text();
    expect(text).toMatch(/^ +\{/);
    expect(JSON.parse(text)).toMatchObject({
      object: "chat.completion",
      choices: [{ message: { content: "Hello." } }],
    });
    // The openai client (which asks for gzip) reads the same answer.
    const client = new OpenAI({ baseURL: `${edge.edge}/v1`, apiKey: edge.apiKey, maxRetries: 0 });
    const completion = await client.chat.completions.create({
      model: "visionllm-v2-nano",
      messages: [{ role: "user", content: "Hello!" }],
    });
    expect(completion.choices[0]?.message.content).toBe("Hello.");
  }, 60_000);

  it("a stream: false answer whose runner dies after the head delay ends in an error object, retryable", async () => {
    const { response } = await nonStreamingThrough("half-slowly");
    expect(response.status).toBe(200);
    expect(JSON.parse(await response.text())).toMatchObject({
      error: { code: "runner_unavailable", retryable: true, retry_after_seconds: expect.any(Number) },
    });
  }, 60_000);

  it("a real runner killed mid-stream: the client gets an error event and a clean end", async () => {
    const runner: Spawned & { url: string } = await startRunner({ RUNNER_BUNDLE: bundle });
    started.push(runner);
    const edge = await startEdge({ runnerUrls: runner.url });
    started.push(edge);
    const response = await fetch(`${edge.edge}/v1/chat`, {
      method: "POST",
      headers: { authorization: `Bearer ${edge.apiKey}`, "content-type": "application/json" },
      body: JSON.stringify({
        model: "visionllm-v2-nano",
        temperature: 1,
        max_tokens: 500,
        min_tokens: 500,
        messages: [{ role: "user", content: "Hello!" }],
      }),
    });
    const events: StreamEvent[] = [];
    for await (const event of readEventStream(response.body as ReadableStream<Uint8Array>)) {
      events.push(event);
      if (events.length === 3) runner.process.kill("SIGKILL");
    }
    expect(events.some((e) => e.type === "error" && e.retryable)).toBe(true);
    expect(events.at(-1)).toMatchObject({ type: "done", finish_reason: "error" });
    const after = await fetch(`${edge.edge}/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${edge.apiKey}`, "content-type": "application/json" },
      body: JSON.stringify({ model: "visionllm-v2-nano", messages: [{ role: "user", content: "Hello!" }] }),
    });
    expect(after.status).toBe(503);
    expect(Number(after.headers.get("retry-after"))).toBeGreaterThan(0);
  }, 180_000);

  it("npm start restarts a runner killed with SIGKILL; meanwhile the edge answers 503 with Retry-After", async () => {
    const stack = await startStack({ RUNNER_BUNDLE: bundle });
    started.push(stack);
    const runnerPid = () =>
      execFileSync("pgrep", ["-P", String(stack.process.pid), "-f", "gpu-runner/src/server/main.ts"])
        .toString()
        .trim();
    const first = runnerPid();
    process.kill(Number(first), "SIGKILL");
    const ask = () =>
      fetch(`${stack.edge}/v1/chat/completions`, {
        method: "POST",
        headers: { authorization: `Bearer ${stack.apiKey}`, "content-type": "application/json" },
        body: JSON.stringify({
          model: "visionllm-v2-nano",
          max_tokens: 4,
          messages: [{ role: "user", content: "Hello!" }],
        }),
      });
    const statuses: number[] = [];
    const until = Date.now() + 90_000;
    let last = 0;
    while (last !== 200 && Date.now() < until) {
      const response = await ask();
      await response.text();
      last = response.status;
      statuses.push(last);
      if (last === 503) expect(Number(response.headers.get("retry-after"))).toBeGreaterThan(0);
      else if (last !== 200) throw new Error(`unexpected ${last}`);
      if (last !== 200) await new Promise((r) => setTimeout(r, 250));
    }
    record({
      suite: "faults",
      cases: statuses.length,
      fiveXX: statuses.filter((s) => s >= 500 && s !== 503).length,
    });
    expect(statuses).toContain(503);
    expect(last).toBe(200);
    expect(runnerPid()).not.toBe(first);
    expect(stack.output()).toMatch(/\[runner\] exited .*restarting in 1 s/);
  }, 300_000);
});
