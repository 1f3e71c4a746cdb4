"""Stage 0: the nano experts trained standalone on the world generator, before any LLM exists.

    /usr/bin/python3 -m model.nano.pretrain [--config full|smoke] [--minutes 25] [--out model/.runs/experts]

Trains together, one step = one batch of scenes: the vision encoder (CLIP's role; per-patch kind and
colour linear probes keep it honest), the phrase encoder (BERT's role), the perception expert
(Grounding DINO's role: detection, masks, grounding) and the pose expert (UniPose's role). Writes
`experts.pt` (resumable) and `experts.json` (standalone figures on held-out scenes, canonical phrases).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import tasks as T
from . import world as W
from .experts import PerceptionExpert, PhraseEncoder, PoseExpert, cell_centres
from .losses import box_loss, centre_focal, mask_loss
from .model import SMOKE, Config, VisionEncoder, from_numpy, normalize_image

GRID = 16
KP_GRID = 32
MASK_SIDE = 64
EVAL_SEED = 700_000
KEYPOINT_PHRASES = [k.replace("_", " ") for k in W.KEYPOINTS]


# ---------------------------------------------------------------- targets (numpy, built in the data worker)


def centre_heat(boxes: list[tuple[float, float, float, float]], grid: int = GRID) -> np.ndarray:
    """CenterNet targets [grid*grid]: 1 at the cell holding each box centre, a Gaussian around it."""
    centres = cell_centres(grid).cpu().numpy() * W.SIZE
    heat = np.zeros(grid * grid, dtype=np.float32)
    for x0, y0, x1, y1 in boxes:
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        sigma = max(2.5, min(x1 - x0, y1 - y0) / 6)
        g = np.exp(-((centres[:, 0] - cx) ** 2 + (centres[:, 1] - cy) ** 2) / (2 * sigma**2))
        g[min(grid - 1, int(cy * grid / W.SIZE)) * grid + min(grid - 1, int(cx * grid / W.SIZE))] = 1.0
        heat = np.maximum(heat, g)
    return heat


def box_targets(
    boxes: list[tuple[float, float, float, float]], heat: np.ndarray, grid: int = GRID
) -> tuple[np.ndarray, np.ndarray]:
    """Per cell, the cxcywh of the object whose Gaussian is strongest there, and a weight (the Gaussian
    where it is at least 0.5: cells near a centre learn its box, so the peak's neighbours agree)."""
    centres = cell_centres(grid).cpu().numpy() * W.SIZE
    target = np.zeros((grid * grid, 4), dtype=np.float32)
    best = np.full(grid * grid, -np.inf, dtype=np.float32)
    for x0, y0, x1, y1 in boxes:
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        d = (centres[:, 0] - cx) ** 2 + (centres[:, 1] - cy) ** 2
        closer = -d > best
        best = np.where(closer, -d, best)
        target[closer] = [cx / W.SIZE, cy / W.SIZE, (x1 - x0) / W.SIZE, (y1 - y0) / W.SIZE]
    weight = np.where(heat >= 0.5, heat, 0.0).astype(np.float32)
    return target, weight


def mask_target(masks: list[np.ndarray], targets: list[int]) -> np.ndarray:
    """Union of the targets' masks at MASK_SIDE (area fraction, a soft target)."""
    union = np.zeros((W.SIZE, W.SIZE), dtype=np.float32)
    for i in targets:
        union = np.maximum(union, masks[i].astype(np.float32))
    f = W.SIZE // MASK_SIDE
    return union.reshape(MASK_SIDE, f, MASK_SIDE, f).mean(axis=(1, 3))


def foreground_target(masks: list[np.ndarray]) -> np.ndarray:
    """Every object's pixels at MASK_SIDE: what the perception expert's foreground map learns."""
    return mask_target(masks, list(range(len(masks))))


@dataclass
class PerceptionTarget:
    heat: np.ndarray  # [P]
    box: np.ndarray  # [P,4]
    box_weight: np.ndarray  # [P]


def perception_target(scene: W.Scene, masks: list[np.ndarray], targets: list[int]) -> PerceptionTarget:
    boxes = [scene.objects[i].box for i in targets]
    heat = centre_heat(boxes)
    box, weight = box_targets(boxes, heat)
    return PerceptionTarget(heat, box, weight)


@dataclass
class PoseTarget:
    heat: np.ndarray  # [P] person centres
    box: np.ndarray
    box_weight: np.ndarray
    centre_cells: list[int]  # per person, its centre cell
    keypoints: np.ndarray  # [M,K,2] in 0..1, same order as centre_cells
    kp_heat: np.ndarray  # [K,32*32]


def pose_target(scene: W.Scene) -> PoseTarget:
    people = scene.people()
    boxes = [p.box for p in people]
    heat = centre_heat(boxes)
    box, weight = box_targets(boxes, heat)
    cells = [
        min(GRID - 1, int((b[1] + b[3]) / 2 * GRID / W.SIZE)) * GRID
        + min(GRID - 1, int((b[0] + b[2]) / 2 * GRID / W.SIZE))
        for b in boxes
    ]
    kps = np.array([p.keypoints for p in people], dtype=np.float32).reshape(-1, len(W.KEYPOINTS), 2) / W.SIZE
    kp_heat = np.stack(
        [
            centre_heat(
                [(x * W.SIZE - 4, y * W.SIZE - 4, x * W.SIZE + 4, y * W.SIZE + 4) for x, y in kps[:, k]], KP_GRID
            )
            if len(kps)
            else np.zeros(KP_GRID * KP_GRID, dtype=np.float32)
            for k in range(len(W.KEYPOINTS))
        ]
    )
    return PoseTarget(heat, box, weight, cells, kps, kp_heat)


def patch_labels(scene: W.Scene, masks: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per ViT patch, the kind (0 background, 1-4 shapes, 5 person) and colour (0 none, 1-5) of the
    object under its centre: the vision encoder's probe targets."""
    kinds = np.zeros(GRID * GRID, dtype=np.int64)
    colors = np.zeros(GRID * GRID, dtype=np.int64)
    centre = np.arange(GRID) * (W.SIZE // GRID) + W.SIZE // GRID // 2
    for obj, m in zip(scene.objects, masks):
        hit = m[centre][:, centre].flatten()
        kinds[hit] = 5 if obj.kind == "person" else 1 + W.KINDS.index(obj.kind)
        colors[hit] = 0 if obj.color is None else 1 + list(W.COLORS).index(obj.color)
    return kinds, colors


# ---------------------------------------------------------------- losses


def perception_loss(
    expert: PerceptionExpert, feats, rows: torch.Tensor, emb: torch.Tensor, targets: list[PerceptionTarget]
) -> torch.Tensor:
    logits, boxes = expert.heads(feats, rows, emb)
    heat = from_numpy(np.stack([t.heat for t in targets]))
    loss = 2 * centre_focal(logits, heat)
    return loss + box_loss(
        boxes,
        from_numpy(np.stack([t.box for t in targets])),
        from_numpy(np.stack([t.box_weight for t in targets])),
    )


def foreground_loss(expert: PerceptionExpert, feats, foreground: np.ndarray) -> torch.Tensor:
    return mask_loss(feats[1], from_numpy(foreground))


def pose_loss(
    expert: PoseExpert,
    feats,
    rows: torch.Tensor,
    person: torch.Tensor,
    keypoints: torch.Tensor,
    targets: list[PoseTarget],
) -> torch.Tensor:
    logits, boxes, reg, heat = expert.heads(feats, rows, person, keypoints)
    loss = 2 * centre_focal(logits, from_numpy(np.stack([t.heat for t in targets])))
    loss = loss + box_loss(
        boxes,
        from_numpy(np.stack([t.box for t in targets])),
        from_numpy(np.stack([t.box_weight for t in targets])),
    )
    loss = loss + centre_focal(
        heat.flatten(0, 1), from_numpy(np.stack([t.kp_heat for t in targets])).flatten(0, 1)
    ) / len(W.KEYPOINTS)
    n_idx = [n for n, t in enumerate(targets) for _ in t.centre_cells]
    if n_idx:
        cells = torch.tensor([c for t in targets for c in t.centre_cells])
        truth = from_numpy(np.concatenate([t.keypoints for t in targets if len(t.centre_cells)]))
        idx = torch.tensor(n_idx)
        r = reg[idx, cells]  # [M,K,2]
        refined, _ = expert.refine(r[:, None], heat[idx])
        loss = loss + 10 * F.l1_loss(r, truth) + 10 * F.l1_loss(refined[:, 0], truth)
    return loss


# ---------------------------------------------------------------- data


def canonical_phrases(rng: np.random.Generator, scene: W.Scene) -> list[tuple[str, list[int]]]:
    """Categories (present and absent) and at most one referring expression, each with its objects."""
    out: list[tuple[str, list[int]]] = []
    for bias in (1.0, 0.4):
        c = T.random_category(rng, scene, bias)
        if c not in [p for p, _ in out]:
            out.append((c, T.category_members(scene, c)))
    exprs = T.referring_expressions(scene)
    if exprs:
        e, i = exprs[int(rng.integers(len(exprs)))]
        out.append((e, [i]))
    return out


@dataclass
class ExpertBatch:
    images: np.ndarray  # [B,128,128,3] uint8
    phrases: list[str]
    phrase_rows: list[int]
    perception: list[PerceptionTarget]
    pose: list[PoseTarget]
    foreground: np.ndarray  # [B,64,64]
    kinds: np.ndarray  # [B,P]
    colors: np.ndarray  # [B,P]


def expert_batch(rng: np.random.Generator, size: int) -> ExpertBatch:
    images, phrases, rows, perc, poses, fg, kinds, colors = [], [], [], [], [], [], [], []
    for b in range(size):
        scene = W.sample_scene(rng, n_people=int(rng.integers(0, 3)) if rng.random() < 0.5 else None)
        image, masks = W.render(scene)
        images.append(image)
        for phrase, targets in canonical_phrases(rng, scene):
            phrases.append(phrase)
            rows.append(b)
            perc.append(perception_target(scene, masks, targets))
        poses.append(pose_target(scene))
        fg.append(foreground_target(masks))
        k, c = patch_labels(scene, masks)
        kinds.append(k)
        colors.append(c)
    return ExpertBatch(np.stack(images), phrases, rows, perc, poses, np.stack(fg), np.stack(kinds), np.stack(colors))


class ExpertStream(torch.utils.data.IterableDataset):
    def __init__(self, batch_size: int, seed: int):
        self.batch_size = batch_size
        self.seed = seed

    def __iter__(self):
        rng = np.random.default_rng(self.seed)
        while True:
            yield expert_batch(rng, self.batch_size)


def quiet_worker(_: int) -> None:
    # Measured here: a data worker at normal priority takes about a quarter of the trainer's time.
    os.nice(19)
    torch.set_num_threads(1)


# ---------------------------------------------------------------- the experts together


class Experts(nn.Module):
    """Everything stage 0 trains. `vision`, `perception` and `pose` are loaded into VisionLLMv2Nano;
    `phrases` stays behind as the super link's teacher; the probes are training-only."""

    def __init__(self, c: Config):
        super().__init__()
        self.vision = VisionEncoder(c)
        self.phrases = PhraseEncoder(c)
        self.perception = PerceptionExpert(c)
        self.pose = PoseExpert(c, self.perception.backbone)
        self.kind_probe = nn.Linear(c.vit_dim, 6)
        self.color_probe = nn.Linear(c.vit_dim, 6)

    def losses(self, batch: ExpertBatch) -> dict[str, torch.Tensor]:
        pixels = normalize_image(from_numpy(batch.images))
        _, levels = self.vision(pixels)
        last = levels[:, -1]
        probe = F.cross_entropy(self.kind_probe(last).flatten(0, 1), from_numpy(batch.kinds).flatten())
        probe = probe + F.cross_entropy(self.color_probe(last).flatten(0, 1), from_numpy(batch.colors).flatten())
        emb = self.phrases(batch.phrases)
        base = self.perception.backbone(pixels, levels)
        feats = self.perception.features(pixels, levels, base)
        perc = perception_loss(self.perception, feats, torch.tensor(batch.phrase_rows), emb, batch.perception)
        perc = perc + foreground_loss(self.perception, feats, batch.foreground)
        n = len(batch.images)
        names = self.phrases(["person"] + KEYPOINT_PHRASES)
        person, kps = names[:1].expand(n, -1), names[1:][None].expand(n, -1, -1)
        pose = pose_loss(self.pose, base, torch.arange(n), person, kps, batch.pose)
        return {"probe": probe, "perception": perc, "pose": pose}


def train_experts(
    out: str, cfg: Config, minutes: float, batch_size: int = 24, max_steps: int = 100_000, lr: float = 2e-3, log=print
) -> Experts:
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "experts.pt")
    torch.manual_seed(0)
    experts = Experts(cfg)
    optimizer = torch.optim.AdamW(experts.parameters(), lr=lr, weight_decay=0.01)
    state = {"step": 0, "elapsed": 0.0, "history": []}
    if os.path.exists(path):
        saved = torch.load(path)
        experts.load_state_dict(saved["experts"])
        if saved.get("optimizer"):
            optimizer.load_state_dict(saved["optimizer"])
        state = saved["state"]
        log(f"stage 0: resuming at step {state['step']} ({state['elapsed'] / 60:.1f} min done)")
    stream = torch.utils.data.DataLoader(
        ExpertStream(batch_size, 10_000 + state["step"]),
        batch_size=None,
        num_workers=1,
        prefetch_factor=4,
        worker_init_fn=quiet_worker,
    )
    started = time.time() - state["elapsed"]
    last_save = time.time()
    experts.train()
    for batch in stream:
        elapsed = time.time() - started
        if elapsed >= minutes * 60 or state["step"] >= max_steps:
            break
        progress = elapsed / (minutes * 60)
        for g in optimizer.param_groups:
            g["lr"] = (
                lr * min(1.0, (state["step"] + 1) / 100) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))
            )
        parts = experts.losses(batch)
        loss = sum(parts.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(experts.parameters(), 1.0)
        optimizer.step()
        state["step"] += 1
        state["elapsed"] = time.time() - started
        state["history"].append({"step": state["step"], **{k: float(v) for k, v in parts.items()}})
        if state["step"] % 50 == 0:
            recent = state["history"][-50:]
            log(
                f"stage 0 step {state['step']} {elapsed / 60:.1f} min "
                + " ".join(f"{k}={np.mean([h[k] for h in recent]):.3f}" for k in parts)
            )
        if time.time() - last_save > 120:
            torch.save({"experts": experts.state_dict(), "optimizer": optimizer.state_dict(), "state": state}, path)
            last_save = time.time()
    torch.save({"experts": experts.state_dict(), "optimizer": optimizer.state_dict(), "state": state}, path)
    experts.eval()
    return experts


def load_experts(path: str, cfg: Config) -> Experts:
    experts = Experts(cfg)
    experts.load_state_dict(torch.load(path)["experts"])
    return experts.eval()


# ---------------------------------------------------------------- standalone evaluation


@torch.no_grad()
def evaluate_experts(experts: Experts, scenes: int = 300, seed: int = EVAL_SEED) -> dict:
    """The experts' own figures on held-out scenes, asked with canonical phrases (no LLM): detection AP50
    over every category phrase (absent ones included), mask IoU of matched instances, grounding
    accuracy, pose PCK, and the vision encoder's per-patch probe accuracy."""
    from .evaluate import average_precision, box_iou

    experts.eval()
    rng = np.random.default_rng(seed)
    per_cat: dict[str, list] = {}
    gts: dict[str, int] = {}
    ious, grounded, grounding_total, hits, kp_total, probe_ok, probe_n = [], 0, 0, 0, 0, 0, 0
    names = experts.phrases(["person"] + KEYPOINT_PHRASES)
    for _ in range(scenes):
        scene = W.sample_scene(rng)
        image, masks = W.render(scene)
        pixels = normalize_image(from_numpy(image)[None])
        _, levels = experts.vision(pixels)
        kinds, colors = patch_labels(scene, masks)
        fg = kinds > 0
        pk = experts.kind_probe(levels[0, -1]).argmax(-1).cpu().numpy()
        pc = experts.color_probe(levels[0, -1]).argmax(-1).cpu().numpy()
        probe_ok += int(((pk == kinds) & (pc == colors))[fg].sum())
        probe_n += int(fg.sum())
        cats = sorted({T.random_category(rng, scene, 0.6) for _ in range(3)})
        exprs = T.referring_expressions(scene)
        phrases = cats + ([exprs[int(rng.integers(len(exprs)))][0]] if exprs else [])
        logits, boxes, pm = experts.perception(
            pixels.expand(len(phrases), -1, -1, -1), levels.expand(len(phrases), -1, -1, -1), experts.phrases(phrases)
        )
        scores = logits.sigmoid()
        for j, cat in enumerate(cats):
            gt = T.category_members(scene, cat)
            gts[cat] = gts.get(cat, 0) + len(gt)
            used: set[int] = set()
            for q in torch.nonzero(scores[j] >= 0.3).flatten().tolist():
                box = pixel_box(boxes[j, q])
                best, best_iou = None, 0.5
                for g in gt:
                    iou = box_iou(box, scene.objects[g].box)
                    if g not in used and iou >= best_iou:
                        best, best_iou = g, iou
                per_cat.setdefault(cat, []).append((float(scores[j, q]), best is not None))
                if best is not None:
                    used.add(best)
                    mask = (
                        F.interpolate(pm[j : j + 1, q : q + 1], size=W.SIZE, mode="bilinear", align_corners=False)[0, 0]
                        .cpu()
                        .numpy()
                        > 0
                    )
                    ious.append((mask & masks[best]).sum() / max(1, (mask | masks[best]).sum()))
        if exprs:
            grounding_total += 1
            e, target = next((e, i) for e, i in exprs if e == phrases[-1])
            grounded += box_iou(pixel_box(boxes[-1, int(scores[-1].argmax())]), scene.objects[target].box) >= 0.5
        if scene.people():
            pl, pb, pkp, _ = experts.pose(pixels, levels, names[:1], names[1:][None])
            ps = pl[0].sigmoid()
            chosen = torch.nonzero(ps >= 0.3).flatten().tolist()
            for person in scene.people():
                height = person.box[3] - person.box[1]
                best = max(chosen, key=lambda q: box_iou(pixel_box(pb[0, q]), person.box), default=None)
                for k, (gx, gy) in enumerate(person.keypoints):
                    kp_total += 1
                    if best is not None and box_iou(pixel_box(pb[0, best]), person.box) > 0.3:
                        px, py = (pkp[0, best, k] * W.SIZE).tolist()
                        hits += math.hypot(px - gx, py - gy) <= 0.1 * height
    aps = [average_precision(per_cat.get(c, []), gts[c]) for c in gts if gts[c] > 0]
    return {
        "scenes": scenes,
        "detection_ap50": float(np.mean(aps)) if aps else 0.0,
        "segmentation_mask_iou": float(np.mean(ious)) if ious else 0.0,
        "grounding_accuracy": grounded / max(1, grounding_total),
        "pose_pck": hits / max(1, kp_total),
        "vision_probe_accuracy": probe_ok / max(1, probe_n),
    }


def pixel_box(cxcywh: torch.Tensor) -> list[float]:
    cx, cy, w, h = (cxcywh * W.SIZE).tolist()
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=["full", "smoke"], default="full")
    parser.add_argument("--minutes", type=float, default=25.0)
    parser.add_argument("--out", default="model/.runs/experts")
    parser.add_argument("--eval-scenes", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--publish",
        default=None,
        metavar="DIR",
        help="also write the weights alone and the figures there (model/experts: what the recipe starts from)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    smoke = args.config == "smoke"
    cfg = SMOKE if smoke else Config()
    started = time.time()
    experts = train_experts(
        args.out, cfg, args.minutes, batch_size=4 if smoke else 24, max_steps=3 if smoke else 100_000
    )
    trained = time.time() - started
    figures = evaluate_experts(experts, 5 if smoke else args.eval_scenes)
    state = torch.load(os.path.join(args.out, "experts.pt"))["state"]
    figures.update({"steps": state["step"], "minutes": state["elapsed"] / 60, "this_run_minutes": trained / 60})
    for folder in [args.out] + ([args.publish] if args.publish else []):
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "experts.json"), "w") as f:
            json.dump(figures, f, indent=1)
    if args.publish:
        torch.save(
            {"experts": experts.state_dict(), "state": {k: v for k, v in state.items() if k != "history"}},
            os.path.join(args.publish, "experts.pt"),
        )
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
