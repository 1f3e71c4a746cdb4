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
  const images: EdgeImage[] = [];
  const regions: RunnerRegion[] = [];
  const messages: TemplateMessage[] = [];
  const special = card.special_tokens;
  const reserved = [
    ...new Set([
      special.image,
      special.region,
      special.region_start,
      special.region_end,
      ...card.routing_tokens,
      ...card.reserved_tokens,
    ]),
  ];

  const cleanText = (text: string, param: string) => {
    for (const token of reserved) {
      if (text.includes(token)) {
        throw new VisionLLMError(
          "invalid_request",
          `Text may not contain the model's special token ${token}; send images as image_url parts and regions as region parts.`,
          { param },
        );
      }
    }
    return text;
  };

  for (const [i, message] of request.messages.entries()) {
    const param = `messages.${i}.content`;
    if (message.content === null) continue;
    if (typeof message.content === "string") {
      messages.push({ role: templateRole(message.role), content: cleanText(message.content, param) });
      continue;
    }
    let imagePrefix = "";
    const texts: string[] = [];
    for (const [j, part] of message.content.entries()) {
      const partParam = `${param}.${j}`;
      if (part.type === "text") texts.push(cleanText(part.text, partParam));
      else if (part.type === "image_url") {
        if (images.length >= Math.min(limits.maxImages, card.limits.max_images)) {
          throw new VisionLLMError(
            "invalid_request",
            `Too many images: this model takes at most ${Math.min(limits.maxImages, card.limits.max_images)} per conversation.`,
            { param: `${partParam}.image_url` },
          );
        }
        const url = part.image_url.url;
        const image = url.startsWith("data:")
          ? decodeDataUrl(url, limits, `${partParam}.image_url.url`)
          : await fetchImage(url, limits, `${partParam}.image_url.url`, fetcher);
        images.push(image);
        // The model was trained with each image at the start of its turn.
        imagePrefix += `${special.image}\n`;
      } else {
        const region = part.region;
        if (region.image_index >= images.length) {
          throw new VisionLLMError(
            "invalid_request",
            `region.image_index ${region.image_index} points at an image not sent before this region (send the image part first).`,
            { param: `${partParam}.region.image_index` },
          );
        }
        if (regions.length >= card.limits.max_regions) {
          throw new VisionLLMError(
            "invalid_request",
            `At most ${card.limits.max_regions} regions per conversation.`,
            {
              param: `${partParam}.region`,
            },
          );
        }
        regions.push({
          image_index: region.image_index,
          ...(region.box ? { box: region.box } : {}),
          ...(region.point ? { point: region.point } : {}),
          ...(region.mask ? { mask_png_base64: region.mask.slice("data:image/png;base64,".length) } : {}),
        });
        texts.push(`${special.region_start}region${regions.length}${special.region}${special.region_end}`);
      }
    }
    messages.push({
      role: templateRole(message.role),
      content: imagePrefix + texts.join(" ").replace(/\s+([?.!,])/g, "$1"),
    });
  }

  if (request.task) {
    const instruction = cleanText(taskInstruction(request.task), "task");
    const last = messages.at(-1);
    if (last?.role === "user" && !last.content.replace(`${special.image}\n`, "").trim())
      last.content += instruction;
    else messages.push({ role: "user", content: instruction });
  }
  if (!messages.some((m) => m.role === "user")) {
    throw new VisionLLMError(
      "invalid_request",
      "The conversation needs at least one user message or a task.",
      { param: "messages" },
    );
  }
  if (messages.at(-1)?.role !== "user") {
    throw new VisionLLMError(
      "invalid_request",
      "The last message must be from the user (the model answers it).",
      { param: "messages" },
    );
  }
  const prompt = renderChat(card.chat_template, card.system_prompt, messages);
  if (prompt.length > limits.maxPromptChars) {
    throw new VisionLLMError(
      "invalid_request",
      `The conversation is ${prompt.length} characters after templating; the limit is ${limits.maxPromptChars}.`,
      { param: "messages" },
    );
  }
  return { prompt, images, regions };
}

export function runnerImages(images: readonly EdgeImage[], digests: readonly string[]) {
  return images.map((image, i) => ({ data_base64: bytesToBase64(image.bytes), sha256: digests[i] ?? "" }));
}
