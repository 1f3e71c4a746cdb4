import { createHash } from "node:crypto";
import { type RunnerRegion, VisionLLMError } from "@visionllm/protocol";
import { boxMask, pointMask } from "../postprocess/regions";
import { decodeImage, decodeMaskPng, resizeRgb, toPixelValues } from "../preprocess/image";
import type { ImageFeatures, KVCache, VisionLLM } from "./visionllm";

/**
 * The prompt as the LLM reads it: images decoded and encoded, regions drawn on the model's grid, both
 * spliced into the embedded text at their placeholders, and each position's identity for prefix reuse.
 */

/** What `preparePrompt` needs of a request. */
export interface PromptInput {
  /** Rendered with the chat template; one `<image>` per image, one `<region>` per region, in order. */
  prompt: string;
  images: Array<{ bytes: Uint8Array; sha256?: string }>;
  regions: RunnerRegion[];
  sampling: { max_tokens: number };
  maxImagePixels: number;
  featureCache?: FeatureCache;
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
export async function preparePrompt(model: VisionLLM, input: PromptInput): Promise<PreparedPrompt> {
  checkPlaceholders(model, input);
  const images = await encodeImages(model, input);
  const m = model.manifest;
  const special = m.special_tokens;
  const expanded = input.prompt.replaceAll(
    special.image,
    special.image_start + special.image_patch.repeat(m.image_tokens) + special.image_end,
  );
  const ids = model.tokenizer.encode(expanded);
  if (ids.length + input.sampling.max_tokens > m.limits.max_context) {
    throw new VisionLLMError(
      "invalid_request",
      `The prompt is ${ids.length} tokens; with max_tokens ${input.sampling.max_tokens} it exceeds the context of ${m.limits.max_context}. Shorten the conversation or lower max_tokens.`,
      { param: "messages" },
    );
  }
  const { embeds, keys } = await splice(model, input, ids, images);
  return { ids, embeds, images, keys };
}

function checkPlaceholders(model: VisionLLM, input: PromptInput): void {
  const m = model.manifest;
  const special = m.special_tokens;
  const images = countOf(input.prompt, special.image);
  if (images !== input.images.length) {
    throw new VisionLLMError(
      "invalid_request",
      `The prompt has ${images} ${special.image} placeholders for ${input.images.length} images.`,
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
}

async function encodeImages(model: VisionLLM, input: PromptInput): Promise<PreparedImage[]> {
  const images: PreparedImage[] = [];
  for (const image of input.images) {
    const cached = image.sha256 ? input.featureCache?.get(image.sha256) : undefined;
    const prepared = cached ?? (await prepareImage(model, image.bytes, input.maxImagePixels));
    if (!cached && image.sha256) input.featureCache?.set(image.sha256, prepared);
    images.push(prepared);
  }
  return images;
}

/** The embedded prompt with image patches and regions in place, and each position's identity. */
async function splice(
  model: VisionLLM,
  input: PromptInput,
  ids: number[],
  images: PreparedImage[],
): Promise<{ embeds: Float32Array; keys: PositionKey[] }> {
  const m = model.manifest;
  const d = model.dim;
  const embeds = model.tableRows("embed_tokens", ids);
  const patchId = model.tokenizer.id(m.special_tokens.image_patch);
  const regionId = model.tokenizer.id(m.special_tokens.region);
  const identities = input.images.map((image) => image.sha256 ?? Symbol("image without a digest"));
  const keys: PositionKey[] = [...ids];
  let patchIndex = 0;
  let regionIndex = 0;
  for (let p = 0; p < ids.length; p++) {
    if (ids[p] === patchId) {
      const k = Math.floor(patchIndex / m.image_tokens);
      const row = patchIndex % m.image_tokens;
      const image = images[k];
      if (image) embeds.set(image.features.imageEmbeds.subarray(row * d, (row + 1) * d), p * d);
      const identity = identities[k];
      keys[p] = typeof identity === "string" ? `image:${identity}:${row}` : (identity ?? Symbol());
      patchIndex++;
    } else if (ids[p] === regionId) {
      const region = input.regions[regionIndex];
      embeds.set(await regionEmbedding(model, region, images, regionIndex), p * d);
      const identity = region ? identities[region.image_index] : undefined;
      keys[p] =
        typeof identity === "string"
          ? `region:${identity}:${createHash("sha256").update(JSON.stringify(region)).digest("hex")}`
          : Symbol();
      regionIndex++;
    }
  }
  return { embeds, keys };
}

async function regionEmbedding(
  model: VisionLLM,
  region: RunnerRegion | undefined,
  images: PreparedImage[],
  index: number,
): Promise<Float32Array> {
  const image = region ? images[region.image_index] : undefined;
  if (!region || !image) {
    throw new VisionLLMError(
      "invalid_request",
      `Region ${index + 1} refers to an image that is not in the request.`,
      { param: "regions" },
    );
  }
  const mask = await regionMask(region, image, model.manifest.preprocessing.image_size, index);
  return model.regionEmbed(image.features, mask);
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
