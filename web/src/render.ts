import type { EventOf } from "@visionllm/protocol";
import { describeResult, type ResultEvent, summarize } from "./describe";
import {
  composite,
  drawDetections,
  drawKeypoints,
  imagePixels,
  layoutLabels,
  type OverlayLayers,
  resetOverlay,
} from "./overlay";
import type { Turn, TurnStatus } from "./store";

/**
 * One turn of the conversation on screen: the question, and the reply with its status, its text,
 * the image with this turn's overlays and a text list of its results, and generated images with
 * their progress, a download and "Edit this".
 */

export interface Show {
  boxes: boolean;
  masks: boolean;
  keypoints: boolean;
}

export interface TurnActions {
  editImage(dataUrl: string): void;
  regenerate(): void;
  show(): Show;
}

const STATUS_TEXT: Record<TurnStatus, string> = {
  sending: "Sending…",
  waiting: "Waiting for the model…",
  streaming: "",
  done: "",
  stopped: "Stopped.",
  error: "",
};

function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string> = {},
  text?: string,
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

export function save(blob: Blob, name: string): void {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = name;
  a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}

export class TurnView {
  readonly question: HTMLLIElement;
  readonly reply: HTMLLIElement;
  readonly #status: HTMLParagraphElement;
  readonly #text: HTMLParagraphElement;
  readonly #error: HTMLParagraphElement;
  readonly #results: HTMLUListElement;
  readonly #generated: HTMLDivElement;
  readonly #actions: HTMLDivElement;
  #figure:
    | {
        frame: HTMLDivElement;
        image: HTMLImageElement;
        layers: OverlayLayers;
        pixels?: ImageData | undefined;
      }
    | undefined;
  readonly #events: ResultEvent[] = [];
  readonly #noImage: HTMLParagraphElement;

  constructor(
    log: HTMLOListElement,
    readonly turn: Turn,
    readonly image: { src: string; label: string } | undefined,
    readonly actions: TurnActions,
  ) {
    this.question = h("li", { class: "turn user", id: `q-${turn.id}` });
    this.question.append(h("p", {}, turn.question));
    if (turn.region)
      this.question.append(
        h("p", { class: "note" }, "box" in turn.region ? "with a box region" : "with a point region"),
      );
    // Shown once the answer is in and drew nothing: a drawing request needs no image.
    this.#noImage = h(
      "p",
      { class: "note", hidden: "" },
      "No image attached: questions about an image need one (pick a sample or add yours).",
    );
    this.question.append(this.#noImage);
    this.reply = h("li", { class: "turn assistant", id: `a-${turn.id}`, "aria-busy": "true" });
    this.#status = h("p", { class: "status", role: "status" });
    this.#text = h("p", { class: "text" });
    this.#error = h("p", { class: "error", role: "alert", hidden: "" });
    this.#results = h("ul", { class: "results", "aria-label": "Results" });
    this.#generated = h("div", { class: "generated" });
    this.#actions = h("div", { class: "actions" });
    this.reply.append(this.#status, this.#text, this.#generated, this.#results, this.#error, this.#actions);
    log.append(this.question, this.reply);
    this.setAnswer(turn.answer);
    for (const event of turn.results) this.addResult(event);
    this.setStatus(turn.status, turn.error);
  }

  setStatus(status: TurnStatus, detail?: string): void {
    this.turn.status = status;
    this.reply.dataset.status = status;
    this.#status.textContent =
      detail && (status === "waiting" || status === "sending") ? detail : STATUS_TEXT[status];
    this.#status.hidden = !this.#status.textContent;
    const finished = status === "done" || status === "stopped" || status === "error";
    this.reply.setAttribute("aria-busy", finished ? "false" : "true");
    this.#noImage.hidden =
      !finished || this.turn.hadImage || this.turn.results.some((r) => r.type === "image");
    if (status === "error" && detail) {
      this.turn.error = detail;
      this.#error.textContent = detail;
      this.#error.hidden = false;
    }
    if (status === "stopped")
      for (const caption of this.#generated.querySelectorAll("figure:not(.done) figcaption"))
        caption.textContent = `${caption.textContent ?? ""} (stopped)`;
  }

  setAnswer(text: string): void {
    this.turn.answer = text;
    this.#text.textContent = text;
    this.#text.hidden = !text;
  }

  /** The regenerate button, on the last finished turn only. */
  offerRegenerate(offer: boolean): void {
    this.#actions.replaceChildren();
    if (!offer) return;
    const button = h("button", { type: "button", class: "regenerate" }, "Regenerate");
    button.addEventListener("click", () => this.actions.regenerate());
    this.#actions.append(button);
  }

  addResult(event: ResultEvent): void {
    if (!this.turn.results.includes(event)) this.turn.results.push(event);
    this.#events.push(event);
    // A generated image's description is its own caption; the list is for what is drawn on the image.
    if (event.type !== "image") this.#results.append(h("li", {}, describeResult(event)));
    this.#results.setAttribute("aria-label", `Results: ${summarize(this.#events)}`);
    if (event.type === "image") this.#showImage(event);
    else this.#draw(event);
  }

  progress(event: EventOf<"image-progress">): void {
    const figure = this.#generatedFigure(event.group, event.task);
    const bar = figure.querySelector("progress");
    if (bar) {
      bar.max = event.total_steps;
      bar.value = event.step;
    }
    const caption = figure.querySelector("figcaption");
    if (caption)
      caption.textContent = `${event.task === "editing" ? "Editing" : "Drawing"}: step ${event.step} / ${event.total_steps}`;
    const img = figure.querySelector("img");
    if (img && event.preview_png_base64) img.src = `data:image/png;base64,${event.preview_png_base64}`;
  }

  #generatedFigure(group: number, task: string): HTMLElement {
    const id = `gen-${this.turn.id}-${group}`;
    const existing = document.getElementById(id);
    if (existing) return existing;
    const figure = h("figure", { id, class: "gen" });
    figure.append(
      h("img", { alt: `${task === "editing" ? "Edited" : "Generated"} image (in progress)` }),
      h("progress", { max: "1", value: "0" }),
      h("figcaption", {}, task === "editing" ? "Editing…" : "Drawing…"),
    );
    this.#generated.append(figure);
    return figure;
  }

  #showImage(event: EventOf<"image">): void {
    const figure = this.#generatedFigure(event.group, event.task);
    figure.classList.add("done");
    figure.querySelector("progress")?.remove();
    const src = `data:image/png;base64,${event.png_base64}`;
    const img = figure.querySelector("img");
    if (img) {
      img.src = src;
      img.alt = `${describeResult(event)}, for: ${this.turn.question}`;
    }
    const caption = figure.querySelector("figcaption");
    if (caption) {
      caption.textContent = describeResult(event);
      const download = h(
        "a",
        { href: src, download: `visionllm-${event.task}-${event.seed}.png`, class: "button" },
        "Download",
      );
      const edit = h("button", { type: "button", class: "edit-this" }, "Edit this");
      edit.addEventListener("click", () => this.actions.editImage(src));
      caption.append(" ", download, " ", edit);
    }
  }

