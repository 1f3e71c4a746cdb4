import { createOpenAICompatible } from "@ai-sdk/openai-compatible";
import { type LanguageModel, streamText } from "ai";
import { apiKey, baseURL, imageDataUrl, model, type SuperLinkEvent } from "./shared";

/** The Vercel AI SDK: text as usual; the super link's outputs ride in the raw chunks. */
export async function detectWithAISDK(image: string, question: string) {
  const visionllm = createOpenAICompatible({ name: "visionllm", baseURL, apiKey });
  return streamWithSuperLink(visionllm(model), image, question);
}

/** Any AI SDK chat model pointed at this server: the text, the super-link events, the usage. */
export async function streamWithSuperLink(languageModel: LanguageModel, image: string, question: string) {
  const result = streamText({
    model: languageModel,
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

if (process.argv[1]?.endsWith("ai-sdk.ts")) {
  const result = await detectWithAISDK(
    imageDataUrl(process.argv[2] ?? "test/fixtures/scene-detect.png"),
    "Detect every circle.",
  );
  console.log(result.text);
  for (const e of result.events) console.log(e.type, JSON.stringify(e).slice(0, 160));
}
