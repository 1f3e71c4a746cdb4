import type { Region } from "./store";

/**
 * The image panel: the conversation's image (dropped, pasted, chosen or a sample scene), replace and
 * remove, and the region the next question refers to, drawn with a pointer or with the keyboard
 * (arrows move the cursor, Shift moves faster, Enter or Space marks, Escape clears).
 */

export interface Sample {
  file: string;
  caption: string;
}

export interface WorkspaceEvents {
  /** A new image was chosen; `label` is its text alternative. */
  image(dataUrl: string, label: string): void;
  removed(): void;
  error(message: string): void;
}

const SVG = "http://www.w3.org/2000/svg";
const SAMPLES_SHOWN = 4;

const $ = <T extends Element>(id: string) => {
  const node = document.getElementById(id);
  if (!node) throw new Error(`#${id} missing from the page`);
  return node as unknown as T;
};

export function readAsDataUrl(file: Blob): Promise<string> {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result));
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

export class Workspace {
  region: Region | undefined;
  #mode: "box" | "point" | undefined;
  #cursor: [number, number] = [64, 64];
  #anchor: [number, number] | undefined;
  #drag: [number, number] | undefined;
  #samples: Sample[] = [];
  #sampleOffset = 0;
  readonly #image = $<HTMLImageElement>("image");
  readonly #selection = $<SVGSVGElement>("selection");
  readonly #status = $<HTMLParagraphElement>("region-status");

  constructor(readonly events: WorkspaceEvents) {
    this.#wireInputs();
    this.#wireRegion();
  }

  /** Shows `dataUrl` (or the empty drop zone) without telling anyone: for restoring a saved chat. */
  async show(dataUrl: string | undefined, label = ""): Promise<void> {
    $<HTMLElement>("frame").hidden = !dataUrl;
    $<HTMLElement>("drop").hidden = Boolean(dataUrl);
    $<HTMLElement>("image-tools").hidden = !dataUrl;
    this.clearRegion();
    if (!dataUrl) {
      this.#image.removeAttribute("src");
      return;
    }
    this.#image.src = dataUrl;
    this.#image.alt = label || "your image";
    await this.#image.decode().catch(() => undefined);
    const w = this.#image.naturalWidth || 128;
    const h = this.#image.naturalHeight || 128;
    this.#selection.setAttribute("viewBox", `0 0 ${w} ${h}`);
    this.#cursor = [w / 2, h / 2];
  }

  async loadFile(file: Blob, label: string): Promise<void> {
    if (!/^image\/(png|jpeg|webp)$/.test(file.type)) {
      this.events.error("Please use a PNG, JPEG or WebP image.");
      return;
    }
    const url = await readAsDataUrl(file);
    await this.show(url, label);
    this.events.image(url, label);
  }

  clearRegion(): void {
    this.region = undefined;
    this.#anchor = undefined;
    this.#draw();
    this.#say("No region selected.");
  }

