/**
 * Edge -> runner request signing: HMAC-SHA256 over "timestamp.nonce.method.path.body" with a shared
 * secret, hex encoded. The random nonce makes two identical requests in the same second sign
 * differently, so the receiver can refuse any signature it has seen (replays). WebCrypto only, so
 * the Worker and Node use the same code.
 */

import { RUNNER_NONCE_HEADER, RUNNER_SIGNATURE_HEADER, RUNNER_TIMESTAMP_HEADER } from "./runner";

const encoder = new TextEncoder();

async function hmacKey(secret: string): Promise<CryptoKey> {
  return crypto.subtle.importKey("raw", encoder.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, [
    "sign",
    "verify",
  ]);
}

function canonical(
  timestamp: number,
  nonce: string,
  method: string,
  path: string,
  body: string,
): Uint8Array<ArrayBuffer> {
  return new Uint8Array(encoder.encode(`${timestamp}.${nonce}.${method.toUpperCase()}.${path}.${body}`));
}

const toHex = (bytes: ArrayBuffer) =>
  Array.from(new Uint8Array(bytes), (b) => b.toString(16).padStart(2, "0")).join("");

function fromHex(hex: string): Uint8Array<ArrayBuffer> | undefined {
  if (!/^[0-9a-f]*$/.test(hex) || hex.length % 2) return undefined;
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = Number.parseInt(hex.slice(i * 2, i * 2 + 2), 16);
  return out;
}

export async function signRequest(
  secret: string,
  method: string,
  path: string,
  body: string,
  timestamp = Math.floor(Date.now() / 1000),
  nonce: string = crypto.randomUUID(),
): Promise<{ timestamp: number; nonce: string; signature: string }> {
  const mac = await crypto.subtle.sign(
    "HMAC",
    await hmacKey(secret),
    canonical(timestamp, nonce, method, path, body),
  );
  return { timestamp, nonce, signature: toHex(mac) };
}

export type SignatureCheck = { ok: true } | { ok: false; reason: string };

/** Constant-time verification (crypto.subtle.verify), with a timestamp window. */
export interface SignatureOptions {
  windowSeconds: number;
  now?: number;
  /** Seconds: refuse anything signed earlier (a runner's start, so a restart forgets no replay). */
  notBefore?: number;
}

/**
 * What can be checked without the body: headers present and well formed, timestamp fresh. A
 * receiver runs this before it reads a body, so unsigned or stale requests cost it nothing.
 */
export function precheckSignature(
  timestampHeader: string | null | undefined,
  nonceHeader: string | null | undefined,
  signatureHeader: string | null | undefined,
  options: SignatureOptions,
): SignatureCheck {
  if (!timestampHeader || !signatureHeader || !nonceHeader)
    return { ok: false, reason: "missing signature headers" };
  if (nonceHeader.length > 64) return { ok: false, reason: "malformed nonce" };
  const timestamp = Number(timestampHeader);
  if (!Number.isInteger(timestamp)) return { ok: false, reason: "malformed timestamp" };
  const now = options.now ?? Math.floor(Date.now() / 1000);
  if (Math.abs(now - timestamp) > options.windowSeconds)
    return { ok: false, reason: "timestamp outside the window" };
  if (options.notBefore !== undefined && timestamp < options.notBefore)
    return { ok: false, reason: "signed before this runner started (a replay?)" };
  if (fromHex(signatureHeader)?.length !== 32) return { ok: false, reason: "malformed signature" };
  return { ok: true };
}

export async function verifyRequest(
  secret: string,
  method: string,
  path: string,
  body: string,
  timestampHeader: string | null | undefined,
  nonceHeader: string | null | undefined,
  signatureHeader: string | null | undefined,
  options: SignatureOptions,
): Promise<SignatureCheck> {
  const pre = precheckSignature(timestampHeader, nonceHeader, signatureHeader, options);
  if (!pre.ok || !timestampHeader || !nonceHeader || !signatureHeader) return pre;
  const timestamp = Number(timestampHeader);
  const mac = fromHex(signatureHeader);
  if (mac?.length !== 32) return { ok: false, reason: "malformed signature" };
  const valid = await crypto.subtle.verify(
    "HMAC",
    await hmacKey(secret),
    mac,
    canonical(timestamp, nonceHeader, method, path, body),
  );
  return valid ? { ok: true } : { ok: false, reason: "signature mismatch" };
}

/** The headers of a signed edge -> runner request (header names from runner.ts). */
export async function signedHeaders(
  secret: string,
  method: string,
  path: string,
  body: string,
  options: { timestamp?: number; nonce?: string } = {},
): Promise<Record<string, string>> {
  const { timestamp, nonce, signature } = await signRequest(
    secret,
    method,
    path,
    body,
    options.timestamp,
    options.nonce,
  );
  return {
    "content-type": "application/json",
    [RUNNER_TIMESTAMP_HEADER]: String(timestamp),
    [RUNNER_NONCE_HEADER]: nonce,
    [RUNNER_SIGNATURE_HEADER]: signature,
  };
}
