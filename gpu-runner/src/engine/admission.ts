import { VisionLLMError } from "@visionllm/protocol";

/**
 * Admission control: at most `maxRunning` requests generate at once, at most `maxWaiting` wait for
 * a slot (first come, first served); beyond that the request is refused at once with a retryable
 * 503 instead of queueing without bound.
 */
export class Admission {
  readonly #maxRunning: number;
  readonly #maxWaiting: number;
  #running = 0;
  readonly #waiting: Array<{ resolve: () => void; reject: (e: unknown) => void; signal?: AbortSignal }> = [];
  #closed = false;

  constructor(maxRunning: number, maxWaiting: number) {
    this.#maxRunning = maxRunning;
    this.#maxWaiting = maxWaiting;
  }

  get running(): number {
    return this.#running;
  }

  get waiting(): number {
    return this.#waiting.length;
  }

  /** Stops admitting (SIGTERM): new requests get 503, waiting ones are refused. */
  close(): void {
    this.#closed = true;
    for (const w of this.#waiting.splice(0)) w.reject(this.#draining());
  }

  #draining(): VisionLLMError {
    return new VisionLLMError("overloaded", "The runner is shutting down; retry on another runner.", {
      retryAfterSeconds: 1,
    });
  }

  /** Resolves with a release function once a slot is free. */
  async acquire(signal?: AbortSignal): Promise<() => void> {
    if (this.#closed) throw this.#draining();
    if (this.#running < this.#maxRunning) {
      this.#running++;
      return this.#releaser();
    }
    if (this.#waiting.length >= this.#maxWaiting) {
      throw new VisionLLMError(
        "overloaded",
        `The runner is at capacity (${this.#running} running, ${this.#waiting.length} waiting); retry shortly.`,
        { retryAfterSeconds: 2 },
      );
    }
    await new Promise<void>((resolve, reject) => {
      const entry = { resolve, reject, ...(signal ? { signal } : {}) };
      this.#waiting.push(entry);
      signal?.addEventListener(
        "abort",
        () => {
          const i = this.#waiting.indexOf(entry);
          if (i >= 0) this.#waiting.splice(i, 1);
          reject(new VisionLLMError("canceled", "The caller went away while the request waited."));
        },
        { once: true },
      );
    });
    this.#running++;
    return this.#releaser();
  }

  #releaser(): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#running--;
      const next = this.#waiting.shift();
      next?.resolve();
    };
  }
}
