import { z } from "zod";

/**
 * Public requests: OpenAI Chat Completions, plus this project's extensions (visual prompts as
 * `region` content parts and a structured `task`). Strict: unknown fields are refused, so a typo
 * such as `max_token` fails loudly instead of being ignored.
 */

const MAX_URL_CHARS = 16 * 1024 * 1024;

export const ImageUrlSchema = z
  .string()
  .max(MAX_URL_CHARS, "image URL or data URL is too long (16 MiB of text at most)")
  .refine((url) => url.startsWith("data:image/") || url.startsWith("https://"), {
    message: "must be an https:// URL or a data:image/...;base64, URL",
  });

export const TextPartSchema = z.strictObject({
  type: z.literal("text"),
  text: z.string().max(32_768, "text part is longer than 32768 characters"),
});

export const ImagePartSchema = z.strictObject({
  type: z.literal("image_url"),
  image_url: z.strictObject({
    url: ImageUrlSchema,
    detail: z.enum(["auto", "low", "high"]).optional(),
  }),
});

const coordinate = z.number().finite().nonnegative("coordinates are pixels of the image, 0 or more");

export const RegionBoxSchema = z
  .tuple([coordinate, coordinate, coordinate, coordinate])
  .refine(([x0, y0, x1, y1]) => x1 > x0 && y1 > y0, {
    message: "box must be [x0, y0, x1, y1] with x1 > x0, y1 > y0",
  });

/** A visual prompt (the paper's `<region>`): a box, a point or a PNG mask on one of the request's images. */
export const RegionSchema = z
  .strictObject({
    image_index: z
      .number()
      .int()
      .nonnegative()
      .default(0)
      .describe("which image of the conversation, in order"),
    box: RegionBoxSchema.optional(),
    point: z.tuple([coordinate, coordinate]).optional(),
    mask: z
      .string()
      .startsWith("data:image/png;base64,", "mask must be a data:image/png;base64, URL")
      .max(4 * 1024 * 1024)
      .optional(),
  })
  .refine((r) => [r.box, r.point, r.mask].filter((v) => v !== undefined).length === 1, {
    message: "give exactly one of box, point or mask",
  });

export const RegionPartSchema = z.strictObject({
  type: z.literal("region"),
  region: RegionSchema,
});

export const ContentPartSchema = z.discriminatedUnion("type", [
  TextPartSchema,
  ImagePartSchema,
  RegionPartSchema,
]);
export type ContentPart = z.infer<typeof ContentPartSchema>;

export const MessageSchema = z.discriminatedUnion("role", [
  z.strictObject({
    role: z.literal("system"),
    content: z.union([z.string().max(32_768), z.array(TextPartSchema).max(16)]),
    name: z.string().max(64).optional(),
  }),
  // OpenAI's newer name for system instructions; read as a system message.
  z.strictObject({
    role: z.literal("developer"),
    content: z.union([z.string().max(32_768), z.array(TextPartSchema).max(16)]),
    name: z.string().max(64).optional(),
  }),
  z.strictObject({
    role: z.literal("user"),
    content: z.union([z.string().max(32_768), z.array(ContentPartSchema).min(1).max(32)]),
    name: z.string().max(64).optional(),
  }),
  z.strictObject({
    role: z.literal("assistant"),
    content: z.union([z.string().max(32_768), z.array(TextPartSchema).max(16)]).nullable(),
    name: z.string().max(64).optional(),
  }),
]);
export type Message = z.infer<typeof MessageSchema>;

const category = z.string().trim().min(1).max(64);

/** Structured tasks: the edge renders each into the instruction the model was trained on. */
export const TaskSchema = z.discriminatedUnion("type", [
  z.strictObject({ type: z.literal("detect"), categories: z.array(category).min(1).max(16) }),
  z.strictObject({ type: z.literal("segment"), categories: z.array(category).min(1).max(16) }),
  z.strictObject({ type: z.literal("ground"), expression: z.string().trim().min(1).max(256) }),
  z.strictObject({ type: z.literal("pose") }),
  z.strictObject({ type: z.literal("caption") }),
  z.strictObject({ type: z.literal("ask"), question: z.string().trim().min(1).max(1024) }),
  z.strictObject({ type: z.literal("generate"), prompt: z.string().trim().min(1).max(1024) }),
  z.strictObject({ type: z.literal("edit"), instruction: z.string().trim().min(1).max(1024) }),
]);
export type Task = z.infer<typeof TaskSchema>;

/**
 * OpenAI fields this model has no use for. Clients send their neutral value by default, so that
 * value is accepted and changes nothing; any other value asks for what the model cannot do and is
 * refused, naming the field.
 */
function neutralOnly<T extends z.ZodType>(
  schema: T,
  isNeutral: (value: z.output<T>) => boolean,
  message: string,
) {
  return schema.refine(isNeutral, { message }).nullable().optional();
}

