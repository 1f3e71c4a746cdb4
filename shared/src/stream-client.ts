import { type EventSourceMessage, EventSourceParserStream } from "eventsource-parser/stream";
import { errorFromBody, VisionLLMError } from "./error-model";
import type { StreamEvent } from "./events";
import type { ChatCompletionRequestInput } from "./requests";
import { PROTOCOL_HEADER, PROTOCOL_VERSION } from "./version";

/**
 * Reading the native event stream, with the event parser injected: the Node and Worker code
 * validates with zod (client.ts), the browser bundle with a structural check (lite.ts) so it does
 * not carry zod.
 */

export type EventParser = (message: EventSourceMessage) => StreamEvent;

export function parseJson(text: string): unknown {
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

/** Yields parsed events; stops the upstream when the consumer stops early (break/return/throw). */
export async function* readEvents(
  body: ReadableStream<Uint8Array>,
  parse: EventParser,
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
      yield parse(value);
    }
  } finally {
    await reader.cancel().catch(() => undefined);
  }
}

export interface ClientOptions {
  baseURL: string;
  apiKey?: string;
  fetch?: typeof fetch;
  headers?: Record<string, string>;
}

export class EventStreamClient {
  readonly #options: ClientOptions;
  readonly #parse: EventParser;

  constructor(options: ClientOptions, parse: EventParser) {
    this.#options = options;
    this.#parse = parse;
  }

  /** POST /v1/chat: the native typed event stream. Throws VisionLLMError for non-2xx answers. */
  async *chat(
    request: Omit<ChatCompletionRequestInput, "stream">,
    options: { signal?: AbortSignal; headers?: Record<string, string> } = {},
  ): AsyncGenerator<StreamEvent, void, undefined> {
    const doFetch = this.#options.fetch ?? fetch;
    const headers: Record<string, string> = {
      "content-type": "application/json",
      accept: "text/event-stream",
      [PROTOCOL_HEADER]: PROTOCOL_VERSION,
      ...this.#options.headers,
      ...options.headers,
    };
    if (this.#options.apiKey) headers.authorization = `Bearer ${this.#options.apiKey}`;
    const response = await doFetch(new URL("/v1/chat", this.#options.baseURL), {
      method: "POST",
      headers,
      body: JSON.stringify({ ...request, stream: true }),
      ...(options.signal ? { signal: options.signal } : {}),
    });
    if (!response.ok) throw errorFromBody(parseJson(await response.text()), response.status);
    if (!response.body) throw new VisionLLMError("bad_upstream", "The stream response has no body.");
    yield* readEvents(response.body, this.#parse);
  }
}
