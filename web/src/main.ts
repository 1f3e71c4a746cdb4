import type { ContentPart, StreamEvent } from "@visionllm/protocol";
import { LiteClient, VisionLLMError } from "@visionllm/protocol/lite";
import { composite, drawDetections, drawKeypoints, type OverlayLayers, resetOverlay } from "./overlay";

/**
 * The web chat: an image, a conversation about it, and the model's super-link outputs drawn over
 * the image as they stream in. Plain DOM; the protocol package's typed client does the streaming.
 */

const MODEL = "visionllm-v2-nano";
const KEY_STORAGE = "visionllm.apiKey";

type Region = { box: [number, number, number, number] } | { point: [number, number] };
interface Turn {
  role: "user" | "assistant";
  content: string;
}

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

document.getElementById("app")?.insertAdjacentHTML(
  "afterbegin",
  `<header>
    <h1>VisionLLM chat</h1>
    <label>API key <input id="key" type="password" autocomplete="off" placeholder="vl_..." size="24"></label>
  </header>
  <section id="stage">
    <div id="drop" tabindex="0">
      <p id="hint">Drop, paste or <label class="link">choose an image<input id="file" type="file" accept="image/png,image/jpeg,image/webp" hidden></label></p>
      <div id="frame" hidden>
        <img id="image" alt="your image">
        <canvas id="masks"></canvas>
        <svg id="overlay" xmlns="http://www.w3.org/2000/svg" preserveAspectRatio="none"></svg>
        <svg id="selection" xmlns="http://www.w3.org/2000/svg" preserveAspectRatio="none"></svg>
      </div>
    </div>
    <div id="tools">
      <span>Region: <button id="mode-box" class="mode">box</button><button id="mode-point" class="mode">point</button><button id="clear-region">clear</button></span>
      <span>Show: <label><input id="show-boxes" type="checkbox" checked> boxes</label><label><input id="show-masks" type="checkbox" checked> masks</label><label><input id="show-keypoints" type="checkbox" checked> keypoints</label></span>
      <span><button id="download-png">PNG</button><button id="download-json">JSON</button></span>
    </div>
    <div id="gallery"></div>
  </section>
  <section id="chat">
    <ol id="log" aria-live="polite"></ol>
    <p id="error" role="alert" hidden></p>
    <form id="ask">
      <input id="question" autocomplete="off" placeholder="Ask about the image, e.g. Detect every circle and person." required>
      <button id="send" type="submit">Send</button>
      <button id="stop" type="button" disabled>Stop</button>
    </form>
  </section>`,
);

const keyInput = $<HTMLInputElement>("key");
keyInput.value = localStorage.getItem(KEY_STORAGE) ?? "";
keyInput.addEventListener("change", () => localStorage.setItem(KEY_STORAGE, keyInput.value.trim()));

const image = $<HTMLImageElement>("image");
const layers: OverlayLayers = {
  svg: $("overlay") as unknown as SVGSVGElement,
  masks: $<HTMLCanvasElement>("masks"),
};
const selection = $("selection") as unknown as SVGSVGElement;
const log = $<HTMLOListElement>("log");
const errorBox = $<HTMLParagraphElement>("error");
const gallery = $<HTMLDivElement>("gallery");

let imageUrl: string | undefined;
let region: Region | undefined;
let mode: "box" | "point" | undefined;
let history: Turn[] = [];
let outputs: StreamEvent[] = [];
let running: AbortController | undefined;

function showError(message: string | undefined): void {
  errorBox.hidden = !message;
  errorBox.textContent = message ?? "";
}

/** Errors in plain words: what happened and what to do. */
function explain(error: unknown): string {
  if (VisionLLMError.is(error)) {
    switch (error.code) {
      case "invalid_api_key":
        return `Your API key was not accepted (${error.message}). Check the key at the top of the page.`;
      case "rate_limit_exceeded":
        return `Too many requests for this key: wait ${error.retryAfterSeconds ?? 1} s and try again.`;
      case "runner_unavailable":
      case "overloaded":
        return "The model is busy or unavailable right now. Try again in a few seconds.";
      case "payload_too_large":
      case "unsupported_media_type":
        return `The image cannot be used: ${error.message}`;
      default:
        return error.message;
    }
  }
  if (error instanceof DOMException && error.name === "AbortError") return "";
  return "The server could not be reached. Is the stack running?";
}

