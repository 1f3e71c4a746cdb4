import { createServer, type Server } from "node:http";
import { CARD } from "../fixtures/card";
import { freePort } from "../helpers/processes";

/** Misbehaving runners for fault tests: they answer the model card, then fail in a chosen way. */

export type Behaviour = "garbage" | "stall" | "half" | "half-slowly" | "ok" | "ok-slowly" | "slow";

/** How long the "-slowly" behaviours take: past the edge's head delay for non-streaming answers. */
const SLOWLY_MS = 2500;

/** `answeredDigest`: the bundle digest the runner's answers claim (default: its card's). `stopped`: when
 * each "slow" answer ended because the edge went away (ms since the epoch). */
export async function startFakeRunner(
  behaviour: Behaviour,
  answeredDigest: string = CARD.digest,
): Promise<{ url: string; server: Server; stopped: number[] }> {
  const port = await freePort();
  const stopped: number[] = [];
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
      } else if (behaviour === "half" || behaviour === "half-slowly") {
        res.write(
          'event: start\nid: 0\ndata: {"type":"start","sequence_number":0,"id":"x","model":"m","created":1}\n\n',
        );
        res.write(
          'event: text-delta\nid: 1\ndata: {"type":"text-delta","sequence_number":1,"delta":"Hel"}\n\n',
        );
        setTimeout(() => res.destroy(), behaviour === "half" ? 100 : SLOWLY_MS);
      } else if (behaviour === "ok" || behaviour === "ok-slowly") {
        const events = [
          { type: "start", sequence_number: 0, id: "x", model: "m", created: 1 },
          { type: "text-delta", sequence_number: 1, delta: "Hello." },
          { type: "usage", sequence_number: 2, prompt_tokens: 3, completion_tokens: 2, total_tokens: 5 },
          { type: "done", sequence_number: 3, finish_reason: "stop" },
        ];
        const frames = events.map(
          (e) => `event: ${e.type}\nid: ${e.sequence_number}\ndata: ${JSON.stringify(e)}\n\n`,
        );
        res.write(frames[0]);
        setTimeout(() => res.end(frames.slice(1).join("")), behaviour === "ok" ? 0 : SLOWLY_MS);
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
        res.on("close", () => {
          clearInterval(tick);
          stopped.push(Date.now());
        });
      } else {
        res.write(
          'event: start\nid: 0\ndata: {"type":"start","sequence_number":0,"id":"x","model":"m","created":1}\n\n',
        );
        // then silence: no events, no pings
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
  return { url: `http://127.0.0.1:${port}`, server, stopped };
}
