import { parseArgs } from "node:util";
import { generateApiKey, insertKeySql } from "../functions/src/api-keys";
import { persistDir, wrangler } from "./wrangler";

/**
 * API keys in D1, locally or on the deployed database (--remote):
 *   npm run keys -- create --name alice [--rpm 120] [--concurrency 8] [--remote]
 *   npm run keys -- list [--remote]
 *   npm run keys -- revoke --id <key id> [--remote]
 */

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    name: { type: "string" },
    id: { type: "string" },
    rpm: { type: "string" },
    concurrency: { type: "string" },
    remote: { type: "boolean", default: false },
    key: { type: "string" },
  },
});
const target = values.remote ? ["--remote"] : ["--local", "--persist-to", persistDir()];

async function execute(sql: string): Promise<unknown[]> {
  const out = await wrangler(["d1", "execute", "DB", ...target, "--json", "--command", sql], { quiet: true });
  const parsed = JSON.parse(out) as Array<{ results?: unknown[] }>;
  return parsed.flatMap((r) => r.results ?? []);
}

async function main(): Promise<void> {
  const command = positionals[0];
  // Locally, migrations are applied first (idempotent) so the command works on a fresh checkout;
  // a deployed database is migrated by the deploy, not by this command.
  if (!values.remote) await wrangler(["d1", "migrations", "apply", "DB", ...target], { quiet: true });
  if (command === "create") {
    if (!values.name) throw new Error("create needs --name");
    const key = values.key ?? generateApiKey();
    const { sql, id } = await insertKeySql(key, values.name);
    await execute(sql);
    if (values.rpm || values.concurrency) {
      await execute(
        `UPDATE api_keys SET requests_per_minute = ${Number(values.rpm) || "NULL"}, max_concurrent = ${Number(values.concurrency) || "NULL"} WHERE id = '${id}'`,
      );
    }
    console.log(`created key ${id} (${values.name}): ${key}\nStore it now: only its hash is kept.`);
  } else if (command === "list") {
    const rows = await execute(
      "SELECT id, name, key_prefix, requests_per_minute, max_concurrent, created_at, revoked_at FROM api_keys ORDER BY created_at",
    );
    console.table(rows);
  } else if (command === "revoke") {
    if (!values.id) throw new Error("revoke needs --id (see list)");
    await execute(
      `UPDATE api_keys SET revoked_at = ${Date.now()} WHERE id = '${values.id.replaceAll("'", "")}'`,
    );
    console.log(`revoked ${values.id}`);
  } else {
    console.error("usage: npm run keys -- create --name NAME | list | revoke --id ID   [--remote]");
    process.exit(2);
  }
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? error.message : error);
  process.exit(1);
});
