import type { EventSourceMessage } from "eventsource-parser/stream";
import { VisionLLMError } from "./error-model";
import { type StreamEvent, StreamEventSchema } from "./events";
import { type ClientOptions, EventStreamClient, parseJson, readEvents } from "./stream-client";

/** The typed client for Node, Workers and tests: every event validated by the protocol's zod schema. */

export function parseEvent(message: EventSourceMessage): StreamEvent {
  const parsed = StreamEventSchema.safeParse(parseJson(message.data));
  if (!parsed.success) {
    throw new VisionLLMError("bad_upstream", `Malformed ${message.event ?? "message"} event in the stream.`);
  }
  if (message.event !== undefined && message.event !== parsed.data.type) {
    throw new VisionLLMError(
      "bad_upstream",
      `SSE event name ${message.event} does not match its data type ${parsed.data.type}.`,
    );
  }
  return parsed.data;
}

export function readEventStream(
  body: ReadableStream<Uint8Array>,
  options: { onComment?: (comment: string) => void } = {},
): AsyncGenerator<StreamEvent, void, undefined> {
  return readEvents(body, parseEvent, options);
}

export type { ClientOptions } from "./stream-client";

export class VisionLLMClient extends EventStreamClient {
  constructor(options: ClientOptions) {
    super(options, parseEvent);
  }
}
