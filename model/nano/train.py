"""Three-stage training (paper's recipe, shrunk), one task family per batch, losses summed unweighted.

Stage 0 (pretrain.py) trains the vision encoder and the perception and pose experts standalone; they
arrive here pretrained and the vision encoder stays frozen. With `language_minutes`, stage "0-language"
pretrains the LLM alone on the language corpus first (Vicuna's place: it arrives knowing what words
mean before it learns to route), and the corpus stays in the mix of the stages that tune the LLM.
Stage 1 "chat": projector, region encoder, LLM and super-link projections on questions, regions, chat,
and the link's alignment to the experts' phrase encoder on perception requests (no decoder runs).
Stage 2 "multi-capacity": every decoder's losses join; experts tuned lightly (low LR).
Stage 3 "decoders": everything frozen except decoders, super-link projections and query tables.
Stage 4 "instructions" (a departure): the LLM tuned again on every family beside the language corpus
(language.py), the stand-in for the text pretraining the paper's LLM arrives with, and on detection
requests that ask for absent categories more often.
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
from . import pretrain as P
from . import tasks as T
from .experts import PhraseEncoder
from .model import Config, VisionLLMv2Nano, default_device
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


DECODER_FAMILIES = {
    "detection": 0.2,
    "segmentation": 0.14,
    "grounding": 0.22,
    "pose": 0.16,
    "generation": 0.14,
    "editing": 0.14,
}
PERCEPTION_FAMILIES = {"detection": 0.08, "segmentation": 0.05, "grounding": 0.1, "pose": 0.07}


# Stage 4: questions weigh most (the weakest family), the language corpus a seventh.
INSTRUCTION_FAMILIES = {
    "questions": 0.19,
    "region": 0.05,
    "chat": 0.02,
    "multi_turn": 0.05,
    "language": 0.14,
    "detection": 0.15,
    "segmentation": 0.13,
    "grounding": 0.15,
    "pose": 0.05,
    "generation": 0.04,
    "editing": 0.04,
}


# Stage 0-language: text only, so a step is cheap and the batch can be larger.
LANGUAGE_STAGE = {"batch_size": 32, "lr": 1e-3}


def full_recipe(minutes: float = 90, instruction_minutes: float = 0, language_minutes: float = 0) -> Recipe:
    # The experts arrive pretrained (stage 0), so stage 1 teaches the LLM to chat and to say what the
    # experts' phrase encoder said (the link alignment needs no decoder run, so it is cheap); stage 2
    # adds the decoders' own losses end to end; stage 3 tunes links, queries and decoders alone.
    # A pretrained LLM keeps reading the corpus while it learns to route, so that what it knows of
    # words is not tuned away by instructions that use only some of them. Stage 1 tunes the LLM at
    # the same high rate as the corpus stage (the stand-in's second phase: a fifth of its batches
    # corpus); measured, a tenth let the corpus loss climb from 0.70 to 1.11 in 170 steps.
    language = {"language": 0.1} if language_minutes > 0 else {}
    chat_language = {"language": 0.2} if language_minutes > 0 else {}
    pretraining = (
        [
            Stage(
                "0-language",
                {"language": 1.0},
                100_000,
                language_minutes,
                {"llm": LANGUAGE_STAGE["lr"]},
                batch_size=LANGUAGE_STAGE["batch_size"],
            )
        ]
        if language_minutes > 0
        else []
    )
    return Recipe(
        [
            *pretraining,
            Stage(
                "1-chat",
                {
                    "questions": 0.35,
                    "region": 0.2,
                    "chat": 0.05,
                    "multi_turn": 0.1,
                    **PERCEPTION_FAMILIES,
                    **chat_language,
                },
                20000,
                minutes * 0.4,
                {"encoders": 1e-3, "llm": 1e-3, "queries": 1e-3, "links": 1e-3},
            ),
            Stage(
                "2-multi-capacity",
                {
                    "questions": 0.2,
                    "region": 0.12,
                    "chat": 0.02,
                    "multi_turn": 0.05,
                    **{k: v * 0.6 for k, v in DECODER_FAMILIES.items()},
                    **language,
                },
                20000,
                minutes * 0.5,
                {"encoders": 3e-4, "llm": 3e-4, "queries": 1e-3, "links": 1e-3, "experts": 1e-4, "decoders": 1e-3},
            ),
            Stage(
                "3-decoders",
                DECODER_FAMILIES,
                10000,
                minutes * 0.1,
                {"queries": 5e-4, "links": 5e-4, "experts": 5e-5, "decoders": 5e-4},
            ),
            *(
                [
                    Stage(
                        "4-instructions",
                        INSTRUCTION_FAMILIES,
                        20000,
                        instruction_minutes,
                        {
                            "encoders": 1e-4,
                            "llm": 2e-4,
                            "queries": 5e-4,
                            "links": 5e-4,
                            "experts": 5e-5,
                            "decoders": 3e-4,
                        },
                    )
                ]
                if instruction_minutes > 0
                else []
            ),
        ]
    )


def smoke_recipe() -> Recipe:
    fams = {k: 1.0 for k in T.FAMILIES}
    return Recipe(
        [
            Stage("0-language", {"language": 1.0}, 2, 5, {"llm": LANGUAGE_STAGE["lr"]}, batch_size=2),
            Stage(
                "1-chat",
                {"questions": 1.0, "chat": 1.0, "detection": 1.0, "pose": 1.0},
                2,
                5,
                {"encoders": 1e-3, "llm": 1e-3, "links": 1e-3},
                batch_size=2,
            ),
            Stage(
                "2-multi-capacity",
                fams,
                10,
                5,
                {"encoders": 1e-4, "llm": 1e-4, "queries": 1e-3, "links": 1e-3, "experts": 1e-4, "decoders": 1e-3},
                batch_size=2,
            ),
            Stage(
                "3-decoders", DECODER_FAMILIES, 3, 5, {"queries": 1e-3, "links": 1e-3, "decoders": 1e-3}, batch_size=2
            ),
            Stage(
                "4-instructions",
                INSTRUCTION_FAMILIES,
                3,
                5,
                {"llm": 1e-4, "queries": 1e-3, "links": 1e-3, "decoders": 1e-3},
                batch_size=2,
            ),
        ],
        checkpoint_every=5,
    )


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


ALIGN_WEIGHT = 2.0


def link_alignment(emb: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Distance of link embeddings to the removed phrase encoder's, relative to the teacher's scale: the
    link takes the text encoder's place, so it learns to say what the encoder said (a departure from
    the paper, which has only the decoder losses; it is what lets the experts work from the first step)."""
    return ALIGN_WEIGHT * F.mse_loss(emb, teacher) / teacher.pow(2).mean().clamp(min=1e-6)


