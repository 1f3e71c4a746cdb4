import { readFileSync } from "node:fs";
import type { RunnerGenerateRequestInput } from "@visionllm/protocol";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { pngClaiming, pngWithGarbageData } from "./helpers/png";
import { type Spawned, startRunner } from "./helpers/processes";
import { generateEvents, imageInput, metric, signedFetch, textOf } from "./helpers/runner-client";

/** The runner as a real process: trust, batching, admission, cancellation, metrics, drain. */

const bundle = process.env.TEST_BUNDLE ?? "model/bundle";
const manifest = JSON.parse(readFileSync(`${bundle}/manifest.json`, "utf8")) as { system_prompt: string };
const scene = new Uint8Array(readFileSync("test/fixtures/scene-detect.png"));

function request(
  question: string,
  sampling: Partial<RunnerGenerateRequestInput["sampling"]> = {},
  withImage = true,
) {
  return {
    request_id: `t-${Math.random().toString(36).slice(2)}`,
    prompt: `${manifest.system_prompt} USER: ${withImage ? "<image>\n" : ""}${question} ASSISTANT:`,
    images: withImage ? [imageInput(scene)] : [],
    regions: [],
    sampling: { max_tokens: 24, temperature: 0, top_p: 1, top_k: 0, seed: 1, stop: [], ...sampling },
  } satisfies RunnerGenerateRequestInput;
}

