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

/**
 * Picks the next token from one row of logits [vocab]. `banned` ids are never chosen. It runs once
 * per token per sequence, so the common case (no top-k, no top-p) draws from the whole
 * distribution in index order without sorting; only truncation sorts the candidates.
 */
export function sampleToken(
  logits: Float32Array,
  params: SamplingParams,
  rng: Mulberry32,
  banned: ReadonlySet<number> = new Set(),
): number {
  const n = logits.length;
  // 1 where a token may be chosen: not banned, and a finite logit.
  const open = new Uint8Array(n);
  for (let i = 0; i < n; i++) open[i] = Number.isFinite(logits[i] ?? Number.NaN) ? 1 : 0;
  for (const id of banned) if (id < n) open[id] = 0;
  let best = -1;
  for (let i = 0; i < n; i++) if (open[i] && (best < 0 || (logits[i] ?? 0) > (logits[best] ?? 0))) best = i;
  if (params.temperature <= 0 || best < 0) return Math.max(0, best);
  const top = logits[best] ?? 0;
  const weights = new Float64Array(n);
  for (let i = 0; i < n; i++)
    if (open[i]) weights[i] = Math.exp(((logits[i] ?? 0) - top) / params.temperature);
  if (params.topK <= 0 && params.topP >= 1) return draw(weights, null, rng);
  let order = new Int32Array(n);
  let count = 0;
  for (let i = 0; i < n; i++) if ((weights[i] ?? 0) > 0) order[count++] = i;
  order = order.subarray(0, count);
  order.sort((a, b) => (logits[b] ?? 0) - (logits[a] ?? 0) || a - b);
  if (params.topK > 0) order = order.subarray(0, params.topK);
  // top-p keeps the smallest prefix whose probability mass reaches p (at least one token).
  if (params.topP < 1) {
    const total = order.reduce((a, i) => a + (weights[i] ?? 0), 0);
    let mass = 0;
    for (let k = 0; k < order.length; k++) {
      mass += (weights[order[k] ?? 0] ?? 0) / total;
      if (mass >= params.topP) {
        order = order.subarray(0, k + 1);
        break;
      }
    }
  }
  return draw(weights, order, rng);
}

/** Draws a token in proportion to `weights`, over `order` (best first) or over every id. */
function draw(weights: Float64Array, order: Int32Array | null, rng: Mulberry32): number {
  const count = order ? order.length : weights.length;
  const id = (k: number) => (order ? (order[k] ?? 0) : k);
  let total = 0;
  for (let k = 0; k < count; k++) total += weights[id(k)] ?? 0;
  let u = rng.next() * total;
  let last = id(0);
  for (let k = 0; k < count; k++) {
    const w = weights[id(k)] ?? 0;
    if (w <= 0) continue;
    last = id(k);
    u -= w;
    if (u <= 0) return last;
  }
  return last;
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
