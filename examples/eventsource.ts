import { EVENT_TYPES } from "@visionllm/protocol/lite";
import { EventSource } from "eventsource";
import { apiKey, baseURL, imageDataUrl, model } from "./shared";

/**
 * The native stream (`POST /v1/chat`) with the `eventsource` package: every event has an `id`, and
 * when the connection drops the client reconnects by itself with `Last-Event-ID`; the edge answers
 * from the stream's log with exactly the events after that id (live ones too, while the answer
 * runs), so nothing is lost or repeated. `fetch` is given to send a POST with the key and body.
 */
export interface NativeEvent {
  type: string;
  sequence_number: number;
  [field: string]: unknown;
}

export function streamNative(
  body: Record<string, unknown>,
  options: { url?: string; onOpen?: (lastEventId: string | null) => void } = {},
): Promise<{ events: NativeEvent[]; connections: number }> {
  const url = options.url ?? `${baseURL}/chat`;
  let connections = 0;
  return new Promise((resolve, reject) => {
    const events: NativeEvent[] = [];
    const source = new EventSource(url, {
      fetch: (input, init) => {
        connections++;
        const headers = new Headers(init.headers);
        options.onOpen?.(headers.get("last-event-id"));
        headers.set("authorization", `Bearer ${apiKey}`);
        headers.set("content-type", "application/json");
        return fetch(input, { ...init, method: "POST", headers, body: JSON.stringify({ model, ...body }) });
      },
    });
    for (const type of EVENT_TYPES) {
      source.addEventListener(type, (message) => {
        // EventSource's own connection errors share the name "error" with the stream's error events:
        // only the stream's carry data.
        if (typeof message.data !== "string") return;
        const event = JSON.parse(message.data) as NativeEvent;
        events.push(event);
        if (type === "done") {
          source.close();
          resolve({ events, connections });
        }
      });
    }
    source.onerror = (error) => {
      // Reconnecting is the client's own business; only a refusal (no retry) ends the example.
      if (source.readyState === EventSource.CLOSED)
        reject(new Error(`stream closed: ${error.message ?? "error"}`));
    };
  });
}

if (process.argv[1]?.endsWith("eventsource.ts")) {
  const image = imageDataUrl(process.argv[2] ?? "test/fixtures/scene-detect.png");
  const { events, connections } = await streamNative({
    messages: [
      {
        role: "user",
        content: [
          { type: "image_url", image_url: { url: image } },
          { type: "text", text: "Detect every circle." },
        ],
      },
    ],
  });
  console.log(`${events.length} events over ${connections} connection(s)`);
  for (const e of events) console.log(e.sequence_number, e.type, JSON.stringify(e).slice(0, 120));
}