async function loadImage(file: Blob): Promise<void> {
  if (!/^image\/(png|jpeg|webp)$/.test(file.type)) {
    showError("Please use a PNG, JPEG or WebP image.");
    return;
  }
  imageUrl = await new Promise<string>((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result));
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
  image.src = imageUrl;
  await image.decode();
  $("frame").hidden = false;
  $("hint").hidden = true;
  for (const svg of [layers.svg, selection])
    svg.setAttribute("viewBox", `0 0 ${image.naturalWidth} ${image.naturalHeight}`);
  resetOverlay(layers, image.naturalWidth, image.naturalHeight);
  history = [];
  outputs = [];
  region = undefined;
  drawSelection();
  showError(undefined);
}

$<HTMLInputElement>("file").addEventListener("change", (e) => {
  const file = (e.target as HTMLInputElement).files?.[0];
  if (file) void loadImage(file);
});
const drop = $("drop");
drop.addEventListener("dragover", (e) => e.preventDefault());
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  const file = e.dataTransfer?.files[0];
  if (file) void loadImage(file);
});
document.addEventListener("paste", (e) => {
  const file = [...(e.clipboardData?.items ?? [])].find((i) => i.type.startsWith("image/"))?.getAsFile();
  if (file) void loadImage(file);
});

// Region selection: drag a box or click a point, in image pixels.
function imagePoint(e: PointerEvent): [number, number] {
  const rect = image.getBoundingClientRect();
  return [
    ((e.clientX - rect.left) / rect.width) * image.naturalWidth,
    ((e.clientY - rect.top) / rect.height) * image.naturalHeight,
  ];
}
function drawSelection(): void {
  selection.replaceChildren();
  if (!region) return;
  const ns = "http://www.w3.org/2000/svg";
  const node = document.createElementNS(ns, "box" in region ? "rect" : "circle");
  if ("box" in region) {
    const [x0, y0, x1, y1] = region.box;
    for (const [k, v] of Object.entries({ x: x0, y: y0, width: x1 - x0, height: y1 - y0 }))
      node.setAttribute(k, String(v));
  } else {
    for (const [k, v] of Object.entries({
      cx: region.point[0],
      cy: region.point[1],
      r: image.naturalWidth / 60,
    })) {
      node.setAttribute(k, String(v));
    }
  }
  node.setAttribute("class", "region");
  selection.append(node);
}
let dragStart: [number, number] | undefined;
selection.addEventListener("pointerdown", (e) => {
  if (!mode) return;
  dragStart = imagePoint(e);
  if (mode === "point") {
    region = { point: dragStart };
    dragStart = undefined;
    drawSelection();
  }
});
selection.addEventListener("pointermove", (e) => {
  if (mode !== "box" || !dragStart) return;
  const [x, y] = imagePoint(e);
  region = {
    box: [
      Math.min(dragStart[0], x),
      Math.min(dragStart[1], y),
      Math.max(dragStart[0], x),
      Math.max(dragStart[1], y),
    ],
  };
  drawSelection();
});
selection.addEventListener("pointerup", () => {
  dragStart = undefined;
});
for (const m of ["box", "point"] as const) {
  $(`mode-${m}`).addEventListener("click", () => {
    mode = mode === m ? undefined : m;
    for (const b of document.querySelectorAll(".mode")) b.classList.toggle("active", b.id === `mode-${mode}`);
    selection.classList.toggle("selecting", mode !== undefined);
  });
}
$("clear-region").addEventListener("click", () => {
  region = undefined;
  drawSelection();
});

// Toggles.
const toggles = {
  boxes: $<HTMLInputElement>("show-boxes"),
  masks: $<HTMLInputElement>("show-masks"),
  keypoints: $<HTMLInputElement>("show-keypoints"),
};
function applyToggles(): void {
  document.body.classList.toggle("hide-boxes", !toggles.boxes.checked);
  document.body.classList.toggle("hide-masks", !toggles.masks.checked);
  document.body.classList.toggle("hide-keypoints", !toggles.keypoints.checked);
}
for (const t of Object.values(toggles)) t.addEventListener("change", applyToggles);

function save(blob: Blob, name: string): void {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = name;
  a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}
