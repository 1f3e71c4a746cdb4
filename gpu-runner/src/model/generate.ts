import { createHash } from "node:crypto";
import {
  type Pose,
  type RunnerRegion,
  type SamplingInput,
  type UnnumberedEvent,
  VisionLLMError,
} from "@visionllm/protocol";
import { float32 } from "../backend/onnx";
import type { RoutingEntry } from "../bundle/manifest";
import type { DecodeBatcher } from "../engine/batcher";
import { Mulberry32 } from "../generation/rng";
import { findStop, partialStopLength, sampleToken } from "../generation/sampler";
import { groupLabel, postprocessDetections, postprocessPoses } from "../postprocess/detections";
import { finishEdited, finishGenerated } from "../postprocess/image";
import { boxMask, pointMask } from "../postprocess/regions";
import {
  decodeImage,
  decodeMaskPng,
  encodePng,
  resizeRgb,
  toLowResolution,
  toPixelValues,
} from "../preprocess/image";
import { appendText, StreamingDetokenizer } from "../text/detokenizer";
import { type ImageFeatures, type KVCache, need, type VisionLLM } from "./visionllm";

/**
 * One request through the whole stack: images and regions encoded, the prompt prefilled, then
 * decoding with the super link live. When the LLM emits a routing token, that decoder's query
 * embeddings enter the sequence as one chunk; their final hidden states are projected and the
 * decoder runs while the answer goes on; the logits at the last query choose the next text token.
 */

export interface GenerateInput {
  /** Rendered with the chat template; one `<image>` per image, one `<region>` per region, in order. */
  prompt: string;
  images: Array<{ bytes: Uint8Array; sha256?: string }>;
  regions: RunnerRegion[];
  sampling: SamplingInput;
  signal?: AbortSignal;
  maxImagePixels: number;
  featureCache?: FeatureCache;
  /** Prompt KV caches: a prompt that shares a prefix with an earlier one prefills only the rest. */
  prefixCache?: PrefixStore;
  /** Called with the step's duration after every LLM step (metrics). */
  onStep?: (kind: "prefill" | "decode", seconds: number, tokens: number) => void;
  /** Called once the prompt is ready: images decoded and encoded, text embedded (Server-Timing). */
  onPrepared?: (seconds: number) => void;
  onDecoder?: (task: string, seconds: number) => void;
  /** Every sampled token id, routing tokens included (metrics, golden tests). */
  onToken?: (id: number) => void;
  /** Shares single-token decode steps with other running requests (continuous batching). */
  batcher?: DecodeBatcher;
}

export interface FeatureCache {
  get(key: string): PreparedImage | undefined;
  set(key: string, value: PreparedImage): void;
}

/**
 * What fills one prompt position: its token id, or for an image patch or a region the content
 * behind it (the image digest and the patch, the region and its image). Two prompts' KV agree up to
 * the first position whose keys differ. A symbol (an image without a digest) matches nothing else.
 */
export type PositionKey = number | string | symbol;

export interface PrefixStore {
  /**
   * The longest kept prefix of `keys` (always shorter than `keys`), after waiting for any running
   * prefill that shares more of it; `done` is called once this prompt's prefill ended, with its
   * cache when it succeeded, so that later prompts can reuse it.
   */
  acquire(
    keys: readonly PositionKey[],
  ): Promise<{ cache: KVCache | undefined; done: (cache?: KVCache) => void }>;
}

export interface PreparedImage {
  width: number;
  height: number;
  rgb: Uint8Array; // model-size RGB, the editing source
  features: ImageFeatures;
}

export interface Group {
  index: number;
  routing: string;
  entry: RoutingEntry;
  label: string;
  states: Float32Array; // [N, D]
}

export async function prepareImage(
  model: VisionLLM,
  bytes: Uint8Array,
  maxPixels: number,
): Promise<PreparedImage> {
  const p = model.manifest.preprocessing;
  const decoded = await decodeImage(bytes, maxPixels);
  const rgb = await resizeRgb(decoded, p.image_size, p.resize);
  const features = await model.encodeImage(toPixelValues(rgb, p.image_size, p));
  return { width: decoded.width, height: decoded.height, rgb, features };
}

function countOf(text: string, needle: string): number {
  return text.split(needle).length - 1;
}

export interface PreparedPrompt {
  ids: number[];
  embeds: Float32Array; // [ids.length, D]
  images: PreparedImage[];
  keys: PositionKey[]; // [ids.length]
}

