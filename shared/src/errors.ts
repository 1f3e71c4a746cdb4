import { z } from "zod";
import { errorCodes, VisionLLMError } from "./error-model";

export * from "./error-model";

export const ErrorCodeSchema = z.enum(errorCodes);

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

export const invalidRequest = (message: string, param: string | null = null) =>
  new VisionLLMError("invalid_request", message, { param });

/** Turns a zod failure into one message that names each offending field and what it expected. */
export function describeZodError(error: z.ZodError): { message: string; param: string | null } {
  const issues = error.issues.slice(0, 5).map((issue) => {
    const path = issue.path.length ? issue.path.map(String).join(".") : "(body)";
    return `${path}: ${issue.message}`;
  });
  const first = error.issues[0];
  // An unknown field is named by the field itself, so clients can point at it.
  const path =
    first?.code === "unrecognized_keys" ? [...first.path, ...first.keys.slice(0, 1)] : (first?.path ?? []);
  const param = path.length ? path.map(String).join(".") : null;
  const more = error.issues.length > 5 ? ` (and ${error.issues.length - 5} more)` : "";
  return { message: `Invalid request: ${issues.join("; ")}${more}.`, param };
}

export function fromZodError(error: z.ZodError): VisionLLMError {
  const { message, param } = describeZodError(error);
  return new VisionLLMError("invalid_request", message, { param });
}
