/** Bilinear resize of one [h,w] plane, PyTorch's align_corners=False convention. */
export function resizeBilinear(
  src: Float32Array,
  h: number,
  w: number,
  outH: number,
  outW: number,
): Float32Array {
  const out = new Float32Array(outH * outW);
  const sy = h / outH;
  const sx = w / outW;
  for (let y = 0; y < outH; y++) {
    const fy = Math.max(0, (y + 0.5) * sy - 0.5);
    const y0 = Math.min(h - 1, Math.floor(fy));
    const y1 = Math.min(h - 1, y0 + 1);
    const ly = fy - y0;
    for (let x = 0; x < outW; x++) {
      const fx = Math.max(0, (x + 0.5) * sx - 0.5);
      const x0 = Math.min(w - 1, Math.floor(fx));
      const x1 = Math.min(w - 1, x0 + 1);
      const lx = fx - x0;
      const top = (src[y0 * w + x0] ?? 0) * (1 - lx) + (src[y0 * w + x1] ?? 0) * lx;
      const bottom = (src[y1 * w + x0] ?? 0) * (1 - lx) + (src[y1 * w + x1] ?? 0) * lx;
      out[y * outW + x] = top * (1 - ly) + bottom * ly;
    }
  }
  return out;
}
