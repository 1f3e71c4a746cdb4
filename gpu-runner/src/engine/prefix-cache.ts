import { cachePrefix, type KVCache } from "../model/kv-slots";
import type { PositionKey, PrefixStore } from "../model/prompt";

interface Entry {
  keys: readonly PositionKey[];
  cache: KVCache;
  bytes: number;
}

interface Running {
  keys: readonly PositionKey[];
  finished: Promise<void>;
}

/**
 * Prompt KV caches kept after prefill, least recently used evicted first, bounded in bytes. A new
 * prompt reuses the longest prefix it shares with any kept prompt and prefills only the rest: the
 * system prompt once for everyone, an image's tokens once for every follow-up turn about it. The KV
 * at a position depends only on what fills the positions up to it, so a shared prefix is exact.
 *
 * Prompts that arrive together (a burst of requests about one image) would all miss, since none
 * has finished its prefill: a prompt that shares more with a running prefill than with any kept one
 * waits for it. Graph runs are serialised anyway, so waiting costs nothing but the shared work.
 */
export class PrefixCache implements PrefixStore {
  readonly #maxBytes: number;
  readonly #heads: number;
  readonly #headDim: number;
  /** Insertion order is recency order. */
  readonly #entries = new Set<Entry>();
  readonly #running = new Set<Running>();
  #bytes = 0;
  /** Prompt tokens looked up, and how many of them were found (vLLM's prefix cache queries/hits). */
  queried = 0;
  hit = 0;

  constructor(maxBytes: number, heads: number, headDim: number) {
    this.#maxBytes = maxBytes;
    this.#heads = heads;
    this.#headDim = headDim;
  }

  async acquire(
    keys: readonly PositionKey[],
  ): Promise<{ cache: KVCache | undefined; done: (cache?: KVCache) => void }> {
    for (;;) {
      const kept = this.#longest(keys);
      let wait: Running | undefined;
      for (const running of this.#running) if (commonPrefix(running.keys, keys) > kept.length) wait = running;
      if (wait) {
        await wait.finished;
        continue;
      }
      // Registered in the same turn as the lookup: a prompt arriving next sees this one running.
      let finish = () => {};
      const running: Running = {
        keys,
        finished: new Promise<void>((resolve) => {
          finish = resolve;
        }),
      };
      this.#running.add(running);
      this.queried += keys.length;
      // At least the last prompt token is always run: its logits choose the first answer token.
      const length = Math.min(kept.length, keys.length - 1);
      let cache: KVCache | undefined;
      if (kept.entry && length > 0) {
        this.#entries.delete(kept.entry);
        this.#entries.add(kept.entry);
        this.hit += length;
        cache = cachePrefix(kept.entry.cache, length, this.#heads, this.#headDim);
      }
      return {
        cache,
        done: (prefilled?: KVCache) => {
          if (!this.#running.delete(running)) return;
          if (prefilled) this.#store(keys, prefilled);
          finish();
        },
      };
    }
  }

  #longest(keys: readonly PositionKey[]): { entry: Entry | undefined; length: number } {
    let entry: Entry | undefined;
    let length = 0;
    for (const candidate of this.#entries) {
      const n = commonPrefix(candidate.keys, keys);
      if (n > length) {
        entry = candidate;
        length = n;
      }
    }
    return { entry, length };
  }

  /** Keeps a prompt's cache, right after its prefill (`cache.length === keys.length`). */
  #store(keys: readonly PositionKey[], cache: KVCache): void {
    const bytes = cache.layers.reduce((n, l) => n + l.key.byteLength + l.value.byteLength, 0);
    if (bytes > this.#maxBytes || cache.length !== keys.length) return;
    for (const entry of this.#entries) {
      const n = commonPrefix(entry.keys, keys);
      // An entry that already covers this prompt is refreshed; one this prompt covers is replaced.
      if (n === keys.length) {
        this.#entries.delete(entry);
        this.#entries.add(entry);
        return;
      }
      if (n === entry.keys.length) this.#remove(entry);
    }
    this.#entries.add({
      keys: [...keys],
      cache: cachePrefix(cache, cache.length, this.#heads, this.#headDim),
      bytes,
    });
    this.#bytes += bytes;
    for (const old of this.#entries) {
      if (this.#bytes <= this.#maxBytes) break;
      this.#remove(old);
    }
  }

  #remove(entry: Entry): void {
    if (this.#entries.delete(entry)) this.#bytes -= entry.bytes;
  }

  get bytes(): number {
    return this.#bytes;
  }

  get size(): number {
    return this.#entries.size;
  }
}

function commonPrefix(a: readonly PositionKey[], b: readonly PositionKey[]): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a[i] === b[i]) i++;
  return i;
}
