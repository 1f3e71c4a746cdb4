"""Three-stage training (paper's recipe, shrunk), one task family per batch, losses summed unweighted.

Stage 1 "chat": encoders, projector, region encoder and LLM on questions, regions, chat.
Stage 2 "multi-capacity": decoders and super-link queries join; the LLM is tuned lightly (low LR).
Stage 3 "decoders": everything frozen except decoders, super-link projections and query tables.
Checkpoints every `checkpoint_every` steps; rerunning resumes from the last one.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import batching as B
from . import losses as L
from . import tasks as T
from .model import Config, VisionLLMv2Nano
from .tokenizer import Tokenizer


@dataclass
class Stage:
    name: str
    families: dict[str, float]
    steps: int
    minutes: float
    lr: dict[str, float]  # per parameter group of VisionLLMv2Nano.groups(); missing = frozen
    batch_size: int = 12


@dataclass
class Recipe:
    stages: list[Stage]
    checkpoint_every: int = 100
    seed: int = 0
    extra: dict = field(default_factory=dict)


DECODER_FAMILIES = {"detection": 0.22, "segmentation": 0.16, "grounding": 0.2, "pose": 0.16, "generation": 0.13, "editing": 0.13}


def full_recipe(minutes: float = 90) -> Recipe:
    # Stage 2 carries most of the budget, with the encoders and LLM at a learning rate high enough to
    # move: the decoders' gradients are what teach the image encoder where objects are, and questions
    # (counting, colours) need that as much as detection does.
    return Recipe([
        Stage("1-chat", {"questions": 0.5, "region": 0.25, "chat": 0.1, "multi_turn": 0.15}, 6000, minutes * 0.25,
              {"encoders": 1e-3, "llm": 1e-3, "queries": 1e-3}),
        Stage("2-multi-capacity", {"questions": 0.15, "region": 0.08, "chat": 0.02, "multi_turn": 0.05, **{k: v * 0.7 for k, v in DECODER_FAMILIES.items()}},
              12000, minutes * 0.55, {"encoders": 5e-4, "llm": 5e-4, "queries": 1e-3, "decoders": 1e-3}),
        Stage("3-decoders", DECODER_FAMILIES, 6000, minutes * 0.2, {"queries": 5e-4, "decoders": 5e-4}),
    ])


def smoke_recipe() -> Recipe:
    fams = {k: 1.0 for k in T.FAMILIES}
    return Recipe([
        Stage("1-chat", {"questions": 1.0, "chat": 1.0}, 2, 5, {"encoders": 1e-3, "llm": 1e-3}, batch_size=2),
        Stage("2-multi-capacity", fams, 10, 5, {"encoders": 1e-4, "llm": 1e-4, "queries": 1e-3, "decoders": 1e-3}, batch_size=2),
        Stage("3-decoders", DECODER_FAMILIES, 3, 5, {"queries": 1e-3, "decoders": 1e-3}, batch_size=2),
    ], checkpoint_every=5)


class SampleStream(torch.utils.data.IterableDataset):
    """Endless batches of one family each, generated in a worker process while the model trains."""

    def __init__(self, families: dict[str, float], batch_size: int, seed: int):
        self.families = families
        self.batch_size = batch_size
        self.seed = seed

    def __iter__(self):
        rng = np.random.default_rng(self.seed)
        names = list(self.families)
        weights = np.array([self.families[n] for n in names], dtype=np.float64)
        weights /= weights.sum()
        while True:
            family = names[int(rng.choice(len(names), p=weights))]
            yield family, [T.FAMILIES[family](rng) for _ in range(self.batch_size)]


def decoder_losses(model: VisionLLMv2Nano, batch: B.Batch, fwd: B.Forward) -> dict[str, torch.Tensor]:
    """Runs every decoder that the batch's routing groups call, with their targets."""
    cfg = model.c
    out: dict[str, torch.Tensor] = {}
    perception, pose_person, pose_kp, gen, edit = [], [], [], [], []
    call_index: dict[int, int] = {}
    for gi, (b, _, _) in enumerate(batch.groups):
        k = call_index.get(b, 0)
        call_index[b] = k + 1
        call = batch.samples[b].calls[k]
        entry = (gi, b, call)
        {"det": perception, "seg": perception, "grd": perception, "pose_person": pose_person, "pose_kp": pose_kp,
         "gen": gen, "edit": edit}[call.kind].append(entry)
    if perception and fwd.levels is not None and batch.images is not None:
        emb = model.perception_link(torch.stack([fwd.query_states[gi] for gi, _, _ in perception]))
        rows = torch.tensor([batch.image_of_sample[b] for _, b, _ in perception])
        logits, boxes, masks, _ = model.perception_decoder.forward_all(batch.images[rows], fwd.levels[rows], emb)
        tboxes, tmasks = [], []
        for _, b, call in perception:
            s = batch.samples[b]
            assert s.scene is not None
            tboxes.append(torch.tensor([B.box_cxcywh(s.scene.objects[i].box) for i in call.targets], dtype=torch.float32).reshape(-1, 4))
            m = torch.from_numpy(np.stack([s.masks[i] for i in call.targets]).astype(np.float32)) if call.targets else torch.zeros(0, 128, 128)
            tmasks.append(F.adaptive_avg_pool2d(m[None], masks.shape[-1])[0] if len(m) else m[:, :32, :32])
        out["perception"], _ = L.set_loss(logits, boxes, tboxes, masks, tmasks, model.perception_decoder.core.anchor_centres())
    if pose_person and fwd.levels is not None and batch.images is not None:
        person = model.perception_link(torch.stack([fwd.query_states[gi] for gi, _, _ in pose_person]))
        kp_states = {}
        for gi, b, _ in pose_kp:
            kp_states.setdefault(b, []).append(fwd.query_states[gi])
        kps = model.pose_link(torch.stack([torch.stack(kp_states[b]) for _, b, _ in pose_person]).flatten(0, 1)).reshape(len(pose_person), -1, cfg.link_dim)
        rows = torch.tensor([batch.image_of_sample[b] for _, b, _ in pose_person])
        logits, boxes, q, pix = model.pose_decoder.forward_all(batch.images[rows], fwd.levels[rows], person, kps)
        tboxes, tkps = [], []
        for _, b, call in pose_person:
            s = batch.samples[b]
            assert s.scene is not None
            tboxes.append(torch.tensor([B.box_cxcywh(s.scene.objects[i].box) for i in call.targets], dtype=torch.float32).reshape(-1, 4))
            tkps.append(torch.tensor([s.scene.objects[i].keypoints for i in call.targets], dtype=torch.float32).reshape(-1, cfg.num_keypoints, 2) / 128)
        loss, matches = L.set_loss(logits, boxes, tboxes, anchors=model.pose_decoder.core.anchor_centres())
        h, w = pix.shape[-2:]
        for g, (rws, cols) in enumerate(matches):
            if len(rws):
                heat = model.pose_decoder.keypoint_heatmaps(q[g : g + 1, rws], kps[g : g + 1], pix[g : g + 1])[0]
                xy, _ = model.pose_decoder.soft_argmax(heat, h, w)
                loss = loss + L.keypoint_loss(heat, xy, tkps[g][cols], h, w)
        out["pose"] = loss
    for name, entries, link, denoiser in (("generation", gen, model.generation_link, model.generator),
                                          ("editing", edit, model.editing_link, model.editor)):
        if not entries:
            continue
        cond = link(torch.stack([fwd.query_states[gi] for gi, _, _ in entries]))
        data = torch.stack([B.downsample_image(call.image, cfg.gen_res) for _, _, call in entries])
        if name == "editing":
            source = torch.stack([B.downsample_image(batch.samples[b].image, cfg.gen_res) for _, b, _ in entries])
            out[name] = L.flow_matching_loss(denoiser, data, cond, source)
        else:
            out[name] = L.flow_matching_loss(denoiser, data, cond)
    return out


