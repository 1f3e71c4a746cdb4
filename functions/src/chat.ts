import {
  type ChatCompletion,
  type ChatCompletionChunk,
  type ChatCompletionRequest,
  ChatCompletionRequestSchema,
  chatRequestOfResponses,
  EventSequencer,
  encodeData,
  fromZodError,
  isDeterministic,
  MODEL_DIGEST_HEADER,
  nativeFrames,
  PROTOCOL_HEADER,
  PROTOCOL_VERSION,
  REQUEST_ID_HEADER,
  type ResponsesRequest,
  ResponsesRequestSchema,
  type RunnerGenerateRequest,
  readEventStream,
  type Sampling,
  type StreamEvent,
  type SuperLinkEvent,
  samplingOf,
  sseResponse,
  toOpenAIFinish,
  type UnnumberedEvent,
  type Usage,
  VisionLLMError,
} from "@visionllm/protocol";
import type { Context } from "hono";
import { setMetric } from "hono/timing";
import { sha256Hex } from "./api-keys";
import { cacheable, cacheKey, readCached, writeCached } from "./cache";
import { type AppEnv, type Env, limitsOf, timed } from "./env";
import { type PatientOptions, patientJson } from "./patient-json";
import { type AssembledPrompt, assemblePrompt, runnerImages } from "./prompt";
import type { Admission } from "./rate-limiter";
import { ResponseBuilder, responseFrames, storeResponse } from "./responses";
import { forgetModelCard, forwardGenerate, modelCard } from "./runner-pool";
import { followedEvents, type StreamLog, streamLogName } from "./stream-log";

/** POST /v1/chat (native events) and POST /v1/chat/completions (OpenAI chunks). */

const PING_MS = 15_000;
/** Seconds a client is told to wait after a retryable failure (a runner restart takes about this). */
const RETRY_AFTER_S = 2;

async function readBody(c: Context<AppEnv>): Promise<{ json: unknown; text: string }> {
  const type = c.req.header("content-type") ?? "";
  if (!type.toLowerCase().startsWith("application/json")) {
    throw new VisionLLMError(
      "unsupported_media_type",
      `Send the body as application/json (got ${type || "no content type"}).`,
    );
  }
  const text = await c.req.text();
  try {
    return { json: JSON.parse(text), text };
  } catch {
    throw new VisionLLMError("invalid_request", "The body is not valid JSON.");
  }
}

function stripNumber(event: StreamEvent): UnnumberedEvent {
  const { sequence_number: _, ...rest } = event;
  return rest as UnnumberedEvent;
}

/** Runner events as they arrive; a runner that dies or misbehaves mid-stream ends in an error event. */
/**
 * The runner's bytes, failing with deadline_exceeded when nothing (not even a `: ping`) arrives for
 * `idleMs`: a runner that hangs must not hold the client's stream open forever.
 */
export function withIdleTimeout(
  body: ReadableStream<Uint8Array>,
  idleMs: number,
): ReadableStream<Uint8Array> {
  const reader = body.getReader();
  let timer: ReturnType<typeof setTimeout> | undefined;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () =>
            reject(
              new VisionLLMError(
                "deadline_exceeded",
                `The model runner went silent for ${Math.round(idleMs / 1000)} s.`,
              ),
            ),
          idleMs,
        );
      });
      try {
        const { done, value } = await Promise.race([reader.read(), timeout]);
        if (done) controller.close();
        else controller.enqueue(value);
      } catch (error) {
        await reader.cancel().catch(() => undefined);
        controller.error(error);
      } finally {
        if (timer !== undefined) clearTimeout(timer);
      }
    },
    async cancel(reason) {
      if (timer !== undefined) clearTimeout(timer);
      await reader.cancel(reason);
    },
  });
}

async function* fromRunner(
  body: ReadableStream<Uint8Array>,
  collected: StreamEvent[],
  idleMs: number,
): AsyncGenerator<UnnumberedEvent> {
  let finished = false;
  try {
    for await (const event of readEventStream(withIdleTimeout(body, idleMs))) {
      collected.push(event);
      yield stripNumber(event);
      if (event.type === "done") {
        finished = true;
        return;
      }
    }
  } catch (error) {
    const err = VisionLLMError.is(error)
      ? error
      : new VisionLLMError("runner_unavailable", "The model runner stopped mid-answer.");
    yield { type: "error", code: err.code, message: `${err.message} Retry the request.`, retryable: true };
    yield { type: "done", finish_reason: "error" };
    finished = true;
  }
  // `collected` keeps only what the runner sent: without its `done` the answer is never cached.
  if (!finished) {
    yield {
      type: "error",
      code: "runner_unavailable",
      message: "The model runner closed the stream early. Retry the request.",
      retryable: true,
    };
    yield { type: "done", finish_reason: "error" };
  }
}

