import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmod, mkdir, readFile, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { sha256Hex } from "../functions/src/api-keys";
import { seal } from "../functions/src/secret-box";

/** Runs wrangler's own entry with node (so signals reach wrangler itself, not an npx wrapper). */
export const WRANGLER = path.resolve("node_modules/wrangler/bin/wrangler.js");

export function wranglerEnv(): NodeJS.ProcessEnv {
  return {
    ...process.env,
    CLOUDFLARE_CF_FETCH_ENABLED: "false",
    WRANGLER_SEND_METRICS: "false",
    NO_COLOR: "1",
  };
}

export async function wrangler(args: string[], options: { quiet?: boolean } = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [WRANGLER, ...args], {
      env: wranglerEnv(),
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    let err = "";
    child.stdout.on("data", (d: Buffer) => {
      out += d.toString();
    });
    child.stderr.on("data", (d: Buffer) => {
      err += d.toString();
    });
    child.on("exit", (code) => {
      if (code === 0) resolve(out);
      else reject(new Error(`wrangler ${args.join(" ")} failed (${code}):\n${err || out}`));
    });
    if (!options.quiet) child.stderr.pipe(process.stderr);
  });
}

/** Local D1 state lives here unless WRANGLER_PERSIST_TO says otherwise. */
export const persistDir = () => process.env.WRANGLER_PERSIST_TO ?? ".wrangler/state";

/** A random secret kept in the local state folder (mode 0600), the same across restarts, so what the
 * edge sealed with it yesterday still opens today. */
export async function persistentLocalSecret(persist: string, name: string): Promise<string> {
  const file = path.join(persist, name);
  const existing = await readFile(file, "utf8").catch(() => "");
  if (existing.trim()) return existing.trim();
  await mkdir(persist, { recursive: true });
  const secret = randomBytes(24).toString("hex");
  await writeFile(file, secret, { mode: 0o600 });
  return secret;
}

/** Local D1: migrations applied, the development key and its webhook secret stored. */
export async function seedLocalState(options: {
  persist: string;
  apiKey: string;
  webhookSecret: string;
  /** The edge's WEBHOOK_SECRETS_KEY: the stored secret is sealed with it, as the edge stores its own. */
  webhookSecretsKey: string;
}): Promise<void> {
  const { persist, apiKey, webhookSecret, webhookSecretsKey } = options;
  await wrangler(["d1", "migrations", "apply", "DB", "--local", "--persist-to", persist], { quiet: true });
  const hash = await sha256Hex(apiKey);
  const id = `dev-${hash.slice(0, 12)}`;
  // The statements carry the webhook secret: they go in a file only this user can read, not on
  // wrangler's command line.
  const sql = path.join(persist, "seed.sql");
  await writeFile(
    sql,
    `INSERT OR IGNORE INTO api_keys (id, name, key_hash, key_prefix, created_at) VALUES ('${id}', 'local development', '${hash}', '${apiKey.slice(0, 7)}', ${Date.now()});\n` +
      `INSERT OR REPLACE INTO webhook_secrets (key_id, secret, created_at) VALUES ('${id}', '${await seal(webhookSecretsKey, webhookSecret, id)}', ${Date.now()});\n`,
    { mode: 0o600 },
  );
  try {
    await wrangler(["d1", "execute", "DB", "--local", "--persist-to", persist, "--file", sql], {
      quiet: true,
    });
  } finally {
    await rm(sql, { force: true });
  }
}

/**
 * Secrets reach the edge in a file only this user can read, never on its command line, where `ps`
 * shows them to every local user.
 */
export async function writeSecretsFile(dir: string, secrets: Record<string, string>): Promise<string> {
  for (const [key, value] of Object.entries(secrets))
    if (!/^[A-Za-z0-9_.:+/=-]*$/.test(value))
      throw new Error(`${key} must be a single line of plain characters`);
  const file = path.join(dir, "secrets.env");
  await writeFile(
    file,
    Object.entries(secrets)
      .map(([k, v]) => `${k}=${v}\n`)
      .join(""),
    { mode: 0o600 },
  );
  await chmod(file, 0o600);
  return file;
}

export interface EdgeOptions {
  port: number;
  /** Local state: the same layout as `wrangler dev --persist-to`. */
  persist: string;
  /** Plain variables over wrangler.toml's [vars]. */
  vars: Record<string, string>;
  /** A file of KEY=VALUE lines (mode 0600): secrets never travel on a command line. */
  secretsFile?: string | undefined;
}

/** One `KEY=VALUE` pair (a secrets file's line, or `--var`'s value for the local edge). */
export function keyValue(text: string): [string, string] {
  const at = text.indexOf("=");
  if (at <= 0) throw new Error("Expected KEY=VALUE pairs (a secrets file line, or --var).");
  return [text.slice(0, at), text.slice(at + 1)];
}

/** `KEY=VALUE` lines, as `writeSecretsFile` writes them. */
export function parseSecrets(text: string): Record<string, string> {
  return Object.fromEntries(
    text
      .split("\n")
      .filter((line) => line.trim() !== "")
      .map(keyValue),
  );
}

/**
 * The command line that runs the local edge (scripts/edge.ts), for a supervisor (`npm start`) or a
 * test. It lives here, apart from edge.ts: importing wrangler's and Miniflare's modules installs
 * signal handlers that exit on SIGINT, which would cut `npm start`'s own shutdown of its children.
 */
export function edgeArgs(options: EdgeOptions): string[] {
  return [
    "--import",
    "tsx",
    path.resolve("scripts/edge.ts"),
    "--port",
    String(options.port),
    "--persist",
    options.persist,
    ...Object.entries(options.vars).flatMap(([k, v]) => ["--var", `${k}=${v}`]),
    ...(options.secretsFile ? ["--secrets-file", options.secretsFile] : []),
  ];
}