/** Validates placeholders and limits, encodes images and regions, and splices them into the prompt. */
export async function preparePrompt(model: VisionLLM, input: GenerateInput): Promise<PreparedPrompt> {
  const m = model.manifest;
  const tok = model.tokenizer;
  const special = m.special_tokens;
  const size = m.preprocessing.image_size;
  if (countOf(input.prompt, special.image) !== input.images.length) {
    throw new VisionLLMError(
      "invalid_request",
      `The prompt has ${countOf(input.prompt, special.image)} ${special.image} placeholders for ${input.images.length} images.`,
      { param: "images" },
    );
  }
  if (countOf(input.prompt, special.region) !== input.regions.length) {
    throw new VisionLLMError(
      "invalid_request",
      "Each region needs exactly one region placeholder in the prompt.",
      {
        param: "regions",
      },
    );
  }
  if (input.images.length > m.limits.max_images) {
    throw new VisionLLMError(
      "invalid_request",
      `This model takes at most ${m.limits.max_images} image(s) per conversation; got ${input.images.length}.`,
      { param: "images" },
    );
  }

  const images: PreparedImage[] = [];
  for (const image of input.images) {
    const cached = image.sha256 ? input.featureCache?.get(image.sha256) : undefined;
    const prepared = cached ?? (await prepareImage(model, image.bytes, input.maxImagePixels));
    if (!cached && image.sha256) input.featureCache?.set(image.sha256, prepared);
    images.push(prepared);
  }

  const expanded = input.prompt.replaceAll(
    special.image,
    special.image_start + special.image_patch.repeat(m.image_tokens) + special.image_end,
  );
  const ids = tok.encode(expanded);
  if (ids.length + input.sampling.max_tokens > m.limits.max_context) {
    throw new VisionLLMError(
      "invalid_request",
      `The prompt is ${ids.length} tokens; with max_tokens ${input.sampling.max_tokens} it exceeds the context of ${m.limits.max_context}. Shorten the conversation or lower max_tokens.`,
      { param: "messages" },
    );
  }

  const d = model.dim;
  const embeds = model.tableRows("embed_tokens", ids);
  const patchId = tok.id(special.image_patch);
  const regionId = tok.id(special.region);
  let patchIndex = 0;
  let regionIndex = 0;
  const identities = input.images.map((image) => image.sha256 ?? Symbol("image without a digest"));
  const keys: PositionKey[] = [...ids];
  for (let p = 0; p < ids.length; p++) {
    if (ids[p] === patchId) {
      const k = Math.floor(patchIndex / m.image_tokens);
      const image = images[k];
      const row = patchIndex % m.image_tokens;
      if (image) embeds.set(image.features.imageEmbeds.subarray(row * d, (row + 1) * d), p * d);
      const identity = identities[k];
      keys[p] = typeof identity === "string" ? `image:${identity}:${row}` : (identity ?? Symbol());
      patchIndex++;
    } else if (ids[p] === regionId) {
      const region = input.regions[regionIndex++];
      const image = region ? images[region.image_index] : undefined;
      if (!region || !image) {
        throw new VisionLLMError(
          "invalid_request",
          `Region ${regionIndex} refers to an image that is not in the request.`,
          {
            param: "regions",
          },
        );
      }
      const mask = await regionMask(region, image, size, regionIndex - 1);
      embeds.set(await model.regionEmbed(image.features, mask), p * d);
      const identity = identities[region.image_index];
      keys[p] =
        typeof identity === "string"
          ? `region:${identity}:${createHash("sha256").update(JSON.stringify(region)).digest("hex")}`
          : Symbol();
    }
  }
  return { ids, embeds, images, keys };
}

async function decodeAlone(
  model: VisionLLM,
  embeds: Float32Array,
  cache: KVCache,
): Promise<{ logits: Float32Array; hidden: Float32Array }> {
  const [result] = await model.llmBatchStep([{ embeds, cache }]);
  if (!result) throw new Error("The decode step returned no row.");
  return result;
}

/** Work outside the batch (a splice, a decoder): the batch does not wait for this member. */
async function away<T>(batcher: DecodeBatcher | undefined, work: () => Promise<T>): Promise<T> {
  batcher?.leave();
  try {
    return await work();
  } finally {
    batcher?.join();
  }
}

