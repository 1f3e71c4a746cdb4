import { DurableObject } from "cloudflare:workers";
import type { StreamEvent } from "@visionllm/protocol";
import { sha256Hex } from "./api-keys";

/**
 * One Durable Object per native stream: its numbered events, kept for a few minutes, so a client
 * that reconnects with `Last-Event-ID` (EventSource does so by itself) gets exactly the events after
 * that id, the rest live as they come while the answer is still running, and nothing twice. Sampled
 * answers resume as exactly as deterministic ones: nothing is generated again.
 *
 * The object's name is a digest of the API key and the request body (streamLogName), so only the
 * same key sending the same request finds it.
 */

/** How long a stream's events are kept after it started. */
export const STREAM_LOG_TTL_MS = 5 * 60 * 1000;

const encoder = new TextEncoder();

export class StreamLog extends DurableObject {
  #events: StreamEvent[] | undefined;
  #done = false;
  readonly #followers = new Set<ReadableStreamDefaultController<Uint8Array>>();

  /** Starts a new log under this name (a repeated request without Last-Event-ID replaces the old one). */
  async open(): Promise<void> {
    for (const f of this.#followers) f.close();
    this.#followers.clear();
    await this.ctx.storage.deleteAll();
    this.#events = [];
    this.#done = false;
    await this.ctx.storage.put("done", false);
    await this.ctx.storage.setAlarm(Date.now() + STREAM_LOG_TTL_MS);
  }

  async append(events: StreamEvent[], done: boolean): Promise<void> {
    const log = await this.#load();
    const start = log.length;
    log.push(...events);
    const entries: Record<string, StreamEvent> = {};
    for (const [i, e] of events.entries()) entries[`e:${String(start + i).padStart(6, "0")}`] = e;
    if (events.length) await this.ctx.storage.put(entries);
    for (const follower of this.#followers) for (const e of events) follower.enqueue(line(e));
    if (done) {
      this.#done = true;
      await this.ctx.storage.put("done", true);
      for (const follower of this.#followers) follower.close();
      this.#followers.clear();
    }
  }

  /**
   * The events after `afterId` as NDJSON: what is kept, then live ones until the answer ends.
   * Undefined when nothing is kept under this name (never opened, or expired).
   */
  async follow(afterId: number): Promise<ReadableStream<Uint8Array> | undefined> {
    const log = await this.#load();
    if (!this.#opened()) return undefined;
    const followers = this.#followers;
    const done = this.#done;
    let mine: ReadableStreamDefaultController<Uint8Array> | undefined;
    return new ReadableStream<Uint8Array>({
      start(controller) {
        for (const e of log) if (e.sequence_number > afterId) controller.enqueue(line(e));
        if (done) controller.close();
        else {
          mine = controller;
          followers.add(controller);
        }
      },
      cancel() {
        if (mine) followers.delete(mine);
      },
    });
  }

  override async alarm(): Promise<void> {
    for (const f of this.#followers) f.close();
    this.#followers.clear();
    this.#events = undefined;
    await this.ctx.storage.deleteAll();
  }

  #opened(): boolean {
    return this.#events !== undefined;
  }

  /** The log from memory, or from storage after the object was evicted. */
  async #load(): Promise<StreamEvent[]> {
    if (this.#events) return this.#events;
    const stored = await this.ctx.storage.list<StreamEvent>({ prefix: "e:" });
    if (stored.size === 0 && (await this.ctx.storage.get<boolean>("done")) === undefined) return [];
    this.#events = [...stored.values()];
    this.#done = (await this.ctx.storage.get<boolean>("done")) ?? false;
    return this.#events;
  }
}

function line(event: StreamEvent): Uint8Array {
  return encoder.encode(`${JSON.stringify(event)}\n`);
}

/** The log's name: the key and the exact request, hashed (the body is never stored as a name). */
export function streamLogName(keyId: string, body: string): Promise<string> {
  return sha256Hex(`${keyId}\n${body}`);
}

/** NDJSON from `follow` back into events. */
export async function* followedEvents(body: ReadableStream<Uint8Array>): AsyncGenerator<StreamEvent> {
  const decoder = new TextDecoder();
  let buffer = "";
  for await (const chunk of body) {
    buffer += decoder.decode(chunk, { stream: true });
    let newline = buffer.indexOf("\n");
    while (newline >= 0) {
      const text = buffer.slice(0, newline);
      buffer = buffer.slice(newline + 1);
      if (text) yield JSON.parse(text) as StreamEvent;
      newline = buffer.indexOf("\n");
    }
  }
}
