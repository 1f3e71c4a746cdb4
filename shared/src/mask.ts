/** Masks on the wire: run lengths over the row-major pixels, starting with a run of zeros. No dependencies. */

export interface RleMask {
  format: "rle-row-major";
  width: number;
  height: number;
  counts: number[];
}

/** Run-length encodes a row-major binary mask (1 = inside). */
export function encodeMask(bits: ArrayLike<number | boolean>, width: number, height: number): RleMask {
  const counts: number[] = [];
  let current = 0;
  let run = 0;
  for (let i = 0; i < width * height; i++) {
    const v = bits[i] ? 1 : 0;
    if (v !== current) {
      counts.push(run);
      run = 0;
      current = v;
    }
    run++;
  }
  counts.push(run);
  return { format: "rle-row-major", width, height, counts };
}

export function decodeMask(mask: RleMask): Uint8Array {
  const out = new Uint8Array(mask.width * mask.height);
  let offset = 0;
  let value = 0;
  for (const run of mask.counts) {
    if (value) out.fill(1, offset, offset + run);
    offset += run;
    value ^= 1;
  }
  return out;
}
