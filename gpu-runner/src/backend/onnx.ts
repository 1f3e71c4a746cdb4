/**
 * The one module that imports ONNX Runtime. Everything else speaks `HostTensor` and `Session`.
 *
 * Providers:
 * - `wasm`: onnxruntime-web's WebAssembly EP, threads on (the portable default).
 * - `webgpu`: onnxruntime-web's WebGPU EP. In Node it runs on Dawn (the `webgpu` package); see
 *   `installNodeWebGPU` for the shims that needs.
 * - `cpu`, `cuda`: onnxruntime-node (optional dependency), the faster native CPU build and CUDA.
 */

export type Provider = "wasm" | "webgpu" | "cpu" | "cuda";
export const PROVIDERS: readonly Provider[] = ["wasm", "webgpu", "cpu", "cuda"];

export type HostTensor =
  | { type: "float32"; data: Float32Array; dims: readonly number[] }
  | { type: "int64"; data: BigInt64Array; dims: readonly number[] };

export const float32 = (data: Float32Array, dims: readonly number[]): HostTensor => ({
  type: "float32",
  data,
  dims,
});
export const int64 = (data: BigInt64Array, dims: readonly number[]): HostTensor => ({
  type: "int64",
  data,
  dims,
});

export interface Session {
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];
  run(feeds: Record<string, HostTensor>): Promise<Record<string, HostTensor>>;
  release(): Promise<void>;
}

export interface Backend {
  readonly runtime: "onnxruntime-web" | "onnxruntime-node";
  readonly provider: Provider;
  /** Adapter or device description where known (e.g. the GPU's name for webgpu). */
  readonly device: string;
  createSession(model: Uint8Array, name: string): Promise<Session>;
}

export interface BackendOptions {
  provider: Provider;
  threads?: number;
}

/** The subset of the ort API both packages share (their typings differ only in details we do not use). */
interface OrtTensorLike {
  readonly type: string;
  readonly data: unknown;
  readonly dims: readonly number[];
}
interface OrtSessionLike {
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];
  run(feeds: Record<string, unknown>): Promise<Record<string, OrtTensorLike>>;
  release(): Promise<void>;
}
interface OrtModuleLike {
  Tensor: new (
    type: "float32" | "int64",
    data: Float32Array | BigInt64Array,
    dims: readonly number[],
  ) => unknown;
  InferenceSession: {
    create(model: Uint8Array, options: Record<string, unknown>): Promise<OrtSessionLike>;
  };
}

function fromOrt(name: string, tensor: OrtTensorLike): HostTensor {
  if (tensor.type === "float32" && tensor.data instanceof Float32Array)
    return float32(tensor.data, [...tensor.dims]);
  if (tensor.type === "int64" && tensor.data instanceof BigInt64Array)
    return int64(tensor.data, [...tensor.dims]);
  throw new Error(`Output ${name} has unsupported type ${tensor.type}; graphs must return float32 or int64.`);
}

function wrap(ort: OrtModuleLike, session: OrtSessionLike): Session {
  return {
    inputNames: session.inputNames,
    outputNames: session.outputNames,
    async run(feeds) {
      const ortFeeds: Record<string, unknown> = {};
      for (const [name, t] of Object.entries(feeds)) ortFeeds[name] = new ort.Tensor(t.type, t.data, t.dims);
      const outputs = await session.run(ortFeeds);
      const result: Record<string, HostTensor> = {};
      for (const [name, t] of Object.entries(outputs)) result[name] = fromOrt(name, t);
      return result;
    },
    release: () => session.release(),
  };
}

export async function createBackend(options: BackendOptions): Promise<Backend> {
  const threads = options.threads ?? 2;
  switch (options.provider) {
    case "wasm": {
      const ort = await import("onnxruntime-web");
      ort.env.wasm.numThreads = threads;
      ort.env.logLevel = "error";
      return webBackend(ort as unknown as OrtModuleLike, "wasm", `wasm (${threads} threads)`);
    }
    case "webgpu": {
      const adapterName = await installNodeWebGPU();
      const ort = await import("onnxruntime-web/webgpu");
      // The browser bundle fetches its wasm over HTTP; in Node it is read from the package instead.
      const { readFile } = await import("node:fs/promises");
      const { createRequire } = await import("node:module");
      const { dirname, join } = await import("node:path");
      // The package's exports hide dist/; its entry file sits in the same folder.
      const entry = createRequire(import.meta.url).resolve("onnxruntime-web/webgpu");
      const wasmPath = join(dirname(entry), "ort-wasm-simd-threaded.asyncify.wasm");
      ort.env.wasm.wasmBinary = new Uint8Array(await readFile(wasmPath));
      // Worker threads would fetch the glue script by URL, which Node cannot do for the bundled
      // build; the GPU does the heavy work, so one wasm thread is enough here.
      ort.env.wasm.numThreads = 1;
      ort.env.logLevel = "error";
      return webBackend(ort as unknown as OrtModuleLike, "webgpu", adapterName);
    }
    case "cpu":
    case "cuda": {
      const ort = await loadOnnxruntimeNode();
      const provider = options.provider;
      return {
        runtime: "onnxruntime-node",
        provider,
        device: provider === "cuda" ? "cuda:0" : `cpu (${threads} threads)`,
        async createSession(model) {
          const session = await ort.InferenceSession.create(model, {
            executionProviders: [provider],
            intraOpNumThreads: threads,
            graphOptimizationLevel: "all",
          });
          return wrap(ort, session);
        },
      };
    }
  }
}

