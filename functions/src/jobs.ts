import {
  type ChatCompletionRequest,
  ChatCompletionRequestSchema,
  type ContentPart,
  fromZodError,
  type Job,
  JobCreateRequestSchema,
  type JobOutput,
  type JobState,
  type Message,
  readEventStream,
  type StreamEvent,
  VisionLLMError,
  type WebhookEventType,
} from "@visionllm/protocol";
import type { Context } from "hono";
import { failureOf, prepareGeneration, runnerRequest } from "./chat";
import type { AppEnv, Env, JobMessage } from "./env";
import { forwardGenerate } from "./runner-pool";
import { enqueueWebhook, webhookTargetRefused } from "./webhooks";

/**
 * Image jobs: accepted with 202, run by the JOBS queue consumer on a runner, results in D1 (JSON)
 * and R2 (images), webhooks through their own queue. A job's state only moves forward, and every
 * transition is a conditional UPDATE, so a retried or duplicated queue message cannot undo one.
 */

interface JobRow {
  id: string;
  key_id: string;
  state: JobState;
  request: string;
  webhook_url: string | null;
  webhook_events: string;
  request_digest: string | null;
  attempts: number;
  result: string | null;
  error: string | null;
  created_at: number;
  queued_at: number;
  running_at: number | null;
  succeeded_at: number | null;
  failed_at: number | null;
  canceled_at: number | null;
}

export function toJob(row: JobRow, origin: string): Job {
  const timestamps: Partial<Record<JobState, number>> = { queued: row.queued_at };
  if (row.running_at) timestamps.running = row.running_at;
  if (row.succeeded_at) timestamps.succeeded = row.succeeded_at;
  if (row.failed_at) timestamps.failed = row.failed_at;
  if (row.canceled_at) timestamps.canceled = row.canceled_at;
  return {
    id: row.id,
    object: "job",
    state: row.state,
    created_at: row.created_at,
    timestamps,
    attempts: row.attempts,
    output: row.result ? (JSON.parse(row.result) as JobOutput) : null,
    error: row.error,
    webhook: row.webhook_url,
    webhook_events_filter: JSON.parse(row.webhook_events) as WebhookEventType[],
    urls: { get: `${origin}/v1/jobs/${row.id}`, cancel: `${origin}/v1/jobs/${row.id}/cancel` },
  };
}

async function getRow(env: Env, id: string, keyId?: string): Promise<JobRow | null> {
  const row = await env.DB.prepare("SELECT * FROM jobs WHERE id = ?").bind(id).first<JobRow>();
  if (!row || (keyId !== undefined && row.key_id !== keyId)) return null;
  return row;
}

/** The chat request a job stands for: a 400 (with the field) if it is not a valid one. */
export function chatRequestOf(
  body: ReturnType<typeof JobCreateRequestSchema.parse>,
  model: string,
): ChatCompletionRequest {
  const imageParts: ContentPart[] = body.images.map((url) => ({ type: "image_url", image_url: { url } }));
  const parsed = ChatCompletionRequestSchema.safeParse({
    model,
    messages: withImages(body.messages ?? [], imageParts),
    ...(body.task ? { task: body.task } : {}),
    max_tokens: body.max_tokens ?? 256,
    ...(body.min_tokens === undefined ? {} : { min_tokens: body.min_tokens }),
    temperature: body.temperature ?? 0,
    ...(body.seed === undefined ? {} : { seed: body.seed }),
  });
  if (!parsed.success) throw fromZodError(parsed.error);
  return parsed.data;
}

