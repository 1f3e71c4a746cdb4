import type { UnnumberedEvent } from "@visionllm/protocol";
import { float32 } from "../../backend/onnx";
import { Mulberry32 } from "../../generation/rng";
import { finishEdited, finishGenerated } from "../../postprocess/image";
import { encodePng, toLowResolution } from "../../preprocess/image";
import type { PreparedImage } from "../prompt";
import { need, type VisionLLM } from "../visionllm";
import type { DecoderLink, Group } from "./link";

/**
 * Generation and editing (Stable Diffusion's and InstructPix2Pix's roles): the routing group's states,
 * projected by the super link, condition a flow-matching sampler; editing starts from the last image.
 */
export function imageLink(task: "generation" | "editing"): DecoderLink {
  return {
    task,
    run: (head, _attached, ctx) => runImageDecoder(ctx.model, head, ctx.image, ctx.seed, ctx.signal),
  };
}

export async function* runImageDecoder(
  model: VisionLLM,
  group: Pick<Group, "index" | "entry" | "states">,
  source: PreparedImage | undefined,
  seed: number,
  signal: AbortSignal | undefined,
): AsyncGenerator<UnnumberedEvent> {
  const m = model.manifest;
  const editing = group.entry.task === "editing";
  const task = editing ? "editing" : "generation";
  if (editing && !source) return;
  const res = m.generation.resolution;
  const size = m.preprocessing.image_size;
  const steps = m.generation.steps;
  const conditioning = await model.link(
    editing ? "superlink_editing" : "superlink_generation",
    group.states,
    1,
  );
  const sourceLow = source && editing ? toLowResolution(source.rgb, size, res) : undefined;
  const x = new Mulberry32(seed).normals(3 * res * res);
  for (let k = 0; k < steps; k++) {
    if (signal?.aborted) return;
    const feeds = {
      sample: float32(x, [1, 3, res, res]),
      timestep: float32(Float32Array.of(k / steps), [1]),
      conditioning,
      ...(sourceLow ? { source_image: float32(sourceLow, [1, 3, res, res]) } : {}),
    };
    const v = need(await model.run(editing ? "editor" : "generator", feeds), "velocity").data as Float32Array;
    for (let i = 0; i < x.length; i++) x[i] = (x[i] ?? 0) + (v[i] ?? 0) / steps;
    const preview =
      k % 5 === 4 && k < steps - 1 ? await encodePng(finishGenerated(x, res, res), res, res) : undefined;
    yield {
      type: "image-progress",
      task,
      group: group.index,
      step: k + 1,
      total_steps: steps,
      ...(preview ? { preview_png_base64: preview } : {}),
    };
  }
  const out = m.generation.output_size;
  const rgb =
    sourceLow && source
      ? finishEdited(x, sourceLow, source.rgb, res, size, m.postprocess.edit_delta_threshold)
      : finishGenerated(x, res, out);
  const width = sourceLow ? size : out;
  yield {
    type: "image",
    task,
    group: group.index,
    png_base64: await encodePng(rgb, width, width),
    width,
    height: width,
    seed,
  };
}
