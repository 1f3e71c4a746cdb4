import {
  errorFromBody,
  type ModelCard,
  ModelCardSchema,
  REQUEST_ID_HEADER,
  type RunnerGenerateRequest,
  signedHeaders,
  VisionLLMError,
} from "@visionllm/protocol";
import type { Env } from "./env";

/**
 * The runners behind the edge: least outstanding requests first, runners that failed recently
 * skipped, failover to the next runner before the first byte. State lives per isolate: it is a
 * routing hint, not a source of truth.
 */

interface RunnerState {
  outstanding: number;
  downUntil: number;
}

const states = new Map<string, RunnerState>();
const DOWN_MS = 5_000;

export function runnerUrls(env: Env): string[] {
  return env.RUNNER_URLS.split(",")
    .map((u) => u.trim().replace(/\/$/, ""))
    .filter(Boolean);
}

function stateOf(url: string): RunnerState {
  let s = states.get(url);
  if (!s) {
    s = { outstanding: 0, downUntil: 0 };
    states.set(url, s);
  }
  return s;
}

/** Healthy runners by outstanding requests; if all are marked down, all of them (a mark is only a hint). */
export function orderRunners(urls: readonly string[], now = Date.now()): string[] {
  const healthy = urls.filter((u) => stateOf(u).downUntil <= now);
  const pool = healthy.length ? healthy : [...urls];
  return pool.sort((a, b) => stateOf(a).outstanding - stateOf(b).outstanding);
}

async function signedFetch(
  env: Env,
  base: string,
  path: string,
  body: string | undefined,
  init: RequestInit & { requestId: string },
) {
  const method = body === undefined ? "GET" : "POST";
  const headers = await signedHeaders(env.RUNNER_SECRET, method, path, body ?? "");
  return fetch(`${base}${path}`, {
    ...init,
    method,
    headers: { ...headers, [REQUEST_ID_HEADER]: init.requestId },
    ...(body === undefined ? {} : { body }),
  });
}

const unavailable = () =>
  new VisionLLMError("runner_unavailable", "No model runner is reachable right now; retry shortly.", {
    retryAfterSeconds: 5,
  });

export interface Forwarded {
  response: Response;
  runner: string;
  /** Call once the stream is over: frees the runner's outstanding slot. */
  done: () => void;
}

/** Sends the request to the best runner; on a connection failure or a 503 tries the next one. */
export async function forwardGenerate(
  env: Env,
  request: RunnerGenerateRequest,
  signal: AbortSignal,
): Promise<Forwarded> {
  if (!env.RUNNER_SECRET) {
    throw new VisionLLMError(
      "internal_error",
      "The edge has no RUNNER_SECRET configured (wrangler secret put RUNNER_SECRET).",
    );
  }
  const body = JSON.stringify(request);
  let lastError: VisionLLMError = unavailable();
  for (const url of orderRunners(runnerUrls(env))) {
    const state = stateOf(url);
    state.outstanding++;
    let released = false;
    const done = () => {
      if (!released) state.outstanding--;
      released = true;
    };
    try {
      const response = await signedFetch(env, url, "/v1/generate", body, {
        signal,
        requestId: request.request_id,
      });
      if (response.ok && response.body) return { response, runner: url, done };
      const error = errorFromBody(await response.json().catch(() => undefined), response.status);
      done();
      if (response.status === 503 || response.status >= 500) {
        if (response.status !== 503) state.downUntil = Date.now() + DOWN_MS;
        lastError = error.code === "bad_upstream" ? unavailable() : error;
        continue;
      }
      throw error;
    } catch (error) {
      done();
      if (VisionLLMError.is(error)) throw error;
      if (signal.aborted) throw new VisionLLMError("canceled", "The client went away.");
      state.downUntil = Date.now() + DOWN_MS;
      lastError = unavailable();
    }
  }
  throw lastError.code === "overloaded" || lastError.code === "runner_unavailable"
    ? new VisionLLMError(lastError.code, lastError.message, {
        retryAfterSeconds: lastError.retryAfterSeconds ?? 2,
      })
    : lastError;
}

let cardCache: { card: ModelCard; expires: number } | undefined;
const CARD_KV_KEY = "model-card:v1";

/** The runner's model card: from memory, then KV (5 minutes), then a runner. */
export async function modelCard(env: Env): Promise<ModelCard> {
  const now = Date.now();
  if (cardCache && cardCache.expires > now) return cardCache.card;
  const stored = await env.CACHE.get(CARD_KV_KEY, "json");
  const parsedStored = ModelCardSchema.safeParse(stored);
  if (parsedStored.success) {
    cardCache = { card: parsedStored.data, expires: now + 60_000 };
    return parsedStored.data;
  }
  for (const url of orderRunners(runnerUrls(env))) {
    try {
      const response = await signedFetch(env, url, "/v1/model-card", undefined, { requestId: "model-card" });
      if (!response.ok) continue;
      const card = ModelCardSchema.parse(await response.json());
      cardCache = { card, expires: now + 60_000 };
      await env.CACHE.put(CARD_KV_KEY, JSON.stringify(card), { expirationTtl: 300 });
      return card;
    } catch {
      stateOf(url).downUntil = Date.now() + DOWN_MS;
    }
  }
  throw unavailable();
}

/** Drops the model card held in memory and in KV: a runner answered with another bundle's digest. */
export async function forgetModelCard(env: Env): Promise<void> {
  cardCache = undefined;
  await env.CACHE.delete(CARD_KV_KEY);
}

/** How many runners answer their readiness probe (each given at most `timeoutMs`). */
export async function readyRunners(env: Env, timeoutMs = 2000): Promise<{ ready: number; total: number }> {
  const urls = runnerUrls(env);
  const answers = await Promise.all(
    urls.map((url) =>
      fetch(`${url}/readyz`, { signal: AbortSignal.timeout(timeoutMs) })
        .then((r) => r.ok)
        .catch(() => false),
    ),
  );
  return { ready: answers.filter(Boolean).length, total: urls.length };
}

/** For tests: forget per-isolate routing state. */
export function resetRunnerState(): void {
  states.clear();
  cardCache = undefined;
}
