import { randomUUID } from "node:crypto";
import { copyFile, mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { deploy, resourcesOf, type WranglerRun } from "../scripts/deploy";

/**
 * `npm run deploy` against a stand-in Cloudflare account that answers wrangler's commands the way
 * wrangler 4 prints them: the first run creates every resource and secret, the second creates
 * nothing and leaves wrangler.toml byte for byte.
 */

function fakeAccount() {
  const d1: Array<{ uuid: string; name: string }> = [];
  const kv: Array<{ id: string; title: string }> = [];
  const r2: string[] = [];
  const queues: string[] = [];
  const secrets = new Map<string, string>();
  let deployed = 0;
  const calls: string[][] = [];
  const run: WranglerRun = async (args) => {
    calls.push(args);
    const [a, b, c, d] = args;
    if (a === "d1" && b === "list") return JSON.stringify(d1);
    if (a === "d1" && b === "create" && c) {
      const uuid = randomUUID();
      d1.push({ uuid, name: c });
      return `✅ Successfully created DB '${c}'\n[[d1_databases]]\nbinding = "DB"\ndatabase_name = "${c}"\ndatabase_id = "${uuid}"\n`;
    }
    if (a === "kv" && b === "namespace" && c === "list") return JSON.stringify(kv, null, 2);
    if (a === "kv" && b === "namespace" && c === "create" && d) {
      const id = randomUUID().replaceAll("-", "");
      kv.push({ id, title: d });
      return `🌀 Creating namespace with title "${d}"\n✨ Success!\n[[kv_namespaces]]\nbinding = "${d}"\nid = "${id}"\n`;
    }
    if (a === "r2" && b === "bucket" && c === "list")
      return `Listing buckets...\n${r2.map((n) => `name:           ${n}\ncreation_date:  2026-11-30T00:00:00.000Z`).join("\n\n")}`;
    if (a === "r2" && b === "bucket" && c === "create" && d) {
      r2.push(d);
      return `Created bucket '${d}'`;
    }
    if (a === "queues" && b === "list")
      return `┌──────┬──────┐\n│ id │ name │\n${queues.map((q) => `│ ${q.length} │ ${q} │`).join("\n")}\n└──────┘`;
    if (a === "queues" && b === "create" && c) {
      queues.push(c);
      return `✅ Created queue '${c}'`;
    }
    if (a === "d1" && b === "migrations") return "No migrations to apply!";
    if (a === "deploy") {
      deployed++;
      return "Deployed visionllm-edge";
    }
    if (a === "secret" && b === "list") {
      if (!deployed) throw new Error('Worker "visionllm-edge" not found.');
      return JSON.stringify([...secrets.keys()].map((name) => ({ name, type: "secret_text" })));
    }
    if (a === "secret" && b === "bulk" && c) {
      for (const [k, v] of Object.entries(JSON.parse(await readFile(c, "utf8")) as Record<string, string>))
        secrets.set(k, v);
      return "✨ Success!";
    }
    throw new Error(`unexpected wrangler ${args.join(" ")}`);
  };
  return {
    run,
    calls,
    secrets,
    counts: () => ({ d1: d1.length, kv: kv.length, r2: r2.length, queues: queues.length, deployed }),
  };
}

describe("npm run deploy", () => {
  let dir = "";
  afterEach(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("reads every binding wrangler.toml declares", async () => {
    const wanted = resourcesOf(await readFile("wrangler.toml", "utf8"));
    expect(wanted.d1.name).toBe("visionllm");
    expect(wanted.kv.binding).toBe("CACHE");
    expect(wanted.r2).toEqual(["visionllm-blobs"]);
    expect(wanted.queues).toEqual(expect.arrayContaining(["visionllm-jobs", "visionllm-jobs-dlq"]));
  });

  it("creates what is missing once, writes the ids, and changes nothing when run again", async () => {
    dir = await mkdtemp(path.join(tmpdir(), "visionllm-deploy-test-"));
    const config = path.join(dir, "wrangler.toml");
    await copyFile("wrangler.toml", config);
    const account = fakeAccount();
    const options = {
      run: account.run,
      configPath: config,
      secretsDir: path.join(dir, ".deploy"),
      log: () => {},
    };

    const first = await deploy(options);
    const wanted = resourcesOf(await readFile("wrangler.toml", "utf8"));
    expect(first.created).toHaveLength(2 + wanted.r2.length + wanted.queues.length);
    expect(first.configChanged).toBe(true);
    expect(first.secretsSet).toEqual(["RUNNER_SECRET", "WEBHOOK_SECRETS_KEY"]);
    const written = await readFile(config, "utf8");
    expect(written).not.toContain("00000000-0000-0000-0000-000000000000");
    expect(written).not.toMatch(/id = "0{32}"/);
    // The runners get the generated RUNNER_SECRET from a file only this user can read.
    const kept = path.join(dir, ".deploy", "RUNNER_SECRET");
    expect((await stat(kept)).mode & 0o777).toBe(0o600);
    expect((await readFile(kept, "utf8")).trim()).toBe(account.secrets.get("RUNNER_SECRET"));
    // No secret value ever reaches wrangler's command line.
    for (const value of account.secrets.values()) expect(account.calls.flat().join(" ")).not.toContain(value);

    const second = await deploy(options);
    expect(second).toEqual({ created: [], configChanged: false, secretsSet: [] });
    expect(await readFile(config, "utf8")).toBe(written);
    expect(account.counts()).toEqual({
      d1: 1,
      kv: 1,
      r2: wanted.r2.length,
      queues: wanted.queues.length,
      deployed: 2,
    });
  });
});