/** A job's `images` join its first user message, ahead of the text, as if attached there. */
function withImages(messages: Message[], images: ContentPart[]): Message[] {
  messages.forEach((m, i) => {
    if (typeof m.content === "string" && m.content.trim() === "")
      throw new VisionLLMError(
        "invalid_request",
        "A message's content is empty: give its text or drop the message.",
        {
          param: `messages[${i}].content`,
        },
      );
  });
  if (images.length === 0) return messages;
  if (messages.length === 0) return [{ role: "user", content: images }];
  const first = messages.findIndex((m) => m.role === "user");
  if (first < 0)
    throw new VisionLLMError(
      "invalid_request",
      "images need a user message to go with: add one, or send no messages.",
      {
        param: "images",
      },
    );
  return messages.map((m, i) => {
    if (i !== first || m.role !== "user") return m;
    const parts: ContentPart[] =
      typeof m.content === "string" ? [{ type: "text", text: m.content }] : m.content;
    return { ...m, content: [...images, ...parts] };
  });
}

export async function createJob(c: Context<AppEnv>): Promise<Response> {
  const env = c.env;
  const caller = c.get("caller");
  let json: unknown;
  try {
    json = await c.req.json();
  } catch {
    throw new VisionLLMError("invalid_request", "The body is not valid JSON.");
  }
  const parsed = JobCreateRequestSchema.safeParse(json);
  if (!parsed.success) throw fromZodError(parsed.error);
  const body = parsed.data;
  if (body.webhook) {
    const refused = webhookTargetRefused(env, body.webhook);
    if (refused)
      throw new VisionLLMError("invalid_request", `The webhook URL is refused: ${refused}.`, {
        param: "webhook",
      });
  }
  const origin = new URL(c.req.url).origin;
  const idempotencyKey = idempotencyKeyOf(c.req.header("idempotency-key"));
  // Validate the request as a chat now, so a malformed job fails here with a 4xx, not later.
  const chat = chatRequestOf(body, body.model ?? env.MODEL_ID);
  if (chat.model !== env.MODEL_ID)
    throw new VisionLLMError("not_found", `Unknown model ${chat.model}.`, { param: "model" });
  const digest = await requestDigest(json);
  const id = `job_${crypto.randomUUID().replaceAll("-", "")}`;
  const now = Date.now();
  // One statement decides between concurrent creates with one key: the unique index keeps the first
  // row, and the others read it back below instead of failing on the constraint.
  const inserted = await env.DB.prepare(
    `INSERT INTO jobs (id, key_id, state, request, webhook_url, webhook_events, idempotency_key, request_digest,
                       created_at, queued_at, updated_at)
     VALUES (?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?)
     ON CONFLICT (key_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING`,
  )
    .bind(
      id,
      caller.keyId,
      JSON.stringify(chat),
      body.webhook ?? null,
      JSON.stringify(body.webhook_events_filter),
      idempotencyKey ?? null,
      digest,
      now,
      now,
      now,
    )
    .run();
  if (inserted.meta.changes === 0 && idempotencyKey)
    return replayIdempotent(c, idempotencyKey, digest, origin);
  await env.JOBS.send({ jobId: id, origin } satisfies JobMessage);
  const row = await getRow(env, id);
  if (!row) throw new VisionLLMError("internal_error", "The job vanished after creation.");
  return c.json(toJob(row, origin), 202, { location: `${origin}/v1/jobs/${id}` });
}

const MAX_IDEMPOTENCY_KEY = 255;

function idempotencyKeyOf(header: string | undefined): string | undefined {
  if (header === undefined) return undefined;
  if (header.length === 0 || header.length > MAX_IDEMPOTENCY_KEY)
    throw new VisionLLMError(
      "invalid_request",
      `Idempotency-Key must be 1 to ${MAX_IDEMPOTENCY_KEY} characters (a UUID is a good choice); it has ${header.length}.`,
      { param: "idempotency-key" },
    );
  return header;
}

/** SHA-256 of the body as sent (parsed, then serialised): a reused key must come with the same body. */
async function requestDigest(json: unknown): Promise<string> {
  const bytes = new TextEncoder().encode(JSON.stringify(json));
  const hash = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(hash, (b) => b.toString(16).padStart(2, "0")).join("");
}