def make_optimizer(model: VisionLLMv2Nano, stage: Stage) -> torch.optim.Optimizer:
    groups = []
    for name, members in model.groups().items():
        params = [p for m in members for p in ([m] if isinstance(m, torch.nn.Parameter) else m.parameters())]
        train = name in stage.lr
        for p in params:
            p.requires_grad_(train)
        if train:
            groups.append({"params": params, "lr": stage.lr[name], "base_lr": stage.lr[name]})
    return torch.optim.AdamW(groups, weight_decay=0.01)


def train(out_dir: str, cfg: Config, recipe: Recipe, tok: Tokenizer, log=print) -> VisionLLMv2Nano:
    torch.manual_seed(recipe.seed)
    os.makedirs(out_dir, exist_ok=True)
    ckpt_path = os.path.join(out_dir, "checkpoint.pt")
    model = VisionLLMv2Nano(cfg)
    state = {"stage": 0, "step": 0, "history": [], "elapsed": 0.0}
    if os.path.exists(ckpt_path):
        saved = torch.load(ckpt_path)
        model.load_state_dict(saved["model"])
        state = saved["state"]
        log(f"resuming from stage {state['stage'] + 1} step {state['step']}")
    for si in range(state["stage"], len(recipe.stages)):
        stage = recipe.stages[si]
        optimizer = make_optimizer(model, stage)
        if os.path.exists(ckpt_path) and state["stage"] == si and state["step"] > 0:
            saved = torch.load(ckpt_path)
            if saved.get("optimizer"):
                optimizer.load_state_dict(saved["optimizer"])
        stream = torch.utils.data.DataLoader(SampleStream(stage.families, stage.batch_size, recipe.seed * 1000 + si * 100 + state["step"]),
                                             batch_size=None, num_workers=1, prefetch_factor=4, persistent_workers=False)
        started = time.time() - state["elapsed"]
        bar = tqdm(total=stage.steps, initial=state["step"], desc=f"stage {stage.name}", mininterval=5, dynamic_ncols=False, ncols=110)
        model.train()
        for family, samples in stream:
            step = state["step"]
            minutes = (time.time() - started) / 60
            if step >= stage.steps or minutes >= stage.minutes:
                break
            warm = min(1.0, (step + 1) / 50)
            horizon = min(stage.steps, max(step + 1, int(step / max(minutes, 1e-3) * stage.minutes)) if minutes > 0.5 else stage.steps)
            decay = 0.5 * (1 + math.cos(math.pi * min(1.0, step / max(1, horizon))))
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * warm * (0.05 + 0.95 * decay)
            batch = B.collate(tok, cfg, samples)
            fwd = B.forward(model, tok, batch)
            parts = {"lm": fwd.lm_loss} if "llm" in stage.lr else {}
            if "decoders" in stage.lr:
                parts.update(decoder_losses(model, batch, fwd))
            if not parts:
                continue
            loss = sum(parts.values())  # the paper sums task losses without weights
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            state["step"] = step + 1
            state["elapsed"] = time.time() - started
            state["history"].append({"stage": stage.name, "step": step, "family": family, "time": time.time(),
                                     **{k: float(v) for k, v in parts.items()}})
            bar.update(1)
            bar.set_postfix_str(f"{family[:10]} " + " ".join(f"{k}={float(v):.3f}" for k, v in parts.items()))
            if state["step"] % recipe.checkpoint_every == 0:
                torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "state": state}, ckpt_path)
        bar.close()
        state = {"stage": si + 1, "step": 0, "history": state["history"], "elapsed": 0.0}
        torch.save({"model": model.state_dict(), "optimizer": None, "state": state}, ckpt_path)
        log(f"stage {stage.name} done")
    with open(os.path.join(out_dir, "history.json"), "w") as f:
        json.dump(state["history"], f)
    model.eval()
    return model


def plot_history(history: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted({k for h in history for k in h if k not in ("stage", "step", "family", "time")})
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2))
    for ax, key in zip(np.atleast_1d(axes), keys):
        xs = [i for i, h in enumerate(history) if key in h]
        ys = [history[i][key] for i in xs]
        if len(ys) > 20:
            k = max(1, len(ys) // 50)
            ys = np.convolve(ys, np.ones(k) / k, mode="valid").tolist()
            xs = xs[: len(ys)]
        ax.plot(xs, ys)
        ax.set_title(f"{key} loss")
        ax.set_xlabel("step (all stages)")
        ax.set_yscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
