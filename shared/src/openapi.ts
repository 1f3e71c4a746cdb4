import { z } from "zod";
import { ErrorBodySchema } from "./errors";
import { StreamEventSchema } from "./events";
import {
  JobCreateRequestSchema,
  JobListSchema,
  JobSchema,
  WebhookPayloadSchema,
  WebhookSecretRotationSchema,
  WebhookSecretSchema,
} from "./jobs";
import { ChatCompletionChunkSchema, ChatCompletionSchema, ModelListSchema, ModelSchema } from "./openai";
import { ChatCompletionRequestSchema } from "./requests";
import { ResponseSchema, ResponseStreamEventSchema, ResponsesRequestSchema } from "./responses";
import { PROTOCOL_HEADER, PROTOCOL_VERSION } from "./version";

/** OpenAPI 3.1 document generated from the zod schemas (JSON Schema 2020-12 is 3.1's dialect). */

const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });

/** How a non-streaming answer that takes a while is sent (functions/src/patient-json.ts). */
const LATE_JSON =
  " Without stream, an answer not ready within a second starts at once: spaces (valid before JSON) every 250 ms, then the JSON; a failure after that start is the error object, with status 200.";

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
    ["404", "No such model, job or route."],
    ["413", "Body or image too large."],
    ["429", "Rate limit exceeded; see Retry-After."],
    ["503", "No runner can take the request now; see Retry-After."],
  ].map(([status, description]) => [
    status,
    { description, content: { "application/json": { schema: ref("ErrorBody") } } },
  ]),
);

/** What the served model allows, when the edge knows it (from the runner's model card). */
export interface ModelLimits {
  max_new_tokens: number;
}

const idParameter = { name: "id", in: "path", required: true, schema: { type: "string" } };
const json = (name: string, description: string) => ({
  description,
  content: { "application/json": { schema: ref(name) } },
});

const jsonBody = (name: string) => ({
  required: true,
  content: { "application/json": { schema: ref(name) } },
});
/** A 200 that is JSON, or with stream=true server-sent events. */
const jsonOrStream = (name: string, streamName: string, description: string) => ({
  description,
  content: { "application/json": { schema: ref(name) }, "text/event-stream": { schema: ref(streamName) } },
});

/** Sets `maximum` on an integer property, also inside `anyOf` (nullable fields). */
function capInteger(schemaObject: Record<string, unknown>, property: string, maximum: number): void {
  const properties = schemaObject.properties as Record<string, Record<string, unknown>> | undefined;
  const target = properties?.[property];
  if (!target) return;
  const variants = (target.anyOf as Record<string, unknown>[] | undefined) ?? [target];
  for (const v of variants) if (v.type === "integer") v.maximum = maximum;
}

const notFound = {
  description: "No such job for this API key.",
  content: { "application/json": { schema: ref("ErrorBody") } },
};

export function buildOpenAPIDocument(serverUrl = "/", limits?: ModelLimits): Record<string, unknown> {
  const chatRequest = schema(ChatCompletionRequestSchema, "input");
  const jobRequest = schema(JobCreateRequestSchema, "input");
  const responsesRequest = schema(ResponsesRequestSchema, "input");
  if (limits) {
    for (const field of ["max_tokens", "max_completion_tokens", "min_tokens"])
      capInteger(chatRequest, field, limits.max_new_tokens);
    for (const field of ["max_tokens", "min_tokens"]) capInteger(jobRequest, field, limits.max_new_tokens);
    capInteger(responsesRequest, "max_output_tokens", limits.max_new_tokens);
  }
  return {
    openapi: "3.1.0",
    info: {
      title: "VisionLLM serving API",
      version: PROTOCOL_VERSION,
      license: {
        name: "UNLICENSED (private package: no license granted)",
        identifier: "LicenseRef-UNLICENSED",
      },
      description:
        "OpenAI-compatible chat completions with super-link outputs (detections, masks, keypoints, images), " +
        `and the native typed event stream (protocol version in the ${PROTOCOL_HEADER} header).`,
    },
    servers: [{ url: serverUrl }],
    security: [{ bearer: [] }],
    webhooks: {
      job: {
        post: {
          operationId: "jobWebhook",
          summary: "Job events (job.start, job.output, job.completed), signed per Standard Webhooks.",
          requestBody: { content: { "application/json": { schema: ref("WebhookPayload") } } },
          responses: { "200": { description: "Any 2xx acknowledges; 410 stops deliveries." } },
        },
      },
    },
    paths: PATHS,
    components: components(chatRequest, jobRequest, responsesRequest),
  };
}

