"""Reference inference in PyTorch, wired exactly like the TypeScript runtime (gpu-runner/src/model):
prefill, greedy decode with a KV cache, and the super link during generation: a routing token makes
its query embeddings enter the sequence as one chunk; their final hidden states are kept for the
decoders and the logits at the last query choose the next text token. Used for golden references
and evaluation."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from . import batching as B
from . import contract as C
from . import tasks as T
from .model import VisionLLMv2Nano, normalize_image
from .tokenizer import SPECIAL_TOKENS, Tokenizer

SCORE_THRESHOLD = C.POSTPROCESS["score_threshold"]
MASK_THRESHOLD = C.POSTPROCESS["mask_threshold"]


class Mulberry32:
    """The runtime's seeded noise: mulberry32 uniforms, Box-Muller normals (same stream in TS)."""

    def __init__(self, seed: int):
        self.a = seed & 0xFFFFFFFF

    def uniform(self) -> float:
        self.a = (self.a + 0x6D2B79F5) & 0xFFFFFFFF
        t = self.a
        t = ((t ^ (t >> 15)) * (t | 1)) & 0xFFFFFFFF
        t = (t ^ ((t + (((t ^ (t >> 7)) * (t | 61)) & 0xFFFFFFFF)) & 0xFFFFFFFF)) & 0xFFFFFFFF
        return ((t ^ (t >> 14)) & 0xFFFFFFFF) / 4294967296.0

    def normals(self, n: int) -> np.ndarray:
        out = np.empty(n, dtype=np.float32)
        for i in range(n):
            u1, u2 = self.uniform(), self.uniform()
            out[i] = math.sqrt(-2.0 * math.log(1.0 - u1)) * math.cos(2.0 * math.pi * u2)
        return out


@dataclass
class Group:
    routing: str
    label: str
    states: torch.Tensor  # [N,D]


@dataclass
class Result:
    token_ids: list[int]
    text: str
    groups: list[Group]
    first_logits: torch.Tensor
    detections: list[dict] = field(default_factory=list)
    poses: list[dict] = field(default_factory=list)
    images: list[np.ndarray] = field(default_factory=list)


def label_before(text: str) -> str:
    """The phrase a routing token follows: its category name ("red circle" in "..., red circle[DET]")."""
    return C.routing_label(text)


