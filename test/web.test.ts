import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { type BrowserContext, chromium, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Spawned, startStack } from "./helpers/processes";

/** The web chat in Debian's Chromium, driven by playwright-core, against the real local stack. */

const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const SHOTS = process.env.SCREENSHOT_DIR ?? "test-results/web";
const bundle = process.env.TEST_BUNDLE ?? "model/bundle";
const AXE = readFileSync("node_modules/axe-core/axe.min.js", "utf8");
const truth = JSON.parse(readFileSync("test/fixtures/scene-detect.json", "utf8")) as {
  objects: Array<{ name: string; kind: string; box: [number, number, number, number] }>;
};
const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };
const LAST_REPLY = "#log li.assistant:last-child";

function iou(a: number[], b: number[]): number {
  const ix = Math.max(0, Math.min(a[2] ?? 0, b[2] ?? 0) - Math.max(a[0] ?? 0, b[0] ?? 0));
  const iy = Math.max(0, Math.min(a[3] ?? 0, b[3] ?? 0) - Math.max(a[1] ?? 0, b[1] ?? 0));
  const area = (r: number[]) => ((r[2] ?? 0) - (r[0] ?? 0)) * ((r[3] ?? 0) - (r[1] ?? 0));
  return (ix * iy) / (area(a) + area(b) - ix * iy);
}

async function axeViolations(page: Page): Promise<string[]> {
  if (!(await page.evaluate(() => "axe" in window))) await page.addScriptTag({ content: AXE });
  return page.evaluate(async () => {
    const axe = (
      window as unknown as {
        axe: { run: () => Promise<{ violations: Array<{ id: string; nodes: unknown[] }> }> };
      }
    ).axe;
    const result = await axe.run();
    return result.violations.map((v) => `${v.id} (${v.nodes.length})`);
  });
}

async function ask(page: Page, question: string, timeout = 60_000): Promise<void> {
  const before = await page.locator("#log li.assistant").count();
  await page.fill("#question", question);
  await page.press("#question", "Enter");
  await page.waitForFunction((n) => document.querySelectorAll("#log li.assistant").length > n, before);
  await page.waitForSelector(`${LAST_REPLY}[aria-busy="false"]`, { timeout });
}

/** The page never scrolls and the input is fully inside the window. */
async function inputPinned(
  page: Page,
): Promise<{ pageScrolls: boolean; inputBottom: number; height: number }> {
  return page.evaluate(() => {
    const form = document.getElementById("ask")?.getBoundingClientRect();
    const root = document.scrollingElement ?? document.documentElement;
    return {
      pageScrolls: root.scrollHeight > window.innerHeight + 1 || root.scrollWidth > window.innerWidth + 1,
      inputBottom: form?.bottom ?? 1e9,
      height: window.innerHeight,
    };
  });
}

