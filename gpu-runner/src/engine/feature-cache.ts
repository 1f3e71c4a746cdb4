import type { FeatureCache, PreparedImage } from "../model/prompt";

/**
 * Encoded images by content digest, least recently used evicted first, bounded in bytes, so a
 * follow-up turn about the same image skips decoding and the vision encoder.
 */
export class ImageFeatureCache implements FeatureCache {
  readonly #maxBytes: number;
  readonly #entries = new Map<string, { value: PreparedImage; bytes: number }>();
  #bytes = 0;
  hits = 0;
  misses = 0;

  constructor(maxBytes: number) {
    this.#maxBytes = maxBytes;
  }

  get(key: string): PreparedImage | undefined {
    const entry = this.#entries.get(key);
    if (!entry) {
      this.misses++;
      return undefined;
    }
    this.hits++;
    this.#entries.delete(key);
    this.#entries.set(key, entry);
    return entry.value;
  }

  set(key: string, value: PreparedImage): void {
    const f = value.features;
    const bytes =
      value.rgb.byteLength + f.pixelValues.byteLength + f.imageEmbeds.byteLength + f.levels.data.byteLength;
    if (bytes > this.#maxBytes) return;
    const old = this.#entries.get(key);
    if (old) {
      this.#bytes -= old.bytes;
      this.#entries.delete(key);
    }
    this.#entries.set(key, { value, bytes });
    this.#bytes += bytes;
    for (const [k, entry] of this.#entries) {
      if (this.#bytes <= this.#maxBytes) break;
      this.#entries.delete(k);
      this.#bytes -= entry.bytes;
    }
  }

  get bytes(): number {
    return this.#bytes;
  }

  get size(): number {
    return this.#entries.size;
  }
}

/** One request's view of the shared cache, counting only that request's hits and misses (a
 * difference of the shared counters would count concurrent requests' lookups too). */
export class RequestCacheView implements FeatureCache {
  hits = 0;
  misses = 0;
  readonly #cache: FeatureCache;

  constructor(cache: FeatureCache) {
    this.#cache = cache;
  }

  get(key: string): PreparedImage | undefined {
    const value = this.#cache.get(key);
    if (value) this.hits++;
    else this.misses++;
    return value;
  }

  set(key: string, value: PreparedImage): void {
    this.#cache.set(key, value);
  }
}
