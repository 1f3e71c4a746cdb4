import { createOpenAI } from "@ai-sdk/openai";
import { streamText } from "ai";
import { apiKey, baseURL, imageDataUrl, model, type SuperLinkEvent } from "./shared";

/**
 * The AI SDK's own OpenAI provider (`@ai-sdk/openai`) on chat completions: text as usual, the super
 * link's outputs in the raw chunks, as with the OpenAI-compatible provider.
 */
export async function detectWithAISDKOpenAI(image: string, question: string) {
  const visionllm = createOpenAI({ baseURL, apiKey });
  const result = streamText({
    model: visionllm.chat(model),
    includeRawChunks: true,
    messages: [
      {
        role: "user",
        content: [
          { type: "image", image: new URL(image) },
          { type: "text", text: question },
        ],
      },
    ],
  });
  let text = "";
  const events: SuperLinkEvent[] = [];
  for await (const part of result.fullStream) {
    if (part.type === "text-delta") text += part.text;
    if (part.type === "raw")
      events.push(...((part.rawValue as { visionllm_events?: SuperLinkEvent[] }).visionllm_events ?? []));
  }
  return { text, events, usage: await result.usage };
}

if (process.argv[1]?.endsWith("ai-sdk-openai.ts")) {
  const result = await detectWithAISDKOpenAI(
    imageDataUrl(process.argv[2] ?? "test/fixtures/scene-detect.png"),
    "Detect every circle.",
  );
  console.log(result.text);
  for (const e of result.events) console.log(e.type, JSON.stringify(e).slice(0, 160));
}
