"""Overlap metrics on dense masks (class indices)."""

from __future__ import annotations

import numpy as np


def dice_per_class(pred: np.ndarray, ref: np.ndarray, classes=None) -> dict[int, float]:
    """Dice of each class in ``classes`` (default: every foreground class in ``ref``).

    A class absent from both masks scores 1.0; absent from one only, 0.0.
    """
    pred, ref = np.asarray(pred), np.asarray(ref)
    if classes is None:
        classes = [int(c) for c in np.unique(ref) if c != 0]
    out = {}
    for c in classes:
        p, r = pred == c, ref == c
        denom = int(p.sum()) + int(r.sum())
        out[int(c)] = 1.0 if denom == 0 else 2.0 * int(np.logical_and(p, r).sum()) / denom
    return out


def mean_dice(pred, ref, classes=None) -> float:
    """Mean of :func:`dice_per_class` (NaN when there is no class)."""
    d = dice_per_class(pred, ref, classes)
    return float(np.mean(list(d.values()))) if d else float("nan")
