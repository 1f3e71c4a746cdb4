import { execFileSync } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { buildOpenAPIDocument } from "../shared/src/openapi";

/**
 * `npm run lint:openapi`: the document `/openapi.json` serves, as a runner with the model's limits
 * would make it, linted by Redocly's recommended-strict rules (every warning an error) (part of npm test).
 */

async function main(): Promise<void> {
  const dir = await mkdtemp(path.join(tmpdir(), "visionllm-openapi-"));
  try {
    const file = path.join(dir, "openapi.json");
    await writeFile(
      file,
      JSON.stringify(
        buildOpenAPIDocument("https://visionllm-edge.workers.dev", { max_new_tokens: 512 }),
        null,
        1,
      ),
    );
    execFileSync(
      process.execPath,
      [
        path.resolve("node_modules/@redocly/cli/bin/cli.js"),
        "lint",
        file,
        "--max-problems",
        "50",
        "--format",
        "stylish",
      ],
      {
        stdio: "inherit",
        env: { ...process.env, REDOCLY_TELEMETRY: "off", REDOCLY_SUPPRESS_UPDATE_NOTICE: "true" },
      },
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

main().catch(() => process.exit(1));
