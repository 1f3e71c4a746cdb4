import {
  encodeNamed,
  type OutputItem,
  type ResponseObject,
  type ResponseStreamEvent,
  type StreamEvent,
  VisionLLMError,
} from "@visionllm/protocol";
import type { Context } from "hono";
import type { AppEnv, Env } from "./env";

/**
 * The Responses API's answer, built from the native event stream: a `response` snapshot that grows
 * as events arrive, and the typed events OpenAI's clients read (`response.created`,
 * `response.output_text.delta`, `response.output_item.added`/`done`, image progress as
 * `response.image_generation_call.partial_image`, then `response.completed`, `.incomplete` or
 * `.failed`). Streaming and non-streaming share it, so both give the same response.
 */

type Unnumbered = { type: string; [field: string]: unknown };

export interface ResponseMeta {
  id: string;
  model: string;
  created: number;
  instructions: string | null;
  maxOutputTokens: number | null;
  temperature: number | null;
  topP: number | null;
  metadata: Record<string, string>;
}

export class ResponseBuilder {
  readonly response: ResponseObject;
  /** The native error event, if the answer failed (a non-streaming call answers it as an HTTP error). */
  failure: Extract<StreamEvent, { type: "error" }> | undefined;
  readonly #messageId: string;
  #text = "";
  #messageOpen = false;
  readonly #imageItems = new Map<number, number>(); // routing group -> output index
  #items = 0;

  constructor(meta: ResponseMeta) {
    this.#messageId = `msg_${meta.id.replace(/^resp_/, "")}`;
    this.response = {
      id: meta.id,
      object: "response",
      created_at: meta.created,
      status: "in_progress",
      model: meta.model,
      output: [],
      usage: null,
      incomplete_details: null,
      error: null,
      instructions: meta.instructions,
      max_output_tokens: meta.maxOutputTokens,
      temperature: meta.temperature,
      top_p: meta.topP,
      metadata: meta.metadata,
      parallel_tool_calls: false,
      tool_choice: "none",
      tools: [],
      text: { format: { type: "text" } },
    };
  }

  /** The events one native event becomes. */
  *translate(event: StreamEvent): Generator<Unnumbered> {
    switch (event.type) {
      case "start":
        yield { type: "response.created", response: structuredClone(this.response) };
        yield { type: "response.in_progress", response: structuredClone(this.response) };
        yield* this.#openMessage();
        break;
      case "text-delta":
        this.#text += event.delta;
        yield {
          type: "response.output_text.delta",
          item_id: this.#messageId,
          output_index: 0,
          content_index: 0,
          delta: event.delta,
          logprobs: [],
        };
        break;
      case "detections":
      case "keypoints":
        yield* this.#perceptionItem(event);
        break;
      case "image-progress":
        yield* this.#imageProgress(event);
        break;
      case "image":
        yield* this.#image(event);
        break;
      case "usage":
        this.response.usage = {
          input_tokens: event.prompt_tokens,
          output_tokens: event.completion_tokens,
          total_tokens: event.total_tokens,
          input_tokens_details: { cached_tokens: 0 },
          output_tokens_details: { reasoning_tokens: 0 },
        };
        break;
      case "error":
        this.failure = event;
        this.response.status = "failed";
        this.response.error = { code: event.code, message: event.message };
        yield { type: "error", code: event.code, message: event.message, param: event.param ?? null };
        break;
      case "done":
        yield* this.#finish(event.finish_reason);
        break;
    }
  }

