import { cp, mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildRunner } from "../scripts/build-runner";
import { freePort, RUNNER_SECRET_FOR_TESTS, type Spawned, spawnProcess, waitFor } from "./helpers/processes";
import { generateEvents, imageInput, textOf } from "./helpers/runner-client";

/**
 * The runner release artifact (`npm run build:runner`), copied into an empty folder outside the
 * repository and started there with its own start script: no tsx, no repository node_modules.
 */

const scene = new Uint8Array(await readFile("test/fixtures/scene-detect.png"));
const manifest = JSON.parse(await readFile("model/bundle/manifest.json", "utf8")) as {
  system_prompt: string;
};

describe("runner artifact", () => {
  let work = "";
  let runner: Spawned | undefined;
  let url = "";

  beforeAll(async () => {
    work = await mkdtemp(path.join(tmpdir(), "visionllm-artifact-"));
    await buildRunner({ root: process.cwd(), out: path.join(work, "build"), bundle: "model/bundle" });
    // "Unpacked into an empty folder": a copy elsewhere, so nothing can resolve back into the build.
    await cp(path.join(work, "build"), path.join(work, "unpacked"), { recursive: true });
    await rm(path.join(work, "build"), { recursive: true });
    const port = await freePort();
    runner = spawnProcess(path.join(work, "unpacked", "start.sh"), [], {
      RUNNER_SECRET: RUNNER_SECRET_FOR_TESTS,
      RUNNER_PORT: String(port),
      RUNNER_PROVIDER: "wasm",
      RUNNER_THREADS: "1",
      LOG_LEVEL: "warn",
      // Nothing from the repository: no tsx loader, no module path.
      NODE_OPTIONS: "",
      NODE_PATH: "",
    });
    url = `http://127.0.0.1:${port}`;
    await waitFor(`${url}/readyz`, 90_000, runner);
  }, 180_000);

  afterAll(async () => {
    await runner?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  it("holds the bundle, one script and a start script, and says what it was built from", async () => {
    const dir = path.join(work, "unpacked");
    expect((await stat(path.join(dir, "runner.mjs"))).isFile()).toBe(true);
    expect((await stat(path.join(dir, "model", "manifest.json"))).isFile()).toBe(true);
    expect((await stat(path.join(dir, "start.sh"))).mode & 0o111).not.toBe(0);
    expect(await readFile(path.join(dir, "VERSION"), "utf8")).toMatch(/^visionllm-runner \S+\ncommit \S+/);
  });

  it("answers /readyz with the model and a generation with an image", async () => {
    const ready = (await (await fetch(`${url}/readyz`)).json()) as { ready: boolean; model: string };
    expect(ready).toMatchObject({ ready: true, model: expect.stringMatching(/^visionllm-v2-nano@/) });
    const events = await generateEvents(url, {
      request_id: "artifact-1",
      prompt: `${manifest.system_prompt} USER: <image>\nHow many shapes are there? ASSISTANT:`,
      images: [imageInput(scene)],
      regions: [],
      sampling: { max_tokens: 16, temperature: 0, top_p: 1, top_k: 0, seed: 1, stop: [] },
    });
    expect(events[0]?.type).toBe("start");
    expect(events.at(-1)?.type).toBe("done");
    expect(textOf(events).length).toBeGreaterThan(0);
  });
});
