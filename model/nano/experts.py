"""The nano experts: Grounding DINO's, UniPose's and BERT's roles, pretrained standalone on the world
(stage 0) before the super link joins them to the LLM (../../docs/MODEL.md, "Stage 0").

- `PhraseEncoder`: the experts' own text encoder over canonical phrases ("red circle", "the leftmost
  square", "left knee"). The super link replaces it, as VisionLLM v2 removes Grounding DINO's BERT: in
  stage 2 it is the teacher the link embeddings are aligned to, and it is never exported.
- `PerceptionExpert`: detection, instance masks and grounding for one phrase embedding. A dense
  (CenterNet-style) head at stride 8 stands in for DINO's set matching because it converges in
  minutes on two cores; the class score of every cell is a dot product with the phrase (link)
  embedding, the super link's invariant. Graph I/O is the perception decoder's: one query per cell.
- `PoseExpert`: person centres scored against the person embedding, boxes, keypoints regressed per
  person and refined on keypoint heatmaps scored against the keypoint-name embeddings.

Both read the vision encoder's levels (the ViT grid is the experts' 16 x 16 grid) beside their own
convolutional stem, so stage 0 also pretrains the vision encoder (CLIP's role), which later stages freeze.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .model import Config

# Canonical phrase words: the experts' closed vocabulary (synonyms and wordings are the LLM's job).
PHRASE_WORDS = [
    "<pad>",
    "<unk>",
    "the",
    "a",
    "red",
    "green",
    "blue",
    "yellow",
    "purple",
    "circle",
    "square",
    "triangle",
    "diamond",
    "object",
    "shape",
    "person",
    "biggest",
    "smallest",
    "leftmost",
    "rightmost",
    "at",
    "top",
    "bottom",
    "left",
    "right",
    "of",
    "head",
    "neck",
    "shoulder",
    "hand",
    "hip",
    "knee",
    "foot",
]
MAX_PHRASE_WORDS = 8
NMS_PENALTY = 30.0  # subtracted from a cell's logit when a neighbour scores higher (sigmoid -> ~0)


class PhraseEncoder(nn.Module):
    """Canonical phrases -> one embedding each [N,link]: word embeddings, 2 transformer layers, mean."""

    def __init__(self, c: Config, dim: int = 96):
        super().__init__()
        self.index = {w: i for i, w in enumerate(PHRASE_WORDS)}
        self.embed = nn.Embedding(len(PHRASE_WORDS), dim)
        self.pos = nn.Parameter(torch.randn(MAX_PHRASE_WORDS, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, 4, dim * 2, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2)
        self.out = nn.Sequential(nn.Linear(dim, c.link_dim), nn.GELU(), nn.Linear(c.link_dim, c.link_dim))

    def ids(self, phrases: list[str]) -> torch.Tensor:
        rows = []
        for p in phrases:
            words = p.replace("_", " ").split()[:MAX_PHRASE_WORDS]
            rows.append([self.index.get(w, 1) for w in words] + [0] * (MAX_PHRASE_WORDS - len(words)))
        return torch.tensor(rows, dtype=torch.long)

    def forward(self, phrases: list[str]) -> torch.Tensor:
        ids = self.ids(phrases).to(self.pos.device)
        pad = ids == 0
        x = self.encoder(self.embed(ids) + self.pos, src_key_padding_mask=pad)
        keep = (~pad).float()[..., None]
        return self.out((x * keep).sum(1) / keep.sum(1).clamp(min=1))


class Residual(nn.Module):
    def __init__(self, ch: int, dilation: int = 1):
        super().__init__()
        self.body = nn.Sequential(
            nn.GroupNorm(8, ch),
            nn.GELU(),
            nn.Conv2d(ch, ch, 3, 1, dilation, dilation=dilation),
            nn.GroupNorm(8, ch),
            nn.GELU(),
            nn.Conv2d(ch, ch, 3, 1, dilation, dilation=dilation),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Backbone(nn.Module):
    """pixels [B,3,128,128] + vision levels [B,3,256,Dv] -> f64 [B,32,64,64], f32 [B,48,32,32],
    f16 [B,E,16,16] (E = expert width): a conv stem for sharp edges plus the ViT's semantic levels."""

    def __init__(self, c: Config, width: int):
        super().__init__()
        self.grid = c.grid
        self.s64 = nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1), nn.GELU())
        self.s32 = nn.Sequential(nn.Conv2d(32, 48, 3, 2, 1), Residual(48))
        self.s16 = nn.Sequential(nn.Conv2d(48, width, 3, 2, 1), Residual(width, 1))
        self.levels = nn.Linear(3 * c.vit_dim, width)
        self.post = nn.Sequential(Residual(width, 2), Residual(width, 4))

    def forward(self, pixel_values: torch.Tensor, vision_levels: torch.Tensor):
        b = pixel_values.shape[0]
        f64 = self.s64(pixel_values)
        f32 = self.s32(f64)
        vit = self.levels(vision_levels.permute(0, 2, 1, 3).reshape(b, self.grid * self.grid, -1))
        f16 = self.s16(f32) + vit.transpose(1, 2).reshape(b, -1, self.grid, self.grid)
        return f64, f32, self.post(f16)


