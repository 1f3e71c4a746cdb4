import { readFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { Job, WebhookPayload } from "@visionllm/protocol";
import { Webhook } from "standardwebhooks";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort, type Spawned, startEdge, startRunner, startStack } from "./helpers/processes";
import { metric } from "./helpers/runner-client";

/** Webhook jobs end to end: the stack of `npm start`, and a receiver that verifies every delivery. */

const bundle = process.env.TEST_BUNDLE ?? "model/bundle";
const WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const scene = `data:image/png;base64,${readFileSync("test/fixtures/scene-detect.png").toString("base64")}`;

interface Delivery {
  id: string;
  path: string;
  payload: WebhookPayload;
}

describe("webhook jobs", () => {
  let stack: Spawned & { edge: string; runner: string; apiKey: string };
  let receiver: Server;
  let receiverUrl = "";
  const delivered: Delivery[] = [];
  const attempts = new Map<string, number>();
  const verifier = new Webhook(WEBHOOK_SECRET);

  beforeAll(async () => {
    const port = await freePort();
    receiver = createServer((req, res) => {
      let body = "";
      req.on("data", (d: Buffer) => {
        body += d.toString();
      });
      req.on("end", () => {
        const headers = {
          "webhook-id": String(req.headers["webhook-id"]),
          "webhook-timestamp": String(req.headers["webhook-timestamp"]),
          "webhook-signature": String(req.headers["webhook-signature"]),
        };
        let payload: WebhookPayload;
        try {
          payload = verifier.verify(body, headers) as WebhookPayload;
        } catch {
          res.writeHead(401).end();
          return;
        }
        const id = headers["webhook-id"];
        const n = (attempts.get(id) ?? 0) + 1;
        attempts.set(id, n);
        if (req.url === "/flaky" && n <= 2) {
          res.writeHead(500).end();
          return;
        }
        delivered.push({ id, path: req.url ?? "", payload });
        res.writeHead(204).end();
      });
    });
    await new Promise<void>((resolve) => receiver.listen(port, "127.0.0.1", resolve));
    receiverUrl = `http://127.0.0.1:${port}`;
    stack = await startStack({
      RUNNER_BUNDLE: bundle,
      DEV_WEBHOOK_SECRET: WEBHOOK_SECRET,
      WEBHOOK_RETRY_SCALE: "0.05",
      JOB_RETRY_BASE_S: "1",
    });
  }, 200_000);

  afterAll(async () => {
    await stack?.stop();
    receiver?.close();
  }, 30_000);

  const api = (path: string, init: RequestInit = {}) =>
    fetch(`${stack.edge}${path}`, {
      ...init,
      headers: {
        authorization: `Bearer ${stack.apiKey}`,
        "content-type": "application/json",
        ...(init.headers ?? {}),
      },
    });

  async function waitFor<T>(probe: () => Promise<T | undefined>, timeoutMs = 120_000): Promise<T> {
    const until = Date.now() + timeoutMs;
    while (Date.now() < until) {
      const value = await probe();
      if (value !== undefined) return value;
      await new Promise((r) => setTimeout(r, 250));
    }
    throw new Error("timed out");
  }

  const finished = (id: string) =>
    waitFor(async () => {
      const job = (await (await api(`/v1/jobs/${id}`)).json()) as Job;
      return ["succeeded", "failed", "canceled"].includes(job.state) ? job : undefined;
    });

  it("runs a detection job and a generation job; the webhooks carry what GET shows", async () => {
    const detection = await api("/v1/jobs", {
      method: "POST",
      body: JSON.stringify({
        images: [scene],
        task: { type: "detect", categories: ["circle", "person"] },
        webhook: `${receiverUrl}/hook`,
        webhook_events_filter: ["start", "completed"],
      }),
    });
    expect(detection.status).toBe(202);
    const created = (await detection.json()) as Job;
    expect(created).toMatchObject({ state: "queued", urls: { get: expect.stringContaining(created.id) } });
    const generation = (await (
      await api("/v1/jobs", {
        method: "POST",
        body: JSON.stringify({
          task: { type: "generate", prompt: "a red circle on the left" },
          seed: 3,
          webhook: `${receiverUrl}/hook`,
        }),
      })
    ).json()) as Job;

    const [det, gen] = await Promise.all([finished(created.id), finished(generation.id)]);
    expect(det.state).toBe("succeeded");
    expect(det.timestamps).toMatchObject({
      queued: expect.any(Number),
      running: expect.any(Number),
      succeeded: expect.any(Number),
    });
    expect(gen.state).toBe("succeeded");
    expect(gen.output?.images.length).toBe(1);
    const file = await api(new URL(gen.output?.images[0]?.url ?? "").pathname);
    expect(file.headers.get("content-type")).toBe("image/png");
    expect(
      await fetch(`${stack.edge}${new URL(gen.output?.images[0]?.url ?? "").pathname}`).then((r) => r.status),
    ).toBe(401);

    const completed = await waitFor(async () => {
      const hooks = delivered.filter(
        (d) => d.payload.type === "job.completed" && [det.id, gen.id].includes(d.payload.data.id),
      );
      return hooks.length === 2 ? hooks : undefined;
    });
    for (const hook of completed) {
      const job = hook.payload.data.id === det.id ? det : gen;
      expect(hook.payload.data.output).toEqual(job.output);
    }
    expect(delivered.some((d) => d.payload.type === "job.start" && d.payload.data.id === det.id)).toBe(true);
  }, 180_000);

  it("retries a failing receiver with the same webhook-id and delivers exactly once", async () => {
    const job = (await (
      await api("/v1/jobs", {
        method: "POST",
        body: JSON.stringify({ images: [scene], task: { type: "caption" }, webhook: `${receiverUrl}/flaky` }),
      })
    ).json()) as Job;
    await finished(job.id);
    const hook = await waitFor(
      async () => delivered.find((d) => d.path === "/flaky" && d.payload.data.id === job.id),
      60_000,
    );
    expect(attempts.get(hook.id)).toBe(3);
    expect(delivered.filter((d) => d.id === hook.id)).toHaveLength(1);
  }, 120_000);

  it("cancels a queued job and honours Idempotency-Key", async () => {
    const body = JSON.stringify({ images: [scene], task: { type: "pose" } });
    const first = (await (
      await api("/v1/jobs", { method: "POST", body, headers: { "idempotency-key": "same-job" } })
    ).json()) as Job;
    const again = await api("/v1/jobs", { method: "POST", body, headers: { "idempotency-key": "same-job" } });
    expect(((await again.json()) as Job).id).toBe(first.id);
    const canceled = (await (await api(`/v1/jobs/${first.id}/cancel`, { method: "POST" })).json()) as Job;
    expect(canceled.state).toBe("canceled");
    await new Promise((r) => setTimeout(r, 3000));
    expect(((await (await api(`/v1/jobs/${first.id}`)).json()) as Job).state).toBe("canceled");
  });

  it("a running job that is canceled stops the runner's work within a second", async () => {
    const created = (await (
      await api("/v1/jobs", {
        method: "POST",
        body: JSON.stringify({
          images: [scene],
          messages: [{ role: "user", content: "Describe the image." }],
          max_tokens: 500,
          min_tokens: 500,
          temperature: 1,
        }),
      })
    ).json()) as Job;
    await waitFor(
      async () => ((await metric(stack.runner, "vllm:num_requests_running")) >= 1 ? true : undefined),
      60_000,
    );
    const canceled = (await (await api(`/v1/jobs/${created.id}/cancel`, { method: "POST" })).json()) as Job;
    expect(canceled.state).toBe("canceled");
    const at = Date.now();
    await waitFor(
      async () => ((await metric(stack.runner, "vllm:num_requests_running")) === 0 ? true : undefined),
      10_000,
    );
    expect(Date.now() - at).toBeLessThan(1000);
    expect(((await (await api(`/v1/jobs/${created.id}`)).json()) as Job).state).toBe("canceled");
  }, 120_000);

  it("refuses webhook URLs aimed at private or metadata addresses", async () => {
    const response = await api("/v1/jobs", {
      method: "POST",
      body: JSON.stringify({
        task: { type: "caption" },
        images: [scene],
        webhook: "https://169.254.169.254/hook",
      }),
    });
    expect(response.status).toBe(400);
    expect(((await response.json()) as { error: { param: string } }).error.param).toBe("webhook");
  });

  it("loses nothing across 50 jobs submitted at once", async () => {
    const jobs = await Promise.all(
      Array.from({ length: 50 }, async (_, i) => {
        const r = await api("/v1/jobs", {
          method: "POST",
          body: JSON.stringify({
            images: [scene],
            task: { type: "ask", question: "How many shapes are there?" },
            seed: i,
            webhook: `${receiverUrl}/bulk`,
          }),
        });
        return (await r.json()) as Job;
      }),
    );
    const done = await Promise.all(jobs.map((j) => finished(j.id)));
    expect(done.every((j) => j.state === "succeeded")).toBe(true);
    const hooks = await waitFor(async () => {
      const got = delivered.filter((d) => d.path === "/bulk" && d.payload.type === "job.completed");
      return got.length >= 50 ? got : undefined;
    });
    expect(new Set(hooks.map((h) => h.payload.data.id)).size).toBe(50);
    expect(hooks).toHaveLength(50);
    const list = (await (await api("/v1/jobs?limit=100")).json()) as { data: Job[] };
    expect(list.data.length).toBeGreaterThanOrEqual(50);
  }, 300_000);
});

