import { createHash } from "node:crypto";
import {
  describeZodError,
  MODEL_DIGEST_HEADER,
  type ModelCard,
  nativeFrames,
  PROTOCOL_HEADER,
  PROTOCOL_VERSION,
  REQUEST_ID_HEADER,
  type RunnerGenerateRequest,
  RunnerGenerateRequestSchema,
  sseResponse,
  VisionLLMError,
} from "@visionllm/protocol";
import type { Context } from "hono";
import type { Admission } from "../engine/admission";
import type { DecodeBatcher } from "../engine/batcher";
import { type ImageFeatureCache, RequestCacheView } from "../engine/feature-cache";
import type { PrefixCache } from "../engine/prefix-cache";
import { type GenerateInput, generate } from "../model/generate";
import type { VisionLLM } from "../model/visionllm";
import type { RunnerConfig } from "./config";
import type { Logger } from "./log";
import type { Metrics } from "./metrics";
import { errorsAsEvents, heldUntilFirstEvents, numbered, watched } from "./stages";

/** What the generate route shares with the rest of the runner. */
export interface RunnerParts {
  model: VisionLLM;
  config: RunnerConfig;
  logger: Logger;
  metrics: Metrics;
  admission: Admission;
  batcher: DecodeBatcher;
  cache: ImageFeatureCache;
  prefixCache: PrefixCache | undefined;
  card: ModelCard;
  inflight: Set<AbortController>;
  /** Requests received and not yet admitted or refused: a drain waits for them too. */
  arriving: { count: number };
  state: { draining: boolean };
  authenticate: (c: Context) => Promise<string>;
  syncGauges: () => void;
  reportPrefixCache: () => void;
}

/** POST /v1/generate: a signed, admitted request streamed as native events (SSE). */
export function generateRoute(parts: RunnerParts): (c: Context) => Promise<Response> {
  return async (c) => {
    const arrival = performance.now();
    parts.arriving.count++;
    let admitted: Admitted;
    try {
      admitted = await receive(parts, c);
    } finally {
      parts.arriving.count--;
    }
    const { request, images, slot } = admitted;
    const requestId = c.req.header(REQUEST_ID_HEADER) ?? request.request_id;
    const telemetry = new Telemetry(parts.metrics, arrival);
    const log = (level: "info" | "error", message: string, fields: Record<string, unknown> = {}) =>
      parts.logger.log(level, message, { request_id: requestId, ...fields });
    const requestCache = new RequestCacheView(parts.cache);
    const events = generate(parts.model, {
      prompt: request.prompt,
      images,
      regions: request.regions,
      sampling: request.sampling,
      signal: slot.controller.signal,
      maxImagePixels: parts.config.RUNNER_MAX_IMAGE_PIXELS,
      featureCache: requestCache,
      ...(parts.prefixCache ? { prefixCache: parts.prefixCache } : {}),
      batcher: parts.batcher,
      ...telemetry.callbacks(),
    });
    const onEnd = (reason: string | undefined) => {
      if (requestCache.hits) parts.metrics.cacheHits.inc(requestCache.hits);
      if (requestCache.misses) parts.metrics.cacheMisses.inc(requestCache.misses);
      parts.reportPrefixCache();
      // A stream the client closed ends without a done event: that request was canceled.
      const finish = reason ?? (slot.controller.signal.aborted ? "canceled" : "error");
      slot.release();
      parts.metrics.e2e.observe((performance.now() - arrival) / 1000);
      parts.metrics.requests.inc({ finished_reason: finish });
      log("info", "request finished", { finish_reason: finish, ms: Math.round(performance.now() - arrival) });
    };
    const unexpected = (error: unknown) =>
      log("error", "generation failed", { error: String(error), stack: (error as Error).stack });
    const start = {
      type: "start",
      id: requestId,
      model: parts.card.id,
      created: Math.floor(Date.now() / 1000),
    } as const;
    const onEvent = telemetry.onEvent;
    const stream = numbered(
      start,
      watched(errorsAsEvents(events, slot.controller.signal, unexpected), onEvent, onEnd),
    );
    // Headers wait for the first model event: input the model refuses (an unreadable image, a prompt
    // over the context) then gets a real 4xx instead of a 200 with an error inside.
    const held = await heldUntilFirstEvents(stream);
    return sseResponse(nativeFrames(held), {
      pingMs: parts.config.RUNNER_PING_MS,
      onCancel: () => {
        slot.controller.abort();
        log("info", "client disconnected");
      },
      headers: {
        [PROTOCOL_HEADER]: PROTOCOL_VERSION,
        [REQUEST_ID_HEADER]: requestId,
        [MODEL_DIGEST_HEADER]: parts.card.digest,
        "server-timing": serverTiming(telemetry.phases),
      },
    });
  };
}

interface Admitted {
  request: RunnerGenerateRequest;
  images: GenerateInput["images"];
  slot: { controller: AbortController; release: () => void };
}

