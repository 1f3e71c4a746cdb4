import path from "node:path";
import { cloudflareTest, readD1Migrations } from "@cloudflare/vitest-pool-workers";
import { defineConfig } from "vitest/config";

export default defineConfig(async () => {
  const migrations = await readD1Migrations(path.resolve("functions/migrations"));
  return {
    test: {
      projects: [
        {
          test: {
            name: "node",
            include: ["shared/test/**/*.test.ts", "gpu-runner/**/*.test.ts", "test/*.test.ts"],
            environment: "node",
            testTimeout: 60_000,
            hookTimeout: 180_000,
            // The end-to-end suites start real processes; running them one at a time keeps the
            // two cores for the model instead of for contention.
            fileParallelism: false,
          },
        },
        {
          test: {
            name: "reliability",
            include: ["test/reliability/**/*.test.ts"],
            globalSetup: ["test/reliability/tally.ts"],
            environment: "node",
            testTimeout: 120_000,
            hookTimeout: 180_000,
            fileParallelism: false,
          },
        },
        {
          plugins: [
            cloudflareTest({
              wrangler: { configPath: "./wrangler.toml" },
              miniflare: {
                bindings: {
                  RUNNER_SECRET: "worker-test-runner-secret",
                  RUNNER_URLS: "http://127.0.0.1:9",
                  TEST_MIGRATIONS: migrations,
                },
              },
            }),
          ],
          test: {
            name: "workers",
            include: ["functions/test/**/*.test.ts"],
            setupFiles: ["functions/test/apply-migrations.ts"],
            // The edge's access lines (one per request) would bury the test report; the logs test
            // reads them through a spy instead.
            onConsoleLog: (log: string) => !log.includes('"message":"request"'),
          },
        },
      ],
    },
  };
});