describe("a runner killed mid-job", () => {
  it("leads to a retry on the runner that comes back, and a completed job", async () => {
    const port = await freePort();
    let runner = await startRunner({ RUNNER_BUNDLE: bundle, RUNNER_PORT: String(port) });
    const edge = await startEdge({ runnerUrls: runner.url });
    try {
      const api = (path: string, init: RequestInit = {}) =>
        fetch(`${edge.edge}${path}`, {
          ...init,
          headers: { authorization: `Bearer ${edge.apiKey}`, "content-type": "application/json" },
        });
      const job = (await (
        await api("/v1/jobs", {
          method: "POST",
          body: JSON.stringify({
            messages: [{ role: "user", content: "Hello!" }],
            max_tokens: 400,
            min_tokens: 400,
            temperature: 1,
            seed: 1,
          }),
        })
      ).json()) as Job;
      const until = Date.now() + 60_000;
      while (
        ((await (await api(`/v1/jobs/${job.id}`)).json()) as Job).state !== "running" &&
        Date.now() < until
      ) {
        await new Promise((r) => setTimeout(r, 100));
      }
      await new Promise((r) => setTimeout(r, 300));
      runner.process.kill("SIGKILL");
      await runner.exited;
      runner = await startRunner({ RUNNER_BUNDLE: bundle, RUNNER_PORT: String(port) });
      let final: Job | undefined;
      while (Date.now() < until + 120_000) {
        final = (await (await api(`/v1/jobs/${job.id}`)).json()) as Job;
        if (final.state === "succeeded" || final.state === "failed") break;
        await new Promise((r) => setTimeout(r, 250));
      }
      expect(final?.state, JSON.stringify(final)).toBe("succeeded");
      expect(final?.attempts).toBeGreaterThanOrEqual(2);
      expect(final?.output?.usage?.completion_tokens).toBe(400);
    } finally {
      await edge.stop();
      await runner.stop();
    }
  }, 300_000);
});
