import { serve } from "@hono/node-server";
import { createBackend } from "../backend/onnx";
import { loadBundle } from "../bundle/load";
import { defaultLinks } from "../model/links";
import { VisionLLM } from "../model/visionllm";
import { createRunnerApp } from "./app";
import { loadConfig } from "./config";
import { createLogger } from "./log";

/** The GPU runner process: loads the bundle, serves the internal API, drains on SIGTERM. */
async function main(): Promise<void> {
  const config = loadConfig();
  const logger = createLogger(config.LOG_LEVEL);
  const started = performance.now();
  const backend = await createBackend({ provider: config.RUNNER_PROVIDER, threads: config.RUNNER_THREADS });
  const model = await VisionLLM.load(await loadBundle(config.RUNNER_BUNDLE), backend);
  const unserved = defaultLinks.missing(Object.values(model.manifest.routing).map((entry) => entry.task));
  if (unserved.length > 0)
    throw new Error(
      `The bundle routes to tasks this runner has no decoder link for: ${unserved.join(", ")}.`,
    );
  const runner = createRunnerApp(model, config, logger);
  const server = serve(
    { fetch: runner.app.fetch, hostname: config.RUNNER_HOST, port: config.RUNNER_PORT },
    (info) => {
      logger.log("info", "runner listening", {
        url: `http://${config.RUNNER_HOST}:${info.port}`,
        model: `${model.manifest.model.id}@${model.manifest.model.version}`,
        backend: `${backend.runtime} ${backend.device}`,
        load_ms: Math.round(performance.now() - started),
      });
    },
  );
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.log("info", "draining", { signal, running: runner.admission.running });
    await runner.drain(config.RUNNER_DRAIN_MS);
    server.close();
    await model.release();
    logger.log("info", "stopped");
    process.exit(0);
  };
  process.on("SIGTERM", () => void stop("SIGTERM"));
  process.on("SIGINT", () => void stop("SIGINT"));
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? error.message : error);
  process.exit(1);
});
