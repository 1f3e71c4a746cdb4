import {
  buildOpenAPIDocument,
  PROTOCOL_HEADER,
  REQUEST_ID_HEADER,
  VisionLLMError,
} from "@visionllm/protocol";
import { Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import { cors } from "hono/cors";
import { routePath } from "hono/route";
import { timing } from "hono/timing";
import { authenticate } from "./auth";
import { handleChat } from "./chat";
import { allowedOrigin } from "./cors";
import { type AppEnv, type Env, type JobMessage, timed } from "./env";
import { cancelJob, consumeDeadLetters, consumeJobs, createJob, getJob, jobFile, listJobs } from "./jobs";
import { asVisionError, logEvent } from "./log";
import { retrieveResponse } from "./responses";
import { modelCard, readyRunners } from "./runner-pool";
import { consumeWebhooks, type DeliveryMessage, rotateWebhookSecret, webhookSecrets } from "./webhooks";

export { RateLimiter } from "./rate-limiter";
export { StreamLog } from "./stream-log";

/** The edge: public API on Hono, in front of the GPU runners. */

const MAX_BODY_BYTES = 24 * 1024 * 1024;

const app = new Hono<AppEnv>();

// Server-Timing on every answer: where the edge's time went (auth, ratelimit, prompt, cache, runner).
app.use(timing({ totalDescription: "edge" }));

app.use(async (c, next) => {
  c.set("requestId", crypto.randomUUID());
  const started = Date.now();
  await next();
  c.header(REQUEST_ID_HEADER, c.get("requestId"));
  // One access line per request (a stream's line is written when its headers go out).
  logEvent(c.res.status >= 500 ? "error" : "info", "request", {
    request_id: c.get("requestId"),
    method: c.req.method,
    // The route's pattern ("/v1/jobs/:id"), not the path: ids stay out of the index.
    route: routePath(c, -1),
    status: c.res.status,
    ms: Date.now() - started,
    cache: c.res.headers.get("x-cache") ?? undefined,
  });
});

app.onError((error, c) => {
  const err = asVisionError(error, c.get("requestId"));
  for (const [k, v] of Object.entries(err.headers())) c.header(k, v);
  return c.json(err.toBody(), err.status as 400);
});

app.notFound((c) => {
  const err = new VisionLLMError(
    "not_found",
    `No route ${c.req.method} ${new URL(c.req.url).pathname}; see /openapi.json.`,
  );
  return c.json(err.toBody(), 404);
});

app.get("/healthz", (c) => c.json({ status: "ok" }));

// Readiness, unlike liveness, needs a runner ready behind the edge.
app.get("/readyz", async (c) => {
  const { ready, total } = await readyRunners(c.env);
  if (ready === 0) c.header("retry-after", "2");
  return c.json(
    { status: ready > 0 ? "ready" : "unavailable", runners_ready: ready, runners: total },
    ready > 0 ? 200 : 503,
  );
});

// With the served model's limits when a runner's card is at hand; the generic bounds otherwise.
app.get("/openapi.json", async (c) => {
  const card = await modelCard(c.env).catch(() => undefined);
  return c.json(buildOpenAPIDocument(new URL(c.req.url).origin, card?.limits));
});

// Browsers on other origins may call the API with a key (keys travel in a header, never as cookies,
// so a page cannot borrow a visitor's credentials). Preflights are answered here, before auth.
app.use(
  "/v1/*",
  cors({
    origin: (origin, c) => allowedOrigin(origin, c.env.CORS_ALLOW_ORIGINS),
    allowMethods: ["GET", "POST", "OPTIONS"],
    allowHeaders: ["authorization", "content-type", "idempotency-key", "last-event-id", PROTOCOL_HEADER],
    exposeHeaders: [REQUEST_ID_HEADER, "retry-after", PROTOCOL_HEADER],
    maxAge: 600,
  }),
);

const v1 = new Hono<AppEnv>();
v1.use(
  bodyLimit({
    maxSize: MAX_BODY_BYTES,
    onError: () => {
      throw new VisionLLMError(
        "payload_too_large",
        `The body is over ${MAX_BODY_BYTES} bytes; send smaller images or image URLs.`,
      );
    },
  }),
);
v1.use(async (c, next) => {
  c.set("caller", await timed(c, "auth", authenticate(c.env, c.req.header("authorization"))));
  await next();
});

const modelOf = (id: string) => ({ id, object: "model", created: 0, owned_by: "visionllm" });
v1.get("/models", (c) => c.json({ object: "list", data: [modelOf(c.env.MODEL_ID)] }));
v1.get("/models/:id", (c) => {
  const id = c.req.param("id");
  if (id !== c.env.MODEL_ID)
    throw new VisionLLMError("not_found", `The model ${id} does not exist here; use ${c.env.MODEL_ID}.`, {
      param: "model",
    });
  return c.json(modelOf(id));
});
v1.post("/chat/completions", (c) => handleChat(c, "openai"));
v1.post("/chat", (c) => handleChat(c, "native"));
v1.post("/responses", (c) => handleChat(c, "responses"));
v1.get("/responses/:id", retrieveResponse);
v1.post("/jobs", createJob);
v1.get("/jobs", listJobs);
v1.get("/jobs/:id", getJob);
v1.post("/jobs/:id/cancel", cancelJob);
v1.get("/jobs/:id/files/:name", jobFile);
v1.get("/webhook-secret", async (c) => {
  const [secret] = await webhookSecrets(c.env, c.get("caller").keyId);
  return c.json({ secret });
});
v1.post("/webhook-secret/rotate", async (c) => {
  const secret = await rotateWebhookSecret(c.env, c.get("caller").keyId);
  return c.json({ secret, previous_valid_for_seconds: 86_400 });
});

app.route("/v1", v1);

export default {
  fetch: app.fetch,
  async queue(batch: MessageBatch<unknown>, env: Env): Promise<void> {
    if (batch.queue.endsWith("-dlq")) return consumeDeadLetters(batch as MessageBatch<JobMessage>, env);
    if (batch.queue.includes("webhooks")) return consumeWebhooks(batch as MessageBatch<DeliveryMessage>, env);
    return consumeJobs(batch as MessageBatch<JobMessage>, env);
  },
} satisfies ExportedHandler<Env>;
