import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { type KVCache, KVSlots } from "../src/model/kv-slots";

/**
 * The slot cache against a plain model of it: every sequence's cache as its own arrays. Whatever
 * sequence of admissions, steps, evictions and releases happens, each resident row must hold
 * exactly its sequence's keys and values, masked to its length, and evicted sequences get their
 * cache back intact.
 */

const LAYERS = 2;
const HEADS = 2;
const HEAD_DIM = 3;

/** The reference cache as [layer*2+kind][head][position][dim]. */
type Reference = number[][][][];

function cacheFrom(ref: Reference): KVCache {
  const length = ref[0]?.[0]?.length ?? 0;
  const flat = (t: number) => Float32Array.from((ref[t] ?? []).flat(2));
  return {
    layers: Array.from({ length: LAYERS }, (_, l) => ({ key: flat(2 * l), value: flat(2 * l + 1) })),
    length,
  };
}

function rowOf(slots: KVSlots, cache: KVCache): Reference {
  const row = slots.rowOf(cache);
  if (row === undefined) throw new Error("not resident");
  const views = slots.pastViews();
  return views.map((view) =>
    Array.from({ length: HEADS }, (_, h) =>
      Array.from({ length: cache.length }, (_, p) => {
        const start = ((row * HEADS + h) * slots.capacity + p) * HEAD_DIM;
        return Array.from(view.subarray(start, start + HEAD_DIM));
      }),
    ),
  );
}

function ownOf(cache: KVCache): Reference {
  return cache.layers.flatMap((layer) =>
    [layer.key, layer.value].map((data) =>
      Array.from({ length: HEADS }, (_, h) =>
        Array.from({ length: cache.length }, (_, p) => {
          const start = (h * cache.length + p) * HEAD_DIM;
          return Array.from(data.subarray(start, start + HEAD_DIM));
        }),
      ),
    ),
  );
}

const op = fc.oneof(
  fc.record({ kind: fc.constant("admit" as const), seq: fc.nat(5), length: fc.integer({ min: 1, max: 70 }) }),
  fc.record({ kind: fc.constant("step" as const), members: fc.uniqueArray(fc.nat(5), { maxLength: 6 }) }),
  fc.record({ kind: fc.constant("evict" as const), seq: fc.nat(5), keep: fc.boolean() }),
);

describe("KV slots", () => {
  it("keep every row equal to its sequence's own cache through admissions, steps and evictions", () => {
    fc.assert(
      fc.property(fc.array(op, { maxLength: 40 }), (ops) => {
        const slots = new KVSlots(LAYERS, HEADS, HEAD_DIM, 8);
        const refs = new Map<number, Reference>();
        const caches = new Map<number, KVCache>();
        let counter = 0;
        const value = () => counter++ % 997; // integers: exact in float32
        for (const o of ops) {
          if (o.kind === "admit") {
            const existing = caches.get(o.seq);
            if (existing && slots.has(existing)) continue;
            const ref: Reference =
              refs.get(o.seq) ??
              Array.from({ length: 2 * LAYERS }, () =>
                Array.from({ length: HEADS }, () =>
                  Array.from({ length: o.length }, () => Array.from({ length: HEAD_DIM }, value)),
                ),
              );
            refs.set(o.seq, ref);
            const cache = existing ?? cacheFrom(ref);
            caches.set(o.seq, cache);
            slots.admit(cache);
            expect(cache.layers.every((l) => l.key.length === 0)).toBe(true);
          } else if (o.kind === "step") {
            // A step runs over exactly the resident rows: the runner evicts the others first.
            const members = o.members.filter((s) => {
              const c = caches.get(s);
              return c !== undefined && slots.has(c);
            });
            for (const cache of slots.residents())
              if (![...members].some((s) => caches.get(s) === cache)) slots.evict(cache, true);
            if (members.length === 0) continue;
            slots.prepare();
            expect(slots.capacity).toBeGreaterThan(Math.max(...slots.residents().map((c) => c.length)));
            const mask = slots.attentionMask();
            const positions = slots.positions();
            const fresh = Array.from(
              { length: 2 * LAYERS },
              () => new Float32Array(slots.size * HEADS * HEAD_DIM),
            );
            slots.residents().forEach((cache, row) => {
              expect(Number(positions[row])).toBe(cache.length);
              for (let p = 0; p < slots.capacity; p++)
                expect(mask[row * slots.capacity + p]).toBe(p < cache.length ? 1n : 0n);
              const seq = [...caches].find(([, c]) => c === cache)?.[0] ?? -1;
              const ref = refs.get(seq) ?? [];
              ref.forEach((tensor, t) => {
                tensor.forEach((head, h) => {
                  const token = Array.from({ length: HEAD_DIM }, value);
                  fresh[t]?.set(token, (row * HEADS + h) * HEAD_DIM);
                  head.push(token);
                });
              });
            });
            slots.append(fresh);
          } else {
            const cache = caches.get(o.seq);
            if (!cache || !slots.has(cache)) continue;
            slots.evict(cache, o.keep);
            if (o.keep) expect(ownOf(cache)).toEqual(refs.get(o.seq));
            else {
              caches.delete(o.seq);
              refs.delete(o.seq);
            }
          }
          for (const [seq, cache] of caches) {
            if (slots.has(cache)) expect(rowOf(slots, cache)).toEqual(refs.get(seq));
            else expect(ownOf(cache)).toEqual(refs.get(seq));
          }
          const rows = slots.residents().map((c) => slots.rowOf(c));
          expect(rows).toEqual(rows.map((_, i) => i));
        }
        for (const cache of slots.residents()) slots.evict(cache, false);
        expect(slots.allocated).toBe(0);
      }),
      { numRuns: 200 },
    );
  });
});