function webBackend(ort: OrtModuleLike, provider: "wasm" | "webgpu", device: string): Backend {
  return {
    runtime: "onnxruntime-web",
    provider,
    device,
    async createSession(model) {
      const session = await ort.InferenceSession.create(model, {
        executionProviders: [provider],
        graphOptimizationLevel: "all",
      });
      return wrap(ort, session);
    },
  };
}

async function loadOnnxruntimeNode(): Promise<OrtModuleLike> {
  try {
    const mod: unknown = await import("onnxruntime-node");
    const ort = (mod as { default?: unknown }).default ?? mod;
    return ort as OrtModuleLike;
  } catch (cause) {
    throw new Error(
      "Provider cpu/cuda needs the optional package onnxruntime-node; install it (with " +
        "ONNXRUNTIME_NODE_INSTALL=skip on machines without CUDA) or use RUNNER_PROVIDER=wasm.",
      { cause },
    );
  }
}

/**
 * Makes Dawn (npm `webgpu`) look like a browser's `navigator.gpu` to onnxruntime-web.
 * Env: WEBGPU_BACKEND (e.g. "vulkan", "opengles"), WEBGPU_FEATURE_LEVEL ("core" | "compatibility").
 * Returns the adapter's description.
 */
export async function installNodeWebGPU(): Promise<string> {
  const existing = (globalThis as { navigator?: { gpu?: unknown } }).navigator?.gpu;
  const dawn = (await import("webgpu")) as unknown as {
    create: (flags: string[]) => GPU;
    globals: Record<string, unknown>;
  };
  let gpu = existing as GPU | undefined;
  if (!gpu) {
    Object.assign(globalThis, dawn.globals);
    const flags = process.env.WEBGPU_BACKEND ? [`backend=${process.env.WEBGPU_BACKEND}`] : [];
    const created = dawn.create(flags);
    const featureLevel = process.env.WEBGPU_FEATURE_LEVEL;
    // Software adapters may only offer the "compatibility" feature level; ort asks for the
    // default, so the shim pins the level the operator configured.
    const shim = {
      requestAdapter: (options?: GPURequestAdapterOptions) =>
        created.requestAdapter(featureLevel ? { ...options, featureLevel } : options),
      getPreferredCanvasFormat: () => created.getPreferredCanvasFormat(),
      wgslLanguageFeatures: created.wgslLanguageFeatures,
    } as unknown as GPU;
    gpu = shim;
    Object.defineProperty(globalThis, "navigator", {
      value: { gpu: shim },
      configurable: true,
      writable: true,
    });
    patchSharedBufferWrites();
  }
  const adapter = await gpu.requestAdapter();
  if (!adapter)
    throw new Error("WebGPU: no adapter. Set WEBGPU_BACKEND/WEBGPU_FEATURE_LEVEL or use another provider.");
  const info = adapter.info;
  return `webgpu: ${[info.vendor, info.architecture, info.device, info.description].filter(Boolean).join(" ")}`;
}

/**
 * Dawn's writeBuffer rejects views of a SharedArrayBuffer, and ort-web's threaded wasm heap is
 * shared: copy such data into a plain buffer first.
 */
function patchSharedBufferWrites(): void {
  const queueProto = (globalThis as { GPUQueue?: { prototype: GPUQueue } }).GPUQueue?.prototype;
  if (!queueProto || (queueProto as { __sharedPatched?: boolean }).__sharedPatched) return;
  const original = queueProto.writeBuffer;
  queueProto.writeBuffer = function (
    this: GPUQueue,
    buffer: GPUBuffer,
    offset: number,
    data: BufferSource | SharedArrayBuffer,
    dataOffset?: number,
    size?: number,
  ) {
    let source = data;
    const backing = ArrayBuffer.isView(data) ? data.buffer : data;
    if (typeof SharedArrayBuffer !== "undefined" && backing instanceof SharedArrayBuffer) {
      const view = ArrayBuffer.isView(data)
        ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
        : new Uint8Array(data);
      source = new Uint8Array(view);
      const scale =
        ArrayBuffer.isView(data) && "BYTES_PER_ELEMENT" in data ? Number(data.BYTES_PER_ELEMENT) : 1;
      return original.call(
        this,
        buffer,
        offset,
        source,
        dataOffset === undefined ? undefined : dataOffset * scale,
        size === undefined ? undefined : size * scale,
      );
    }
    return original.call(this, buffer, offset, source as BufferSource, dataOffset, size);
  } as GPUQueue["writeBuffer"];
  (queueProto as { __sharedPatched?: boolean }).__sharedPatched = true;
}
