import { type Backend, float32, type HostTensor, int64, type Session } from "../backend/onnx";
import type { Bundle, Table } from "../bundle/load";
import {
  type AnyGraphName,
  GRAPH_NAMES,
  type GraphName,
  type Manifest,
  OPTIONAL_GRAPH_NAMES,
  type OptionalGraphName,
  type TableName,
} from "../bundle/manifest";
import { TextTokenizer } from "../text/tokenizer";
import { copyHeads, type KVCache, KVSlots, ownPlace } from "./kv-slots";

export type { KVCache } from "./kv-slots";

/**
 * VisionLLM v2 as a table of named ONNX sessions plus the code that wires them. Tensors are flat
 * Float32Arrays; shapes are in the comments ([batch, ...]). Graphs run at batch 1, except the LLM's
 * decode step, which the scheduler batches across sequences through `llmBatchStep`: on the bundle's
 * `llm_decode` graph over `KVSlots` where the bundle has one, else on `llm` with a resident batch.
 */

interface ResidentBatch {
  /** Row i of every tensor belongs to caches[i]. */
  caches: KVCache[];
  /** Positions per row, left padding included. */
  total: number;
  /** Per layer: key then value, [b, heads, total, head_dim]. */
  tensors: Float32Array[];
}

export interface ImageFeatures {
  pixelValues: Float32Array; // [1,3,S,S]
  levels: HostTensor; // [1,3,P,Dv]
  imageEmbeds: Float32Array; // [image_tokens, D]
}

export class VisionLLM {
  readonly manifest: Manifest;
  readonly tokenizer: TextTokenizer;
  readonly backend: Backend;
  readonly #sessions: Record<GraphName, Session> & Partial<Record<OptionalGraphName, Session>>;
  /** Present when batched decode runs on `llm_decode`. */
  readonly #slots: KVSlots | undefined;
  readonly #tables: Record<TableName, Table>;
  readonly dim: number;
  readonly heads: number;
  readonly headDim: number;

  private constructor(
    bundle: Bundle,
    backend: Backend,
    sessions: Record<GraphName, Session> & Partial<Record<OptionalGraphName, Session>>,
  ) {
    this.manifest = bundle.manifest;
    this.tokenizer = new TextTokenizer(bundle.tokenizerJson);
    this.backend = backend;
    this.#sessions = sessions;
    this.#tables = bundle.tables;
    this.dim = bundle.manifest.config.llm_dim;
    this.heads = bundle.manifest.config.llm_heads;
    this.headDim = this.dim / this.heads;
    this.#slots = sessions.llm_decode
      ? new KVSlots(bundle.manifest.config.llm_layers, this.heads, this.headDim)
      : undefined;
  }

  /**
   * `decodeGraph: false` ignores the bundle's `llm_decode` graph, so that both batched decode paths
   * can be compared (benchmarks) and checked against each other (tests).
   */
  static async load(
    bundle: Bundle,
    backend: Backend,
    options: { decodeGraph?: boolean } = {},
  ): Promise<VisionLLM> {
    const sessions = {} as Record<GraphName, Session> & Partial<Record<OptionalGraphName, Session>>;
    for (const name of GRAPH_NAMES) sessions[name] = await backend.createSession(bundle.graphs[name], name);
    const decode = bundle.graphs.llm_decode;
    if (decode && options.decodeGraph !== false)
      sessions.llm_decode = await backend.createSession(decode, "llm_decode");
    return new VisionLLM(bundle, backend, sessions);
  }

  /** Which graph the batched decode step runs on. */
  get decodePath(): "llm_decode" | "llm" {
    return this.#slots ? "llm_decode" : "llm";
  }

  async release(): Promise<void> {
    for (const name of [...GRAPH_NAMES, ...OPTIONAL_GRAPH_NAMES]) await this.#sessions[name]?.release();
  }

