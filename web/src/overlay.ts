import type { EventOf } from "@visionllm/protocol";
import { decodeMask } from "@visionllm/protocol/lite";

/**
 * Super-link outputs drawn over an image: SVG for boxes, labels and skeletons (in image pixels, so
 * they stay on their objects at any size), a canvas for masks. Labels sit on a chip of their box's
 * colour, stay inside the image, move down when they would cover another label, and keep a readable
 * size on screen whatever the image's size (`layoutLabels` on every resize).
 */

const SVG = "http://www.w3.org/2000/svg";
const PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324"];
/** Label height on screen, in CSS pixels. */
const LABEL_PX = 13;

export interface OverlayLayers {
  svg: SVGSVGElement;
  masks: HTMLCanvasElement;
}

function el<K extends keyof SVGElementTagNameMap>(
  name: K,
  attrs: Record<string, string | number>,
): SVGElementTagNameMap[K] {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
}

const rgb = (hex: string): [number, number, number] => [
  Number.parseInt(hex.slice(1, 3), 16),
  Number.parseInt(hex.slice(3, 5), 16),
  Number.parseInt(hex.slice(5, 7), 16),
];

/** The image's pixels at its natural size (data URLs are same-origin, so the canvas stays readable). */
export function imagePixels(image: HTMLImageElement): ImageData | undefined {
  const canvas = document.createElement("canvas");
  canvas.width = image.naturalWidth;
  canvas.height = image.naturalHeight;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  if (!ctx || !canvas.width) return undefined;
  ctx.drawImage(image, 0, 0);
  return ctx.getImageData(0, 0, canvas.width, canvas.height);
}

/** The palette colour farthest from the mean colour under the mask: a red mask never hides on a red circle. */
export function contrastingColor(pixels: ImageData | undefined, bits: Uint8Array, width: number): string {
  if (!pixels) return PALETTE[0] ?? "#e6194b";
  let r = 0;
  let g = 0;
  let b = 0;
  let n = 0;
  const sx = pixels.width / width;
  const height = bits.length / width;
  const sy = pixels.height / height;
  for (let i = 0; i < bits.length; i++) {
    if (!bits[i]) continue;
    const x = Math.min(pixels.width - 1, Math.floor((i % width) * sx));
    const y = Math.min(pixels.height - 1, Math.floor(Math.floor(i / width) * sy));
    const o = (y * pixels.width + x) * 4;
    r += pixels.data[o] ?? 0;
    g += pixels.data[o + 1] ?? 0;
    b += pixels.data[o + 2] ?? 0;
    n++;
  }
  if (!n) return PALETTE[0] ?? "#e6194b";
  const mean = [r / n, g / n, b / n];
  let best = PALETTE[0] ?? "#e6194b";
  let bestDistance = -1;
  for (const color of PALETTE) {
    const c = rgb(color);
    const d = c.reduce((s, v, i) => s + (v - (mean[i] ?? 0)) ** 2, 0);
    if (d > bestDistance) {
      bestDistance = d;
      best = color;
    }
  }
  return best;
}

export function resetOverlay(layers: OverlayLayers, width: number, height: number): void {
  layers.svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  layers.svg.replaceChildren();
  layers.masks.width = width;
  layers.masks.height = height;
  layers.masks.getContext("2d")?.clearRect(0, 0, width, height);
}

export function drawDetections(
  layers: OverlayLayers,
  event: EventOf<"detections">,
  pixels: ImageData | undefined,
): void {
  const groupColor = PALETTE[event.group % PALETTE.length] ?? "#e6194b";
  for (const item of event.items) {
    const bits = item.mask ? decodeMask(item.mask) : undefined;
    const color = bits && item.mask ? contrastingColor(pixels, bits, item.mask.width) : groupColor;
    const [x0, y0, x1, y1] = item.box;
    const group = el("g", {
      class: "detection",
      "data-label": item.label,
      "data-score": item.score.toFixed(3),
    });
    group.append(
      el("rect", {
        class: "box",
        x: x0,
        y: y0,
        width: Math.max(0, x1 - x0),
        height: Math.max(0, y1 - y0),
        fill: "none",
        stroke: color,
        "stroke-width": 2,
        "vector-effect": "non-scaling-stroke",
        "data-box": [x0, y0, x1, y1].map((v) => v.toFixed(1)).join(","),
      }),
    );
    const label = el("g", { class: "label" });
    label.append(el("rect", { class: "chip", fill: color, rx: 1 }));
    const text = el("text", { fill: "#fff" });
    text.textContent = `${item.label} ${Math.round(item.score * 100)}%`;
    label.append(text);
    group.append(label);
    layers.svg.append(group);
    if (bits && item.mask) paintMask(layers.masks, bits, item.mask.width, item.mask.height, color);
  }
}

