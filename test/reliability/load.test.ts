import { readEventStream } from "@visionllm/protocol";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Spawned, startStack } from "../helpers/processes";
import { metric } from "../helpers/runner-client";
import { record } from "./tally";

/** Many concurrent streaming clients through the edge for a while: bounded answers, well-formed streams, bounded memory. */

// npm test runs a short version; npm run test:reliability (RELIABILITY_FULL=1) the full one.
const FULL = process.env.RELIABILITY_FULL === "1";
const CLIENTS = Number(process.env.RELIABILITY_CLIENTS ?? (FULL ? 64 : 16));
const SECONDS = Number(process.env.RELIABILITY_SECONDS ?? (FULL ? 60 : 10));
const bundle = process.env.TEST_BUNDLE ?? "model/bundle";

describe("load", () => {
  let stack: Spawned & { edge: string; runner: string; apiKey: string };
  beforeAll(async () => {
    stack = await startStack({ RUNNER_BUNDLE: bundle });
  }, 200_000);
  afterAll(async () => {
    await stack?.stop();
  }, 30_000);

  it(
    `${CLIENTS} streaming clients for ${SECONDS} s: only 200, 429 and 503; streams well formed; runner memory bounded`,
    async () => {
      const statuses = new Map<number, number>();
      const malformed: string[] = [];
      let streams = 0;
      const memory: number[] = [await metric(stack.runner, "process_resident_memory_bytes")];
      const until = Date.now() + SECONDS * 1000;
      const sampler = setInterval(() => {
        void metric(stack.runner, "process_resident_memory_bytes").then((m) => memory.push(m));
      }, 1000);
      const client = async (i: number) => {
        while (Date.now() < until) {
          const response = await fetch(`${stack.edge}/v1/chat`, {
            method: "POST",
            headers: { authorization: `Bearer ${stack.apiKey}`, "content-type": "application/json" },
            body: JSON.stringify({
              model: "visionllm-v2-nano",
              max_tokens: 16,
              temperature: 1,
              seed: i,
              messages: [{ role: "user", content: "Hello!" }],
            }),
          });
          statuses.set(response.status, (statuses.get(response.status) ?? 0) + 1);
          if (response.status !== 200 || !response.body) {
            await response.text();
            await new Promise((r) => setTimeout(r, Number(response.headers.get("retry-after") ?? 1) * 200));
            continue;
          }
          const types: string[] = [];
          let ids = true;
          for await (const event of readEventStream(response.body)) {
            ids &&= event.sequence_number === types.length;
            types.push(event.type);
          }
          streams++;
          if (types[0] !== "start" || types.at(-1) !== "done" || !ids) malformed.push(types.join(","));
        }
      };
      await Promise.all(Array.from({ length: CLIENTS }, (_, i) => client(i)));
      clearInterval(sampler);
      const counts = Object.fromEntries(statuses);
      console.log(
        "load statuses",
        counts,
        "streams",
        streams,
        "rss MB",
        memory.map((m) => Math.round(m / 1e6)).join(","),
      );
      record({
        suite: "load",
        cases: [...statuses.values()].reduce((a, n) => a + n, 0),
        fiveXX: [...statuses].filter(([s]) => s >= 500 && s !== 503).reduce((a, [, n]) => a + n, 0),
        hanging: malformed.filter((types) => !types.endsWith("done")).length,
      });
      expect([...statuses.keys()].every((s) => s === 200 || s === 429 || s === 503)).toBe(true);
      expect(statuses.get(200) ?? 0).toBeGreaterThan(0);
      expect(malformed).toEqual([]);
      const baseline = memory[0] ?? 0;
      expect(Math.max(...memory)).toBeLessThan(baseline + 512 * 1024 * 1024);
    },
    (SECONDS + 120) * 1000,
  );
});
