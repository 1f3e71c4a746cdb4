import { z } from "zod";
import { PROVIDERS } from "../backend/onnx";

/** The runner's configuration: process.env parsed once, then frozen. */

const int = (fallback: number) => z.coerce.number().int().positive().default(fallback);

export const RunnerConfigSchema = z.object({
  RUNNER_HOST: z.string().default("127.0.0.1"),
  RUNNER_PORT: z.coerce.number().int().min(0).max(65535).default(8788),
  RUNNER_BUNDLE: z.string().default("model/bundle"),
  RUNNER_PROVIDER: z.enum(PROVIDERS).default("wasm"),
  RUNNER_THREADS: int(2),
  RUNNER_SECRET: z
    .string()
    .min(16, "RUNNER_SECRET must be at least 16 characters: it is the HMAC key the edge signs with"),
  RUNNER_SIGNATURE_WINDOW_S: int(60),
  // Images arrive base64-encoded (4/3 of their bytes); the edge allows a few per request.
  RUNNER_MAX_BODY_BYTES: int(64 * 1024 * 1024),
  RUNNER_MAX_RUNNING: int(16),
  RUNNER_MAX_WAITING: z.coerce.number().int().nonnegative().default(64),
  RUNNER_MAX_BATCH: int(16),
  RUNNER_BATCH_WAIT_MS: z.coerce.number().nonnegative().default(2),
  RUNNER_DEADLINE_MS: int(120_000),
  RUNNER_FEATURE_CACHE_MB: int(256),
  /** Prompt KV caches for prefix reuse; 0 turns prefix caching off. */
  RUNNER_PREFIX_CACHE_MB: z.coerce.number().int().nonnegative().default(64),
  RUNNER_MAX_IMAGE_BYTES: int(20 * 1024 * 1024),
  RUNNER_MAX_IMAGE_PIXELS: int(16_777_216),
  RUNNER_DRAIN_MS: int(30_000),
  RUNNER_PING_MS: int(15_000),
  LOG_LEVEL: z.enum(["debug", "info", "warn", "error"]).default("info"),
});
export type RunnerConfig = Readonly<z.infer<typeof RunnerConfigSchema>>;

export function loadConfig(env: NodeJS.ProcessEnv = process.env): RunnerConfig {
  const parsed = RunnerConfigSchema.safeParse(env);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `  ${i.path.join(".")}: ${i.message}`).join("\n");
    throw new Error(`Invalid runner configuration:\n${lines}`);
  }
  return Object.freeze(parsed.data);
}
