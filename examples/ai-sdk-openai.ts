import { createOpenAI } from "@ai-sdk/openai";
import { streamWithSuperLink } from "./ai-sdk";
import { apiKey, baseURL, imageDataUrl, model } from "./shared";

/**
 * The AI SDK's own OpenAI provider (`@ai-sdk/openai`) on chat completions: text as usual, the super
 * link's outputs in the raw chunks, exactly as with the OpenAI-compatible provider (ai-sdk.ts).
 */
export async function detectWithAISDKOpenAI(image: string, question: string) {
  const visionllm = createOpenAI({ baseURL, apiKey });
  return streamWithSuperLink(visionllm.chat(model), image, question);
}

if (process.argv[1]?.endsWith("ai-sdk-openai.ts")) {
  const result = await detectWithAISDKOpenAI(
    imageDataUrl(process.argv[2] ?? "test/fixtures/scene-detect.png"),
    "Detect every circle.",
  );
  console.log(result.text);
  for (const e of result.events) console.log(e.type, JSON.stringify(e).slice(0, 160));
}
