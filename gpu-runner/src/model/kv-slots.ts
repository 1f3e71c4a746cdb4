/** A sequence's KV cache: per layer, key and value [1, heads, length, head_dim]. */
export interface KVCache {
  layers: Array<{ key: Float32Array; value: Float32Array }>;
  length: number;
}

/**
 * A place in a [rows, heads, stride, head_dim] tensor: `row`, from position `at`. A sequence's own
 * cache is row 0 of a tensor whose stride is its length.
 */
export interface HeadPlace {
  data: Float32Array;
  row: number;
  stride: number;
  at: number;
}

/** Copies `positions` positions of every head from one place to another. */
export function copyHeads(
  from: HeadPlace,
  to: HeadPlace,
  heads: number,
  headDim: number,
  positions: number,
): void {
  const span = positions * headDim;
  for (let h = 0; h < heads; h++) {
    const start = ((from.row * heads + h) * from.stride + from.at) * headDim;
    to.data.set(
      from.data.subarray(start, start + span),
      ((to.row * heads + h) * to.stride + to.at) * headDim,
    );
  }
}

/**
 * The KV cache of the batched decode step (the `llm_decode` graph): one preallocated tensor per
 * layer and kind, [rows, heads, capacity, head_dim], row r owned by one sequence whose first
 * `length` slots are filled and the rest masked. The graph reads these tensors as they are and
 * returns only each row's new key and value, which `append` writes into the row's next slot: a step
 * moves rows x heads x head_dim floats per tensor in JS, where the plain graph copies the whole
 * cache in and out.
 *
 * Rows are kept dense ([0, size)), so the first `size` rows of every tensor are one contiguous view
 * that feeds the graph directly. While a sequence is admitted here its own `layers` are empty: the
 * slots hold its cache, and `evict` gives it back.
 */
export class KVSlots {
  readonly layers: number;
  readonly heads: number;
  readonly headDim: number;
  /** Capacity grows and shrinks in whole multiples of this many positions. */
  readonly granularity: number;
  #tensors: Float32Array[] = [];
  #rowCapacity = 0;
  #capacity = 0;
  readonly #rows: KVCache[] = [];
  readonly #rowOf = new Map<KVCache, number>();

  constructor(layers: number, heads: number, headDim: number, granularity = 64) {
    this.layers = layers;
    this.heads = heads;
    this.headDim = headDim;
    this.granularity = granularity;
  }

  get size(): number {
    return this.#rows.length;
  }

  /** Positions per row in the tensors (filled and free). */
  get capacity(): number {
    return this.#capacity;
  }

  /** Floats held by the slot tensors, for memory accounting. */
  get allocated(): number {
    return this.#tensors.reduce((n, t) => n + t.length, 0);
  }

  has(cache: KVCache): boolean {
    return this.#rowOf.has(cache);
  }

  rowOf(cache: KVCache): number | undefined {
    return this.#rowOf.get(cache);
  }

