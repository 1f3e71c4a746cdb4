/**
 * Streaming detokenisation that never emits a broken character, in constant work per token: only a
 * short window of recent tokens is decoded (vLLM's incremental scheme). `prefix..read` is text
 * already released; decoding `prefix..end` and keeping what extends it yields the new text, so
 * decoders that treat a sequence's first token specially (leading spaces) see the same context
 * every time. Text is held back while it ends in U+FFFD (a multi-byte character whose remaining
 * bytes are still to come).
 */
export class StreamingDetokenizer {
  readonly #decode: (ids: readonly number[]) => string;
  readonly #ids: number[] = [];
  #prefix = 0;
  #read = 0;
  #emitted = "";

  constructor(decode: (ids: readonly number[]) => string) {
    this.#decode = decode;
  }

  /** Adds a token; returns the newly completed text (possibly empty). */
  push(id: number): string {
    this.#ids.push(id);
    return this.#advance(false);
  }

  /** At the end of the stream: whatever remains, replacement characters included. */
  flush(): string {
    return this.#advance(true);
  }

  get text(): string {
    return this.#emitted;
  }

  #advance(final: boolean): string {
    if (this.#ids.length === this.#prefix) return "";
    // Tokenizer libraries refuse to decode an empty list; nothing decodes to "".
    const before = this.#read > this.#prefix ? this.#decode(this.#ids.slice(this.#prefix, this.#read)) : "";
    const after = this.#decode(this.#ids.slice(this.#prefix));
    if (after.length <= before.length || !after.startsWith(before)) return "";
    if (!final && after.endsWith("\uFFFD")) return "";
    const delta = after.slice(before.length);
    this.#prefix = this.#read;
    this.#read = this.#ids.length;
    this.#emitted += delta;
    return delta;
  }
}

/**
 * Appends decoded text to an answer. The chat template puts a space between "ASSISTANT:" and the
 * answer, and the answer's first token carries it: it belongs to the template, so an answer never
 * starts with whitespace.
 */
export function appendText(answer: string, piece: string): string {
  return answer.length === 0 ? piece.trimStart() : answer + piece;
}
