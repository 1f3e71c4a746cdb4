import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { generateApiKey, isApiKeyShape, newWebhookSecret } from "../functions/src/api-keys";
import { buildWeb } from "./build-web";
import { edgeArgs, persistDir, persistentLocalSecret, seedLocalState, writeSecretsFile } from "./wrangler";

/**
 * `npm start`: the whole stack locally with the bundled model.
 * - the GPU runner (RUNNER_PORT, default 8788) with model/bundle (RUNNER_BUNDLE to change it);
 * - the edge in workerd (scripts/edge.ts; PORT, default 8787) with local D1, KV, Durable Objects, R2,
 *   Queues and the web chat's assets;
 * - D1 migrations applied, a local API key seeded (DEV_API_KEY, or a new one printed here).
 * Both are supervised: either one exiting unasked is restarted with backoff. Ctrl-C stops both.
 */

const port = Number(process.env.PORT ?? 8787);
const runnerPort = Number(process.env.RUNNER_PORT ?? 8788);
const runnerSecret = process.env.RUNNER_SECRET ?? randomBytes(24).toString("hex");

const apiKey = process.env.DEV_API_KEY ?? generateApiKey();
if (!isApiKeyShape(apiKey)) {
  // The edge would refuse it on every request; say so now rather than with a 401 later.
  console.error(
    `DEV_API_KEY must look like vl_ followed by 40 lowercase hex characters, e.g. ${generateApiKey()}; ` +
      "or leave it unset and a new key is printed.",
  );
  process.exit(2);
}
const webhookSecret = process.env.DEV_WEBHOOK_SECRET ?? newWebhookSecret();
const persist = persistDir();
const children = new Map<string, ChildProcess>();

/** Backoff after an unexpected exit: 1 s doubling to 30 s; a process that stayed up a minute starts over. */
const RESTART_MIN_MS = 1000;
const RESTART_MAX_MS = 30_000;
const STABLE_MS = 60_000;

/**
 * Runs a child and restarts it whenever it exits unasked (a crash, kill -9), with backoff, so one
 * process dying never takes the stack down: while the runner is away the edge answers 503 with
 * Retry-After, and streams cut by the crash end with an error event.
 */
function supervise(name: string, args: string[], env: NodeJS.ProcessEnv, delayMs = RESTART_MIN_MS): void {
  const startedAt = Date.now();
  const child = spawn(process.execPath, args, { env, stdio: ["ignore", "pipe", "pipe"] });
  const prefix = (chunk: Buffer) =>
    chunk
      .toString()
      .split("\n")
      .filter((l) => l.trim())
      .map((l) => `[${name}] ${l}\n`)
      .join("");
  child.stdout?.on("data", (d: Buffer) => process.stdout.write(prefix(d)));
  child.stderr?.on("data", (d: Buffer) => process.stderr.write(prefix(d)));
  child.on("exit", (code, signal) => {
    if (stopping) return;
    const next = Date.now() - startedAt > STABLE_MS ? RESTART_MIN_MS : delayMs;
    console.error(`[${name}] exited (${code ?? signal}); restarting in ${next / 1000} s.`);
    setTimeout(() => {
      if (!stopping) supervise(name, args, env, Math.min(RESTART_MAX_MS, next * 2));
    }, next);
  });
  children.set(name, child);
}

async function waitFor(url: string, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    try {
      if ((await fetch(url)).ok) return;
    } catch {
      // not up yet
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`${url} did not come up within ${timeoutMs / 1000} s`);
}

let stopping = false;
async function stop(code: number): Promise<void> {
  if (stopping) return;
  stopping = true;
  await Promise.all(
    [...children.values()].map(
      (child) =>
        new Promise<void>((resolve) => {
          if (child.exitCode !== null || child.signalCode !== null) return resolve();
          child.once("exit", () => resolve());
          child.kill("SIGINT");
          setTimeout(() => child.kill("SIGKILL"), 10_000).unref();
        }),
    ),
  );
  process.exit(code);
}

process.on("SIGINT", () => void stop(0));
process.on("SIGTERM", () => void stop(0));

async function main(): Promise<void> {
  await buildWeb();
  supervise("runner", ["--import", "tsx", "gpu-runner/src/server/main.ts"], {
    ...process.env,
    RUNNER_PORT: String(runnerPort),
    RUNNER_SECRET: runnerSecret,
  });
  // Seals webhook secrets in local D1: kept in the state folder, so secrets stored earlier still open.
  const webhookSecretsKey =
    process.env.WEBHOOK_SECRETS_KEY ?? (await persistentLocalSecret(persist, "webhook-secrets.key"));
  await seedLocalState({ persist, apiKey, webhookSecret, webhookSecretsKey });
  supervise(
    "edge",
    edgeArgs({
      port,
      persist,
      secretsFile: await writeSecretsFile(persist, {
        RUNNER_SECRET: runnerSecret,
        WEBHOOK_SECRETS_KEY: webhookSecretsKey,
      }),
      vars: {
        RUNNER_URLS: `http://127.0.0.1:${runnerPort}`,
        ALLOW_LOOPBACK_URLS: "true",
        WEBHOOK_RETRY_SCALE: process.env.WEBHOOK_RETRY_SCALE ?? "0.2",
        JOB_RETRY_BASE_S: process.env.JOB_RETRY_BASE_S ?? "5",
        // The development key's limits (wrangler.toml's defaults unless given), e.g. for api_eval.
        ...Object.fromEntries(
          ["DEFAULT_RPM", "DEFAULT_MAX_CONCURRENT"].flatMap((k) =>
            process.env[k] ? [[k, process.env[k]]] : [],
          ),
        ),
      },
    }),
    process.env,
  );
  await Promise.all([
    waitFor(`http://127.0.0.1:${runnerPort}/readyz`, 120_000),
    waitFor(`http://127.0.0.1:${port}/healthz`, 120_000),
  ]);
  console.log(
    [
      "",
      "VisionLLM stack is up:",
      `  web chat     http://127.0.0.1:${port}/`,
      `  API          http://127.0.0.1:${port}/v1/chat/completions  (OpenAI-compatible)`,
      `               http://127.0.0.1:${port}/v1/chat               (native event stream)`,
      `  OpenAPI      http://127.0.0.1:${port}/openapi.json`,
      `  runner       http://127.0.0.1:${runnerPort}/readyz  /metrics`,
      `  API key      ${apiKey}${process.env.DEV_API_KEY ? " (from DEV_API_KEY)" : ""}`,
      `  webhooks     signed with ${webhookSecret}${process.env.DEV_WEBHOOK_SECRET ? " (from DEV_WEBHOOK_SECRET)" : ""}; loopback URLs allowed locally`,
      "Ctrl-C stops both.",
      "",
    ].join("\n"),
  );
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? error.message : error);
  void stop(1);
});
