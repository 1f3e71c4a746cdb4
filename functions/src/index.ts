import { buildOpenAPIDocument, REQUEST_ID_HEADER, VisionLLMError } from "@visionllm/protocol";
import { Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import { authenticate } from "./auth";
import { handleChat } from "./chat";
import type { AppEnv } from "./env";

export { RateLimiter } from "./rate-limiter";

/** The edge: public API on Hono, in front of the GPU runners. */

const MAX_BODY_BYTES = 24 * 1024 * 1024;

const app = new Hono<AppEnv>();

app.use(async (c, next) => {
  c.set("requestId", crypto.randomUUID());
  await next();
  c.header(REQUEST_ID_HEADER, c.get("requestId"));
});

app.onError((error, c) => {
  const err = VisionLLMError.is(error)
    ? error
    : new VisionLLMError("internal_error", "The edge failed unexpectedly; the error was logged.");
  if (!VisionLLMError.is(error)) console.error("edge error", c.get("requestId"), error);
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

app.get("/openapi.json", (c) => c.json(buildOpenAPIDocument(new URL(c.req.url).origin)));

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
  c.set("caller", await authenticate(c.env, c.req.header("authorization")));
  await next();
});

v1.get("/models", (c) =>
  c.json({
    object: "list",
    data: [{ id: c.env.MODEL_ID, object: "model", created: 0, owned_by: "visionllm" }],
  }),
);
v1.post("/chat/completions", (c) => handleChat(c, "openai"));
v1.post("/chat", (c) => handleChat(c, "native"));

app.route("/v1", v1);

export default app;
