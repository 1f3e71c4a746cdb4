import { z } from "zod";

/**
 * The model bundle's manifest (written by model/nano/export.py). Any bundle that satisfies this
 * schema, a converted full-size VisionLLM v2 included, runs on the same runtime code.
 */

const tensorFile = z.object({
  file: z.string(),
  shape: z.array(z.number().int().nonnegative()),
  dtype: z.literal("float32"),
});

const graph = z.object({
  file: z.string(),
  inputs: z.array(z.string()),
  outputs: z.array(z.string()),
});

export const GRAPH_NAMES = [
  "vision_encoder",
  "projector",
  "region_encoder",
  "llm",
  "superlink_perception",
  "superlink_pose",
  "superlink_generation",
  "superlink_editing",
  "perception_decoder",
  "pose_decoder",
  "generator",
  "editor",
] as const;
export type GraphName = (typeof GRAPH_NAMES)[number];

/**
 * Graphs a bundle may add. `llm_decode` is the serving decode step: it reads a fixed-capacity KV
 * cache in place and returns only the new token's keys and values. Without it the runtime batches
 * through `llm`, which copies the whole cache in and out on every step.
 */
export const OPTIONAL_GRAPH_NAMES = ["llm_decode"] as const;
export type OptionalGraphName = (typeof OPTIONAL_GRAPH_NAMES)[number];
export type AnyGraphName = GraphName | OptionalGraphName;

export const TABLE_NAMES = [
  "embed_tokens",
  "perception_queries",
  "pose_queries",
  "generation_queries",
  "editing_queries",
] as const;
export type TableName = (typeof TABLE_NAMES)[number];

const routingEntry = z.object({
  table: z.enum(TABLE_NAMES),
  link: z.enum(["superlink_perception", "superlink_pose", "superlink_generation", "superlink_editing"]),
  // Any task a link serves (model/links): the runner refuses a bundle whose tasks it has no link for.
  task: z.string().min(1),
});
export type RoutingEntry = z.infer<typeof routingEntry>;

/** An object of positive integers, one per key (the model's dimensions). */
function positiveIntegers<K extends string>(...keys: K[]) {
  return z.object(
    Object.fromEntries(keys.map((key) => [key, z.number().int().positive()])) as Record<K, z.ZodNumber>,
  );
}

export const ManifestSchema = z.object({
  format: z.literal("visionllm-bundle"),
  format_version: z.literal(1),
  model: z.object({ id: z.string(), version: z.string(), architecture: z.string(), description: z.string() }),
  config: positiveIntegers(
    "image_size",
    "llm_dim",
    "llm_layers",
    "llm_heads",
    "vocab_size",
    "perception_queries",
    "gen_queries",
    "link_dim",
    "num_keypoints",
    "gen_res",
    "gen_dim",
  ),
  preprocessing: z.object({
    image_size: z.number().int().positive(),
    resize: z.enum(["bilinear", "nearest"]),
    mean: z.tuple([z.number(), z.number(), z.number()]),
    std: z.tuple([z.number(), z.number(), z.number()]),
    channel_order: z.literal("rgb"),
    layout: z.literal("nchw"),
  }),
  tokenizer: z.object({ file: z.string(), eos_token: z.string(), pad_token: z.string() }),
  chat_template: z.string(),
  system_prompt: z.string(),
  special_tokens: z.object({
    image: z.string(),
    image_start: z.string(),
    image_patch: z.string(),
    image_end: z.string(),
    region: z.string(),
    region_start: z.string(),
    region_end: z.string(),
  }),
  image_tokens: z.number().int().positive(),
  query_tokens: z.array(z.string()),
  routing: z.record(z.string(), routingEntry),
  keypoints: z.object({
    names: z.array(z.string()),
    skeleton: z.array(z.tuple([z.number().int(), z.number().int()])),
  }),
  /** How an answer names a routing group: the text before the token, after these (model/nano/contract.py). */
  answer_format: z.object({ label_separator: z.string().min(1), label_leads: z.array(z.string().min(1)) }),
  postprocess: z.object({
    score_threshold: z.number(),
    mask_threshold: z.number(),
    edit_delta_threshold: z.number(),
  }),
  generation: z.object({
    resolution: z.number().int().positive(),
    steps: z.number().int().min(1).max(25),
    output_size: z.number().int().positive(),
    noise: z.literal("mulberry32-box-muller"),
  }),
  limits: z.object({
    max_context: z.number().int().positive(),
    max_images: z.number().int().nonnegative(),
    max_regions: z.number().int().nonnegative(),
    max_new_tokens: z.number().int().positive(),
  }),
  tasks: z.array(z.string()),
  // Required graphs are checked by the loader, which names the one that is missing.
  graphs: z.partialRecord(z.enum([...GRAPH_NAMES, ...OPTIONAL_GRAPH_NAMES]), graph),
  tables: z.record(z.enum(TABLE_NAMES), tensorFile),
  files: z.record(
    z.string(),
    z.object({ sha256: z.string().regex(/^[0-9a-f]{64}$/), bytes: z.number().int() }),
  ),
});
export type Manifest = z.infer<typeof ManifestSchema>;

/** The manifest contract as JSON Schema, for the Python export (scripts/manifest-schema.ts writes it). */
export function manifestJsonSchema(): Record<string, unknown> {
  return {
    ...z.toJSONSchema(ManifestSchema, { io: "input", unrepresentable: "throw" }),
    title: "VisionLLM bundle manifest",
    $comment: "Generated from gpu-runner/src/bundle/manifest.ts by `npm run schema:manifest`; do not edit.",
  };
}
