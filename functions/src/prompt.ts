import {
  type ChatCompletionRequest,
  type Message,
  type ModelCard,
  type RunnerRegion,
  renderChat,
  type Task,
  type TemplateMessage,
  VisionLLMError,
} from "@visionllm/protocol";
import type { Limits } from "./env";
import { bytesToBase64, decodeDataUrl, type EdgeImage, fetchImage } from "./images";

/**
 * Prompt assembly at the edge: messages and structured tasks rendered with the model's chat
 * template, images and regions replaced by the model's placeholders, every limit checked before a
 * runner is called.
 */

export interface AssembledPrompt {
  prompt: string;
  images: EdgeImage[];
  regions: RunnerRegion[];
}

function joinWords(items: readonly string[]): string {
  if (items.length <= 1) return items[0] ?? "";
  return `${items.slice(0, -1).join(", ")} and ${items.at(-1)}`;
}

/** OpenAI's "developer" messages are system instructions to the chat template. */
function templateRole(role: Message["role"]): TemplateMessage["role"] {
  return role === "developer" ? "system" : role;
}

/** The instruction each structured task becomes: phrased as the model was trained to read it. */
export function taskInstruction(task: Task): string {
  switch (task.type) {
    case "detect":
      return `Detect every ${joinWords(task.categories)}.`;
    case "segment":
      return `Segment every ${joinWords(task.categories)}.`;
    case "ground":
      return `Where is ${task.expression}?`;
    case "pose":
      return "Estimate the pose of each person.";
    case "caption":
      return "Describe the image.";
    case "ask":
      return task.question;
    case "generate":
      return /^(draw|generate|create|make)\b/i.test(task.prompt)
        ? task.prompt
        : `Draw ${task.prompt.replace(/\.$/, "")}.`;
    case "edit":
      return task.instruction;
  }
}

export async function assemblePrompt(
  request: ChatCompletionRequest,
  card: ModelCard,
  limits: Limits,
  fetcher?: typeof fetch,
): Promise<AssembledPrompt> {
  const assembly = new Assembly(card, limits, fetcher);
  const messages: TemplateMessage[] = [];
  for (const [i, message] of request.messages.entries()) {
    if (message.content === null) continue;
    messages.push({ role: templateRole(message.role), content: await assembly.content(message.content, i) });
  }
  if (request.task) {
    const instruction = assembly.clean(taskInstruction(request.task), "task");
    const last = messages.at(-1);
    if (last?.role === "user" && !last.content.replace(`${card.special_tokens.image}\n`, "").trim())
      last.content += instruction;
    else messages.push({ role: "user", content: instruction });
  }
  checkTurns(messages);
  const prompt = renderChat(card.chat_template, card.system_prompt, messages);
  if (prompt.length > limits.maxPromptChars) {
    throw new VisionLLMError(
      "invalid_request",
      `The conversation is ${prompt.length} characters after templating; the limit is ${limits.maxPromptChars}.`,
      { param: "messages" },
    );
  }
  return { prompt, images: assembly.images, regions: assembly.regions };
}

function checkTurns(messages: readonly TemplateMessage[]): void {
  if (!messages.some((m) => m.role === "user")) {
    throw new VisionLLMError(
      "invalid_request",
      "The conversation needs at least one user message or a task.",
      {
        param: "messages",
      },
    );
  }
  if (messages.at(-1)?.role !== "user") {
    throw new VisionLLMError(
      "invalid_request",
      "The last message must be from the user (the model answers it).",
      {
        param: "messages",
      },
    );
  }
}

type Content = Exclude<Message["content"], null>;
type Part = Exclude<Content, string>[number];

/** The images and regions of a conversation as its messages are read, and their placeholders. */
class Assembly {
  readonly images: EdgeImage[] = [];
  readonly regions: RunnerRegion[] = [];
  readonly #reserved: string[];

  constructor(
    private readonly card: ModelCard,
    private readonly limits: Limits,
    private readonly fetcher: typeof fetch | undefined,
  ) {
    const special = card.special_tokens;
    const tokens = [special.image, special.region, special.region_start, special.region_end];
    this.#reserved = [...new Set([...tokens, ...card.routing_tokens, ...card.reserved_tokens])];
  }

  /** User text may never contain a special token of the model, whatever the field. */
  clean(text: string, param: string): string {
    const token = this.#reserved.find((t) => text.includes(t));
    if (token) {
      throw new VisionLLMError(
        "invalid_request",
        `Text may not contain the model's special token ${token}; send images as image_url parts and regions as region parts.`,
        { param },
      );
    }
    return text;
  }

  /** A message's text, with its images' placeholders first (as the model was trained) and regions inline. */
  async content(content: Content, index: number): Promise<string> {
    const param = `messages.${index}.content`;
    if (typeof content === "string") return this.clean(content, param);
    let imagePrefix = "";
    const texts: string[] = [];
    for (const [j, part] of content.entries()) {
      const partParam = `${param}.${j}`;
      if (part.type === "text") texts.push(this.clean(part.text, partParam));
      else if (part.type === "image_url") {
        await this.#image(part.image_url.url, partParam);
        imagePrefix += `${this.card.special_tokens.image}\n`;
      } else texts.push(this.#region(part, partParam));
    }
    return imagePrefix + texts.join(" ").replace(/\s+([?.!,])/g, "$1");
  }

  async #image(url: string, partParam: string): Promise<void> {
    const max = Math.min(this.limits.maxImages, this.card.limits.max_images);
    if (this.images.length >= max) {
      throw new VisionLLMError(
        "invalid_request",
        `Too many images: this model takes at most ${max} per conversation.`,
        { param: `${partParam}.image_url` },
      );
    }
    const param = `${partParam}.image_url.url`;
    this.images.push(
      url.startsWith("data:")
        ? decodeDataUrl(url, this.limits, param)
        : await fetchImage(url, this.limits, param, this.fetcher),
    );
  }

  #region(part: Extract<Part, { type: "region" }>, partParam: string): string {
    const region = part.region;
    if (region.image_index >= this.images.length) {
      throw new VisionLLMError(
        "invalid_request",
        `region.image_index ${region.image_index} points at an image not sent before this region (send the image part first).`,
        { param: `${partParam}.region.image_index` },
      );
    }
    if (this.regions.length >= this.card.limits.max_regions) {
      throw new VisionLLMError(
        "invalid_request",
        `At most ${this.card.limits.max_regions} regions per conversation.`,
        {
          param: `${partParam}.region`,
        },
      );
    }
    this.regions.push({
      image_index: region.image_index,
      ...(region.box ? { box: region.box } : {}),
      ...(region.point ? { point: region.point } : {}),
      ...(region.mask ? { mask_png_base64: region.mask.slice("data:image/png;base64,".length) } : {}),
    });
    const special = this.card.special_tokens;
    return `${special.region_start}region${this.regions.length}${special.region}${special.region_end}`;
  }
}

export function runnerImages(images: readonly EdgeImage[], digests: readonly string[]) {
  return images.map((image, i) => ({ data_base64: bytesToBase64(image.bytes), sha256: digests[i] ?? "" }));
}
