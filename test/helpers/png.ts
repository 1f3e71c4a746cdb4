import { deflateSync } from "node:zlib";

/** Hand-built PNGs for refusal tests: headers that lie about their size, data that ends early. */

const crcTable = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc(buf: Buffer): number {
  let c = 0xffffffff;
  for (const b of buf) c = (crcTable[(c ^ b) & 0xff] ?? 0) ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type: string, data: Buffer): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const body = Buffer.concat([Buffer.from(type), data]);
  const sum = Buffer.alloc(4);
  sum.writeUInt32BE(crc(body));
  return Buffer.concat([len, body, sum]);
}

/** An RGB PNG whose header claims width x height over `idat` (by default a few zero bytes). */
export function pngClaiming(
  width: number,
  height: number,
  idat = deflateSync(Buffer.alloc(100_000)),
): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr.set([8, 2, 0, 0, 0], 8);
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk("IHDR", ihdr),
    chunk("IDAT", idat),
    chunk("IEND", Buffer.alloc(0)),
  ]);
}

/** A valid-looking 64 x 64 PNG whose compressed pixel stream is garbage (CRCs correct). */
export function pngWithGarbageData(): Buffer {
  return pngClaiming(64, 64, Buffer.from(Array.from({ length: 2000 }, (_, i) => (i * 7919) % 251)));
}

export const dataUrl = (png: Buffer) => `data:image/png;base64,${png.toString("base64")}`;
