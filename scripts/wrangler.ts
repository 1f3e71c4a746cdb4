import { spawn } from "node:child_process";
import path from "node:path";

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
