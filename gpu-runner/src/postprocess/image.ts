import { resizeBilinear } from "./resize";

/** Generator outputs -> RGB bytes. Pure functions. */

const toByte = (v: number) => Math.max(0, Math.min(255, Math.round(v)));

/** [3,r,r] in [-1,1] -> RGB [size,size,3], bilinear upsampling. */
export function finishGenerated(x: Float32Array, res: number, size: number): Uint8Array {
  const out = new Uint8Array(size * size * 3);
  for (let c = 0; c < 3; c++) {
    const plane = resizeBilinear(x.subarray(c * res * res, (c + 1) * res * res), res, res, size, size);
    for (let i = 0; i < size * size; i++)
      out[i * 3 + c] = toByte((Math.max(-1, Math.min(1, plane[i] ?? 0)) + 1) * 127.5);
  }
  return out;
}

/**
 * An edit is applied as a low-resolution delta on the full-resolution source: cells whose largest
 * channel change is under `threshold` are left exactly as they were, the rest move by the delta
 * (nearest upsampling), so the unedited part of the picture keeps every pixel.
 */
export function finishEdited(
  x: Float32Array,
  sourceLow: Float32Array,
  sourceRgb: Uint8Array,
  res: number,
  size: number,
  threshold: number,
): Uint8Array {
  const out = new Uint8Array(sourceRgb);
  const plane = res * res;
  const f = size / res;
  for (let cell = 0; cell < plane; cell++) {
    const delta = [0, 1, 2].map((c) =>
      Math.max(-2, Math.min(2, (x[c * plane + cell] ?? 0) - (sourceLow[c * plane + cell] ?? 0))),
    );
    if (Math.max(...delta.map(Math.abs)) <= threshold) continue;
    const cy = Math.floor(cell / res);
    const cx = cell % res;
    for (let dy = 0; dy < f; dy++) {
      for (let dx = 0; dx < f; dx++) {
        const p = ((cy * f + dy) * size + cx * f + dx) * 3;
        for (let c = 0; c < 3; c++) out[p + c] = toByte((sourceRgb[p + c] ?? 0) + (delta[c] ?? 0) * 127.5);
      }
    }
  }
  return out;
}
