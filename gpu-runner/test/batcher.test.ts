import { describe, expect, it } from "vitest";
import { type BatchStepper, DecodeBatcher } from "../src/engine/batcher";
import type { KVCache } from "../src/model/visionllm";

/**
 * The scheduler alone, over a stand-in model whose batched step the test finishes by hand: which
 * asks go together, and that one batch runs at a time.
 */
class HeldModel implements BatchStepper {
  sizes: number[] = [];
  running = 0;
  mostAtOnce = 0;
  #finish: Array<() => void> = [];

  llmBatchStep(items: ReadonlyArray<{ embeds: Float32Array; cache: KVCache }>) {
    this.sizes.push(items.length);
    this.running++;
    this.mostAtOnce = Math.max(this.mostAtOnce, this.running);
    return new Promise<Array<{ logits: Float32Array; hidden: Float32Array }>>((resolve) => {
      this.#finish.push(() => {
        this.running--;
        resolve(items.map((item) => ({ logits: item.embeds, hidden: item.embeds })));
      });
    });
  }

  /** Finish the oldest running batch. */
  finish(): void {
    this.#finish.shift()?.();
  }
}

const cache = (): KVCache => ({}) as KVCache;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe("DecodeBatcher", () => {
  it("runs every member's step as one batch once all have asked", async () => {
    const model = new HeldModel();
    const batcher = new DecodeBatcher(model, { maxBatch: 16, maxWaitMs: 10_000 });
    for (let i = 0; i < 3; i++) batcher.join();
    const steps = [0, 1, 2].map((i) => batcher.step(new Float32Array([i]), cache()));
    expect(model.sizes).toEqual([3]);
    model.finish();
    const rows = await Promise.all(steps);
    expect(rows.map((r) => r.logits[0])).toEqual([0, 1, 2]);
  });

  it("holds asks made while a batch runs and sends them with the returning members", async () => {
    // Four members; two come back late (as after a decoder). The old scheduler started the late
    // pair as a second batch behind the first and the halves then alternated for good.
    const model = new HeldModel();
    const batcher = new DecodeBatcher(model, { maxBatch: 16, maxWaitMs: 1 });
    for (let i = 0; i < 4; i++) batcher.join();
    const first = [0, 1].map((i) => batcher.step(new Float32Array([i]), cache()));
    await sleep(20);
    expect(model.sizes).toEqual([2]);
    const late = [2, 3].map((i) => batcher.step(new Float32Array([i]), cache()));
    await sleep(20);
    expect(model.sizes).toEqual([2]);
    model.finish();
    await Promise.all(first);
    const again = [0, 1].map((i) => batcher.step(new Float32Array([i]), cache()));
    expect(model.sizes).toEqual([2, 4]);
    model.finish();
    await Promise.all([...late, ...again]);
    expect(model.mostAtOnce).toBe(1);
  });

  it("does not wait for a member that steps out, and waits for it again once back", async () => {
    const model = new HeldModel();
    const batcher = new DecodeBatcher(model, { maxBatch: 16, maxWaitMs: 10_000 });
    for (let i = 0; i < 3; i++) batcher.join();
    const steps = [0, 1].map((i) => batcher.step(new Float32Array([i]), cache()));
    expect(model.sizes).toEqual([]);
    batcher.leave();
    expect(model.sizes).toEqual([2]);
    model.finish();
    await Promise.all(steps);
    batcher.join();
    const next = [0, 1].map((i) => batcher.step(new Float32Array([i]), cache()));
    expect(model.sizes).toEqual([2]);
    const third = batcher.step(new Float32Array([2]), cache());
    expect(model.sizes).toEqual([2, 3]);
    model.finish();
    await Promise.all([...next, third]);
  });

  it("starts a partial batch after maxWaitMs, and splits asks beyond maxBatch", async () => {
    const model = new HeldModel();
    const batcher = new DecodeBatcher(model, { maxBatch: 2, maxWaitMs: 5 });
    for (let i = 0; i < 4; i++) batcher.join();
    const one = batcher.step(new Float32Array([0]), cache());
    expect(model.sizes).toEqual([]);
    await sleep(30);
    expect(model.sizes).toEqual([1]);
    model.finish();
    await one;
    const three = [0, 1, 2].map((i) => batcher.step(new Float32Array([i]), cache()));
    expect(model.sizes).toEqual([1, 2]);
    model.finish();
    await sleep(30);
    expect(model.sizes).toEqual([1, 2, 1]);
    model.finish();
    await Promise.all(three);
    expect(model.mostAtOnce).toBe(1);
  });

  it("fails every step of a batch whose run fails, and keeps serving", async () => {
    let fail = true;
    const model: BatchStepper = {
      llmBatchStep: async (items) => {
        if (fail) throw new Error("device lost");
        return items.map((item) => ({ logits: item.embeds, hidden: item.embeds }));
      },
    };
    const batcher = new DecodeBatcher(model, { maxBatch: 8, maxWaitMs: 1 });
    batcher.join();
    batcher.join();
    const failed = [0, 1].map((i) => batcher.step(new Float32Array([i]), cache()));
    for (const step of failed) await expect(step).rejects.toThrow("device lost");
    fail = false;
    const ok = await Promise.all([0, 1].map((i) => batcher.step(new Float32Array([i]), cache())));
    expect(ok).toHaveLength(2);
  });
});
