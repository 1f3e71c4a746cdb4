import { z } from "zod";
import { DetectionSchema, PoseSchema } from "./events";
import { type ChatCompletionRequestInput, type ContentPart, TaskSchema } from "./requests";

/**
 * OpenAI's Responses API (`POST /v1/responses`), the interface its own clients now lead with.
 * The request is turned into a chat request; the answer is a `response` object whose output items
 * are the assistant message and, in answer order, the super link's outputs: `visionllm_detections`
 * and `visionllm_keypoints` items (this API's own item types, documented in the OpenAPI document)
 * and generated or edited images as OpenAI's `image_generation_call` items.
 */

const text = z.string().max(32_768);

const InputContentSchema = z.discriminatedUnion("type", [
  z.strictObject({ type: z.literal("input_text"), text }),
  z.strictObject({
    type: z.literal("input_image"),
    image_url: z.string().max(25 * 1024 * 1024),
    detail: z.enum(["auto", "low", "high"]).optional(),
  }),
  // Earlier assistant turns sent back as history.
  z.strictObject({ type: z.literal("output_text"), text, annotations: z.array(z.unknown()).optional() }),
]);

const InputItemSchema = z.strictObject({
  type: z.literal("message").optional(),
  role: z.enum(["user", "assistant", "system", "developer"]),
  content: z.union([text, z.array(InputContentSchema).min(1).max(32)]),
  id: z.string().optional(),
  status: z.string().optional(),
});

export const ResponsesRequestSchema = z.strictObject({
  model: z.string().min(1).max(128),
  input: z.union([text, z.array(InputItemSchema).min(1).max(64)]),
  instructions: text.nullable().optional(),
  max_output_tokens: z.number().int().min(1).max(4096).nullable().optional(),
  temperature: z.number().min(0).max(2).nullable().optional(),
  top_p: z.number().gt(0).max(1).nullable().optional(),
  stream: z.boolean().default(false),
  store: z.boolean().default(true).describe("keep the response for GET /v1/responses/{id} (one day)"),
  metadata: z.record(z.string(), z.string().max(512)).optional(),
  // Harmless defaults some clients always send.
  parallel_tool_calls: z.boolean().optional(),
  tools: z.array(z.never()).max(0).optional(),
  text: z.strictObject({ format: z.strictObject({ type: z.literal("text") }) }).optional(),
  seed: z
    .number()
    .int()
    .min(0)
    .max(2 ** 32 - 1)
    .optional()
    .describe("extension"),
  task: TaskSchema.optional().describe("extension: a structured task turned into the prompt by the edge"),
});
export type ResponsesRequest = z.infer<typeof ResponsesRequestSchema>;

function partsOf(content: z.infer<typeof InputItemSchema>["content"]): ContentPart[] {
  if (typeof content === "string") return [{ type: "text", text: content }];
  return content.map((c) =>
    c.type === "input_image"
      ? { type: "image_url", image_url: { url: c.image_url } }
      : { type: "text", text: c.text },
  );
}

const joined = (parts: ContentPart[]) => parts.map((p) => (p.type === "text" ? p.text : "")).join("\n");

/** The chat request a Responses request stands for (validated again as one by the caller). */
export function chatRequestOfResponses(r: ResponsesRequest): ChatCompletionRequestInput {
  const items = typeof r.input === "string" ? [{ role: "user" as const, content: r.input }] : r.input;
  const messages: ChatCompletionRequestInput["messages"] = r.instructions
    ? [{ role: "system", content: r.instructions }]
    : [];
  for (const item of items) {
    const parts = partsOf(item.content);
    if (item.role === "user") messages.push({ role: "user", content: parts });
    else if (item.role === "assistant") messages.push({ role: "assistant", content: joined(parts) });
    else messages.push({ role: "system", content: joined(parts) });
  }
  return {
    model: r.model,
    messages,
    stream: r.stream,
    ...(r.max_output_tokens ? { max_tokens: r.max_output_tokens } : {}),
    ...(r.temperature === null || r.temperature === undefined ? {} : { temperature: r.temperature }),
    ...(r.top_p === null || r.top_p === undefined ? {} : { top_p: r.top_p }),
    ...(r.seed === undefined ? {} : { seed: r.seed }),
    ...(r.task ? { task: r.task } : {}),
  };
}

