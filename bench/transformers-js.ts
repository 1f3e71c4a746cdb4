import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import type { Bundle } from "../gpu-runner/src/bundle/load";

/**
 * The peer people would reach for: transformers.js running the bundle's own LLM graph. The graph
 * is laid out as a Hugging Face model folder (config.json + onnx/model.onnx, model_type llama) and
 * loaded by `AutoModelForCausalLM`; decoding goes through the model's own forward pass and KV-cache
 * handling. The graph takes `inputs_embeds` (the super link splices embeddings, so there are no
 * input ids), which transformers.js' decoder forward passes through unchanged.
 */
export interface TransformersJsLoop {
  /** Decode rate (tok/s) of `tokens` single-token forwards after a fresh prefill of the prompt. */
  rate(tokens: number): Promise<number>;
  dispose(): Promise<void>;
}

export async function openTransformersJs(
  bundle: Bundle,
  promptIds: readonly number[],
  device: "cpu" | "webgpu",
): Promise<TransformersJsLoop> {
  const { AutoModelForCausalLM, Tensor, env } = await import("@huggingface/transformers");
  const c = bundle.manifest.config;
  const root = path.join(os.tmpdir(), `visionllm-transformers-js-${process.pid}`);
  const dir = path.join(root, "nano-llm");
  mkdirSync(path.join(dir, "onnx"), { recursive: true });
  writeFileSync(
    path.join(dir, "config.json"),
    JSON.stringify({
      model_type: "llama",
      architectures: ["LlamaForCausalLM"],
      hidden_size: c.llm_dim,
      num_attention_heads: c.llm_heads,
      num_key_value_heads: c.llm_heads,
      head_dim: c.llm_dim / c.llm_heads,
      num_hidden_layers: c.llm_layers,
      vocab_size: c.vocab_size,
    }),
  );
  writeFileSync(path.join(dir, "onnx", "model.onnx"), bundle.graphs.llm);
  env.allowRemoteModels = false;
  env.localModelPath = root;
  let model: unknown;
  try {
    model = await AutoModelForCausalLM.from_pretrained("nano-llm", {
      local_files_only: true,
      dtype: "fp32",
      device,
    });
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
  const d = c.llm_dim;
  const table = bundle.tables.embed_tokens.data;
  const embeds = (ids: readonly number[]) => {
    const out = new Float32Array(ids.length * d);
    ids.forEach((id, i) => {
      out.set(table.subarray(id * d, (id + 1) * d), i * d);
    });
    return new Tensor("float32", out, [1, ids.length, d]);
  };
  const mask = (n: number) => new Tensor("int64", new BigInt64Array(n).fill(1n), [1, n]);
  type Forward = (inputs: Record<string, unknown>) => Promise<Record<string, unknown>>;
  const forward = (model as { forward: Forward }).forward.bind(model);
  // present.{i}.* outputs become the next call's past_key_values.{i}.*, as transformers.js'
  // own generate() does with them.
  const pkv = (outputs: Record<string, unknown>) =>
    Object.fromEntries(
      Object.entries(outputs)
        .filter(([name]) => name.startsWith("present"))
        .map(([name, tensor]) => [name.replace("present", "past_key_values"), tensor]),
    );
  const one = [promptIds[0] ?? 0];
  return {
    async rate(tokens: number): Promise<number> {
      let length = promptIds.length;
      let past = pkv(await forward({ inputs_embeds: embeds(promptIds), attention_mask: mask(length) }));
      const t0 = performance.now();
      for (let i = 0; i < tokens; i++) {
        length += 1;
        past = pkv(
          await forward({ inputs_embeds: embeds(one), attention_mask: mask(length), past_key_values: past }),
        );
      }
      return tokens / ((performance.now() - t0) / 1000);
    },
    async dispose() {
      await (model as { dispose: () => Promise<unknown> }).dispose();
    },
  };
}