// A missing browser fails the suite with what to install; skipping it takes an explicit choice.
describe.skipIf(process.env.VISIONLLM_SKIP_BROWSER === "1")("web client in a real browser", () => {
  let stack: Spawned & { edge: string; apiKey: string };
  let browser: BrowserContext;
  let page: Page;

  beforeAll(async () => {
    if (!existsSync(CHROMIUM))
      throw new Error(
        `The browser tests need Chromium at ${CHROMIUM}: run sudo apt-get install -y chromium (or set VISIONLLM_SKIP_BROWSER=1 to skip them knowingly).`,
      );
    mkdirSync(SHOTS, { recursive: true });
    stack = await startStack({ RUNNER_BUNDLE: bundle });
    browser = await chromium.launchPersistentContext(await mkdtemp(path.join(tmpdir(), "chromium-")), {
      executablePath: CHROMIUM,
      viewport: DESKTOP,
      acceptDownloads: true,
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
      ],
    });
    page = await browser.newPage();
    await page.goto(stack.edge);
  }, 240_000);

  afterAll(async () => {
    await browser?.close();
    await stack?.stop();
  }, 30_000);

  it("welcomes a newcomer: what the model does, where a key comes from, sample scenes and prompts", async () => {
    await page.waitForSelector("#sample-list .sample img");
    expect(await page.textContent("#welcome")).toMatch(/circles, squares, triangles/);
    expect(await page.textContent("#key-help")).toMatch(/npm start/);
    const first = await page.$$eval("#sample-list img", (imgs) =>
      imgs.map((i) => i.getAttribute("alt") ?? ""),
    );
    expect(first).toHaveLength(4);
    for (const alt of first) expect(alt).toMatch(/^Sample scene: There is /);
    await page.click("#more-samples");
    const second = await page.$$eval("#sample-list img", (imgs) =>
      imgs.map((i) => i.getAttribute("alt") ?? ""),
    );
    expect(second).not.toEqual(first);
    const chips = await page.$$eval("#chips .chip", (nodes) => nodes.map((n) => n.textContent));
    expect(chips).toEqual(expect.arrayContaining(["Detect", "Segment", "Pose", "Draw", "Edit", "Region"]));
    expect(await axeViolations(page)).toEqual([]);
    await page.screenshot({ path: `${SHOTS}/welcome.png` });
  });

  it("explains a bad key next to the key box and in the reply, and keeps the question", async () => {
    await page.fill("#key", "vl_0000000000000000000000000000000000000000");
    await page.dispatchEvent("#key", "change");
    await page.fill("#question", "Hello!");
    await page.press("#question", "Enter");
    await page.waitForSelector(`${LAST_REPLY} .error:not([hidden])`);
    expect(await page.textContent(`${LAST_REPLY} .error`)).toMatch(/API key was not accepted/);
    expect(await page.isVisible("#key-error")).toBe(true);
    expect(await page.getAttribute("#key", "aria-invalid")).toBe("true");
    expect(await page.inputValue("#question")).toBe("Hello!");
    await page.screenshot({ path: `${SHOTS}/bad-key.png` });
    await page.fill("#key", stack.apiKey);
    await page.dispatchEvent("#key", "change");
    expect(await page.isVisible("#key-error")).toBe(false);
  });

  it("says when no image is attached", async () => {
    await page.click("#new-chat");
    await ask(page, "How many squares are there?");
    const note = page.locator("#log li.user").last().locator(".note", { hasText: "No image attached" });
    expect(await note.isVisible()).toBe(true);
  });

  it("keeps each turn's image, overlays and results list; boxes sit on the scene's objects", async () => {
    await page.click("#new-chat");
    await page.setInputFiles("#file", "test/fixtures/scene-detect.png");
    await page.waitForSelector("#frame:not([hidden])");
    await ask(page, "Detect every purple diamond.");
    await ask(page, "Where is the red circle?");
    const figures = page.locator("#log .result");
    expect(await figures.count()).toBe(2);
    const boxesOf = (i: number) =>
      figures
        .nth(i)
        .locator(".detection rect.box")
        .evaluateAll((nodes) => nodes.map((n) => (n.getAttribute("data-box") ?? "").split(",").map(Number)));
    const detected = await boxesOf(0);
    const targets = truth.objects.filter((o) => o.name === "purple diamond");
    const best = detected.map((d) => Math.max(...targets.map((t) => iou(d, t.box))));
    console.log(
      `detection: ${detected.length} boxes, IoU with their object ${best.map((b) => b.toFixed(2))}`,
    );
    expect(detected.length).toBeGreaterThan(0);
    for (const b of best) expect(b).toBeGreaterThanOrEqual(0.5);
    // The first turn's overlay is still there after the second; each has a text list of its results.
    expect((await boxesOf(1)).length).toBeGreaterThan(0);
    expect(await page.locator("#log .results").first().textContent()).toMatch(/Detection · .*found/);
    // Labels sit on chips inside the image, at a readable size on screen.
    const labels = await figures.nth(0).evaluate((figure) => {
      const svg = figure.querySelector("svg");
      const width = svg?.viewBox.baseVal.width ?? 0;
      return [...figure.querySelectorAll("rect.chip")].map((chip) => ({
        x: Number(chip.getAttribute("x")),
        w: Number(chip.getAttribute("width")),
        screenHeight: chip.getBoundingClientRect().height,
        width,
      }));
    });
    for (const l of labels) {
      expect(l.x).toBeGreaterThanOrEqual(0);
      expect(l.x + l.w).toBeLessThanOrEqual(l.width + 0.01);
      expect(l.screenHeight).toBeGreaterThanOrEqual(11);
    }
    expect(await axeViolations(page)).toEqual([]);
    await page.screenshot({ path: `${SHOTS}/conversation.png` });
  });

  it("paints masks in a colour that stands out from the object under them", async () => {
    await ask(page, "Segment every purple diamond.");
    const contrast = await page
      .locator("#log .result")
      .last()
      .evaluate(async (figure) => {
        const img = figure.querySelector("img");
        const masks = figure.querySelector("canvas");
        if (!img || !masks) return [];
        await img.decode();
        const c = document.createElement("canvas");
        c.width = masks.width;
        c.height = masks.height;
        const ctx = c.getContext("2d");
        if (!ctx) return [];
        ctx.drawImage(img, 0, 0, c.width, c.height);
        const under = ctx.getImageData(0, 0, c.width, c.height).data;
        const over =
          masks.getContext("2d")?.getImageData(0, 0, c.width, c.height).data ?? new Uint8ClampedArray();
        const out: number[] = [];
        for (let i = 0; i < over.length; i += 4) {
          if ((over[i + 3] ?? 0) === 0) continue;
          const d = [0, 1, 2].reduce((s, k) => s + ((over[i + k] ?? 0) - (under[i + k] ?? 0)) ** 2, 0);
          out.push(Math.sqrt(d));
        }
        return out;
      });
    if (contrast.length === 0) console.log("segmentation: the model returned no mask for this scene");
    else expect(contrast.reduce((a, b) => a + b, 0) / contrast.length).toBeGreaterThan(120);
  });

  it("exports the overlay at display resolution", async () => {
    const [download] = await Promise.all([
      page.waitForEvent("download"),
      page.locator("#log .result .download-png").first().click(),
    ]);
    const file = await download.path();
    const png = readFileSync(file);
    const width = png.readUInt32BE(16);
    const shown = await page
      .locator("#log .result .frame")
      .first()
      .evaluate((f) => f.clientWidth);
    expect(width).toBeGreaterThanOrEqual(Math.min(shown, 256));
    expect(width).toBeGreaterThan(128);
  });

  it("keeps the conversation across a reload", async () => {
    const turns = await page.locator("#log li.assistant").count();
    const answers = await page.locator("#log li.assistant .text").allTextContents();
    await page.reload();
    await page.waitForSelector("#log li.assistant");
    expect(await page.locator("#log li.assistant").count()).toBe(turns);
    expect(await page.locator("#log li.assistant .text").allTextContents()).toEqual(answers);
    await page.waitForSelector("#log .result .detection");
    expect(await page.isVisible("#frame")).toBe(true);
  });

  it("starts a new chat, said out loud, when a new image comes", async () => {
    expect(await page.locator("#log li.assistant").count()).toBeGreaterThan(0);
    await page.setInputFiles("#file", "test/fixtures/scene-detect.png");
    await page.waitForFunction(() => document.querySelectorAll("#log li.assistant").length === 0);
    expect(await page.textContent("#chat-status")).toMatch(/new chat/i);
  });

  it("shows generated images inside the reply with progress, download and Edit this; each keeps its own", async () => {
    await page.click("#new-chat");
    await ask(page, "Draw a red circle on the left and a blue square on the right.");
    await ask(page, "Draw a yellow triangle.");
    const done = page.locator("#log .gen.done");
    expect(await done.count()).toBe(2);
    // A drawing needs no image: no "no image attached" note on these turns.
    expect(await page.locator("#log li.user .note:visible").count()).toBe(0);
    const ids = await done.evaluateAll((nodes) => nodes.map((n) => n.id));
    expect(new Set(ids).size).toBe(2);
    expect(await done.first().locator("img").getAttribute("src")).toMatch(/^data:image\/png;base64,/);
    expect(await done.first().locator("a[download]").count()).toBe(1);
    await page.screenshot({ path: `${SHOTS}/generation.png` });
    await done.last().locator(".edit-this").click();
    await page.waitForSelector("#frame:not([hidden])");
    expect(await page.getAttribute("#image", "src")).toMatch(/^data:image\/png;base64,/);
  });

  it("stops an answer mid-stream; an unfinished image says it stopped", async () => {
    await page.route("**/v1/chat", async (route) => {
      const body = JSON.parse(route.request().postData() ?? "{}") as Record<string, unknown>;
      await route.continue({
        postData: JSON.stringify({ ...body, max_tokens: 400, min_tokens: 400, temperature: 1 }),
      });
    });
    await page.fill("#question", "Describe the image.");
    await page.press("#question", "Enter");
    await page.waitForFunction(
      (sel) => (document.querySelector(`${sel} .text`)?.textContent ?? "").length > 3,
      LAST_REPLY,
    );
    await page.click("#stop");
    await page.waitForSelector(`${LAST_REPLY}[data-status="stopped"]`, { timeout: 10_000 });
    expect(await page.isEnabled("#send")).toBe(true);
    await page.unroute("**/v1/chat");
    await page.screenshot({ path: `${SHOTS}/stopped.png` });
  });

  it("says how long it has been waiting while the model is silent", async () => {
    await page.route("**/v1/chat", async (route) => {
      await new Promise((r) => setTimeout(r, 3500));
      await route.continue();
    });
    await page.fill("#question", "Hello!");
    await page.press("#question", "Enter");
    await page.waitForFunction(
      (sel) =>
        /Waiting for the model: \d+ s so far/.test(
          document.querySelector(`${sel} .status`)?.textContent ?? "",
        ),
      LAST_REPLY,
      { timeout: 10_000 },
    );
    await page.screenshot({ path: `${SHOTS}/waiting.png` });
    await page.waitForSelector(`${LAST_REPLY}[aria-busy="false"]`, { timeout: 60_000 });
    await page.unroute("**/v1/chat");
  });

  it("works from the keyboard: upload, region marking, labelled controls", async () => {
    await page.fill("#key", stack.apiKey);
    await page.dispatchEvent("#key", "change");
    await page.click("#new-chat");
    await page.waitForSelector("#choose-image", { state: "visible" });
    const [chooser] = await Promise.all([
      page.waitForEvent("filechooser"),
      page.locator("#choose-image").press("Enter"),
    ]);
    await chooser.setFiles("test/fixtures/scene-detect.png");
    await page.waitForSelector("#frame:not([hidden])");
    await page.click("#mode-box");
    expect(await page.getAttribute("#mode-box", "aria-pressed")).toBe("true");
    await page.locator("#selection").focus();
    for (let i = 0; i < 5; i++) await page.keyboard.press("Shift+ArrowLeft");
    await page.keyboard.press("Enter");
    for (let i = 0; i < 3; i++) await page.keyboard.press("Shift+ArrowRight");
    for (let i = 0; i < 3; i++) await page.keyboard.press("Shift+ArrowDown");
    await page.keyboard.press("Enter");
    expect(await page.textContent("#region-status")).toMatch(/^Box region from \d+, \d+ to \d+, \d+\.$/);
    expect(
      await page.locator("#question").evaluate((q) => (q as HTMLInputElement).labels?.[0]?.textContent),
    ).toBe("Message");
    await ask(page, "What is in this region?");
    expect(await page.locator("#log li.user").last().textContent()).toMatch(/with a box region/);
    expect(await page.locator(`${LAST_REPLY} .regenerate`).count()).toBe(1);
  });

  it("keeps the input on screen after many turns, on a desktop and on a phone", async () => {
    for (const viewport of [DESKTOP, PHONE]) {
      await page.setViewportSize(viewport);
      await page.click("#new-chat");
      await page.click("#sample-list .sample");
      await page.waitForSelector("#frame:not([hidden])");
      for (const q of [
        "Detect every shape and person.",
        "Draw a green triangle.",
        "How many circles are there?",
      ])
        await ask(page, q);
      const pinned = await inputPinned(page);
      expect(pinned.pageScrolls).toBe(false);
      expect(pinned.inputBottom).toBeLessThanOrEqual(pinned.height);
      if (viewport === PHONE) {
        // Touch targets: 44 px buttons, 24 px checkboxes.
        const small = await page.$$eval("button, .button, input[type=checkbox]", (nodes) =>
          nodes
            .filter((n) => (n as HTMLElement).offsetParent !== null)
            .map((n) => ({
              id: n.id || n.className,
              h: n.getBoundingClientRect().height,
              box: n.tagName === "INPUT",
            }))
            .filter((b) => b.h < (b.box ? 24 : 44)),
        );
        expect(small).toEqual([]);
        expect(await axeViolations(page)).toEqual([]);
        await page.screenshot({ path: `${SHOTS}/phone.png` });
      } else await page.screenshot({ path: `${SHOTS}/desktop-turns.png` });
    }
    await page.setViewportSize(DESKTOP);
  });

  it("highlights a drag over the image panel and can replace or remove the image", async () => {
    await page.dispatchEvent("#workspace", "dragover");
    expect(await page.evaluate(() => document.body.classList.contains("dragging"))).toBe(true);
    await page.dispatchEvent("#workspace", "dragleave");
    expect(await page.isVisible("#replace-image")).toBe(true);
    await page.click("#remove-image");
    expect(await page.isVisible("#frame")).toBe(false);
    expect(await page.isVisible("#drop")).toBe(true);
  });
});
