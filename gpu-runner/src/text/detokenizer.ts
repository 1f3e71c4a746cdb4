/**
 * Streaming detokenisation that never emits a broken character: the text of all tokens so far is
 * decoded, and only the part after what was already emitted is released, held back while it ends
 * in U+FFFD (a multi-byte character whose remaining bytes are still to come).
 */
export class StreamingDetokenizer {
  readonly #decode: (ids: readonly number[]) => string;
  readonly #ids: number[] = [];
  #emitted = "";

  constructor(decode: (ids: readonly number[]) => string) {
    this.#decode = decode;
  }

  /** Adds a token; returns the newly completed text (possibly empty). */
  push(id: number): string {
    this.#ids.push(id);
    const text = this.#decode(this.#ids);
    if (text.endsWith("\uFFFD")) return "";
    return this.#release(text);
  }

  /** At the end of the stream: whatever remains, replacement characters included. */
  flush(): string {
    return this.#release(this.#decode(this.#ids));
  }

  get text(): string {
    return this.#emitted;
  }

  #release(text: string): string {
    if (!text.startsWith(this.#emitted)) {
      // A decoder may rewrite earlier text (e.g. cleanup rules); emit only a clean continuation.
      return "";
    }
    const delta = text.slice(this.#emitted.length);
    this.#emitted = text;
    return delta;
  }
}
