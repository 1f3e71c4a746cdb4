import { createHash } from "node:crypto";
import {
  type RunnerGenerateRequestInput,
  readEventStream,
  type StreamEvent,
  signedHeaders,
} from "@visionllm/protocol";
import { RUNNER_SECRET_FOR_TESTS } from "./processes";

/** Calls the runner as the edge does: signed, streaming. */

export function imageInput(bytes: Uint8Array) {
  return {
    data_base64: Buffer.from(bytes).toString("base64"),
    sha256: createHash("sha256").update(bytes).digest("hex"),
  };
}

export async function signedFetch(
  url: string,
  path: string,
  body: unknown,
  options: {
    secret?: string;
    signal?: AbortSignal;
    timestamp?: number;
    nonce?: string;
    method?: string;
  } = {},
): Promise<Response> {
  const text = body === undefined ? "" : JSON.stringify(body);
  const method = options.method ?? (body === undefined ? "GET" : "POST");
  const headers = await signedHeaders(options.secret ?? RUNNER_SECRET_FOR_TESTS, method, path, text, {
    ...(options.timestamp === undefined ? {} : { timestamp: options.timestamp }),
    ...(options.nonce === undefined ? {} : { nonce: options.nonce }),
  });
  return fetch(`${url}${path}`, {
    method,
    headers,
    ...(method === "GET" ? {} : { body: text }),
    ...(options.signal ? { signal: options.signal } : {}),
  });
}

export async function generateEvents(
  url: string,
  request: RunnerGenerateRequestInput,
): Promise<StreamEvent[]> {
  const response = await signedFetch(url, "/v1/generate", request);
  if (!response.ok || !response.body)
    throw new Error(`runner answered ${response.status}: ${await response.text()}`);
  const events: StreamEvent[] = [];
  for await (const event of readEventStream(response.body)) events.push(event);
  return events;
}

export function textOf(events: StreamEvent[]): string {
  return events.map((e) => (e.type === "text-delta" ? e.delta : "")).join("");
}

export async function metric(url: string, name: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  // `name` may carry the first labels, e.g. 'vllm:request_success_total{finished_reason="canceled"'.
  const line = text.split("\n").find((l) => l.startsWith(name) && /[ {,]/.test(l.charAt(name.length)));
  return line ? Number(line.split(" ").pop()) : Number.NaN;
}
