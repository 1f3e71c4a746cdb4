import type { SamplingInput, UnnumberedEvent } from "@visionllm/protocol";
import { Mulberry32 } from "../generation/rng";
import { findStop, partialStopLength, sampleToken } from "../generation/sampler";
import { groupLabel } from "../postprocess/detections";
import { appendText, StreamingDetokenizer } from "../text/detokenizer";
import { defaultLinks, type LinkRegistry, type LinkSession } from "./links";
import {
  type PositionKey,
  type PrefixStore,
  type PreparedPrompt,
  type PromptInput,
  preparePrompt,
} from "./prompt";
import type { KVCache, VisionLLM } from "./visionllm";

/**
 * One request through the whole stack: images and regions encoded, the prompt prefilled, then
 * decoding with the super link live. When the LLM emits a routing token, that decoder's query
 * embeddings enter the sequence as one chunk; their final hidden states go to the token's link
 * (links/), whose decoder runs while the answer goes on; the logits at the last query choose the next
 * text token.
 */

/**
 * What the loop needs of continuous batching (the engine's DecodeBatcher provides it): single-token
 * steps shared with other running sequences, and leaving the batch while this one works elsewhere.
 */
export interface SharedDecode {
  join(): void;
  leave(): void;
  step(embeds: Float32Array, cache: KVCache): Promise<{ logits: Float32Array; hidden: Float32Array }>;
}

export interface GenerateInput extends PromptInput {
  sampling: SamplingInput;
  signal?: AbortSignal;
  /** Prompt KV caches: a prompt that shares a prefix with an earlier one prefills only the rest. */
  prefixCache?: PrefixStore;
  /** Called with the step's duration after every LLM step (metrics). */
  onStep?: (kind: "prefill" | "decode", seconds: number, tokens: number) => void;
  /** Called once the prompt is ready: images decoded and encoded, text embedded (Server-Timing). */
  onPrepared?: (seconds: number) => void;
  onDecoder?: (task: string, seconds: number) => void;
  /** Every sampled token id, routing tokens included (metrics, golden tests). */
  onToken?: (id: number) => void;
  /** Shares single-token decode steps with other running requests (continuous batching). */
  batcher?: SharedDecode;
  /** The decoders behind the routing tokens, by manifest task (default: the paper's six). */
  links?: LinkRegistry;
}

export type { PositionKey };

async function decodeAlone(
  model: VisionLLM,
  embeds: Float32Array,
  cache: KVCache,
): Promise<{ logits: Float32Array; hidden: Float32Array }> {
  const [result] = await model.llmBatchStep([{ embeds, cache }]);
  if (!result) throw new Error("The decode step returned no row.");
  return result;
}

/** Work outside the batch (a splice, a decoder): the batch does not wait for this member. */
async function* awayFor<T>(batcher: SharedDecode | undefined, work: AsyncGenerator<T>): AsyncGenerator<T> {
  batcher?.leave();
  try {
    yield* work;
  } finally {
    batcher?.join();
  }
}

export async function* generate(model: VisionLLM, input: GenerateInput): AsyncGenerator<UnnumberedEvent> {
  const preparing = performance.now();
  const prompt = await preparePrompt(model, input);
  input.onPrepared?.((performance.now() - preparing) / 1000);
  const { cache, logits } = await prefill(model, input, prompt);
  yield* new Decoding(model, input, prompt, cache, logits).run();
}

/** Prefills what the prefix cache does not already hold; returns the cache and the last logits. */
async function prefill(
  model: VisionLLM,
  input: GenerateInput,
  prompt: PreparedPrompt,
): Promise<{ cache: KVCache; logits: Float32Array }> {
  const lease = await input.prefixCache?.acquire(prompt.keys);
  const cache: KVCache = lease?.cache ?? model.emptyCache();
  const started = performance.now();
  let logits: Float32Array;
  try {
    ({ logits } = await model.llmStep(prompt.embeds.subarray(cache.length * model.dim), cache));
    lease?.done(cache);
  } catch (error) {
    model.releaseCache(cache);
    lease?.done();
    throw error;
  }
  input.onStep?.("prefill", (performance.now() - started) / 1000, prompt.ids.length);
  return { cache, logits: logits.subarray(logits.length - model.manifest.config.vocab_size) };
}

