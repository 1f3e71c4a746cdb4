import { VisionLLMError } from "@visionllm/protocol";
import type { Limits } from "./env";
import { refusedTarget } from "./ssrf";

/** Images at the edge: decoded from data URLs or fetched, type- and size-checked before the runner sees them. */

export interface EdgeImage {
  bytes: Uint8Array<ArrayBuffer>;
  mime: "image/png" | "image/jpeg" | "image/webp";
  width: number;
  height: number;
}

const MIMES = new Set(["image/png", "image/jpeg", "image/webp"]);

/** Width and height from the file header (PNG IHDR, JPEG SOFn, WebP VP8/VP8L/VP8X) without decoding. */
export function imageDimensions(
  bytes: Uint8Array,
): { mime: EdgeImage["mime"]; width: number; height: number } | undefined {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const at = (i: number) => bytes[i] ?? 0;
  if (bytes.length >= 24 && at(0) === 0x89 && at(1) === 0x50 && at(2) === 0x4e && at(3) === 0x47) {
    return { mime: "image/png", width: view.getUint32(16), height: view.getUint32(20) };
  }
  if (bytes.length >= 4 && at(0) === 0xff && at(1) === 0xd8) {
    let i = 2;
    while (i + 9 < bytes.length) {
      if (at(i) !== 0xff) return undefined;
      const marker = at(i + 1);
      const length = view.getUint16(i + 2);
      const sof = marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc;
      if (sof) return { mime: "image/jpeg", height: view.getUint16(i + 5), width: view.getUint16(i + 7) };
      i += 2 + length;
    }
    return undefined;
  }
  if (
    bytes.length >= 30 &&
    String.fromCharCode(at(0), at(1), at(2), at(3)) === "RIFF" &&
    String.fromCharCode(at(8), at(9), at(10), at(11)) === "WEBP"
  ) {
    const chunk = String.fromCharCode(at(12), at(13), at(14), at(15));
    if (chunk === "VP8 ")
      return {
        mime: "image/webp",
        width: view.getUint16(26, true) & 0x3fff,
        height: view.getUint16(28, true) & 0x3fff,
      };
    if (chunk === "VP8L") {
      const b = view.getUint32(21, true);
      return { mime: "image/webp", width: (b & 0x3fff) + 1, height: ((b >> 14) & 0x3fff) + 1 };
    }
    if (chunk === "VP8X") {
      const w = at(24) | (at(25) << 8) | (at(26) << 16);
      const h = at(27) | (at(28) << 8) | (at(29) << 16);
      return { mime: "image/webp", width: w + 1, height: h + 1 };
    }
  }
  return undefined;
}

function checked(
  bytes: Uint8Array<ArrayBuffer>,
  declared: string | undefined,
  limits: Limits,
  param: string,
): EdgeImage {
  if (bytes.length > limits.maxImageBytes) {
    throw new VisionLLMError(
      "payload_too_large",
      `The image is ${bytes.length} bytes; the limit is ${limits.maxImageBytes}.`,
      { param },
    );
  }
  const dims = imageDimensions(bytes);
  if (!dims) {
    throw new VisionLLMError(
      "unsupported_media_type",
      `The image${declared ? ` (declared ${declared})` : ""} is not a readable PNG, JPEG or WebP file.`,
      { param },
    );
  }
  const pixels = dims.width * dims.height;
  if (dims.width === 0 || dims.height === 0 || pixels > limits.maxImagePixels) {
    throw new VisionLLMError(
      "payload_too_large",
      `The image is ${dims.width}x${dims.height}; the limit is ${limits.maxImagePixels} pixels. Downscale it first.`,
      { param },
    );
  }
  return { bytes, ...dims };
}

function base64ToBytes(b64: string): Uint8Array<ArrayBuffer> | undefined {
  try {
    const binary = atob(b64);
    const out = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
    return out;
  } catch {
    return undefined;
  }
}