describe("runner server", () => {
  let runner: Spawned & { url: string };

  let runnerStartedAt = 0;

  beforeAll(async () => {
    runnerStartedAt = Math.floor(Date.now() / 1000);
    runner = await startRunner({
      RUNNER_BUNDLE: bundle,
      RUNNER_MAX_RUNNING: "8",
      RUNNER_MAX_WAITING: "2",
      // Wide enough that a request signed just before the start is still inside it: what refuses it
      // must be the start time, not the window.
      RUNNER_SIGNATURE_WINDOW_S: "600",
    });
  }, 90_000);
  afterAll(async () => {
    await runner?.stop();
  });

  it("refuses unsigned, mis-signed, stale and replayed requests with 401", async () => {
    const body = request("How many shapes are there?");
    const unsigned = await fetch(`${runner.url}/v1/generate`, { method: "POST", body: JSON.stringify(body) });
    expect(unsigned.status).toBe(401);
    expect((await unsigned.json()).error.message).toMatch(/missing signature/);
    const wrong = await signedFetch(runner.url, "/v1/generate", body, {
      secret: "not-the-runner-secret-at-all",
    });
    expect(wrong.status).toBe(401);
    const stale = await signedFetch(runner.url, "/v1/generate", body, {
      timestamp: Math.floor(Date.now() / 1000) - 3600,
    });
    expect(stale.status).toBe(401);
    expect((await stale.json()).error.message).toMatch(/window/);
    const card = await signedFetch(runner.url, "/v1/model-card", undefined);
    expect(card.status).toBe(200);
    // The same signed bytes sent twice: the second is a replay.
    const timestamp = Math.floor(Date.now() / 1000);
    const first = await signedFetch(runner.url, "/v1/model-card", undefined, { timestamp, nonce: "n-1" });
    const replay = await signedFetch(runner.url, "/v1/model-card", undefined, { timestamp, nonce: "n-1" });
    expect(first.status).toBe(200);
    expect(replay.status).toBe(401);
    expect((await replay.json()).error.message).toMatch(/replay/);
    // Signed before this runner started: refused whatever the runner remembers (a restart forgets).
    const before = await signedFetch(runner.url, "/v1/model-card", undefined, {
      timestamp: runnerStartedAt - 5,
    });
    expect(before.status).toBe(401);
    expect((await before.json()).error.message).toMatch(/before this runner started/);
  });

  it("refuses unsigned bodies before reading them, and any body over the limit", async () => {
    // Under the limit but unsigned: 401 from the headers alone.
    const unsigned = await fetch(`${runner.url}/v1/generate`, {
      method: "POST",
      body: new Uint8Array(8 << 20),
    });
    expect(unsigned.status).toBe(401);
    expect((await unsigned.json()).error.message).toMatch(/missing signature/);
    // Over the limit (64 MiB): 413 from its length, signed or not.
    const huge = new Uint8Array(80 << 20);
    expect((await fetch(`${runner.url}/v1/generate`, { method: "POST", body: huge })).status).toBe(413);
    const signedHuge = await signedFetch(runner.url, "/v1/generate", { padding: "x".repeat(70 << 20) });
    expect(signedHuge.status).toBe(413);
  });

  it("refuses broken images, broken masks and regions outside the image with 400 and the field", async () => {
    const withRegion = (region: Record<string, unknown>, images = [imageInput(scene)]) => ({
      ...request("What is in <region>?"),
      images,
      regions: [{ image_index: 0, ...region }],
    });
    const half = scene.subarray(0, Math.floor(scene.length / 2));
    const cases: [unknown, string][] = [
      [{ ...request("What is this?"), images: [imageInput(half)] }, "image"],
      [{ ...request("What is this?"), images: [imageInput(new Uint8Array(pngWithGarbageData()))] }, "image"],
      [withRegion({ mask_png_base64: "AAAA" }), "regions[0].mask"],
      [withRegion({ mask_png_base64: pngClaiming(20000, 20000).toString("base64") }), "regions[0].mask"],
      [withRegion({ box: [1000, 1000, 2000, 2000] }), "regions[0].box"],
      [withRegion({ box: [40, 40, 20, 20] }), "regions[0].box"],
      [withRegion({ point: [99999, 99999] }), "regions[0].point"],
    ];
    for (const [body, param] of cases) {
      const response = await signedFetch(runner.url, "/v1/generate", body);
      expect(response.status, param).toBe(400);
      const error = (await response.json()).error;
      expect(error.code).toBe("invalid_request");
      expect(error.param).toBe(param);
    }
  });

  it("streams well-formed events with sequence numbers as ids", async () => {
    const events = await generateEvents(runner.url, request("How many shapes are there?"));
    expect(events[0]?.type).toBe("start");
    expect(events.at(-1)?.type).toBe("done");
    expect(events.map((e) => e.sequence_number)).toEqual(events.map((_, i) => i));
    expect(events.some((e) => e.type === "usage")).toBe(true);
  });

  it("says where its time went before the first token: Server-Timing with queue, prepare, prefill, ttft", async () => {
    const response = await signedFetch(runner.url, "/v1/generate", request("How many shapes are there?"));
    await response.text();
    const timing = Object.fromEntries(
      (response.headers.get("server-timing") ?? "").split(",").map((entry) => {
        const [name, dur] = entry.trim().split(";dur=");
        return [name, Number(dur)];
      }),
    );
    expect(Object.keys(timing)).toEqual(["queue", "prepare", "prefill", "ttft"]);
    for (const ms of Object.values(timing)) expect(ms).toBeGreaterThanOrEqual(0);
    expect(timing.ttft).toBeGreaterThanOrEqual((timing.prepare ?? 0) + (timing.prefill ?? 0));
  });

  it("gives the same output alone and in a batch, at equal seeds", async () => {
    const long = { max_tokens: 64, min_tokens: 64 };
    const requests = [
      request("Describe the image.", { ...long, temperature: 0.9, seed: 11 }),
      request("How many circles are there?", { ...long, temperature: 0.7, top_k: 20, seed: 12 }),
      request("Detect every circle and person.", { seed: 13 }),
      request("What can you do?", { ...long, temperature: 1, top_p: 0.9, seed: 14 }, false),
      request("Is there a red square?", { ...long, temperature: 0.5, seed: 15 }),
      request("Describe the image.", { ...long, temperature: 0.9, seed: 16 }),
    ];
    const alone: string[] = [];
    for (const r of requests) alone.push(textOf(await generateEvents(runner.url, r)));
    const before = await metric(runner.url, "visionllm:decode_batch_size_sum");
    const beforeCount = await metric(runner.url, "visionllm:decode_batch_size_count");
    const hitsBefore = await metric(runner.url, "vllm:prefix_cache_hits_total");
    const together = await Promise.all(
      requests.map((r) => generateEvents(runner.url, { ...r, request_id: `${r.request_id}-b` })),
    );
    expect(together.map(textOf)).toEqual(alone);
    const sizes = (await metric(runner.url, "visionllm:decode_batch_size_sum")) - before;
    const batches = (await metric(runner.url, "visionllm:decode_batch_size_count")) - beforeCount;
    // Concurrent requests really shared decode steps.
    expect(sizes / batches).toBeGreaterThan(1.5);
    // Each prompt was seen alone first: the second round prefilled from the prefix cache, and the
    // texts above are the same all the same.
    expect(await metric(runner.url, "vllm:prefix_cache_hits_total")).toBeGreaterThan(hitsBefore);
  });

  it("answers 503 with Retry-After beyond the running and waiting bounds", async () => {
    // A runner of its own, with small bounds: 2 may run and 1 may wait, so of 5 long requests at
    // once at least 2 are refused at once.
    const small = await startRunner({
      RUNNER_BUNDLE: bundle,
      RUNNER_MAX_RUNNING: "2",
      RUNNER_MAX_WAITING: "1",
    });
    const controller = new AbortController();
    try {
      const long = request("Describe the image.", { max_tokens: 400, min_tokens: 400, temperature: 1 });
      const answered: Response[] = [];
      const pending = Array.from({ length: 5 }, (_, i) =>
        signedFetch(
          small.url,
          "/v1/generate",
          { ...long, request_id: `load-${i}` },
          { signal: controller.signal },
        )
          .then((r) => answered.push(r))
          .catch(() => undefined),
      );
      const until = Date.now() + 30_000;
      while (answered.filter((r) => r.status === 503).length < 2 && Date.now() < until) {
        await new Promise((r) => setTimeout(r, 50));
      }
      const refused = answered.filter((r) => r.status === 503);
      expect(
        refused.length,
        `statuses so far: ${answered.map((r) => r.status).join(",")}`,
      ).toBeGreaterThanOrEqual(2);
      for (const r of refused) {
        expect(Number(r.headers.get("retry-after"))).toBeGreaterThan(0);
        expect((await r.json()).error.code).toBe("overloaded");
      }
      expect(await metric(small.url, "vllm:num_requests_running")).toBe(2);
      controller.abort();
      await Promise.all(pending);
    } finally {
      controller.abort();
      await small.stop();
    }
  }, 90_000);

  it("frees a disconnected request's sequence within a second", async () => {
    const until = Date.now() + 10_000;
    while ((await metric(runner.url, "vllm:num_requests_running")) > 0 && Date.now() < until) {
      await new Promise((r) => setTimeout(r, 100));
    }
    const controller = new AbortController();
    const response = await signedFetch(
      runner.url,
      "/v1/generate",
      request("Describe the image.", { max_tokens: 800, min_tokens: 800, temperature: 1 }),
      { signal: controller.signal },
    );
    expect(response.status).toBe(200);
    // Read a few chunks without cancelling the body: the request must still be running.
    const reader = (response.body as ReadableStream<Uint8Array>).getReader();
    for (let i = 0; i < 3; i++) await reader.read();
    expect(await metric(runner.url, "vllm:num_requests_running")).toBe(1);
    controller.abort();
    const abortedAt = Date.now();
    let running = 1;
    while (running > 0 && Date.now() - abortedAt < 1000) {
      await new Promise((r) => setTimeout(r, 50));
      running = await metric(runner.url, "vllm:num_requests_running");
    }
    expect(running).toBe(0);
  });
});

describe("runner drain", () => {
  it("finishes in-flight work on SIGTERM, refuses new work, and exits 0", async () => {
    const runner = await startRunner({ RUNNER_BUNDLE: bundle });
    const inflight = generateEvents(
      runner.url,
      request("Describe the image.", { max_tokens: 60, min_tokens: 60, temperature: 1 }),
    );
    await new Promise((r) => setTimeout(r, 300));
    runner.process.kill("SIGTERM");
    await new Promise((r) => setTimeout(r, 100));
    const ready = await fetch(`${runner.url}/readyz`).catch(() => undefined);
    if (ready) expect(ready.status).toBe(503);
    const events = await inflight;
    expect(events.at(-1)).toMatchObject({ type: "done", finish_reason: "length" });
    expect(await runner.exited).toBe(0);
  }, 90_000);
});