/** The signed request read, checked and admitted to a running slot (or refused). */
async function receive(parts: RunnerParts, c: Context): Promise<Admitted> {
  const raw = await parts.authenticate(c);
  if (parts.state.draining)
    throw new VisionLLMError("overloaded", "The runner is draining; retry on another runner.", {
      retryAfterSeconds: 1,
    });
  const request = parseRequest(raw);
  const images = checkImages(request, parts.config.RUNNER_MAX_IMAGE_BYTES);
  const slot = await admit(parts, c.req.raw.signal, request.deadline_ms);
  return { request, images, slot };
}

function parseRequest(raw: string): RunnerGenerateRequest {
  let json: unknown;
  try {
    json = JSON.parse(raw);
  } catch {
    throw new VisionLLMError("invalid_request", "The body is not JSON.");
  }
  const parsed = RunnerGenerateRequestSchema.safeParse(json);
  if (!parsed.success) {
    const { message, param } = describeZodError(parsed.error);
    throw new VisionLLMError("invalid_request", message, { param });
  }
  return parsed.data;
}

/** Decodes each image, refusing one over the size limit or whose bytes do not match its digest. */
function checkImages(request: RunnerGenerateRequest, maxBytes: number): GenerateInput["images"] {
  return request.images.map((image, i) => {
    const bytes = new Uint8Array(Buffer.from(image.data_base64, "base64"));
    if (bytes.length > maxBytes) {
      throw new VisionLLMError(
        "payload_too_large",
        `Image ${i} is ${bytes.length} bytes; the limit is ${maxBytes}.`,
        {
          param: `images.${i}`,
        },
      );
    }
    if (createHash("sha256").update(bytes).digest("hex") !== image.sha256) {
      throw new VisionLLMError("invalid_request", `Image ${i}: sha256 does not match its bytes.`, {
        param: `images.${i}`,
      });
    }
    return { bytes, sha256: image.sha256 };
  });
}

/**
 * Waits for a running slot under the request's deadline; the client's disconnect aborts the wait and,
 * later, the generation. `release` (idempotent) frees the slot and the deadline.
 */
async function admit(
  parts: RunnerParts,
  clientSignal: AbortSignal,
  deadlineMs: number,
): Promise<{ controller: AbortController; release: () => void }> {
  const controller = new AbortController();
  const deadline = setTimeout(
    () => controller.abort(new VisionLLMError("deadline_exceeded", "Deadline exceeded.")),
    deadlineMs,
  );
  clientSignal.addEventListener("abort", () => controller.abort(), { once: true });
  let releaseSlot: () => void;
  try {
    releaseSlot = await parts.admission.acquire(controller.signal);
  } catch (error) {
    clearTimeout(deadline);
    parts.syncGauges();
    throw error;
  }
  parts.inflight.add(controller);
  parts.syncGauges();
  let released = false;
  const release = () => {
    if (released) return;
    released = true;
    clearTimeout(deadline);
    parts.inflight.delete(controller);
    releaseSlot();
    parts.syncGauges();
  };
  return { controller, release };
}

/** One request's timings: metrics as they happen, and the phases before its first token (Server-Timing). */
class Telemetry {
  readonly phases: Record<string, number>;
  #firstToken = 0;
  #lastToken = 0;

  constructor(
    private readonly metrics: Metrics,
    private readonly arrival: number,
  ) {
    const queued = performance.now() - arrival;
    metrics.queueTime.observe(queued / 1000);
    this.phases = { queue: queued };
  }

  readonly onEvent = (event: { type: string; prompt_tokens?: number }) => {
    if (event.type === "usage" && event.prompt_tokens) this.metrics.promptTokens.inc(event.prompt_tokens);
  };

  callbacks(): Pick<GenerateInput, "onToken" | "onDecoder" | "onPrepared" | "onStep"> {
    return {
      onToken: () => this.#token(),
      onDecoder: (task, seconds) => this.metrics.decoder.observe({ task }, seconds),
      onPrepared: (seconds) => {
        this.phases.prepare = seconds * 1000;
      },
      onStep: (kind, seconds) => {
        if (kind === "prefill" && this.phases.prefill === undefined) this.phases.prefill = seconds * 1000;
      },
    };
  }

  #token(): void {
    const now = performance.now();
    if (!this.#firstToken) {
      this.#firstToken = now;
      this.phases.ttft = now - this.arrival;
      this.metrics.ttft.observe((now - this.arrival) / 1000);
    } else this.metrics.itl.observe((now - this.#lastToken) / 1000);
    this.#lastToken = now;
    this.metrics.generationTokens.inc();
  }
}

/** `queue;dur=0.4, prepare;dur=21.3, ...`: the phases measured so far, in milliseconds. */
export function serverTiming(phases: Record<string, number>): string {
  return Object.entries(phases)
    .map(([name, ms]) => `${name};dur=${ms.toFixed(1)}`)
    .join(", ");
}
