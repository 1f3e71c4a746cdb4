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

/** A comment line: ignored by every SSE client, keeps idle connections open. */
export function encodeComment(text = "ping"): string {
  return `: ${text}\n\n`;
}

/** OpenAI-style frame: data only, no event name. */
export function encodeData(data: unknown): string {
  return `data: ${typeof data === "string" ? data : JSON.stringify(data)}\n\n`;
}
