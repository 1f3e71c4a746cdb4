import { env as workersEnv } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { generateApiKey, insertKeySql } from "../src/api-keys";
import { authenticate } from "../src/auth";
import type { Env } from "../src/env";

/**
 * A known key's row is kept in the isolate for KEY_CACHE_SECONDS, so most requests skip D1; a
 * revocation takes effect within that bound, and at once where the bound is 0.
 */
const base = workersEnv as unknown as Env;

async function newKey(id: string): Promise<string> {
  const key = generateApiKey();
  await base.DB.exec((await insertKeySql(key, id, id)).sql.replace(/;$/, ""));
  return key;
}

const revoke = (id: string) =>
  base.DB.prepare("UPDATE api_keys SET revoked_at = ? WHERE id = ?").bind(Date.now(), id).run();

describe("API key cache", () => {
  it("keeps answering a key revoked a moment ago, and refuses it once the bound has passed", async () => {
    const env = { ...base, KEY_CACHE_SECONDS: "1" };
    const key = await newKey("k-cached");
    expect((await authenticate(env, `Bearer ${key}`)).keyId).toBe("k-cached");
    await revoke("k-cached");
    expect((await authenticate(env, `Bearer ${key}`)).keyId).toBe("k-cached");
    await new Promise((r) => setTimeout(r, 1100));
    await expect(authenticate(env, `Bearer ${key}`)).rejects.toMatchObject({ code: "invalid_api_key" });
  });

  it("with a bound of 0 reads D1 on every request", async () => {
    const env = { ...base, KEY_CACHE_SECONDS: "0" };
    const key = await newKey("k-uncached");
    await authenticate(env, `Bearer ${key}`);
    await revoke("k-uncached");
    await expect(authenticate(env, `Bearer ${key}`)).rejects.toMatchObject({ message: /revoked/ });
  });

  it("never keeps an unknown key: one created after a failed try works at once", async () => {
    const env = { ...base, KEY_CACHE_SECONDS: "60" };
    const key = generateApiKey();
    await expect(authenticate(env, `Bearer ${key}`)).rejects.toMatchObject({ code: "invalid_api_key" });
    await base.DB.exec((await insertKeySql(key, "late", "k-late")).sql.replace(/;$/, ""));
    expect((await authenticate(env, `Bearer ${key}`)).keyId).toBe("k-late");
  });
});