$("download-json").addEventListener("click", () =>
  save(new Blob([JSON.stringify(outputs, null, 1)], { type: "application/json" }), "visionllm-outputs.json"),
);
$("download-png").addEventListener("click", async () => {
  if (!imageUrl) return;
  const blob = await composite(image, layers, {
    boxes: toggles.boxes.checked,
    masks: toggles.masks.checked,
    keypoints: toggles.keypoints.checked,
  });
  if (blob) save(blob, "visionllm-overlay.png");
});

function addMessage(role: "user" | "assistant", text: string): HTMLLIElement {
  const li = document.createElement("li");
  li.className = role;
  li.textContent = text;
  log.append(li);
  li.scrollIntoView({ block: "end" });
  return li;
}

function showImage(event: StreamEvent): void {
  if (event.type !== "image" && event.type !== "image-progress") return;
  const id = `gen-${event.group}`;
  let figure = document.getElementById(id);
  if (!figure) {
    figure = document.createElement("figure");
    figure.id = id;
    figure.innerHTML = `<img alt="${event.task} result"><figcaption></figcaption>`;
    gallery.prepend(figure);
  }
  const img = figure.querySelector("img");
  const caption = figure.querySelector("figcaption");
  if (event.type === "image-progress") {
    if (caption) caption.textContent = `${event.task}: step ${event.step} / ${event.total_steps}`;
    if (event.preview_png_base64 && img) img.src = `data:image/png;base64,${event.preview_png_base64}`;
  } else {
    if (img) img.src = `data:image/png;base64,${event.png_base64}`;
    if (caption) caption.textContent = `${event.task} done (seed ${event.seed})`;
    figure.classList.add("done");
  }
}

$<HTMLFormElement>("ask").addEventListener("submit", async (e) => {
  e.preventDefault();
  const questionInput = $<HTMLInputElement>("question");
  const question = questionInput.value.trim();
  if (!question || running) return;
  const apiKey = keyInput.value.trim();
  if (!apiKey) {
    showError("Enter your API key at the top of the page first.");
    return;
  }
  showError(undefined);
  questionInput.value = "";
  addMessage("user", question + (region ? " [region]" : ""));
  const answer = addMessage("assistant", "");
  answer.classList.add("streaming");
  const parts: ContentPart[] = [];
  if (imageUrl && history.length === 0) parts.push({ type: "image_url", image_url: { url: imageUrl } });
  parts.push({ type: "text", text: question });
  if (region) parts.push({ type: "region", region: { image_index: 0, ...region } });
  const firstTurnImage =
    imageUrl && history.length > 0 ? [{ type: "image_url" as const, image_url: { url: imageUrl } }] : [];
  const messages = [
    ...history.map((t, i) =>
      i === 0 && t.role === "user" && firstTurnImage.length
        ? { role: "user" as const, content: [...firstTurnImage, { type: "text" as const, text: t.content }] }
        : t,
    ),
    { role: "user" as const, content: parts },
  ];
  if (imageUrl) resetOverlay(layers, image.naturalWidth, image.naturalHeight);
  outputs = [];
  running = new AbortController();
  $<HTMLButtonElement>("stop").disabled = false;
  $<HTMLButtonElement>("send").disabled = true;
  const client = new LiteClient({ baseURL: location.origin, apiKey });
  let text = "";
  try {
    for await (const event of client.chat(
      { model: MODEL, messages, max_tokens: 256 },
      { signal: running.signal },
    )) {
      if (event.type === "text-delta") {
        text += event.delta;
        answer.textContent = text;
      } else if (event.type === "detections") {
        outputs.push(event);
        drawDetections(layers, event);
      } else if (event.type === "keypoints") {
        outputs.push(event);
        drawKeypoints(layers, event);
      } else if (event.type === "image" || event.type === "image-progress") {
        if (event.type === "image") outputs.push(event);
        showImage(event);
      } else if (event.type === "error") {
        showError(explain(new VisionLLMError(event.code, event.message)));
      }
    }
    history.push({ role: "user", content: question }, { role: "assistant", content: text });
  } catch (error) {
    const message = explain(error);
    if (message) showError(message);
    else answer.classList.add("stopped");
  } finally {
    answer.classList.remove("streaming");
    document.body.dataset.state = "idle";
    running = undefined;
    $<HTMLButtonElement>("stop").disabled = true;
    $<HTMLButtonElement>("send").disabled = false;
  }
});

$("stop").addEventListener("click", () => {
  running?.abort();
});
document.body.dataset.state = "idle";
applyToggles();
