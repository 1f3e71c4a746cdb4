import { type Sampling, type StreamEvent, StreamEventSchema } from "@visionllm/protocol";
import { z } from "zod";
import { sha256Hex } from "./api-keys";

/**
 * Response cache for deterministic requests (temperature 0 or a seed): the whole event sequence
 * is stored in KV and replayed as a stream on a hit. The key covers everything that determines the
 * output: model, version and bundle digest, the assembled prompt, image digests, regions, sampling,
 * and its scope: the caller's API key unless CACHE_SCOPE is "shared", so one key's prompts (and
 * whether they were asked) never show through another's hits.
 */

export async function cacheKey(parts: {
  scope: string;
  model: string;
  modelVersion: string;
  modelDigest: string;
  prompt: string;
  imageDigests: readonly string[];
  regions: unknown;
  sampling: Sampling;
}): Promise<string> {
  const canonical = JSON.stringify([
    parts.scope,
    parts.model,
    parts.modelVersion,
    parts.modelDigest,
    parts.prompt,
    parts.imageDigests,
    parts.regions,
    parts.sampling.max_tokens,
    parts.sampling.min_tokens,
    parts.sampling.temperature,
    parts.sampling.top_p,
    parts.sampling.top_k,
    parts.sampling.seed,
    parts.sampling.stop,
  ]);
  return `events:v1:${await sha256Hex(canonical)}`;
}

const StoredSchema = z.object({ events: z.array(StreamEventSchema) });

export async function readCached(kv: KVNamespace, key: string): Promise<StreamEvent[] | undefined> {
  const stored = await kv.get(key, "json");
  const parsed = StoredSchema.safeParse(stored);
  return parsed.success ? parsed.data.events : undefined;
}

/** Only complete, error-free answers are worth replaying. */
export function cacheable(events: readonly StreamEvent[]): boolean {
  const done = events.at(-1);
  return (
    done?.type === "done" &&
    (done.finish_reason === "stop" || done.finish_reason === "length") &&
    !events.some((e) => e.type === "error")
  );
}

export async function writeCached(
  kv: KVNamespace,
  key: string,
  events: readonly StreamEvent[],
  ttlSeconds: number,
): Promise<void> {
  await kv.put(key, JSON.stringify({ events }), { expirationTtl: ttlSeconds });
}