function paintMask(
  canvas: HTMLCanvasElement,
  bits: Uint8Array,
  width: number,
  height: number,
  color: string,
): void {
  const ctx = canvas.getContext("2d");
  if (!ctx) return;
  const [r, g, b] = rgb(color);
  const layer = new ImageData(width, height);
  for (let i = 0; i < bits.length; i++) if (bits[i]) layer.data.set([r, g, b, 140], i * 4);
  const tmp = document.createElement("canvas");
  tmp.width = width;
  tmp.height = height;
  tmp.getContext("2d")?.putImageData(layer, 0, 0);
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(tmp, 0, 0, canvas.width, canvas.height);
}

export function drawKeypoints(layers: OverlayLayers, event: EventOf<"keypoints">): void {
  for (const pose of event.items) {
    const group = el("g", { class: "pose", "data-score": pose.score.toFixed(3) });
    for (const [a, b] of event.skeleton) {
      const p = pose.keypoints[a];
      const q = pose.keypoints[b];
      if (!p || !q) continue;
      group.append(
        el("line", {
          x1: p.x,
          y1: p.y,
          x2: q.x,
          y2: q.y,
          stroke: "#ff00a0",
          "stroke-width": 2,
          "vector-effect": "non-scaling-stroke",
        }),
      );
    }
    for (const k of pose.keypoints) {
      group.append(
        el("circle", { class: "keypoint", cx: k.x, cy: k.y, r: 1, fill: "#00e0ff", "data-name": k.name }),
      );
    }
    layers.svg.append(group);
  }
}

interface Placed {
  x: number;
  y: number;
  w: number;
  h: number;
}
const overlaps = (a: Placed, b: Placed) =>
  a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h;

/**
 * Sizes labels and keypoints for `displayWidth` CSS pixels, above their box where there is room
 * (inside it otherwise), inside the image, moved down past labels they would cover.
 */
export function layoutLabels(svg: SVGSVGElement, displayWidth: number): void {
  const view = svg.viewBox.baseVal;
  if (!view.width || !displayWidth) return;
  const unit = view.width / displayWidth; // image pixels per CSS pixel
  const h = LABEL_PX * unit;
  const placed: Placed[] = [];
  for (const group of svg.querySelectorAll<SVGGElement>("g.detection")) {
    const box = group.querySelector("rect.box");
    const chip = group.querySelector("rect.chip");
    const text = group.querySelector("text");
    if (!box || !chip || !text) continue;
    const [x0 = 0, y0 = 0] = (box.getAttribute("data-box") ?? "").split(",").map(Number);
    const w = Math.min(view.width, (text.textContent ?? "").length * h * 0.46 + h * 0.5);
    const spot: Placed = { x: Math.min(Math.max(0, x0), view.width - w), y: y0 - h >= 0 ? y0 - h : y0, w, h };
    while (placed.some((p) => overlaps(p, spot)) && spot.y + h <= view.height - h) spot.y += h;
    spot.y = Math.min(spot.y, view.height - h);
    placed.push(spot);
    for (const [k, v] of Object.entries({ x: spot.x, y: spot.y, width: w, height: h }))
      chip.setAttribute(k, String(v));
    for (const [k, v] of Object.entries({ x: spot.x + h * 0.25, y: spot.y + h * 0.78, "font-size": h * 0.8 }))
      text.setAttribute(k, String(v));
  }
  for (const dot of svg.querySelectorAll("circle.keypoint")) dot.setAttribute("r", String(3 * unit));
}

/** The image with its visible overlays as a PNG at `scale` times its natural size (display resolution). */
export async function composite(
  image: HTMLImageElement,
  layers: OverlayLayers,
  show: { boxes: boolean; masks: boolean; keypoints: boolean },
  scale: number,
): Promise<Blob | null> {
  const canvas = document.createElement("canvas");
  canvas.width = Math.round(image.naturalWidth * scale);
  canvas.height = Math.round(image.naturalHeight * scale);
  const ctx = canvas.getContext("2d");
  if (!ctx) return null;
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(image, 0, 0, canvas.width, canvas.height);
  if (show.masks) ctx.drawImage(layers.masks, 0, 0, canvas.width, canvas.height);
  const clone = layers.svg.cloneNode(true) as SVGSVGElement;
  clone.setAttribute("width", String(canvas.width));
  clone.setAttribute("height", String(canvas.height));
  // The exported labels are laid out for the exported size, as the screen's are for the screen.
  layoutLabels(clone, canvas.width / Math.max(1, window.devicePixelRatio || 1));
  for (const node of clone.querySelectorAll(".detection")) if (!show.boxes) node.remove();
  for (const node of clone.querySelectorAll(".pose")) if (!show.keypoints) node.remove();
  for (const node of clone.querySelectorAll<SVGElement>("text"))
    node.setAttribute("font-family", "sans-serif");
  const svgUrl = URL.createObjectURL(
    new Blob([new XMLSerializer().serializeToString(clone)], { type: "image/svg+xml" }),
  );
  const svgImage = new Image();
  await new Promise<void>((resolve, reject) => {
    svgImage.onload = () => resolve();
    svgImage.onerror = () => reject(new Error("overlay render failed"));
    svgImage.src = svgUrl;
  });
  ctx.drawImage(svgImage, 0, 0);
  URL.revokeObjectURL(svgUrl);
  return new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
}
