import type { ContentPart, StreamEvent } from "@visionllm/protocol";
import { LiteClient, VisionLLMError } from "@visionllm/protocol/lite";
import { type Show, TurnView } from "./render";
import {
  type Conversation,
  emptyConversation,
  loadConversation,
  newTurnId,
  saveConversation,
  type Turn,
} from "./store";
import { type Sample, Workspace } from "./workspace";

/**
 * The web chat: a conversation about one image, each answer keeping its own overlays, results list
 * and generated images; super-link outputs drawn as they stream in. Plain DOM; the protocol
 * package's typed client does the streaming. The conversation survives a reload (localStorage).
 */

const MODEL = "visionllm-v2-nano";
const KEY_STORAGE = "visionllm.apiKey";
/** After this long without an event, the reply says how long it has been waiting. */
const SILENCE_MS = 2000;

const PROMPTS: Array<{ task: string; text: string; region?: true; needsImage?: false }> = [
  { task: "Detect", text: "Detect every shape and person." },
  { task: "Segment", text: "Segment all the circles." },
  { task: "Find one", text: "Where is the leftmost shape?" },
  { task: "Pose", text: "Estimate the pose of each person." },
  { task: "Count", text: "How many triangles are there?" },
  { task: "Describe", text: "Describe the image." },
  { task: "Region", text: "What is in this region?", region: true },
  { task: "Draw", text: "Draw a red circle on the left and a blue square on the right.", needsImage: false },
  { task: "Edit", text: "Make the square yellow." },
];

document.getElementById("app")?.insertAdjacentHTML(
  "afterbegin",
  `<header>
    <h1>VisionLLM v2-nano</h1>
    <button id="new-chat" type="button">New chat</button>
    <div id="key-box">
      <label for="key">API key</label>
      <input id="key" type="password" autocomplete="off" placeholder="vl_..." aria-describedby="key-help key-error">
      <p id="key-help" class="help">A key comes from whoever runs this server: <code>npm start</code> prints a development key; an operator creates others with <code>npm run keys -- create</code>.</p>
      <p id="key-error" class="error" role="alert" hidden></p>
    </div>
  </header>
  <section id="workspace" aria-label="Image">
    <div id="drop">
      <p>Drop or paste an image, or <button id="choose-image" type="button" class="link" aria-describedby="drop-help">choose an image</button></p>
      <p id="drop-help" class="help">PNG, JPEG or WebP.</p>
    </div>
    <input id="file" type="file" accept="image/png,image/jpeg,image/webp" hidden aria-label="Image file">
    <div id="frame" hidden>
      <img id="image" alt="">
      <svg id="selection" xmlns="http://www.w3.org/2000/svg" preserveAspectRatio="none" tabindex="-1" role="application" aria-label="Region on the image: arrow keys move, Enter marks, Escape clears"></svg>
    </div>
    <div id="image-tools" hidden>
      <button id="replace-image" type="button">Replace image</button>
      <button id="remove-image" type="button">Remove image</button>
      <span role="group" aria-label="Region">Region:
        <button id="mode-box" class="mode" type="button" aria-pressed="false">Box</button>
        <button id="mode-point" class="mode" type="button" aria-pressed="false">Point</button>
        <button id="clear-region" type="button">Clear</button>
      </span>
      <p id="region-status" class="help" role="status">No region selected.</p>
    </div>
    <fieldset id="show">
      <legend>Show on results</legend>
      <label><input id="show-boxes" type="checkbox" checked> boxes</label>
      <label><input id="show-masks" type="checkbox" checked> masks</label>
      <label><input id="show-keypoints" type="checkbox" checked> keypoints</label>
    </fieldset>
    <div id="samples">
      <h2>Sample scenes</h2>
      <p class="help">Drawn by the same world generator the model was trained on; photos of the real world are outside what it knows.</p>
      <div id="sample-list"></div>
      <button id="more-samples" type="button">Other scenes</button>
    </div>
  </section>
  <section id="chat" aria-label="Conversation">
    <ol id="log" aria-live="polite" aria-label="Messages" tabindex="0"></ol>
    <p id="chat-status" class="help" role="status"></p>
    <div id="chips" role="group" aria-label="Example prompts"></div>
    <form id="ask">
      <label for="question" class="visually-hidden">Message</label>
      <input id="question" autocomplete="off" placeholder="Ask about the image, e.g. Detect every circle and person." required>
      <button id="send" type="submit">Send</button>
      <button id="stop" type="button" disabled>Stop</button>
    </form>
  </section>`,
);

const $ = <T extends HTMLElement>(id: string) => {
  const node = document.getElementById(id);
  if (!node) throw new Error(`#${id} missing from the page`);
  return node as T;
};

