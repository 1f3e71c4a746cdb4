import OpenAI from "openai";
import { apiKey, baseURL, imageDataUrl, model, type SuperLinkEvent } from "./shared";

/** The official client: chat completions (outputs in `visionllm_events`) and the Responses API. */
export async function detectWithOpenAI(image: string, question: string) {
  const client = new OpenAI({ apiKey, baseURL });
  const stream = await client.chat.completions.create({
    model,
    stream: true,
    messages: [
      {
        role: "user",
        content: [
          { type: "image_url", image_url: { url: image } },
          { type: "text", text: question },
        ],
      },
    ],
  });
  let text = "";
  const events: SuperLinkEvent[] = [];
  for await (const chunk of stream) {
    text += chunk.choices[0]?.delta.content ?? "";
    events.push(...((chunk as { visionllm_events?: SuperLinkEvent[] }).visionllm_events ?? []));
  }
  const response = await client.responses.create({
    model,
    input: [
      {
        role: "user",
        content: [
          { type: "input_image", image_url: image, detail: "auto" },
          { type: "input_text", text: question },
        ],
      },
    ],
  });
  const items = (response.output as { type: string }[]).filter((item) => item.type !== "message");
  return { text, events, responseText: response.output_text, items };
}

if (process.argv[1]?.endsWith("openai.ts")) {
  const result = await detectWithOpenAI(
    imageDataUrl(process.argv[2] ?? "test/fixtures/scene-detect.png"),
    "Detect every circle.",
  );
  console.log(result.text);
  for (const e of result.events) console.log(e.type, JSON.stringify(e).slice(0, 160));
  for (const item of result.items) console.log("response item", JSON.stringify(item).slice(0, 160));
}