/** A cached answer as this request's own: its start event carries this request's id and time. */
async function* replayCached(
  events: readonly StreamEvent[],
  identity: { id: string; created: number },
): AsyncGenerator<UnnumberedEvent> {
  for (const event of events) {
    const plain = stripNumber(event);
    yield plain.type === "start" ? { ...plain, ...identity } : plain;
  }
}

async function* numbered(
  events: AsyncIterable<UnnumberedEvent>,
  onEnd: () => void,
): AsyncGenerator<StreamEvent> {
  const sequencer = new EventSequencer();
  try {
    for await (const event of events) yield sequencer.number(event) as StreamEvent;
  } finally {
    onEnd();
  }
}

function chunk(
  id: string,
  model: string,
  created: number,
  fields: Partial<ChatCompletionChunk>,
): ChatCompletionChunk {
  return { id, object: "chat.completion.chunk", created, model, choices: [], ...fields };
}

/** Native events -> OpenAI chunks; super-link outputs ride in `visionllm_events`. */
async function* openAIFrames(
  events: AsyncIterable<StreamEvent>,
  meta: { id: string; model: string; created: number; includeUsage: boolean },
): AsyncGenerator<string> {
  const { id, model, created } = meta;
  let usage: Usage | undefined;
  for await (const event of events) {
    switch (event.type) {
      case "start":
        yield encodeData(
          chunk(id, model, created, {
            choices: [{ index: 0, delta: { role: "assistant", content: "" }, finish_reason: null }],
          }),
        );
        break;
      case "text-delta":
        yield encodeData(
          chunk(id, model, created, {
            choices: [{ index: 0, delta: { content: event.delta }, finish_reason: null }],
          }),
        );
        break;
      case "detections":
      case "keypoints":
      case "image":
      case "image-progress":
        yield encodeData(
          chunk(id, model, created, {
            choices: [{ index: 0, delta: {}, finish_reason: null }],
            visionllm_events: [event as SuperLinkEvent],
          }),
        );
        break;
      case "usage":
        usage = {
          prompt_tokens: event.prompt_tokens,
          completion_tokens: event.completion_tokens,
          total_tokens: event.total_tokens,
        };
        break;
      case "error":
        yield encodeData({
          error: {
            message: event.message,
            type: "server_error",
            code: event.code,
            param: null,
            retryable: event.retryable,
          },
        });
        break;
      case "done":
        if (event.finish_reason !== "error") {
          yield encodeData(
            chunk(id, model, created, {
              choices: [{ index: 0, delta: {}, finish_reason: toOpenAIFinish(event.finish_reason) }],
            }),
          );
        }
        if (meta.includeUsage && usage) yield encodeData(chunk(id, model, created, { choices: [], usage }));
        yield encodeData("[DONE]");
        break;
    }
  }
}

/** A stream's error event as the HTTP error a non-streaming answer gives: a retryable one (the runner
 * died, timed out) tells the client when to come back, as a 503 before any stream does. */
export function failureOf(event: Extract<StreamEvent, { type: "error" }>): VisionLLMError {
  return new VisionLLMError(event.code, event.message, {
    ...(event.param ? { param: event.param } : {}),
    ...(event.retryable ? { retryAfterSeconds: RETRY_AFTER_S } : {}),
  });
}

async function collect(
  events: AsyncIterable<StreamEvent>,
  id: string,
  model: string,
  created: number,
): Promise<ChatCompletion> {
  let content = "";
  let finish: "stop" | "length" = "stop";
  let usage: Usage = { prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 };
  const outputs: SuperLinkEvent[] = [];
  for await (const event of events) {
    if (event.type === "text-delta") content += event.delta;
    else if (event.type === "detections" || event.type === "keypoints" || event.type === "image")
      outputs.push(event);
    else if (event.type === "usage")
      usage = {
        prompt_tokens: event.prompt_tokens,
        completion_tokens: event.completion_tokens,
        total_tokens: event.total_tokens,
      };
    else if (event.type === "error") throw failureOf(event);
    else if (event.type === "done") finish = toOpenAIFinish(event.finish_reason);
  }
  return {
    id,
    object: "chat.completion",
    created,
    model,
    choices: [{ index: 0, message: { role: "assistant", content }, finish_reason: finish }],
    usage,
    visionllm_events: outputs,
  };
}

