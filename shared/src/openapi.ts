import { z } from "zod";
import { ErrorBodySchema } from "./errors";
import { StreamEventSchema } from "./events";
import { JobCreateRequestSchema, JobSchema, WebhookPayloadSchema } from "./jobs";
import { ChatCompletionChunkSchema, ChatCompletionSchema, ModelListSchema, ModelSchema } from "./openai";
import { ChatCompletionRequestSchema } from "./requests";
import { PROTOCOL_HEADER, PROTOCOL_VERSION } from "./version";

/** OpenAPI 3.1 document generated from the zod schemas (JSON Schema 2020-12 is 3.1's dialect). */

const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });

function schema(s: z.ZodType, io: "input" | "output"): Record<string, unknown> {
  const json = z.toJSONSchema(s, { target: "draft-2020-12", io, unrepresentable: "any" }) as Record<
    string,
    unknown
  >;
  delete json.$schema;
  return json;
}

const errorResponses = Object.fromEntries(
  [
    ["400", "The request is malformed; the message names the field and how to fix it."],
    ["401", "Missing, wrong or revoked API key."],
    ["413", "Body or image too large."],
    ["429", "Rate limit exceeded; see Retry-After."],
    ["503", "No runner can take the request now; see Retry-After."],
  ].map(([status, description]) => [
    status,
    { description, content: { "application/json": { schema: ref("ErrorBody") } } },
  ]),
);

export function buildOpenAPIDocument(serverUrl = "/"): Record<string, unknown> {
  return {
    openapi: "3.1.0",
    info: {
      title: "VisionLLM serving API",
      version: PROTOCOL_VERSION,
      description:
        "OpenAI-compatible chat completions with super-link outputs (detections, masks, keypoints, images), " +
        `and the native typed event stream (protocol version in the ${PROTOCOL_HEADER} header).`,
    },
    servers: [{ url: serverUrl }],
    security: [{ bearer: [] }],
    webhooks: {
      job: {
        post: {
          summary: "Job events (job.start, job.output, job.completed), signed per Standard Webhooks.",
          requestBody: { content: { "application/json": { schema: ref("WebhookPayload") } } },
          responses: { "200": { description: "Any 2xx acknowledges; 410 stops deliveries." } },
        },
      },
    },
    paths: {
      "/v1/chat/completions": {
        post: {
          summary: "Chat completion (OpenAI-compatible). Super-link outputs are in `visionllm_events`.",
          requestBody: {
            required: true,
            content: { "application/json": { schema: ref("ChatCompletionRequest") } },
          },
          responses: {
            "200": {
              description:
                "A completion, or with stream=true an SSE stream of chunks ending in `data: [DONE]`.",
              content: {
                "application/json": { schema: ref("ChatCompletion") },
                "text/event-stream": { schema: ref("ChatCompletionChunk") },
              },
            },
            ...errorResponses,
          },
        },
      },
      "/v1/chat": {
        post: {
          summary: "Native typed event stream (SSE; `event:` is the type, `id:` the sequence number).",
          requestBody: {
            required: true,
            content: { "application/json": { schema: ref("ChatCompletionRequest") } },
          },
          responses: {
            "200": {
              description: "SSE stream of events.",
              content: { "text/event-stream": { schema: ref("StreamEvent") } },
            },
            ...errorResponses,
          },
        },
      },
      "/v1/models": {
        get: {
          summary: "Models served.",
          operationId: "listModels",
          responses: {
            "200": {
              description: "Model list.",
              content: { "application/json": { schema: ref("ModelList") } },
            },
            ...errorResponses,
          },
        },
      },
      "/v1/models/{model}": {
        get: {
          summary: "One model, as OpenAI's models.retrieve reads it.",
          operationId: "retrieveModel",
          parameters: [{ name: "model", in: "path", required: true, schema: { type: "string" } }],
          responses: {
            "200": { description: "The model.", content: { "application/json": { schema: ref("Model") } } },
            ...errorResponses,
          },
        },
      },
      "/v1/jobs": {
        post: {
          summary:
            "Create an image job. Honours `Idempotency-Key`. Webhooks follow Standard Webhooks (webhook-id, webhook-timestamp, webhook-signature).",
          requestBody: {
            required: true,
            content: { "application/json": { schema: ref("JobCreateRequest") } },
          },
          responses: {
            "202": { description: "Accepted.", content: { "application/json": { schema: ref("Job") } } },
            "200": {
              description: "Idempotent replay of an earlier job.",
              content: { "application/json": { schema: ref("Job") } },
            },
            ...errorResponses,
          },
        },
        get: {
          summary: "The caller's own jobs, newest first.",
          responses: {
            "200": { description: "Jobs.", content: { "application/json": { schema: { type: "object" } } } },
          },
        },
      },
      "/v1/jobs/{id}": {
        get: {
          summary: "One job: state, timestamps of every transition, output.",
          parameters: [{ name: "id", in: "path", required: true, schema: { type: "string" } }],
          responses: {
            "200": { description: "The job.", content: { "application/json": { schema: ref("Job") } } },
            ...errorResponses,
          },
        },
      },
      "/v1/jobs/{id}/cancel": {
        post: {
          summary: "Cancel a queued or running job.",
          parameters: [{ name: "id", in: "path", required: true, schema: { type: "string" } }],
          responses: {
            "200": { description: "The job.", content: { "application/json": { schema: ref("Job") } } },
            ...errorResponses,
          },
        },
      },
      "/healthz": {
        get: { summary: "Liveness.", security: [], responses: { "200": { description: "Alive." } } },
      },
    },
    components: {
      securitySchemes: { bearer: { type: "http", scheme: "bearer" } },
      schemas: {
        ChatCompletionRequest: schema(ChatCompletionRequestSchema, "input"),
        ChatCompletion: schema(ChatCompletionSchema, "output"),
        ChatCompletionChunk: schema(ChatCompletionChunkSchema, "output"),
        StreamEvent: schema(StreamEventSchema, "output"),
        ModelList: schema(ModelListSchema, "output"),
        Model: schema(ModelSchema, "output"),
        ErrorBody: schema(ErrorBodySchema, "output"),
        JobCreateRequest: schema(JobCreateRequestSchema, "input"),
        Job: schema(JobSchema, "output"),
        WebhookPayload: schema(WebhookPayloadSchema, "output"),
      },
    },
  };
}