async function replayIdempotent(
  c: Context<AppEnv>,
  key: string,
  digest: string,
  origin: string,
): Promise<Response> {
  const existing = await c.env.DB.prepare("SELECT * FROM jobs WHERE key_id = ? AND idempotency_key = ?")
    .bind(c.get("caller").keyId, key)
    .first<JobRow>();
  if (!existing)
    throw new VisionLLMError("internal_error", "The job of this Idempotency-Key could not be read back.");
  if (existing.request_digest !== null && existing.request_digest !== digest)
    throw new VisionLLMError(
      "idempotency_key_reused",
      "This Idempotency-Key was already used with a different request body: use a new key for a new job.",
      { param: "idempotency-key" },
    );
  return c.json(toJob(existing, origin), 200, { "idempotent-replayed": "true" });
}

export async function getJob(c: Context<AppEnv>): Promise<Response> {
  const row = await getRow(c.env, c.req.param("id") ?? "", c.get("caller").keyId);
  if (!row) throw new VisionLLMError("not_found", "No such job for this API key.");
  return c.json(toJob(row, new URL(c.req.url).origin));
}

export async function listJobs(c: Context<AppEnv>): Promise<Response> {
  const limit = Math.min(100, Math.max(1, Number(c.req.query("limit") ?? 20) || 20));
  const rows = await c.env.DB.prepare("SELECT * FROM jobs WHERE key_id = ? ORDER BY created_at DESC LIMIT ?")
    .bind(c.get("caller").keyId, limit)
    .all<JobRow>();
  const origin = new URL(c.req.url).origin;
  return c.json({ object: "list", data: rows.results.map((r) => toJob(r, origin)) });
}

export async function cancelJob(c: Context<AppEnv>): Promise<Response> {
  const env = c.env;
  const id = c.req.param("id") ?? "";
  const row = await getRow(env, id, c.get("caller").keyId);
  if (!row) throw new VisionLLMError("not_found", "No such job for this API key.");
  const now = Date.now();
  await env.DB.prepare(
    "UPDATE jobs SET state = 'canceled', canceled_at = ?, updated_at = ? WHERE id = ? AND state IN ('queued', 'running')",
  )
    .bind(now, now, id)
    .run();
  const updated = await getRow(env, id);
  if (!updated) throw new VisionLLMError("not_found", "No such job.");
  const job = toJob(updated, new URL(c.req.url).origin);
  if (row.state !== "canceled" && updated.state === "canceled")
    await enqueueWebhook(env, job, row.key_id, "completed");
  return c.json(job);
}

export async function jobFile(c: Context<AppEnv>): Promise<Response> {
  const id = c.req.param("id") ?? "";
  const row = await getRow(c.env, id, c.get("caller").keyId);
  if (!row) throw new VisionLLMError("not_found", "No such job for this API key.");
  const object = await c.env.BLOBS.get(`jobs/${id}/${c.req.param("name") ?? ""}`);
  if (!object) throw new VisionLLMError("not_found", "No such file for this job.");
  return new Response(object.body, {
    headers: { "content-type": object.httpMetadata?.contentType ?? "application/octet-stream" },
  });
}

function base64Bytes(b64: string): Uint8Array<ArrayBuffer> {
  const raw = atob(b64);
  const out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
  return out;
}