/** The ids the sampler treats apart: end of answer, routing tokens, and those it must never emit. */
function vocabulary(model: VisionLLM) {
  const m = model.manifest;
  const tok = model.tokenizer;
  const special = m.special_tokens;
  const never = [
    ...m.query_tokens,
    special.image,
    special.image_start,
    special.image_patch,
    special.image_end,
  ];
  const banned = new Set([...never, special.region, m.tokenizer.pad_token].map((t) => tok.id(t)));
  const eos = tok.id(m.tokenizer.eos_token);
  const routing = new Map(Object.keys(m.routing).map((token) => [tok.id(token), token]));
  return { eos, banned, bannedBeforeEnd: new Set([...banned, eos]), routing };
}

type Finish = "stop" | "length" | "canceled";

/** The decode loop of one request: sample, and on a routing token hand over to its link. */
class Decoding {
  readonly #vocab: ReturnType<typeof vocabulary>;
  readonly #rng: Mulberry32;
  readonly #params: { temperature: number; topK: number; topP: number };
  readonly #text: AnswerText;
  readonly #links: LinkSession;
  #next: Float32Array;
  #groups = 0;
  /** The answer's text tokens so far: a routing group's label is read from them. */
  readonly #textIds: number[] = [];
  #completion = 0;

  constructor(
    private readonly model: VisionLLM,
    private readonly input: GenerateInput,
    private readonly prompt: PreparedPrompt,
    private readonly cache: KVCache,
    logits: Float32Array,
  ) {
    const seed = input.sampling.seed;
    this.#vocab = vocabulary(model);
    this.#rng = new Mulberry32(seed ?? Math.floor(Math.random() * 2 ** 32));
    const s = input.sampling;
    this.#params = { temperature: s.temperature, topK: s.top_k, topP: s.top_p };
    this.#text = new AnswerText((ids) => model.tokenizer.decode(ids), input.sampling.stop);
    this.#next = logits;
    const image = prompt.images[prompt.images.length - 1];
    const ctx = { model, image, seed: seed ?? Math.floor(Math.random() * 2 ** 31), signal: input.signal };
    this.#links = (input.links ?? defaultLinks).session(ctx, input.onDecoder);
  }

  async *run(): AsyncGenerator<UnnumberedEvent> {
    let finish: Finish = "length";
    this.input.batcher?.join();
    try {
      for (let step = 0; step < this.input.sampling.max_tokens; step++) {
        // ONNX runs resolve as microtasks, so a decode loop could otherwise starve the event loop:
        // yielding one macrotask per step lets new requests arrive (and join the batch) and lets
        // disconnects be noticed.
        await new Promise<void>((resolve) => setImmediate(resolve));
        const ended = this.input.signal?.aborted ? "canceled" : yield* this.#step(step);
        if (ended) {
          finish = ended;
          break;
        }
      }
    } finally {
      this.input.batcher?.leave();
      this.model.releaseCache(this.cache);
    }
    if (finish !== "canceled") {
      const rest = this.#text.flush();
      if (rest) yield { type: "text-delta", delta: rest };
      yield* this.#links.flush();
    }
    const prompt = this.prompt.ids.length;
    const completion = this.#completion;
    yield {
      type: "usage",
      prompt_tokens: prompt,
      completion_tokens: completion,
      total_tokens: prompt + completion,
    };
    yield { type: "done", finish_reason: finish };
  }

