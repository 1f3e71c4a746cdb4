import { readEventStream, type StreamEvent } from "@visionllm/protocol";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Spawned, startEdge, startRunner } from "../helpers/processes";
import { metric } from "../helpers/runner-client";
import { record } from "./tally";

/**
 * Three real runners behind one edge (RUNNER_URLS lists them): least-outstanding routing spreads
 * concurrent streams over all three; a runner killed with SIGKILL costs each of its clients one
 * error event and nothing more, and new requests go to the two that are left.
 */

const bundle = process.env.TEST_BUNDLE ?? "model/bundle";

async function stream(edge: string, apiKey: string, seed: number, tokens: number) {
  const response = await fetch(`${edge}/v1/chat`, {
    method: "POST",
    headers: { authorization: `Bearer ${apiKey}`, "content-type": "application/json" },
    body: JSON.stringify({
      model: "visionllm-v2-nano",
      // Sampled, so no answer comes from the edge's cache: every request reaches a runner.
      temperature: 1,
      seed,
      max_tokens: tokens,
      min_tokens: tokens,
      messages: [{ role: "user", content: "Hello!" }],
    }),
  });
  return response;
}

async function collect(response: Response, onEvent?: (count: number) => void): Promise<StreamEvent[]> {
  const events: StreamEvent[] = [];
  if (!response.body) return events;
  for await (const event of readEventStream(response.body)) {
    events.push(event);
    onEvent?.(events.length);
  }
  return events;
}

const served = (urls: string[]) =>
  Promise.all(urls.map((u) => metric(u, "vllm:e2e_request_latency_seconds_count")));

/** The runners' finished-request counts once they add up to `total` more than `before` (a runner
 * counts a request when its stream has ended, a moment after the client read `done`). */
async function servedAfter(urls: string[], before: number[], total: number): Promise<number[]> {
  const until = Date.now() + 10_000;
  for (;;) {
    const now = await served(urls);
    const delta = now.map((n, i) => n - (before[i] ?? 0));
    if (delta.reduce((a, b) => a + b, 0) >= total || Date.now() > until) return delta;
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe("a fleet of three runners", () => {
  const runners: Array<Spawned & { url: string }> = [];
  let edge: Spawned & { edge: string; apiKey: string };

  beforeAll(async () => {
    // One wasm thread each: three runners share this machine's cores.
    const started = await Promise.all(
      [0, 1, 2].map(() => startRunner({ RUNNER_BUNDLE: bundle, RUNNER_THREADS: "1" })),
    );
    runners.push(...started);
    edge = await startEdge({ runnerUrls: runners.map((r) => r.url).join(",") });
  }, 240_000);

  afterAll(async () => {
    await edge?.stop();
    for (const r of runners) await r.stop();
  }, 60_000);

  it("spreads concurrent streams over every runner", async () => {
    const urls = runners.map((r) => r.url);
    const before = await served(urls);
    const responses = await Promise.all(
      [1, 2, 3, 4, 5, 6].map((seed) => stream(edge.edge, edge.apiKey, seed, 24)),
    );
    const results = await Promise.all(responses.map((r) => collect(r)));
    expect(responses.map((r) => r.status)).toEqual([200, 200, 200, 200, 200, 200]);
    for (const events of results)
      expect(events.at(-1)).toMatchObject({ type: "done", finish_reason: "length" });
    const perRunner = await servedAfter(urls, before, 6);
    expect(perRunner.reduce((a, b) => a + b, 0)).toBe(6);
    for (const n of perRunner) expect(n).toBeGreaterThanOrEqual(1);
  }, 120_000);

  it("a runner killed mid-stream costs its clients one error event; new requests go to the others", async () => {
    const pending = [11, 12, 13, 14, 15, 16].map((s) => stream(edge.edge, edge.apiKey, s, 400));
    // The victim is the runner serving most of the six, read from the runners' running gauges while
    // they generate. Killing on a client's fourth event was flaky: the runners can finish all 400
    // tokens before a client has read four events (or even its headers) through the edge, and
    // then no stream is cut. Once all six run, a moment more puts each past its first event, after
    // which the edge no longer fails over and must tell the client.
    const gauges = () => Promise.all(runners.map((r) => metric(r.url, "vllm:num_requests_running")));
    const until = Date.now() + 20_000;
    let running = await gauges();
    while (running.reduce((a, b) => a + b, 0) < 6 && Date.now() < until) {
      await new Promise((r) => setTimeout(r, 5));
      running = await gauges();
    }
    await new Promise((r) => setTimeout(r, 100));
    running = await gauges();
    const victim = runners[running.indexOf(Math.max(...running))];
    if (!victim) throw new Error("no runner");
    expect(Math.max(...running)).toBeGreaterThan(0);
    victim.process.kill("SIGKILL");
    const responses = await Promise.all(pending);
    expect(responses.map((r) => r.status)).toEqual([200, 200, 200, 200, 200, 200]);
    const results = await Promise.all(responses.map((r) => collect(r)));
    const errorsPerClient = results.map((events) => events.filter((e) => e.type === "error").length);
    for (const n of errorsPerClient) expect(n).toBeLessThanOrEqual(1);
    // The victim held at least one of the six (routing spreads them), and its clients were told.
    expect(errorsPerClient.some((n) => n === 1)).toBe(true);
    for (const [i, events] of results.entries()) {
      expect(events.at(-1)).toMatchObject({
        type: "done",
        finish_reason: errorsPerClient[i] === 1 ? "error" : "length",
      });
    }
    const survivors = runners.filter((r) => r !== victim).map((r) => r.url);
    // The survivors count the six streams a moment after their ends: let them, then count anew.
    await new Promise((r) => setTimeout(r, 500));
    const before = await served(survivors);
    const next = await Promise.all([21, 22, 23, 24].map((s) => stream(edge.edge, edge.apiKey, s, 8)));
    const nextEvents = await Promise.all(next.map((r) => collect(r)));
    expect(next.map((r) => r.status)).toEqual([200, 200, 200, 200]);
    for (const events of nextEvents) expect(events.some((e) => e.type === "error")).toBe(false);
    const delta = await servedAfter(survivors, before, 4);
    expect(delta.reduce((a, b) => a + b, 0)).toBe(4);
    record({ suite: "fleet", cases: 16, fiveXX: 0 });
  }, 180_000);
});
