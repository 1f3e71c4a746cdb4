import type { UnnumberedEvent } from "@visionllm/protocol";
import { float32 } from "../../backend/onnx";
import { postprocessDetections } from "../../postprocess/detections";
import type { PreparedImage } from "../prompt";
import { need, type VisionLLM } from "../visionllm";
import { type DecoderLink, type Group, nothing } from "./link";

/**
 * Detection, segmentation and grounding: one perception decoder (Grounding DINO's role) whose class
 * embedding is the super link's projection of the routing group, in place of its removed text encoder.
 * The group waits for keypoint groups that may follow (a person before its pose).
 */
export function perceptionLink(task: "detection" | "segmentation" | "grounding"): DecoderLink {
  return {
    task,
    waits: true,
    run: (head, _attached, ctx) => (ctx.image ? runPerception(ctx.model, head, ctx.image) : nothing()),
  };
}

async function* runPerception(
  model: VisionLLM,
  group: Group,
  image: PreparedImage,
): AsyncGenerator<UnnumberedEvent> {
  const m = model.manifest;
  const embedding = await model.link("superlink_perception", group.states, 1);
  const out = await model.run("perception_decoder", {
    pixel_values: float32(image.features.pixelValues, [
      1,
      3,
      m.preprocessing.image_size,
      m.preprocessing.image_size,
    ]),
    vision_levels: image.features.levels,
    class_embedding: embedding,
  });
  const masks = need(out, "pred_masks");
  const task =
    group.entry.task === "segmentation" || group.entry.task === "grounding" ? group.entry.task : "detection";
  const items = postprocessDetections(
    {
      logits: need(out, "pred_logits").data as Float32Array,
      boxes: need(out, "pred_boxes").data as Float32Array,
      masks: masks.data as Float32Array,
      maskSize: [masks.dims[2] ?? 0, masks.dims[3] ?? 0],
    },
    group.label || group.routing,
    image,
    {
      scoreThreshold: m.postprocess.score_threshold,
      maskThreshold: m.postprocess.mask_threshold,
      top1: task === "grounding",
      withMasks: task !== "detection",
    },
  );
  yield { type: "detections", task, label: group.label || group.routing, group: group.index, items };
}