  /**
   * Every graph run goes through one queue: onnxruntime-web executes on one wasm heap (or one GPU
   * queue), so runs are serialised here rather than interleaved by accident. Runs of one graph that
   * wait in the queue together (concurrent requests' vision encoders, decoders, generator steps)
   * run as one batch along dimension 0 when their other dimensions agree: every graph but the LLM
   * treats its rows independently.
   */
  async run(name: AnyGraphName, feeds: Record<string, HostTensor>): Promise<Record<string, HostTensor>> {
    if (name === "llm" || name === "llm_decode") return this.#exclusive(() => this.#session(name).run(feeds));
    return new Promise((resolve, reject) => {
      const waiting = this.#waiting.get(name) ?? [];
      waiting.push({ feeds, resolve, reject });
      this.#waiting.set(name, waiting);
      this.#exclusive(() => this.#runWaiting(name)).catch(reject);
    });
  }

  /** Called after every run of a non-LLM graph with the calls it served and its duration. */
  onGraphBatch?: (name: AnyGraphName, calls: number, seconds: number) => void;

  readonly #waiting = new Map<AnyGraphName, WaitingRun[]>();

  /** Runs the first waiting call of `name` together with every waiting call of the same shape. */
  async #runWaiting(name: AnyGraphName): Promise<void> {
    const waiting = this.#waiting.get(name) ?? [];
    const first = waiting[0];
    if (!first) return; // served by an earlier batch
    const group = waiting.filter((call) => sameShape(call.feeds, first.feeds));
    this.#waiting.set(
      name,
      waiting.filter((call) => !group.includes(call)),
    );
    try {
      const started = performance.now();
      const out = await this.#session(name).run(
        group.length === 1 ? first.feeds : concatRows(group.map((c) => c.feeds)),
      );
      this.onGraphBatch?.(name, group.length, (performance.now() - started) / 1000);
      if (group.length === 1) first.resolve(out);
      else
        splitRows(
          out,
          group.map((c) => rowsOf(c.feeds)),
        ).forEach((part, i) => {
          group[i]?.resolve(part);
        });
    } catch (error) {
      for (const call of group) call.reject(error);
    }
  }

  #session(name: AnyGraphName): Session {
    const session = this.#sessions[name];
    if (!session) throw new Error(`Graph ${name} is not loaded: the bundle has none.`);
    return session;
  }

  #queue: Promise<void> = Promise.resolve();
  /** True while a queued section runs; KV rows may not move then (a step may be reading them). */
  #busy = false;
  /** Caches released while a section ran: their slot rows are freed when it ends. */
  readonly #released = new Set<KVCache>();

  /** Runs `section` alone on the queue: graph runs, and every change to the KV slots. */
  async #exclusive<T>(section: () => Promise<T>): Promise<T> {
    const previous = this.#queue;
    let release = () => {};
    this.#queue = new Promise<void>((resolve) => {
      release = resolve;
    });
    await previous;
    this.#busy = true;
    try {
      return await section();
    } finally {
      this.#busy = false;
      for (const cache of this.#released) this.#empty(cache);
      this.#released.clear();
      release();
    }
  }

  /** Rows of a bundle table, e.g. the token embeddings of `ids` -> [n, D]. */
  tableRows(name: TableName, rows: readonly number[]): Float32Array {
    const table = this.#tables[name];
    const width = table.shape[1] ?? 0;
    const out = new Float32Array(rows.length * width);
    rows.forEach((row, i) => {
      out.set(table.data.subarray(row * width, (row + 1) * width), i * width);
    });
    return out;
  }

  tableSize(name: TableName): number {
    return this.#tables[name].shape[0] ?? 0;
  }

  async encodeImage(pixelValues: Float32Array): Promise<ImageFeatures> {
    const s = this.manifest.preprocessing.image_size;
    const vision = await this.run("vision_encoder", { pixel_values: float32(pixelValues, [1, 3, s, s]) });
    const features = need(vision, "image_features");
    const projected = await this.run("projector", { image_features: features });
    return {
      pixelValues,
      levels: need(vision, "vision_levels"),
      imageEmbeds: need(projected, "image_embeds").data as Float32Array,
    };
  }

  async regionEmbed(image: ImageFeatures, mask: Uint8Array): Promise<Float32Array> {
    const s = this.manifest.preprocessing.image_size;
    const out = await this.run("region_encoder", {
      pixel_values: float32(image.pixelValues, [1, 3, s, s]),
      region_mask: float32(Float32Array.from(mask), [1, 1, s, s]),
      vision_levels: image.levels,
    });
    return need(out, "region_embeds").data as Float32Array;
  }

  emptyCache(): KVCache {
    const layers = Array.from({ length: this.manifest.config.llm_layers }, () => ({
      key: new Float32Array(0),
      value: new Float32Array(0),
    }));
    return { layers, length: 0 };
  }

  /**
   * Runs `embeds` [S, D] after the cached prefix; returns logits [S, V] and post-norm hidden states
   * [S, D], and extends the cache.
   */
  async llmStep(
    embeds: Float32Array,
    cache: KVCache,
  ): Promise<{ logits: Float32Array; hidden: Float32Array }> {
    return this.#exclusive(() => this.#llmStep(embeds, cache));
  }

  async #llmStep(
    embeds: Float32Array,
    cache: KVCache,
  ): Promise<{ logits: Float32Array; hidden: Float32Array }> {
    this.#settleIfResident(cache);
    this.#slots?.evict(cache, true);
    const s = embeds.length / this.dim;
    const total = cache.length + s;
    const feeds: Record<string, HostTensor> = {
      inputs_embeds: float32(embeds, [1, s, this.dim]),
      attention_mask: int64(new BigInt64Array(total).fill(1n), [1, total]),
      position_ids: int64(
        BigInt64Array.from({ length: s }, (_, i) => BigInt(cache.length + i)),
        [1, s],
      ),
    };
    cache.layers.forEach((layer, i) => {
      feeds[`past_key_values.${i}.key`] = float32(layer.key, [1, this.heads, cache.length, this.headDim]);
      feeds[`past_key_values.${i}.value`] = float32(layer.value, [1, this.heads, cache.length, this.headDim]);
    });
    const out = await this.#session("llm").run(feeds);
    cache.layers.forEach((layer, i) => {
      layer.key = need(out, `present.${i}.key`).data as Float32Array;
      layer.value = need(out, `present.${i}.value`).data as Float32Array;
    });
    cache.length = total;
    return {
      logits: need(out, "logits").data as Float32Array,
      hidden: need(out, "last_hidden_state").data as Float32Array,
    };
  }

  /**
   * The KV cache of the last batched step, kept as the padded [b, heads, total, head_dim] tensors
   * the graph returned: while the same sequences step together again (the steady state of
   * continuous batching), those tensors are fed straight back as the next step's past, with no
   * per-sequence unpacking and repacking. Members' own `layers` are stale while they are resident;
   * every other use of a cache goes through `#settle`, which copies the rows back out.
   */
  #resident: ResidentBatch | undefined;

  /** Copies every resident sequence's rows back into its own cache and drops the batch tensors. */
  #settle(): void {
    const r = this.#resident;
    if (!r) return;
    this.#resident = undefined;
    r.caches.forEach((cache, i) => {
      const len = cache.length;
      cache.layers.forEach((layer, l) => {
        for (const kind of ["key", "value"] as const) {
          const batch = r.tensors[2 * l + (kind === "key" ? 0 : 1)] ?? new Float32Array(0);
          const own = new Float32Array(this.heads * len * this.headDim);
          const from = { data: batch, row: i, stride: r.total, at: r.total - len };
          copyHeads(from, ownPlace(own, len), this.heads, this.headDim, len);
          layer[kind] = own;
        }
      });
    });
  }

  #settleIfResident(cache: KVCache): void {
    if (this.#resident?.caches.includes(cache)) this.#settle();
  }

  /**
   * A sequence is finished or canceled: its cache memory is released now, or, if a step is running
   * (it may be reading the cache), as soon as that step ends. A step still queued skips it.
   */
  releaseCache(cache: KVCache): void {
    this.#dead.add(cache);
    if (this.#busy) this.#released.add(cache);
    else this.#empty(cache);
  }

  readonly #dead = new WeakSet<KVCache>();

  #empty(cache: KVCache): void {
    this.#settleIfResident(cache);
    this.#slots?.evict(cache, false);
    for (const layer of cache.layers) {
      layer.key = new Float32Array(0);
      layer.value = new Float32Array(0);
    }
    cache.length = 0;
  }

  /**
   * One decode step for several sequences in one run: each feeds one token embedding [D]. Caches of
   * different lengths are left-padded to the longest and the padding masked out, so every sequence
   * computes exactly what it would alone.
   */
  async llmBatchStep(
    items: ReadonlyArray<{ embeds: Float32Array; cache: KVCache }>,
  ): Promise<Array<{ logits: Float32Array; hidden: Float32Array }>> {
    const slots = this.#slots;
    return this.#exclusive(async () => {
      // Sequences released while this step waited in the queue are not run: nobody awaits them.
      const live = items.filter((item) => !this.#dead.has(item.cache));
      const results = live.length
        ? slots
          ? await this.#slotStep(slots, live)
          : await this.#residentStep(live)
        : [];
      const empty = { logits: new Float32Array(0), hidden: new Float32Array(0) };
      return items.map((item) => {
        const k = live.indexOf(item);
        return k < 0 ? empty : (results[k] ?? empty);
      });
    });
  }

  /**
   * The decode step on `llm_decode`: the slots are the batch's cache. Sequences not stepping now
   * (in a decoder, or finished) give their rows back; newcomers take rows; the steady state copies
   * only the new token's keys and values.
   */
  async #slotStep(
    slots: KVSlots,
    items: ReadonlyArray<{ embeds: Float32Array; cache: KVCache }>,
  ): Promise<Array<{ logits: Float32Array; hidden: Float32Array }>> {
    const members = new Set(items.map((item) => item.cache));
    for (const cache of slots.residents()) if (!members.has(cache)) slots.evict(cache, true);
    for (const item of items) slots.admit(item.cache);
    slots.prepare();
    const b = slots.size;
    const capacity = slots.capacity;
    const rowOf = (cache: KVCache) => {
      const row = slots.rowOf(cache);
      if (row === undefined) throw new Error("a batched sequence has no KV slot row");
      return row;
    };
    const embeds = new Float32Array(b * this.dim);
    for (const item of items) embeds.set(item.embeds, rowOf(item.cache) * this.dim);
    const feeds: Record<string, HostTensor> = {
      inputs_embeds: float32(embeds, [b, 1, this.dim]),
      attention_mask: int64(slots.attentionMask(), [b, capacity]),
      position_ids: int64(slots.positions(), [b, 1]),
    };
    slots.pastViews().forEach((view, t) => {
      feeds[`past_key_values.${Math.floor(t / 2)}.${t % 2 === 0 ? "key" : "value"}`] = float32(view, [
        b,
        this.heads,
        capacity,
        this.headDim,
      ]);
    });
    const out = await this.#session("llm_decode").run(feeds);
    const fresh: Float32Array[] = [];
    for (let layer = 0; layer < this.manifest.config.llm_layers; layer++) {
      fresh.push(need(out, `new_key_values.${layer}.key`).data as Float32Array);
      fresh.push(need(out, `new_key_values.${layer}.value`).data as Float32Array);
    }
    slots.append(fresh);
    const logits = need(out, "logits").data as Float32Array;
    const hidden = need(out, "last_hidden_state").data as Float32Array;
    const vocab = logits.length / b;
    return items.map((item) => {
      const row = rowOf(item.cache);
      return {
        logits: logits.slice(row * vocab, (row + 1) * vocab),
        hidden: hidden.slice(row * this.dim, (row + 1) * this.dim),
      };
    });
  }

  /**
   * The past KV of a decode step on `llm`: the last step's outputs if it ran the same sequences (their
   * KV already laid out; `rows[i]` is item i's row there), else each cache packed afresh.
   */
  #residentPast(items: ReadonlyArray<{ cache: KVCache }>): {
    rows: number[];
    past: number;
    pastTensors: Float32Array[];
  } {
    const b = items.length;
    const resident = this.#resident;
    // A cache is in at most one pending step, so b distinct caches all found means the same set.
    const residentRows =
      resident?.caches.length === b ? items.map((item) => resident.caches.indexOf(item.cache)) : [];
    if (resident && residentRows.length === b && residentRows.every((r) => r >= 0)) {
      // The members are in flight now.
      this.#resident = undefined;
      return { rows: residentRows, past: resident.total, pastTensors: resident.tensors };
    }
    this.#settle();
    const past = Math.max(...items.map((i) => i.cache.length));
    const caches = items.map((item) => item.cache);
    const pastTensors: Float32Array[] = [];
    for (let layer = 0; layer < this.manifest.config.llm_layers; layer++) {
      for (const kind of ["key", "value"] as const) pastTensors.push(this.#pack(caches, past, layer, kind));
    }
    return { rows: items.map((_, i) => i), past, pastTensors };
  }

  /** The decode step on `llm` (bundles without `llm_decode`), reusing the last batch's tensors. */
  async #residentStep(
    items: ReadonlyArray<{ embeds: Float32Array; cache: KVCache }>,
  ): Promise<Array<{ logits: Float32Array; hidden: Float32Array }>> {
    const b = items.length;
    const layers = this.manifest.config.llm_layers;
    const { rows, past, pastTensors } = this.#residentPast(items);
    const total = past + 1;
    const caches: KVCache[] = new Array(b);
    const embeds = new Float32Array(b * this.dim);
    const mask = new BigInt64Array(b * total);
    const positions = new BigInt64Array(b);
    items.forEach((item, i) => {
      const row = rows[i] ?? i;
      caches[row] = item.cache;
      embeds.set(item.embeds, row * this.dim);
      mask.fill(1n, row * total + (past - item.cache.length), (row + 1) * total);
      positions[row] = BigInt(item.cache.length);
    });
    const feeds: Record<string, HostTensor> = {
      inputs_embeds: float32(embeds, [b, 1, this.dim]),
      attention_mask: int64(mask, [b, total]),
      position_ids: int64(positions, [b, 1]),
    };
    pastTensors.forEach((tensor, t) => {
      const name = `past_key_values.${Math.floor(t / 2)}.${t % 2 === 0 ? "key" : "value"}`;
      feeds[name] = float32(tensor, [b, this.heads, past, this.headDim]);
    });
    const out = await this.#session("llm").run(feeds);
    const logits = need(out, "logits").data as Float32Array;
    const hidden = need(out, "last_hidden_state").data as Float32Array;
    const present: Float32Array[] = [];
    for (let layer = 0; layer < layers; layer++) {
      present.push(need(out, `present.${layer}.key`).data as Float32Array);
      present.push(need(out, `present.${layer}.value`).data as Float32Array);
    }
    for (const cache of caches) cache.length += 1;
    this.#resident = { caches, total, tensors: present };
    const vocab = logits.length / b;
    return items.map((_, i) => {
      const row = rows[i] ?? i;
      return {
        logits: logits.slice(row * vocab, (row + 1) * vocab),
        hidden: hidden.slice(row * this.dim, (row + 1) * this.dim),
      };
    });
  }

  /** Left-pads each cache's `kind` of `layer` to `past` positions -> [b, heads, past, head_dim]. */
  #pack(caches: readonly KVCache[], past: number, layer: number, kind: "key" | "value"): Float32Array {
    const padded = new Float32Array(caches.length * this.heads * past * this.headDim);
    caches.forEach((cache, i) => {
      const own = cache.layers[layer]?.[kind] ?? new Float32Array(0);
      const to = { data: padded, row: i, stride: past, at: past - cache.length };
      copyHeads(ownPlace(own, cache.length), to, this.heads, this.headDim, cache.length);
    });
    return padded;
  }

  /** Super-link projection: hidden states at the queries [G, N, D] -> one embedding per group [G, link]. */
  async link(
    name: "superlink_perception" | "superlink_pose" | "superlink_generation" | "superlink_editing",
    states: Float32Array,
    groups: number,
  ): Promise<HostTensor> {
    const n = states.length / groups / this.dim;
    const out = await this.run(name, { query_states: float32(states, [groups, n, this.dim]) });
    return need(
      out,
      name.includes("generation") || name.includes("editing") ? "conditioning" : "class_embeddings",
    );
  }
}

