import type { KVCache, VisionLLM } from "../model/visionllm";

/**
 * Continuous batching of decode steps. Each running sequence awaits `step()` for its next token;
 * steps that arrive together run as one batched LLM call. A batch starts as soon as every member
 * has asked, or `maxWaitMs` after the first ask (members busy in a decoder do not hold the rest).
 * New requests join between steps simply by becoming members.
 */
export class DecodeBatcher {
  readonly #model: VisionLLM;
  readonly #maxBatch: number;
  readonly #maxWaitMs: number;
  #members = 0;
  #pending: Array<{
    embeds: Float32Array;
    cache: KVCache;
    resolve: (r: { logits: Float32Array; hidden: Float32Array }) => void;
    reject: (e: unknown) => void;
  }> = [];
  #timer: ReturnType<typeof setTimeout> | undefined;
  onBatch?: (size: number, seconds: number) => void;

  constructor(model: VisionLLM, options: { maxBatch: number; maxWaitMs: number }) {
    this.#model = model;
    this.#maxBatch = options.maxBatch;
    this.#maxWaitMs = options.maxWaitMs;
  }

  join(): void {
    this.#members++;
  }

  leave(): void {
    this.#members = Math.max(0, this.#members - 1);
    if (this.#pending.length && this.#pending.length >= this.#members) this.#flush();
  }

  get members(): number {
    return this.#members;
  }

  step(embeds: Float32Array, cache: KVCache): Promise<{ logits: Float32Array; hidden: Float32Array }> {
    return new Promise((resolve, reject) => {
      this.#pending.push({ embeds, cache, resolve, reject });
      if (this.#pending.length >= Math.min(this.#members, this.#maxBatch)) this.#flush();
      else this.#timer ??= setTimeout(() => this.#flush(), this.#maxWaitMs);
    });
  }

  #flush(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    const batch = this.#pending.splice(0, this.#maxBatch);
    if (!batch.length) return;
    if (this.#pending.length) this.#timer = setTimeout(() => this.#flush(), 0);
    const started = performance.now();
    this.#model
      .llmBatchStep(batch)
      .then((results) => {
        this.onBatch?.(batch.length, (performance.now() - started) / 1000);
        batch.forEach((item, i) => {
          const result = results[i];
          if (result) item.resolve(result);
          else item.reject(new Error("batched step returned too few rows"));
        });
      })
      .catch((error: unknown) => {
        for (const item of batch) item.reject(error);
      });
  }
}
