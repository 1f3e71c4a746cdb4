import { z } from "zod";

/**
 * One error model for edge, runner and clients. Each class carries its HTTP status, a stable `code`
 * and whether retrying can help; across a process boundary errors travel as `ErrorBody` JSON and
 * are rebuilt with `errorFromBody`, so a runner's 503 stays a retryable OverloadedError at the edge.
 */

export const ERROR_MARKER = Symbol.for("visionllm.error");

export const errorCodes = [
  "invalid_request",
  "invalid_api_key",
  "permission_denied",
  "not_found",
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
export const ErrorCodeSchema = z.enum(errorCodes);
export type ErrorCode = z.infer<typeof ErrorCodeSchema>;

/** OpenAI's `error.type` for each code, so existing SDKs classify our errors as they do OpenAI's. */
const openAIType: Record<ErrorCode, string> = {
  invalid_request: "invalid_request_error",
  invalid_api_key: "authentication_error",
  permission_denied: "permission_error",
  not_found: "not_found_error",
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

export const ErrorBodySchema = z.object({
  error: z.object({
    message: z.string(),
    type: z.string(),
    code: ErrorCodeSchema,
    param: z.string().nullable(),
    retryable: z.boolean(),
    retry_after_seconds: z.number().nonnegative().optional(),
  }),
});
export type ErrorBody = z.infer<typeof ErrorBodySchema>;

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

export const invalidRequest = (message: string, param: string | null = null) =>
  new VisionLLMError("invalid_request", message, { param });

/** Rebuilds an error that crossed a process boundary; unknown shapes become `bad_upstream`. */
export function errorFromBody(body: unknown, status?: number): VisionLLMError {
  const parsed = ErrorBodySchema.safeParse(body);
  if (!parsed.success) {
    return new VisionLLMError(
      "bad_upstream",
      `Upstream answered${status === undefined ? "" : ` HTTP ${status}`} without a valid error body.`,
    );
  }
  const { code, message, param, retry_after_seconds } = parsed.data.error;
  return new VisionLLMError(code, message, {
    param,
    ...(retry_after_seconds === undefined ? {} : { retryAfterSeconds: retry_after_seconds }),
  });
}

/** Turns a zod failure into one message that names each offending field and what it expected. */
export function describeZodError(error: z.ZodError): { message: string; param: string | null } {
  const issues = error.issues.slice(0, 5).map((issue) => {
    const path = issue.path.length ? issue.path.map(String).join(".") : "(body)";
    return `${path}: ${issue.message}`;
  });
  const first = error.issues[0];
  const param = first?.path.length ? first.path.map(String).join(".") : null;
  const more = error.issues.length > 5 ? ` (and ${error.issues.length - 5} more)` : "";
  return { message: `Invalid request: ${issues.join("; ")}${more}.`, param };
}

export function fromZodError(error: z.ZodError): VisionLLMError {
  const { message, param } = describeZodError(error);
  return new VisionLLMError("invalid_request", message, { param });
}
