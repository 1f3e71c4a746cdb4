import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { ChatCompletionRequestSchema, describeZodError, samplingOf } from "../src";

const pngDataUrl = fc
  .uint8Array({ minLength: 1, maxLength: 64 })
  .map((bytes) => `data:image/png;base64,${Buffer.from(bytes).toString("base64")}`);
const httpsUrl = fc.webUrl({ validSchemes: ["https"] });

const contentPart = fc.oneof(
  fc.record({ type: fc.constant("text"), text: fc.string({ maxLength: 200 }) }),
  fc.record({
    type: fc.constant("image_url"),
    image_url: fc.record(
      { url: fc.oneof(pngDataUrl, httpsUrl), detail: fc.constantFrom("auto", "low", "high") },
      { requiredKeys: ["url"] },
    ),
  }),
  fc.record({
    type: fc.constant("region"),
    region: fc.oneof(
      fc
        .tuple(fc.nat(500), fc.nat(500), fc.integer({ min: 1, max: 100 }), fc.integer({ min: 1, max: 100 }))
        .map(([x, y, w, h]) => ({ box: [x, y, x + w, y + h] })),
      fc.tuple(fc.nat(500), fc.nat(500)).map((point) => ({ point, image_index: 0 })),
    ),
  }),
);

const message = fc.oneof(
  fc.record({ role: fc.constant("system"), content: fc.string({ maxLength: 100 }) }),
  fc.record({
    role: fc.constant("user"),
    content: fc.oneof(fc.string({ maxLength: 100 }), fc.array(contentPart, { minLength: 1, maxLength: 4 })),
  }),
  fc.record({
    role: fc.constant("assistant"),
    content: fc.oneof(fc.string({ maxLength: 100 }), fc.constant(null)),
  }),
);

const task = fc.oneof(
  fc.record({
    type: fc.constantFrom("detect", "segment"),
    categories: fc.array(fc.constantFrom("circle", "red square", "person", "shape"), {
      minLength: 1,
      maxLength: 4,
    }),
  }),
  fc.record({ type: fc.constant("ground"), expression: fc.constant("the biggest circle") }),
  fc.record({ type: fc.constantFrom("pose", "caption") }),
  fc.record({ type: fc.constant("generate"), prompt: fc.constant("a red circle on the left") }),
);

const validRequest = fc.record(
  {
    model: fc.constant("visionllm-v2-nano"),
    messages: fc.array(message, { minLength: 1, maxLength: 5 }),
    task,
    stream: fc.boolean(),
    stream_options: fc.record({ include_usage: fc.boolean() }),
    max_tokens: fc.integer({ min: 1, max: 4096 }),
    temperature: fc.double({ min: 0, max: 2, noNaN: true }),
    top_p: fc.double({ min: 0.01, max: 1, noNaN: true }),
    seed: fc.nat(),
    stop: fc.oneof(fc.constant("\n"), fc.array(fc.constantFrom("END", "###"), { maxLength: 4 })),
  },
  { requiredKeys: ["model", "messages"] },
);

/** Each corruption names the field it breaks; the error message must name it too. */
const corruptions: Array<{ field: string; patch: Record<string, unknown> }> = [
  { field: "model", patch: { model: 42 } },
  { field: "temperature", patch: { temperature: 7 } },
  { field: "top_p", patch: { top_p: 0 } },
  { field: "max_tokens", patch: { max_tokens: -3 } },
  { field: "seed", patch: { seed: 1.5 } },
  { field: "stop", patch: { stop: ["a", "b", "c", "d", "e"] } },
  { field: "n", patch: { n: 3 } },
  { field: "messages.0.role", patch: { messages: [{ role: "robot", content: "hi" }] } },
  {
    field: "messages.0.content.0.image_url.url",
    patch: {
      messages: [
        {
          role: "user",
          content: [{ type: "image_url", image_url: { url: "http://insecure.example/x.png" } }],
        },
      ],
    },
  },
  {
    field: "messages.0.content.0.region",
    patch: { messages: [{ role: "user", content: [{ type: "region", region: {} }] }] },
  },
  { field: "task.categories", patch: { task: { type: "detect", categories: [] } } },
  { field: "max_token", patch: { max_token: 5 } },
];

describe("ChatCompletionRequestSchema", () => {
  it("accepts every well-formed request", () => {
    fc.assert(
      fc.property(validRequest, (request) => {
        const parsed = ChatCompletionRequestSchema.safeParse(request);
        if (!parsed.success) throw new Error(describeZodError(parsed.error).message);
      }),
      { numRuns: 300 },
    );
  });

  it("rejects malformed requests with a message naming the offending field", () => {
    fc.assert(
      fc.property(validRequest, fc.constantFrom(...corruptions), (request, corruption) => {
        const broken = { ...structuredClone(request), ...corruption.patch };
        const parsed = ChatCompletionRequestSchema.safeParse(broken);
        expect(parsed.success).toBe(false);
        if (parsed.success) return;
        const { message } = describeZodError(parsed.error);
        expect(message).toContain(corruption.field);
      }),
      { numRuns: 300 },
    );
  });

  it("rejects arbitrary JSON without throwing", () => {
    fc.assert(
      fc.property(fc.jsonValue(), (value) => {
        const parsed = ChatCompletionRequestSchema.safeParse(value);
        if (!parsed.success) expect(describeZodError(parsed.error).message).toMatch(/^Invalid request: /);
      }),
      { numRuns: 500 },
    );
  });

  it("defaults sampling the way the runner applies it", () => {
    const request = ChatCompletionRequestSchema.parse({
      model: "m",
      messages: [{ role: "user", content: "hi" }],
      stop: "END",
    });
    expect(samplingOf(request, 256)).toEqual({
      max_tokens: 256,
      temperature: 0,
      top_p: 1,
      top_k: 0,
      min_tokens: 0,
      seed: null,
      stop: ["END"],
    });
  });
});
