import { z } from "zod";
import {
  DetectionsEventSchema,
  type FinishReasonSchema,
  ImageEventSchema,
  ImageProgressEventSchema,
  KeypointsEventSchema,
  UsageSchema,
} from "./events";

/**
 * OpenAI-compatible responses. Super-link outputs ride in one documented extra field,
 * `visionllm_events`, which the official SDK passes through untouched.
 */

export const SuperLinkEventSchema = z.discriminatedUnion("type", [
  DetectionsEventSchema,
  KeypointsEventSchema,
  ImageProgressEventSchema,
  ImageEventSchema,
]);
export type SuperLinkEvent = z.infer<typeof SuperLinkEventSchema>;

const openAIFinish = z.enum(["stop", "length"]).nullable();

/** What a completion and each of its chunks start with. */
const completionHead = (object: "chat.completion" | "chat.completion.chunk") => ({
  id: z.string(),
  object: z.literal(object),
  created: z.number().int(),
  model: z.string(),
});

export const ChatCompletionChunkSchema = z.object({
  ...completionHead("chat.completion.chunk"),
  system_fingerprint: z.string().nullable().optional(),
  choices: z.array(
    z.object({
      index: z.number().int(),
      delta: z.object({ role: z.literal("assistant").optional(), content: z.string().optional() }),
      finish_reason: openAIFinish,
    }),
  ),
  usage: UsageSchema.nullable().optional(),
  visionllm_events: z.array(SuperLinkEventSchema).optional(),
});
export type ChatCompletionChunk = z.infer<typeof ChatCompletionChunkSchema>;

export const ChatCompletionSchema = z.object({
  ...completionHead("chat.completion"),
  choices: z.array(
    z.object({
      index: z.number().int(),
      message: z.object({ role: z.literal("assistant"), content: z.string() }),
      finish_reason: z.enum(["stop", "length"]),
    }),
  ),
  usage: UsageSchema,
  visionllm_events: z.array(SuperLinkEventSchema),
});
export type ChatCompletion = z.infer<typeof ChatCompletionSchema>;

export const ModelSchema = z.object({
  id: z.string(),
  object: z.literal("model"),
  created: z.number().int(),
  owned_by: z.string(),
});

export const ModelListSchema = z.object({
  object: z.literal("list"),
  data: z.array(ModelSchema),
});

/** Maps the native finish reason to OpenAI's (which has no "canceled"/"error"). */
export const toOpenAIFinish = (reason: z.infer<typeof FinishReasonSchema>): "stop" | "length" =>
  reason === "length" ? "length" : "stop";
