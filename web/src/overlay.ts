import type { EventOf } from "@visionllm/protocol";
import { decodeMask } from "@visionllm/protocol/lite";

/** Super-link outputs drawn over the image: SVG for boxes and skeletons, a canvas for masks. */

const SVG = "http://www.w3.org/2000/svg";
const PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45"];

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

export function resetOverlay(layers: OverlayLayers, width: number, height: number): void {
  layers.svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  layers.svg.replaceChildren();
  layers.masks.width = width;
  layers.masks.height = height;
  layers.masks.getContext("2d")?.clearRect(0, 0, width, height);
}

export function drawDetections(layers: OverlayLayers, event: EventOf<"detections">): void {
  const color = PALETTE[event.group % PALETTE.length] ?? "#e6194b";
  const stroke = Math.max(1, Number(layers.svg.viewBox.baseVal.width) / 200);
  for (const item of event.items) {
    const [x0, y0, x1, y1] = item.box;
    const group = el("g", {
      class: "detection",
      "data-label": item.label,
      "data-score": item.score.toFixed(3),
    });
    group.append(
      el("rect", {
        x: x0,
        y: y0,
        width: Math.max(0, x1 - x0),
        height: Math.max(0, y1 - y0),
        fill: "none",
        stroke: color,
        "stroke-width": stroke,
        "data-box": [x0, y0, x1, y1].map((v) => v.toFixed(1)).join(","),
      }),
    );
    const label = el("text", {
      x: x0 + stroke,
      y: Math.max(y0 - stroke, stroke * 6),
      fill: color,
      "font-size": stroke * 7,
    });
    label.textContent = `${item.label} ${(item.score * 100).toFixed(0)}%`;
    group.append(label);
    layers.svg.append(group);
    if (item.mask) paintMask(layers.masks, item.mask, color);
  }
}

function paintMask(
  canvas: HTMLCanvasElement,
  mask: NonNullable<EventOf<"detections">["items"][number]["mask"]>,
  color: string,
): void {
  const ctx = canvas.getContext("2d");
  if (!ctx) return;
  const bits = decodeMask(mask);
  const r = Number.parseInt(color.slice(1, 3), 16);
  const g = Number.parseInt(color.slice(3, 5), 16);
  const b = Number.parseInt(color.slice(5, 7), 16);
  const layer = new ImageData(mask.width, mask.height);
  for (let i = 0; i < bits.length; i++) {
    if (!bits[i]) continue;
    layer.data.set([r, g, b, 110], i * 4);
  }
  const tmp = document.createElement("canvas");
  tmp.width = mask.width;
  tmp.height = mask.height;
  tmp.getContext("2d")?.putImageData(layer, 0, 0);
  ctx.drawImage(tmp, 0, 0, canvas.width, canvas.height);
}

export function drawKeypoints(layers: OverlayLayers, event: EventOf<"keypoints">): void {
  const stroke = Math.max(1, Number(layers.svg.viewBox.baseVal.width) / 150);
  for (const pose of event.items) {
    const group = el("g", { class: "pose", "data-score": pose.score.toFixed(3) });
    for (const [a, b] of event.skeleton) {
      const p = pose.keypoints[a];
      const q = pose.keypoints[b];
      if (!p || !q) continue;
      group.append(
        el("line", { x1: p.x, y1: p.y, x2: q.x, y2: q.y, stroke: "#ff00a0", "stroke-width": stroke }),
      );
    }
    for (const k of pose.keypoints) {
      group.append(el("circle", { cx: k.x, cy: k.y, r: stroke * 1.2, fill: "#00e0ff", "data-name": k.name }));
    }
    layers.svg.append(group);
  }
}

/** The image with every visible overlay, as a PNG blob (for the download button). */
export async function composite(
  image: HTMLImageElement,
  layers: OverlayLayers,
  show: { boxes: boolean; masks: boolean; keypoints: boolean },
): Promise<Blob | null> {
  const canvas = document.createElement("canvas");
  canvas.width = image.naturalWidth;
  canvas.height = image.naturalHeight;
  const ctx = canvas.getContext("2d");
  if (!ctx) return null;
  ctx.drawImage(image, 0, 0);
  if (show.masks) ctx.drawImage(layers.masks, 0, 0, canvas.width, canvas.height);
  const clone = layers.svg.cloneNode(true) as SVGSVGElement;
  clone.setAttribute("width", String(canvas.width));
  clone.setAttribute("height", String(canvas.height));
  for (const node of clone.querySelectorAll(".detection")) if (!show.boxes) node.remove();
  for (const node of clone.querySelectorAll(".pose")) if (!show.keypoints) node.remove();
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
