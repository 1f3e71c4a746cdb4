import type { Job, WebhookEventType, WebhookPayload } from "@visionllm/protocol";
import { newWebhookSecret } from "./api-keys";
import type { Env } from "./env";
import { logEvent } from "./log";
import { seal, unseal } from "./secret-box";
import { refusedTarget } from "./ssrf";

/**
 * Standard Webhooks (standardwebhooks.com): `webhook-id`, `webhook-timestamp`, and
 * `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">` with a `whsec_` secret per API
 * key. During a rotation the previous secret signs too (space-separated signatures). Deliveries
 * go through their own queue, keep their webhook-id on every retry, back off over about a day,
 * and stop on 410 Gone.
 */

export interface DeliveryMessage {
  webhookId: string;
  keyId: string;
  url: string;
  body: string;
  attempt: number;
}

/** Seconds before retry n (1-based): 5 s, 1 min, 5 min, 30 min, 2 h, 5 h, then 10 h (~27 h in all). */
const BACKOFF = [5, 60, 300, 1800, 7200, 18000, 36000, 36000];
export const MAX_DELIVERY_ATTEMPTS = BACKOFF.length + 1;

function secretBytes(secret: string): Uint8Array<ArrayBuffer> {
  const raw = atob(secret.replace(/^whsec_/, ""));
  const out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
  return out;
}

export async function sign(secret: string, id: string, timestamp: number, body: string): Promise<string> {
  const key = await crypto.subtle.importKey(
    "raw",
    secretBytes(secret),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  const mac = await crypto.subtle.sign("HMAC", key, new TextEncoder().encode(`${id}.${timestamp}.${body}`));
  return `v1,${btoa(String.fromCharCode(...new Uint8Array(mac)))}`;
}

/** The caller's secret, created on first use (DEV_WEBHOOK_SECRET seeds it locally); sealed at rest. */
export async function webhookSecrets(env: Env, keyId: string): Promise<string[]> {
  const material = env.WEBHOOK_SECRETS_KEY ?? "";
  const row = await env.DB.prepare(
    "SELECT secret, previous_secret, previous_expires_at FROM webhook_secrets WHERE key_id = ?",
  )
    .bind(keyId)
    .first<{ secret: string; previous_secret: string | null; previous_expires_at: number | null }>();
  if (!row) {
    await env.DB.prepare(
      "INSERT OR IGNORE INTO webhook_secrets (key_id, secret, created_at) VALUES (?, ?, ?)",
    )
      .bind(keyId, await seal(material, newWebhookSecret(), keyId), Date.now())
      .run();
    return webhookSecrets(env, keyId);
  }
  const active = [await unseal(material, row.secret, keyId)];
  if (row.previous_secret && (row.previous_expires_at ?? 0) > Date.now())
    active.push(await unseal(material, row.previous_secret, keyId));
  return active;
}

/** Rotation: a new secret signs from now on; the old one keeps signing for `overlapSeconds`. */
export async function rotateWebhookSecret(env: Env, keyId: string, overlapSeconds = 86_400): Promise<string> {
  const material = env.WEBHOOK_SECRETS_KEY ?? "";
  const [current] = await webhookSecrets(env, keyId);
  const next = newWebhookSecret();
  await env.DB.prepare(
    "UPDATE webhook_secrets SET previous_secret = ?, previous_expires_at = ?, secret = ?, created_at = ? WHERE key_id = ?",
  )
    .bind(
      current ? await seal(material, current, keyId) : null,
      Date.now() + overlapSeconds * 1000,
      await seal(material, next, keyId),
      Date.now(),
      keyId,
    )
    .run();
  return next;
}

export function webhookTargetRefused(env: Env, url: string): string | undefined {
  const allowLoopback = env.ALLOW_LOOPBACK_URLS === "true";
  try {
    return refusedTarget(new URL(url), { allowLoopback, allowHttp: allowLoopback });
  } catch {
    return "not a valid URL";
  }
}

/** Queues one webhook event for a job (payload small: large outputs are links). */
export async function enqueueWebhook(
  env: Env,
  job: Job,
  keyId: string,
  type: WebhookEventType,
): Promise<void> {
  if (!job.webhook || !job.webhook_events_filter.includes(type)) return;
  const payload: WebhookPayload = { type: `job.${type}`, timestamp: new Date().toISOString(), data: job };
  const message: DeliveryMessage = {
    webhookId: `msg_${job.id}_${type}`,
    keyId,
    url: job.webhook,
    body: JSON.stringify(payload),
    attempt: 1,
  };
  await env.WEBHOOKS.send(message);
}

export type DeliveryOutcome = "delivered" | "gone" | "retry" | "refused";

export async function deliver(
  env: Env,
  message: DeliveryMessage,
  fetcher: typeof fetch = fetch,
): Promise<DeliveryOutcome> {
  if (webhookTargetRefused(env, message.url)) return "refused";
  const timestamp = Math.floor(Date.now() / 1000);
  const secrets = await webhookSecrets(env, message.keyId);
  const signatures = await Promise.all(
    secrets.map((s) => sign(s, message.webhookId, timestamp, message.body)),
  );
  try {
    const response = await fetcher(message.url, {
      method: "POST",
      redirect: "manual",
      headers: {
        "content-type": "application/json",
        "webhook-id": message.webhookId,
        "webhook-timestamp": String(timestamp),
        "webhook-signature": signatures.join(" "),
        "user-agent": "visionllm-webhooks/1",
      },
      body: message.body,
      signal: AbortSignal.timeout(15_000),
    });
    await response.body?.cancel();
    if (response.status === 410) return "gone";
    return response.ok ? "delivered" : "retry";
  } catch {
    return "retry";
  }
}

export function retryDelaySeconds(env: Env, attempt: number): number {
  const scale = Number(env.WEBHOOK_RETRY_SCALE || 1);
  return Math.max(0, Math.round((BACKOFF[Math.min(attempt - 1, BACKOFF.length - 1)] ?? 36000) * scale));
}

export async function consumeWebhooks(batch: MessageBatch<DeliveryMessage>, env: Env): Promise<void> {
  for (const message of batch.messages) {
    const outcome = await deliver(env, message.body);
    if (outcome === "retry" && message.body.attempt < MAX_DELIVERY_ATTEMPTS) {
      // Re-sent as a new message so the attempt count and delay grow; the webhook-id stays.
      await env.WEBHOOKS.send(
        { ...message.body, attempt: message.body.attempt + 1 },
        { delaySeconds: retryDelaySeconds(env, message.body.attempt) },
      );
    }
    if (outcome !== "delivered" && outcome !== "retry") {
      logEvent("warn", "webhook not retried", { webhook_id: message.body.webhookId, outcome });
    }
    message.ack();
  }
}
