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


def keep_loss(logits: torch.Tensor, previous: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean ``KL(previous || current)`` of the class distributions over the unlabelled voxels (``w == 0``).

    Learning without forgetting (Li and Hoiem, 2016): in a correction round the previous
    round's network says what the strokes do not, everywhere the user left unlabelled; this
    term keeps the new network's prediction there, so the round learns the corrections
    without drifting away from what the last round got right. 0 when the two agree, and 0
    (with a graph) when no voxel is unlabelled.

    Args:
        logits: ``(B, C, *spatial)`` the network being trained.
        previous: ``(B, C, *spatial)`` the previous round's class probabilities on the same
            voxels (no gradient; each voxel's sum 1).
        weight: ``(B, *spatial)`` or ``(B, 1, *spatial)`` the stroke weights (0: unlabelled).
    """
    spatial = (logits.shape[0],) + tuple(logits.shape[2:])
    free = (weight.reshape(spatial) == 0).to(torch.float32)
    if not bool(free.any()):
        return logits.sum() * 0.0
    p = previous.float()
    kl = (torch.xlogy(p, p) - p * logits.float().log_softmax(1)).sum(1)
    return (kl * free).sum() / free.sum()


def sparse_loss(logits, target, weight, dice_weight: float = 0.0) -> torch.Tensor:
    """The training loss: masked weighted CE plus ``dice_weight`` times masked soft Dice."""
    loss = masked_weighted_ce(logits, target, weight)
    if dice_weight > 0:
        loss = loss + dice_weight * masked_soft_dice(logits, target, weight)
    return loss
