import type { Mulberry32 } from "./rng";

/** Logits processors -> sampler. Temperature 0 is argmax; otherwise temperature, top-k, top-p. */

export interface SamplingParams {
  temperature: number;
  topK: number;
  topP: number;
}

export function argmax(logits: Float32Array): number {
  let best = 0;
  let bestValue = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < logits.length; i++) {
    const v = logits[i] ?? Number.NEGATIVE_INFINITY;
    if (v > bestValue) {
      bestValue = v;
      best = i;
    }
  }
  return best;
}

/** Picks the next token from one row of logits [vocab]. `banned` ids are never chosen. */
export function sampleToken(
  logits: Float32Array,
  params: SamplingParams,
  rng: Mulberry32,
  banned: ReadonlySet<number> = new Set(),
): number {
  const row = new Float32Array(logits);
  for (const id of banned) if (id < row.length) row[id] = Number.NEGATIVE_INFINITY;
  if (params.temperature <= 0) return argmax(row);
  let candidates = Array.from(row.keys()).filter((i) => Number.isFinite(row[i] ?? Number.NEGATIVE_INFINITY));
  candidates.sort((a, b) => (row[b] ?? 0) - (row[a] ?? 0));
  if (params.topK > 0) candidates = candidates.slice(0, params.topK);
  const top = row[candidates[0] ?? 0] ?? 0;
  const weights = candidates.map((i) => Math.exp(((row[i] ?? 0) - top) / params.temperature));
  const total = weights.reduce((a, b) => a + b, 0);
  // top-p keeps the smallest prefix whose probability mass reaches p (at least one token).
  let kept = candidates.length;
  if (params.topP < 1) {
    let mass = 0;
    for (let k = 0; k < candidates.length; k++) {
      mass += (weights[k] ?? 0) / total;
      if (mass >= params.topP) {
        kept = k + 1;
        break;
      }
    }
  }
  const keptTotal = weights.slice(0, kept).reduce((a, b) => a + b, 0);
  let u = rng.next() * keptTotal;
  for (let k = 0; k < kept; k++) {
    u -= weights[k] ?? 0;
    if (u <= 0) return candidates[k] ?? 0;
  }
  return candidates[kept - 1] ?? 0;
}

/** Finds the earliest stop sequence in `text`; returns the index where the visible text must end. */
export function findStop(text: string, stops: readonly string[]): number {
  let cut = -1;
  for (const stop of stops) {
    const i = text.indexOf(stop);
    if (i >= 0 && (cut < 0 || i < cut)) cut = i;
  }
  return cut;
}

/** Length of the longest suffix of `text` that is a proper prefix of a stop sequence: hold it back. */
export function partialStopLength(text: string, stops: readonly string[]): number {
  let hold = 0;
  for (const stop of stops) {
    for (let n = Math.min(stop.length - 1, text.length); n > hold; n--) {
      if (text.endsWith(stop.slice(0, n))) {
        hold = n;
        break;
      }
    }
  }
  return hold;
}
