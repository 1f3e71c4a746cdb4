import type { Pose, UnnumberedEvent } from "@visionllm/protocol";
import { float32 } from "../../backend/onnx";
import { postprocessPoses } from "../../postprocess/detections";
import type { PreparedImage } from "../prompt";
import { need, type VisionLLM } from "../visionllm";
import { type DecoderLink, type Group, nothing } from "./link";

/**
 * Pose (UniPose's role): one [POSE] group per keypoint follows a person's perception group; when the
 * manifest's keypoints are all there, the pose decoder runs on the person and keypoint embeddings. A
 * person group with fewer keypoint groups stays a detection.
 */
export const poseLink: DecoderLink = {
  task: "pose",
  attaches: {
    to: ["detection", "segmentation", "grounding"],
    whole: (count, model) => count === model.manifest.keypoints.names.length,
  },
  run: (head, attached, ctx) => (ctx.image ? runPose(ctx.model, head, [...attached], ctx.image) : nothing()),
};

async function* runPose(
  model: VisionLLM,
  person: Group,
  keypoints: Group[],
  image: PreparedImage,
): AsyncGenerator<UnnumberedEvent> {
  const m = model.manifest;
  const personEmbedding = await model.link("superlink_perception", person.states, 1);
  const states = new Float32Array(keypoints.reduce((n, g) => n + g.states.length, 0));
  keypoints.forEach((g, i) => {
    states.set(g.states, i * g.states.length);
  });
  const linked = (await model.link("superlink_pose", states, keypoints.length)).data as Float32Array;
  // The pose graph takes every keypoint of the manifest; if the answer named fewer, the missing
  // rows repeat the last one and their keypoints are left out of the result.
  const k = m.config.num_keypoints;
  const width = m.config.link_dim;
  const keypointEmbeddings = new Float32Array(k * width);
  for (let j = 0; j < k; j++) {
    const from = Math.min(j, keypoints.length - 1);
    keypointEmbeddings.set(linked.subarray(from * width, (from + 1) * width), j * width);
  }
  const s = m.preprocessing.image_size;
  const out = await model.run("pose_decoder", {
    pixel_values: float32(image.features.pixelValues, [1, 3, s, s]),
    vision_levels: image.features.levels,
    person_embedding: personEmbedding,
    keypoint_embeddings: float32(keypointEmbeddings, [1, k, width]),
  });
  const names = m.keypoints.names;
  const items: Pose[] = postprocessPoses(
    {
      logits: need(out, "pred_logits").data as Float32Array,
      boxes: need(out, "pred_boxes").data as Float32Array,
      keypoints: need(out, "pred_keypoints").data as Float32Array,
      keypointScores: need(out, "keypoint_scores").data as Float32Array,
    },
    names,
    image,
    m.postprocess.score_threshold,
  ).map((pose) => ({ ...pose, keypoints: pose.keypoints.slice(0, keypoints.length) }));
  yield { type: "keypoints", group: person.index, skeleton: m.keypoints.skeleton, items };
}
