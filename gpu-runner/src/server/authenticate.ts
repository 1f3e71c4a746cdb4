import {
  precheckSignature,
  RUNNER_NONCE_HEADER,
  RUNNER_SIGNATURE_HEADER,
  RUNNER_TIMESTAMP_HEADER,
  VisionLLMError,
  verifyRequest,
} from "@visionllm/protocol";
import type { Context } from "hono";
import type { RunnerConfig } from "./config";

/**
 * The edge's HMAC on every /v1 request: headers and freshness are checked before the body is read;
 * a signature is accepted once; requests signed before this process started are refused, since the
 * signatures it has seen died with the previous process. Returns the raw body.
 */
export function createAuthenticator(
  config: RunnerConfig,
  startedAt: number,
): (c: Context) => Promise<string> {
  const seen = new Map<string, number>();
  const options = { windowSeconds: config.RUNNER_SIGNATURE_WINDOW_S, notBefore: startedAt };
  const refuse = (reason: string) =>
    new VisionLLMError("invalid_api_key", `Runner request refused: ${reason}.`);
  return async (c) => {
    const signature = c.req.header(RUNNER_SIGNATURE_HEADER);
    const timestamp = c.req.header(RUNNER_TIMESTAMP_HEADER);
    const nonce = c.req.header(RUNNER_NONCE_HEADER);
    const pre = precheckSignature(timestamp, nonce, signature, options);
    if (!pre.ok) throw refuse(pre.reason);
    const body = await c.req.text();
    const path = new URL(c.req.url).pathname;
    const check = await verifyRequest(
      config.RUNNER_SECRET,
      c.req.method,
      path,
      body,
      timestamp,
      nonce,
      signature,
      options,
    );
    if (!check.ok) throw refuse(check.reason);
    const now = Date.now();
    for (const [sig, expires] of seen) if (expires < now) seen.delete(sig);
    if (signature && seen.has(signature)) throw refuse("this signature was already used (replay)");
    if (signature) seen.set(signature, now + 2 * config.RUNNER_SIGNATURE_WINDOW_S * 1000);
    return body;
  };
}
