import type { VisionLLMError } from "@visionllm/protocol";
import { asVisionError } from "./log";

/**
 * A JSON answer that may take a while: a `stream: false` generation. Ready within `headAfterMs`, it is
 * an ordinary response (an error keeps its status and Retry-After). Past that, a 200 head goes out and
 * a space every `heartbeatMs` until the JSON is ready; JSON allows whitespace before a value, so every
 * client parses the body unchanged (OpenRouter answers long non-streaming calls the same way).
 *
 * Why: workerd tells a Worker that its client left (request.signal, a failed write) only once response
 * bytes flow. Without them a client that gave up on a non-streaming call left the runner generating to
 * its token limit (measured: client gone at 0.4 s, the edge answered 200 to nobody after 2.1 s). The
 * price: a failure after the head can no longer change the status, so the body is the error object,
 * with `retryable` and `retry_after_seconds` in it.
 */
export interface PatientOptions {
  /** Defaults: PATIENT_HEAD_AFTER_MS, PATIENT_HEARTBEAT_MS (tests shorten them). */
  headAfterMs?: number;
  heartbeatMs?: number;
  headers: Record<string, string>;
  /** Fires once the client is gone (request aborted or body cancelled): stop the work. */
  onCancel: () => void;
  signal: AbortSignal;
  requestId: string;
}

const PATIENT_HEAD_AFTER_MS = 1000;
const PATIENT_HEARTBEAT_MS = 250;

type Outcome = { ok: true; body: unknown } | { ok: false; error: VisionLLMError };

export async function patientJson(work: Promise<unknown>, options: PatientOptions): Promise<Response> {
  const outcome: Promise<Outcome> = work.then(
    (body) => ({ ok: true, body }),
    (error: unknown) => ({ ok: false, error: asVisionError(error, options.requestId) }),
  );
  let timer: ReturnType<typeof setTimeout> | null = null;
  const headDue = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), options.headAfterMs ?? PATIENT_HEAD_AFTER_MS);
  });
  const early = await Promise.race([outcome, headDue]);
  clearTimeout(timer); // a quick answer leaves no timer behind in the request's context
  if (early) return finished(early, options.headers);
  return heartbeating(outcome, options);
}

function finished(outcome: Outcome, headers: Record<string, string>): Response {
  const json = { ...headers, "content-type": "application/json" };
  if (outcome.ok) return new Response(JSON.stringify(outcome.body), { status: 200, headers: json });
  const { error } = outcome;
  return new Response(JSON.stringify(error.toBody()), {
    status: error.status,
    headers: { ...json, ...error.headers() },
  });
}

function heartbeating(outcome: Promise<Outcome>, options: PatientOptions): Response {
  const encoder = new TextEncoder();
  let timer: ReturnType<typeof setInterval> | undefined;
  let gone = false;
  const leave = () => {
    if (timer !== undefined) clearInterval(timer);
    if (gone) return;
    gone = true;
    options.onCancel();
  };
  options.signal.addEventListener("abort", leave, { once: true });
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      timer = setInterval(() => {
        try {
          controller.enqueue(encoder.encode(" "));
        } catch {
          leave(); // the stream is gone: the client left
        }
      }, options.heartbeatMs ?? PATIENT_HEARTBEAT_MS);
      void outcome.then((result) => {
        if (timer !== undefined) clearInterval(timer);
        if (gone) return;
        const json = result.ok ? result.body : result.error.toBody();
        try {
          controller.enqueue(encoder.encode(JSON.stringify(json)));
          controller.close();
          gone = true; // answered: a later abort of the request has nothing left to stop
        } catch {
          leave();
        }
      });
    },
    cancel: leave,
  });
  // Not compressed: Cloudflare (and Miniflare, which mimics it) gzips JSON for clients that accept it,
  // and the compressor holds the spaces back, so no byte would flow and a client that left would go
  // unnoticed again. A response that names its encoding is passed through as it is.
  return new Response(body, {
    status: 200,
    headers: { ...options.headers, "content-type": "application/json", "content-encoding": "identity" },
    encodeBody: "manual",
  });
}
