import { appendFileSync, existsSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

/**
 * The reliability suite's summary: each test records what it tried, and the global teardown adds it
 * up (cases tried, 5xx seen, connections left hanging, stream slots still held after a disconnect).
 * Test files run in worker processes, so records go through a file the global setup names.
 */

export interface Tally {
  suite: string;
  cases: number;
  fiveXX?: number;
  hanging?: number;
  /** Milliseconds until a disconnected client's stream slot was free again. */
  slotReleaseMs?: number[];
}

const ENV = "VISIONLLM_RELIABILITY_TALLY";

export function record(tally: Tally): void {
  const file = process.env[ENV];
  if (file) appendFileSync(file, `${JSON.stringify(tally)}\n`);
}

export function summarize(lines: string[]): string {
  const all = lines.filter((l) => l.trim()).map((l) => JSON.parse(l) as Tally);
  const sum = (f: (t: Tally) => number) => all.reduce((a, t) => a + f(t), 0);
  const releases = all.flatMap((t) => t.slotReleaseMs ?? []);
  return [
    `reliability summary: ${sum((t) => t.cases)} cases tried in ${new Set(all.map((t) => t.suite)).size} suites`,
    `5xx seen: ${sum((t) => t.fiveXX ?? 0)}`,
    `connections left hanging: ${sum((t) => t.hanging ?? 0)}`,
    releases.length
      ? `slots held after disconnect: released within ${Math.max(...releases)} ms (${releases.length} checks, bound 5000 ms)`
      : "slots held after disconnect: not measured in this run",
  ].join("; ");
}

/** vitest globalSetup: names the file, then prints the summary when the run ends. */
export default function setup(): () => void {
  const file = path.join(tmpdir(), `visionllm-reliability-${process.pid}.jsonl`);
  rmSync(file, { force: true });
  process.env[ENV] = file;
  return () => {
    if (!existsSync(file)) return;
    console.log(summarize(readFileSync(file, "utf8").split("\n")));
    rmSync(file, { force: true });
  };
}
