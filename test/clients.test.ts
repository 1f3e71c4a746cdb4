import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Spawned, startStack } from "./helpers/processes";

/** The examples in examples/, each with its third-party client, against `npm start`'s real stack. */

const bundle = process.env.TEST_BUNDLE ?? "model/bundle";
const question = "Detect every circle.";

describe("third-party clients (examples/)", () => {
  let stack: Spawned & { edge: string; apiKey: string };
  let image = "";

  beforeAll(async () => {
    stack = await startStack({ RUNNER_BUNDLE: bundle });
    // The examples read the server and key from the environment, as their README says.
    process.env.VISIONLLM_URL = stack.edge;
    process.env.VISIONLLM_KEY = stack.apiKey;
    image = (await import("../examples/shared")).imageDataUrl("test/fixtures/scene-detect.png");
  }, 200_000);
  afterAll(async () => {
    await stack?.stop();
  }, 30_000);

  it("openai: chat completions carry detections in visionllm_events; the Responses API as output items", async () => {
    const { detectWithOpenAI } = await import("../examples/openai");
    const result = await detectWithOpenAI(image, question);
    expect(result.text).toMatch(/circle/);
    expect(result.events.some((e) => e.type === "detections")).toBe(true);
    expect(result.responseText).toBe(result.text);
    expect(result.items.some((item) => item.type === "visionllm_detections")).toBe(true);
  });

  it("the AI SDK: text parts, and the detections in raw chunks", async () => {
    const { detectWithAISDK } = await import("../examples/ai-sdk");
    const result = await detectWithAISDK(image, question);
    expect(result.text).toMatch(/circle/);
    expect(result.events.some((e) => e.type === "detections")).toBe(true);
  });

  it("LangChain: text chunks, and the detections in the raw responses", async () => {
    const { detectWithLangChain } = await import("../examples/langchain");
    const result = await detectWithLangChain(image, question);
    expect(result.text).toMatch(/circle/);
    expect(result.events.some((e) => e.type === "detections")).toBe(true);
  });
});
