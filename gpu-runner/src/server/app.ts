import { type ModelCard, VisionLLMError } from "@visionllm/protocol";
import { type Context, Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import { bundleDigest } from "../bundle/load";
import { Admission } from "../engine/admission";
import { DecodeBatcher } from "../engine/batcher";
import { ImageFeatureCache } from "../engine/feature-cache";
import { PrefixCache } from "../engine/prefix-cache";
import type { VisionLLM } from "../model/visionllm";
import { createAuthenticator } from "./authenticate";
import type { RunnerConfig } from "./config";
import { generateRoute, type RunnerParts } from "./generate-route";
import type { Logger } from "./log";
import { createMetrics } from "./metrics";

/** The runner's internal HTTP API, called only by the edge (every /v1 request is signed). */

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
  const parts = runnerParts(model, config, logger);
  const { metrics, admission, batcher, cache, state, inflight, card } = parts;
  const fail = (c: Context, error: VisionLLMError) => {
    metrics.rejected.inc({ code: error.code });
    for (const [k, v] of Object.entries(error.headers())) c.header(k, v);
    return c.json(error.toBody(), error.status as 400);
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
    const { running, waiting } = admission;
    const body = {
      ready: !state.draining,
      model: `${card.id}@${card.version}`,
      backend: card.backend,
      running,
      waiting,
    };
    return c.json(body, state.draining ? 503 : 200);
  });
  app.get("/metrics", async (c) => {
    parts.syncGauges();
    c.header("content-type", metrics.registry.contentType);
    return c.body(await metrics.registry.metrics());
  });
  app.get("/v1/model-card", async (c) => {
    await parts.authenticate(c);
    return c.json(card);
  });
  app.post("/v1/generate", generateRoute(parts));

  /** SIGTERM: refuse new work, let in-flight requests finish (bounded), then resolve. */
  const drain = async (timeoutMs: number): Promise<void> => {
    state.draining = true;
    admission.close();
    const until = Date.now() + timeoutMs;
    // Requests still being read count too: a drain must not close the connection under one.
    const busy = () => admission.running > 0 || parts.arriving.count > 0;
    while (busy() && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
    for (const controller of inflight) controller.abort();
  };

  return { app, metrics, admission, batcher, cache, state, drain };
}

/** The engine around the model: admission, the decode batcher, caches, metrics and the edge's signature. */
function runnerParts(model: VisionLLM, config: RunnerConfig, logger: Logger): RunnerParts {
  const metrics = createMetrics(model.manifest.model.id);
  const admission = new Admission(config.RUNNER_MAX_RUNNING, config.RUNNER_MAX_WAITING);
  const batcher = new DecodeBatcher(model, {
    maxBatch: config.RUNNER_MAX_BATCH,
    maxWaitMs: config.RUNNER_BATCH_WAIT_MS,
  });
  batcher.onBatch = (size) => metrics.batchSize.observe(size);
  model.onGraphBatch = (graph, calls) => metrics.graphBatch.observe({ graph }, calls);
  const prefixCache = config.RUNNER_PREFIX_CACHE_MB
    ? new PrefixCache(config.RUNNER_PREFIX_CACHE_MB * 1024 * 1024, model.heads, model.headDim)
    : undefined;
  const reported = { queried: 0, hit: 0 };
  const reportPrefixCache = () => {
    if (!prefixCache) return;
    metrics.prefixQueries.inc(prefixCache.queried - reported.queried);
    metrics.prefixHits.inc(prefixCache.hit - reported.hit);
    reported.queried = prefixCache.queried;
    reported.hit = prefixCache.hit;
  };
  const syncGauges = () => {
    metrics.running.set(admission.running);
    metrics.waiting.set(admission.waiting);
  };
  return {
    model,
    config,
    logger,
    metrics,
    admission,
    batcher,
    cache: new ImageFeatureCache(config.RUNNER_FEATURE_CACHE_MB * 1024 * 1024),
    prefixCache,
    card: modelCardOf(model, config),
    inflight: new Set<AbortController>(),
    arriving: { count: 0 },
    state: { draining: false },
    authenticate: createAuthenticator(config, Math.floor(Date.now() / 1000)),
    syncGauges,
    reportPrefixCache,
  };
}
