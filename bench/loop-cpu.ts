import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { renderChat } from "@visionllm/protocol";
import { createBackend, type Session } from "../gpu-runner/src/backend/onnx";
import { loadBundle } from "../gpu-runner/src/bundle/load";
import { ImageFeatureCache } from "../gpu-runner/src/engine/feature-cache";
import { generate } from "../gpu-runner/src/model/generate";
import { VisionLLM } from "../gpu-runner/src/model/visionllm";
import { bareDecodeFeeds } from "./bare-decode";

/**
 * `npm run bench:loop-cpu`: where the runner's decode loop spends its time beside the graph, in CPU
 * time per token (process.cpuUsage) rather than wall time. Per round: the runner's whole loop (greedy,
 * no decoder runs), the part of it inside the batched LLM step, the part inside session.run, and the
 * bare llm_decode loop over the same cache capacity. wasm, one thread (all work on this thread, so
 * the process's CPU time is the loop's). The split inside one runner measurement holds on a busy
 * machine; the bare loop's figure does not (0.93 to 1.69 ms a token beside a training run), so
 * compare runner and bare on an idle machine, as `npm run bench` does in wall time.
 */

const { values } = parseArgs({
  options: {
    bundle: { type: "string", default: "model/bundle" },
    rounds: { type: "string", default: "6" },
    tokens: { type: "string", default: "64" },
  },
});
const tokens = Number(values.tokens);

function cpuMs(): number {
  const usage = process.cpuUsage();
  return (usage.user + usage.system) / 1000;
}

/** Adds each run's CPU time to `spent` under the session's name. */
function metered(session: Session, name: string, spent: Map<string, number>): Session {
  const run = session.run.bind(session);
  return {
    ...session,
    run: async (feeds) => {
      const t0 = cpuMs();
      const out = await run(feeds);
      spent.set(name, (spent.get(name) ?? 0) + cpuMs() - t0);
      return out;
    },
  };
}

const bundle = await loadBundle(values.bundle);
const backend = await createBackend({ provider: "wasm", threads: 1 });
const spent = new Map<string, number>();
const createSession = backend.createSession.bind(backend);
backend.createSession = async (graph, name) => metered(await createSession(graph, name), name, spent);
const model = await VisionLLM.load(bundle, backend);
let inStep = 0;
const step = model.llmBatchStep.bind(model);
model.llmBatchStep = async (items) => {
  const t0 = cpuMs();
  const out = await step(items);
  inStep += cpuMs() - t0;
  return out;
};

const m = bundle.manifest;
const prompt = renderChat(m.chat_template, m.system_prompt, [
  { role: "user", content: `${m.special_tokens.image}\nDescribe the image.` },
]);
const scene = new Uint8Array(readFileSync("test/fixtures/scene-detect.png"));
const featureCache = new ImageFeatureCache(64 << 20);

/** The runner's loop after its first token: CPU ms per token, whole and in its parts. */
async function runnerLoop(seed: number) {
  let count = 0;
  let start = { total: 0, step: 0, run: 0 };
  const now = () => ({ total: cpuMs(), step: inStep, run: spent.get("llm_decode") ?? 0 });
  for await (const _ of generate(model, {
    prompt,
    images: [{ bytes: scene, sha256: "bench-scene" }],
    regions: [],
    featureCache,
    maxImagePixels: 1 << 24,
    sampling: { max_tokens: tokens, min_tokens: tokens, temperature: 0, top_p: 1, top_k: 0, seed, stop: [] },
    onToken: () => {
      count++;
      if (count === 1) start = now();
    },
  })) {
    // consume
  }
  const end = now();
  const per = (k: "total" | "step" | "run") => (end[k] - start[k]) / (count - 1);
  return { total: per("total"), step: per("step"), run: per("run") };
}

/** The llm_decode session alone with fixed feeds of the runner's cache capacity: CPU ms per token. */
async function bareLoop(): Promise<() => Promise<number>> {
  const graph = bundle.graphs.llm_decode;
  if (!graph) throw new Error("the bundle has no llm_decode graph");
  const session = await createSession(graph, "llm_decode (bare)");
  const positions = model.tokenizer.encode(
    prompt.replace(
      m.special_tokens.image,
      m.special_tokens.image_start +
        m.special_tokens.image_patch.repeat(m.image_tokens) +
        m.special_tokens.image_end,
    ),
  ).length;
  const capacity = Math.ceil((positions + tokens) / 64) * 64;
  const feeds = bareDecodeFeeds(model, model.tableRows("embed_tokens", [0]), positions, capacity);
  await session.run(feeds);
  return async () => {
    const t0 = cpuMs();
    for (let i = 0; i < tokens; i++) await session.run(feeds);
    return (cpuMs() - t0) / tokens;
  };
}

const bare = await bareLoop();
for (let i = 0; i < 2; i++) await runnerLoop(900 + i); // warm-up: V8 optimises the hot paths
console.log(
  "CPU ms per token: runner loop (inside the LLM step; inside session.run) | bare loop | bare/runner",
);
for (let round = 0; round < Number(values.rounds); round++) {
  const r = await runnerLoop(round);
  const b = await bare();
  console.log(
    `${r.total.toFixed(3)} (${r.step.toFixed(3)}; ${r.run.toFixed(3)}) | ${b.toFixed(3)} | x${(b / r.total).toFixed(2)}`,
  );
}
process.exit(0);
