import { readFileSync } from "node:fs";

/** What every example needs: the server, the key, and an image as a data URL. */
export const baseURL = `${process.env.VISIONLLM_URL ?? "http://127.0.0.1:8787"}/v1`;
export const apiKey = process.env.VISIONLLM_KEY ?? "";
export const model = "visionllm-v2-nano";

export function imageDataUrl(path: string): string {
  return `data:image/png;base64,${readFileSync(path).toString("base64")}`;
}

/** A super-link event as the API sends it (see /openapi.json, StreamEvent). */
export interface SuperLinkEvent {
  type: "detections" | "keypoints" | "image" | "image-progress";
  [field: string]: unknown;
}