  residents(): readonly KVCache[] {
    return [...this.#rows];
  }

  /** Moves a sequence's cache into the next free row. */
  admit(cache: KVCache): void {
    if (this.#rowOf.has(cache)) return;
    this.#reserve(this.#rows.length + 1, Math.max(this.#capacity, this.#roundUp(cache.length + 1)));
    const row = this.#rows.length;
    this.#rows.push(cache);
    this.#rowOf.set(cache, row);
    cache.layers.forEach((layer, l) => {
      for (const kind of [0, 1] as const) {
        const own = kind === 0 ? layer.key : layer.value;
        this.#copy(ownPlace(own, cache.length), this.#place(2 * l + kind, row, 0), cache.length);
      }
      layer.key = new Float32Array(0);
      layer.value = new Float32Array(0);
    });
  }

  /**
   * Takes a sequence out: with `keep`, its filled slots are copied back into its own cache (it will
   * step alone, or later rejoin); without, they are dropped. The last row moves into the hole.
   */
  evict(cache: KVCache, keep: boolean): void {
    const row = this.#rowOf.get(cache);
    if (row === undefined) return;
    if (keep) {
      cache.layers.forEach((layer, l) => {
        for (const kind of [0, 1] as const) {
          const own = new Float32Array(this.heads * cache.length * this.headDim);
          this.#copy(this.#place(2 * l + kind, row, 0), ownPlace(own, cache.length), cache.length);
          if (kind === 0) layer.key = own;
          else layer.value = own;
        }
      });
    }
    const last = this.#rows.length - 1;
    const moved = this.#rows[last];
    if (moved && last !== row) {
      const rowFloats = this.heads * this.#capacity * this.headDim;
      for (const tensor of this.#tensors)
        tensor.copyWithin(row * rowFloats, last * rowFloats, (last + 1) * rowFloats);
      this.#rows[row] = moved;
      this.#rowOf.set(moved, row);
    }
    this.#rows.pop();
    this.#rowOf.delete(cache);
    if (this.#rows.length === 0) this.#reserve(0, 0);
  }

  /**
   * Sizes the tensors for the next step: room for one more token in every row, and no more than
   * two granules of slack (a long sequence that left should not keep every later step wide).
   */
  prepare(): void {
    const longest = Math.max(0, ...this.#rows.map((c) => c.length));
    const needed = this.#roundUp(longest + 1);
    if (this.#capacity < needed || this.#capacity > needed + 2 * this.granularity)
      this.#reserve(this.#rows.length, needed);
  }

  /** The graph's past inputs: per layer key then value, [size, heads, capacity, head_dim] views. */
  pastViews(): Float32Array[] {
    const n = this.#rows.length * this.heads * this.#capacity * this.headDim;
    return this.#tensors.map((t) => t.subarray(0, n));
  }

  /** [size, capacity]: 1 for each row's filled slots. */
  attentionMask(): BigInt64Array {
    const mask = new BigInt64Array(this.#rows.length * this.#capacity);
    this.#rows.forEach((cache, row) => {
      mask.fill(1n, row * this.#capacity, row * this.#capacity + cache.length);
    });
    return mask;
  }

  /** [size]: the position of each row's new token. */
  positions(): BigInt64Array {
    return BigInt64Array.from(this.#rows, (cache) => BigInt(cache.length));
  }

  /** Writes the step's new keys and values ([size, heads, 1, head_dim] per tensor) into each row's next slot. */
  append(fresh: readonly Float32Array[]): void {
    fresh.forEach((values, t) => {
      this.#rows.forEach((cache, row) => {
        this.#copy({ data: values, row, stride: 1, at: 0 }, this.#place(t, row, cache.length), 1);
      });
    });
    for (const cache of this.#rows) cache.length += 1;
  }

  #roundUp(positions: number): number {
    return Math.ceil(positions / this.granularity) * this.granularity;
  }

  #place(tensor: number, row: number, at: number): HeadPlace {
    return { data: this.#tensor(tensor), row, stride: this.#capacity, at };
  }

  #copy(from: HeadPlace, to: HeadPlace, positions: number): void {
    copyHeads(from, to, this.heads, this.headDim, positions);
  }

  #tensor(index: number): Float32Array {
    const tensor = this.#tensors[index];
    if (!tensor) throw new Error(`KV slot tensor ${index} is not allocated`);
    return tensor;
  }

  /** Reallocates for `rows` rows of `capacity` positions, keeping every row's filled slots. */
  #reserve(rows: number, capacity: number): void {
    if (rows === 0) {
      this.#tensors = [];
      this.#rowCapacity = 0;
      this.#capacity = 0;
      return;
    }
    const rowCapacity = rows <= this.#rowCapacity ? this.#rowCapacity : Math.max(rows, 2 * this.#rowCapacity);
    if (rowCapacity === this.#rowCapacity && capacity === this.#capacity) return;
    const old = this.#tensors;
    const oldCapacity = this.#capacity;
    this.#tensors = Array.from(
      { length: 2 * this.layers },
      () => new Float32Array(rowCapacity * this.heads * capacity * this.headDim),
    );
    this.#rowCapacity = rowCapacity;
    this.#capacity = capacity;
    this.#rows.forEach((cache, row) => {
      old.forEach((from, t) => {
        this.#copy({ data: from, row, stride: oldCapacity, at: 0 }, this.#place(t, row, 0), cache.length);
      });
    });
  }
}

/**
 * The first `length` positions of a cache. The arrays of a cache are never written in place (a
 * step replaces them), so a whole cache is shared as it is and only a shorter prefix is copied.
 */
export function cachePrefix(cache: KVCache, length: number, heads: number, headDim: number): KVCache {
  if (length >= cache.length) {
    return { layers: cache.layers.map((l) => ({ key: l.key, value: l.value })), length: cache.length };
  }
  const cut = (data: Float32Array) => {
    const out = new Float32Array(heads * length * headDim);
    copyHeads(ownPlace(data, cache.length), ownPlace(out, length), heads, headDim, length);
    return out;
  };
  return { layers: cache.layers.map((l) => ({ key: cut(l.key), value: cut(l.value) })), length };
}

/** A sequence's own cache tensor [1, heads, length, head_dim] as a place. */
export function ownPlace(data: Float32Array, length: number): HeadPlace {
  return { data, row: 0, stride: length, at: 0 };
}
