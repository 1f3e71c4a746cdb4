import { VisionLLMError } from "@visionllm/protocol";

/**
 * The edge's logs: one JSON object per line on the console, the shape Workers Logs indexes field by
 * field and Logpush forwards as it is (`level`, `message`, then the fields). Never a key, a secret
 * or a prompt: ids, routes, statuses and timings only.
 */

export type LogLevel = "debug" | "info" | "warn" | "error";

export type LogFields = Record<string, string | number | boolean | null | undefined>;

export function logEvent(level: LogLevel, message: string, fields: LogFields = {}): void {
  const line = JSON.stringify({ level, message, ...fields });
  if (level === "error") console.error(line);
  else if (level === "warn") console.warn(line);
  else console.log(line);
}

/** An error's name and message, without its stack (which can carry request data). */
export function describeError(error: unknown): string {
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
}

/** What the edge's error handler would answer for `error`, logging anything unexpected. */
export function asVisionError(error: unknown, requestId: string): VisionLLMError {
  if (VisionLLMError.is(error)) return error;
  logEvent("error", "edge error", { request_id: requestId, error: describeError(error) });
  return new VisionLLMError("internal_error", "The edge failed unexpectedly; the error was logged.");
}
