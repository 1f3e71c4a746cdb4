import { createHash } from "node:crypto";
import {
  describeZodError,
  EventSequencer,
  MODEL_DIGEST_HEADER,
  type ModelCard,
  nativeFrames,
  PROTOCOL_HEADER,
  PROTOCOL_VERSION,
  precheckSignature,
  REQUEST_ID_HEADER,
  RUNNER_NONCE_HEADER,
  RUNNER_SIGNATURE_HEADER,
  RUNNER_TIMESTAMP_HEADER,
  RunnerGenerateRequestSchema,
  type StreamEvent,
  sseResponse,
  type UnnumberedEvent,
  VisionLLMError,
  verifyRequest,
} from "@visionllm/protocol";
import { type Context, Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import { bundleDigest } from "../bundle/load";
import { Admission } from "../engine/admission";
import { DecodeBatcher } from "../engine/batcher";
import { ImageFeatureCache, RequestCacheView } from "../engine/feature-cache";
import { PrefixCache } from "../engine/prefix-cache";
import { generate } from "../model/generate";
import type { VisionLLM } from "../model/visionllm";
import type { RunnerConfig } from "./config";
import type { Logger } from "./log";
import { createMetrics } from "./metrics";

/** The runner's internal HTTP API, called only by the edge (every /v1 request is signed). */

export interface RunnerState {
  draining: boolean;
}

export function modelCardOf(model: VisionLLM, config: RunnerConfig): ModelCard {
  const m = model.manifest;
  return {
    id: m.model.id,
    version: m.model.version,
    digest: bundleDigest(m),
    architecture: m.model.architecture,
    backend: { name: model.backend.runtime, provider: `${model.backend.provider}: ${model.backend.device}` },
    chat_template: m.chat_template,
    system_prompt: m.system_prompt,
    special_tokens: {
      image: m.special_tokens.image,
      region: m.special_tokens.region,
      region_start: m.special_tokens.region_start,
      region_end: m.special_tokens.region_end,
    },
    routing_tokens: Object.keys(m.routing),
    reserved_tokens: [...model.tokenizer.specialTokens],
    tasks: m.tasks,
    keypoints: m.keypoints,
    limits: {
      max_context: m.limits.max_context,
      max_new_tokens: m.limits.max_new_tokens,
      max_images: m.limits.max_images,
      max_regions: m.limits.max_regions,
      max_image_bytes: config.RUNNER_MAX_IMAGE_BYTES,
      max_image_pixels: config.RUNNER_MAX_IMAGE_PIXELS,
    },
  };
}

export function createRunnerApp(model: VisionLLM, config: RunnerConfig, logger: Logger) {
  const metrics = createMetrics(model.manifest.model.id);
  const admission = new Admission(config.RUNNER_MAX_RUNNING, config.RUNNER_MAX_WAITING);
  const batcher = new DecodeBatcher(model, {
    maxBatch: config.RUNNER_MAX_BATCH,
    maxWaitMs: config.RUNNER_BATCH_WAIT_MS,
  });
  batcher.onBatch = (size) => metrics.batchSize.observe(size);
  model.onGraphBatch = (graph, calls) => metrics.graphBatch.observe({ graph }, calls);
  const cache = new ImageFeatureCache(config.RUNNER_FEATURE_CACHE_MB * 1024 * 1024);
  const prefixCache = config.RUNNER_PREFIX_CACHE_MB
    ? new PrefixCache(config.RUNNER_PREFIX_CACHE_MB * 1024 * 1024, model.heads, model.headDim)
    : undefined;
  const prefixReported = { queried: 0, hit: 0 };
  const reportPrefixCache = () => {
    if (!prefixCache) return;
    metrics.prefixQueries.inc(prefixCache.queried - prefixReported.queried);
    metrics.prefixHits.inc(prefixCache.hit - prefixReported.hit);
    prefixReported.queried = prefixCache.queried;
    prefixReported.hit = prefixCache.hit;
  };
  const state: RunnerState = { draining: false };
  const seenSignatures = new Map<string, number>();
  const startedAt = Math.floor(Date.now() / 1000);
  const card = modelCardOf(model, config);
  const inflight = new Set<AbortController>();

  const syncGauges = () => {
    metrics.running.set(admission.running);
    metrics.waiting.set(admission.waiting);
  };

  const fail = (c: Context, error: VisionLLMError) => {
    metrics.rejected.inc({ code: error.code });
    for (const [k, v] of Object.entries(error.headers())) c.header(k, v);
    return c.json(error.toBody(), error.status as 400);
  };

  /**
   * Verifies the edge's HMAC, refuses replays, returns the raw body. Headers and freshness are
   * checked before the body is read; requests signed before this process started are refused, since
   * the signatures it has seen died with the previous process.
   */
  const authenticate = async (c: Context): Promise<string> => {
    const signature = c.req.header(RUNNER_SIGNATURE_HEADER);
    const timestamp = c.req.header(RUNNER_TIMESTAMP_HEADER);
    const nonce = c.req.header(RUNNER_NONCE_HEADER);
    const options = { windowSeconds: config.RUNNER_SIGNATURE_WINDOW_S, notBefore: startedAt };
    const pre = precheckSignature(timestamp, nonce, signature, options);
    if (!pre.ok) throw new VisionLLMError("invalid_api_key", `Runner request refused: ${pre.reason}.`);
    const body = await c.req.text();
    const check = await verifyRequest(
      config.RUNNER_SECRET,
      c.req.method,
      new URL(c.req.url).pathname,
      body,
      timestamp,
      nonce,
      signature,
      options,
    );
    if (!check.ok) throw new VisionLLMError("invalid_api_key", `Runner request refused: ${check.reason}.`);
    const now = Date.now();
    for (const [sig, expires] of seenSignatures) if (expires < now) seenSignatures.delete(sig);
    if (signature && seenSignatures.has(signature)) {
      throw new VisionLLMError(
        "invalid_api_key",
        "Runner request refused: this signature was already used (replay).",
      );
    }
    if (signature) seenSignatures.set(signature, now + 2 * config.RUNNER_SIGNATURE_WINDOW_S * 1000);
    return body;
  };

  const app = new Hono();
  // A body is read only after its signature headers pass, and never past this size.
  app.use(
    "/v1/*",
    bodyLimit({
      maxSize: config.RUNNER_MAX_BODY_BYTES,
      onError: () => {
        throw new VisionLLMError(
          "payload_too_large",
          `The body is over ${config.RUNNER_MAX_BODY_BYTES} bytes.`,
        );
      },
    }),
  );

  app.onError((error, c) => {
    if (VisionLLMError.is(error)) return fail(c, error);
    logger.log("error", "unhandled error", { error: String(error), stack: (error as Error).stack });
    return fail(
      c,
      new VisionLLMError("internal_error", "The runner failed unexpectedly; the error was logged."),
    );
  });

  app.get("/healthz", (c) => c.json({ status: "ok" }));

  app.get("/readyz", (c) => {
    const body = {
      ready: !state.draining,
      model: `${card.id}@${card.version}`,
      backend: card.backend,
      running: admission.running,
      waiting: admission.waiting,
    };
    return c.json(body, state.draining ? 503 : 200);
  });

  app.get("/metrics", async (c) => {
    syncGauges();
    c.header("content-type", metrics.registry.contentType);
    return c.body(await metrics.registry.metrics());
  });

  app.get("/v1/model-card", async (c) => {
    await authenticate(c);
    return c.json(card);
  });

  app.post("/v1/generate", async (c) => {
    const arrival = performance.now();
    const raw = await authenticate(c);
    if (state.draining) {
      throw new VisionLLMError("overloaded", "The runner is draining; retry on another runner.", {
        retryAfterSeconds: 1,
      });
    }
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
    const request = parsed.data;
    const requestId = c.req.header(REQUEST_ID_HEADER) ?? request.request_id;
    const images = request.images.map((image, i) => {
      const bytes = new Uint8Array(Buffer.from(image.data_base64, "base64"));
      if (bytes.length > config.RUNNER_MAX_IMAGE_BYTES) {
        throw new VisionLLMError(
          "payload_too_large",
          `Image ${i} is ${bytes.length} bytes; the limit is ${config.RUNNER_MAX_IMAGE_BYTES}.`,
          { param: `images.${i}` },
        );
      }
      const digest = createHash("sha256").update(bytes).digest("hex");
      if (digest !== image.sha256) {
        throw new VisionLLMError("invalid_request", `Image ${i}: sha256 does not match its bytes.`, {
          param: `images.${i}`,
        });
      }
      return { bytes, sha256: image.sha256 };
    });

    const controller = new AbortController();
    const deadline = setTimeout(
      () => controller.abort(new VisionLLMError("deadline_exceeded", "Deadline exceeded.")),
      request.deadline_ms,
    );
    c.req.raw.signal.addEventListener("abort", () => controller.abort(), { once: true });
    let release: () => void;
    try {
      release = await admission.acquire(controller.signal);
    } catch (error) {
      clearTimeout(deadline);
      syncGauges();
      throw error;
    }
    inflight.add(controller);
    syncGauges();
    const queuedMs = performance.now() - arrival;
    metrics.queueTime.observe(queuedMs / 1000);
    // Where this request's time went before its first token, sent as Server-Timing (ms).
    const phases: Record<string, number> = { queue: queuedMs };
    const log = (level: "info" | "warn" | "error", message: string, fields: Record<string, unknown> = {}) =>
      logger.log(level, message, { request_id: requestId, ...fields });

    let firstToken = 0;
    let lastToken = 0;
    const requestCache = new RequestCacheView(cache);
    const sequencer = new EventSequencer();
    const events = generate(model, {
      prompt: request.prompt,
      images,
      regions: request.regions,
      sampling: request.sampling,
      signal: controller.signal,
      maxImagePixels: config.RUNNER_MAX_IMAGE_PIXELS,
      featureCache: requestCache,
      ...(prefixCache ? { prefixCache } : {}),
      batcher,
      onToken: () => {
        const now = performance.now();
        if (!firstToken) {
          firstToken = now;
          phases.ttft = now - arrival;
          metrics.ttft.observe((now - arrival) / 1000);
        } else metrics.itl.observe((now - lastToken) / 1000);
        lastToken = now;
        metrics.generationTokens.inc();
      },
      onDecoder: (task, seconds) => metrics.decoder.observe({ task }, seconds),
      onPrepared: (seconds) => {
        phases.prepare = seconds * 1000;
      },
      onStep: (kind, seconds) => {
        if (kind === "prefill" && phases.prefill === undefined) phases.prefill = seconds * 1000;
      },
    });

    let finished = false;
    const finish = (reason: string) => {
      if (finished) return;
      finished = true;
      clearTimeout(deadline);
      inflight.delete(controller);
      release();
      syncGauges();
      metrics.e2e.observe((performance.now() - arrival) / 1000);
      metrics.requests.inc({ finished_reason: reason });
      log("info", "request finished", { finish_reason: reason, ms: Math.round(performance.now() - arrival) });
    };

    async function* numbered(): AsyncGenerator<StreamEvent> {
      yield sequencer.number({
        type: "start",
        id: requestId,
        model: card.id,
        created: Math.floor(Date.now() / 1000),
      });
      let reason: string | undefined;
      try {
        for await (const event of events) {
          if (event.type === "usage") metrics.promptTokens.inc(event.prompt_tokens);
          if (event.type === "done") {
            reason = event.finish_reason;
            const aborted = controller.signal.reason;
            if (VisionLLMError.is(aborted)) {
              yield sequencer.number(errorEvent(aborted));
              yield sequencer.number({ type: "done", finish_reason: "error" });
              reason = "error";
              continue;
            }
          }
          yield sequencer.number(event as UnnumberedEvent);
        }
      } catch (error) {
        const err = VisionLLMError.is(error)
          ? error
          : new VisionLLMError("model_error", "The model failed while generating; the error was logged.");
        if (!VisionLLMError.is(error))
          log("error", "generation failed", { error: String(error), stack: (error as Error).stack });
        reason = "error";
        yield sequencer.number(errorEvent(err));
        yield sequencer.number({ type: "done", finish_reason: "error" });
      } finally {
        if (requestCache.hits) metrics.cacheHits.inc(requestCache.hits);
        if (requestCache.misses) metrics.cacheMisses.inc(requestCache.misses);
        reportPrefixCache();
        // A stream the client closed ends here without a done event: that request was canceled.
        finish(reason ?? (controller.signal.aborted ? "canceled" : "error"));
      }
    }

    // Hold the headers until the first model event: input the model refuses (an unreadable
    // image, a prompt over the context) then gets a real 4xx instead of a 200 with an error inside.
    const iterator = numbered();
    const head: StreamEvent[] = [];
    for (let i = 0; i < 2; i++) {
      const next = await iterator.next();
      if (next.done) break;
      head.push(next.value);
    }
    const refused = head[1];
    if (refused?.type === "error" && !refused.retryable && refused.code !== "model_error") {
      await iterator.return(undefined);
      throw new VisionLLMError(refused.code, refused.message, refused.param ? { param: refused.param } : {});
    }
    async function* replay(): AsyncGenerator<StreamEvent> {
      yield* head;
      yield* iterator;
    }
    return sseResponse(nativeFrames(replay()), {
      pingMs: config.RUNNER_PING_MS,
      onCancel: () => {
        controller.abort();
        log("info", "client disconnected");
      },
      headers: {
        [PROTOCOL_HEADER]: PROTOCOL_VERSION,
        [REQUEST_ID_HEADER]: requestId,
        [MODEL_DIGEST_HEADER]: card.digest,
        "server-timing": serverTiming(phases),
      },
    });
  });

  /** SIGTERM: refuse new work, let in-flight requests finish (bounded), then resolve. */
  const drain = async (timeoutMs: number): Promise<void> => {
    state.draining = true;
    admission.close();
    const until = Date.now() + timeoutMs;
    while (admission.running > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
    for (const controller of inflight) controller.abort();
  };

  return { app, metrics, admission, batcher, cache, state, drain };
}

/** `queue;dur=0.4, prepare;dur=21.3, ...`: the phases measured so far, in milliseconds. */
export function serverTiming(phases: Record<string, number>): string {
  return Object.entries(phases)
    .map(([name, ms]) => `${name};dur=${ms.toFixed(1)}`)
    .join(", ");
}

function errorEvent(error: VisionLLMError): UnnumberedEvent {
  return {
    type: "error",
    code: error.code,
    message: error.message,
    ...(error.param ? { param: error.param } : {}),
    retryable: error.retryable,
  };
}
