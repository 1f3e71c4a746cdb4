import { Tokenizer } from "@huggingface/tokenizers";

/** The bundle's Hugging Face `tokenizer.json`, through @huggingface/tokenizers. */
export class TextTokenizer {
  readonly #tokenizer: Tokenizer;
  readonly #specialIds: ReadonlySet<number>;
  /** Every special token's text: user text containing one would be encoded as that token. */
  readonly specialTokens: readonly string[];

  constructor(tokenizerJson: unknown) {
    this.#tokenizer = new Tokenizer(tokenizerJson as object, {});
    const special = [...this.#tokenizer.get_added_tokens_decoder().entries()].filter(([, t]) => t.special);
    this.#specialIds = new Set(special.map(([id]) => id));
    this.specialTokens = special.map(([, t]) => t.content);
  }

  encode(text: string): number[] {
    return this.#tokenizer.encode(text, { add_special_tokens: false }).ids;
  }

  /** Special tokens (routing, query, image placeholders) are never shown as text. */
  decode(ids: readonly number[]): string {
    return this.#tokenizer.decode([...ids], {
      skip_special_tokens: true,
      clean_up_tokenization_spaces: false,
    });
  }

  id(token: string): number {
    const id = this.#tokenizer.token_to_id(token);
    if (id === undefined)
      throw new Error(`The tokenizer has no token ${token}; the bundle's manifest and tokenizer disagree.`);
    return id;
  }

  isSpecial(id: number): boolean {
    return this.#specialIds.has(id);
  }
}