  /** One sampled token; returns how the answer ended, if it did. */
  async *#step(step: number): AsyncGenerator<UnnumberedEvent, Finish | undefined> {
    const v = this.#vocab;
    const s = this.input.sampling;
    const token = sampleToken(
      this.#next,
      this.#params,
      this.#rng,
      step < (s.min_tokens ?? 0) ? v.bannedBeforeEnd : v.banned,
    );
    this.#completion++;
    this.input.onToken?.(token);
    if (token === v.eos) return "stop";
    const routing = v.routing.get(token);
    if (routing) {
      yield* awayFor(this.input.batcher, this.#route(token, routing));
      return undefined;
    }
    await this.#decode(this.model.tableRows("embed_tokens", [token]));
    if (this.model.tokenizer.isSpecial(token)) return undefined;
    this.#textIds.push(token);
    const { delta, stopped } = this.#text.push(token);
    if (delta) yield { type: "text-delta", delta };
    return stopped ? "stop" : undefined;
  }

  /** A routing token: its queries follow it into the LLM as one chunk, and their states go to its link. */
  async *#route(token: number, routing: string): AsyncGenerator<UnnumberedEvent> {
    const entry = this.model.manifest.routing[routing];
    if (!entry) return;
    const queries = this.model.tableRows(entry.table, [...Array(this.model.tableSize(entry.table)).keys()]);
    const chunk = new Float32Array(this.model.dim + queries.length);
    chunk.set(this.model.tableRows("embed_tokens", [token]));
    chunk.set(queries, this.model.dim);
    const out = await this.#decode(chunk);
    // Only complete characters count, as in the streamed text.
    const before = this.model.tokenizer.decode(this.#textIds).replace(/\uFFFD+$/, "");
    const label = groupLabel(before, this.model.manifest.answer_format);
    yield* this.#links.route({
      index: this.#groups++,
      routing,
      entry,
      label,
      states: out.hidden.slice(this.model.dim),
    });
  }

  /** One LLM step on `chunk`; the next token's logits are the last row's. */
  async #decode(chunk: Float32Array): Promise<{ hidden: Float32Array }> {
    const started = performance.now();
    // One token goes through the batched decode step even alone (its graph reads the cache in place);
    // a routing token with its queries is a chunk, which only the full graph takes (the caller has
    // left the batch, which does not wait for it meanwhile).
    const single = chunk.length === this.model.dim;
    const out = !single
      ? await this.model.llmStep(chunk, this.cache)
      : this.input.batcher
        ? await this.input.batcher.step(chunk, this.cache)
        : await decodeAlone(this.model, chunk, this.cache);
    this.input.onStep?.("decode", (performance.now() - started) / 1000, 1);
    this.#next = out.logits.subarray(out.logits.length - this.model.manifest.config.vocab_size);
    return out;
  }
}

/** The answer's visible text: detokenised as tokens arrive, cut at a stop string, and held back
 * while its end could still become one. */
export class AnswerText {
  readonly #detok: StreamingDetokenizer;
  #visible = "";
  #emitted = 0;

  constructor(
    decode: (ids: readonly number[]) => string,
    private readonly stop: readonly string[],
  ) {
    this.#detok = new StreamingDetokenizer(decode);
  }

  /** Adds a token: the text now safe to send, and whether a stop string ended the answer. */
  push(token: number): { delta: string; stopped: boolean } {
    this.#visible = appendText(this.#visible, this.#detok.push(token));
    const cut = findStop(this.#visible, this.stop);
    if (cut >= 0) {
      this.#visible = this.#visible.slice(0, cut);
      return { delta: this.#take(this.#visible.length), stopped: true };
    }
    return {
      delta: this.#take(this.#visible.length - partialStopLength(this.#visible, this.stop)),
      stopped: false,
    };
  }

  /** At the end: the text held back, and the detokeniser's last bytes unless they complete a stop string. */
  flush(): string {
    const rest = this.#detok.flush();
    if (rest && findStop(this.#visible + rest, this.stop) < 0)
      this.#visible = appendText(this.#visible, rest);
    return this.#take(this.#visible.length);
  }

  #take(upTo: number): string {
    if (upTo <= this.#emitted) return "";
    const delta = this.#visible.slice(this.#emitted, upTo);
    this.#emitted = upTo;
    return delta;
  }
}