class Runner:
    def __init__(self, model: VisionLLMv2Nano, tok: Tokenizer):
        self.model = model.eval()
        self.tok = tok
        self.cfg = model.c
        self.routing_ids = {tok.token_id(r): r for r in B.ROUTING_KINDS}
        self.eos = tok.token_id("</s>")
        # Tokens the runtime never lets the LLM choose: queries are spliced in, never predicted.
        self.banned = [tok.token_id(t) for t in SPECIAL_TOKENS if t.startswith("[EMB")] + [
            tok.token_id(t) for t in ("<image>", "<im_start>", "<im_patch>", "<im_end>", "<region>", "<pad>")
        ]

    @torch.no_grad()
    def encode_image(self, image: np.ndarray):
        pixels = normalize_image(torch.from_numpy(image)[None])
        features, levels = self.model.vision(pixels)
        return pixels, levels, self.model.projector(features)[0]

    @torch.no_grad()
    def generate(
        self,
        turns: list[tuple[str, str]],
        image: np.ndarray | None = None,
        regions: list[np.ndarray] | None = None,
        max_new_tokens: int = 200,
        seed: int = 0,
        run_decoders: bool = True,
    ) -> Result:
        m, tok, cfg = self.model, self.tok, self.cfg
        ids, _ = B.encode_turns(tok, cfg, turns, with_last_answer=False)
        embeds = m.llm.embed_tokens(torch.tensor(ids))
        pixels = levels = None
        if image is not None:
            pixels, levels, image_embeds = self.encode_image(image)
            patch = torch.tensor(ids) == tok.token_id("<im_patch>")
            embeds[patch] = image_embeds
            region_pos = (torch.tensor(ids) == tok.token_id("<region>")).nonzero().flatten().tolist()
            for k, pos in enumerate(region_pos):
                mask = torch.from_numpy((regions or [])[k].astype(np.float32))[None, None]
                embeds[pos] = m.region(pixels, mask, levels)[0]
        past = None
        length = 0
        out_ids: list[int] = []
        groups: list[Group] = []

        def step(chunk: torch.Tensor):
            nonlocal past, length
            s = chunk.shape[0]
            mask = torch.ones(1, length + s, dtype=torch.long)
            pos = torch.arange(length, length + s)[None]
            logits, hidden, present = m.llm(chunk[None], mask, pos, past)
            past = present
            length += s
            return logits[0], hidden[0]

        logits, _ = step(embeds)
        first_logits = logits[-1].clone()
        next_logits = logits[-1]
        for _ in range(max_new_tokens):
            masked = next_logits.clone()
            masked[self.banned] = float("-inf")
            token = int(masked.argmax())
            out_ids.append(token)
            if token == self.eos:
                break
            chunk = m.llm.embed_tokens(torch.tensor([token]))
            routing = self.routing_ids.get(token)
            if routing is not None:
                table = B.query_table(m, B.TABLE_OF[routing])
                chunk = torch.cat([chunk, table])
            logits, hidden = step(chunk)
            if routing is not None:
                # Only complete characters count, as in the runtime's streaming text.
                text_so_far = tok.decode(out_ids[:-1]).rstrip("\ufffd")
                groups.append(Group(routing, label_before(text_so_far), hidden[1:]))
            next_logits = logits[-1]
        # The template puts a space between "ASSISTANT:" and the answer; it belongs to the template, not
        # to the answer (the runtime drops it too).
        result = Result(out_ids, tok.decode(out_ids).lstrip(), groups, first_logits)
        if run_decoders:
            self.run_decoders(result, pixels, levels, image, seed)
        return result

    @torch.no_grad()
    def run_decoders(self, result: Result, pixels, levels, image, seed: int) -> None:
        """Each routing group to its decoder by the task the contract's routing table gives its token,
        as the runtime's link registry does: perception (a person group takes the keypoint groups that
        follow it), and the image decoders. Each link returns the index of the next group to run."""
        links = {"detection": self._perception, "segmentation": self._perception, "grounding": self._perception}
        links.update({"generation": self._image, "editing": self._image})
        groups = result.groups
        i = 0
        while i < len(groups):
            link = links.get(C.ROUTING[groups[i].routing]["task"])
            i = link(result, groups, i, pixels, levels, image, seed) if link else i + 1

    def _perception(self, result: Result, groups: list[Group], i: int, pixels, levels, image, seed: int) -> int:
        m, g = self.model, groups[i]
        j = i + 1
        while j < len(groups) and C.ROUTING[groups[j].routing]["task"] == "pose":
            j += 1
        if pixels is None:
            return j
        emb = m.perception_link(g.states[None])
        # As the runtime: the pose decoder runs once a person group has one [POSE] group per keypoint
        # (later ones are ignored); with fewer, the person group is a detection.
        poses, k = groups[i + 1 : j], self.cfg.num_keypoints
        if len(poses) >= k:
            kp = m.pose_link(torch.stack([p.states for p in poses[:k]]))[None]
            logits, boxes, keypoints, scores = m.pose_decoder(pixels, levels, emb, kp)
            result.poses.extend(postprocess_pose(logits[0], boxes[0], keypoints[0], scores[0]))
            return j
        logits, boxes, masks = m.perception_decoder(pixels, levels, emb)
        top1 = C.ROUTING[g.routing]["task"] == "grounding"
        items = postprocess_detections(logits[0], boxes[0], masks[0], top1=top1)
        result.detections.append({"routing": g.routing, "label": g.label, "items": items})
        return j

    def _image(self, result: Result, groups: list[Group], i: int, pixels, levels, image, seed: int) -> int:
        m, g = self.model, groups[i]
        edit = C.ROUTING[g.routing]["task"] == "editing"
        if edit and image is None:
            return i + 1
        link = m.editing_link if edit else m.generation_link
        cond = link(g.states[None])
        source = B.downsample_image(image, self.cfg.gen_res)[None] if edit else None
        result.images.append(
            sample_image(m.editor if edit else m.generator, cond, self.cfg.gen_res, seed, source, image)
        )
        return i + 1


