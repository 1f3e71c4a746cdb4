import { float32, type HostTensor, int64 } from "../gpu-runner/src/backend/onnx";
import type { VisionLLM } from "../gpu-runner/src/model/visionllm";

/**
 * Feeds for the `llm_decode` graph called bare: one token at `position`, a filled cache of
 * `capacity` positions. The benchmarks run the session on them again and again, so what they time is
 * the graph alone, the floor the runner's loop is compared with.
 */
export function bareDecodeFeeds(
  model: VisionLLM,
  embed: Float32Array,
  position: number,
  capacity: number,
): Record<string, HostTensor> {
  const feeds: Record<string, HostTensor> = {
    inputs_embeds: float32(embed, [1, 1, model.dim]),
    attention_mask: int64(new BigInt64Array(capacity).fill(1n), [1, capacity]),
    position_ids: int64(new BigInt64Array([BigInt(position)]), [1, 1]),
  };
  for (let layer = 0; layer < model.manifest.config.llm_layers; layer++)
    for (const part of ["key", "value"])
      feeds[`past_key_values.${layer}.${part}`] = float32(
        new Float32Array(model.heads * capacity * model.headDim).fill(0.01),
        [1, model.heads, capacity, model.headDim],
      );
  return feeds;
}
