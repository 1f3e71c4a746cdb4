import { cp, mkdir } from "node:fs/promises";
import { build } from "esbuild";

/** Builds the web client into web/dist (served by the edge as static assets). */
export async function buildWeb(options: { minify?: boolean } = {}): Promise<void> {
  await mkdir("web/dist", { recursive: true });
  await build({
    entryPoints: ["web/src/main.ts"],
    bundle: true,
    format: "esm",
    target: "es2022",
    minify: options.minify ?? true,
    sourcemap: true,
    outfile: "web/dist/app.js",
    logLevel: "warning",
  });
  await cp("web/public", "web/dist", { recursive: true });
}

if (import.meta.url === `file://${process.argv[1]}`) {
  await buildWeb();
  console.log("web client built into web/dist");
}
