"""Samples -> padded tensors, and the forward pass that splices image, region and super-link query
embeddings into the LLM sequence (the same wiring the TypeScript runtime performs)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from . import contract as C
from . import tasks as T
from . import world as W
from .model import Config, VisionLLMv2Nano, from_numpy, normalize_image
from .tokenizer import Tokenizer

ROUTING_KINDS = list(C.ROUTING)
# Which query table each routing token splices in: DET/SEG/GRD share the perception table.
TABLE_OF = {token: entry["table"].removesuffix("_queries") for token, entry in C.ROUTING.items()}


def expand_image(text: str, cfg: Config) -> str:
    return text.replace("<image>", "<im_start>" + "<im_patch>" * cfg.image_tokens + "<im_end>")


def encode_turns(tok: Tokenizer, cfg: Config, turns: list[tuple[str, str]], with_last_answer: bool = True):
    """Token ids and a per-token 'is assistant answer' flag, through the manifest's chat template."""
    ids = tok.encode(C.conversation_start())
    labeled = [False] * len(ids)
    for i, (user, assistant) in enumerate(turns):
        asked, answered = C.turn_pieces(user, assistant)
        prompt = tok.encode(expand_image(asked, cfg))
        ids += prompt
        labeled += [False] * len(prompt)
        if i < len(turns) - 1 or with_last_answer:
            answer = tok.encode(answered)
            ids += answer
            labeled += [True] * len(answer)
    return ids, labeled


def query_count(cfg: Config, routing: str) -> int:
    return cfg.gen_queries if routing in ("[GEN]", "[EDIT]") else cfg.perception_queries


@dataclass
class Batch:
    ids: torch.Tensor  # [B,T]
    attention_mask: torch.Tensor  # [B,T]
    targets: torch.Tensor  # [B,T] next-token targets, -100 = ignored
    images: torch.Tensor | None  # [Bi,3,H,W] normalized, one per sample that has an image
    image_of_sample: list[int]  # sample -> image row (-1 none)
    regions: torch.Tensor | None  # [R,1,H,W]
    region_image: list[int]  # region -> image row
    groups: list[tuple[int, int, str]]  # (sample, position of the routing token, routing token)
    samples: list[T.Sample]


def collate(tok: Tokenizer, cfg: Config, samples: list[T.Sample]) -> Batch:
    routing_ids = {tok.token_id(r): r for r in ROUTING_KINDS}
    seqs, flags = zip(*(encode_turns(tok, cfg, s.turns) for s in samples))
    length = max(len(s) for s in seqs)
    pad = tok.token_id("<pad>")
    ids = torch.full((len(samples), length), pad, dtype=torch.long)
    mask = torch.zeros((len(samples), length), dtype=torch.long)
    targets = torch.full((len(samples), length), -100, dtype=torch.long)
    groups: list[tuple[int, int, str]] = []
    for b, (seq, flag) in enumerate(zip(seqs, flags)):
        ids[b, : len(seq)] = torch.tensor(seq)
        mask[b, : len(seq)] = 1
        is_query = [False] * len(seq)
        for p, t in enumerate(seq):
            if t in routing_ids:
                groups.append((b, p, routing_ids[t]))
                for k in range(1, query_count(cfg, routing_ids[t]) + 1):
                    is_query[p + k] = True
        for p in range(len(seq) - 1):
            if flag[p + 1] and not is_query[p + 1]:
                targets[b, p] = seq[p + 1]
    image_rows, image_of_sample, regions, region_image = [], [], [], []
    for s in samples:
        if s.image is not None:
            image_of_sample.append(len(image_rows))
            image_rows.append(from_numpy(s.image))
            for r in s.regions:
                regions.append(from_numpy(r.astype(np.float32))[None])
                region_image.append(len(image_rows) - 1)
        else:
            image_of_sample.append(-1)
    images = normalize_image(torch.stack(image_rows)) if image_rows else None
    return Batch(
        ids,
        mask,
        targets,
        images,
        image_of_sample,
        torch.stack(regions) if regions else None,
        region_image,
        groups,
        samples,
    )


