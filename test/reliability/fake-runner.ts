import { createServer, type Server } from "node:http";
import { CARD } from "../fixtures/card";
import { freePort } from "../helpers/processes";

/** Misbehaving runners for fault tests: they answer the model card, then fail in a chosen way. */

export type Behaviour = "garbage" | "stall" | "half" | "ok" | "slow";

/** `answeredDigest`: the bundle digest the runner's answers claim (default: its card's). */
export async function startFakeRunner(
  behaviour: Behaviour,
  answeredDigest: string = CARD.digest,
): Promise<{ url: string; server: Server }> {
  const port = await freePort();
  const server = createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      if (req.url === "/v1/model-card") {
        res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(CARD));
        return;
      }
      res.writeHead(200, { "content-type": "text/event-stream", "x-model-digest": answeredDigest });
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
      } else if (behaviour === "slow") {
        // A long answer, one token every 100 ms, until the edge goes away.
        res.write(
          'event: start\nid: 0\ndata: {"type":"start","sequence_number":0,"id":"x","model":"m","created":1}\n\n',
        );
        let n = 1;
        const tick = setInterval(() => {
          const event = { type: "text-delta", sequence_number: n, delta: "la " };
          res.write(`event: text-delta\nid: ${n}\ndata: ${JSON.stringify(event)}\n\n`);
          n++;
        }, 100);
        res.on("close", () => clearInterval(tick));
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
