"""Decoder losses: the experts' dense terms (CenterNet's focal loss on centre heatmaps, Grounding DINO's
box weights L1 5 and GIoU 2, mask BCE 5 + dice 5) and flow matching for the generator and the editor."""

from __future__ import annotations

import torch
import torch.nn.functional as F

W_L1, W_GIOU, W_MASK, W_DICE = 5.0, 2.0, 5.0, 5.0


def cxcywh_to_xyxy(b: torch.Tensor) -> torch.Tensor:
    cx, cy, w, h = b.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)


def giou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise GIoU of xyxy boxes a [N,4], b [M,4] -> [N,M]."""
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = area_a[:, None] + area_b[None] - inter
    iou = inter / union.clamp(min=1e-6)
    lt_c = torch.min(a[:, None, :2], b[None, :, :2])
    rb_c = torch.max(a[:, None, 2:], b[None, :, 2:])
    area_c = (rb_c - lt_c).clamp(min=0).prod(-1)
    return iou - (area_c - union) / area_c.clamp(min=1e-6)


def centre_focal(logits: torch.Tensor, heat: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss, summed and divided by the number of centres (>= 1)."""
    p = logits.sigmoid().clamp(1e-4, 1 - 1e-4)
    pos = heat >= 1.0
    pos_loss = -((1 - p) ** 2 * torch.log(p))[pos].sum()
    neg_loss = -((1 - heat) ** 4 * p**2 * torch.log(1 - p))[~pos].sum()
    return (pos_loss + neg_loss) / pos.sum().clamp(min=1)


def box_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """L1 (5) and GIoU (2) of cxcywh boxes [...,4], weighted per cell, averaged over the weights."""
    w = weight.flatten()
    keep = w > 0
    if not keep.any():
        return pred.sum() * 0
    p, t = pred.reshape(-1, 4)[keep], target.reshape(-1, 4)[keep]
    l1 = (F.l1_loss(p, t, reduction="none").sum(-1) * w[keep]).sum()
    g = ((1 - giou(cxcywh_to_xyxy(p), cxcywh_to_xyxy(t)).diag()) * w[keep]).sum()
    return (W_L1 * l1 + W_GIOU * g) / w[keep].sum().clamp(min=1)


def mask_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE (5) and dice (5) of mask logits [N,h,w] against soft targets; dice only where a target exists."""
    bce = F.binary_cross_entropy_with_logits(pred, target)
    p, t = pred.sigmoid().flatten(1), target.flatten(1)
    has = t.sum(1) > 0
    dice = 1 - (2 * (p * t).sum(1) + 1) / (p.sum(1) + t.sum(1) + 1)
    return W_MASK * bce + W_DICE * (dice[has].mean() if has.any() else pred.sum() * 0)


def flow_matching_loss(
    velocity_model, data: torch.Tensor, cond: torch.Tensor, source: torch.Tensor | None = None
) -> torch.Tensor:
    """Rectified flow: x_t = (1 - t) noise + t data, target velocity data - noise."""
    noise = torch.randn_like(data)
    t = torch.sigmoid(torch.randn(data.shape[0]))  # logit-normal: more weight mid-trajectory
    x_t = (1 - t)[:, None, None, None] * noise + t[:, None, None, None] * data
    v = velocity_model(x_t, t, cond) if source is None else velocity_model(x_t, t, cond, source)
    return F.mse_loss(v, data - noise)