/** Everything a generation needs before a runner is called: model card, limits, prompt, digests. */
export async function prepareGeneration(env: Env, request: ChatCompletionRequest) {
  const card = await modelCard(env);
  const limits = limitsOf(env);
  const sampling = samplingOf(request, Math.min(256, card.limits.max_new_tokens));
  if (sampling.max_tokens > card.limits.max_new_tokens) {
    throw new VisionLLMError(
      "invalid_request",
      `max_tokens may be at most ${card.limits.max_new_tokens} for this model.`,
      {
        param: "max_tokens",
      },
    );
  }
  const assembled = await assemblePrompt(request, card, limits);
  const digests = await Promise.all(assembled.images.map((image) => sha256Hex(image.bytes)));
  return { card, limits, sampling, assembled, digests };
}

export function runnerRequest(
  requestId: string,
  assembled: AssembledPrompt,
  digests: string[],
  sampling: Sampling,
): RunnerGenerateRequest {
  return {
    request_id: requestId,
    prompt: assembled.prompt,
    images: runnerImages(assembled.images, digests),
    regions: assembled.regions,
    sampling,
    deadline_ms: 120_000,
  };
}

/**
 * `Last-Event-ID` on a native stream: a client reconnecting (EventSource does so by itself) sends the
 * same request and gets only the events after that id. The stream log (stream-log.ts) keeps every
 * native stream's events for five minutes, live ones included; past that, a deterministic request
 * (temperature 0 or a seed) is answered again and cut after the id, and a sampled one is refused.
 */
function lastEventId(header: string | undefined): number | undefined {
  if (header === undefined || header === "") return undefined;
  const id = Number(header);
  if (!Number.isInteger(id) || id < 0)
    throw new VisionLLMError("invalid_request", "Last-Event-ID must be an event's id (a sequence number).", {
      param: "last-event-id",
    });
  return id;
}

type Log = DurableObjectStub<StreamLog>;

/** The events after Last-Event-ID from the stream's log, when it still has them. */
async function resumeFromLog(
  c: Context<AppEnv>,
  log: Log,
  release: () => void,
): Promise<ChatStream | undefined> {
  const id = lastEventId(c.req.header("last-event-id"));
  if (id === undefined) return undefined;
  const body = await timed(c, "resume", log.follow(id));
  if (!body) return undefined;
  async function* events(): AsyncGenerator<StreamEvent> {
    try {
      yield* followedEvents(body as ReadableStream<Uint8Array>);
    } finally {
      release();
    }
  }
  return {
    events: events(),
    headers: {
      [REQUEST_ID_HEADER]: c.get("requestId"),
      [PROTOCOL_HEADER]: PROTOCOL_VERSION,
      "x-cache": "RESUMED",
    },
    created: Math.floor(Date.now() / 1000),
    cancel: release,
  };
}

/** The events as they pass, copied into the stream's log in order (batched; after the client's bytes). */
async function* recorded(
  c: Context<AppEnv>,
  events: AsyncIterable<StreamEvent>,
  log: Log,
): AsyncGenerator<StreamEvent> {
  let pending: Promise<unknown> = log.open();
  let batch: StreamEvent[] = [];
  let last = Date.now();
  const flush = (done: boolean) => {
    const sent = batch;
    batch = [];
    last = Date.now();
    pending = pending.then(() => log.append(sent, done)).catch(() => undefined);
    c.executionCtx.waitUntil(pending);
  };
  try {
    for await (const event of events) {
      yield event;
      batch.push(event);
      if (batch.length >= 16 || Date.now() - last > 100 || event.type === "done")
        flush(event.type === "done");
    }
  } finally {
    if (batch.length) flush(true);
  }
}

async function* after(events: AsyncIterable<StreamEvent>, id: number): AsyncGenerator<StreamEvent> {
  for await (const event of events) if (event.sequence_number > id) yield event;
}

