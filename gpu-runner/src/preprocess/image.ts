import { VisionLLMError } from "@visionllm/protocol";
import sharp, { type Metadata } from "sharp";

/** Image decoding and the model's input tensors. Orientation follows EXIF, as people see the photo. */

export interface DecodedImage {
  /** RGB, row-major, 3 bytes per pixel, after EXIF rotation. */
  rgb: Uint8Array;
  width: number;
  height: number;
}

export interface Preprocessing {
  image_size: number;
  resize: "bilinear" | "nearest";
  mean: readonly [number, number, number];
  std: readonly [number, number, number];
}

const SUPPORTED = new Set(["png", "jpeg", "webp"]);

/** Reads only the header first, so an oversized image (or a decompression bomb) is refused unread. */
export async function decodeImage(bytes: Uint8Array, maxPixels: number): Promise<DecodedImage> {
  let meta: Metadata;
  try {
    meta = await sharp(bytes).metadata();
  } catch {
    throw new VisionLLMError(
      "invalid_request",
      "The image could not be read: send PNG, JPEG or WebP bytes.",
      {
        param: "image",
      },
    );
  }
  if (!meta.format || !SUPPORTED.has(meta.format)) {
    throw new VisionLLMError(
      "unsupported_media_type",
      `Image format ${meta.format ?? "unknown"} is not supported: send PNG, JPEG or WebP.`,
      { param: "image" },
    );
  }
  const pixels = (meta.width ?? 0) * (meta.height ?? 0);
  if (pixels > maxPixels) {
    throw new VisionLLMError(
      "payload_too_large",
      `The image is ${meta.width}x${meta.height} (${pixels} pixels); the limit is ${maxPixels} pixels. Downscale it first.`,
      { param: "image" },
    );
  }
  const { data, info } = await sharp(bytes, { limitInputPixels: maxPixels, failOn: "error" })
    .rotate()
    .removeAlpha()
    .toColourspace("srgb")
    .raw()
    .toBuffer({ resolveWithObject: true })
    .catch(() => {
      // The header was fine but the pixel data is not (truncated, corrupt compressed stream).
      throw new VisionLLMError(
        "invalid_request",
        "The image data is truncated or corrupt: send the whole file.",
        {
          param: "image",
        },
      );
    });
  return {
    rgb: new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
    width: info.width,
    height: info.height,
  };
}

/** Resizes to the model's square input (identity for inputs already that size). */
export async function resizeRgb(
  image: DecodedImage,
  size: number,
  kernel: "bilinear" | "nearest",
): Promise<Uint8Array> {
  if (image.width === size && image.height === size) return image.rgb;
  const out = await sharp(image.rgb, { raw: { width: image.width, height: image.height, channels: 3 } })
    .resize(size, size, { fit: "fill", kernel: kernel === "nearest" ? "nearest" : "linear" })
    .raw()
    .toBuffer();
  return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
}

/** RGB bytes [H,W,3] -> normalised float [1,3,H,W]: (x / 255 - mean) / std. */
export function toPixelValues(
  rgb: Uint8Array,
  size: number,
  p: Pick<Preprocessing, "mean" | "std">,
): Float32Array {
  const plane = size * size;
  const out = new Float32Array(3 * plane);
  for (let i = 0; i < plane; i++) {
    for (let c = 0; c < 3; c++) {
      out[c * plane + i] = ((rgb[i * 3 + c] ?? 0) / 255 - (p.mean[c] ?? 0)) / (p.std[c] ?? 1);
    }
  }
  return out;
}

/** RGB bytes [S,S,3] -> [1,3,r,r] in [-1,1], averaging S/r x S/r blocks (the generator's pixel space). */
export function toLowResolution(rgb: Uint8Array, size: number, res: number): Float32Array {
  const f = size / res;
  const out = new Float32Array(3 * res * res);
  for (let c = 0; c < 3; c++) {
    for (let y = 0; y < res; y++) {
      for (let x = 0; x < res; x++) {
        let sum = 0;
        for (let dy = 0; dy < f; dy++) {
          for (let dx = 0; dx < f; dx++)
            sum += (rgb[((y * f + dy) * size + x * f + dx) * 3 + c] ?? 0) / 127.5 - 1;
        }
        out[c * res * res + y * res + x] = sum / (f * f);
      }
    }
  }
  return out;
}

export async function encodePng(rgb: Uint8Array, width: number, height: number): Promise<string> {
  const png = await sharp(rgb, { raw: { width, height, channels: 3 } })
    .png()
    .toBuffer();
  return png.toString("base64");
}

/** Region masks larger than this are refused unread (a mask is drawn on the image, not a poster). */
const MAX_MASK_PIXELS = 4096 * 4096;

/** A PNG mask (any size up to MAX_MASK_PIXELS) -> binary [size*size], resized to the model's grid, 1
 * where > 127. Unreadable or oversized masks are the client's mistake: 400 naming `param`. */
export async function decodeMaskPng(base64: string, size: number, param = "regions"): Promise<Uint8Array> {
  const bytes = Buffer.from(base64, "base64");
  const refuse = (why: string) => new VisionLLMError("invalid_request", `The region mask ${why}.`, { param });
  const meta = await sharp(bytes)
    .metadata()
    .catch(() => {
      throw refuse("could not be read: send a PNG, base64-encoded");
    });
  if ((meta.width ?? 0) * (meta.height ?? 0) > MAX_MASK_PIXELS)
    throw refuse(
      `is ${meta.width} x ${meta.height}; at most ${MAX_MASK_PIXELS} pixels: draw it at the image's size`,
    );
  const { data } = await sharp(bytes, { limitInputPixels: MAX_MASK_PIXELS, failOn: "error" })
    .greyscale()
    .resize(size, size, { fit: "fill", kernel: "nearest" })
    .raw()
    .toBuffer({ resolveWithObject: true })
    .catch(() => {
      throw refuse("is truncated or corrupt");
    });
  const out = new Uint8Array(size * size);
  for (let i = 0; i < out.length; i++) out[i] = (data[i] ?? 0) > 127 ? 1 : 0;
  return out;
}
