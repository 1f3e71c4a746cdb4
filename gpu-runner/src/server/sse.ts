import { encodeComment, encodeEvent, SSE_HEADERS, type StreamEvent } from "@visionllm/protocol";

/**
 * An SSE response fed by an async iterator of events: written as they come, with back-pressure
 * (the iterator is not advanced while the client's buffer is full), `: ping` comments while the
 * model is silent, and `onCancel` when the client goes away.
 */
export function sseResponse(
  events: AsyncIterator<StreamEvent>,
  options: { pingMs: number; onCancel: () => void; headers?: Record<string, string> },
): Response {
  const encoder = new TextEncoder();
  let ping: ReturnType<typeof setInterval> | undefined;
  let lastWrite = Date.now();
  let closed = false;
  const body = new ReadableStream<Uint8Array>(
    {
      start(controller) {
        ping = setInterval(
          () => {
            if (!closed && Date.now() - lastWrite >= options.pingMs) {
              controller.enqueue(encoder.encode(encodeComment("ping")));
              lastWrite = Date.now();
            }
          },
          Math.max(50, Math.floor(options.pingMs / 2)),
        );
      },
      async pull(controller) {
        try {
          const next = await events.next();
          if (next.done) {
            closed = true;
            clearInterval(ping);
            controller.close();
            return;
          }
          controller.enqueue(encoder.encode(encodeEvent(next.value)));
          lastWrite = Date.now();
        } catch (error) {
          closed = true;
          clearInterval(ping);
          controller.error(error);
        }
      },
      async cancel() {
        closed = true;
        clearInterval(ping);
        options.onCancel();
        await events.return?.(undefined);
      },
    },
    { highWaterMark: 8 },
  );
  return new Response(body, { status: 200, headers: { ...SSE_HEADERS, ...options.headers } });
}