const OutputTextSchema = z.object({
  type: z.literal("output_text"),
  text: z.string(),
  annotations: z.array(z.unknown()),
});

export const MessageItemSchema = z.object({
  type: z.literal("message"),
  id: z.string(),
  status: z.enum(["in_progress", "completed", "incomplete"]),
  role: z.literal("assistant"),
  content: z.array(OutputTextSchema),
});

export const DetectionsItemSchema = z
  .object({
    type: z.literal("visionllm_detections"),
    id: z.string(),
    status: z.literal("completed"),
    task: z.enum(["detection", "segmentation", "grounding"]),
    label: z.string(),
    group: z.number().int().nonnegative(),
    items: z.array(DetectionSchema),
  })
  .describe(
    "a [DET]/[SEG]/[GRD] routing group's decoder output: boxes in input-image pixels, optional masks",
  );

export const KeypointsItemSchema = z
  .object({
    type: z.literal("visionllm_keypoints"),
    id: z.string(),
    status: z.literal("completed"),
    group: z.number().int().nonnegative(),
    skeleton: z.array(z.tuple([z.number().int(), z.number().int()])),
    items: z.array(PoseSchema),
  })
  .describe("the [POSE] decoder's people: box, score, named keypoints");

export const ImageItemSchema = z.object({
  type: z.literal("image_generation_call"),
  id: z.string(),
  status: z.enum(["in_progress", "generating", "completed"]),
  /** PNG, base64, once completed. */
  result: z.string().nullable(),
  size: z.string().optional(),
  task: z.enum(["generation", "editing"]),
  seed: z.number().int().nonnegative().optional(),
});

const outputItems = [MessageItemSchema, DetectionsItemSchema, KeypointsItemSchema, ImageItemSchema] as const;
export const OutputItemSchema = z.discriminatedUnion("type", outputItems);
export type OutputItem = z.infer<typeof OutputItemSchema>;

export const ResponseSchema = z.object({
  id: z.string(),
  object: z.literal("response"),
  created_at: z.number().int().describe("Unix seconds"),
  status: z.enum(["in_progress", "completed", "incomplete", "failed"]),
  model: z.string(),
  output: z.array(OutputItemSchema),
  usage: z
    .object({
      input_tokens: z.number().int(),
      output_tokens: z.number().int(),
      total_tokens: z.number().int(),
      input_tokens_details: z.object({ cached_tokens: z.number().int() }),
      output_tokens_details: z.object({ reasoning_tokens: z.number().int() }),
    })
    .nullable(),
  incomplete_details: z.object({ reason: z.string() }).nullable(),
  error: z.object({ code: z.string(), message: z.string() }).nullable(),
  instructions: z.string().nullable(),
  max_output_tokens: z.number().int().nullable(),
  temperature: z.number().nullable(),
  top_p: z.number().nullable(),
  metadata: z.record(z.string(), z.string()),
  parallel_tool_calls: z.boolean(),
  tool_choice: z.literal("none"),
  tools: z.array(z.never()),
  text: z.object({ format: z.object({ type: z.literal("text") }) }),
});
export type ResponseObject = z.infer<typeof ResponseSchema>;

/** One streamed Responses event: its `type` and fields as OpenAI's, numbered from 0. */
export const ResponseStreamEventSchema = z.looseObject({
  type: z.string(),
  sequence_number: z.number().int(),
});
export type ResponseStreamEvent = z.infer<typeof ResponseStreamEventSchema>;
