import type { Context } from "hono";
import { endTime, startTime, type TimingVariables } from "hono/timing";
import type { RateLimiter } from "./rate-limiter";
import type { StreamLog } from "./stream-log";
import type { DeliveryMessage } from "./webhooks";

/** The Worker's bindings, as declared in wrangler.toml. */
export interface Env {
  DB: D1Database;
  CACHE: KVNamespace;
  BLOBS: R2Bucket;
  RATE_LIMITER: DurableObjectNamespace<RateLimiter>;
  /** One per native stream: its events for a reconnect with Last-Event-ID (stream-log.ts). */
  STREAM_LOG: DurableObjectNamespace<StreamLog>;
  ASSETS: Fetcher;
  RUNNER_URLS: string;
  RUNNER_SECRET: string;
  /** Seals webhook signing secrets at rest (functions/src/secret-box.ts). */
  WEBHOOK_SECRETS_KEY?: string;
  MODEL_ID: string;
  CACHE_TTL_SECONDS: string;
  MAX_IMAGE_BYTES: string;
  MAX_IMAGE_PIXELS: string;
  MAX_IMAGES: string;
  MAX_PROMPT_CHARS: string;
  DEFAULT_RPM: string;
  /** How long an isolate keeps a known key's row: the bound on how late a revocation takes effect. */
  KEY_CACHE_SECONDS?: string;
  DEFAULT_MAX_CONCURRENT: string;
  ALLOW_LOOPBACK_URLS: string;
  WEBHOOK_RETRY_SCALE: string;
  JOB_MAX_ATTEMPTS: string;
  /** "shared": one response cache for every API key; otherwise (the default) one per key. */
  CACHE_SCOPE?: string;
  JOB_RETRY_BASE_S?: string;
  JOB_RETRY_MAX_S?: string;
  RUNNER_IDLE_TIMEOUT_MS: string;
  /** "*", or a comma-separated list of origins that may call the API from a browser. */
  CORS_ALLOW_ORIGINS?: string;
  JOBS: Queue<JobMessage>;
  WEBHOOKS: Queue<DeliveryMessage>;
}

export interface JobMessage {
  jobId: string;
  /** The public origin the job was created on, for the links in its output. */
  origin: string;
}

export interface Limits {
  maxImageBytes: number;
  maxImagePixels: number;
  maxImages: number;
  maxPromptChars: number;
  cacheTtlSeconds: number;
  allowLoopback: boolean;
  runnerIdleMs: number;
}

export function limitsOf(env: Env): Limits {
  const num = (v: string | undefined, fallback: number) => {
    const n = Number(v);
    return Number.isFinite(n) && n > 0 ? n : fallback;
  };
  return {
    maxImageBytes: num(env.MAX_IMAGE_BYTES, 8 * 1024 * 1024),
    maxImagePixels: num(env.MAX_IMAGE_PIXELS, 16_777_216),
    maxImages: num(env.MAX_IMAGES, 4),
    maxPromptChars: num(env.MAX_PROMPT_CHARS, 32_768),
    cacheTtlSeconds: Math.max(60, num(env.CACHE_TTL_SECONDS, 86_400)),
    allowLoopback: env.ALLOW_LOOPBACK_URLS === "true",
    runnerIdleMs: num(env.RUNNER_IDLE_TIMEOUT_MS, 60_000),
  };
}

export interface Caller {
  keyId: string;
  name: string;
  requestsPerMinute: number;
  maxConcurrent: number;
}

export type AppEnv = { Bindings: Env; Variables: { caller: Caller; requestId: string } & TimingVariables };

/** One phase of a request, in its Server-Timing header (hono/timing). */
export async function timed<T>(c: Context<AppEnv>, phase: string, work: Promise<T>): Promise<T> {
  startTime(c, phase);
  try {
    return await work;
  } finally {
    endTime(c, phase);
  }
}
