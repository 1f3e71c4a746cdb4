import { decodeMask } from "@visionllm/protocol";
import fc from "fast-check";
import sharp from "sharp";
import { describe, expect, it } from "vitest";
import { bundleDigest } from "../src/bundle/load";
import type { Manifest } from "../src/bundle/manifest";
import { ImageFeatureCache, RequestCacheView } from "../src/engine/feature-cache";
import { Mulberry32 } from "../src/generation/rng";
import { argmax, findStop, partialStopLength, sampleToken } from "../src/generation/sampler";
import type { PreparedImage } from "../src/model/prompt";
import {
  groupLabel,
  postprocessDetections,
  postprocessPoses,
  toPixelBox,
} from "../src/postprocess/detections";
import { finishEdited, finishGenerated } from "../src/postprocess/image";
import { boxMask, pointMask } from "../src/postprocess/regions";
import { resizeBilinear } from "../src/postprocess/resize";
import { decodeImage, toLowResolution, toPixelValues } from "../src/preprocess/image";
import { appendText, StreamingDetokenizer } from "../src/text/detokenizer";

/** Pure parts of the runner, with hand-built tensors. */

describe("bundle digest", () => {
  const manifest = (files: Record<string, string>) =>
    ({
      files: Object.fromEntries(Object.entries(files).map(([name, sha256]) => [name, { sha256, bytes: 1 }])),
    }) as unknown as Manifest;
  it("fingerprints the files whatever their order, and changes with any one of them", () => {
    const a = bundleDigest(manifest({ "llm.onnx": "1".repeat(64), "tokenizer.json": "2".repeat(64) }));
    expect(a).toMatch(/^[0-9a-f]{64}$/);
    expect(bundleDigest(manifest({ "tokenizer.json": "2".repeat(64), "llm.onnx": "1".repeat(64) }))).toBe(a);
    expect(bundleDigest(manifest({ "llm.onnx": "3".repeat(64), "tokenizer.json": "2".repeat(64) }))).not.toBe(
      a,
    );
    expect(
      bundleDigest(manifest({ "llm2.onnx": "1".repeat(64), "tokenizer.json": "2".repeat(64) })),
    ).not.toBe(a);
  });
});