async function* awayFor<T>(batcher: DecodeBatcher | undefined, work: AsyncGenerator<T>): AsyncGenerator<T> {
  batcher?.leave();
  try {
    yield* work;
  } finally {
    batcher?.join();
  }
}

export async function* generate(model: VisionLLM, input: GenerateInput): AsyncGenerator<UnnumberedEvent> {
  const m = model.manifest;
  const tok = model.tokenizer;
  const special = m.special_tokens;
  const d = model.dim;
  const preparing = performance.now();
  const { ids, embeds, images, keys } = await preparePrompt(model, input);
  input.onPrepared?.((performance.now() - preparing) / 1000);

  const routingIds = new Map<number, string>();
  for (const token of Object.keys(m.routing)) routingIds.set(tok.id(token), token);
  const eos = tok.id(m.tokenizer.eos_token);
  const banned = new Set<number>(
    [
      ...m.query_tokens,
      special.image,
      special.image_start,
      special.image_patch,
      special.image_end,
      special.region,
      m.tokenizer.pad_token,
    ].map((t) => tok.id(t)),
  );
  const minTokens = input.sampling.min_tokens ?? 0;
  const bannedBeforeMin = new Set([...banned, eos]);
  const rng = new Mulberry32(input.sampling.seed ?? Math.floor(Math.random() * 2 ** 32));
  const imageSeed = input.sampling.seed ?? Math.floor(Math.random() * 2 ** 31);
  const params = {
    temperature: input.sampling.temperature,
    topK: input.sampling.top_k,
    topP: input.sampling.top_p,
  };
  const vocab = m.config.vocab_size;

  const lease = await input.prefixCache?.acquire(keys);
  const cache: KVCache = lease?.cache ?? model.emptyCache();
  let started = performance.now();
  let logits: Float32Array;
  try {
    ({ logits } = await model.llmStep(embeds.subarray(cache.length * d), cache));
    lease?.done(cache);
  } catch (error) {
    lease?.done();
    throw error;
  }
  input.onStep?.("prefill", (performance.now() - started) / 1000, ids.length);
  let next = logits.subarray(logits.length - vocab);

  const detok = new StreamingDetokenizer((t) => tok.decode(t));
  const textIds: number[] = [];
  let visible = "";
  let emitted = 0;
  let completion = 0;
  let finish: "stop" | "length" | "canceled" = "length";
  const groups: Group[] = [];
  let pendingPerception: Group | undefined;
  const pendingPose: Group[] = [];
  const lastImage = images[images.length - 1];

  const runPending = async function* (): AsyncGenerator<UnnumberedEvent> {
    const group = pendingPerception;
    pendingPerception = undefined;
    if (!group) return;
    const poses = pendingPose.splice(0);
    if (!lastImage) return;
    const t0 = performance.now();
    // The pose decoder takes one [POSE] group per keypoint; a person group with fewer is a detection.
    const posed = poses.length === m.keypoints.names.length;
    yield* posed ? runPose(model, group, poses, lastImage) : runPerception(model, group, lastImage);
    input.onDecoder?.(posed ? "pose" : group.entry.task, (performance.now() - t0) / 1000);
  };

  input.batcher?.join();
  try {
    for (let step = 0; step < input.sampling.max_tokens; step++) {
      // ONNX runs resolve as microtasks, so a decode loop could otherwise starve the event loop:
      // yielding one macrotask per step lets new requests arrive (and join the batch) and lets
      // disconnects be noticed.
      await new Promise<void>((resolve) => setImmediate(resolve));
      if (input.signal?.aborted) {
        finish = "canceled";
        break;
      }
      const token = sampleToken(next, params, rng, step < minTokens ? bannedBeforeMin : banned);
      completion++;
      input.onToken?.(token);
      if (token === eos) {
        finish = "stop";
        break;
      }
      const routing = routingIds.get(token);
      const entry = routing ? m.routing[routing] : undefined;
      let chunk = model.tableRows("embed_tokens", [token]);
      if (routing && entry) {
        const queries = model.tableRows(entry.table, [...Array(model.tableSize(entry.table)).keys()]);
        const joined = new Float32Array(chunk.length + queries.length);
        joined.set(chunk);
        joined.set(queries, chunk.length);
        chunk = joined;
      }
      started = performance.now();
      // One token goes through the batched decode step even alone (its graph reads the cache in
      // place); a routing token with its queries is a chunk, which only the full graph takes, and
      // the batch does not wait for it meanwhile.
      const out = routing
        ? await away(input.batcher, () => model.llmStep(chunk, cache))
        : input.batcher
          ? await input.batcher.step(chunk, cache)
          : await decodeAlone(model, chunk, cache);
      input.onStep?.("decode", (performance.now() - started) / 1000, 1);
      next = out.logits.subarray(out.logits.length - vocab);
      if (routing && entry) {
        const group: Group = {
          index: groups.length,
          routing,
          entry,
          label: groupLabel(visible),
          states: out.hidden.slice(d),
        };
        groups.push(group);
        if (entry.task === "pose" && pendingPerception) {
          pendingPose.push(group);
          if (pendingPose.length === m.keypoints.names.length) yield* awayFor(input.batcher, runPending());
        } else {
          yield* awayFor(input.batcher, runPending());
          if (entry.task === "generation" || entry.task === "editing") {
            const t0 = performance.now();
            yield* awayFor(input.batcher, runImageDecoder(model, group, lastImage, imageSeed, input.signal));
            input.onDecoder?.(entry.task, (performance.now() - t0) / 1000);
          } else if (entry.task !== "pose") {
            pendingPerception = group;
          }
        }
        continue;
      }
      if (tok.isSpecial(token)) continue;
      textIds.push(token);
      visible = appendText(visible, detok.push(token));
      const cut = findStop(visible, input.sampling.stop);
      if (cut >= 0) {
        visible = visible.slice(0, cut);
        if (visible.length > emitted) yield { type: "text-delta", delta: visible.slice(emitted) };
        emitted = visible.length;
        finish = "stop";
        break;
      }
      const safe = visible.length - partialStopLength(visible, input.sampling.stop);
      if (safe > emitted) {
        yield { type: "text-delta", delta: visible.slice(emitted, safe) };
        emitted = safe;
      }
    }
  } finally {
    input.batcher?.leave();
    model.releaseCache(cache);
  }
  if (finish !== "canceled") {
    if (finish === "length" || finish === "stop") {
      const rest = detok.flush();
      if (rest && findStop(visible + rest, input.sampling.stop) < 0) visible = appendText(visible, rest);
      if (visible.length > emitted) yield { type: "text-delta", delta: visible.slice(emitted) };
    }
    yield* runPending();
  }
  yield {
    type: "usage",
    prompt_tokens: ids.length,
    completion_tokens: completion,
    total_tokens: ids.length + completion,
  };
  yield { type: "done", finish_reason: finish };
}

