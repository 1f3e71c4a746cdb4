import { VisionLLMError } from "@visionllm/protocol";

/**
 * Secrets at rest (webhook signing secrets in D1): AES-256-GCM under a key derived from a Worker
 * secret, with the owner's id as associated data, so a row copied to another key does not open.
 * Stored as `sealed:v1:<iv>:<ciphertext>` (base64). Rows written before sealing existed read as
 * plaintext and are sealed on their next write.
 */

const PREFIX = "sealed:v1:";
const encoder = new TextEncoder();

function toBase64(bytes: Uint8Array): string {
  return btoa(String.fromCharCode(...bytes));
}

function fromBase64(text: string): Uint8Array<ArrayBuffer> {
  const raw = atob(text);
  const out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
  return out;
}

async function aesKey(material: string): Promise<CryptoKey> {
  if (!material)
    throw new VisionLLMError(
      "internal_error",
      "The edge has no WEBHOOK_SECRETS_KEY configured (wrangler secret put WEBHOOK_SECRETS_KEY).",
    );
  const digest = await crypto.subtle.digest("SHA-256", encoder.encode(material));
  return crypto.subtle.importKey("raw", digest, "AES-GCM", false, ["encrypt", "decrypt"]);
}

export async function seal(material: string, plaintext: string, owner: string): Promise<string> {
  const iv = crypto.getRandomValues(new Uint8Array(12));
  const sealed = await crypto.subtle.encrypt(
    { name: "AES-GCM", iv, additionalData: encoder.encode(owner) },
    await aesKey(material),
    encoder.encode(plaintext),
  );
  return `${PREFIX}${toBase64(iv)}:${toBase64(new Uint8Array(sealed))}`;
}

export async function unseal(material: string, stored: string, owner: string): Promise<string> {
  if (!stored.startsWith(PREFIX)) return stored;
  const [iv = "", data = ""] = stored.slice(PREFIX.length).split(":");
  const plain = await crypto.subtle
    .decrypt(
      { name: "AES-GCM", iv: fromBase64(iv), additionalData: encoder.encode(owner) },
      await aesKey(material),
      fromBase64(data),
    )
    .catch(() => {
      throw new VisionLLMError(
        "internal_error",
        "A stored secret does not open with WEBHOOK_SECRETS_KEY (was the key changed?).",
      );
    });
  return new TextDecoder().decode(plain);
}
