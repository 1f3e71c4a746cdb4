import { type UnnumberedEvent, VisionLLMError } from "@visionllm/protocol";
import { describe, expect, it } from "vitest";
import { errorsAsEvents, heldUntilFirstEvents, numbered, watched } from "../src/server/stages";

/** The runner's response stream stages, each alone. */

async function* from(events: UnnumberedEvent[], fail?: unknown): AsyncGenerator<UnnumberedEvent> {
  yield* events;
  if (fail !== undefined) throw fail;
}

async function all<T>(stream: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const event of stream) out.push(event);
  return out;
}

const text: UnnumberedEvent = { type: "text-delta", delta: "Hi" };
const done: UnnumberedEvent = { type: "done", finish_reason: "stop" };

describe("errorsAsEvents", () => {
  it("ends a stream that threw with an error event and done: error, logging only unknown errors", async () => {
    const logged: unknown[] = [];
    const signal = new AbortController().signal;
    const out = await all(errorsAsEvents(from([text], new Error("boom")), signal, (e) => logged.push(e)));
    expect(out.map((e) => e.type)).toEqual(["text-delta", "error", "done"]);
    expect(out[1]).toMatchObject({ code: "model_error" });
    expect(out[2]).toMatchObject({ finish_reason: "error" });
    expect(logged).toHaveLength(1);
    const known = new VisionLLMError("invalid_request", "bad image", { param: "images.0" });
    const refused = await all(errorsAsEvents(from([], known), signal, (e) => logged.push(e)));
    expect(refused[0]).toMatchObject({ type: "error", code: "invalid_request", param: "images.0" });
    expect(logged).toHaveLength(1);
  });

  it("turns the done of a stream aborted by its deadline into an error", async () => {
    const controller = new AbortController();
    controller.abort(new VisionLLMError("deadline_exceeded", "Deadline exceeded."));
    const out = await all(errorsAsEvents(from([text, done]), controller.signal, () => {}));
    expect(out.map((e) => e.type)).toEqual(["text-delta", "error", "done"]);
    expect(out[1]).toMatchObject({ code: "deadline_exceeded" });
  });
});

describe("watched", () => {
  it("calls onEnd once with the finish reason, or undefined when the reader stops early", async () => {
    const ends: Array<string | undefined> = [];
    await all(
      watched(
        from([text, done]),
        () => {},
        (r) => ends.push(r),
      ),
    );
    const early = watched(
      from([text, done]),
      () => {},
      (r) => ends.push(r),
    );
    await early.next();
    await early.return(undefined);
    await early.return(undefined);
    expect(ends).toEqual(["stop", undefined]);
  });
});

describe("numbered and heldUntilFirstEvents", () => {
  const start: UnnumberedEvent = { type: "start", id: "r1", model: "m", created: 0 };

  it("numbers from 0 after the start event and replays the held head", async () => {
    const held = await heldUntilFirstEvents(numbered(start, from([text, done])));
    const out = await all(held);
    expect(out.map((e) => [e.type, e.sequence_number])).toEqual([
      ["start", 0],
      ["text-delta", 1],
      ["done", 2],
    ]);
  });

  it("throws a client error found in the head, after closing the stream", async () => {
    const ends: Array<string | undefined> = [];
    const refused = new VisionLLMError("invalid_request", "The image is truncated.", { param: "images.0" });
    const stream = numbered(
      start,
      watched(
        errorsAsEvents(from([], refused), new AbortController().signal, () => {}),
        () => {},
        (r) => ends.push(r),
      ),
    );
    await expect(heldUntilFirstEvents(stream)).rejects.toMatchObject({
      code: "invalid_request",
      param: "images.0",
    });
    expect(ends).toEqual([undefined]);
  });

  it("lets a model failure through as a stream (a 200 whose error event says so)", async () => {
    const stream = numbered(
      start,
      errorsAsEvents(from([], new Error("x")), new AbortController().signal, () => {}),
    );
    const out = await all(await heldUntilFirstEvents(stream));
    expect(out.map((e) => e.type)).toEqual(["start", "error", "done"]);
  });
});