/** A region's mask on the model's grid; a region outside its image, or covering no pixel of it, is the
 * client's mistake (400 naming the region), never an empty prompt the model would answer anyway. */
async function regionMask(
  region: RunnerRegion,
  image: PreparedImage,
  size: number,
  index: number,
): Promise<Uint8Array> {
  const scale = { sx: size / image.width, sy: size / image.height };
  const param = `regions[${index}]`;
  const where = `the image is ${image.width} x ${image.height} pixels`;
  let mask: Uint8Array | undefined;
  if (region.box) {
    const [x0, y0, x1, y1] = region.box;
    if (!(x1 > x0 && y1 > y0) || x0 >= image.width || y0 >= image.height || x1 <= 0 || y1 <= 0)
      throw new VisionLLMError(
        "invalid_request",
        `Region ${index}'s box [${region.box.join(", ")}] is empty or outside the image (${where}): give [x0, y0, x1, y1] in its pixels.`,
        { param: `${param}.box` },
      );
    mask = boxMask(region.box, size, scale);
  } else if (region.point) {
    const [x, y] = region.point;
    if (x < 0 || y < 0 || x >= image.width || y >= image.height)
      throw new VisionLLMError(
        "invalid_request",
        `Region ${index}'s point [${x}, ${y}] is outside the image (${where}).`,
        { param: `${param}.point` },
      );
    mask = pointMask(region.point, size, scale);
  } else if (region.mask_png_base64) {
    mask = await decodeMaskPng(region.mask_png_base64, size, `${param}.mask`);
  }
  if (!mask)
    throw new VisionLLMError("invalid_request", "A region needs a box, a point or a mask.", { param });
  if (!mask.includes(1))
    throw new VisionLLMError(
      "invalid_request",
      `Region ${index} covers no pixel of the image: draw it larger.`,
      { param },
    );
  return mask;
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