class Conditioned(nn.Module):
    """f16 conditioned on a phrase embedding: FiLM, then attention over the cells and the phrase token,
    so relations and superlatives ("the leftmost square") can compare cells. -> tokens [B,P,E]."""

    def __init__(self, c: Config, width: int, layers: int = 2):
        super().__init__()
        self.film = nn.Linear(c.link_dim, 2 * width)
        self.token = nn.Linear(c.link_dim, width)
        self.pos = nn.Parameter(torch.randn(1, c.grid * c.grid, width) * 0.02)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(width, 4, width * 2, dropout=0.0, batch_first=True, norm_first=True)
            for _ in range(layers)
        )

    def forward(self, f16: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.film(embedding).chunk(2, dim=-1)
        x = f16.flatten(2).transpose(1, 2) * (1 + gamma[:, None]) + beta[:, None] + self.pos
        x = torch.cat([x, self.token(embedding)[:, None]], dim=1)
        for block in self.blocks:
            x = block(x)
        return x[:, :-1]


def cell_centres(grid: int, device=None) -> torch.Tensor:
    """[grid*grid, 2] centres (x, y) in 0..1, row-major like the flattened feature maps."""
    c = (torch.arange(grid, dtype=torch.float32, device=device) + 0.5) / grid
    cy, cx = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([cx.flatten(), cy.flatten()], -1)


def decode_boxes(raw: torch.Tensor, grid: int) -> torch.Tensor:
    """Box head output [B,P,4] -> cx, cy, w, h in 0..1: centre within two cells of its own cell."""
    centres = cell_centres(grid, raw.device)
    xy = centres + torch.tanh(raw[..., :2]) * (2.0 / grid)
    return torch.cat([xy, torch.sigmoid(raw[..., 2:])], dim=-1)


def peaks_only(logits: torch.Tensor, grid: int) -> torch.Tensor:
    """CenterNet's NMS in the graph: a cell that a 3 x 3 neighbour outscores is pushed to ~0."""
    b = logits.shape[0]
    heat = logits.reshape(b, 1, grid, grid)
    peak = F.max_pool2d(heat, 3, 1, 1)
    return torch.where(heat >= peak, heat, heat - NMS_PENALTY).reshape(b, -1)


def crop_to_boxes(mask: torch.Tensor, boxes: torch.Tensor, pad: float = 1.5 / 128) -> torch.Tensor:
    """Semantic mask logits [B,h,w] -> one mask per query [B,Q,h,w]: the phrase's mask inside the
    query's box (objects never overlap in the world), -10 outside."""
    h, w = mask.shape[-2:]
    ys = (torch.arange(h, dtype=mask.dtype, device=mask.device) + 0.5) / h
    xs = (torch.arange(w, dtype=mask.dtype, device=mask.device) + 0.5) / w
    cx, cy, bw, bh = boxes.unbind(-1)  # [B,Q]
    inside_x = (xs[None, None] >= (cx - bw / 2 - pad)[..., None]) & (xs[None, None] <= (cx + bw / 2 + pad)[..., None])
    inside_y = (ys[None, None] >= (cy - bh / 2 - pad)[..., None]) & (ys[None, None] <= (cy + bh / 2 + pad)[..., None])
    inside = inside_y[..., :, None] & inside_x[..., None, :]  # [B,Q,h,w]
    return torch.where(inside, mask[:, None], torch.full_like(inside, -10.0, dtype=mask.dtype))


class PerceptionExpert(nn.Module):
    """pixel_values [B,3,H,W], vision_levels [B,3,P,Dv], class_embedding [B,link] -> pred_logits [B,Q]
    (peaks only), pred_boxes [B,Q,4] (cx,cy,w,h in 0..1), pred_masks [B,Q,64,64] (logits); Q = 256 cells.
    The phrase decides which cells score; a query's mask is the image's foreground inside its box."""

    def __init__(self, c: Config):
        super().__init__()
        width = c.expert_width
        self.grid = c.grid
        self.backbone = Backbone(c, width)
        self.cond = Conditioned(c, width)
        self.q_score = nn.Linear(width, width)
        self.c_score = nn.Linear(c.link_dim, width)
        self.score_bias = nn.Parameter(torch.tensor(-4.0))
        self.box = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, 4))
        # Masks: one foreground map per image, cropped to each query's box (objects never overlap, so a
        # box holds one object); phrase-independent, so it costs one pass per image, not per phrase.
        self.fg32 = nn.Sequential(nn.Conv2d(width + 48, 48, 3, 1, 1), nn.GELU())
        self.fg64 = nn.Sequential(nn.Conv2d(48 + 32, 16, 3, 1, 1), nn.GELU(), nn.Conv2d(16, 1, 3, 1, 1))
        self.scale = 1 / math.sqrt(width)

    def features(self, pixel_values, vision_levels, base=None):
        """-> (f16, foreground mask logits [B,64,64]), once per image; `base` = the backbone's output
        when the pose expert, which shares the backbone, has already computed it."""
        f64, f32, f16 = base if base is not None else self.backbone(pixel_values, vision_levels)
        x = self.fg32(torch.cat([F.interpolate(f16, scale_factor=2.0, mode="nearest"), f32], 1))
        fg = self.fg64(torch.cat([F.interpolate(x, scale_factor=2.0, mode="nearest"), f64], 1))[:, 0]
        return f16, fg

    def heads(self, feats, rows: torch.Tensor, embedding: torch.Tensor):
        """Per phrase (its image row in `feats`) -> raw cell logits [N,P], boxes [N,P,4]."""
        tokens = self.cond(feats[0][rows], embedding)
        logits = (
            torch.einsum("npd,nd->np", self.q_score(tokens), self.c_score(embedding)) * self.scale + self.score_bias
        )
        return logits, decode_boxes(self.box(tokens), self.grid)

    def forward(self, pixel_values, vision_levels, class_embedding):
        f16, fg = self.features(pixel_values, vision_levels)
        logits, boxes = self.heads((f16, fg), torch.arange(pixel_values.shape[0]), class_embedding)
        return peaks_only(logits, self.grid), boxes, crop_to_boxes(fg, boxes)


