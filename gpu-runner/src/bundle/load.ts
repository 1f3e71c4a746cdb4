import { createHash } from "node:crypto";
import { readFile, stat } from "node:fs/promises";
import path from "node:path";
import { z } from "zod";
import {
  GRAPH_NAMES,
  type GraphName,
  type Manifest,
  ManifestSchema,
  OPTIONAL_GRAPH_NAMES,
  type OptionalGraphName,
  TABLE_NAMES,
  type TableName,
} from "./manifest";

/** Reads and verifies a model bundle: manifest schema, every file present with its sha256. */

export class BundleError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "BundleError";
  }
}

export interface Table {
  data: Float32Array;
  shape: readonly number[];
}

export interface Bundle {
  dir: string;
  manifest: Manifest;
  tokenizerJson: unknown;
  graphs: Record<GraphName, Uint8Array> & Partial<Record<OptionalGraphName, Uint8Array>>;
  tables: Record<TableName, Table>;
}

async function readChecked(dir: string, manifest: Manifest, rel: string, verify: boolean): Promise<Buffer> {
  const entry = manifest.files[rel];
  if (!entry) throw new BundleError(`Bundle ${dir}: ${rel} is used but not listed in manifest.files.`);
  const full = path.join(dir, rel);
  let bytes: Buffer;
  try {
    bytes = await readFile(full);
  } catch (cause) {
    throw new BundleError(`Bundle ${dir}: ${rel} is missing (${(cause as Error).message}).`, { cause });
  }
  if (bytes.length !== entry.bytes) {
    throw new BundleError(
      `Bundle ${dir}: ${rel} has ${bytes.length} bytes, the manifest says ${entry.bytes}: the file is truncated or replaced.`,
    );
  }
  if (verify) {
    const digest = createHash("sha256").update(bytes).digest("hex");
    if (digest !== entry.sha256) {
      throw new BundleError(`Bundle ${dir}: ${rel} is corrupt (sha256 ${digest}, manifest ${entry.sha256}).`);
    }
  }
  return bytes;
}

export async function loadBundle(dir: string, options: { verify?: boolean } = {}): Promise<Bundle> {
  const verify = options.verify ?? true;
  const manifestPath = path.join(dir, "manifest.json");
  try {
    await stat(manifestPath);
  } catch {
    throw new BundleError(
      `No model bundle at ${dir}: ${manifestPath} does not exist. Point RUNNER_BUNDLE at a bundle folder ` +
        "(the default is model/bundle; rebuild it with npm run model:train).",
    );
  }
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(manifestPath, "utf8"));
  } catch (cause) {
    throw new BundleError(`Bundle ${dir}: manifest.json is not valid JSON.`, { cause });
  }
  const parsed = ManifestSchema.safeParse(raw);
  if (!parsed.success) {
    const issues = parsed.error.issues
      .slice(0, 5)
      .map((i) => `${i.path.join(".") || "(root)"}: ${i.message}`)
      .join("; ");
    throw new BundleError(
      `Bundle ${dir}: manifest.json does not match format visionllm-bundle v1: ${issues}.`,
    );
  }
  const manifest = parsed.data;
  for (const name of GRAPH_NAMES) {
    if (!manifest.graphs[name])
      throw new BundleError(`Bundle ${dir}: the manifest lists no graph "${name}".`);
  }
  for (const name of TABLE_NAMES) {
    if (!manifest.tables[name])
      throw new BundleError(`Bundle ${dir}: the manifest lists no table "${name}".`);
  }
  const graphs = {} as Bundle["graphs"];
  for (const name of [...GRAPH_NAMES, ...OPTIONAL_GRAPH_NAMES]) {
    const spec = manifest.graphs[name];
    if (spec) graphs[name] = new Uint8Array(await readChecked(dir, manifest, spec.file, verify));
  }
  const tables = {} as Record<TableName, Table>;
  for (const name of TABLE_NAMES) {
    const spec = manifest.tables[name];
    if (!spec) continue;
    const bytes = await readChecked(dir, manifest, spec.file, verify);
    const expected = spec.shape.reduce((a, b) => a * b, 1) * 4;
    if (bytes.length !== expected) {
      throw new BundleError(
        `Bundle ${dir}: table ${name} has ${bytes.length} bytes, shape ${spec.shape} needs ${expected}.`,
      );
    }
    // Copy into an aligned buffer: Buffer slices of the pool may not be 4-byte aligned.
    const data = new Float32Array(bytes.length / 4);
    new Uint8Array(data.buffer).set(bytes);
    tables[name] = { data, shape: spec.shape };
  }
  const d = manifest.config.llm_dim;
  const embed = tables.embed_tokens;
  if (embed.shape[0] !== manifest.config.vocab_size || embed.shape[1] !== d) {
    throw new BundleError(
      `Bundle ${dir}: embed_tokens is ${embed.shape.join("x")}, config says ${manifest.config.vocab_size}x${d}.`,
    );
  }
  const tokenizerJson: unknown = z
    .record(z.string(), z.unknown())
    .parse(JSON.parse((await readChecked(dir, manifest, manifest.tokenizer.file, verify)).toString("utf8")));
  return { dir, manifest, tokenizerJson, graphs, tables };
}

/** sha256 over the manifest's file checksums, in name order: one fingerprint for every weight. */
export function bundleDigest(manifest: Manifest): string {
  const hash = createHash("sha256");
  for (const [name, file] of Object.entries(manifest.files).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
    hash.update(`${name}\0${file.sha256}\n`);
  return hash.digest("hex");
}
