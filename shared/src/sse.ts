import type { StreamEvent } from "./events";

/** SSE framing shared by the runner and the edge (https://html.spec.whatwg.org/#server-sent-events). */

export const SSE_HEADERS = {
  "content-type": "text/event-stream; charset=utf-8",
  "cache-control": "no-cache, no-transform",
  connection: "keep-alive",
  // Proxies such as nginx buffer responses unless told not to; a buffered stream is not a stream.
  "x-accel-buffering": "no",
} as const;

/** `event:` + `id:` + one `data:` line; JSON never contains a raw newline, so one line suffices. */
export function encodeEvent(event: StreamEvent): string {
  return `event: ${event.type}\nid: ${event.sequence_number}\ndata: ${JSON.stringify(event)}\n\n`;
}

/** A named event with data only (OpenAI's Responses stream: the type names the event, no id). */
export function encodeNamed(type: string, data: unknown): string {
  return `event: ${type}\ndata: ${JSON.stringify(data)}\n\n`;
}

/** A comment line: ignored by every SSE client, keeps idle connections open. */
export function encodeComment(text = "ping"): string {
  return `: ${text}\n\n`;
}

/** OpenAI-style frame: data only, no event name. */
export function encodeData(data: unknown): string {
  return `data: ${typeof data === "string" ? data : JSON.stringify(data)}\n\n`;
}

/**
 * An SSE response fed by an async iterator of already-encoded frames: written as they come, with
 * back-pressure (the iterator is not advanced while the client's buffer is full), `: ping`
 * comments while the source is silent, and `onCancel` when the client goes away. Web APIs only:
 * the runner (Node) and the edge (workerd) share it.
 */
export function sseResponse(
  frames: AsyncIterator<string>,
  options: { pingMs: number; onCancel: () => void; headers?: Record<string, string>; status?: number },
): Response {
  const encoder = new TextEncoder();
  let ping: ReturnType<typeof setInterval> | undefined;
  let lastWrite = Date.now();
  let closed = false;
  let canceled = false;
  const stop = () => {
    closed = true;
    if (ping !== undefined) clearInterval(ping);
  };
  const cancel = () => {
    stop();
    if (canceled) return;
    canceled = true;
    options.onCancel();
  };
  const body = new ReadableStream<Uint8Array>(
    {
      start(controller) {
        ping = setInterval(
          () => {
            if (closed || Date.now() - lastWrite < options.pingMs) return;
            try {
              controller.enqueue(encoder.encode(encodeComment("ping")));
              lastWrite = Date.now();
            } catch {
              // The stream is gone (the client left): the same as a cancel.
              cancel();
            }
          },
          Math.max(50, Math.floor(options.pingMs / 2)),
        );
      },
      async pull(controller) {
        try {
          const next = await frames.next();
          if (next.done) {
            stop();
            controller.close();
            return;
          }
          controller.enqueue(encoder.encode(next.value));
          lastWrite = Date.now();
        } catch (error) {
          stop();
          controller.error(error);
        }
      },
      async cancel() {
        cancel();
        await frames.return?.(undefined);
      },
    },
    { highWaterMark: 8 },
  );
  return new Response(body, {
    status: options.status ?? 200,
    headers: { ...SSE_HEADERS, ...options.headers },
  });
}

/** Maps an async iterable of events to encoded native frames. */
export async function* nativeFrames(events: AsyncIterable<StreamEvent>): AsyncGenerator<string> {
  for await (const event of events) yield encodeEvent(event);
}
