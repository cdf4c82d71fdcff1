"""Masked, weighted cross-entropy over labelled voxels (Cicek et al. 2016), optional Dice."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _labelled(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor):
    """Gather the labelled voxels: logits ``(N, C)``, target ``(N,)``, weight ``(N,)``."""
    if logits.ndim < 3:
        raise ValueError(f"logits must be (B, C, *spatial), got shape {tuple(logits.shape)}.")
    spatial = (logits.shape[0],) + tuple(logits.shape[2:])
    target = target.reshape(spatial)
    weight = weight.reshape(spatial)
    mask = weight > 0
    flat = logits.movedim(1, -1)[mask]
    if flat.dtype in (torch.float16, torch.bfloat16):  # CE in at least float32
        flat = flat.float()
    return flat, target[mask].long(), weight[mask].to(flat.dtype)


def masked_weighted_ce(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``sum(w * CE) / sum(w)`` over voxels with ``w > 0``.

    Unlabelled voxels (``w == 0``) are not part of the graph at all, so they receive exactly
    zero gradient whatever their logits (even NaN).

    Args:
        logits: ``(B, C, *spatial)`` raw network output.
        target: ``(B, *spatial)`` or ``(B, 1, *spatial)`` class indices (any value where w = 0).
        weight: same shape as target, >= 0.

    Returns:
        Scalar loss; 0 (with a graph) if no voxel is labelled.
    """
    flat, t, w = _labelled(logits, target, weight)
    if w.numel() == 0:
        return logits.sum() * 0.0
    ce = F.cross_entropy(flat, t, reduction="none")
    return (w * ce).sum() / w.sum()


def masked_soft_dice(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """1 - mean soft Dice over the classes present, computed on labelled voxels only (weighted)."""
    flat, t, w = _labelled(logits, target, weight)
    if w.numel() == 0:
        return logits.sum() * 0.0
    p = flat.softmax(-1)
    onehot = F.one_hot(t, p.shape[-1]).to(p.dtype)
    w = w[:, None]
    inter = (w * p * onehot).sum(0)
    denom = (w * (p + onehot)).sum(0)
    present = onehot.sum(0) > 0
    dice = (2 * inter + eps) / (denom + eps)
    return 1.0 - dice[present].mean()


def sparse_loss(logits, target, weight, dice_weight: float = 0.0) -> torch.Tensor:
    """The training loss: masked weighted CE plus ``dice_weight`` times masked soft Dice."""
    loss = masked_weighted_ce(logits, target, weight)
    if dice_weight > 0:
        loss = loss + dice_weight * masked_soft_dice(logits, target, weight)
    return loss
