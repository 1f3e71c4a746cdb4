import { HumanMessage } from "@langchain/core/messages";
import { ChatOpenAI } from "@langchain/openai";
import { apiKey, baseURL, imageDataUrl, model, type SuperLinkEvent } from "./shared";

/** LangChain: ask for the raw responses, then read `visionllm_events` from each chunk's. */
export async function detectWithLangChain(image: string, question: string) {
  const chat = new ChatOpenAI({
    model,
    apiKey,
    configuration: { baseURL },
    temperature: 0,
    __includeRawResponse: true,
  });
  const stream = await chat.stream([
    new HumanMessage({
      content: [
        { type: "image_url", image_url: { url: image } },
        { type: "text", text: question },
      ],
    }),
  ]);
  let text = "";
  const events: SuperLinkEvent[] = [];
  for await (const chunk of stream) {
    text += typeof chunk.content === "string" ? chunk.content : "";
    const raw = chunk.additional_kwargs.__raw_response as { visionllm_events?: SuperLinkEvent[] } | undefined;
    events.push(...(raw?.visionllm_events ?? []));
  }
  return { text, events };
}

if (process.argv[1]?.endsWith("langchain.ts")) {
  const result = await detectWithLangChain(
    imageDataUrl(process.argv[2] ?? "test/fixtures/scene-detect.png"),
    "Detect every circle.",
  );
  console.log(result.text);
  for (const e of result.events) console.log(e.type, JSON.stringify(e).slice(0, 160));
}
