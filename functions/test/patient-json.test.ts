import { VisionLLMError } from "@visionllm/protocol";
import { describe, expect, it } from "vitest";
import { type PatientOptions, patientJson } from "../src/patient-json";

/** patientJson alone, with short delays: when it answers plainly and when it sends its head early. */

function settleAfter<T>(ms: number, value: T, fail = false): Promise<T> {
  return new Promise((resolve, reject) => setTimeout(() => (fail ? reject(value) : resolve(value)), ms));
}

function options(overrides: Partial<PatientOptions> = {}): PatientOptions & { cancels: () => number } {
  let cancels = 0;
  return {
    headAfterMs: 40,
    heartbeatMs: 10,
    headers: { "x-request-id": "r1" },
    onCancel: () => {
      cancels++;
    },
    signal: new AbortController().signal,
    requestId: "r1",
    cancels: () => cancels,
    ...overrides,
  };
}

const retryable = () =>
  new VisionLLMError("runner_unavailable", "The model runner stopped mid-answer.", { retryAfterSeconds: 2 });

describe("patientJson", () => {
  it("answers plainly when the work is done within the head delay", async () => {
    const response = await patientJson(settleAfter(5, { ok: 1 }), options());
    expect(response.status).toBe(200);
    expect(response.headers.get("x-request-id")).toBe("r1");
    expect(await response.text()).toBe('{"ok":1}');
  });

  it("keeps an early failure's status and Retry-After", async () => {
    const response = await patientJson(settleAfter(5, retryable(), true), options());
    expect(response.status).toBe(503);
    expect(response.headers.get("retry-after")).toBe("2");
    expect(await response.json()).toMatchObject({ error: { code: "runner_unavailable", retryable: true } });
  });

  it("sends the head, spaces, then the JSON when the work takes longer, uncompressed", async () => {
    const response = await patientJson(settleAfter(120, { ok: 2 }), options());
    expect(response.status).toBe(200);
    expect(response.headers.get("content-encoding")).toBe("identity");
    const text = await response.text();
    expect(text).toMatch(/^ {3,}\{"ok":2\}$/);
    expect(JSON.parse(text)).toEqual({ ok: 2 });
  });

  it("puts a late failure in the body as the error object", async () => {
    const response = await patientJson(settleAfter(120, retryable(), true), options());
    expect(response.status).toBe(200);
    expect(JSON.parse(await response.text())).toMatchObject({
      error: { code: "runner_unavailable", retryable: true, retry_after_seconds: 2 },
    });
  });

  it("hides an unexpected late failure behind internal_error", async () => {
    const response = await patientJson(settleAfter(120, new Error("secret detail"), true), options());
    const text = await response.text();
    expect(JSON.parse(text)).toMatchObject({ error: { code: "internal_error" } });
    expect(text).not.toContain("secret detail");
  });

  it("stops the work once when the client cancels the body", async () => {
    const opts = options();
    const response = await patientJson(settleAfter(500, { ok: 3 }), opts);
    const reader = response.body?.getReader();
    await reader?.read();
    await reader?.cancel();
    await reader?.cancel();
    expect(opts.cancels()).toBe(1);
  });

  it("stops the work when the request is aborted after the head", async () => {
    const controller = new AbortController();
    const opts = options({ signal: controller.signal });
    const response = await patientJson(settleAfter(500, { ok: 4 }), opts);
    expect(response.status).toBe(200);
    controller.abort();
    expect(opts.cancels()).toBe(1);
  });

  it("does not stop finished work when the request ends afterwards", async () => {
    const controller = new AbortController();
    const opts = options({ signal: controller.signal });
    const response = await patientJson(settleAfter(80, { ok: 5 }), opts);
    expect(JSON.parse(await response.text())).toEqual({ ok: 5 });
    controller.abort();
    expect(opts.cancels()).toBe(0);
  });
});