const compatibilityFields = {
  presence_penalty: neutralOnly(
    z.number().min(-2).max(2),
    (v) => v === 0,
    "penalties are not supported; send 0 or leave it out",
  ),
  frequency_penalty: neutralOnly(
    z.number().min(-2).max(2),
    (v) => v === 0,
    "penalties are not supported; send 0 or leave it out",
  ),
  logit_bias: neutralOnly(
    z.record(z.string(), z.number()),
    (v) => Object.keys(v).length === 0,
    "logit_bias is not supported",
  ),
  logprobs: neutralOnly(
    z.boolean(),
    (v) => !v,
    "log probabilities are not returned by this model; send false or leave it out",
  ),
  top_logprobs: neutralOnly(
    z.number().int().min(0).max(20),
    (v) => v === 0,
    "log probabilities are not returned by this model",
  ),
  response_format: neutralOnly(
    z.object({ type: z.string() }).loose(),
    (v) => v.type === "text",
    'only {"type": "text"} is supported: this model does not produce JSON modes',
  ),
  tools: neutralOnly(z.array(z.unknown()), (v) => v.length === 0, "this model cannot call tools"),
  tool_choice: neutralOnly(
    z.union([z.string().max(64), z.object({}).loose()]),
    (v) => v === "none",
    'this model cannot call tools; send "none" or leave it out',
  ),
  parallel_tool_calls: z.boolean().nullable().optional().describe("accepted, no effect (no tools)"),
  store: z.boolean().nullable().optional().describe("accepted, no effect: completions are not stored"),
  metadata: z.record(z.string(), z.string()).nullable().optional().describe("accepted, no effect"),
  service_tier: z.string().max(64).nullable().optional().describe("accepted, no effect"),
};

export const StopSchema = z.union([
  z.string().min(1).max(64),
  z.array(z.string().min(1).max(64)).max(4, "at most 4 stop sequences"),
]);

export const ChatCompletionRequestSchema = z
  .strictObject({
    model: z.string().min(1).max(128),
    messages: z.array(MessageSchema).max(64, "at most 64 messages").default([]),
    task: TaskSchema.optional().describe("extension: a structured task turned into the prompt by the edge"),
    stream: z.boolean().default(false),
    stream_options: z.strictObject({ include_usage: z.boolean().optional() }).nullable().optional(),
    max_tokens: z.number().int().min(1).max(4096).nullable().optional(),
    max_completion_tokens: z.number().int().min(1).max(4096).nullable().optional(),
    temperature: z.number().min(0).max(2).nullable().optional(),
    top_p: z.number().gt(0).max(1).nullable().optional(),
    top_k: z.number().int().min(0).max(1000).optional().describe("extension: 0 disables"),
    min_tokens: z
      .number()
      .int()
      .min(0)
      .max(4096)
      .optional()
      .describe("extension (as vLLM): end of sequence is not chosen before this many tokens"),
    seed: z
      .number()
      .int()
      .min(0)
      .max(2 ** 32 - 1)
      .nullable()
      .optional(),
    stop: StopSchema.nullable().optional(),
    n: z.literal(1, "only n = 1 is supported").optional(),
    user: z.string().max(256).optional(),
    ...compatibilityFields,
  })
  .refine((r) => r.messages.length > 0 || r.task !== undefined, {
    message: "give messages, a task, or both",
    path: ["messages"],
  });
export type ChatCompletionRequest = z.infer<typeof ChatCompletionRequestSchema>;
export type ChatCompletionRequestInput = z.input<typeof ChatCompletionRequestSchema>;

/** Sampling parameters as the runner applies them (already defaulted). */
export const SamplingSchema = z.strictObject({
  max_tokens: z.number().int().min(1).max(4096),
  temperature: z.number().min(0).max(2),
  top_p: z.number().gt(0).max(1),
  top_k: z.number().int().min(0).max(1000),
  min_tokens: z.number().int().min(0).max(4096).default(0),
  seed: z
    .number()
    .int()
    .min(0)
    .max(2 ** 32 - 1)
    .nullable(),
  stop: z.array(z.string().min(1).max(64)).max(4),
});
export type Sampling = z.infer<typeof SamplingSchema>;
export type SamplingInput = z.input<typeof SamplingSchema>;

/** Deterministic requests are the ones the edge may cache. */
export const isDeterministic = (s: Sampling): boolean => s.temperature === 0 || s.seed !== null;

export function samplingOf(request: ChatCompletionRequest, defaultMaxTokens: number): Sampling {
  const stop = request.stop == null ? [] : typeof request.stop === "string" ? [request.stop] : request.stop;
  return {
    max_tokens: request.max_completion_tokens ?? request.max_tokens ?? defaultMaxTokens,
    temperature: request.temperature ?? 0,
    top_p: request.top_p ?? 1,
    top_k: request.top_k ?? 0,
    min_tokens: request.min_tokens ?? 0,
    seed: request.seed ?? null,
    stop,
  };
}
