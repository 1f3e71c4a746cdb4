"""Evaluation on held-out scenes and held-out wordings (docs/NANO_WORLD.md's metrics and bars), and
the model card (MODEL_CARD.md beside the bundle) with the table, training curves and samples.

    /usr/bin/python3 -m model.nano.evaluate --bundle model/bundle --out model/.runs/full [--scenes 500]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time

import numpy as np
import torch
from PIL import Image, ImageDraw
from scipy import ndimage

from . import grammar as G
from . import tasks as T
from . import other_renderer
from . import world as W
from .export import round_for_export
from .infer import Runner
from .model import Config, VisionLLMv2Nano
from .tokenizer import Tokenizer

EVAL_SEED = 900_000  # training streams are seeded from small integers; these never collide
BARS = {
    "questions": 0.90,
    "region": 0.90,
    "detection": 0.85,
    "segmentation": 0.75,
    "grounding": 0.80,
    "pose": 0.75,
    "generation": 0.70,
    "editing": 0.70,
}
METRIC = {
    "questions": "exact answer accuracy",
    "region": "colour + kind accuracy",
    "detection": "AP50",
    "segmentation": "mean mask IoU (missed = 0)",
    "grounding": "accuracy at IoU >= 0.5",
    "pose": "PCK @ 0.1 x height",
    "generation": "exact objects, positions in the named third",
    "editing": "applied, rest unchanged (<= 6)",
}


def norm(text: str) -> str:
    return re.sub(r"[^a-z0-9 ]", "", text.lower()).strip()


def box_iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def average_precision(scored: list[tuple[float, bool]], n_gt: int) -> float:
    if n_gt == 0:
        return float("nan")
    scored = sorted(scored, key=lambda s: -s[0])
    tp = np.cumsum([1 if t else 0 for _, t in scored])
    fp = np.cumsum([0 if t else 1 for _, t in scored])
    if not len(scored):
        return 0.0
    recall = tp / n_gt
    precision = tp / np.maximum(tp + fp, 1)
    mrec = np.concatenate([[0], recall, [1]])
    mpre = np.concatenate([[0], precision, [0]])
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    idx = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]))


def parse_scene(image: np.ndarray) -> tuple[str | None, list[dict]]:
    """A rule-based judge: background colour, and each object's colour, kind and centre."""
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]]).astype(np.float32)
    bg = np.median(border, axis=0)
    bg_name = min(W.BACKGROUNDS, key=lambda n: np.abs(np.array(W.BACKGROUNDS[n]) - bg).sum())
    fg = np.abs(image.astype(np.float32) - bg).sum(-1) > 60
    labels, n = ndimage.label(fg)
    objects = []
    for i in range(1, n + 1):
        mask = labels == i
        area = int(mask.sum())
        if area < 60:
            continue
        ys, xs = np.nonzero(mask)
        mean = image[mask].astype(np.float32).mean(0)
        color = min(W.COLORS, key=lambda c: np.abs(np.array(W.COLORS[c]) - mean).sum())
        if np.abs(np.array(W.COLORS[color]) - mean).sum() > 90:
            color = None
        h, w = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
        fill = area / (h * w)
        widths = mask[ys.min() : ys.max() + 1].sum(1)
        widest = float(np.argmax(widths)) / max(1, h - 1)
        if fill > 0.88:
            kind = "square"
        elif fill > 0.68:
            kind = "circle"
        elif widest > 0.75:
            kind = "triangle"
        else:
            kind = "diamond"
        objects.append(
            {
                "color": color,
                "kind": kind,
                "center": (float(xs.mean()), float(ys.mean())),
                "box": (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1),
            }
        )
    return bg_name, objects