interface WaitingRun {
  feeds: Record<string, HostTensor>;
  resolve: (out: Record<string, HostTensor>) => void;
  reject: (error: unknown) => void;
}

const rowsOf = (feeds: Record<string, HostTensor>) => Object.values(feeds)[0]?.dims[0] ?? 0;

/** Same input names, types and dimensions but the first: such runs can share one batch. */
function sameShape(a: Record<string, HostTensor>, b: Record<string, HostTensor>): boolean {
  const names = Object.keys(a);
  if (names.length !== Object.keys(b).length) return false;
  return names.every((name) => {
    const x = a[name];
    const y = b[name];
    return (
      x !== undefined &&
      y !== undefined &&
      x.type === y.type &&
      x.dims.length === y.dims.length &&
      x.dims.every((d, i) => i === 0 || d === y.dims[i])
    );
  });
}

function concatRows(all: ReadonlyArray<Record<string, HostTensor>>): Record<string, HostTensor> {
  const out: Record<string, HostTensor> = {};
  for (const name of Object.keys(all[0] ?? {})) {
    const parts = all.map((feeds) => need(feeds, name));
    const dims = [parts.reduce((n, t) => n + (t.dims[0] ?? 0), 0), ...(parts[0]?.dims.slice(1) ?? [])];
    // Joined as bytes, whatever the element type.
    const bytes = new Uint8Array(parts.reduce((n, t) => n + t.data.byteLength, 0));
    let at = 0;
    for (const t of parts) {
      bytes.set(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength), at);
      at += t.data.byteLength;
    }
    out[name] =
      parts[0]?.type === "int64"
        ? int64(new BigInt64Array(bytes.buffer), dims)
        : float32(new Float32Array(bytes.buffer), dims);
  }
  return out;
}

function splitRows(
  out: Record<string, HostTensor>,
  rows: readonly number[],
): Array<Record<string, HostTensor>> {
  const total = rows.reduce((a, b) => a + b, 0);
  let start = 0;
  return rows.map((n) => {
    const part: Record<string, HostTensor> = {};
    for (const [name, t] of Object.entries(out)) {
      const width = t.data.length / total;
      const dims = [n, ...t.dims.slice(1)];
      part[name] =
        t.type === "int64"
          ? int64(t.data.slice(start * width, (start + n) * width), dims)
          : float32(t.data.slice(start * width, (start + n) * width), dims);
    }
    start += n;
    return part;
  });
}

export function need(outputs: Record<string, HostTensor>, name: string): HostTensor {
  const t = outputs[name];
  if (!t) throw new Error(`Graph output ${name} is missing: the bundle does not match the runtime.`);
  return t;
}
