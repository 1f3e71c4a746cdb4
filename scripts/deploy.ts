import { randomBytes } from "node:crypto";
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { z } from "zod";
import { checkDeploy } from "./check-deploy";
import { wrangler } from "./wrangler";

/**
 * `npm run deploy`: the edge on Cloudflare from a logged-in wrangler (`npx wrangler login` or
 * CLOUDFLARE_API_TOKEN). Creates what the Worker binds that the account lacks (D1 database, KV
 * namespace, R2 bucket, queues and the dead-letter queue), writes the new ids into wrangler.toml,
 * applies the D1 migrations, deploys (Durable Object migrations ride along), and generates the
 * secrets the Worker has not got. Running it again changes nothing but the deployed version.
 *
 * `npm run deploy -- --dry-run` needs no account: it prints the plan from wrangler.toml and builds
 * the Worker with `wrangler deploy --dry-run`.
 */

/** Runs one wrangler command and returns its standard output (the real one, or a test double). */
export type WranglerRun = (args: string[]) => Promise<string>;

export interface Resources {
  d1: { name: string };
  kv: { binding: string };
  r2: string[];
  queues: string[];
}

/** What wrangler.toml binds, read from the file itself. */
export function resourcesOf(toml: string): Resources {
  const d1 = /\[\[d1_databases\]\][^[]*?database_name\s*=\s*"([^"]+)"/.exec(toml)?.[1];
  const kv = /\[\[kv_namespaces\]\][^[]*?binding\s*=\s*"([^"]+)"/.exec(toml)?.[1];
  if (!d1 || !kv)
    throw new Error("wrangler.toml must declare one [[d1_databases]] and one [[kv_namespaces]].");
  const r2 = [...toml.matchAll(/bucket_name\s*=\s*"([^"]+)"/g)].map((m) => m[1] ?? "");
  const queues = new Set<string>();
  for (const m of toml.matchAll(/^\s*(?:queue|dead_letter_queue)\s*=\s*"([^"]+)"/gm)) queues.add(m[1] ?? "");
  return { d1: { name: d1 }, kv: { binding: kv }, r2, queues: [...queues].sort() };
}

const D1List = z.array(z.object({ uuid: z.string(), name: z.string() }));
const KvList = z.array(z.object({ id: z.string(), title: z.string() }));
const SecretList = z.array(z.object({ name: z.string() }));

/** The first JSON array in wrangler's output (it may print a banner before it). */
function jsonArray(text: string): unknown {
  const start = text.indexOf("[");
  return start < 0 ? [] : JSON.parse(text.slice(start));
}

/** A name in wrangler's tables ("│ name │") or labelled lists ("name: name"). */
function listed(output: string, name: string): boolean {
  const escaped = name.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  return new RegExp(`(^|[\\s│|:])${escaped}([\\s│|]|$)`, "m").test(output);
}

const UUID = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/;
const KV_ID = /\b[0-9a-f]{32}\b/;

