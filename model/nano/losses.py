"""Decoder losses: Grounding DINO's set loss (focal 2, L1 5, GIoU 2, mask BCE 5 + dice 5, Hungarian
matching with the same costs), UniPose's keypoint term (L1 10, plus a heatmap CE that stands in for
OKS), and flow matching for the generator and the editor."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

W_CLASS, W_L1, W_GIOU, W_MASK, W_DICE, W_KP = 2.0, 5.0, 2.0, 5.0, 5.0, 10.0
# Location prior added to the matching cost: L1 distance from a query's fixed anchor (its grid cell
# centre) to a target's centre. DETR-style matching on predictions alone reshuffles which query owns
# an object from step to step and converges slowly; on a 90-minute CPU budget it never did (AP 0).
# With the prior, the query whose cell holds an object's centre owns it from the first step (objects
# are >= 16 px and 2 px apart, so no two centres share a 16 px cell) and the usual costs still break ties.
W_PRIOR = 20.0


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


def focal(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    pt = p * targets + (1 - p) * (1 - targets)
    return (ce * (1 - pt) ** gamma * (alpha * targets + (1 - alpha) * (1 - targets))).sum()


def match(logits: torch.Tensor, boxes: torch.Tensor, target_boxes: torch.Tensor,
          anchors: torch.Tensor | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Hungarian matching of Q predictions to M targets with DINO's costs (one class per call), plus
    the location prior when the queries' anchor centres [Q,2] are given."""
    with torch.no_grad():
        p = logits.sigmoid()
        cost_class = 0.25 * (1 - p) ** 2 * -(p + 1e-8).log() - 0.75 * p**2 * -(1 - p + 1e-8).log()
        cost = (
            W_CLASS * cost_class[:, None]
            + W_L1 * torch.cdist(boxes, target_boxes, p=1)
            - W_GIOU * giou(cxcywh_to_xyxy(boxes), cxcywh_to_xyxy(target_boxes))
        )
        if anchors is not None:
            cost = cost + W_PRIOR * torch.cdist(anchors, target_boxes[:, :2], p=1)
        rows, cols = linear_sum_assignment(cost.numpy())
    return rows, cols


def set_loss(
    logits_per_layer: list[torch.Tensor],  # [G,Q]
    box_logits_per_layer: list[torch.Tensor],  # [G,Q,4]
    target_boxes: list[torch.Tensor],  # per call [M,4] cxcywh
    masks: torch.Tensor | None = None,  # [G,Q,h,w] logits
    target_masks: list[torch.Tensor] | None = None,  # per call [M,h,w]
    anchors: torch.Tensor | None = None,  # [Q,2] anchor centres, 0..1
) -> tuple[torch.Tensor, list[tuple[np.ndarray, np.ndarray]]]:
    total = torch.zeros(())
    matches: list[tuple[np.ndarray, np.ndarray]] = []
    n_targets = max(1, sum(len(t) for t in target_boxes))
    last = len(logits_per_layer) - 1
    for g in range(len(target_boxes)):
        boxes = box_logits_per_layer[last][g].sigmoid()
        if len(target_boxes[g]):
            matches.append(match(logits_per_layer[last][g], boxes, target_boxes[g], anchors))
        else:
            matches.append((np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)))
    for layer in range(len(logits_per_layer)):
        for g, (rows, cols) in enumerate(matches):
            logits = logits_per_layer[layer][g]
            labels = torch.zeros_like(logits)
            labels[rows] = 1.0
            total = total + W_CLASS * focal(logits, labels) / n_targets
            if len(rows):
                pred = box_logits_per_layer[layer][g][rows].sigmoid()
                tgt = target_boxes[g][cols]
                total = total + W_L1 * F.l1_loss(pred, tgt, reduction="sum") / n_targets
                total = total + W_GIOU * (1 - giou(cxcywh_to_xyxy(pred), cxcywh_to_xyxy(tgt)).diag()).sum() / n_targets
    if masks is not None and target_masks is not None:
        for g, (rows, cols) in enumerate(matches):
            if not len(rows):
                continue
            pred = masks[g][rows].flatten(1)
            tgt = target_masks[g][cols].flatten(1)
            total = total + W_MASK * F.binary_cross_entropy_with_logits(pred, tgt, reduction="none").mean(1).sum() / n_targets
            p = pred.sigmoid()
            dice = 1 - (2 * (p * tgt).sum(1) + 1) / (p.sum(1) + tgt.sum(1) + 1)
            total = total + W_DICE * dice.sum() / n_targets
    return total, matches


def keypoint_loss(heat: torch.Tensor, pred_xy: torch.Tensor, target_xy: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """heat [M,K,h*w] logits, pred_xy/target_xy [M,K,2] in 0..1."""
    cell = (target_xy[..., 1] * h).long().clamp(0, h - 1) * w + (target_xy[..., 0] * w).long().clamp(0, w - 1)
    ce = F.cross_entropy(heat.reshape(-1, h * w), cell.reshape(-1))
    return W_KP * F.l1_loss(pred_xy, target_xy) + ce


def flow_matching_loss(velocity_model, data: torch.Tensor, cond: torch.Tensor, source: torch.Tensor | None = None) -> torch.Tensor:
    """Rectified flow: x_t = (1 - t) noise + t data, target velocity data - noise."""
    noise = torch.randn_like(data)
    t = torch.sigmoid(torch.randn(data.shape[0]))  # logit-normal: more weight mid-trajectory
    x_t = (1 - t)[:, None, None, None] * noise + t[:, None, None, None] * data
    v = velocity_model(x_t, t, cond) if source is None else velocity_model(x_t, t, cond, source)
    return F.mse_loss(v, data - noise)
