import { type ChildProcess, spawn } from "node:child_process";
import { createServer } from "node:net";

/** Spawning the project's real processes for end-to-end tests, and waiting for them. */

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => resolve(port));
    });
    server.on("error", reject);
  });
}

export interface Spawned {
  process: ChildProcess;
  output: () => string;
  stop: (signal?: NodeJS.Signals) => Promise<number | null>;
  exited: Promise<number | null>;
}

export function spawnProcess(command: string, args: string[], env: Record<string, string>): Spawned {
  const child = spawn(command, args, { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let log = "";
  child.stdout?.on("data", (d: Buffer) => {
    log += d.toString();
  });
  child.stderr?.on("data", (d: Buffer) => {
    log += d.toString();
  });
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  return {
    process: child,
    output: () => log,
    exited,
    stop: async (signal = "SIGTERM") => {
      if (child.exitCode === null) child.kill(signal);
      return exited;
    },
  };
}

export async function waitFor(url: string, timeoutMs: number, spawned?: Spawned): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    if (spawned && spawned.process.exitCode !== null) {
      throw new Error(`process exited early:\n${spawned.output()}`);
    }
    try {
      const response = await fetch(url);
      if (response.ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`${url} not ready after ${timeoutMs} ms\n${spawned?.output() ?? ""}`);
}

export const RUNNER_SECRET_FOR_TESTS = "test-runner-secret-0123456789";
const WEBHOOK_SECRETS_KEY_FOR_TESTS = "test-webhook-secrets-key-0123456789";

export async function startRunner(env: Record<string, string> = {}): Promise<Spawned & { url: string }> {
  const port = env.RUNNER_PORT ? Number(env.RUNNER_PORT) : await freePort();
  const spawned = spawnProcess("node", ["--import", "tsx", "gpu-runner/src/server/main.ts"], {
    RUNNER_PORT: String(port),
    RUNNER_SECRET: RUNNER_SECRET_FOR_TESTS,
    LOG_LEVEL: "warn",
    ...env,
  });
  const url = `http://127.0.0.1:${port}`;
  await waitFor(`${url}/readyz`, 60_000, spawned);
  return { ...spawned, url };
}

export const DEV_KEY_FOR_TESTS = "vl_00112233445566778899aabbccddeeff00112233";

/** The whole stack exactly as `npm start` runs it, on free ports with a throwaway local state. */
export async function startStack(
  env: Record<string, string> = {},
): Promise<Spawned & { edge: string; runner: string; apiKey: string }> {
  const { mkdtemp } = await import("node:fs/promises");
  const { tmpdir } = await import("node:os");
  const path = await import("node:path");
  const port = await freePort();
  const runnerPort = await freePort();
  const persist = await mkdtemp(path.join(tmpdir(), "visionllm-state-"));
  const spawned = spawnProcess("node", ["--import", "tsx", "scripts/start.ts"], {
    PORT: String(port),
    RUNNER_PORT: String(runnerPort),
    WRANGLER_PERSIST_TO: persist,
    DEV_API_KEY: DEV_KEY_FOR_TESTS,
    LOG_LEVEL: "warn",
    ...env,
  });
  const until = Date.now() + 180_000;
  while (!spawned.output().includes("VisionLLM stack is up")) {
    if (spawned.process.exitCode !== null) throw new Error(`npm start exited:\n${spawned.output()}`);
    if (Date.now() > until) throw new Error(`npm start did not come up:\n${spawned.output()}`);
    await new Promise((r) => setTimeout(r, 250));
  }
  return {
    ...spawned,
    stop: (signal: NodeJS.Signals = "SIGINT") => spawned.stop(signal),
    edge: `http://127.0.0.1:${port}`,
    runner: `http://127.0.0.1:${runnerPort}`,
    apiKey: DEV_KEY_FOR_TESTS,
  };
}

/** Only the edge (scripts/edge.ts, as `npm start` runs it), pointed at the given runners: for fault
 * tests with fake runners. */
export async function startEdge(options: {
  runnerUrls: string;
  runnerSecret?: string;
  vars?: Record<string, string>;
}): Promise<Spawned & { edge: string; apiKey: string; persist: string }> {
  const { mkdtemp } = await import("node:fs/promises");
  const { tmpdir } = await import("node:os");
  const path = await import("node:path");
  const { edgeArgs, seedLocalState, writeSecretsFile } = await import("../../scripts/wrangler");
  const port = await freePort();
  const persist = await mkdtemp(path.join(tmpdir(), "visionllm-edge-"));
  await seedLocalState({
    persist,
    apiKey: DEV_KEY_FOR_TESTS,
    webhookSecret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    webhookSecretsKey: WEBHOOK_SECRETS_KEY_FOR_TESTS,
  });
  const spawned = spawnProcess(
    "node",
    edgeArgs({
      port,
      persist,
      secretsFile: await writeSecretsFile(persist, {
        RUNNER_SECRET: options.runnerSecret ?? RUNNER_SECRET_FOR_TESTS,
        WEBHOOK_SECRETS_KEY: WEBHOOK_SECRETS_KEY_FOR_TESTS,
      }),
      vars: {
        RUNNER_URLS: options.runnerUrls,
        ALLOW_LOOPBACK_URLS: "true",
        ...options.vars,
      },
    }),
    {},
  );
  const edge = `http://127.0.0.1:${port}`;
  await waitFor(`${edge}/healthz`, 120_000, spawned);
  return {
    ...spawned,
    stop: (signal: NodeJS.Signals = "SIGINT") => spawned.stop(signal),
    edge,
    apiKey: DEV_KEY_FOR_TESTS,
    persist,
  };
}
