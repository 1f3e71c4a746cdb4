import type { SharedDecode } from "../model/generate";
import type { KVCache, VisionLLM } from "../model/visionllm";

type Pending = {
  embeds: Float32Array;
  cache: KVCache;
  resolve: (r: { logits: Float32Array; hidden: Float32Array }) => void;
  reject: (e: unknown) => void;
};

/** What the batcher needs of the model: one batched decode step. */
export type BatchStepper = Pick<VisionLLM, "llmBatchStep">;

/**
 * Continuous batching of decode steps. Each running sequence is a member and awaits `step()` for
 * its next token; the steps of all members run as one batched LLM call. A batch starts when every
 * member has asked, or `maxWaitMs` after the model became free with asks waiting. It never starts
 * while another batch is running: asks made meanwhile wait for it and go together, so members that
 * fell out of step (one came back from a decoder late) fall back into one batch instead of two
 * alternating half batches. A member busy elsewhere (a decoder, a super-link splice) steps out with
 * `leave()` and back with `join()`, so the others do not wait for it. New requests join between
 * steps simply by becoming members.
 */
export class DecodeBatcher implements SharedDecode {
  readonly #model: BatchStepper;
  readonly #maxBatch: number;
  readonly #maxWaitMs: number;
  #members = 0;
  #pending: Pending[] = [];
  #running = false;
  #timer: ReturnType<typeof setTimeout> | undefined;
  onBatch?: (size: number, seconds: number) => void;

  constructor(model: BatchStepper, options: { maxBatch: number; maxWaitMs: number }) {
    this.#model = model;
    this.#maxBatch = options.maxBatch;
    this.#maxWaitMs = options.maxWaitMs;
  }

  join(): void {
    this.#members++;
  }

  leave(): void {
    this.#members = Math.max(0, this.#members - 1);
    this.#schedule();
  }

  get members(): number {
    return this.#members;
  }

  step(embeds: Float32Array, cache: KVCache): Promise<{ logits: Float32Array; hidden: Float32Array }> {
    return new Promise((resolve, reject) => {
      this.#pending.push({ embeds, cache, resolve, reject });
      this.#schedule();
    });
  }

  /** Start a batch now if every member has asked, else once `maxWaitMs` has passed. */
  #schedule(): void {
    if (this.#running || !this.#pending.length) return;
    if (this.#pending.length >= Math.min(this.#members, this.#maxBatch)) this.#flush();
    else this.#timer ??= setTimeout(() => this.#flush(), this.#maxWaitMs);
  }

  #flush(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#running) return;
    const batch = this.#pending.splice(0, this.#maxBatch);
    if (!batch.length) return;
    this.#running = true;
    void this.#run(batch);
  }

  async #run(batch: Pending[]): Promise<void> {
    const started = performance.now();
    let results: Array<{ logits: Float32Array; hidden: Float32Array }> | undefined;
    let failure: unknown;
    try {
      results = await this.#model.llmBatchStep(batch);
    } catch (error) {
      failure = error;
    }
    // Free before the members hear back, so their next asks can start the next batch at once.
    this.#running = false;
    if (results) {
      this.onBatch?.(batch.length, (performance.now() - started) / 1000);
      batch.forEach((item, i) => {
        const result = results[i];
        if (result) item.resolve(result);
        else item.reject(new Error("batched step returned too few rows"));
      });
    } else {
      for (const item of batch) item.reject(failure);
    }
    this.#schedule();
  }
}