/** The Responses request, when the call came through /v1/responses: parsed, and as a chat request. */
function readResponsesRequest(body: unknown): { responses: ResponsesRequest; chat: unknown } {
  const parsed = ResponsesRequestSchema.safeParse(body);
  if (!parsed.success) throw fromZodError(parsed.error);
  return { responses: parsed.data, chat: chatRequestOfResponses(parsed.data) };
}

type Flavor = "native" | "openai" | "responses";
type Generation = Awaited<ReturnType<typeof prepareGeneration>>;

/** One chat request through the edge: parse, admit, prepare, stream (from cache or a runner), answer. */
export async function handleChat(c: Context<AppEnv>, flavor: Flavor): Promise<Response> {
  const { request, responses, bodyText } = await readChatRequest(c, flavor);
  // The prompt is assembled, the cache looked up and the stream log named while the rate limiter
  // answers, unless assembling would fetch image URLs (a refused request must not make the edge fetch
  // anything) or the request is a reconnect (which the stream log may answer with no prompt at all).
  // Nothing of it reaches the client before admission.
  const resuming = flavor === "native" && c.req.header("last-event-id") !== undefined;
  const early = resuming || fetchesImages(request) ? undefined : preparing(c, request);
  early?.catch(() => undefined); // awaited below; a refusal by the limiter must not leave it unhandled
  const logName = flavor === "native" ? streamLogName(c.get("caller").keyId, bodyText) : undefined;
  const release = await admit(c);
  try {
    const log = logName ? c.env.STREAM_LOG.get(c.env.STREAM_LOG.idFromName(await logName)) : undefined;
    // A reconnect the log can answer needs no prompt, images or runner: checked before any of them.
    const resumed = log ? await resumeFromLog(c, log, release) : undefined;
    if (resumed) return await answer(c, flavor, request, responses, resumed, c.env.MODEL_ID);
    const { generation, lookup } = await (early ?? preparing(c, request));
    const stream = await openStream(c, generation, lookup, flavor, release, log);
    return await answer(c, flavor, request, responses, stream, generation.card.id);
  } catch (error) {
    release();
    throw error;
  }
}

/** The generation's inputs, then its cache key and cached answer (if any). */
async function preparing(
  c: Context<AppEnv>,
  request: ChatCompletionRequest,
): Promise<{ generation: Generation; lookup: CacheLookup }> {
  const generation = await timed(c, "prompt", prepareGeneration(c.env, request));
  return { generation, lookup: await lookUpCache(c, generation) };
}

interface CacheLookup {
  key: string | undefined;
  cached: StreamEvent[] | undefined;
  bypass: boolean;
}

/** A deterministic request's cache key, and its cached answer unless the client asked to bypass. */
async function lookUpCache(c: Context<AppEnv>, generation: Generation): Promise<CacheLookup> {
  const { env } = c;
  const { card, sampling, assembled, digests } = generation;
  const bypass =
    /no-cache|no-store/i.test(c.req.header("cache-control") ?? "") || c.req.header("x-cache-bypass") === "1";
  const key = isDeterministic(sampling)
    ? await cacheKey({
        scope: env.CACHE_SCOPE === "shared" ? "shared" : `key:${c.get("caller").keyId}`,
        model: card.id,
        modelVersion: card.version,
        modelDigest: card.digest,
        prompt: assembled.prompt,
        imageDigests: digests,
        regions: assembled.regions,
        sampling,
      })
    : undefined;
  const cached = key && !bypass ? await timed(c, "cache", readCached(env.CACHE, key)) : undefined;
  return { key, cached, bypass };
}

/** Whether assembling the prompt would fetch an image from a URL (not a data: URL). */
function fetchesImages(request: ChatCompletionRequest): boolean {
  return request.messages.some(
    (m) =>
      Array.isArray(m.content) &&
      m.content.some((part) => part.type === "image_url" && !part.image_url.url.startsWith("data:")),
  );
}

