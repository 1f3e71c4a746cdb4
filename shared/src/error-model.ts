/**
 * One error model for edge, runner and clients. Each class carries its HTTP status, a stable `code`
 * and whether retrying can help; across a process boundary errors travel as `ErrorBody` JSON and
 * are rebuilt with `errorFromBody`, so a runner's 503 stays a retryable error at the edge.
 * This module has no dependencies, so the browser bundle can carry it (errors.ts adds the zod parts).
 */

export const ERROR_MARKER = Symbol.for("visionllm.error");

export const errorCodes = [
  "invalid_request",
  "invalid_api_key",
  "permission_denied",
  "not_found",
  "idempotency_key_reused",
  "payload_too_large",
  "unsupported_media_type",
  "rate_limit_exceeded",
  "overloaded",
  "runner_unavailable",
  "deadline_exceeded",
  "canceled",
  "model_error",
  "bad_upstream",
  "internal_error",
] as const;
export type ErrorCode = (typeof errorCodes)[number];

/** OpenAI's `error.type` for each code, so existing SDKs classify our errors as they do OpenAI's. */
const openAIType: Record<ErrorCode, string> = {
  invalid_request: "invalid_request_error",
  invalid_api_key: "authentication_error",
  permission_denied: "permission_error",
  not_found: "not_found_error",
  idempotency_key_reused: "invalid_request_error",
  payload_too_large: "invalid_request_error",
  unsupported_media_type: "invalid_request_error",
  rate_limit_exceeded: "rate_limit_error",
  overloaded: "server_error",
  runner_unavailable: "server_error",
  deadline_exceeded: "server_error",
  canceled: "invalid_request_error",
  model_error: "server_error",
  bad_upstream: "server_error",
  internal_error: "server_error",
};

const statusOf: Record<ErrorCode, number> = {
  invalid_request: 400,
  invalid_api_key: 401,
  permission_denied: 403,
  not_found: 404,
  // The IETF Idempotency-Key draft's answer to a key reused with another payload.
  idempotency_key_reused: 422,
  payload_too_large: 413,
  unsupported_media_type: 415,
  rate_limit_exceeded: 429,
  overloaded: 503,
  runner_unavailable: 503,
  deadline_exceeded: 504,
  canceled: 499,
  model_error: 500,
  bad_upstream: 502,
  internal_error: 500,
};

const retryableCodes: ReadonlySet<ErrorCode> = new Set([
  "rate_limit_exceeded",
  "overloaded",
  "runner_unavailable",
  "deadline_exceeded",
  "bad_upstream",
]);

export interface ErrorBody {
  error: {
    message: string;
    type: string;
    code: ErrorCode;
    param: string | null;
    retryable: boolean;
    retry_after_seconds?: number;
  };
}

export interface ErrorOptions {
  param?: string | null;
  retryAfterSeconds?: number;
  cause?: unknown;
}

export class VisionLLMError extends Error {
  readonly [ERROR_MARKER] = true;
  readonly code: ErrorCode;
  readonly status: number;
  readonly retryable: boolean;
  readonly param: string | null;
  readonly retryAfterSeconds: number | undefined;

  constructor(code: ErrorCode, message: string, options: ErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "VisionLLMError";
    this.code = code;
    this.status = statusOf[code];
    this.retryable = retryableCodes.has(code);
    this.param = options.param ?? null;
    this.retryAfterSeconds = options.retryAfterSeconds;
  }

  /** Works across bundles and realms, unlike `instanceof`. */
  static is(value: unknown): value is VisionLLMError {
    return typeof value === "object" && value !== null && ERROR_MARKER in value;
  }

  toBody(): ErrorBody {
    return {
      error: {
        message: this.message,
        type: openAIType[this.code],
        code: this.code,
        param: this.param,
        retryable: this.retryable,
        ...(this.retryAfterSeconds === undefined ? {} : { retry_after_seconds: this.retryAfterSeconds }),
      },
    };
  }

  /** Headers that tell clients (the openai SDK among them) whether and when to retry. */
  headers(): Record<string, string> {
    const headers: Record<string, string> = { "x-should-retry": String(this.retryable) };
    if (this.retryAfterSeconds !== undefined) {
      headers["retry-after"] = String(Math.max(1, Math.ceil(this.retryAfterSeconds)));
      headers["retry-after-ms"] = String(Math.round(this.retryAfterSeconds * 1000));
    }
    return headers;
  }
}

/** Rebuilds an error that crossed a process boundary; unknown shapes become `bad_upstream`. */
export function errorFromBody(body: unknown, status?: number): VisionLLMError {
  const error = (body as { error?: Partial<ErrorBody["error"]> } | undefined)?.error;
  const code = error?.code;
  if (
    !error ||
    typeof error.message !== "string" ||
    !code ||
    !(errorCodes as readonly string[]).includes(code)
  ) {
    return new VisionLLMError(
      "bad_upstream",
      `Upstream answered${status === undefined ? "" : ` HTTP ${status}`} without a valid error body.`,
    );
  }
  return new VisionLLMError(code, error.message, {
    param: typeof error.param === "string" ? error.param : null,
    ...(typeof error.retry_after_seconds === "number"
      ? { retryAfterSeconds: error.retry_after_seconds }
      : {}),
  });
}
