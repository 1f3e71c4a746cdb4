import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createBackend } from "../src/backend/onnx";
import { loadBundle } from "../src/bundle/load";
import type { KVCache } from "../src/model/visionllm";
import { VisionLLM } from "../src/model/visionllm";

/**
 * Both batched decode paths: `llm_decode` over the KV slots (the bundle's graph that reads the cache
 * in place), and `llm` with the last batch's tensors kept resident (bundles without it). Whatever
 * the membership does (steady, reordered, one leaving, one stepping alone for a super-link splice,
 * one released), every sequence must compute exactly what it computes alone.
 */

const maxDiff = (a: Float32Array, b: Float32Array) => {
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs((a[i] ?? 0) - (b[i] ?? Number.NaN)));
  return d;
};

describe.each([
  { path: "llm_decode", decodeGraph: true },
  { path: "llm", decodeGraph: false },
])("batched decode on $path", ({ path, decodeGraph }) => {
  let model: VisionLLM;

  beforeAll(async () => {
    model = await VisionLLM.load(
      await loadBundle("model/bundle"),
      await createBackend({ provider: "wasm" }),
      {
        decodeGraph,
      },
    );
  });
  afterAll(async () => {
    await model?.release();
  });

  it("runs on the graph it names", () => {
    expect(model.decodePath).toBe(path);
  });

  it("matches each sequence run alone through joins, reorders, leaves and solo steps", async () => {
    const D = model.dim;
    const ids = model.tokenizer.encode("Describe the image. How many circles are there?");
    const token = (seq: number, step: number) =>
      model.tableRows("embed_tokens", [ids[(seq * 7 + step * 3) % ids.length] ?? 0]);
    // Prompts of different lengths, so rows are left-padded differently.
    const prompt = (seq: number) => model.tableRows("embed_tokens", ids.slice(0, 4 + seq * 3));
    const n = 4;
    const batched: KVCache[] = [];
    const alone: KVCache[] = [];
    for (let s = 0; s < n; s++) {
      batched.push(model.emptyCache());
      alone.push(model.emptyCache());
      await model.llmStep(prompt(s), batched[s] as KVCache);
      await model.llmStep(prompt(s), alone[s] as KVCache);
    }
    // Membership per step: steady (resident reuse), reversed order (reuse with a row map), one
    // missing (repack), back to all, then sequence 1 steps alone (a super-link splice settles it).
    const schedule: number[][] = [
      [0, 1, 2, 3],
      [0, 1, 2, 3],
      [3, 2, 1, 0],
      [0, 2, 3],
      [0, 2, 3],
      [0, 1, 2, 3],
      [1],
      [0, 1, 2, 3],
      [0, 1, 2, 3],
    ];
    const steps = new Array(n).fill(0);
    let worst = 0;
    for (const members of schedule) {
      const solo = members.length === 1;
      const inputs = members.map((s) => ({ embeds: token(s, steps[s]), cache: batched[s] as KVCache }));
      const results = solo
        ? [await model.llmStep(inputs[0]?.embeds ?? new Float32Array(D), batched[members[0] ?? 0] as KVCache)]
        : await model.llmBatchStep(inputs);
      for (const [k, s] of members.entries()) {
        const reference = await model.llmStep(token(s, steps[s]), alone[s] as KVCache);
        worst = Math.max(worst, maxDiff(results[k]?.logits ?? new Float32Array(0), reference.logits));
        expect(batched[s]?.length).toBe(alone[s]?.length);
        steps[s]++;
      }
    }
    expect(worst).toBeLessThan(1e-4);
    // Releasing a resident member frees its memory at once and leaves the others intact.
    model.releaseCache(batched[2] as KVCache);
    expect(batched[2]?.length).toBe(0);
    expect(batched[2]?.layers.every((l) => l.key.length === 0 && l.value.length === 0)).toBe(true);
    const after = await model.llmStep(token(0, steps[0]), batched[0] as KVCache);
    const reference = await model.llmStep(token(0, steps[0]), alone[0] as KVCache);
    expect(maxDiff(after.logits, reference.logits)).toBeLessThan(1e-4);
    steps[0]++;
    // A sequence released while its batch is running (a client gone mid-step) is emptied when the
    // step ends, and the others go on unharmed.
    const running = model.llmBatchStep(
      [0, 1, 3].map((s) => ({ embeds: token(s, steps[s]), cache: batched[s] as KVCache })),
    );
    model.releaseCache(batched[1] as KVCache);
    const results = await running;
    expect(batched[1]?.length).toBe(0);
    for (const [k, s] of [0, 3].entries()) {
      const ref = await model.llmStep(token(s, steps[s]), alone[s] as KVCache);
      expect(maxDiff(results[k === 0 ? 0 : 2]?.logits ?? new Float32Array(0), ref.logits)).toBeLessThan(1e-4);
      steps[s]++;
    }
    const next = await model.llmBatchStep(
      [0, 3].map((s) => ({ embeds: token(s, steps[s]), cache: batched[s] as KVCache })),
    );
    for (const [k, s] of [0, 3].entries()) {
      const ref = await model.llmStep(token(s, steps[s]), alone[s] as KVCache);
      expect(maxDiff(next[k]?.logits ?? new Float32Array(0), ref.logits)).toBeLessThan(1e-4);
    }
  });
});
