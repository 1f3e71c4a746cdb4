import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { createMetrics } from "../src/server/metrics";

/** The Grafana dashboard and the Prometheus configuration in gpu-runner/deploy read series the
 * runner exports: a renamed metric fails here, not silently on a wall screen. */

const dashboard = JSON.parse(readFileSync("gpu-runner/deploy/grafana-dashboard.json", "utf8")) as {
  panels: Array<{ title: string; targets: Array<{ expr: string }> }>;
};

describe("observability files", () => {
  it("every series the dashboard queries is one the runner exports", async () => {
    const exported = new Set((await createMetrics("m").registry.getMetricsAsJSON()).map((m) => m.name));
    const queried = dashboard.panels.flatMap((p) =>
      p.targets.flatMap((t) =>
        [...t.expr.matchAll(/\b((?:vllm|visionllm):[a-z0-9_]+)/g)].map((m) => m[1] ?? ""),
      ),
    );
    expect(queried.length).toBeGreaterThan(10);
    for (const name of queried) expect(exported).toContain(name.replace(/_(bucket|sum|count)$/, ""));
  });

  it("panel titles are unique and the scrape path is /metrics", () => {
    const ids = dashboard.panels.map((p) => p.title);
    expect(new Set(ids).size).toBe(ids.length);
    expect(readFileSync("gpu-runner/deploy/prometheus.yml", "utf8")).toMatch(/metrics_path: \/metrics/);
  });
});
