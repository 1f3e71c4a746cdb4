import { EventSequencer, type StreamEvent, type UnnumberedEvent, VisionLLMError } from "@visionllm/protocol";

/**
 * The runner's response stream as stages, each one thing: the model's events with failures turned
 * into error events, watched as they pass (metrics, the request's end), numbered after a start event,
 * and held until the first model event so that a refused input is a 4xx, not a 200.
 */

export function errorEvent(error: VisionLLMError): UnnumberedEvent {
  return {
    type: "error",
    code: error.code,
    message: error.message,
    ...(error.param ? { param: error.param } : {}),
    retryable: error.retryable,
  };
}

function* failed(error: VisionLLMError): Generator<UnnumberedEvent> {
  yield errorEvent(error);
  yield { type: "done", finish_reason: "error" };
}

/** A throw, or an abort whose reason is an error (the deadline), ends the stream with an error event. */
export async function* errorsAsEvents(
  events: AsyncIterable<UnnumberedEvent>,
  signal: AbortSignal,
  onUnexpected: (error: unknown) => void,
): AsyncGenerator<UnnumberedEvent> {
  try {
    for await (const event of events) {
      if (event.type === "done" && VisionLLMError.is(signal.reason)) yield* failed(signal.reason);
      else yield event;
    }
  } catch (error) {
    if (!VisionLLMError.is(error)) onUnexpected(error);
    const known = VisionLLMError.is(error)
      ? error
      : new VisionLLMError("model_error", "The model failed while generating; the error was logged.");
    yield* failed(known);
  }
}

/** Passes events through; `onEnd` runs exactly once, with the finish reason if a done event came. */
export async function* watched(
  events: AsyncIterable<UnnumberedEvent>,
  onEvent: (event: UnnumberedEvent) => void,
  onEnd: (reason: string | undefined) => void,
): AsyncGenerator<UnnumberedEvent> {
  let reason: string | undefined;
  try {
    for await (const event of events) {
      if (event.type === "done") reason = event.finish_reason;
      onEvent(event);
      yield event;
    }
  } finally {
    onEnd(reason);
  }
}

/** The start event, then every event, numbered from 0. */
export async function* numbered(
  start: UnnumberedEvent,
  events: AsyncIterable<UnnumberedEvent>,
): AsyncGenerator<StreamEvent> {
  const sequencer = new EventSequencer();
  yield sequencer.number(start);
  for await (const event of events) yield sequencer.number(event);
}

/**
 * Reads the first `count` events before anything is sent. If the model refused the input (a client
 * error, not retryable), that error is thrown, to be answered as a 4xx; otherwise the whole stream.
 */
export async function heldUntilFirstEvents(
  stream: AsyncGenerator<StreamEvent>,
  count = 2,
): Promise<AsyncGenerator<StreamEvent>> {
  const head: StreamEvent[] = [];
  for (let i = 0; i < count; i++) {
    const next = await stream.next();
    if (next.done) break;
    head.push(next.value);
  }
  const refused = head.find((event) => event.type === "error");
  if (refused?.type === "error" && !refused.retryable && refused.code !== "model_error") {
    await stream.return(undefined);
    throw new VisionLLMError(refused.code, refused.message, refused.param ? { param: refused.param } : {});
  }
  return (async function* () {
    yield* head;
    yield* stream;
  })();
}
