import type { ResultEvent } from "./describe";

/** The conversation as data, kept in localStorage so a reload loses nothing. */

export type Region = { box: [number, number, number, number] } | { point: [number, number] };

export type TurnStatus = "sending" | "waiting" | "streaming" | "done" | "stopped" | "error";

export interface Turn {
  id: string;
  question: string;
  region?: Region;
  /** Whether the conversation had an image when this question was asked. */
  hadImage: boolean;
  answer: string;
  results: ResultEvent[];
  status: TurnStatus;
  error?: string;
}

export interface Conversation {
  /** The image the conversation is about, as a data URL. */
  image?: string;
  /** Its text alternative (the sample's caption, or the file's name). */
  imageLabel?: string;
  turns: Turn[];
}

const STORAGE = "visionllm.chat.v1";

export function emptyConversation(): Conversation {
  return { turns: [] };
}

export function loadConversation(storage: Storage = localStorage): Conversation {
  try {
    const raw = storage.getItem(STORAGE);
    const parsed = raw ? (JSON.parse(raw) as Conversation) : undefined;
    if (!parsed || !Array.isArray(parsed.turns)) return emptyConversation();
    // A turn cut off by the reload cannot resume: it is shown as stopped.
    for (const t of parsed.turns)
      if (t.status !== "done" && t.status !== "error" && t.status !== "stopped") t.status = "stopped";
    return parsed;
  } catch {
    return emptyConversation();
  }
}

/** Saves; when the browser's quota is reached, drops the oldest turns' images first, then turns. */
export function saveConversation(conversation: Conversation, storage: Storage = localStorage): boolean {
  const copy: Conversation = structuredClone(conversation);
  for (let attempt = 0; attempt < 50; attempt++) {
    try {
      storage.setItem(STORAGE, JSON.stringify(copy));
      return true;
    } catch {
      const withImage = copy.turns.find((t) => t.results.some((r) => r.type === "image"));
      if (withImage) withImage.results = withImage.results.filter((r) => r.type !== "image");
      else if (copy.turns.length > 1) copy.turns.shift();
      else return false;
    }
  }
  return false;
}

export function newTurnId(): string {
  return Math.random().toString(36).slice(2, 10);
}
