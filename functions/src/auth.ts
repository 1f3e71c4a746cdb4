import { VisionLLMError } from "@visionllm/protocol";
import { LRUCache } from "lru-cache";
import { isApiKeyShape, sha256Hex } from "./api-keys";
import type { Caller, Env } from "./env";

/** API keys: `vl_` + 40 hex characters, stored only as their SHA-256 in D1. */

function constantTimeEqual(a: string, b: string): boolean {
  const x = new TextEncoder().encode(a);
  const y = new TextEncoder().encode(b);
  if (x.byteLength !== y.byteLength) return false;
  return crypto.subtle.timingSafeEqual(x, y);
}

interface KeyRow {
  id: string;
  name: string;
  key_hash: string;
  requests_per_minute: number | null;
  max_concurrent: number | null;
  revoked_at: number | null;
}

const unauthorized = (message: string) => new VisionLLMError("invalid_api_key", message);

export async function authenticate(env: Env, authorization: string | undefined): Promise<Caller> {
  if (!authorization) {
    throw unauthorized(
      "Missing API key: send `Authorization: Bearer vl_...`. Create a key with `npm run keys -- create`.",
    );
  }
  const match = /^Bearer\s+(\S+)$/i.exec(authorization.trim());
  const key = match?.[1];
  if (!key) throw unauthorized("Malformed Authorization header: expected `Bearer <api key>`.");
  if (!isApiKeyShape(key)) {
    throw unauthorized("Invalid API key: keys look like vl_ followed by 40 hex characters.");
  }
  const hash = await sha256Hex(key);
  const row = await keyRow(env, hash);
  if (!row || !constantTimeEqual(row.key_hash, hash)) throw unauthorized("Invalid API key.");
  if (row.revoked_at !== null) throw unauthorized("This API key was revoked; create a new one.");
  return {
    keyId: row.id,
    name: row.name,
    requestsPerMinute: row.requests_per_minute ?? Number(env.DEFAULT_RPM || 120),
    maxConcurrent: row.max_concurrent ?? Number(env.DEFAULT_MAX_CONCURRENT || 8),
  };
}

/**
 * Known keys' rows, kept in this isolate for KEY_CACHE_SECONDS (default 5), so a request does not
 * wait on D1 for a key it saw a moment ago. That is the revocation bound: a revoked key stops working
 * everywhere within this many seconds. Unknown keys are not kept (nothing to gain from an attacker's
 * guesses, and a key created a moment later must work at once).
 */
const keyRows = new LRUCache<string, KeyRow>({ max: 10_000 });

async function keyRow(env: Env, hash: string): Promise<KeyRow | null> {
  const seconds = Number(env.KEY_CACHE_SECONDS ?? 5);
  const kept = seconds > 0 ? keyRows.get(hash) : undefined;
  if (kept) return kept;
  const row = await env.DB.prepare(
    "SELECT id, name, key_hash, requests_per_minute, max_concurrent, revoked_at FROM api_keys WHERE key_hash = ?",
  )
    .bind(hash)
    .first<KeyRow>();
  if (row && seconds > 0) keyRows.set(hash, row, { ttl: seconds * 1000 });
  return row;
}