  #draw(event: EventOf<"detections"> | EventOf<"keypoints">): void {
    const figure = this.#resultFigure();
    if (!figure) return;
    if (event.type === "detections") drawDetections(figure.layers, event, figure.pixels);
    else drawKeypoints(figure.layers, event);
    layoutLabels(figure.layers.svg, figure.frame.clientWidth);
  }

  /** The conversation's image with this turn's overlays, made on the turn's first perception result. */
  #resultFigure() {
    if (this.#figure || !this.image) return this.#figure;
    const figure = h("figure", { class: "result" });
    const frame = h("div", { class: "frame" });
    const image = h("img", {
      src: this.image.src,
      alt: `${this.image.label}, with this answer's results drawn on it`,
    });
    const masks = h("canvas", { class: "masks", "aria-hidden": "true" });
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("class", "overlay");
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("preserveAspectRatio", "none");
    frame.append(image, masks, svg);
    const png = h("button", { type: "button", class: "download-png" }, "Download PNG");
    const json = h("button", { type: "button", class: "download-json" }, "JSON");
    const tools = h("div", { class: "figure-tools" });
    tools.append(png, json);
    figure.append(frame, tools);
    this.#results.before(figure);
    const layers = { svg: svg as SVGSVGElement, masks };
    // Until the image has decoded its natural size is unknown: a 128-pixel world image is assumed,
    // and the overlay is sized again once it has loaded.
    resetOverlay(layers, image.naturalWidth || 128, image.naturalHeight || 128);
    this.#figure = { frame, image, layers };
    const current = this.#figure;
    image.decode().then(
      () => {
        current.pixels = imagePixels(image);
        resetOverlay(layers, image.naturalWidth, image.naturalHeight);
        for (const e of this.#events) {
          if (e.type === "detections") drawDetections(layers, e, current.pixels);
          else if (e.type === "keypoints") drawKeypoints(layers, e);
        }
        layoutLabels(layers.svg, frame.clientWidth);
      },
      () => undefined,
    );
    new ResizeObserver(() => layoutLabels(layers.svg, frame.clientWidth)).observe(frame);
    png.addEventListener("click", async () => {
      const scale = Math.max(
        2,
        (frame.clientWidth * (window.devicePixelRatio || 1)) / (image.naturalWidth || 128),
      );
      const blob = await composite(image, layers, this.actions.show(), scale);
      if (blob) save(blob, `visionllm-${this.turn.id}.png`);
    });
    json.addEventListener("click", () =>
      save(
        new Blob([JSON.stringify(this.turn.results, null, 1)], { type: "application/json" }),
        `visionllm-${this.turn.id}.json`,
      ),
    );
    return this.#figure;
  }
}
