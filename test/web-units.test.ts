import { describe, expect, it } from "vitest";
import { describeResult, summarize } from "../web/src/describe";
import { type Conversation, loadConversation, saveConversation } from "../web/src/store";

/** The web chat's pure parts: results as text, and the conversation kept across reloads. */

class QuotaStorage implements Storage {
  readonly #items = new Map<string, string>();
  constructor(readonly quota: number) {}
  get length() {
    return this.#items.size;
  }
  clear() {
    this.#items.clear();
  }
  getItem(key: string) {
    return this.#items.get(key) ?? null;
  }
  key(i: number) {
    return [...this.#items.keys()][i] ?? null;
  }
  removeItem(key: string) {
    this.#items.delete(key);
  }
  setItem(key: string, value: string) {
    if (value.length > this.quota) throw new DOMException("quota", "QuotaExceededError");
    this.#items.set(key, value);
  }
}

const detections = {
  type: "detections" as const,
  sequence_number: 3,
  task: "detection" as const,
  label: "red circle",
  group: 0,
  items: [
    { label: "red circle", score: 0.92, box: [10.2, 20.7, 30, 40] as [number, number, number, number] },
  ],
};
const image = {
  type: "image" as const,
  sequence_number: 9,
  task: "generation" as const,
  group: 1,
  png_base64: "A".repeat(4000),
  width: 128,
  height: 128,
  seed: 7,
};

describe("web chat units", () => {
  it("says what was found in words", () => {
    expect(describeResult(detections)).toBe("Detection · red circle: 1 found: 92 % at (10, 21, 30, 40)");
    expect(describeResult({ ...detections, items: [] })).toBe("Detection · red circle: none found");
    expect(describeResult(image)).toBe("Generated image, 128 × 128 (seed 7)");
    expect(summarize([detections, image])).toBe("1 object found, 1 image");
  });

  it("keeps the conversation, dropping old images first when the browser's quota is reached", () => {
    const turn = (id: string) => ({
      id,
      question: "Draw a red circle.",
      hadImage: false,
      answer: "Here it is.",
      results: [image],
      status: "done" as const,
    });
    const conversation: Conversation = { turns: [turn("a"), turn("b")] };
    const storage = new QuotaStorage(6000);
    expect(saveConversation(conversation, storage)).toBe(true);
    const loaded = loadConversation(storage);
    expect(loaded.turns.map((t) => t.id)).toEqual(["a", "b"]);
    expect(loaded.turns[0]?.results).toEqual([]);
    expect(loaded.turns[1]?.results).toHaveLength(1);
    // The caller's copy is untouched.
    expect(conversation.turns[0]?.results).toHaveLength(1);
  });

  it("shows a turn cut off by a reload as stopped", () => {
    const storage = new QuotaStorage(1e6);
    saveConversation(
      { turns: [{ id: "x", question: "q", hadImage: true, answer: "", results: [], status: "streaming" }] },
      storage,
    );
    expect(loadConversation(storage).turns[0]?.status).toBe("stopped");
  });
});