def judge_generation(image: np.ndarray, specs: list[tuple[str, str, str | None]]) -> bool:
    _, objects = parse_scene(image)
    if len(objects) != len(specs):
        return False
    remaining = list(objects)
    for color, kind, pos in specs:
        found = None
        for o in remaining:
            if o["color"] == color and o["kind"] == kind:
                if pos:
                    x0, y0, x1, y1 = W.region_of_position(pos)
                    cx, cy = o["center"]
                    if not (x0 <= cx < x1 and y0 <= cy < y1):
                        continue
                found = o
                break
        if found is None:
            return False
        remaining.remove(found)
    return True


class Evaluator:
    """Every family's metric, on requests drawn from the phrase grammar's `split`: "heldout" (frames,
    verbs, list forms and endings training never saw) or "train" (the training wordings)."""

    def __init__(self, runner: Runner, split: str = "heldout"):
        # Anything with Runner.generate's signature and result: the PyTorch reference runtime, or
        # api_eval.ApiRunner, which asks the running stack through its public API.
        self.runner = runner
        self.split = split

    def ask(self, question: str, image=None, regions=None, max_new_tokens: int = 120):
        turns = [(("<image>\n" if image is not None else "") + question, "")]
        return self.runner.generate(turns, image, regions, max_new_tokens=max_new_tokens, seed=0)

    def questions(self, rng, n):
        correct = 0
        examples = []
        for _ in range(n):
            s = T.vqa(rng, split=self.split)
            q, a = s.turns[0][0].replace("<image>\n", ""), s.turns[0][1]
            result = self.ask(q, s.image)
            ok = norm(result.text) == norm(a) or (
                norm(a) in ("yes", "no") and norm(result.text).split(" ")[:1] == [norm(a)]
            )
            correct += ok
            if len(examples) < 4:
                examples.append({"q": q, "expected": a, "answer": result.text})
        return correct / n, examples

    def region(self, rng, n):
        correct = 0
        for _ in range(n):
            s = T.region_question(rng, split=self.split)
            result = self.ask(s.turns[0][0].replace("<image>\n", ""), s.image, s.regions)
            correct += norm(result.text) == norm(s.turns[0][1])
        return correct / n, []

    def detection(self, rng, n, seg: bool):
        """Detection: AP50 per asked category (absent ones included), averaged. Segmentation: mean mask
        IoU over every ground-truth instance of the asked categories, a missed instance counting 0."""
        per_cat: dict[str, list] = {}
        gts: dict[str, int] = {}
        ious = []
        examples = []
        for _ in range(n):
            s = T.detection(rng, seg=seg, split=self.split)
            scene, masks = s.scene, s.masks
            cats = [c.phrase for c in s.calls]
            q = s.turns[0][0].replace("<image>\n", "")
            result = self.ask(q, s.image)
            if len(examples) < 3:
                examples.append({"q": q, "answer": result.text})
            for ci, cat in enumerate(cats):
                gt = T.category_members(scene, cat)
                gts[cat] = gts.get(cat, 0) + len(gt)
                group = result.detections[ci] if ci < len(result.detections) else {"items": []}
                det = group["items"]
                # Masks reach the user only from groups routed to a mask decoder: an answer that said
                # [DET] where [SEG] was asked gets no masks from the runtime, so none count here either.
                masked = group.get("routing") != "[DET]"
                used: dict[int, float] = {}
                for d in sorted(det, key=lambda d: -d["score"]):
                    best, best_iou = None, 0.5
                    for g in gt:
                        iou = box_iou(d["box"], scene.objects[g].box)
                        if g not in used and iou >= best_iou:
                            best, best_iou = g, iou
                    per_cat.setdefault(cat, []).append((d["score"], best is not None))
                    if best is not None:
                        pm, gm = d.get("mask") if masked else None, masks[best]
                        used[best] = float((pm & gm).sum() / max(1, (pm | gm).sum())) if pm is not None else 0.0
                ious += [used.get(g, 0.0) for g in gt]
        if seg:
            return float(np.mean(ious)) if ious else 0.0, examples
        aps = [average_precision(per_cat.get(c, []), gts[c]) for c in gts if gts[c] > 0]
        return float(np.mean(aps)) if aps else 0.0, examples

    def grounding(self, rng, n):
        correct = 0
        examples = []
        for _ in range(n):
            s = T.grounding(rng, split=self.split)
            q = s.turns[0][0].replace("<image>\n", "")
            result = self.ask(q, s.image)
            target = s.scene.objects[s.calls[0].targets[0]].box
            pred = (
                result.detections[0]["items"][0]["box"] if result.detections and result.detections[0]["items"] else None
            )
            correct += pred is not None and box_iou(pred, target) >= 0.5
            if len(examples) < 3:
                examples.append({"q": q, "answer": result.text})
        return correct / n, examples

    def pose(self, rng, n):
        hits = total = 0
        examples = []
        for _ in range(n):
            scene, image, _ = T.new_scene(rng, n_people=int(rng.integers(1, 3)), n_shapes=int(rng.integers(1, 4)))
            q = G.pose_request(rng, self.split)
            result = self.ask(q, image, max_new_tokens=160)
            if len(examples) < 2:
                examples.append({"q": q, "answer": result.text})
            for person in scene.people():
                height = person.box[3] - person.box[1]
                best = max(result.poses, key=lambda p: box_iou(p["box"], person.box), default=None)
                for k, (gx, gy) in enumerate(person.keypoints):
                    total += 1
                    if best is not None and box_iou(best["box"], person.box) > 0.3 and k < len(best["keypoints"]):
                        px, py = best["keypoints"][k]
                        hits += np.hypot(px - gx, py - gy) <= 0.1 * height
        return hits / max(1, total), examples

    def generation(self, rng, n, seed=0):
        ok = 0
        samples = []
        for i in range(n):
            s = T.generation(rng, split=self.split)
            q = s.turns[0][0]
            result = self.runner.generate([(q, "")], None, None, max_new_tokens=40, seed=seed + i)
            image = result.images[0] if result.images else None
            ok += image is not None and judge_generation(image, s.calls[0].objects)
            if len(samples) < 3 and image is not None:
                samples.append((q, image))
        return ok / n, samples

    def editing(self, rng, n, seed=0):
        ok = 0
        samples = []
        for i in range(n):
            s = T.editing(rng, split=self.split)
            target = s.calls[0].image
            source = s.image
            result = self.runner.generate([(s.turns[0][0], "")], source, None, max_new_tokens=40, seed=seed + i)
            out = result.images[0] if result.images else None
            if out is None:
                continue
            changed = np.abs(source.astype(int) - target.astype(int)).max(-1) > 30
            unchanged = np.abs(out.astype(int) - source.astype(int))[~changed].mean() if (~changed).any() else 0.0
            applied = np.abs(out.astype(int) - target.astype(int))[changed].mean() <= 40 if changed.any() else True
            ok += bool(applied and unchanged <= 6)
            if len(samples) < 3:
                samples.append((s.turns[0][0].replace("<image>\n", ""), source, out))
        return ok / n, samples


