"""The shape of a training or inference patch: the same physical extent along each axis."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["auto_patch_size"]


def auto_patch_size(spacing, shape, divisor: int = 8, budget: int = 64**3, min_side: int = 16) -> tuple[int, int, int]:
    """Patch shape covering about the same physical extent along each axis.

    Sides are proportional to ``1 / spacing`` with ``prod(sides) ~ budget``, multiples of
    ``divisor``, at least ``min_side`` and at most the volume (rounded up to ``divisor``);
    budget freed by a short axis goes to the others.
    """
    sp = np.asarray(spacing, dtype=float)
    cap = np.array([max(divisor, math.ceil(n / divisor) * divisor) for n in shape], dtype=float)
    rel = sp.min() / sp
    fixed = np.zeros(3, dtype=bool)
    side = np.zeros(3)
    for _ in range(3):
        free = ~fixed
        rest = budget / np.prod(side[fixed]) if fixed.any() else budget
        s = (rest / np.prod(rel[free])) ** (1.0 / free.sum())
        side[free] = np.maximum(rel[free] * s, min_side)
        over = free & (side >= cap)
        if not over.any():
            break
        side[over] = cap[over]
        fixed |= over
        if fixed.all():
            break
    side = np.minimum(side, cap)
    return tuple(int(max(divisor, min(c, round(v / divisor) * divisor))) for v, c in zip(side, cap, strict=True))
