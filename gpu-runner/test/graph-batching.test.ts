import { readFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { createBackend, float32, type HostTensor, int64 } from "../src/backend/onnx";
import { loadBundle } from "../src/bundle/load";
import type { AnyGraphName } from "../src/bundle/manifest";
import { VisionLLM } from "../src/model/visionllm";

/**
 * Runs of one graph that wait in the queue together run as one batch. For every graph but the LLM,
 * two concurrent calls on different inputs must be merged into one run and give each caller what
 * its call gives alone: this also proves the exported graphs keep their rows independent.
 */

const golden = z
  .object({
    graphs: z.record(
      z.string(),
      z.object({
        inputs: z.record(
          z.string(),
          z.object({ file: z.string(), shape: z.array(z.number()), dtype: z.enum(["float32", "int64"]) }),
        ),
      }),
    ),
  })
  .parse(JSON.parse(readFileSync("model/golden/golden.json", "utf8")));

let model: VisionLLM;
const batches: Array<[AnyGraphName, number]> = [];

beforeAll(async () => {
  model = await VisionLLM.load(await loadBundle("model/bundle"), await createBackend({ provider: "wasm" }));
  model.onGraphBatch = (name, calls) => batches.push([name, calls]);
});
afterAll(async () => {
  await model?.release();
});

function inputsOf(graph: string, scale: number): Record<string, HostTensor> {
  const feeds: Record<string, HostTensor> = {};
  for (const [name, ref] of Object.entries(golden.graphs[graph]?.inputs ?? {})) {
    const bytes = readFileSync(path.join("model/golden", ref.file));
    const copy = new Uint8Array(bytes);
    feeds[name] =
      ref.dtype === "int64"
        ? int64(new BigInt64Array(copy.buffer), ref.shape)
        : float32(
            new Float32Array(copy.buffer).map((v) => v * scale),
            ref.shape,
          );
  }
  return feeds;
}

const maxDiff = (a: ArrayLike<number | bigint>, b: ArrayLike<number | bigint>) => {
  let d = 0;
  for (let i = 0; i < a.length; i++)
    d = Math.max(d, Math.abs(Number(a[i] ?? 0) - Number(b[i] ?? Number.NaN)));
  return d;
};

describe("same-graph runs batched at the queue", () => {
  const graphs = Object.keys(golden.graphs).filter((g) => g !== "llm" && g !== "llm_decode");

  it("covers every graph but the LLM's", () => {
    expect(graphs.length).toBeGreaterThanOrEqual(10);
  });

  for (const graph of graphs) {
    it(`${graph}: two concurrent calls run as one batch and match their runs alone`, async () => {
      const name = graph as AnyGraphName;
      const a = inputsOf(graph, 1);
      const b = inputsOf(graph, 0.8);
      const aloneA = await model.run(name, a);
      const aloneB = await model.run(name, b);
      batches.length = 0;
      const [togetherA, togetherB] = await Promise.all([model.run(name, a), model.run(name, b)]);
      expect(batches).toEqual([[name, 2]]);
      for (const [output, tensor] of Object.entries(aloneA)) {
        expect(togetherA?.[output]?.dims).toEqual(tensor.dims);
        expect(maxDiff(togetherA?.[output]?.data ?? [], tensor.data), `${graph}.${output}`).toBeLessThan(
          1e-4,
        );
      }
      for (const [output, tensor] of Object.entries(aloneB))
        expect(maxDiff(togetherB?.[output]?.data ?? [], tensor.data), `${graph}.${output}`).toBeLessThan(
          1e-4,
        );
    });
  }
});