@dataclass
class Routed:
    """The batch's routing groups by the decoder they call: (group index, sample, call) each."""

    perception: list = field(default_factory=list)
    pose_person: list = field(default_factory=list)
    pose_kp: list = field(default_factory=list)
    gen: list = field(default_factory=list)
    edit: list = field(default_factory=list)


def route(batch: B.Batch) -> Routed:
    routed = Routed()
    call_index: dict[int, int] = {}
    for gi, (b, _, _) in enumerate(batch.groups):
        k = call_index.get(b, 0)
        call_index[b] = k + 1
        call = batch.samples[b].calls[k]
        kind = "perception" if call.kind in ("det", "seg", "grd") else call.kind
        getattr(routed, kind).append((gi, b, call))
    return routed


def link_embeddings(model: VisionLLMv2Nano, fwd: B.Forward, routed: Routed):
    """Perception class embeddings [G,link], pose person [P,link] and keypoints [P,K,link]."""
    cfg = model.c
    perception = (
        model.perception_link(torch.stack([fwd.query_states[gi] for gi, _, _ in routed.perception]))
        if routed.perception
        else None
    )
    person = kps = None
    if routed.pose_person:
        person = model.perception_link(torch.stack([fwd.query_states[gi] for gi, _, _ in routed.pose_person]))
        kp_states: dict[int, list] = {}
        for gi, b, _ in routed.pose_kp:
            kp_states.setdefault(b, []).append(fwd.query_states[gi])
        stacked = torch.stack([torch.stack(kp_states[b]) for _, b, _ in routed.pose_person]).flatten(0, 1)
        kps = model.pose_link(stacked).reshape(len(routed.pose_person), -1, cfg.link_dim)
    return perception, person, kps