def postprocess_detections(logits, boxes, masks, top1: bool, size: int = 128) -> list[dict]:
    scores = logits.sigmoid()
    order = scores.argsort(descending=True).tolist()
    keep = order[:1] if top1 else [q for q in order if scores[q] >= SCORE_THRESHOLD]
    out = []
    for q in keep:
        cx, cy, w, h = (boxes[q] * size).tolist()
        mask = (
            F.interpolate(masks[q][None, None], size=(size, size), mode="bilinear", align_corners=False)[0, 0]
            > MASK_THRESHOLD
        )
        out.append({"score": float(scores[q]), "box": clip_box(cx, cy, w, h, size), "mask": mask.numpy()})
    return out


def postprocess_pose(logits, boxes, keypoints, kp_scores, size: int = 128) -> list[dict]:
    scores = logits.sigmoid()
    out = []
    for q in scores.argsort(descending=True).tolist():
        if scores[q] < SCORE_THRESHOLD:
            break
        cx, cy, w, h = (boxes[q] * size).tolist()
        out.append(
            {
                "score": float(scores[q]),
                "box": clip_box(cx, cy, w, h, size),
                "keypoints": (keypoints[q] * size).clamp(0, size).tolist(),
                "keypoint_scores": kp_scores[q].tolist(),
            }
        )
    return out


def clip_box(cx: float, cy: float, w: float, h: float, size: int) -> list[float]:
    """cxcywh in pixels -> [x0, y0, x1, y1] inside the image, as the runtime reports it."""
    return [min(max(v, 0.0), float(size)) for v in (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)]


def initial_noise(seed: int, res: int) -> torch.Tensor:
    return torch.from_numpy(Mulberry32(seed).normals(3 * res * res)).reshape(1, 3, res, res)


def sample_image(
    denoiser, cond, res: int, seed: int, source=None, full_source: np.ndarray | None = None, steps: int = 20
) -> np.ndarray:
    """Euler integration of the flow from noise (t=0) to data (t=1), then to 128 x 128 uint8."""
    x = initial_noise(seed, res)
    for k in range(steps):
        t = torch.full((1,), k / steps)
        v = denoiser(x, t, cond) if source is None else denoiser(x, t, cond, source)
        x = x + v / steps
    return finish_image(x[0], source[0] if source is not None else None, full_source)


def finish_image(
    x: torch.Tensor, source_low: torch.Tensor | None, full_source: np.ndarray | None, size: int = 128
) -> np.ndarray:
    """[3,r,r] in [-1,1] -> uint8 [size,size,3]. Edits are applied as an upsampled low-resolution
    delta on the full-resolution source, so pixels the edit did not touch stay exactly as they were."""
    if source_low is not None and full_source is not None:
        delta = (x - source_low).clamp(-2, 2)
        delta = torch.where(
            delta.abs().amax(0, keepdim=True) > C.POSTPROCESS["edit_delta_threshold"], delta, torch.zeros_like(delta)
        )
        up = F.interpolate(delta[None], size=(size, size), mode="nearest")[0]
        out = torch.from_numpy(full_source).permute(2, 0, 1).float() + up * 127.5
        return out.clamp(0, 255).round().byte().permute(1, 2, 0).numpy()
    up = F.interpolate(x[None], size=(size, size), mode="bilinear", align_corners=False)[0]
    return ((up.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()


def conversation(question: str, has_image: bool) -> list[tuple[str, str]]:
    return [(("<image>\n" if has_image else "") + question, "")]


__all__ = ["Runner", "Result", "Mulberry32", "conversation", "T"]
