import { type Detection, encodeMask, type Pose } from "@visionllm/protocol";
import { resizeBilinear } from "./resize";

/**
 * Decoder tensors -> typed results, in the input image's pixels. Pure functions, unit-tested with
 * hand-built tensors.
 */

export interface ImageGeometry {
  width: number;
  height: number;
}

const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));

const clamp = (v: number, hi: number) => Math.min(Math.max(v, 0), hi);

/** cx, cy, w, h in 0..1 -> [x0, y0, x1, y1] in pixels of the input image, clipped to the image. */
export function toPixelBox(
  boxes: Float32Array,
  q: number,
  image: ImageGeometry,
): [number, number, number, number] {
  const cx = boxes[q * 4] ?? 0;
  const cy = boxes[q * 4 + 1] ?? 0;
  const w = boxes[q * 4 + 2] ?? 0;
  const h = boxes[q * 4 + 3] ?? 0;
  return [
    clamp((cx - w / 2) * image.width, image.width),
    clamp((cy - h / 2) * image.height, image.height),
    clamp((cx + w / 2) * image.width, image.width),
    clamp((cy + h / 2) * image.height, image.height),
  ];
}

/** Query indices by descending score; `top1` keeps only the best (grounding names exactly one object). */
export function selectQueries(
  logits: Float32Array,
  threshold: number,
  top1: boolean,
): Array<{ q: number; score: number }> {
  const ranked = Array.from(logits, (l, q) => ({ q, score: sigmoid(l) })).sort((a, b) => b.score - a.score);
  return top1 ? ranked.slice(0, 1) : ranked.filter((r) => r.score >= threshold);
}

export interface DetectionTensors {
  logits: Float32Array; // [Q]
  boxes: Float32Array; // [Q,4]
  masks: Float32Array; // [Q,mh,mw] logits
  maskSize: readonly [number, number];
}

export function postprocessDetections(
  t: DetectionTensors,
  label: string,
  image: ImageGeometry,
  options: { scoreThreshold: number; maskThreshold: number; top1: boolean; withMasks: boolean },
): Detection[] {
  const [mh, mw] = t.maskSize;
  return selectQueries(t.logits, options.scoreThreshold, options.top1).map(({ q, score }) => {
    const detection: Detection = { label, score, box: toPixelBox(t.boxes, q, image) };
    if (options.withMasks) {
      const plane = t.masks.subarray(q * mh * mw, (q + 1) * mh * mw);
      const full = resizeBilinear(plane, mh, mw, image.height, image.width);
      detection.mask = encodeMask(
        Array.from(full, (v) => v > options.maskThreshold),
        image.width,
        image.height,
      );
    }
    return detection;
  });
}

export interface PoseTensors {
  logits: Float32Array; // [Q]
  boxes: Float32Array; // [Q,4]
  keypoints: Float32Array; // [Q,K,2] in 0..1
  keypointScores: Float32Array; // [Q,K]
}

export function postprocessPoses(
  t: PoseTensors,
  names: readonly string[],
  image: ImageGeometry,
  scoreThreshold: number,
): Pose[] {
  const k = names.length;
  return selectQueries(t.logits, scoreThreshold, false).map(({ q, score }) => ({
    label: "person",
    score,
    box: toPixelBox(t.boxes, q, image),
    keypoints: names.map((name, j) => ({
      name,
      x: clamp((t.keypoints[(q * k + j) * 2] ?? 0) * image.width, image.width),
      y: clamp((t.keypoints[(q * k + j) * 2 + 1] ?? 0) * image.height, image.height),
      score: t.keypointScores[q * k + j] ?? 0,
    })),
  }));
}

/**
 * The phrase a routing token follows ("red circle" in "Yes, here are the results for red circle"): the
 * text after the last separator and the last lead phrase, by the bundle's answer format (one rule,
 * model/nano/contract.py, carried by the manifest).
 */
export function groupLabel(
  textSoFar: string,
  format: { label_separator: string; label_leads: string[] },
): string {
  const cut = textSoFar.lastIndexOf(format.label_separator);
  let tail = cut < 0 ? textSoFar : textSoFar.slice(cut + format.label_separator.length);
  for (const lead of format.label_leads) {
    const i = tail.indexOf(lead);
    if (i >= 0) tail = tail.slice(i + lead.length);
  }
  return tail.trim();
}