class PoseExpert(nn.Module):
    """pixel_values, vision_levels, person_embedding [B,link], keypoint_embeddings [B,K,link] ->
    pred_logits [B,Q], pred_boxes [B,Q,4], pred_keypoints [B,Q,K,2] (0..1), keypoint_scores [B,Q,K]."""

    SIGMA = 0.05  # the refinement window around each regressed keypoint (6.4 px)

    def __init__(self, c: Config, backbone: Backbone):
        super().__init__()
        width = c.expert_width
        self.grid = c.grid
        self.k = c.num_keypoints
        # Shared with the perception expert (one trunk, two heads, as DINO-family models share a
        # backbone); each exported graph carries its own copy of the weights.
        self.backbone = backbone
        self.cond = Conditioned(c, width)
        self.q_score = nn.Linear(width, width)
        self.c_score = nn.Linear(c.link_dim, width)
        self.score_bias = nn.Parameter(torch.tensor(-4.0))
        self.box = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, 4))
        self.reg = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, 2 * c.num_keypoints))
        self.up32 = nn.Sequential(nn.Conv2d(width + 48, 48, 3, 1, 1), nn.GELU(), nn.Conv2d(48, 48, 3, 1, 1))
        self.k_embed = nn.Linear(c.link_dim, 48)
        self.k_bias = nn.Parameter(torch.tensor(-4.0))  # heatmaps start near 0 (CenterNet's prior)
        self.scale = 1 / math.sqrt(width)

    def features(self, pixel_values, vision_levels, base=None):
        return base if base is not None else self.backbone(pixel_values, vision_levels)

    def heads(self, feats, rows, person, keypoints):
        """-> raw person logits [N,P], boxes [N,P,4], regressed keypoints [N,P,K,2], heatmaps [N,K,32*32]."""
        _, f32, f16 = (f[rows] for f in feats)
        tokens = self.cond(f16, person)
        logits = torch.einsum("npd,nd->np", self.q_score(tokens), self.c_score(person)) * self.scale + self.score_bias
        boxes = decode_boxes(self.box(tokens), self.grid)
        n = tokens.shape[0]
        reg = torch.tanh(self.reg(tokens).reshape(n, -1, self.k, 2)) * 0.5 + boxes[..., None, :2]
        t16 = tokens.transpose(1, 2).reshape(n, -1, self.grid, self.grid)
        x = self.up32(torch.cat([F.interpolate(t16, scale_factor=2.0, mode="nearest"), f32], 1))
        heat = torch.einsum("nchw,nkc->nkhw", x, self.k_embed(keypoints)).flatten(2) + self.k_bias
        return logits, boxes, reg, heat

    def refine(self, reg: torch.Tensor, heat: torch.Tensor):
        """Regressed keypoints [N,Q,K,2] + heatmaps [N,K,P] (P = 32 x 32) -> soft-argmax inside a window
        around each regressed point: [N,Q,K,2], and the window's peak probability as the score [N,Q,K]."""
        grid = cell_centres(2 * self.grid, heat.device)  # [P,2]
        d2 = ((reg[..., None, :] - grid) ** 2).sum(-1)  # [N,Q,K,P]
        prob = torch.softmax(heat[:, None] - d2 / (2 * self.SIGMA**2), dim=-1)
        return (prob[..., None] * grid).sum(-2), prob.max(dim=-1).values

    def forward(self, pixel_values, vision_levels, person_embedding, keypoint_embeddings):
        rows = torch.arange(pixel_values.shape[0])
        logits, boxes, reg, heat = self.heads(
            self.features(pixel_values, vision_levels), rows, person_embedding, keypoint_embeddings
        )
        keypoints, scores = self.refine(reg, heat)
        return peaks_only(logits, self.grid), boxes, keypoints, scores
