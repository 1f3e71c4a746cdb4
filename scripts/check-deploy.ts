import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { wrangler } from "./wrangler";

/**
 * `npm run check:deploy`: what `wrangler deploy` would upload, built without an account
 * (`--dry-run`): fails if wrangler.toml is invalid or the compressed Worker is over the Workers
 * size limit, and prints the size. Part of `npm test`, so CI checks every change.
 */

// The Workers Free plan's limit on the compressed Worker (paid plans allow 10 MiB).
const LIMIT_KIB = 3 * 1024;

/** Builds the Worker as `wrangler deploy` would, without uploading; returns the size line. */
export async function checkDeploy(configPath = "wrangler.toml"): Promise<string> {
  const out = await mkdtemp(path.join(tmpdir(), "visionllm-deploy-"));
  try {
    const log = await wrangler(["deploy", "--dry-run", "--outdir", out, "--config", configPath], {
      quiet: true,
    });
    const size = /Total Upload: ([\d.]+) KiB \/ gzip: ([\d.]+) KiB/.exec(log);
    if (!size) throw new Error(`wrangler's dry run did not report the upload size:\n${log}`);
    const gzip = Number(size[2]);
    if (gzip > LIMIT_KIB)
      throw new Error(`The compressed Worker is ${gzip} KiB, over the ${LIMIT_KIB} KiB limit.`);
    return `Worker: ${size[1]} KiB, ${gzip} KiB compressed (limit ${LIMIT_KIB} KiB); configuration valid.`;
  } finally {
    await rm(out, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`)
  checkDeploy()
    .then(console.log)
    .catch((error: unknown) => {
      console.error(error instanceof Error ? error.message : error);
      process.exit(1);
    });
