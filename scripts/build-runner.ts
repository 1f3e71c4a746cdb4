import { chmod, cp, mkdir, readFile, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { parseArgs } from "node:util";
import { build } from "esbuild";
import { z } from "zod";

/**
 * `npm run build:runner [-- --out DIR] [--bundle DIR]`: the GPU runner as a release artifact, a
 * folder that starts on a machine with only Node (>= 20.19) and glibc:
 *
 *   runner.mjs        the runner and its pure-JavaScript dependencies in one file (esbuild)
 *   node_modules/     the packages that carry native code or wasm (onnxruntime-web, onnxruntime-node,
 *                     webgpu, sharp) and their dependencies, for this platform only, without maps
 *   model/            the model bundle (manifest, graphs, tables, tokenizer, card)
 *   start.sh          sets the defaults and execs node
 *   VERSION           what was built, from which commit
 *
 * The Dockerfile and the systemd unit in gpu-runner/deploy use this folder as it is.
 */

// Packages esbuild must not inline: they load .node binaries or .wasm files next to their own code.
const EXTERNAL = ["onnxruntime-web", "onnxruntime-node", "webgpu", "sharp"];

const PackageJson = z.object({
  version: z.string().optional(),
  dependencies: z.record(z.string(), z.string()).optional(),
  optionalDependencies: z.record(z.string(), z.string()).optional(),
});

async function readPackage(dir: string): Promise<z.infer<typeof PackageJson> | undefined> {
  try {
    return PackageJson.parse(JSON.parse(await readFile(path.join(dir, "package.json"), "utf8")));
  } catch {
    return undefined; // an optional dependency npm skipped on this platform
  }
}

/** The externals and everything they depend on that npm installed here (other platforms' optional
 * binaries are absent, so they are skipped). */
export async function runtimeClosure(root: string, names: readonly string[]): Promise<string[]> {
  const seen = new Set<string>();
  const queue = [...names];
  while (queue.length > 0) {
    const name = queue.shift();
    if (name === undefined || seen.has(name)) continue;
    const pkg = await readPackage(path.join(root, "node_modules", name));
    if (!pkg) continue;
    seen.add(name);
    queue.push(...Object.keys(pkg.dependencies ?? {}), ...Object.keys(pkg.optionalDependencies ?? {}));
  }
  return [...seen].sort();
}

/** Source maps, type declarations and other platforms' prebuilt binaries are not needed to run. */
function keep(source: string): boolean {
  if (/\.(map|d\.ts|d\.mts)$/.test(source)) return false;
  const platformDir =
    /[/\\](darwin|win32|darwin-universal|win32-x64|win32-arm64|linux-arm64|linux-x64|linux)([/\\]|$)/.exec(
      source,
    );
  if (!platformDir) return true;
  const here = `${process.platform}-${process.arch}`;
  const dir = platformDir[1] ?? "";
  // onnxruntime-node: bin/napi-v6/<platform>/<arch>; webgpu: dist/<platform>-<arch>.
  if (dir === process.platform) return true;
  if (dir === here) return true;
  if (dir === process.arch && source.includes(`${path.sep}${process.platform}${path.sep}`)) return true;
  return false;
}

async function commit(root: string): Promise<string> {
  try {
    const head = (await readFile(path.join(root, ".git", "HEAD"), "utf8")).trim();
    if (!head.startsWith("ref: ")) return head;
    return (await readFile(path.join(root, ".git", head.slice(5)), "utf8")).trim();
  } catch {
    return "unknown";
  }
}

const START = `#!/bin/sh
# Starts the VisionLLM runner from this folder. Settings are environment variables (see README.md
# in the repository, gpu-runner/src/server/config.ts); RUNNER_SECRET is required.
set -eu
here=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
export RUNNER_BUNDLE="\${RUNNER_BUNDLE:-$here/model}"
exec node "$here/runner.mjs" "$@"
`;

export async function buildRunner(options: { root: string; out: string; bundle: string }): Promise<void> {
  const { root, out } = options;
  await rm(out, { recursive: true, force: true });
  await mkdir(out, { recursive: true });
  await build({
    entryPoints: [path.join(root, "gpu-runner/src/server/main.ts")],
    outfile: path.join(out, "runner.mjs"),
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    external: EXTERNAL,
    // Bundled CommonJS dependencies call require(); ESM output needs one made for it.
    banner: {
      js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);",
    },
    logLevel: "warning",
  });
  for (const name of await runtimeClosure(root, EXTERNAL)) {
    await cp(path.join(root, "node_modules", name), path.join(out, "node_modules", name), {
      recursive: true,
      filter: keep,
    });
  }
  await cp(options.bundle, path.join(out, "model"), { recursive: true });
  await writeFile(
    path.join(out, "package.json"),
    `${JSON.stringify({ type: "module", private: true }, null, 2)}\n`,
  );
  await writeFile(path.join(out, "start.sh"), START);
  await chmod(path.join(out, "start.sh"), 0o755);
  const version = (await readPackage(root))?.version ?? "0.0.0";
  await writeFile(
    path.join(out, "VERSION"),
    `visionllm-runner ${version}\ncommit ${await commit(root)}\nplatform ${process.platform}-${process.arch}\nnode >= 20.19\n`,
  );
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      out: { type: "string", default: "dist/runner" },
      bundle: { type: "string", default: "model/bundle" },
    },
  });
  const root = process.cwd();
  const started = performance.now();
  await buildRunner({ root, out: path.resolve(values.out), bundle: path.resolve(values.bundle) });
  console.log(
    `Runner artifact in ${values.out} (${Math.round(performance.now() - started)} ms); start it with ${values.out}/start.sh`,
  );
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().catch((error: unknown) => {
    console.error(error instanceof Error ? error.message : error);
    process.exit(1);
  });
}
