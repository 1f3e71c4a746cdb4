/** Visual prompts rasterised on the model's square grid, as training drew them (model/nano/tasks.py). */

export interface GridScale {
  sx: number; // model pixels per input pixel, x
  sy: number;
}

export function boxMask(
  box: readonly [number, number, number, number],
  size: number,
  s: GridScale,
): Uint8Array {
  const out = new Uint8Array(size * size);
  const x0 = Math.max(0, Math.round(box[0] * s.sx));
  const y0 = Math.max(0, Math.round(box[1] * s.sy));
  const x1 = Math.min(size, Math.round(box[2] * s.sx));
  const y1 = Math.min(size, Math.round(box[3] * s.sy));
  for (let y = y0; y < y1; y++) out.fill(1, y * size + x0, y * size + Math.max(x0, x1));
  return out;
}

/** A disk of radius 3 model pixels around the point. */
export function pointMask(point: readonly [number, number], size: number, s: GridScale): Uint8Array {
  const out = new Uint8Array(size * size);
  const px = Math.floor(point[0] * s.sx);
  const py = Math.floor(point[1] * s.sy);
  for (let y = Math.max(0, py - 3); y <= Math.min(size - 1, py + 3); y++) {
    for (let x = Math.max(0, px - 3); x <= Math.min(size - 1, px + 3); x++) {
      if ((y - py) ** 2 + (x - px) ** 2 <= 9) out[y * size + x] = 1;
    }
  }
  return out;
}