/** Events -> stored output: JSON for D1, images to R2 behind authorised URLs. */
async function storeOutput(
  env: Env,
  jobId: string,
  origin: string,
  events: StreamEvent[],
): Promise<JobOutput> {
  const output: JobOutput = { text: "", detections: [], keypoints: [], images: [] };
  let n = 0;
  for (const event of events) {
    if (event.type === "text-delta") output.text += event.delta;
    else if (event.type === "detections")
      output.detections.push({
        task: event.task,
        label: event.label,
        group: event.group,
        items: event.items,
      });
    else if (event.type === "keypoints")
      output.keypoints.push({ group: event.group, skeleton: event.skeleton, items: event.items });
    else if (event.type === "usage")
      output.usage = {
        prompt_tokens: event.prompt_tokens,
        completion_tokens: event.completion_tokens,
        total_tokens: event.total_tokens,
      };
    else if (event.type === "image") {
      const name = `output-${n++}.png`;
      await env.BLOBS.put(`jobs/${jobId}/${name}`, base64Bytes(event.png_base64), {
        httpMetadata: { contentType: "image/png" },
      });
      output.images.push({
        task: event.task,
        url: `${origin}/v1/jobs/${jobId}/files/${name}`,
        width: event.width,
        height: event.height,
        seed: event.seed,
      });
    }
  }
  return output;
}

async function transition(
  env: Env,
  id: string,
  from: JobState[],
  to: JobState,
  fields: Record<string, unknown> = {},
): Promise<boolean> {
  const now = Date.now();
  const sets = [
    `state = '${to}'`,
    `${to}_at = ?`,
    "updated_at = ?",
    ...Object.keys(fields).map((k) => `${k} = ?`),
  ];
  const result = await env.DB.prepare(
    `UPDATE jobs SET ${sets.join(", ")} WHERE id = ? AND state IN (${from.map(() => "?").join(", ")})`,
  )
    .bind(now, now, ...Object.values(fields), id, ...from)
    .run();
  return (result.meta.changes ?? 0) > 0;
}

async function notify(env: Env, id: string, type: WebhookEventType, origin: string): Promise<void> {
  const row = await getRow(env, id);
  if (row) await enqueueWebhook(env, toJob(row, origin), row.key_id, type);
}

const CANCEL_POLL_MS = 250;

/** While a job runs, its row is read every CANCEL_POLL_MS; a cancel aborts the runner's work at once
 * (the runner frees the sequence when the connection closes) instead of when the answer ends. */
function watchForCancel(env: Env, id: string, canceled: AbortController): { stop: () => void } {
  let stopped = false;
  const poll = async () => {
    while (!stopped && !canceled.signal.aborted) {
      await new Promise((r) => setTimeout(r, CANCEL_POLL_MS));
      if (stopped) return;
      const row = await env.DB.prepare("SELECT state FROM jobs WHERE id = ?")
        .bind(id)
        .first<{ state: string }>();
      if (row?.state === "canceled") canceled.abort();
    }
  };
  void poll().catch(() => {});
  return { stop: () => (stopped = true) };
}

/**
 * Seconds before attempt `attempts + 1`: JOB_RETRY_BASE_S doubling, capped at JOB_RETRY_MAX_S. With
 * the defaults (5 s, 300 s, 8 attempts) a job keeps trying for about ten minutes, so a runner that
 * restarts or a fleet that is briefly full does not fail it for good.
 */
export function jobRetryDelaySeconds(
  env: Pick<Env, "JOB_RETRY_BASE_S" | "JOB_RETRY_MAX_S">,
  attempts: number,
): number {
  const base = Number(env.JOB_RETRY_BASE_S || 5);
  const cap = Number(env.JOB_RETRY_MAX_S || 300);
  return Math.max(0, Math.min(cap, Math.round(base * 2 ** Math.max(0, attempts - 1))));
}

/** One message of the JOBS queue. */
type JobDelivery = MessageBatch<JobMessage>["messages"][number];

/** JOBS consumer: at-least-once delivery, so every step checks the job's current state. */
export async function consumeJobs(batch: MessageBatch<JobMessage>, env: Env): Promise<void> {
  for (const message of batch.messages) await consumeJob(message, env);
}