@dataclass
class Forward:
    lm_loss: torch.Tensor
    hidden: torch.Tensor
    levels: torch.Tensor | None
    query_states: list[torch.Tensor]  # per group [N,D], in batch.groups order


def query_table(model: VisionLLMv2Nano, name: str) -> torch.Tensor:
    return {
        "perception": model.perception_queries,
        "pose": model.pose_queries,
        "generation": model.generation_queries,
        "editing": model.editing_queries,
    }[name]


def build_embeds(model: VisionLLMv2Nano, tok: Tokenizer, batch: Batch):
    cfg = model.c
    embeds = model.llm.embed_tokens(batch.ids)
    levels = None
    if batch.images is not None:
        features, levels = model.vision(batch.images)
        image_embeds = model.projector(features)  # [Bi,64,D]
        patch = batch.ids == tok.token_id("<im_patch>")
        rows = [image_embeds[i] for i in batch.image_of_sample if i >= 0]
        embeds = embeds.masked_scatter(patch[..., None], torch.cat(rows).to(embeds.dtype))
        if batch.regions is not None:
            idx = torch.tensor(batch.region_image)
            region_embeds = model.region(batch.images[idx], batch.regions, levels[idx])
            embeds = embeds.masked_scatter((batch.ids == tok.token_id("<region>"))[..., None], region_embeds)
    if batch.groups:
        names = ["perception", "pose", "generation", "editing"]
        tables = [query_table(model, n) for n in names]
        offsets = dict(zip(names, np.cumsum([0] + [t.shape[0] for t in tables[:-1]]).tolist()))
        rows = torch.full(batch.ids.shape, -1, dtype=torch.long)
        for b, p, routing in batch.groups:
            n = query_count(cfg, routing)
            rows[b, p + 1 : p + 1 + n] = torch.arange(n) + offsets[TABLE_OF[routing]]
        spliced = torch.cat(tables)[rows.clamp(min=0)]
        embeds = torch.where((rows >= 0)[..., None], spliced, embeds)
    return embeds, levels


def forward(model: VisionLLMv2Nano, tok: Tokenizer, batch: Batch) -> Forward:
    embeds, levels = build_embeds(model, tok, batch)
    positions = (batch.attention_mask.cumsum(-1) - 1).clamp(min=0)
    logits, hidden, _ = model.llm(embeds, batch.attention_mask, positions)
    lm_loss = weighted_lm_loss(logits, batch.targets, [tok.token_id(r) for r in ROUTING_KINDS])
    states = [hidden[b, p + 1 : p + 1 + query_count(model.c, r)] for b, p, r in batch.groups]
    return Forward(lm_loss, hidden, levels, states)


ROUTING_WEIGHT = 4.0


def weighted_lm_loss(logits: torch.Tensor, targets: torch.Tensor, routing_ids: list[int]) -> torch.Tensor:
    """Next-token cross-entropy, routing tokens counting ROUTING_WEIGHT times: one routing token decides
    which decoder runs, yet it is one of some thirty answer tokens, and the joined model's commonest
    error was [DET] where [SEG] was asked (segmentation 0.30 against detection 0.93, training wordings)."""
    flat = targets.reshape(-1)
    per_token = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), flat, ignore_index=-100, reduction="none")
    valid = (flat != -100).float()
    weight = valid * (1 + (ROUTING_WEIGHT - 1) * torch.isin(flat, torch.tensor(routing_ids)).float())
    return (per_token * weight).sum() / weight.sum().clamp(min=1)


def downsample_image(image: np.ndarray, res: int) -> torch.Tensor:
    """uint8 [H,W,3] -> [3,res,res] in [-1,1] (area average): the generator's pixel space."""
    x = from_numpy(image).permute(2, 0, 1).float()[None] / 127.5 - 1
    return F.adaptive_avg_pool2d(x, res)[0]


def box_cxcywh(box: tuple[float, float, float, float]) -> list[float]:
    x0, y0, x1, y1 = box
    s = W.SIZE
    return [(x0 + x1) / 2 / s, (y0 + y1) / 2 / s, (x1 - x0) / s, (y1 - y0) / s]
