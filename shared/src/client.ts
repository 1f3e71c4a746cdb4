import { type EventSourceMessage, EventSourceParserStream } from "eventsource-parser/stream";
import { errorFromBody, VisionLLMError } from "./errors";
import { type StreamEvent, StreamEventSchema } from "./events";
import type { ChatCompletionRequestInput } from "./requests";
import { PROTOCOL_HEADER, PROTOCOL_VERSION } from "./version";

/** Typed reader of the native event stream, for the web client, tests and scripts. */

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** Streaming UTF-8 decoding: a character split across chunks is held until it is whole. */
function utf8Decoder(): TransformStream<Uint8Array, string> {
  const decoder = new TextDecoder();
  return new TransformStream({
    transform(chunk, controller) {
      const text = decoder.decode(chunk, { stream: true });
      if (text) controller.enqueue(text);
    },
    flush(controller) {
      const text = decoder.decode();
      if (text) controller.enqueue(text);
    },
  });
}

/** Yields validated events; stops the upstream when the consumer stops early (break/return/throw). */
export async function* readEventStream(
  body: ReadableStream<Uint8Array>,
  options: { onComment?: (comment: string) => void } = {},
): AsyncGenerator<StreamEvent, void, undefined> {
  const messages = body.pipeThrough(utf8Decoder()).pipeThrough(
    new EventSourceParserStream({
      onError: "terminate",
      ...(options.onComment ? { onComment: options.onComment } : {}),
    }),
  );
  const reader = messages.getReader();
  try {
    while (true) {
      const { done, value } = await reader.read();
      if (done) return;
      yield parseEvent(value);
    }
  } finally {
    await reader.cancel().catch(() => undefined);
  }
}

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

export interface ClientOptions {
  baseURL: string;
  apiKey?: string;
  fetch?: typeof fetch;
  headers?: Record<string, string>;
}

export class VisionLLMClient {
  readonly #options: ClientOptions;

  constructor(options: ClientOptions) {
    this.#options = options;
  }

  /** POST /v1/chat: the native typed event stream. Throws VisionLLMError for non-2xx answers. */
  async *chat(
    request: Omit<ChatCompletionRequestInput, "stream">,
    options: { signal?: AbortSignal; headers?: Record<string, string> } = {},
  ): AsyncGenerator<StreamEvent, void, undefined> {
    const response = await this.#post("/v1/chat", { ...request, stream: true }, options);
    if (!response.body) throw new VisionLLMError("bad_upstream", "The stream response has no body.");
    yield* readEventStream(response.body);
  }

  async #post(
    path: string,
    body: unknown,
    options: { signal?: AbortSignal; headers?: Record<string, string> },
  ): Promise<Response> {
    const doFetch = this.#options.fetch ?? fetch;
    const headers: Record<string, string> = {
      "content-type": "application/json",
      accept: "text/event-stream",
      [PROTOCOL_HEADER]: PROTOCOL_VERSION,
      ...this.#options.headers,
      ...options.headers,
    };
    if (this.#options.apiKey) headers.authorization = `Bearer ${this.#options.apiKey}`;
    const response = await doFetch(new URL(path, this.#options.baseURL), {
      method: "POST",
      headers,
      body: JSON.stringify(body),
      ...(options.signal ? { signal: options.signal } : {}),
    });
    if (!response.ok) {
      const text = await response.text();
      throw errorFromBody(parseJson(text), response.status);
    }
    return response;
  }
}