def draw_sample(runner: Runner, path: str) -> str:
    """A held-out scene with the model's boxes and keypoints drawn on it."""
    rng = np.random.default_rng(EVAL_SEED + 7)
    scene, image, _ = T.new_scene(rng, n_people=1, n_shapes=4)
    det = runner.generate([("<image>\nDetect every shape and person.", "")], image)
    pose = runner.generate([("<image>\nEstimate the pose of each person.", "")], image, max_new_tokens=160)
    big = Image.fromarray(image).resize((384, 384), Image.NEAREST)
    d = ImageDraw.Draw(big)
    for group in det.detections:
        for item in group["items"]:
            x0, y0, x1, y1 = (v * 3 for v in item["box"])
            d.rectangle([x0, y0, x1, y1], outline=(0, 0, 0), width=2)
            d.text((x0 + 2, y0 + 2), f"{group['label']} {item['score']:.2f}", fill=(0, 0, 0))
    for p in pose.poses:
        kps = [(x * 3, y * 3) for x, y in p["keypoints"]]
        for a, b in W.SKELETON:
            ia, ib = W.KEYPOINTS.index(a), W.KEYPOINTS.index(b)
            if ia < len(kps) and ib < len(kps):
                d.line([kps[ia], kps[ib]], fill=(255, 0, 160), width=2)
    big.save(path)
    return det.text


