import { ErrorBodySchema } from "@visionllm/protocol";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { dataUrl, pngClaiming } from "../helpers/png";
import { type Spawned, startEdge } from "../helpers/processes";
import { startFakeRunner } from "./fake-runner";
import { record } from "./tally";

/** Hostile input at the edge: no 5xx, every refusal in the documented error shape. */

// npm test runs a short version; npm run test:reliability (RELIABILITY_FULL=1) the full one.
const FULL = process.env.RELIABILITY_FULL === "1";
const RUNS = Number(process.env.RELIABILITY_BAD_INPUTS ?? (FULL ? 10_000 : 500));

/** A PNG whose header claims 60000 x 60000 pixels over a few hundred bytes of data. */
const decompressionBomb = () => dataUrl(pngClaiming(60000, 60000));

describe("bad input", () => {
  let edge: Spawned & { edge: string; apiKey: string };
  let closeFake: () => void = () => {};

  beforeAll(async () => {
    const fake = await startFakeRunner("ok");
    closeFake = () => fake.server.close();
    // A generous rate limit: this suite measures input handling, not the limiter.
    edge = await startEdge({
      runnerUrls: fake.url,
      vars: { DEFAULT_RPM: "1000000", DEFAULT_MAX_CONCURRENT: "64" },
    });
  }, 120_000);
  afterAll(async () => {
    await edge?.stop();
    closeFake();
  });

  const post = (body: string, headers: Record<string, string> = {}) =>
    fetch(`${edge.edge}/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${edge.apiKey}`, "content-type": "application/json", ...headers },
      body,
    });

  async function expectRefused(response: Response, status?: number) {
    if (status !== undefined) expect(response.status).toBe(status);
    expect(response.status).toBeGreaterThanOrEqual(400);
    expect(response.status).toBeLessThan(500);
    expect(ErrorBodySchema.safeParse(await response.json()).success).toBe(true);
  }

  it(`survives ${RUNS} generated malformed requests: no 5xx, every error documented`, async () => {
    const valid = { model: "visionllm-v2-nano", messages: [{ role: "user", content: "Hello!" }] };
    const mutation = fc.oneof(
      fc.jsonValue().map((v) => JSON.stringify(v)),
      fc
        .record({
          key: fc.constantFrom(
            "model",
            "messages",
            "temperature",
            "max_tokens",
            "top_p",
            "seed",
            "stop",
            "task",
            "n",
            "stream",
            "stream_options",
            "top_k",
            "min_tokens",
          ),
          value: fc.jsonValue(),
        })
        .map(({ key, value }) => JSON.stringify({ ...valid, [key]: value })),
      fc
        .record({ role: fc.string(), content: fc.jsonValue() })
        .map((m) => JSON.stringify({ ...valid, messages: [m] })),
      fc.string({ maxLength: 200 }),
      fc.constant("{"),
    );
    const statuses = new Map<number, number>();
    const samples = await fc.sample(mutation, { numRuns: RUNS, seed: 42 });
    for (let i = 0; i < samples.length; i += 16) {
      await Promise.all(
        samples.slice(i, i + 16).map(async (body) => {
          const response = await post(body);
          statuses.set(response.status, (statuses.get(response.status) ?? 0) + 1);
          if (response.status >= 500)
            throw new Error(`5xx for ${body.slice(0, 200)}: ${await response.text()}`);
          if (response.status >= 400)
            expect(ErrorBodySchema.safeParse(await response.json()).success, body).toBe(true);
          else await response.text();
        }),
      );
    }
    console.log("bad-input statuses", Object.fromEntries(statuses));
    record({
      suite: "bad-input",
      cases: samples.length,
      fiveXX: [...statuses].filter(([s]) => s >= 500).reduce((a, [, n]) => a + n, 0),
    });
  }, 1_200_000);

  it("refuses oversized bodies, decompression bombs, wrong content types and absurd parameters", async () => {
    await expectRefused(await post("x".repeat(25 * 1024 * 1024)), 413);
    const bomb = await post(
      JSON.stringify({
        model: "visionllm-v2-nano",
        messages: [
          { role: "user", content: [{ type: "image_url", image_url: { url: decompressionBomb() } }] },
        ],
      }),
    );
    await expectRefused(bomb, 413);
    await expectRefused(await post("hello", { "content-type": "text/plain" }), 415);
    const gif = `data:image/gif;base64,${Buffer.from("GIF89a").toString("base64")}`;
    await expectRefused(
      await post(
        JSON.stringify({
          model: "visionllm-v2-nano",
          messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: gif } }] }],
        }),
      ),
      415,
    );
    for (const absurd of [
      { max_tokens: 1e12 },
      { temperature: -1 },
      { top_p: 7 },
      { seed: -5 },
      { n: 4 },
      { stop: Array(10).fill("x") },
      { max_tokens: 4096 },
    ]) {
      await expectRefused(
        await post(
          JSON.stringify({
            model: "visionllm-v2-nano",
            messages: [{ role: "user", content: "hi" }],
            ...absurd,
          }),
        ),
        400,
      );
    }
  });
});