  setMode(mode: "box" | "point" | undefined): void {
    this.#mode = mode;
    for (const m of ["box", "point"] as const) {
      const button = $<HTMLButtonElement>(`mode-${m}`);
      button.setAttribute("aria-pressed", String(mode === m));
      button.classList.toggle("active", mode === m);
    }
    this.#selection.classList.toggle("selecting", mode !== undefined);
    this.#selection.setAttribute("tabindex", mode ? "0" : "-1");
    this.#anchor = undefined;
    this.#draw();
    if (mode)
      this.#say(
        mode === "box"
          ? "Box mode: drag on the image, or focus it and use the arrow keys, Enter at one corner and Enter at the other."
          : "Point mode: click the image, or focus it, move with the arrow keys and press Enter.",
      );
  }

  async setSamples(samples: Sample[]): Promise<void> {
    this.#samples = samples;
    this.#renderSamples();
  }

  #renderSamples(): void {
    const list = $<HTMLDivElement>("sample-list");
    list.replaceChildren();
    for (let i = 0; i < Math.min(SAMPLES_SHOWN, this.#samples.length); i++) {
      const sample = this.#samples[(this.#sampleOffset + i) % this.#samples.length];
      if (!sample) continue;
      const button = document.createElement("button");
      button.type = "button";
      button.className = "sample";
      button.title = sample.caption;
      const img = document.createElement("img");
      img.src = `/samples/${sample.file}`;
      img.alt = `Sample scene: ${sample.caption}`;
      img.loading = "lazy";
      button.append(img);
      button.addEventListener("click", async () => {
        const response = await fetch(img.src);
        if (!response.ok) {
          this.events.error(`The sample scene could not be loaded (${response.status}).`);
          return;
        }
        // The samples are PNGs, whatever type the static server gives them.
        const blob = new Blob([await response.arrayBuffer()], { type: "image/png" });
        await this.loadFile(blob, `Sample scene: ${sample.caption}`);
      });
      list.append(button);
    }
  }

  #wireInputs(): void {
    const file = $<HTMLInputElement>("file");
    const choose = () => file.click();
    file.addEventListener("change", () => {
      const chosen = file.files?.[0];
      if (chosen) void this.loadFile(chosen, chosen.name ? `your image ${chosen.name}` : "your image");
      file.value = "";
    });
    // A native button: Enter and Space open the chooser as a click does. The whole zone takes a
    // pointer's click too.
    const drop = $<HTMLElement>("drop");
    $("choose-image").addEventListener("click", (e) => {
      e.stopPropagation();
      choose();
    });
    drop.addEventListener("click", choose);
    for (const zone of [drop, $<HTMLElement>("workspace")]) {
      zone.addEventListener("dragover", (e) => {
        e.preventDefault();
        document.body.classList.add("dragging");
      });
      zone.addEventListener("dragleave", () => document.body.classList.remove("dragging"));
      zone.addEventListener("drop", (e) => {
        e.preventDefault();
        document.body.classList.remove("dragging");
        const dropped = e.dataTransfer?.files[0];
        if (dropped) void this.loadFile(dropped, "your image");
      });
    }
    document.addEventListener("paste", (e) => {
      const pasted = [...(e.clipboardData?.items ?? [])]
        .find((i) => i.type.startsWith("image/"))
        ?.getAsFile();
      if (pasted) void this.loadFile(pasted, "your pasted image");
    });
    $("replace-image").addEventListener("click", choose);
    $("remove-image").addEventListener("click", async () => {
      await this.show(undefined);
      this.events.removed();
    });
    $("more-samples").addEventListener("click", () => {
      this.#sampleOffset = (this.#sampleOffset + SAMPLES_SHOWN) % Math.max(1, this.#samples.length);
      this.#renderSamples();
    });
    for (const m of ["box", "point"] as const)
      $(`mode-${m}`).addEventListener("click", () => this.setMode(this.#mode === m ? undefined : m));
    $("clear-region").addEventListener("click", () => this.clearRegion());
  }

  #wireRegion(): void {
    const sel = this.#selection;
    sel.addEventListener("focus", () => this.#draw());
    sel.addEventListener("blur", () => this.#draw());
    sel.addEventListener("pointerdown", (e) => {
      if (!this.#mode) return;
      const p = this.#point(e);
      if (this.#mode === "point") this.#setRegion({ point: p });
      else this.#drag = p;
    });
    sel.addEventListener("pointermove", (e) => {
      if (this.#mode === "box" && this.#drag)
        this.#setRegion({ box: boxOf(this.#drag, this.#point(e)) }, false);
    });
    sel.addEventListener("pointerup", () => {
      if (this.region) this.#setRegion(this.region);
      this.#drag = undefined;
    });
    sel.addEventListener("keydown", (e) => {
      if (!this.#mode) return;
      const step = e.shiftKey ? 8 : 2;
      const moves: Record<string, [number, number]> = {
        ArrowLeft: [-step, 0],
        ArrowRight: [step, 0],
        ArrowUp: [0, -step],
        ArrowDown: [0, step],
      };
      const move = moves[e.key];
      const w = this.#image.naturalWidth || 128;
      const h = this.#image.naturalHeight || 128;
      if (move) {
        e.preventDefault();
        this.#cursor = [clamp(this.#cursor[0] + move[0], 0, w), clamp(this.#cursor[1] + move[1], 0, h)];
        if (this.#anchor) this.region = { box: boxOf(this.#anchor, this.#cursor) };
        this.#draw();
      } else if (e.key === "Enter" || e.key === " ") {
        e.preventDefault();
        if (this.#mode === "point") this.#setRegion({ point: [...this.#cursor] });
        else if (!this.#anchor) {
          this.#anchor = [...this.#cursor];
          this.#say(
            `First corner at ${this.#cursor.map(Math.round).join(", ")}; move to the other corner and press Enter.`,
          );
        } else {
          this.#setRegion({ box: boxOf(this.#anchor, this.#cursor) });
          this.#anchor = undefined;
        }
      } else if (e.key === "Escape") this.clearRegion();
    });
  }

  #setRegion(region: Region, announce = true): void {
    this.region = region;
    this.#draw();
    if (!announce) return;
    this.#say(
      "box" in region
        ? `Box region from ${region.box.slice(0, 2).map(Math.round).join(", ")} to ${region.box.slice(2).map(Math.round).join(", ")}.`
        : `Point region at ${region.point.map(Math.round).join(", ")}.`,
    );
  }

  #say(text: string): void {
    this.#status.textContent = text;
  }

  #point(e: PointerEvent): [number, number] {
    const rect = this.#image.getBoundingClientRect();
    return [
      ((e.clientX - rect.left) / rect.width) * (this.#image.naturalWidth || 128),
      ((e.clientY - rect.top) / rect.height) * (this.#image.naturalHeight || 128),
    ];
  }

  #draw(): void {
    const sel = this.#selection;
    sel.replaceChildren();
    const unit = (this.#image.naturalWidth || 128) / 100;
    const region = this.region;
    if (region && "box" in region) {
      const [x0, y0, x1, y1] = region.box;
      sel.append(svg("rect", { class: "region", x: x0, y: y0, width: x1 - x0, height: y1 - y0 }));
    } else if (region) {
      sel.append(svg("circle", { class: "region", cx: region.point[0], cy: region.point[1], r: unit * 1.5 }));
    }
    if (this.#mode && document.activeElement === sel)
      sel.append(svg("circle", { class: "cursor", cx: this.#cursor[0], cy: this.#cursor[1], r: unit * 2 }));
  }
}

const clamp = (v: number, lo: number, hi: number) => Math.min(hi, Math.max(lo, v));

function boxOf(a: [number, number], b: [number, number]): [number, number, number, number] {
  return [Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.max(a[0], b[0]), Math.max(a[1], b[1])];
}

function svg(name: "rect" | "circle", attrs: Record<string, string | number>): SVGElement {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
}