EXPERTS_FIGURES = "model/experts/experts.json"
HISTORY = "model/bundle-history.json"
EXPERT_METRIC = {
    "detection": "detection_ap50",
    "segmentation": "segmentation_mask_iou",
    "grounding": "grounding_accuracy",
    "pose": "pose_pck",
}


def evaluate_family(ev: Evaluator, family: str, scenes: int, card_dir: str | None) -> tuple[float, object]:
    """One family's figure; with `card_dir`, its sample images are saved there."""
    rng = rng_for(family, ev.split)
    if family == "questions":
        return ev.questions(rng, scenes)
    if family == "region":
        return ev.region(rng, scenes)
    if family in ("detection", "segmentation"):
        return ev.detection(rng, scenes, seg=family == "segmentation")
    if family == "grounding":
        return ev.grounding(rng, scenes)
    if family == "pose":
        return ev.pose(rng, max(50, scenes // 2))
    if family == "generation":
        value, samples = ev.generation(rng, scenes)
        for j, (_, im) in enumerate(samples if card_dir else []):
            Image.fromarray(im).resize((256, 256), Image.NEAREST).save(os.path.join(card_dir, f"generation-{j}.png"))
        return value, [q for q, _ in samples]
    value, samples = ev.editing(rng, scenes)
    for j, (_, src, out) in enumerate(samples if card_dir else []):
        pair = np.concatenate([src, np.full((128, 4, 3), 255, np.uint8), out], axis=1)
        Image.fromarray(pair).resize((520, 256), Image.NEAREST).save(os.path.join(card_dir, f"editing-{j}.png"))
    return value, [q for q, _, _ in samples]


def rng_for(family: str, split: str) -> np.random.Generator:
    """Each family and split draws from its own seed, so split runs measure exactly what one run does."""
    return np.random.default_rng(EVAL_SEED + list(BARS).index(family) + (0 if split == "heldout" else 50))


def evaluate_and_write_card(
    model: VisionLLMv2Nano,
    tok: Tokenizer,
    bundle: str,
    scenes: int = 500,
    families: list[str] | None = None,
    part: str | None = None,
    train_scenes: int = 200,
    renderer: str = "world",
) -> dict:
    """Evaluates `families` (default: all) with held-out wordings on `scenes` scenes each and with the
    training wordings on `train_scenes`, and writes the card. With `part`, writes only that part's
    results (card/eval-<part>.json); `merge_parts` then writes the card from all parts."""
    model.eval()
    results: dict[str, dict] = {"heldout": {}, "train": {}}
    examples: dict[str, object] = {}
    card_dir = os.path.join(bundle, "card")
    os.makedirs(card_dir, exist_ok=True)
    started = time.time()
    for split, n in (("heldout", scenes), ("train", train_scenes)):
        ev = Evaluator(Runner(model, tok), split)
        for family in BARS:
            if (families is not None and family not in families) or n <= 0:
                continue
            t0 = time.time()
            with torch.no_grad():
                value, ex = evaluate_family(ev, family, n, card_dir if split == "heldout" else None)
            results[split][family] = value
            if split == "heldout":
                examples[family] = ex
            print(f"eval {split} {family}: {value:.3f} (bar {BARS[family]}) in {time.time() - t0:.0f} s", flush=True)
    summary = {
        "scenes_per_family": scenes,
        "train_scenes_per_family": train_scenes,
        "results": results,
        "examples": examples,
        "seconds": time.time() - started,
        "renderer": renderer,
    }
    if part is not None:
        with open(os.path.join(card_dir, f"eval-{part}.json"), "w") as f:
            json.dump(summary, f, indent=1)
        return results
    finish_card(Runner(model, tok), bundle, summary)
    return results


def finish_card(runner, bundle: str, summary: dict) -> None:
    """The detection sample, eval.json and MODEL_CARD.md, once every family is measured."""
    card_dir = os.path.join(bundle, "card")
    detection_text = draw_sample(runner, os.path.join(card_dir, "detection-and-pose.png"))
    with open(os.path.join(card_dir, "eval.json"), "w") as f:
        json.dump({**summary, "bars": BARS}, f, indent=1)
    write_card(bundle, summary, detection_text)


def read_json(path: str, default):
    if not os.path.exists(path):
        return default
    with open(path) as f:
        return json.load(f)


def figure(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def write_card(bundle: str, summary: dict, detection_text: str) -> None:
    with open(os.path.join(bundle, "manifest.json")) as f:
        manifest = json.load(f)
    results, examples, scenes = summary["results"], summary["examples"], summary["scenes_per_family"]
    experts = read_json(EXPERTS_FIGURES, {})
    history = read_json(HISTORY, [])
    previous = history[-1]["results"] if history else {}
    previous_name = history[-1]["bundle"] if history else "none"
    total = sum(v["bytes"] for v in manifest["files"].values())
    held, train, other = results["heldout"], results["train"], results.get("other_renderer", {})
    rows = "\n".join(
        f"| {fam} | {METRIC[fam]} | **{figure(held.get(fam))}** | {figure(train.get(fam))} | "
        f"{figure(other.get(fam))} | "
        f"{figure(experts.get(EXPERT_METRIC.get(fam, ''))) if fam in EXPERT_METRIC else '-'} | "
        f"{figure(previous.get(fam))} | "
        f">= {BARS[fam]:.2f} | {'met' if held.get(fam, 0) >= BARS[fam] else '**not met**'} |"
        for fam in BARS
    )
    qa = "\n".join(
        f"- Q: {e['q']}  expected: {e['expected']}  model: {e['answer']}" for e in examples.get("questions", [])
    )
    asked = "\n".join(
        f"- {e['q']} -> {e['answer']}"
        for fam in ("detection", "segmentation", "grounding", "pose")
        for e in examples.get(fam, [])
    )
    c = manifest["config"]
    other_scenes = summary.get("other_renderer_scenes", "-")
    text = f"""# VisionLLM v2-nano — model card

A miniature of VisionLLM v2 (same architecture and super link) on the nano world (`docs/NANO_WORLD.md`),
built as the paper builds the full model: experts pretrained standalone, then joined to the LLM by the
super link (`npm run model:train`; the recipe is in `docs/MODEL.md`;
{manifest['model']['version']}).

- Vision encoder: ViT, {c['image_size']} px, patch {c['patch']}, {c['vit_layers']} layers x {c['vit_dim']};
  pretrained in stage 0 with the experts (per-patch kind and colour probes:
  {figure(experts.get('vision_probe_accuracy'))} on held-out foreground patches), then frozen.
  The LLM's image tokens and the region encoder also read the experts' shared convolutional trunk (a
  hybrid encoder, a departure): shape kinds were linearly separable in 57 % of objects from the ViT's
  features alone and in 100 % from the trunk's (`docs/MODEL.md`).
- LLM: LLaMA architecture, {c['llm_layers']} layers x {c['llm_dim']}, {c['llm_heads']} heads,
  vocabulary {c['vocab_size']} (byte-level BPE).
  It has no text pretraining of its own, so a stage 4 (a departure) tunes it again on every family
  beside a small language corpus (`model/nano/language.py`), the stand-in for what Vicuna knows of
  English: statements that put synonyms in shared contexts ("To trace the discs is to outline them."),
  whole synonym sets including the verbs, frames and list forms that the instruction data holds out,
  and what each kind of task is called ("Anyone who wants to cut out every disc needs segmentation
  results"), as an LLM that read about image processing knows.
  The corpus never phrases them as a request to the model, so the held-out figures below measure
  whether knowing a word carries over to instructions worded with it, as the paper's do.
- Super link: routing tokens [DET] [SEG] [GRD] [POSE] [GEN] [EDIT]; {c['perception_queries']} queries for perception
  (shared by DET/SEG/GRD, own table for POSE), {c['gen_queries']} for GEN and for EDIT. The link embeddings take
  the place of the experts' own phrase encoder, to which they are aligned during training (a departure).
- Perception expert (Grounding DINO's role): a dense, CenterNet-style head at stride 8 (one query per
  cell, 3 x 3 peak suppression in the graph) instead of DETR-style set matching, because it trains in
  minutes on two cores; class scores are dot products with the link embedding; a query's mask is the
  image's foreground inside its box (objects never overlap in the world). Pose expert (UniPose's role):
  person centres scored against the person embedding, keypoints regressed per person and refined on
  heatmaps scored against the keypoint-name embeddings. Generator and editor: flow matching at {c['gen_res']} px
  ({manifest['generation']['steps']} Euler steps), not yet pretrained as experts; their graphs store float16
  weights (rounded in PyTorch first, so the golden references match) to keep the bundle under 40 MB.
- Bundle: {len(manifest['files'])} files, {total / 1e6:.1f} MB.

## Evaluation

Held-out seeds; {scenes} scenes per family with **held-out wordings** (frames, verbs, list forms and
endings of the phrase grammar that training never saw), {summary.get('train_scenes_per_family', 0)} with the
training wordings;
pose on half as many. Measured by `model/nano/evaluate.py` with the PyTorch reference runtime (the
TypeScript runtime reproduces it: see the golden tests). "Expert alone" is the stage-0 expert asked
with canonical phrases, no LLM (`model/experts/experts.json`); "previous" is the bundle this one
replaces (`model/bundle-history.json`: {previous_name}, held-out wordings). The expert alone's segmentation
figure counts matched instances only; this bundle's and the previous one's count a missed instance as 0.
"Other renderer": held-out wordings on {other_scenes} scenes per family drawn by a second renderer that
training never saw (`model/nano/other_renderer.py`: PIL's rasteriser, Lanczos anti-aliasing, other
noise), from the same kind of scene descriptions, as users' scenes are drawn by their own programs.

| family | metric | held-out wordings | training wordings | other renderer | expert alone | previous | bar | |
| --- | --- | --- | --- | --- | --- | --- | --- | --- |
{rows}

## Training curves

![loss curves](card/loss_curves.png)

## Samples

Detection and pose on a held-out scene ("Detect every shape and person." -> "{detection_text}"):

![detection and pose](card/detection-and-pose.png)

Held-out wordings, perception:
{asked}

Questions:
{qa}

Generation ({'; '.join(examples.get('generation', []))}):

{' '.join(f'![generation](card/generation-{j}.png)' for j in range(len(examples.get('generation', []))))}

Editing, source and result ({'; '.join(examples.get('editing', []))}):

{' '.join(f'![editing](card/editing-{j}.png)' for j in range(len(examples.get('editing', []))))}
"""
    # What the recipe cannot know (how this bundle's run went, against the previous one) is written
    # by hand beside the card and kept through regenerations.
    notes = os.path.join(bundle, "card", "training.md")
    if os.path.exists(notes):
        with open(notes) as f:
            text = text.replace("\n## Training curves", "\n" + f.read() + "\n## Training curves", 1)
    with open(os.path.join(bundle, "MODEL_CARD.md"), "w") as f:
        f.write(text)


def merge_parts(model: VisionLLMv2Nano, tok: Tokenizer, bundle: str) -> dict:
    """Writes eval.json and the card from the parts of a split evaluation."""
    card_dir = os.path.join(bundle, "card")
    parts = sorted(f for f in os.listdir(card_dir) if f.startswith("eval-") and f.endswith(".json"))
    if not parts:
        # A second --merge would otherwise overwrite eval.json with nothing (the parts are consumed).
        raise SystemExit(f"no evaluation parts in {card_dir}: run --part a and --part b first")
    summary: dict = {"results": {"heldout": {}, "train": {}, "other_renderer": {}}, "examples": {}, "seconds": 0.0}
    for name in parts:
        data = read_json(os.path.join(card_dir, name), {})
        if data.get("renderer", "world") != "world":
            # Scenes drawn by the second renderer: held-out wordings, their own column of the card.
            summary["results"]["other_renderer"].update(data["results"]["heldout"])
            summary["other_renderer_scenes"] = data["scenes_per_family"]
            os.remove(os.path.join(card_dir, name))
            continue
        for split in ("heldout", "train"):
            summary["results"][split].update(data["results"][split])
        summary["examples"].update(data["examples"])
        summary["scenes_per_family"] = data["scenes_per_family"]
        summary["train_scenes_per_family"] = data["train_scenes_per_family"]
        summary["seconds"] = max(summary["seconds"], data["seconds"])
        os.remove(os.path.join(card_dir, name))
    model.eval()
    with torch.no_grad():
        finish_card(Runner(model, tok), bundle, summary)
    return summary["results"]


def load_trained(bundle: str, run_dir: str) -> tuple[VisionLLMv2Nano, Tokenizer]:
    """The model a bundle was exported from: its config and tokenizer, run_dir's checkpoint.pt."""
    with open(os.path.join(bundle, "manifest.json")) as f:
        cfg = Config(**{k: tuple(v) if isinstance(v, list) else v for k, v in json.load(f)["config"].items()})
    model = VisionLLMv2Nano(cfg)
    model.load_state_dict(torch.load(os.path.join(run_dir, "checkpoint.pt"), map_location="cpu")["model"])
    round_for_export(model)
    return model.eval(), Tokenizer.load(os.path.join(bundle, "tokenizer.json"))


def main() -> None:
    """Evaluates a trained checkpoint and writes the model card. On two cores, two processes halve
    the time: `--families questions,region,detection,segmentation --part a` and
    `--families grounding,pose,generation,editing --part b` at once, then `--merge`."""
    parser = argparse.ArgumentParser(description=main.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", default="model/bundle")
    parser.add_argument("--out", default="model/.runs/full", help="training folder with checkpoint.pt")
    parser.add_argument("--scenes", type=int, default=500, help="scenes per family with held-out wordings")
    parser.add_argument("--train-scenes", type=int, default=200, help="scenes per family with the training wordings")
    parser.add_argument("--families", default=None, help="comma-separated subset of the families")
    parser.add_argument("--part", default=None, help="write this part's results only (for --merge)")
    parser.add_argument("--merge", action="store_true", help="write the card from the parts")
    parser.add_argument(
        "--renderer",
        choices=["world", "other"],
        default="world",
        help="draw the scenes with world.render or the second renderer (other_renderer.py; needs --part)",
    )
    args = parser.parse_args()
    if args.renderer == "other":
        if args.part is None:
            parser.error("--renderer other writes a part of the card: give --part")
        W.render = other_renderer.render
    torch.set_num_threads(1)
    model, tok = load_trained(args.bundle, args.out)
    if args.merge:
        merge_parts(model, tok, args.bundle)
    else:
        evaluate_and_write_card(
            model,
            tok,
            args.bundle,
            args.scenes,
            args.families.split(",") if args.families else None,
            args.part,
            args.train_scenes if args.renderer == "world" else 0,
            args.renderer,
        )


if __name__ == "__main__":
    main()
