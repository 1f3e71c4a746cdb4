import { readFileSync } from "node:fs";
import { renderChat, type UnnumberedEvent } from "@visionllm/protocol";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createBackend } from "../src/backend/onnx";
import { loadBundle } from "../src/bundle/load";
import type { RoutingEntry } from "../src/bundle/manifest";
import { generate } from "../src/model/generate";
import {
  type DecoderLink,
  defaultLinks,
  type Group,
  type LinkContext,
  LinkRegistry,
} from "../src/model/links";
import { VisionLLM } from "../src/model/visionllm";

/**
 * The super link's registry: each routing task's decoder is one module; the session holds a person's
 * group until its keypoint groups arrive; and a decoder the loop has never heard of runs when it is
 * registered, with its queries' states, and no change to the generation loop.
 */

type Ran = { task: string; head: number; attached: number[] };

function recording(ran: Ran[], task: string, extra: Partial<DecoderLink> = {}): DecoderLink {
  return {
    task,
    ...extra,
    async *run(head, attached) {
      ran.push({ task, head: head.index, attached: attached.map((g) => g.index) });
      yield { type: "text-delta", delta: `<${task}>` };
    },
  };
}

function group(index: number, task: string): Group {
  const entry: RoutingEntry = { table: "perception_queries", link: "superlink_perception", task };
  return { index, routing: `[${task}]`, entry, label: "", states: new Float32Array(0) };
}

async function drain(events: AsyncGenerator<UnnumberedEvent>): Promise<UnnumberedEvent[]> {
  const out: UnnumberedEvent[] = [];
  for await (const event of events) out.push(event);
  return out;
}

describe("link session", () => {
  const ctx = { image: undefined, seed: 0, signal: undefined } as unknown as LinkContext;
  const setup = () => {
    const ran: Ran[] = [];
    const timed: string[] = [];
    const registry = new LinkRegistry([
      recording(ran, "det", { waits: true }),
      recording(ran, "kp", { attaches: { to: ["det"], whole: (n) => n === 2 } }),
      recording(ran, "gen"),
    ]);
    return { ran, timed, session: registry.session(ctx, (task) => timed.push(task)) };
  };

  it("runs the attaching link once its groups are whole, not the person's own decoder", async () => {
    const { ran, timed, session } = setup();
    await drain(session.route(group(0, "det")));
    await drain(session.route(group(1, "kp")));
    expect(ran).toEqual([]);
    await drain(session.route(group(2, "kp")));
    expect(ran).toEqual([{ task: "kp", head: 0, attached: [1, 2] }]);
    expect(await drain(session.flush())).toEqual([]);
    expect(timed).toEqual(["kp"]);
  });

  it("runs a waiting group with too few attachments as itself, at the next routing token", async () => {
    const { ran, session } = setup();
    await drain(session.route(group(0, "det")));
    await drain(session.route(group(1, "kp")));
    const events = await drain(session.route(group(2, "gen")));
    expect(ran).toEqual([
      { task: "det", head: 0, attached: [] },
      { task: "gen", head: 2, attached: [] },
    ]);
    expect(events.map((e) => (e.type === "text-delta" ? e.delta : e.type))).toEqual(["<det>", "<gen>"]);
  });

  it("holds the last waiting group until the answer ends, and ignores attachments with no head", async () => {
    const { ran, session } = setup();
    await drain(session.route(group(0, "kp")));
    await drain(session.route(group(1, "det")));
    expect(ran).toEqual([]);
    await drain(session.flush());
    expect(ran).toEqual([{ task: "det", head: 1, attached: [] }]);
  });

  it("reports manifest tasks that no link serves", () => {
    expect(defaultLinks.missing(["detection", "pose", "editing"])).toEqual([]);
    expect(defaultLinks.missing(["detection", "counting"])).toEqual(["counting"]);
    expect(defaultLinks.with(recording([], "counting")).missing(["counting"])).toEqual([]);
  });
});

describe("a new decoder registered as one module", () => {
  let model: VisionLLM;

  beforeAll(async () => {
    // The bundle's [DET] token routed to a task the runner has never heard of: "counting".
    const bundle = await loadBundle("model/bundle");
    const entry = bundle.manifest.routing["[DET]"];
    if (!entry) throw new Error("the bundle has no [DET] routing entry");
    bundle.manifest.routing["[DET]"] = { ...entry, task: "counting" };
    model = await VisionLLM.load(bundle, await createBackend({ provider: "wasm" }));
  });
  afterAll(async () => {
    await model?.release();
  });

  const ask = (links?: LinkRegistry) => {
    const m = model.manifest;
    const prompt = renderChat(m.chat_template, m.system_prompt, [
      { role: "user", content: `${m.special_tokens.image}\nDetect every circle and person.` },
    ]);
    const images = [{ bytes: new Uint8Array(readFileSync("test/fixtures/scene-detect.png")) }];
    const sampling = { max_tokens: 40, temperature: 0, top_p: 1, top_k: 0, seed: 1, stop: [] };
    return drain(
      generate(model, {
        prompt,
        images,
        regions: [],
        sampling,
        maxImagePixels: 1 << 20,
        ...(links ? { links } : {}),
      }),
    );
  };

  it("receives its queries' final states from the loop and streams what its graph made", async () => {
    const calls: Float32Array[] = [];
    // The stand-in graph: the mean of each query's state, as the decoder's "output".
    const standInGraph = (states: Float32Array) => states.reduce((a, b) => a + b, 0) / states.length;
    const counting: DecoderLink = {
      task: "counting",
      async *run(head: Group) {
        calls.push(head.states);
        const mean = standInGraph(head.states);
        yield {
          type: "detections",
          task: "detection",
          label: `count:${mean.toFixed(3)}`,
          group: head.index,
          items: [],
        };
      },
    };
    const before = await ask();
    expect(before.filter((e) => e.type === "detections")).toEqual([]);
    const after = await ask(defaultLinks.with(counting));
    const entry = model.manifest.routing["[DET]"];
    if (!entry) throw new Error("no [DET] entry");
    expect(calls.length).toBeGreaterThan(0);
    for (const states of calls) expect(states.length).toBe(model.tableSize(entry.table) * model.dim);
    const labels = after.flatMap((e) => (e.type === "detections" ? [e.label] : []));
    expect(labels).toHaveLength(calls.length);
    expect(labels.every((l) => l.startsWith("count:"))).toBe(true);
    const text = (events: UnnumberedEvent[]) =>
      events.map((e) => (e.type === "text-delta" ? e.delta : "")).join("");
    expect(text(after)).toBe(text(before));
  });
});
