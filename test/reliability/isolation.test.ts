import { execFileSync } from "node:child_process";
import { readEventStream, type StreamEvent } from "@visionllm/protocol";
import { afterAll, describe, expect, it } from "vitest";
import { generateApiKey } from "../../functions/src/api-keys";
import { type Spawned, startEdge } from "../helpers/processes";
import { startFakeRunner } from "./fake-runner";
import { record } from "./tally";

/** What one API key does never shows through another's answers. */

const started: Array<{ stop: () => Promise<unknown> }> = [];
afterAll(async () => {
  for (const s of started.reverse()) await s.stop();
}, 60_000);

describe("isolation between API keys", () => {
  it("a cached answer is replayed only to the key that asked, with the replay's own id and time", async () => {
    const fake = await startFakeRunner("ok");
    started.push({ stop: async () => fake.server.close() });
    const edge: Spawned & { edge: string; apiKey: string; persist: string } = await startEdge({
      runnerUrls: fake.url,
    });
    started.push(edge);
    const other = generateApiKey();
    execFileSync(
      "node",
      ["--import", "tsx", "scripts/keys.ts", "create", "--name", "other", "--key", other],
      {
        env: { ...process.env, WRANGLER_PERSIST_TO: edge.persist },
        stdio: "ignore",
      },
    );
    const ask = async (key: string) => {
      const response = await fetch(`${edge.edge}/v1/chat`, {
        method: "POST",
        headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
        body: JSON.stringify({
          model: "visionllm-v2-nano",
          messages: [{ role: "user", content: "A private question." }],
        }),
      });
      const events: StreamEvent[] = [];
      for await (const e of readEventStream(response.body as ReadableStream<Uint8Array>)) events.push(e);
      const start = events[0];
      return { cache: response.headers.get("x-cache"), id: start?.type === "start" ? start.id : "" };
    };
    const first = await ask(edge.apiKey);
    expect(first.cache).toBe("MISS");
    await new Promise((r) => setTimeout(r, 500));
    const again = await ask(edge.apiKey);
    expect(again.cache).toBe("HIT");
    expect(again.id).not.toBe(first.id);
    const stranger = await ask(other);
    expect(stranger.cache).toBe("MISS");
    record({ suite: "isolation", cases: 3 });
  }, 120_000);
});
