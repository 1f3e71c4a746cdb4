import { readFile, rm } from "node:fs/promises";
import path from "node:path";
import { parseArgs } from "node:util";
import { Miniflare } from "miniflare";
import { unstable_getMiniflareWorkerOptions } from "wrangler";
import { type EdgeOptions, keyValue, parseSecrets, wrangler } from "./wrangler";

/**
 * The edge Worker on loopback in the Workers runtime (workerd, through Miniflare), with wrangler.toml's
 * bindings (D1, KV, R2, Durable Objects, Queues, static assets) stored under a local folder.
 *
 * Why not `wrangler dev`: it runs two workerd processes, a proxy Worker (for live reload) in front of
 * this one, and every request and every streamed chunk crosses both. Measured on the bench, that hop
 * was most of what the edge added to a request. The Worker is bundled exactly as `wrangler deploy`
 * bundles it, and its storage lives where `wrangler dev --persist-to` and `wrangler d1 ... --local`
 * keep theirs, so the two are interchangeable.
 */

/** Bundles the Worker as `wrangler deploy` would (without uploading) into `outdir`; returns the entry. */
async function bundle(configPath: string, outdir: string): Promise<string> {
  await rm(outdir, { recursive: true, force: true });
  await wrangler(["deploy", "--dry-run", "--outdir", outdir, "--config", configPath], { quiet: true });
  return path.join(outdir, "index.js");
}

export async function startEdge(options: EdgeOptions): Promise<Miniflare> {
  const configPath = "wrangler.toml";
  const outdir = path.resolve(options.persist, "edge-build");
  const scriptPath = await bundle(configPath, outdir);
  const secrets = options.secretsFile ? parseSecrets(await readFile(options.secretsFile, "utf8")) : {};
  const { workerOptions } = unstable_getMiniflareWorkerOptions(configPath);
  const edge = new Miniflare({
    host: "127.0.0.1",
    port: options.port,
    defaultPersistRoot: path.join(options.persist, "v3"),
    // The request's `cf` object from Miniflare's built-in placeholder, not fetched from Cloudflare.
    cf: false,
    workers: [
      {
        ...workerOptions,
        name: "visionllm-edge",
        modules: true,
        modulesRoot: outdir,
        scriptPath,
        bindings: { ...workerOptions.bindings, ...options.vars, ...secrets },
      },
    ],
  });
  await edge.ready;
  return edge;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      port: { type: "string", default: "8787" },
      persist: { type: "string", default: ".wrangler/state" },
      var: { type: "string", multiple: true, default: [] },
      "secrets-file": { type: "string" },
    },
  });
  const edge = await startEdge({
    port: Number(values.port),
    persist: values.persist,
    vars: Object.fromEntries(values.var.map(keyValue)),
    secretsFile: values["secrets-file"],
  });
  console.log(`edge listening on http://127.0.0.1:${values.port}`);
  const stop = () => void edge.dispose().then(() => process.exit(0));
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
}

if (import.meta.url === `file://${process.argv[1]}`)
  main().catch((error: unknown) => {
    console.error(error instanceof Error ? error.message : error);
    process.exit(1);
  });
