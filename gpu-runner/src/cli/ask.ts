import { mkdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { parseArgs } from "node:util";
import type { RunnerRegion, StreamEvent } from "@visionllm/protocol";
import { EventSequencer, renderChat, VisionLLMError } from "@visionllm/protocol";
import { createBackend, PROVIDERS, type Provider } from "../backend/onnx";
import { loadBundle } from "../bundle/load";
import { generate } from "../model/generate";
import { VisionLLM } from "../model/visionllm";

/**
 * Runs the whole stack without a server and prints the event stream, one JSON line per event.
 *   npm run ask -- --image scene.png "Detect every circle and person."
 */

const usage = `usage: npm run ask -- [--image FILE] [--box x0,y0,x1,y1 | --point x,y] [--bundle DIR]
                      [--provider wasm|webgpu|cpu|cuda] [--max-tokens N] [--temperature T] [--seed N]
                      [--out DIR] "question"
A region (--box/--point) is referred to in the question as <region>, e.g. "What is in <region>?".`;

type Args = ReturnType<typeof args>;

function args() {
  return parseArgs({
    allowPositionals: true,
    options: {
      image: { type: "string" },
      box: { type: "string" },
      point: { type: "string" },
      bundle: { type: "string", default: process.env.RUNNER_BUNDLE ?? "model/bundle" },
      provider: { type: "string", default: process.env.RUNNER_PROVIDER ?? "wasm" },
      "max-tokens": { type: "string", default: "200" },
      temperature: { type: "string", default: "0" },
      seed: { type: "string" },
      out: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
}

/** The question with its region, if one was given, as the template's region reference. */
function regionOf(
  values: Args["values"],
  question: string,
  ref: string,
): { text: string; regions: RunnerRegion[] } {
  if (!values.box && !values.point) return { text: question, regions: [] };
  const nums = (values.box ?? values.point ?? "").split(",").map(Number);
  let region: RunnerRegion;
  if (values.box && nums.length === 4)
    region = { image_index: 0, box: [nums[0] ?? 0, nums[1] ?? 0, nums[2] ?? 0, nums[3] ?? 0] };
  else if (values.point && nums.length === 2)
    region = { image_index: 0, point: [nums[0] ?? 0, nums[1] ?? 0] };
  else throw new Error("--box needs x0,y0,x1,y1 and --point needs x,y");
  const text = question.includes("<region>") ? question.replace("<region>", ref) : `${question} ${ref}`;
  return { text, regions: [region] };
}

/** One event as a JSON line: images written to --out, long payloads shortened. */
async function print(event: StreamEvent, out: string | undefined): Promise<void> {
  if (event.type === "image" && out) {
    const file = path.join(out, `${event.task}-${event.group}.png`);
    await writeFile(file, Buffer.from(event.png_base64, "base64"));
    console.log(
      JSON.stringify({ ...event, png_base64: `<${event.png_base64.length} chars, written to ${file}>` }),
    );
  } else if (event.type === "image-progress" && event.preview_png_base64) {
    console.log(
      JSON.stringify({ ...event, preview_png_base64: `<${event.preview_png_base64.length} chars>` }),
    );
  } else if (event.type === "detections") {
    const items = event.items.map((d) => ({
      ...d,
      box: d.box.map((v) => Math.round(v * 10) / 10),
      mask: d.mask ? `<rle ${d.mask.counts.length} runs>` : undefined,
    }));
    console.log(JSON.stringify({ ...event, items }));
  } else console.log(JSON.stringify(event));
}

async function main(): Promise<void> {
  const { values, positionals } = args();
  const question = positionals.join(" ").trim();
  if (values.help || !question) {
    console.error(usage);
    process.exit(values.help ? 0 : 2);
  }
  const provider = values.provider as Provider;
  if (!PROVIDERS.includes(provider)) throw new Error(`--provider must be one of ${PROVIDERS.join(", ")}`);
  const bundle = await loadBundle(values.bundle);
  const model = await VisionLLM.load(bundle, await createBackend({ provider }));
  const m = bundle.manifest;
  const images = values.image ? [{ bytes: new Uint8Array(await readFile(values.image)) }] : [];
  const special = m.special_tokens;
  const { text, regions } = regionOf(
    values,
    question,
    `${special.region_start}region1${special.region}${special.region_end}`,
  );
  const content = images.length ? `${special.image}\n${text}` : text;
  const prompt = renderChat(m.chat_template, m.system_prompt, [{ role: "user", content }]);
  const seed = values.seed === undefined ? null : Number(values.seed);
  const sampling = {
    max_tokens: Number(values["max-tokens"]),
    temperature: Number(values.temperature),
    top_p: 1,
    top_k: 0,
    seed,
    stop: [],
  };
  if (values.out) await mkdir(values.out, { recursive: true });
  const sequencer = new EventSequencer();
  let answer = "";
  for await (const raw of generate(model, {
    prompt,
    images,
    regions,
    sampling,
    maxImagePixels: 16_777_216,
  })) {
    const event = sequencer.number(raw) as StreamEvent;
    if (event.type === "text-delta") answer += event.delta;
    await print(event, values.out);
  }
  console.error(`answer: ${answer}`);
  console.error(`backend: ${model.backend.runtime} ${model.backend.device}`);
  await model.release();
}

main().catch((error: unknown) => {
  console.error(VisionLLMError.is(error) ? `${error.code}: ${error.message}` : error);
  process.exit(1);
});