async function readChatRequest(
  c: Context<AppEnv>,
  flavor: Flavor,
): Promise<{ request: ChatCompletionRequest; responses: ResponsesRequest | undefined; bodyText: string }> {
  const { json: body, text: bodyText } = await readBody(c);
  const { responses, chat } =
    flavor === "responses" ? readResponsesRequest(body) : { responses: undefined, chat: body };
  const parsed = ChatCompletionRequestSchema.safeParse(chat);
  if (!parsed.success) throw fromZodError(parsed.error);
  const model = c.env.MODEL_ID;
  if (parsed.data.model !== model)
    throw new VisionLLMError(
      "not_found",
      `The model ${parsed.data.model} does not exist here; use ${model} (see GET /v1/models).`,
      { param: "model" },
    );
  return { request: parsed.data, responses, bodyText };
}

/** A stream slot from the key's rate limiter; returns its release (safe to call more than once). */
async function admit(c: Context<AppEnv>): Promise<() => void> {
  const caller = c.get("caller");
  const limiter = c.env.RATE_LIMITER.get(c.env.RATE_LIMITER.idFromName(caller.keyId));
  const acquire = async (): Promise<Admission> =>
    await limiter.acquire(caller.requestsPerMinute, caller.maxConcurrent);
  const admission = await timed(c, "ratelimit", acquire());
  if (!admission.ok) {
    throw new VisionLLMError(
      "rate_limit_exceeded",
      admission.reason === "rpm"
        ? `Rate limit reached: ${caller.requestsPerMinute} requests per minute for this key. Retry in ${admission.retryAfterSeconds} s.`
        : `Too many concurrent streams: at most ${caller.maxConcurrent} for this key. Retry when one finishes.`,
      { retryAfterSeconds: admission.retryAfterSeconds },
    );
  }
  let released = false;
  return () => {
    if (released) return;
    released = true;
    c.executionCtx.waitUntil(limiter.release(admission.leaseId));
  };
}

interface ChatStream {
  events: AsyncIterable<StreamEvent>;
  headers: Record<string, string>;
  created: number;
  /** The client left: stop the runner, free the slot (runs the end once, whoever calls first). */
  cancel: () => void;
}

/** The answer's numbered events, replayed from the response cache or streamed from a runner. */
async function openStream(
  c: Context<AppEnv>,
  generation: Generation,
  lookup: CacheLookup,
  flavor: Flavor,
  release: () => void,
  log?: Log,
): Promise<ChatStream> {
  const { env } = c;
  const requestId = c.get("requestId");
  const { limits, sampling } = generation;
  const { key, cached, bypass } = lookup;
  const resumeAfter = flavor === "native" ? lastEventId(c.req.header("last-event-id")) : undefined;
  if (resumeAfter !== undefined && !isDeterministic(sampling))
    throw new VisionLLMError(
      "invalid_request",
      "Nothing is kept to resume this stream from (streams are kept 5 minutes), and a sampled answer cannot be produced again: send the request without Last-Event-ID, or use temperature 0 or a seed.",
      { param: "last-event-id" },
    );
  const created = Math.floor(Date.now() / 1000);
  const upstream = new AbortController();
  c.req.raw.signal.addEventListener("abort", () => upstream.abort(), { once: true });
  const collected: StreamEvent[] = [];
  const origin = cached
    ? { source: replayCached(cached, { id: requestId, created }), done: () => {}, stale: false }
    : await runnerOrigin(c, generation, upstream.signal, collected);
  let ended = false;
  const onEnd = () => {
    if (ended) return;
    ended = true;
    origin.done();
    release();
    if (key && !cached && !origin.stale && cacheable(collected))
      c.executionCtx.waitUntil(writeCached(env.CACHE, key, collected, limits.cacheTtlSeconds));
  };
  // A client that goes away frees its stream slot at once. The body's cancel() is not enough on
  // its own: measured, workerd does not always cancel a body whose pull is waiting on the runner,
  // and the slot stayed held until the lease expired.
  c.req.raw.signal.addEventListener("abort", onEnd, { once: true });
  const numberedEvents = numbered(origin.source, onEnd);
  const events = log ? recorded(c, numberedEvents, log) : numberedEvents;
  return {
    events: resumeAfter === undefined ? events : after(events, resumeAfter),
    headers: {
      [REQUEST_ID_HEADER]: requestId,
      [PROTOCOL_HEADER]: PROTOCOL_VERSION,
      "x-cache": cached ? "HIT" : !key ? "DYNAMIC" : bypass ? "BYPASS" : "MISS",
    },
    created,
    cancel: () => {
      upstream.abort();
      onEnd();
    },
  };
}