def alignment_losses(teacher: PhraseEncoder, routed: Routed, perception, person, kps) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        if perception is not None:
            target = teacher([c.phrase for _, _, c in routed.perception])
        if person is not None:
            names = teacher(["person"] + P.KEYPOINT_PHRASES)
    if perception is not None:
        out["align"] = link_alignment(perception, target)
    if person is not None and kps is not None:
        pose = link_alignment(person, names[:1].expand_as(person)) + link_alignment(kps, names[1:][None].expand_as(kps))
        out["align"] = out["align"] + pose if "align" in out else pose
    return out


def super_link_losses(
    model: VisionLLMv2Nano, batch: B.Batch, fwd: B.Forward, teacher: PhraseEncoder | None, decoders: bool
) -> dict[str, torch.Tensor]:
    """The link's alignment to the phrase encoder it replaces (when a teacher is given) and, with
    `decoders`, every decoder that the batch's routing groups call, on their targets."""
    routed = route(batch)
    perception, person, kps = link_embeddings(model, fwd, routed)
    out = alignment_losses(teacher, routed, perception, person, kps) if teacher is not None else {}
    if decoders:
        out.update(decoder_losses(model, batch, fwd, routed, perception, person, kps))
    return out


def decoder_losses(
    model: VisionLLMv2Nano, batch: B.Batch, fwd: B.Forward, routed: Routed, perception, person, kps
) -> dict[str, torch.Tensor]:
    cfg = model.c
    out: dict[str, torch.Tensor] = {}
    images, levels = batch.images, fwd.levels
    if images is None or levels is None:
        images = levels = None
    elif perception is not None or person is not None:
        base = model.perception_decoder.backbone(images, levels)
    if perception is not None and images is not None:
        feats = model.perception_decoder.features(images, levels, base)
        rows = torch.tensor([batch.image_of_sample[b] for _, b, _ in routed.perception])
        targets = [
            P.perception_target(batch.samples[b].scene, batch.samples[b].masks, call.targets)
            for _, b, call in routed.perception
        ]
        out["perception"] = P.perception_loss(model.perception_decoder, feats, rows, perception, targets)
        used = sorted(set(rows.tolist()))
        samples = {batch.image_of_sample[b]: batch.samples[b] for _, b, _ in routed.perception}
        foreground = np.stack([P.foreground_target(samples[r].masks) for r in used])
        out["perception"] = out["perception"] + P.foreground_loss(
            model.perception_decoder, (feats[0][used], feats[1][used]), foreground
        )
    if person is not None and kps is not None and images is not None:
        rows = torch.tensor([batch.image_of_sample[b] for _, b, _ in routed.pose_person])
        targets = [P.pose_target(batch.samples[b].scene) for _, b, _ in routed.pose_person]
        out["pose"] = P.pose_loss(model.pose_decoder, base, rows, person, kps, targets)
    for name, entries, link, denoiser in (
        ("generation", routed.gen, model.generation_link, model.generator),
        ("editing", routed.edit, model.editing_link, model.editor),
    ):
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
        # dict.fromkeys: the experts share one backbone, whose parameters must enter the optimizer once.
        params = list(
            dict.fromkeys(p for m in members for p in ([m] if isinstance(m, torch.nn.Parameter) else m.parameters()))
        )
        train = name in stage.lr
        for p in params:
            p.requires_grad_(train)
        if train:
            groups.append({"params": params, "lr": stage.lr[name], "base_lr": stage.lr[name]})
    return torch.optim.AdamW(groups, weight_decay=0.01)