export function withIds(toml: string, ids: { d1: string; kv: string }): string {
  return toml
    .replace(/(\[\[d1_databases\]\][^[]*?database_id\s*=\s*")[^"]*(")/, `$1${ids.d1}$2`)
    .replace(/(\[\[kv_namespaces\]\][^[]*?\bid\s*=\s*")[^"]*(")/, `$1${ids.kv}$2`);
}

export interface DeployOptions {
  run: WranglerRun;
  configPath: string;
  /** Where generated secrets are kept for the runners (mode 0600). */
  secretsDir: string;
  log?: (line: string) => void;
}

export interface DeployReport {
  created: string[];
  configChanged: boolean;
  secretsSet: string[];
}

async function ensureD1(run: WranglerRun, name: string, created: string[]): Promise<string> {
  const found = D1List.parse(jsonArray(await run(["d1", "list", "--json"]))).find((d) => d.name === name);
  if (found) return found.uuid;
  const id = UUID.exec(await run(["d1", "create", name]))?.[0];
  if (!id) throw new Error(`wrangler d1 create ${name} printed no database id.`);
  created.push(`d1:${name}`);
  return id;
}

async function ensureKv(run: WranglerRun, binding: string, created: string[]): Promise<string> {
  const namespaces = KvList.parse(jsonArray(await run(["kv", "namespace", "list"])));
  const found = namespaces.find((n) => n.title === binding || n.title.endsWith(`-${binding}`));
  if (found) return found.id;
  const id = KV_ID.exec(await run(["kv", "namespace", "create", binding]))?.[0];
  if (!id) throw new Error(`wrangler kv namespace create ${binding} printed no namespace id.`);
  created.push(`kv:${binding}`);
  return id;
}

async function ensureListed(
  run: WranglerRun,
  kind: "r2" | "queues",
  names: string[],
  created: string[],
): Promise<void> {
  const list = kind === "r2" ? ["r2", "bucket", "list"] : ["queues", "list"];
  const existing = await run(list);
  for (const name of names) {
    if (listed(existing, name)) continue;
    await run(kind === "r2" ? ["r2", "bucket", "create", name] : ["queues", "create", name]);
    created.push(`${kind}:${name}`);
  }
}

const SECRETS = ["RUNNER_SECRET", "WEBHOOK_SECRETS_KEY"] as const;

async function ensureSecrets(run: WranglerRun, secretsDir: string, config: string): Promise<string[]> {
  let present: string[] = [];
  try {
    present = SecretList.parse(jsonArray(await run(["secret", "list", "--config", config]))).map(
      (s) => s.name,
    );
  } catch {
    present = []; // a Worker deployed for the first time has none
  }
  const missing = SECRETS.filter((name) => !present.includes(name));
  if (missing.length === 0) return [];
  await mkdir(secretsDir, { recursive: true, mode: 0o700 });
  const values: Record<string, string> = {};
  for (const name of missing) {
    values[name] = randomBytes(24).toString("hex");
    // The runners need RUNNER_SECRET too; the encryption key must survive for sealed secrets to open.
    await writeFile(path.join(secretsDir, name), `${values[name]}\n`, { mode: 0o600 });
  }
  const file = path.join(await mkdtemp(path.join(tmpdir(), "visionllm-secrets-")), "secrets.json");
  await writeFile(file, JSON.stringify(values), { mode: 0o600 });
  try {
    await run(["secret", "bulk", file, "--config", config]);
  } finally {
    await rm(path.dirname(file), { recursive: true, force: true });
  }
  return missing;
}

export async function deploy(options: DeployOptions): Promise<DeployReport> {
  const { run, configPath } = options;
  const log = options.log ?? console.log;
  const toml = await readFile(configPath, "utf8");
  const wanted = resourcesOf(toml);
  const created: string[] = [];
  const ids = {
    d1: await ensureD1(run, wanted.d1.name, created),
    kv: await ensureKv(run, wanted.kv.binding, created),
  };
  await ensureListed(run, "r2", wanted.r2, created);
  await ensureListed(run, "queues", wanted.queues, created);
  const updated = withIds(toml, ids);
  if (updated !== toml) await writeFile(configPath, updated);
  log(created.length ? `created ${created.join(", ")}` : "every resource exists");
  await run(["d1", "migrations", "apply", "DB", "--remote", "--config", configPath]);
  await run(["deploy", "--config", configPath]);
  const secretsSet = await ensureSecrets(run, options.secretsDir, configPath);
  if (secretsSet.length) {
    await chmod(options.secretsDir, 0o700);
    log(
      `generated ${secretsSet.join(", ")}: kept in ${options.secretsDir} (give RUNNER_SECRET to every runner)`,
    );
  }
  return { created, configChanged: updated !== toml, secretsSet };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      "dry-run": { type: "boolean", default: false },
      config: { type: "string", default: "wrangler.toml" },
      "secrets-dir": { type: "string", default: ".deploy" },
    },
  });
  const configPath = path.resolve(values.config);
  if (values["dry-run"]) {
    const wanted = resourcesOf(await readFile(configPath, "utf8"));
    console.log(
      `Would ensure: D1 ${wanted.d1.name}, KV ${wanted.kv.binding}, R2 ${wanted.r2.join(", ")}, ` +
        `queues ${wanted.queues.join(", ")}; secrets ${SECRETS.join(", ")}.`,
    );
    console.log(await checkDeploy(configPath));
    return;
  }
  await deploy({
    run: (args) => wrangler(args, { quiet: true }),
    configPath,
    secretsDir: path.resolve(values["secrets-dir"]),
  });
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().catch((error: unknown) => {
    console.error(error instanceof Error ? error.message : error);
    process.exit(1);
  });
}
