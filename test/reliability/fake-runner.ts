import { createServer, type Server } from "node:http";
import type { ModelCard } from "@visionllm/protocol";
import { freePort } from "../helpers/processes";

/** Misbehaving runners for fault tests: they answer the model card, then fail in a chosen way. */

export const CARD: ModelCard = {
  id: "visionllm-v2-nano",
  version: "1.0.0",
  digest: "0".repeat(64),
  architecture: "visionllm-v2",
  backend: { name: "fake", provider: "none" },
  chat_template:
    "{{ system_prompt }}{% for message in messages %}{% if message.role == 'user' %} USER: {{ message.content }} ASSISTANT:{% elif message.role == 'assistant' %} {{ message.content }}</s>{% endif %}{% endfor %}",
  system_prompt: "You are a fake.",
  special_tokens: { image: "<image>", region: "<region>", region_start: "<reg>", region_end: "</reg>" },
  routing_tokens: ["[DET]"],
  reserved_tokens: ["<image>", "<im_patch>", "[EMB]", "[DET]", "</s>"],
  tasks: ["chat"],
  keypoints: { names: [], skeleton: [] },
  limits: {
    max_context: 1024,
    max_new_tokens: 512,
    max_images: 1,
    max_regions: 4,
    max_image_bytes: 1 << 24,
    max_image_pixels: 1 << 24,
  },
};

export type Behaviour = "garbage" | "stall" | "half" | "ok";

export async function startFakeRunner(behaviour: Behaviour): Promise<{ url: string; server: Server }> {
  const port = await freePort();
  const server = createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      if (req.url === "/v1/model-card") {
        res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(CARD));
        return;
      }
      res.writeHead(200, { "content-type": "text/event-stream" });
      if (behaviour === "garbage") {
        res.write("event: text-delta\nid: 0\ndata: {not json at all\n\n");
        res.end("\u0000\u0001garbage\n\n");
      } else if (behaviour === "half") {
        res.write(
          'event: start\nid: 0\ndata: {"type":"start","sequence_number":0,"id":"x","model":"m","created":1}\n\n',
        );
        res.write(
          'event: text-delta\nid: 1\ndata: {"type":"text-delta","sequence_number":1,"delta":"Hel"}\n\n',
        );
        setTimeout(() => res.destroy(), 100);
      } else if (behaviour === "ok") {
        const events = [
          { type: "start", sequence_number: 0, id: "x", model: "m", created: 1 },
          { type: "text-delta", sequence_number: 1, delta: "Hello." },
          { type: "usage", sequence_number: 2, prompt_tokens: 3, completion_tokens: 2, total_tokens: 5 },
          { type: "done", sequence_number: 3, finish_reason: "stop" },
        ];
        res.end(
          events
            .map((e) => `event: ${e.type}\nid: ${e.sequence_number}\ndata: ${JSON.stringify(e)}\n\n`)
            .join(""),
        );
      } else {
        res.write(
          'event: start\nid: 0\ndata: {"type":"start","sequence_number":0,"id":"x","model":"m","created":1}\n\n',
        );
        // then silence: no events, no pings
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
  return { url: `http://127.0.0.1:${port}`, server };
}
