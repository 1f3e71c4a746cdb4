import { mkdtemp, readFile, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { edgeArgs, parseSecrets, writeSecretsFile } from "../scripts/wrangler";

/** Secrets never appear on a command line (any local user can read it with `ps`). */
describe("secrets for the local edge", () => {
  it("go to the edge in a file only this user can read, never as arguments", async () => {
    const dir = await mkdtemp(path.join(tmpdir(), "secrets-"));
    const secret = "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d2e3f4";
    const file = await writeSecretsFile(dir, { RUNNER_SECRET: secret });
    const args = edgeArgs({
      port: 8787,
      persist: dir,
      vars: { RUNNER_URLS: "http://127.0.0.1:1" },
      secretsFile: file,
    });
    expect(args.join(" ")).not.toContain(secret);
    expect(args).toEqual(expect.arrayContaining(["--secrets-file", file]));
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    expect(await readFile(file, "utf8")).toBe(`RUNNER_SECRET=${secret}\n`);
    expect(parseSecrets(await readFile(file, "utf8"))).toEqual({ RUNNER_SECRET: secret });
  });

  it("refuses a value that would break the file's format", async () => {
    const dir = await mkdtemp(path.join(tmpdir(), "secrets-"));
    await expect(writeSecretsFile(dir, { RUNNER_SECRET: "x\nEVIL=1" })).rejects.toThrow(/single line/);
  });
});
