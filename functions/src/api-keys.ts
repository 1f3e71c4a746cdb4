/** API keys: `vl_` + 40 hex characters, stored only as their SHA-256. WebCrypto only (Worker and Node scripts). */

export const KEY_PREFIX = "vl_";

export async function sha256Hex(data: string | ArrayBuffer | Uint8Array<ArrayBuffer>): Promise<string> {
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  const digest = await crypto.subtle.digest("SHA-256", bytes);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Whether `key` has the shape of an API key (says nothing of whether it exists). */
export function isApiKeyShape(key: string): boolean {
  return /^vl_[0-9a-f]{40}$/.test(key);
}

export function generateApiKey(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(20));
  return KEY_PREFIX + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** The SQL that stores a new key (used by the keys command and tests). */
export async function insertKeySql(
  key: string,
  name: string,
  id = crypto.randomUUID(),
): Promise<{ sql: string; id: string }> {
  const hash = await sha256Hex(key);
  const safeName = name.replaceAll("'", "''");
  return {
    id,
    sql: `INSERT INTO api_keys (id, name, key_hash, key_prefix, created_at) VALUES ('${id}', '${safeName}', '${hash}', '${key.slice(0, 7)}', ${Date.now()});`,
  };
}

/** A Standard Webhooks secret: `whsec_` + base64 of 24 random bytes. */
export function newWebhookSecret(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(24));
  return `whsec_${btoa(String.fromCharCode(...bytes))}`;
}
