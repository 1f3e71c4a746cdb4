import { z } from "zod";
import { ErrorCodeSchema } from "./errors";

/**
 * The native event stream (protocol v1): a tagged union with noun-action names. Every event has a
 * `sequence_number`, strictly increasing from 0 within a stream, sent as the SSE `id`.
 * Coordinates are pixels of the input image: boxes [x0, y0, x1, y1], x right, y down.
 */

const seq = z.number().int().nonnegative();
const finite = z.number().finite();

export const BoxSchema = z.tuple([finite, finite, finite, finite]);

/** Binary mask as run lengths over the row-major pixels, starting with a run of zeros. */
export const MaskSchema = z.object({
  format: z.literal("rle-row-major"),
  width: z.number().int().positive(),
  height: z.number().int().positive(),
  counts: z.array(z.number().int().nonnegative()),
});
export type Mask = z.infer<typeof MaskSchema>;

export const DetectionSchema = z.object({
  label: z.string(),
  score: finite,
  box: BoxSchema,
  mask: MaskSchema.optional(),
});
export type Detection = z.infer<typeof DetectionSchema>;

export const KeypointSchema = z.object({ name: z.string(), x: finite, y: finite, score: finite });

export const PoseSchema = z.object({
  label: z.string(),
  score: finite,
  box: BoxSchema,
  keypoints: z.array(KeypointSchema),
});
export type Pose = z.infer<typeof PoseSchema>;

export const StartEventSchema = z.object({
  type: z.literal("start"),
  sequence_number: seq,
  id: z.string(),
  model: z.string(),
  created: z.number().int(),
});

export const TextDeltaEventSchema = z.object({
  type: z.literal("text-delta"),
  sequence_number: seq,
  delta: z.string(),
});

export const DetectionsEventSchema = z.object({
  type: z.literal("detections"),
  sequence_number: seq,
  task: z.enum(["detection", "segmentation", "grounding"]),
  /** The phrase the routing token followed in the answer, e.g. "red circle". */
  label: z.string(),
  /** Index of the routing group in the answer: class order = group order. */
  group: z.number().int().nonnegative(),
  items: z.array(DetectionSchema),
});

export const KeypointsEventSchema = z.object({
  type: z.literal("keypoints"),
  sequence_number: seq,
  group: z.number().int().nonnegative(),
  skeleton: z.array(z.tuple([z.number().int(), z.number().int()])),
  items: z.array(PoseSchema),
});

export const ImageProgressEventSchema = z.object({
  type: z.literal("image-progress"),
  sequence_number: seq,
  task: z.enum(["generation", "editing"]),
  group: z.number().int().nonnegative(),
  step: z.number().int().nonnegative(),
  total_steps: z.number().int().positive(),
  /** Optional low-resolution preview of the current estimate, PNG base64. */
  preview_png_base64: z.string().optional(),
});

export const ImageEventSchema = z.object({
  type: z.literal("image"),
  sequence_number: seq,
  task: z.enum(["generation", "editing"]),
  group: z.number().int().nonnegative(),
  png_base64: z.string(),
  width: z.number().int().positive(),
  height: z.number().int().positive(),
  seed: z.number().int().nonnegative(),
});

export const UsageSchema = z.object({
  prompt_tokens: z.number().int().nonnegative(),
  completion_tokens: z.number().int().nonnegative(),
  total_tokens: z.number().int().nonnegative(),
});
export type Usage = z.infer<typeof UsageSchema>;

export const UsageEventSchema = UsageSchema.extend({
  type: z.literal("usage"),
  sequence_number: seq,
});

export const ErrorEventSchema = z.object({
  type: z.literal("error"),
  sequence_number: seq,
  code: ErrorCodeSchema,
  message: z.string(),
  /** The request field at fault, when the client's input was. */
  param: z.string().nullable().optional(),
  retryable: z.boolean(),
});

export const FinishReasonSchema = z.enum(["stop", "length", "canceled", "error"]);
export type FinishReason = z.infer<typeof FinishReasonSchema>;

export const DoneEventSchema = z.object({
  type: z.literal("done"),
  sequence_number: seq,
  finish_reason: FinishReasonSchema,
});

export const StreamEventSchema = z.discriminatedUnion("type", [
  StartEventSchema,
  TextDeltaEventSchema,
  DetectionsEventSchema,
  KeypointsEventSchema,
  ImageProgressEventSchema,
  ImageEventSchema,
  UsageEventSchema,
  ErrorEventSchema,
  DoneEventSchema,
]);
export type StreamEvent = z.infer<typeof StreamEventSchema>;
export type StreamEventType = StreamEvent["type"];
export type EventOf<T extends StreamEventType> = Extract<StreamEvent, { type: T }>;
/** An event before the stream writer numbers it. */
export type UnnumberedEvent = StreamEvent extends infer E
  ? E extends StreamEvent
    ? Omit<E, "sequence_number">
    : never
  : never;

/** Numbers events in the order they are emitted. */
export class EventSequencer {
  #next = 0;
  number<E extends UnnumberedEvent>(event: E): E & { sequence_number: number } {
    return { ...event, sequence_number: this.#next++ };
  }
  get count(): number {
    return this.#next;
  }
}

export { decodeMask, encodeMask } from "./mask";
