import { z } from "zod";
import { SamplingSchema } from "./requests";

/** The internal edge -> runner API and the runner's model card. */

export const RUNNER_SIGNATURE_HEADER = "x-runner-signature";
export const RUNNER_TIMESTAMP_HEADER = "x-runner-timestamp";
export const RUNNER_NONCE_HEADER = "x-runner-nonce";
export const REQUEST_ID_HEADER = "x-request-id";
/** The digest of the bundle that answered a generate request: the edge's response cache is keyed by
 * the model card's digest, so a runner that answers with another one means the card it holds is stale. */
export const MODEL_DIGEST_HEADER = "x-model-digest";

export const RunnerImageSchema = z.strictObject({
  /** The encoded image bytes (PNG, JPEG or WebP), base64. */
  data_base64: z.string().min(1),
  /** sha256 of the bytes, hex: the runner's feature-cache key. */
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
});

export const RunnerRegionSchema = z.strictObject({
  image_index: z.number().int().nonnegative(),
  box: z.tuple([z.number(), z.number(), z.number(), z.number()]).optional(),
  point: z.tuple([z.number(), z.number()]).optional(),
  /** PNG mask, base64 (no data: prefix), any size: resized to the image. */
  mask_png_base64: z.string().optional(),
});
export type RunnerRegion = z.infer<typeof RunnerRegionSchema>;

export const RunnerGenerateRequestSchema = z.strictObject({
  request_id: z.string().min(1).max(128),
  /** The prompt rendered with the model card's chat template, `<image>` and `<region>` placeholders unexpanded. */
  prompt: z.string().min(1).max(200_000),
  images: z.array(RunnerImageSchema).max(8),
  regions: z.array(RunnerRegionSchema).max(16),
  sampling: SamplingSchema,
  /** Milliseconds the runner may spend before answering deadline_exceeded. */
  deadline_ms: z.number().int().positive().max(600_000).default(120_000),
});
export type RunnerGenerateRequest = z.infer<typeof RunnerGenerateRequestSchema>;
export type RunnerGenerateRequestInput = z.input<typeof RunnerGenerateRequestSchema>;

export const ModelCardSchema = z.object({
  id: z.string(),
  version: z.string(),
  /**
   * sha256 over the bundle's file checksums: it changes with any weight, whatever `version` says,
   * so caches keyed by it never answer with a previous model's outputs.
   */
  digest: z.string().regex(/^[0-9a-f]{64}$/),
  architecture: z.string(),
  backend: z.object({ name: z.string(), provider: z.string() }),
  chat_template: z.string(),
  system_prompt: z.string(),
  special_tokens: z.object({
    image: z.string(),
    region: z.string(),
    region_start: z.string(),
    region_end: z.string(),
  }),
  routing_tokens: z.array(z.string()),
  /** Every special token of the tokenizer: the edge refuses user text that contains one. */
  reserved_tokens: z.array(z.string()).default([]),
  tasks: z.array(z.string()),
  keypoints: z.object({
    names: z.array(z.string()),
    skeleton: z.array(z.tuple([z.number().int(), z.number().int()])),
  }),
  limits: z.object({
    max_context: z.number().int().positive(),
    max_new_tokens: z.number().int().positive(),
    max_images: z.number().int().nonnegative(),
    max_regions: z.number().int().nonnegative(),
    max_image_bytes: z.number().int().positive(),
    max_image_pixels: z.number().int().positive(),
  }),
});
export type ModelCard = z.infer<typeof ModelCardSchema>;