describe("postprocessing", () => {
  it("turns normalised cx,cy,w,h into pixel boxes of the input image", () => {
    expect(toPixelBox(Float32Array.of(0.5, 0.25, 0.5, 0.5), 0, { width: 200, height: 100 })).toEqual([
      50, 0, 150, 50,
    ]);
  });

  it("clips boxes and keypoints to the image (a box never ends below a 128-pixel image)", () => {
    const [x0, y0, x1, y1] = toPixelBox(Float32Array.of(0.5, 0.9, 0.4, 0.4), 0, { width: 128, height: 128 });
    expect([x0, y0, x1].map((v) => Math.round(v * 10) / 10)).toEqual([38.4, 89.6, 89.6]);
    expect(y1).toBe(128);
    const [pose] = postprocessPoses(
      {
        logits: Float32Array.of(3),
        boxes: Float32Array.of(0.05, 0.5, 0.2, 0.2),
        keypoints: Float32Array.of(-0.1, 0.5, 0.5, 1.2),
        keypointScores: Float32Array.of(1, 1),
      },
      ["head", "neck"],
      { width: 100, height: 50 },
      0.3,
    );
    expect(pose?.box[0]).toBe(0);
    expect(pose?.keypoints.map((k) => [k.x, k.y])).toEqual([
      [0, 25],
      [50, 50],
    ]);
  });

  it("keeps detections above the threshold, best first, with masks resized to the image", () => {
    const logits = Float32Array.of(-5, 3, 0.5);
    const boxes = Float32Array.of(0.1, 0.1, 0.1, 0.1, 0.5, 0.5, 0.5, 0.5, 0.9, 0.9, 0.1, 0.1);
    const masks = new Float32Array(3 * 2 * 2).fill(-1);
    masks.set([5, 5, -5, -5], 4); // query 1: top half inside
    const out = postprocessDetections(
      { logits, boxes, masks, maskSize: [2, 2] },
      "circle",
      { width: 4, height: 4 },
      {
        scoreThreshold: 0.3,
        maskThreshold: 0,
        top1: false,
        withMasks: true,
      },
    );
    expect(out.map((d) => d.score.toFixed(3))).toEqual(["0.953", "0.622"]);
    expect(out[0]?.box).toEqual([1, 1, 3, 3]);
    const mask = decodeMask(out[0]?.mask ?? { format: "rle-row-major", width: 1, height: 1, counts: [1] });
    expect(Array.from(mask)).toEqual([1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
    const grounding = postprocessDetections(
      { logits, boxes, masks, maskSize: [2, 2] },
      "x",
      { width: 4, height: 4 },
      {
        scoreThreshold: 0.99,
        maskThreshold: 0,
        top1: true,
        withMasks: false,
      },
    );
    expect(grounding).toHaveLength(1);
  });

  it("names keypoints in the manifest's order, in pixels", () => {
    const poses = postprocessPoses(
      {
        logits: Float32Array.of(4),
        boxes: Float32Array.of(0.5, 0.5, 0.2, 0.8),
        keypoints: Float32Array.of(0.5, 0.1, 0.5, 0.3),
        keypointScores: Float32Array.of(0.9, 0.8),
      },
      ["head", "neck"],
      { width: 100, height: 200 },
      0.3,
    );
    expect(poses[0]?.keypoints).toEqual([
      { name: "head", x: expect.closeTo(50, 4), y: expect.closeTo(20, 4), score: expect.closeTo(0.9, 5) },
      { name: "neck", x: expect.closeTo(50, 4), y: expect.closeTo(60, 4), score: expect.closeTo(0.8, 5) },
    ]);
  });

  it("labels a routing group with the phrase it follows", () => {
    const format = { label_separator: ",", label_leads: ["results for", "with keypoints"] };
    expect(groupLabel("Yes, here are the results for red circle", format)).toBe("red circle");
    expect(groupLabel("Yes, here are the results for circle, person", format)).toBe("person");
    expect(groupLabel("Yes, here are the results for person, with keypoints head", format)).toBe("head");
    expect(groupLabel("Yes, the leftmost shape", format)).toBe("the leftmost shape");
  });

  it("resizes bilinearly like PyTorch (align_corners=False)", () => {
    expect(Array.from(resizeBilinear(Float32Array.of(0, 1), 1, 2, 1, 4))).toEqual([0, 0.25, 0.75, 1]);
    expect(Array.from(resizeBilinear(Float32Array.of(7), 1, 1, 2, 2))).toEqual([7, 7, 7, 7]);
  });

  it("maps generated pixels from [-1, 1] to bytes", () => {
    const x = new Float32Array(3).fill(1);
    expect(Array.from(finishGenerated(x, 1, 1))).toEqual([255, 255, 255]);
  });

  it("leaves every pixel an edit did not touch exactly as it was", () => {
    const source = new Uint8Array(4 * 4 * 3).fill(100);
    const low = toLowResolution(source, 4, 2);
    const x = new Float32Array(low);
    x[0] = (low[0] ?? 0) + 1; // red channel of the top-left cell changes a lot
    const out = finishEdited(x, low, source, 2, 4, 0.15);
    const changed = [...out].map((v, i) => (v !== source[i] ? i : -1)).filter((i) => i >= 0);
    // Only the red channel of the four pixels of the top-left 2x2 cell moved.
    expect(changed).toEqual([0, 3, 12, 15]);
  });

  it("draws box and point regions on the model's grid", () => {
    const box = boxMask([2, 2, 6, 4], 8, { sx: 1, sy: 1 });
    expect(box.reduce((a, b) => a + b, 0)).toBe(8);
    const point = pointMask([4, 4], 16, { sx: 1, sy: 1 });
    expect(point.reduce((a, b) => a + b, 0)).toBe(29);
  });
});

describe("sampling", () => {
  it("is argmax at temperature 0 and never picks a banned token", () => {
    const logits = Float32Array.of(1, 5, 3);
    expect(argmax(logits)).toBe(1);
    expect(sampleToken(logits, { temperature: 0, topK: 0, topP: 1 }, new Mulberry32(1), new Set([1]))).toBe(
      2,
    );
  });

  it("is reproducible for a seed and stays inside top-k / top-p", () => {
    fc.assert(
      fc.property(
        fc.array(fc.double({ min: -5, max: 5, noNaN: true }), { minLength: 5, maxLength: 30 }),
        fc.nat(),
        (values, seed) => {
          const logits = Float32Array.from(values);
          const params = { temperature: 0.8, topK: 3, topP: 0.9 };
          const a = sampleToken(logits, params, new Mulberry32(seed));
          expect(sampleToken(logits, params, new Mulberry32(seed))).toBe(a);
          const top3 = Array.from(logits.keys())
            .sort((i, j) => (logits[j] ?? 0) - (logits[i] ?? 0))
            .slice(0, 3);
          expect(top3.map((i) => logits[i])).toContain(logits[a]);
        },
      ),
    );
  });

  it("finds stop sequences and holds back a partial one", () => {
    expect(findStop("hello END world", ["END"])).toBe(6);
    expect(partialStopLength("hello EN", ["END"])).toBe(2);
    expect(partialStopLength("hello", ["END"])).toBe(0);
  });

  it("draws the same noise as the Python reference (mulberry32 + Box-Muller)", () => {
    const rng = new Mulberry32(7);
    // model/nano/infer.py: Mulberry32(7).uniform() == 0.011704753153026104
    expect(rng.next()).toBe(0.011704753153026104);
  });
});

describe("streaming detokenisation", () => {
  it("drops the template's space before an answer, and only there", () => {
    let answer = "";
    for (const piece of [" ", " Yes,", " here", "  are"]) answer = appendText(answer, piece);
    expect(answer).toBe("Yes, here  are");
  });

  it("never emits a broken character, whatever the token boundaries", () => {
    const bytesOf = (ids: readonly number[]) => new Uint8Array(ids);
    const decode = (ids: readonly number[]) => new TextDecoder().decode(bytesOf(ids));
    fc.assert(
      fc.property(
        fc.string({ unit: "grapheme", maxLength: 20 }).filter((t) => !t.includes("\uFFFD")),
        (text) => {
          const bytes = [...new TextEncoder().encode(text)];
          const detok = new StreamingDetokenizer(decode);
          let out = "";
          for (const b of bytes) {
            const delta = detok.push(b);
            expect(delta.includes("\uFFFD")).toBe(false);
            out += delta;
          }
          out += detok.flush();
          expect(out).toBe(text);
        },
      ),
    );
  });

  it("decodes a bounded window per token, not the whole answer", () => {
    let longest = 0;
    const decode = (ids: readonly number[]) => {
      // As @huggingface/tokenizers does.
      if (ids.length === 0) throw new Error("token_ids must be a non-empty array of integers.");
      longest = Math.max(longest, ids.length);
      return new TextDecoder().decode(new Uint8Array(ids));
    };
    const text = "héllo wörld, ".repeat(80);
    const detok = new StreamingDetokenizer(decode);
    let out = "";
    for (const b of new TextEncoder().encode(text)) out += detok.push(b);
    expect(out + detok.flush()).toBe(text);
    expect(longest).toBeLessThanOrEqual(4);
  });
});

describe("preprocessing", () => {
  it("honours EXIF orientation", async () => {
    const raw = await sharp({
      create: { width: 40, height: 20, channels: 3, background: { r: 255, g: 0, b: 0 } },
    })
      .jpeg()
      .withMetadata({ orientation: 6 })
      .toBuffer();
    const image = await decodeImage(new Uint8Array(raw), 1 << 20);
    expect([image.width, image.height]).toEqual([20, 40]);
  });

  it("refuses an image over the pixel limit from its header", async () => {
    const png = await sharp({ create: { width: 300, height: 300, channels: 3, background: "#fff" } })
      .png()
      .toBuffer();
    await expect(decodeImage(new Uint8Array(png), 10_000)).rejects.toMatchObject({
      code: "payload_too_large",
    });
    await expect(decodeImage(new Uint8Array([1, 2, 3]), 10_000)).rejects.toMatchObject({
      code: "invalid_request",
    });
  });

  it("normalises as the manifest says", () => {
    const px = toPixelValues(Uint8Array.of(255, 0, 127.5), 1, {
      mean: [0.5, 0.5, 0.5],
      std: [0.5, 0.5, 0.5],
    });
    expect(Array.from(px).map((v) => Math.round(v * 100) / 100)).toEqual([1, -1, -0.0]);
  });
});

describe("feature cache", () => {
  it("counts each request's own hits and misses, whatever runs beside it", () => {
    const shared = new ImageFeatureCache(1 << 20);
    const image = {
      rgb: new Uint8Array(3),
      width: 1,
      height: 1,
      features: {
        pixelValues: new Float32Array(3),
        imageEmbeds: new Float32Array(4),
        levels: { data: new Float32Array(4) },
      },
    } as unknown as PreparedImage;
    const a = new RequestCacheView(shared);
    const b = new RequestCacheView(shared);
    a.get("x");
    a.set("x", image);
    b.get("x");
    b.get("x");
    a.get("y");
    expect([a.hits, a.misses]).toEqual([0, 2]);
    expect([b.hits, b.misses]).toEqual([2, 0]);
    expect([shared.hits, shared.misses]).toEqual([2, 2]);
  });
});
