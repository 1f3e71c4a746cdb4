import { readFileSync } from "node:fs";
import { renderChat } from "@visionllm/protocol";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createBackend } from "../src/backend/onnx";
import { loadBundle } from "../src/bundle/load";
import { PrefixCache } from "../src/engine/prefix-cache";
import type { KVCache } from "../src/model/kv-slots";
import { type PositionKey, preparePrompt } from "../src/model/prompt";
import { VisionLLM } from "../src/model/visionllm";

/**
 * Prefix reuse must compute what a full prefill computes: a follow-up turn that extends an earlier
 * prompt, and the same prompt again, prefill only their new tokens on top of the kept cache.
 */

let model: VisionLLM;

beforeAll(async () => {
  model = await VisionLLM.load(await loadBundle("model/bundle"), await createBackend({ provider: "wasm" }));
});
afterAll(async () => {
  await model?.release();
});

const maxDiff = (a: Float32Array, b: Float32Array) => {
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs((a[i] ?? 0) - (b[i] ?? Number.NaN)));
  return d;
};

function prompt(turns: Array<[string, string]>): number[] {
  const m = model.manifest;
  const messages = turns.flatMap(([user, assistant]) => [
    { role: "user" as const, content: user },
    ...(assistant ? [{ role: "assistant" as const, content: assistant }] : []),
  ]);
  return model.tokenizer.encode(renderChat(m.chat_template, m.system_prompt, messages));
}

async function lastLogits(ids: number[], cache: KVCache): Promise<Float32Array> {
  const embeds = model.tableRows("embed_tokens", ids.slice(cache.length));
  const { logits } = await model.llmStep(embeds, cache);
  const vocab = model.manifest.config.vocab_size;
  return logits.slice(logits.length - vocab);
}

const same = (a: readonly PositionKey[], b: readonly PositionKey[]) => {
  let i = 0;
  while (i < Math.min(a.length, b.length) && a[i] === b[i]) i++;
  return i;
};

describe("prefix cache", () => {
  it("reuses the longest shared prefix and matches a full prefill", async () => {
    const cache = new PrefixCache(64 << 20, model.heads, model.headDim);
    const first = prompt([["Hello there.", ""]]);
    const followUp = prompt([
      ["Hello there.", "Hello! I can answer questions about images."],
      ["What can you do?", ""],
    ]);
    const lease = await cache.acquire(first);
    expect(lease.cache).toBeUndefined();
    const kv = model.emptyCache();
    await lastLogits(first, kv);
    lease.done(kv);

    for (const ids of [followUp, first]) {
      const { cache: reused, done } = await cache.acquire(ids);
      if (!reused) throw new Error("expected a prefix hit");
      // The follow-up shares the first prompt up to its closing "ASSISTANT:"; the same prompt
      // again reuses all but its last token.
      expect(reused.length).toBe(Math.min(same(first, ids), ids.length - 1));
      expect(reused.length).toBeGreaterThan(first.length / 2);
      const full = await lastLogits(ids, model.emptyCache());
      expect(maxDiff(await lastLogits(ids, reused), full)).toBeLessThan(1e-4);
      done(reused);
    }
    expect(cache.hit).toBeGreaterThan(0);
    expect(cache.queried).toBe(first.length * 2 + followUp.length);
  });

  it("makes a prompt wait for a running prefill it shares more with, then reuses it", async () => {
    const cache = new PrefixCache(64 << 20, model.heads, model.headDim);
    const ids = prompt([["How many circles are there?", ""]]);
    const first = await cache.acquire(ids);
    let second: Awaited<ReturnType<PrefixCache["acquire"]>> | undefined;
    const waiting = cache.acquire(ids).then((lease) => {
      second = lease;
    });
    const kv = model.emptyCache();
    await lastLogits(ids, kv);
    await new Promise((resolve) => setImmediate(resolve));
    expect(second).toBeUndefined();
    first.done(kv);
    await waiting;
    expect(second?.cache?.length).toBe(ids.length - 1);
    second?.done();
    // A prefill that failed releases its waiters, which then prefill themselves.
    const other = prompt([["What color is the circle?", ""]]);
    const failing = await cache.acquire(other);
    const after = cache.acquire(other);
    failing.done();
    const lease = await after;
    expect(lease.cache?.length ?? 0).toBeLessThanOrEqual(same(ids, other));
    lease.done();
  });

  it("replaces a prompt that a longer one covers, and stays within its byte budget", async () => {
    const ids = prompt([["How many circles are there?", ""]]);
    const kv = model.emptyCache();
    await lastLogits(ids, kv);
    const entryBytes = kv.layers.reduce((n, l) => n + l.key.byteLength + l.value.byteLength, 0);
    const cache = new PrefixCache(entryBytes * 2.5, model.heads, model.headDim);
    const keep = async (keys: PositionKey[], value: KVCache) => (await cache.acquire(keys)).done(value);
    await keep(ids, kv);
    const longer = [...ids, ...ids.slice(0, 3)];
    const kvLonger = model.emptyCache();
    await lastLogits(longer, kvLonger);
    await keep(longer, kvLonger);
    expect(cache.size).toBe(1);
    // Same ids under other image keys: separate entries; the oldest go once over budget.
    for (const tag of ["a", "b", "c", "d"])
      await keep(
        ids.map((id, i) => (i === 2 ? `image:${tag}:0` : id)),
        kv,
      );
    expect(cache.bytes).toBeLessThanOrEqual(entryBytes * 2.5);
    expect(cache.size).toBe(2);
  });

  it("keys image positions by the image's digest, so prompts about other images share only the text before it", async () => {
    const m = model.manifest;
    const bytes = new Uint8Array(readFileSync("test/fixtures/scene-detect.png"));
    const text = renderChat(m.chat_template, m.system_prompt, [
      { role: "user", content: `${m.special_tokens.image}\nWhat color is the circle?` },
    ]);
    const prepare = (sha256?: string) =>
      preparePrompt(model, {
        prompt: text,
        images: [sha256 ? { bytes, sha256 } : { bytes }],
        regions: [],
        sampling: { max_tokens: 8 },
        maxImagePixels: 1 << 24,
      });
    const [a, a2, b, none, none2] = await Promise.all([
      prepare("aa"),
      prepare("aa"),
      prepare("bb"),
      prepare(),
      prepare(),
    ]);
    const firstPatch = a.ids.indexOf(model.tokenizer.id(m.special_tokens.image_patch));
    expect(firstPatch).toBeGreaterThan(0);
    expect(same(a.keys, a2.keys)).toBe(a.keys.length);
    expect(same(a.keys, b.keys)).toBe(firstPatch);
    expect(same(none.keys, none2.keys)).toBe(firstPatch);
  });
});