export function decodeDataUrl(url: string, limits: Limits, param: string): EdgeImage {
  const match = /^data:([a-z/+.-]+);base64,(.*)$/is.exec(url);
  if (!match)
    throw new VisionLLMError("invalid_request", "A data URL must look like data:image/png;base64,<data>.", {
      param,
    });
  const mime = (match[1] ?? "").toLowerCase();
  if (!MIMES.has(mime)) {
    throw new VisionLLMError("unsupported_media_type", `Images must be PNG, JPEG or WebP; got ${mime}.`, {
      param,
    });
  }
  const data = match[2] ?? "";
  if ((data.length * 3) / 4 > limits.maxImageBytes + 3) {
    throw new VisionLLMError("payload_too_large", `The image is larger than ${limits.maxImageBytes} bytes.`, {
      param,
    });
  }
  const bytes = base64ToBytes(data);
  if (!bytes) throw new VisionLLMError("invalid_request", "The data URL's base64 is malformed.", { param });
  return checked(bytes, mime, limits, param);
}

/** Fetches an https image with the SSRF guard on every hop, a size cap while reading, a type check. */
export async function fetchImage(
  url: string,
  limits: Limits,
  param: string,
  fetcher: typeof fetch = fetch,
): Promise<EdgeImage> {
  let target: URL;
  try {
    target = new URL(url);
  } catch {
    throw new VisionLLMError("invalid_request", "The image URL is not a valid URL.", { param });
  }
  for (let hop = 0; hop < 4; hop++) {
    const refused = refusedTarget(target, {
      allowLoopback: limits.allowLoopback,
      allowHttp: limits.allowLoopback,
    });
    if (refused)
      throw new VisionLLMError("invalid_request", `The image URL is refused: ${refused}.`, { param });
    let response: Response;
    try {
      response = await fetcher(target.toString(), {
        redirect: "manual",
        headers: { accept: "image/png,image/jpeg,image/webp" },
      });
    } catch {
      throw new VisionLLMError("invalid_request", `The image URL could not be fetched (${target.host}).`, {
        param,
      });
    }
    if (response.status >= 300 && response.status < 400) {
      const location = response.headers.get("location");
      if (!location) break;
      target = new URL(location, target);
      continue;
    }
    if (!response.ok || !response.body) {
      throw new VisionLLMError("invalid_request", `Fetching the image answered HTTP ${response.status}.`, {
        param,
      });
    }
    const type = (response.headers.get("content-type") ?? "").split(";")[0]?.trim().toLowerCase() ?? "";
    if (!MIMES.has(type)) {
      await response.body.cancel();
      throw new VisionLLMError(
        "unsupported_media_type",
        `The image URL served ${type || "no content type"}, not PNG, JPEG or WebP.`,
        { param },
      );
    }
    const declared = Number(response.headers.get("content-length"));
    if (declared > limits.maxImageBytes) {
      await response.body.cancel();
      throw new VisionLLMError(
        "payload_too_large",
        `The image is ${declared} bytes; the limit is ${limits.maxImageBytes}.`,
        { param },
      );
    }
    const chunks: Uint8Array[] = [];
    let total = 0;
    const reader = response.body.getReader();
    while (true) {
      const { done, value } = await reader.read();
      if (done) break;
      total += value.byteLength;
      if (total > limits.maxImageBytes) {
        await reader.cancel();
        throw new VisionLLMError("payload_too_large", `The image is over ${limits.maxImageBytes} bytes.`, {
          param,
        });
      }
      chunks.push(value);
    }
    const bytes = new Uint8Array(total);
    let offset = 0;
    for (const chunk of chunks) {
      bytes.set(chunk, offset);
      offset += chunk.byteLength;
    }
    return checked(bytes, type, limits, param);
  }
  throw new VisionLLMError("invalid_request", "The image URL redirects too often.", { param });
}

export function bytesToBase64(bytes: Uint8Array): string {
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000)
    binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}