async function consumeJob(message: JobDelivery, env: Env): Promise<void> {
  const { jobId: id, origin } = message.body;
  const row = await getRow(env, id);
  if (!row || row.state === "succeeded" || row.state === "failed" || row.state === "canceled") {
    message.ack();
    return;
  }
  await env.DB.prepare("UPDATE jobs SET attempts = attempts + 1, updated_at = ? WHERE id = ?")
    .bind(Date.now(), id)
    .run();
  if (await transition(env, id, ["queued"], "running")) await notify(env, id, "start", origin);
  try {
    const events = await runJob(env, id, row);
    if (events) await succeed(env, id, origin, events);
    message.ack();
  } catch (error) {
    await retryOrFail(env, message, error);
  }
}

/** The job's request through the runner, to the end: its events, or undefined if it was canceled. */
async function runJob(env: Env, id: string, row: JobRow): Promise<StreamEvent[] | undefined> {
  const chat = ChatCompletionRequestSchema.parse(JSON.parse(row.request));
  const { assembled, digests, sampling } = await prepareGeneration(env, chat);
  const canceled = new AbortController();
  const forwarded = await forwardGenerate(
    env,
    runnerRequest(`${id}-${row.attempts + 1}`, assembled, digests, sampling),
    AbortSignal.any([AbortSignal.timeout(300_000), canceled.signal]),
  );
  const watcher = watchForCancel(env, id, canceled);
  const events: StreamEvent[] = [];
  try {
    for await (const event of readEventStream(forwarded.response.body as ReadableStream<Uint8Array>)) {
      events.push(event);
      if (event.type === "error") throw failureOf(event);
    }
  } catch (error) {
    if (!canceled.signal.aborted) throw error;
  } finally {
    watcher.stop();
    forwarded.done();
  }
  if (canceled.signal.aborted) return undefined;
  if (events.at(-1)?.type !== "done")
    throw new VisionLLMError("runner_unavailable", "The runner closed the stream before the end.");
  return events;
}

async function succeed(env: Env, id: string, origin: string, events: StreamEvent[]): Promise<void> {
  const output = await storeOutput(env, id, origin, events);
  if ((await getRow(env, id))?.state === "canceled") return;
  if (await transition(env, id, ["running"], "succeeded", { result: JSON.stringify(output), error: null })) {
    await notify(env, id, "output", origin);
    await notify(env, id, "completed", origin);
  }
}

/** Another attempt later for a retryable failure within the bound; otherwise the job fails. */
async function retryOrFail(env: Env, message: JobDelivery, error: unknown): Promise<void> {
  const { jobId: id, origin } = message.body;
  const maxAttempts = Number(env.JOB_MAX_ATTEMPTS || 8);
  // Anything that is not one of our errors here is the runner's connection failing mid-job (a killed
  // runner, a reset): worth another attempt, within the bound.
  const err = VisionLLMError.is(error)
    ? error
    : new VisionLLMError("runner_unavailable", `The runner failed mid-job (${String(error)}).`);
  const attempts = (await getRow(env, id))?.attempts ?? maxAttempts;
  if (err.retryable && attempts < maxAttempts) {
    await env.DB.prepare("UPDATE jobs SET error = ?, updated_at = ? WHERE id = ?")
      .bind(`attempt ${attempts}: ${err.message}`, Date.now(), id)
      .run();
    message.retry({ delaySeconds: jobRetryDelaySeconds(env, attempts) });
    return;
  }
  if (await transition(env, id, ["queued", "running"], "failed", { error: `${err.code}: ${err.message}` }))
    await notify(env, id, "completed", origin);
  message.ack();
}

/** Dead-letter queue: a message that exhausted the queue's own retries marks its job failed. */
export async function consumeDeadLetters(batch: MessageBatch<JobMessage>, env: Env): Promise<void> {
  for (const message of batch.messages) {
    if (
      await transition(env, message.body.jobId, ["queued", "running"], "failed", {
        error: "the job kept failing and was dead-lettered",
      })
    ) {
      await notify(env, message.body.jobId, "completed", message.body.origin);
    }
    message.ack();
  }
}
