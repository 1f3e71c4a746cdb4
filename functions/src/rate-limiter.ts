import { DurableObject } from "cloudflare:workers";

/**
 * One Durable Object per API key: a sliding one-minute window of request times and the set of
 * open streams. Strongly consistent per key, which a KV counter could not be.
 */

export type Admission =
  | { ok: true; leaseId: string }
  | { ok: false; reason: "rpm" | "concurrency"; retryAfterSeconds: number };

const LEASE_MS = 15 * 60 * 1000;

export class RateLimiter extends DurableObject {
  #requests: number[] = [];
  #leases = new Map<string, number>();

  async acquire(requestsPerMinute: number, maxConcurrent: number, now = Date.now()): Promise<Admission> {
    this.#requests = this.#requests.filter((t) => t > now - 60_000);
    for (const [id, expires] of this.#leases) if (expires < now) this.#leases.delete(id);
    if (this.#requests.length >= requestsPerMinute) {
      const oldest = this.#requests[0] ?? now;
      return {
        ok: false,
        reason: "rpm",
        retryAfterSeconds: Math.max(1, Math.ceil((oldest + 60_000 - now) / 1000)),
      };
    }
    if (this.#leases.size >= maxConcurrent) return { ok: false, reason: "concurrency", retryAfterSeconds: 1 };
    this.#requests.push(now);
    const leaseId = crypto.randomUUID();
    this.#leases.set(leaseId, now + LEASE_MS);
    return { ok: true, leaseId };
  }

  async release(leaseId: string): Promise<void> {
    this.#leases.delete(leaseId);
  }

  async usage(): Promise<{ lastMinute: number; open: number }> {
    const now = Date.now();
    return { lastMinute: this.#requests.filter((t) => t > now - 60_000).length, open: this.#leases.size };
  }
}