  *#perceptionItem(event: Extract<StreamEvent, { type: "detections" | "keypoints" }>): Generator<Unnumbered> {
    const { sequence_number: _, type, ...fields } = event;
    const item = {
      ...fields,
      type: type === "detections" ? "visionllm_detections" : "visionllm_keypoints",
      id: `${type === "detections" ? "det" : "kp"}_${this.response.id.slice(5)}_${this.#items}`,
      status: "completed",
    } as OutputItem;
    yield* this.#addItem(item, true);
  }

  *#imageProgress(event: Extract<StreamEvent, { type: "image-progress" }>): Generator<Unnumbered> {
    const index = yield* this.#imageItem(event.group, event.task);
    const itemId = this.response.output[index]?.id ?? "";
    yield { type: "response.image_generation_call.generating", output_index: index, item_id: itemId };
    if (event.preview_png_base64)
      yield {
        type: "response.image_generation_call.partial_image",
        output_index: index,
        item_id: itemId,
        partial_image_index: event.step,
        partial_image_b64: event.preview_png_base64,
      };
  }

  *#image(event: Extract<StreamEvent, { type: "image" }>): Generator<Unnumbered> {
    const index = yield* this.#imageItem(event.group, event.task);
    const item = this.response.output[index];
    if (item?.type !== "image_generation_call") return;
    Object.assign(item, {
      status: "completed",
      result: event.png_base64,
      size: `${event.width}x${event.height}`,
      seed: event.seed,
    });
    yield { type: "response.image_generation_call.completed", output_index: index, item_id: item.id };
    yield { type: "response.output_item.done", output_index: index, item: structuredClone(item) };
  }

  *#openMessage(): Generator<Unnumbered> {
    const message: OutputItem = {
      type: "message",
      id: this.#messageId,
      status: "in_progress",
      role: "assistant",
      content: [],
    };
    this.#messageOpen = true;
    yield* this.#addItem(message, false);
    const part = { type: "output_text" as const, text: "", annotations: [] };
    yield {
      type: "response.content_part.added",
      item_id: this.#messageId,
      output_index: 0,
      content_index: 0,
      part,
    };
  }

  *#addItem(item: OutputItem, done: boolean): Generator<Unnumbered, number> {
    const index = this.response.output.length;
    this.response.output.push(item);
    this.#items++;
    yield { type: "response.output_item.added", output_index: index, item: structuredClone(item) };
    if (done) yield { type: "response.output_item.done", output_index: index, item: structuredClone(item) };
    return index;
  }

  *#imageItem(group: number, task: "generation" | "editing"): Generator<Unnumbered, number> {
    const known = this.#imageItems.get(group);
    if (known !== undefined) return known;
    const item: OutputItem = {
      type: "image_generation_call",
      id: `ig_${this.response.id.slice(5)}_${this.#items}`,
      status: "in_progress",
      result: null,
      task,
    };
    const index = yield* this.#addItem(item, false);
    this.#imageItems.set(group, index);
    yield { type: "response.image_generation_call.in_progress", output_index: index, item_id: item.id };
    return index;
  }

  *#finish(reason: string): Generator<Unnumbered> {
    const message = this.response.output[0];
    if (this.#messageOpen && message?.type === "message") {
      this.#messageOpen = false;
      const part = { type: "output_text" as const, text: this.#text, annotations: [] };
      message.content = [part];
      message.status = reason === "length" ? "incomplete" : "completed";
      yield {
        type: "response.output_text.done",
        item_id: message.id,
        output_index: 0,
        content_index: 0,
        text: this.#text,
        logprobs: [],
      };
      yield {
        type: "response.content_part.done",
        item_id: message.id,
        output_index: 0,
        content_index: 0,
        part,
      };
      yield { type: "response.output_item.done", output_index: 0, item: structuredClone(message) };
    }
    if (reason === "error" || this.response.status === "failed") {
      this.response.status = "failed";
      yield { type: "response.failed", response: structuredClone(this.response) };
    } else if (reason === "length") {
      this.response.status = "incomplete";
      this.response.incomplete_details = { reason: "max_output_tokens" };
      yield { type: "response.incomplete", response: structuredClone(this.response) };
    } else {
      this.response.status = "completed";
      yield { type: "response.completed", response: structuredClone(this.response) };
    }
  }
}

/** Stored responses: per API key, one day, with their events for a replay from `starting_after`. */
interface Stored {
  response: ResponseObject;
  events: ResponseStreamEvent[];
}

const STORE_TTL_S = 86_400;
const storeKey = (keyId: string, id: string) => `response:v1:${keyId}:${id}`;

export async function storeResponse(env: Env, keyId: string, stored: Stored): Promise<void> {
  await env.CACHE.put(storeKey(keyId, stored.response.id), JSON.stringify(stored), {
    expirationTtl: STORE_TTL_S,
  });
}

/** Numbers the events and keeps them, with the final snapshot, once the answer ends. */
export async function* responseFrames(
  events: AsyncIterable<StreamEvent>,
  builder: ResponseBuilder,
  onComplete: (stored: Stored) => void,
): AsyncGenerator<string> {
  const kept: ResponseStreamEvent[] = [];
  for await (const event of events) {
    for (const out of builder.translate(event)) {
      const numbered = { ...out, sequence_number: kept.length };
      kept.push(numbered);
      yield encodeNamed(out.type, numbered);
    }
  }
  onComplete({ response: builder.response, events: kept });
}

/** GET /v1/responses/{id}: the stored response, or with `stream=true` its events after `starting_after`. */
export async function retrieveResponse(c: Context<AppEnv>): Promise<Response> {
  const id = c.req.param("id") ?? "";
  const stored = await c.env.CACHE.get<Stored>(storeKey(c.get("caller").keyId, id), "json");
  if (!stored)
    throw new VisionLLMError(
      "not_found",
      `No stored response ${id} for this API key (responses are kept a day).`,
      {
        param: "id",
      },
    );
  if (c.req.query("stream") !== "true") return c.json(stored.response);
  const after = Number(c.req.query("starting_after") ?? -1);
  if (!Number.isInteger(after) || after < -1)
    throw new VisionLLMError(
      "invalid_request",
      "starting_after must be a sequence number (an integer >= 0).",
      {
        param: "starting_after",
      },
    );
  const body = stored.events
    .filter((e) => e.sequence_number > after)
    .map((e) => encodeNamed(e.type, e))
    .join("");
  return new Response(body, {
    headers: { "content-type": "text/event-stream", "cache-control": "no-cache" },
  });
}
