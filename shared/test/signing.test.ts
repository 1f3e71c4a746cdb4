import { describe, expect, it } from "vitest";
import { precheckSignature, signRequest, verifyRequest } from "../src/signing";

/** Edge -> runner request signing: what is refused before a body is read, and what after. */
describe("request signing", () => {
  const secret = "s".repeat(32);
  const now = 1_800_000_000;

  it("refuses missing, malformed and stale headers without the body", () => {
    const sig = "ab".repeat(32);
    expect(precheckSignature(undefined, "n", sig, { windowSeconds: 60, now })).toMatchObject({ ok: false });
    expect(precheckSignature(String(now), "n", "zz", { windowSeconds: 60, now })).toMatchObject({
      ok: false,
    });
    expect(precheckSignature(String(now - 61), "n", sig, { windowSeconds: 60, now })).toMatchObject({
      ok: false,
    });
    expect(precheckSignature(String(now), "n", sig, { windowSeconds: 60, now })).toEqual({ ok: true });
  });

  it("refuses what was signed before the receiver started, inside the window or not", () => {
    const sig = "ab".repeat(32);
    const check = precheckSignature(String(now - 10), "n", sig, {
      windowSeconds: 600,
      now,
      notBefore: now - 5,
    });
    expect(check).toEqual({ ok: false, reason: "signed before this runner started (a replay?)" });
  });

  it("accepts its own signature once the body matches, and nothing else", async () => {
    const { timestamp, nonce, signature } = await signRequest(secret, "POST", "/v1/generate", "{}", now);
    const options = { windowSeconds: 60, now };
    const ok = await verifyRequest(
      secret,
      "POST",
      "/v1/generate",
      "{}",
      String(timestamp),
      nonce,
      signature,
      options,
    );
    expect(ok).toEqual({ ok: true });
    const tampered = await verifyRequest(
      secret,
      "POST",
      "/v1/generate",
      "{ }",
      String(timestamp),
      nonce,
      signature,
      options,
    );
    expect(tampered).toMatchObject({ ok: false, reason: "signature mismatch" });
  });
});