const keyInput = $<HTMLInputElement>("key");
const question = $<HTMLInputElement>("question");
const log = $<HTMLOListElement>("log");
const toggles = {
  boxes: $<HTMLInputElement>("show-boxes"),
  masks: $<HTMLInputElement>("show-masks"),
  keypoints: $<HTMLInputElement>("show-keypoints"),
};

let conversation: Conversation = loadConversation();
let views: TurnView[] = [];
let running: AbortController | undefined;

keyInput.value = localStorage.getItem(KEY_STORAGE) ?? "";
keyInput.addEventListener("change", () => {
  localStorage.setItem(KEY_STORAGE, keyInput.value.trim());
  keyError(undefined);
});

function keyError(message: string | undefined): void {
  const box = $<HTMLParagraphElement>("key-error");
  box.hidden = !message;
  box.textContent = message ?? "";
  keyInput.setAttribute("aria-invalid", String(Boolean(message)));
}

function chatStatus(text: string): void {
  $<HTMLParagraphElement>("chat-status").textContent = text;
}

const workspace = new Workspace({
  image(dataUrl, label) {
    const hadTurns = conversation.turns.length > 0;
    startChat({ turns: [], image: dataUrl, imageLabel: label });
    chatStatus(hadTurns ? "New image: a new chat has started." : "Image ready: ask about it.");
    question.focus();
  },
  removed() {
    delete conversation.image;
    delete conversation.imageLabel;
    saveConversation(conversation);
    chatStatus("Image removed: the next question goes without one.");
  },
  error: (message) => chatStatus(message),
});

function show(): Show {
  return { boxes: toggles.boxes.checked, masks: toggles.masks.checked, keypoints: toggles.keypoints.checked };
}

function applyToggles(): void {
  document.body.classList.toggle("hide-boxes", !toggles.boxes.checked);
  document.body.classList.toggle("hide-masks", !toggles.masks.checked);
  document.body.classList.toggle("hide-keypoints", !toggles.keypoints.checked);
}
for (const t of Object.values(toggles)) t.addEventListener("change", applyToggles);

function welcome(): HTMLLIElement {
  const li = document.createElement("li");
  li.id = "welcome";
  li.innerHTML = `<h2>What this model does</h2>
    <p>VisionLLM v2-nano answers questions about pictures of a small world: circles, squares, triangles and
    diamonds in red, green, blue, yellow and purple, and stick-figure people, on plain backgrounds, 128 × 128
    pixels. Mid-answer it calls its decoders: it <strong>detects</strong> and <strong>segments</strong> objects,
    <strong>finds</strong> the one you describe, estimates people's <strong>poses</strong>, <strong>draws</strong>
    new images and <strong>edits</strong> yours. Pick a sample scene, then a prompt below, or type your own.</p>`;
  return li;
}

function renderChat(): void {
  log.replaceChildren();
  views = [];
  if (conversation.turns.length === 0) log.append(welcome());
  for (const turn of conversation.turns) views.push(viewFor(turn));
  views.at(-1)?.offerRegenerate(views.at(-1)?.turn.status !== "sending");
}

function viewFor(turn: Turn): TurnView {
  const image = conversation.image
    ? { src: conversation.image, label: conversation.imageLabel ?? "your image" }
    : undefined;
  return new TurnView(log, turn, image, {
    editImage: async (dataUrl) => {
      const blob = await (await fetch(dataUrl)).blob();
      await workspace.loadFile(blob, "the generated image");
      question.placeholder = "Describe the edit, e.g. Make the circle green.";
    },
    regenerate: () => void ask(turn.question, { regenerate: true, region: turn.region }),
    show,
  });
}

function startChat(next: Conversation): void {
  running?.abort();
  conversation = next;
  saveConversation(conversation);
  renderChat();
}

$("new-chat").addEventListener("click", async () => {
  startChat(emptyConversation());
  await workspace.show(undefined);
  chatStatus("New chat.");
  question.focus();
});