async function runnerOrigin(
  c: Context<AppEnv>,
  generation: Generation,
  signal: AbortSignal,
  collected: StreamEvent[],
): Promise<{ source: AsyncIterable<UnnumberedEvent>; done: () => void; stale: boolean }> {
  const { card, limits, sampling, assembled, digests } = generation;
  const request = runnerRequest(c.get("requestId"), assembled, digests, sampling);
  const forwarded = await timed(c, "runner", forwardGenerate(c.env, request, signal));
  relayRunnerTiming(c, forwarded.response.headers.get("server-timing"));
  const answeredBy = forwarded.response.headers.get(MODEL_DIGEST_HEADER);
  // The bundle was swapped under a cached card: this answer must not be filed under the old digest,
  // and the next request reads the new card.
  const stale = answeredBy !== null && answeredBy !== card.digest;
  if (stale) c.executionCtx.waitUntil(forgetModelCard(c.env));
  const body = forwarded.response.body as ReadableStream<Uint8Array>;
  return { source: fromRunner(body, collected, limits.runnerIdleMs), done: forwarded.done, stale };
}

/** The runner's own phases (queue, prepare, prefill, ttft) beside the edge's, as runner-<phase>. */
function relayRunnerTiming(c: Context<AppEnv>, header: string | null): void {
  for (const entry of (header ?? "").split(",")) {
    const match = /^\s*([a-z]+);dur=([\d.]+)\s*$/.exec(entry);
    if (match?.[1] && match[2]) setMetric(c, `runner-${match[1]}`, Number(match[2]));
  }
}

/** The stream in the caller's flavour: native events, OpenAI chunks or completion, or a Responses answer. */
async function answer(
  c: Context<AppEnv>,
  flavor: Flavor,
  request: ChatCompletionRequest,
  responses: ResponsesRequest | undefined,
  stream: ChatStream,
  model: string,
): Promise<Response> {
  const { events, headers, created, cancel } = stream;
  const requestId = c.get("requestId");
  if (responses) {
    const meta = {
      id: `resp_${requestId}`,
      model,
      created,
      stream: request.stream,
      headers,
      onCancel: cancel,
    };
    return answerResponses(c, events, responses, meta);
  }
  const id = `chatcmpl-${requestId}`;
  if (flavor === "openai" && !request.stream)
    return patientJson(collect(events, id, model, created), patience(c, headers, cancel));
  const frames =
    flavor === "native"
      ? nativeFrames(events)
      : openAIFrames(events, {
          id,
          model,
          created,
          includeUsage: request.stream_options?.include_usage === true,
        });
  return sseResponse(frames, { pingMs: PING_MS, onCancel: cancel, headers });
}

/** How a non-streaming answer waits (patient-json.ts): a client that leaves stops the generation. */
function patience(c: Context<AppEnv>, headers: Record<string, string>, onCancel: () => void): PatientOptions {
  return {
    headers,
    onCancel,
    signal: c.req.raw.signal,
    requestId: c.get("requestId"),
  };
}

/** /v1/responses: the same events as a Responses stream, or the finished response object. */
async function answerResponses(
  c: Context<AppEnv>,
  events: AsyncIterable<StreamEvent>,
  responses: ResponsesRequest,
  meta: {
    id: string;
    model: string;
    created: number;
    stream: boolean;
    headers: Record<string, string>;
    onCancel: () => void;
  },
): Promise<Response> {
  const builder = new ResponseBuilder({
    id: meta.id,
    model: meta.model,
    created: meta.created,
    instructions: responses.instructions ?? null,
    maxOutputTokens: responses.max_output_tokens ?? null,
    temperature: responses.temperature ?? null,
    topP: responses.top_p ?? null,
    metadata: responses.metadata ?? {},
  });
  const keep = (stored: Parameters<typeof storeResponse>[2]) => {
    if (responses.store) c.executionCtx.waitUntil(storeResponse(c.env, c.get("caller").keyId, stored));
  };
  const frames = responseFrames(events, builder, keep);
  if (!meta.stream) {
    const finished = (async () => {
      for await (const _ of frames);
      if (builder.failure) throw failureOf(builder.failure);
      return builder.response;
    })();
    return patientJson(finished, patience(c, meta.headers, meta.onCancel));
  }
  return sseResponse(frames, { pingMs: PING_MS, onCancel: meta.onCancel, headers: meta.headers });
}
