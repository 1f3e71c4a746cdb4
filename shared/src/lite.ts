import type { EventSourceMessage } from "eventsource-parser/stream";
import { VisionLLMError } from "./error-model";
import type { StreamEvent } from "./events";
import { type ClientOptions, EventStreamClient, parseJson } from "./stream-client";

/**
 * The protocol for browsers: the same client without zod (which would be most of the page's
 * weight). Events are checked structurally: a known type and its sequence number.
 */

export { VisionLLMError } from "./error-model";
export { decodeMask, encodeMask } from "./mask";

/** Every native event type, in the order a stream may carry them (`event:` of each SSE frame). */
export const EVENT_TYPES = [
  "start",
  "text-delta",
  "detections",
  "keypoints",
  "image-progress",
  "image",
  "usage",
  "error",
  "done",
] as const;
const TYPES = new Set<string>(EVENT_TYPES);

export function parseEventLoose(message: EventSourceMessage): StreamEvent {
  const data = parseJson(message.data) as { type?: unknown; sequence_number?: unknown } | undefined;
  if (
    !data ||
    typeof data.type !== "string" ||
    !TYPES.has(data.type) ||
    typeof data.sequence_number !== "number"
  ) {
    throw new VisionLLMError("bad_upstream", `Malformed ${message.event ?? "message"} event in the stream.`);
  }
  return data as StreamEvent;
}

export class LiteClient extends EventStreamClient {
  constructor(options: ClientOptions) {
    super(options, parseEventLoose);
  }
}