def start_from_experts(model: VisionLLMv2Nano, experts_path: str, log=print) -> PhraseEncoder:
    """Loads the stage-0 experts (vision encoder, perception and pose experts) into a fresh model, as
    the paper starts from released CLIP, Grounding DINO and UniPose weights; returns the phrase encoder
    the super link replaces, frozen, as the link's teacher."""
    experts = P.load_experts(experts_path, model.c)
    model.vision.vit.load_state_dict(experts.vision.state_dict())
    model.perception_decoder.load_state_dict(experts.perception.state_dict())
    model.pose_decoder.load_state_dict(experts.pose.state_dict())
    log(f"experts loaded from {experts_path}")
    teacher = experts.phrases.to(default_device()).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def train(out_dir: str, cfg: Config, recipe: Recipe, tok: Tokenizer, experts_path: str, log=print) -> VisionLLMv2Nano:
    torch.manual_seed(recipe.seed)
    os.makedirs(out_dir, exist_ok=True)
    ckpt_path = os.path.join(out_dir, "checkpoint.pt")
    model = VisionLLMv2Nano(cfg)
    state = {"stage": 0, "step": 0, "history": [], "elapsed": 0.0}
    teacher = start_from_experts(model, experts_path, log)
    if os.path.exists(ckpt_path):
        saved = torch.load(ckpt_path, map_location="cpu")
        model.load_state_dict(saved["model"])
        state = saved["state"]
        log(f"resuming from stage {state['stage'] + 1} step {state['step']}")
    for si in range(state["stage"], len(recipe.stages)):
        stage = recipe.stages[si]
        optimizer = make_optimizer(model, stage)
        if os.path.exists(ckpt_path) and state["stage"] == si and state["step"] > 0:
            saved = torch.load(ckpt_path, map_location="cpu")
            if saved.get("optimizer"):
                optimizer.load_state_dict(saved["optimizer"])
        stream = torch.utils.data.DataLoader(
            SampleStream(stage.families, stage.batch_size, recipe.seed * 1000 + si * 100 + state["step"]),
            batch_size=None,
            num_workers=1,
            prefetch_factor=4,
            persistent_workers=False,
            worker_init_fn=P.quiet_worker,
        )
        started = time.time() - state["elapsed"]
        bar = tqdm(
            total=stage.steps,
            initial=state["step"],
            desc=f"stage {stage.name}",
            mininterval=5,
            dynamic_ncols=False,
            ncols=110,
        )
        model.train()
        for family, samples in stream:
            step = state["step"]
            minutes = (time.time() - started) / 60
            if step >= stage.steps or minutes >= stage.minutes:
                break
            warm = min(1.0, (step + 1) / 50)
            horizon = min(
                stage.steps,
                max(step + 1, int(step / max(minutes, 1e-3) * stage.minutes)) if minutes > 0.5 else stage.steps,
            )
            decay = 0.5 * (1 + math.cos(math.pi * min(1.0, step / max(1, horizon))))
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * warm * (0.05 + 0.95 * decay)
            batch = B.collate(tok, cfg, samples)
            fwd = B.forward(model, tok, batch)
            parts = {"lm": fwd.lm_loss} if "llm" in stage.lr else {}
            if "links" in stage.lr or "decoders" in stage.lr:
                parts.update(
                    super_link_losses(
                        model,
                        batch,
                        fwd,
                        teacher if "links" in stage.lr else None,
                        decoders="experts" in stage.lr or "decoders" in stage.lr,
                    )
                )
            if not parts:
                continue
            loss = sum(parts.values())  # the paper sums task losses without weights
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            state["step"] = step + 1
            state["elapsed"] = time.time() - started
            state["history"].append(
                {
                    "stage": stage.name,
                    "step": step,
                    "family": family,
                    "time": time.time(),
                    **{k: float(v) for k, v in parts.items()},
                }
            )
            bar.update(1)
            bar.set_postfix_str(f"{family[:10]} " + " ".join(f"{k}={float(v):.3f}" for k, v in parts.items()))
            if state["step"] % recipe.checkpoint_every == 0:
                torch.save(
                    {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "state": state}, ckpt_path
                )
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