/** Every path of the API, as data (chat, Responses, models, jobs, webhook secret, operations). */
const PATHS: Record<string, unknown> = {
  "/v1/chat/completions": {
    post: {
      operationId: "createChatCompletion",
      summary: "Chat completion (OpenAI-compatible). Super-link outputs are in `visionllm_events`.",
      requestBody: jsonBody("ChatCompletionRequest"),
      responses: {
        "200": jsonOrStream(
          "ChatCompletion",
          "ChatCompletionChunk",
          `A completion, or with stream=true an SSE stream of chunks ending in \`data: [DONE]\`.${LATE_JSON}`,
        ),
        ...errorResponses,
      },
    },
  },
  "/v1/chat": {
    post: {
      operationId: "streamChat",
      summary: "Native typed event stream (SSE; `event:` is the type, `id:` the sequence number).",
      parameters: [
        {
          name: "Last-Event-ID",
          in: "header",
          required: false,
          description:
            "Resume: send the same request with the id of the last event received, and get exactly the events after it (live while the answer runs). Streams are kept five minutes per API key and request body; after that a deterministic request (temperature 0 or a seed) is answered again and cut after the id, and a sampled one is refused with 400.",
          schema: { type: "integer", minimum: 0 },
        },
      ],
      requestBody: jsonBody("ChatCompletionRequest"),
      responses: {
        "200": {
          description: "SSE stream of events.",
          content: { "text/event-stream": { schema: ref("StreamEvent") } },
        },
        ...errorResponses,
      },
    },
  },
  "/v1/responses": {
    post: {
      operationId: "createResponse",
      summary:
        "OpenAI's Responses API. Output items: the assistant message, then the super link's outputs in answer order (visionllm_detections, visionllm_keypoints, image_generation_call).",
      requestBody: jsonBody("ResponsesRequest"),
      responses: {
        "200": jsonOrStream(
          "Response",
          "ResponseStreamEvent",
          "The response, or with stream=true its typed events (`event:` is the type; every event has a sequence_number)." +
            LATE_JSON,
        ),
        ...errorResponses,
      },
    },
  },
  "/v1/responses/{id}": {
    get: {
      operationId: "retrieveResponse",
      summary:
        "A stored response (kept a day, per API key); with stream=true its events again, after `starting_after` if given.",
      parameters: [
        idParameter,
        { name: "stream", in: "query", required: false, schema: { type: "boolean" } },
        { name: "starting_after", in: "query", required: false, schema: { type: "integer", minimum: 0 } },
      ],
      responses: {
        "200": jsonOrStream("Response", "ResponseStreamEvent", "The response, or its events."),
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
      operationId: "createJob",
      summary:
        "Create an image job. Honours `Idempotency-Key`. Webhooks follow Standard Webhooks (webhook-id, webhook-timestamp, webhook-signature).",
      requestBody: jsonBody("JobCreateRequest"),
      responses: {
        "202": { description: "Accepted.", content: { "application/json": { schema: ref("Job") } } },
        "200": {
          description: "Idempotent replay of an earlier job.",
          content: { "application/json": { schema: ref("Job") } },
        },
        ...errorResponses,
        "422": json(
          "ErrorBody",
          "The Idempotency-Key was used before with another body (idempotency_key_reused).",
        ),
      },
    },
    get: {
      operationId: "listJobs",
      summary: "The caller's own jobs, newest first (`limit`, 1 to 100, default 20).",
      parameters: [
        {
          name: "limit",
          in: "query",
          required: false,
          schema: { type: "integer", minimum: 1, maximum: 100 },
        },
      ],
      responses: { "200": json("JobList", "Jobs."), ...errorResponses },
    },
  },
  "/v1/jobs/{id}": {
    get: {
      operationId: "getJob",
      summary: "One job: state, timestamps of every transition, output.",
      parameters: [idParameter],
      responses: { "200": json("Job", "The job."), ...errorResponses, "404": notFound },
    },
  },
  "/v1/jobs/{id}/cancel": {
    post: {
      operationId: "cancelJob",
      summary: "Cancel a queued or running job.",
      parameters: [idParameter],
      responses: { "200": json("Job", "The job."), ...errorResponses, "404": notFound },
    },
  },
  "/v1/jobs/{id}/files/{name}": {
    get: {
      operationId: "getJobFile",
      summary: "A file a job produced (generated or edited images, masks), as named in its output URLs.",
      parameters: [idParameter, { name: "name", in: "path", required: true, schema: { type: "string" } }],
      responses: {
        "200": {
          description: "The file.",
          content: { "image/png": { schema: { type: "string", format: "binary" } } },
        },
        ...errorResponses,
        "404": notFound,
      },
    },
  },
  "/v1/webhook-secret": {
    get: {
      operationId: "getWebhookSecret",
      summary: "The Standard Webhooks secret (whsec_...) that signs this key's job webhooks.",
      responses: { "200": json("WebhookSecret", "The secret."), ...errorResponses },
    },
  },
  "/v1/webhook-secret/rotate": {
    post: {
      operationId: "rotateWebhookSecret",
      summary: "A new secret; the previous one keeps signing too for a day.",
      responses: { "200": json("WebhookSecretRotation", "The new secret."), ...errorResponses },
    },
  },
  "/healthz": {
    get: {
      operationId: "liveness",
      summary: "Liveness.",
      security: [],
      responses: { "200": { description: "Alive." }, "4XX": json("ErrorBody", "Refused.") },
    },
  },
  "/readyz": {
    get: {
      operationId: "readiness",
      summary: "Readiness: at least one runner behind the edge is ready.",
      security: [],
      responses: {
        "200": { description: "Ready." },
        "503": { description: "No runner is ready; see Retry-After." },
        "4XX": json("ErrorBody", "Refused."),
      },
    },
  },
  "/openapi.json": {
    get: {
      operationId: "openapi",
      summary: "This document.",
      security: [],
      responses: {
        "200": { description: "The OpenAPI 3.1 document." },
        "4XX": json("ErrorBody", "Refused."),
      },
    },
  },
};

/** Security scheme and every schema the paths refer to. */
function components(
  chatRequest: Record<string, unknown>,
  jobRequest: Record<string, unknown>,
  responsesRequest: Record<string, unknown>,
): Record<string, unknown> {
  return {
    securitySchemes: { bearer: { type: "http", scheme: "bearer" } },
    schemas: {
      ChatCompletionRequest: chatRequest,
      ChatCompletion: schema(ChatCompletionSchema, "output"),
      ChatCompletionChunk: schema(ChatCompletionChunkSchema, "output"),
      StreamEvent: schema(StreamEventSchema, "output"),
      ModelList: schema(ModelListSchema, "output"),
      Model: schema(ModelSchema, "output"),
      ErrorBody: schema(ErrorBodySchema, "output"),
      JobCreateRequest: jobRequest,
      Job: schema(JobSchema, "output"),
      JobList: schema(JobListSchema, "output"),
      ResponsesRequest: responsesRequest,
      Response: schema(ResponseSchema, "output"),
      ResponseStreamEvent: schema(ResponseStreamEventSchema, "output"),
      WebhookSecret: schema(WebhookSecretSchema, "output"),
      WebhookSecretRotation: schema(WebhookSecretRotationSchema, "output"),
      WebhookPayload: schema(WebhookPayloadSchema, "output"),
    },
  };
}