for (const prompt of PROMPTS) {
  const chip = document.createElement("button");
  chip.type = "button";
  chip.className = "chip";
  chip.textContent = prompt.task;
  chip.title = prompt.text;
  chip.setAttribute("aria-label", `${prompt.task}: ${prompt.text}`);
  chip.addEventListener("click", () => {
    question.value = prompt.text;
    if (prompt.region && !workspace.region) workspace.setMode("box");
    question.focus();
  });
  $("chips").append(chip);
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

type Message = NonNullable<Parameters<LiteClient["chat"]>[0]["messages"]>[number];

function messagesFor(turn: Turn): Message[] {
  const image = conversation.image;
  const imagePart = image ? [{ type: "image_url" as const, image_url: { url: image } }] : [];
  const previous = conversation.turns.filter((t) => t !== turn && t.status === "done");
  const messages: Message[] = [];
  for (const [i, t] of previous.entries()) {
    messages.push({
      role: "user",
      content: i === 0 ? [...imagePart, { type: "text", text: t.question }] : t.question,
    });
    messages.push({ role: "assistant", content: t.answer });
  }
  const parts: ContentPart[] = [
    ...(previous.length === 0 ? imagePart : []),
    { type: "text", text: turn.question },
  ];
  if (turn.region) parts.push({ type: "region", region: { image_index: 0, ...turn.region } });
  messages.push({ role: "user", content: parts });
  return messages;
}

function handle(view: TurnView, event: StreamEvent): void {
  if (event.type === "start") view.setStatus("waiting");
  else if (event.type === "text-delta") {
    view.setStatus("streaming");
    view.setAnswer(view.turn.answer + event.delta);
  } else if (event.type === "detections" || event.type === "keypoints" || event.type === "image")
    view.addResult(event);
  else if (event.type === "image-progress") view.progress(event);
  else if (event.type === "error") {
    const message = explain(new VisionLLMError(event.code, event.message));
    view.setStatus("error", message);
    if (event.code === "invalid_api_key") keyError(message);
  }
}

/** Says how long the reply has waited once nothing has arrived for a while; returns the stopper
 * and the function to call on every event. */
function watchSilence(view: TurnView): { heard: () => void; stop: () => void } {
  const started = Date.now();
  let lastEvent = started;
  const timer = setInterval(() => {
    const status = view.turn.status;
    if (Date.now() - lastEvent < SILENCE_MS || (status !== "sending" && status !== "waiting")) return;
    const seconds = Math.round((Date.now() - started) / 1000);
    view.setStatus(
      status,
      `Waiting for the model: ${seconds} s so far (it may be busy with other requests).`,
    );
  }, 1000);
  return {
    heard: () => {
      lastEvent = Date.now();
    },
    stop: () => clearInterval(timer),
  };
}

function newTurn(text: string, region: Turn["region"]): TurnView {
  const turn: Turn = {
    id: newTurnId(),
    question: text,
    ...(region ? { region } : {}),
    hadImage: Boolean(conversation.image),
    answer: "",
    results: [],
    status: "sending",
  };
  conversation.turns.push(turn);
  const view = viewFor(turn);
  views.push(view);
  view.reply.scrollIntoView({ block: "end" });
  return view;
}

function busy(on: boolean): void {
  $<HTMLButtonElement>("stop").disabled = !on;
  $<HTMLButtonElement>("send").disabled = on;
}

async function ask(
  text: string,
  options: { regenerate?: boolean; region?: Turn["region"] } = { region: workspace.region },
): Promise<void> {
  if (running) return;
  const apiKey = keyInput.value.trim();
  if (!apiKey) {
    keyError("Enter your API key here first.");
    keyInput.focus();
    return;
  }
  keyError(undefined);
  document.getElementById("welcome")?.remove();
  for (const v of views) v.offerRegenerate(false);
  const view = newTurn(text, options.region);
  question.value = "";
  const controller = new AbortController();
  running = controller;
  busy(true);
  const silence = watchSilence(view);
  const sampling = options.regenerate ? { temperature: 0.8, seed: Math.floor(Math.random() * 2 ** 31) } : {};
  const request = { model: MODEL, messages: messagesFor(view.turn), max_tokens: 256, ...sampling };
  try {
    const client = new LiteClient({ baseURL: location.origin, apiKey });
    for await (const event of client.chat(request, { signal: controller.signal })) {
      silence.heard();
      handle(view, event);
    }
    if (view.turn.status !== "error") view.setStatus("done");
  } catch (error) {
    failed(view, error, text);
  } finally {
    silence.stop();
    running = undefined;
    busy(false);
    view.offerRegenerate(true);
    saveConversation(conversation);
  }
}

/** A request that ended before its stream did: stopped by the user, or refused (said in the turn). */
function failed(view: TurnView, error: unknown, text: string): void {
  const message = explain(error);
  if (!message) {
    view.setStatus("stopped");
    return;
  }
  view.setStatus("error", message);
  if (VisionLLMError.is(error) && error.code === "invalid_api_key") keyError(message);
  // A question the server refused is kept, to fix and send again.
  if (!question.value) question.value = text;
}

$<HTMLFormElement>("ask").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = question.value.trim();
  if (text) void ask(text);
});
$("stop").addEventListener("click", () => running?.abort());

async function start(): Promise<void> {
  applyToggles();
  await workspace.show(conversation.image, conversation.imageLabel);
  renderChat();
  const samples = (await fetch("/samples/index.json")
    .then((r) => (r.ok ? r.json() : []))
    .catch(() => [])) as Sample[];
  await workspace.setSamples(samples);
  document.body.dataset.state = "idle";
}

void start();
