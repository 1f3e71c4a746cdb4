import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  decodeMask,
  EventSequencer,
  encodeComment,
  encodeEvent,
  encodeMask,
  readEventStream,
  type StreamEvent,
  type UnnumberedEvent,
} from "../src";

const finite = fc.double({ min: -1e4, max: 1e4, noNaN: true, noDefaultInfinity: true });
const box = fc.tuple(finite, finite, finite, finite);
const text = fc.string({ unit: "binary", maxLength: 40 });
const mask = fc
  .tuple(fc.integer({ min: 1, max: 12 }), fc.integer({ min: 1, max: 12 }))
  .chain(([w, h]) =>
    fc.array(fc.boolean(), { minLength: w * h, maxLength: w * h }).map((bits) => encodeMask(bits, w, h)),
  );

const unnumbered: fc.Arbitrary<UnnumberedEvent> = fc.oneof(
  fc.record({ type: fc.constant("start" as const), id: text, model: text, created: fc.nat() }),
  fc.record({ type: fc.constant("text-delta" as const), delta: text }),
  fc.record({
    type: fc.constant("detections" as const),
    task: fc.constantFrom("detection" as const, "segmentation" as const, "grounding" as const),
    label: text,
    group: fc.nat(20),
    items: fc.array(
      fc.record({ label: text, score: finite, box, mask }, { requiredKeys: ["label", "score", "box"] }),
      { maxLength: 3 },
    ),
  }),
  fc.record({
    type: fc.constant("keypoints" as const),
    group: fc.nat(20),
    skeleton: fc.array(fc.tuple(fc.nat(10), fc.nat(10)), { maxLength: 3 }),
    items: fc.array(
      fc.record({
        label: text,
        score: finite,
        box,
        keypoints: fc.array(fc.record({ name: text, x: finite, y: finite, score: finite }), { maxLength: 3 }),
      }),
      { maxLength: 2 },
    ),
  }),
  fc.record({
    type: fc.constant("image-progress" as const),
    task: fc.constantFrom("generation" as const, "editing" as const),
    group: fc.nat(5),
    step: fc.nat(25),
    total_steps: fc.integer({ min: 1, max: 25 }),
  }),
  fc.record({
    type: fc.constant("image" as const),
    task: fc.constantFrom("generation" as const, "editing" as const),
    group: fc.nat(5),
    png_base64: fc.base64String(),
    width: fc.integer({ min: 1, max: 4096 }),
    height: fc.integer({ min: 1, max: 4096 }),
    seed: fc.nat(),
  }),
  fc.record({
    type: fc.constant("usage" as const),
    prompt_tokens: fc.nat(),
    completion_tokens: fc.nat(),
    total_tokens: fc.nat(),
  }),
  fc.record({
    type: fc.constant("error" as const),
    code: fc.constantFrom("overloaded" as const, "internal_error" as const, "canceled" as const),
    message: text,
    retryable: fc.boolean(),
  }),
  fc.record({
    type: fc.constant("done" as const),
    finish_reason: fc.constantFrom("stop" as const, "length" as const, "canceled" as const, "error" as const),
  }),
);

/** Splits bytes at the given cut points: SSE frames and UTF-8 characters end up torn anywhere. */
function chunked(bytes: Uint8Array, cuts: number[]): ReadableStream<Uint8Array> {
  const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  const pieces: Uint8Array[] = [];
  let last = 0;
  for (const p of [...points, bytes.length]) {
    pieces.push(bytes.slice(last, p));
    last = p;
  }
  return new ReadableStream({
    start(controller) {
      for (const piece of pieces) controller.enqueue(piece);
      controller.close();
    },
  });
}

async function collect(stream: ReadableStream<Uint8Array>): Promise<StreamEvent[]> {
  const out: StreamEvent[] = [];
  for await (const event of readEventStream(stream)) out.push(event);
  return out;
}

describe("event stream round trip", () => {
  it("encode -> SSE bytes split anywhere -> parse gives the same events", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(unnumbered, { minLength: 1, maxLength: 12 }),
        fc.array(fc.nat(), { maxLength: 30 }),
        async (events, cuts) => {
          const sequencer = new EventSequencer();
          const numbered = events.map((e) => sequencer.number(e) as StreamEvent);
          const wire = numbered.map((e, i) => (i % 3 === 0 ? encodeComment() : "") + encodeEvent(e)).join("");
          const parsed = await collect(chunked(new TextEncoder().encode(wire), cuts));
          expect(parsed).toEqual(JSON.parse(JSON.stringify(numbered)));
          expect(parsed.map((e) => e.sequence_number)).toEqual(numbered.map((_, i) => i));
        },
      ),
      { numRuns: 200 },
    );
  });

  it("refuses an event whose data does not match the schema", async () => {
    const wire = 'event: detections\nid: 0\ndata: {"type":"detections","sequence_number":0}\n\n';
    await expect(collect(chunked(new TextEncoder().encode(wire), []))).rejects.toThrow(
      /Malformed detections/,
    );
  });

  it("mask run-length encoding round-trips", () => {
    fc.assert(
      fc.property(fc.array(fc.boolean(), { minLength: 1, maxLength: 400 }), (bits) => {
        const encoded = encodeMask(bits, bits.length, 1);
        expect(Array.from(decodeMask(encoded))).toEqual(bits.map((b) => (b ? 1 : 0)));
        expect(encoded.counts.reduce((a, b) => a + b, 0)).toBe(bits.length);
      }),
    );
  });
});
