import { z } from "zod";
import { ImageUrlSchema, MessageSchema, TaskSchema } from "./requests";

/** Asynchronous image jobs with webhooks (Replicate-style lifecycle, Standard Webhooks delivery). */

export const JobStateSchema = z.enum(["queued", "running", "succeeded", "failed", "canceled"]);
export type JobState = z.infer<typeof JobStateSchema>;

export const WebhookEventTypeSchema = z.enum(["start", "output", "completed"]);
export type WebhookEventType = z.infer<typeof WebhookEventTypeSchema>;

export const JobCreateRequestSchema = z
  .strictObject({
    model: z.string().min(1).max(128).optional(),
    images: z.array(ImageUrlSchema).max(4).default([]),
    task: TaskSchema.optional(),
    messages: z.array(MessageSchema).max(64).optional(),
    max_tokens: z.number().int().min(1).max(4096).optional(),
    min_tokens: z.number().int().min(0).max(4096).optional(),
    temperature: z.number().min(0).max(2).optional(),
    seed: z
      .number()
      .int()
      .min(0)
      .max(2 ** 32 - 1)
      .optional(),
    webhook: z
      .url({ protocol: /^https?$/, error: "webhook must be an https URL" })
      .max(2048)
      .optional(),
    webhook_events_filter: z.array(WebhookEventTypeSchema).min(1).max(3).default(["completed"]),
  })
  .refine((r) => r.task !== undefined || (r.messages?.length ?? 0) > 0, {
    message: "give a task or messages",
    path: ["task"],
  });
export type JobCreateRequest = z.infer<typeof JobCreateRequestSchema>;
export type JobCreateRequestInput = z.input<typeof JobCreateRequestSchema>;

/** What a job produced: text and super-link outputs; images and masks as authorised URLs. */
export const JobOutputSchema = z.object({
  text: z.string(),
  detections: z.array(z.unknown()),
  keypoints: z.array(z.unknown()),
  images: z.array(
    z.object({ task: z.string(), url: z.string(), width: z.number(), height: z.number(), seed: z.number() }),
  ),
  usage: z
    .object({ prompt_tokens: z.number(), completion_tokens: z.number(), total_tokens: z.number() })
    .optional(),
});
export type JobOutput = z.infer<typeof JobOutputSchema>;

export const JobSchema = z.object({
  id: z.string(),
  object: z.literal("job"),
  state: JobStateSchema,
  created_at: z
    .number()
    .int()
    .describe("Unix time in milliseconds (chat completions' `created` is in seconds, as OpenAI's)"),
  /** Only the states the job has reached: a queued job has one. */
  timestamps: z
    .partialRecord(JobStateSchema, z.number().int())
    .describe("when the job entered each state it has reached, Unix milliseconds"),
  attempts: z.number().int(),
  output: JobOutputSchema.nullable(),
  error: z.string().nullable(),
  webhook: z.string().nullable(),
  webhook_events_filter: z.array(WebhookEventTypeSchema),
  urls: z.object({ get: z.string(), cancel: z.string() }),
});
export type Job = z.infer<typeof JobSchema>;

export const WebhookPayloadSchema = z.object({
  type: z.string(),
  timestamp: z.string(),
  data: JobSchema,
});
export type WebhookPayload = z.infer<typeof WebhookPayloadSchema>;

export const JobListSchema = z.object({ object: z.literal("list"), data: z.array(JobSchema) });

export const WebhookSecretSchema = z.object({ secret: z.string().describe("whsec_ followed by base64") });
export const WebhookSecretRotationSchema = WebhookSecretSchema.extend({
  previous_valid_for_seconds: z.number().int().describe("the previous secret keeps signing this long"),
});
