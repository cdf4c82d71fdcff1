"""Boundary refinement: a dense CRF with local Gaussian kernels on top of the net's probabilities.

A network trained on a few strokes knows roughly where each structure is but draws its
outline where its receptive field blurs it; most of the error after a couple of rounds lies
within a voxel or two of an outline. A fully connected pairwise model that prefers
neighbouring voxels of similar intensity to share a class (Krähenbühl and Koltun's dense CRF,
the "deep nets + CRF" of DeepLab) moves the outline onto the image's edges. Here it is solved
by mean-field iterations with a *local* kernel, so it runs on the CPU in seconds and in slabs:

    Q <- softmax( log p  +  w * sum_j k(i, j) Q_j / sum_j k(i, j) )

    k(i, j) = exp(-|x_i - x_j|^2 / (2 theta_p^2)) * exp(-|I_i - I_j|^2 / (2 theta_I^2))

over neighbours j of i on a stencil: the 26 directions of the grid, each stepped out to
``radius_mm`` in millimetres (at most ``max_steps`` voxels), so anisotropic spacing is
respected (a 6.5 mm slice gap is one step only when the radius reaches it). ``I`` are the
network's normalised input channels. ``theta_I`` is the typical intensity difference between
neighbouring voxels *of the same class*, measured on the user's own strokes
(:func:`intensity_scale`), so the kernel adapts to each scan's noise instead of a constant;
it is stored with the model for predicting without strokes. Strokes and corrections are hard
constraints: their voxels keep their class in every iteration.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

__all__ = ["KERNEL_BYTES", "intensity_scale", "mean_field", "stencil"]

KERNEL_BYTES = 768 * 2**20  # kernels kept in memory up to this size (else recomputed every iteration)


def stencil(spacing, radius_mm: float, max_steps: int = 4) -> list[tuple[int, int, int]]:
    """Neighbour offsets (array order): each of the 26 directions stepped out to ``radius_mm``.

    A direction is stepped ``s = 1, 2, ...`` voxels while the step's length in millimetres
    stays within ``radius_mm`` (always at least one step, at most ``max_steps``).
    """
    sp = np.asarray(spacing, float)
    out = []
    for d in itertools.product((-1, 0, 1), repeat=3):
        if not any(d):
            continue
        length = float(np.linalg.norm(np.asarray(d) * sp))
        steps = max(1, min(int(max_steps), int(math.floor(radius_mm / length + 1e-9))))
        out += [tuple(s * c for c in d) for s in range(1, steps + 1)]
    return out


def _pairs(shape, axis: int):
    a = [slice(None)] * len(shape)
    b = [slice(None)] * len(shape)
    a[axis], b[axis] = slice(1, None), slice(None, -1)
    return tuple(a), tuple(b)


def intensity_scale(channels: np.ndarray, strokes: np.ndarray) -> float | None:
    """Root-mean-square intensity difference between face neighbours labelled the same class.

    Args:
        channels: normalised network input ``(C, *shape)``.
        strokes: scribble convention (0 unlabelled, c + 1 class c), corrections included.

    Returns:
        The scale, or ``None`` when no two neighbouring voxels share a stroke.
    """
    total, count = 0.0, 0
    for ax in range(3):
        a, b = _pairs(strokes.shape, ax)
        where = np.nonzero((strokes[a] == strokes[b]) & (strokes[a] > 0))  # strokes are sparse: few pairs
        if not where[0].size:
            continue
        for c in range(channels.shape[0]):
            d = channels[c][a][where].astype(np.float64) - channels[c][b][where]
            total += float(np.dot(d, d))
        count += int(where[0].size)
    if not count:
        return None
    return max(math.sqrt(total / count), 1e-3)


def _shifted(x, offset, fill: float = 0.0):
    """``out[..., i] = x[..., i + offset]`` over the last three axes, ``fill`` outside."""
    import torch

    out = torch.full_like(x, fill)
    src, dst = [], []
    for o, n in zip(offset, x.shape[-3:], strict=True):
        if o >= 0:
            src.append(slice(o, n))
            dst.append(slice(0, max(0, n - o)))
        else:
            src.append(slice(0, max(0, n + o)))
            dst.append(slice(-o, n))
    out[(...,) + tuple(dst)] = x[(...,) + tuple(src)]
    return out


def mean_field(probs, channels, spacing, theta_intensity: float, hard=None, *, weight: float = 15.0,
               iterations: int = 10, radius_mm: float = 3.5, max_steps: int = 4):
    """Refine class probabilities with a local dense CRF (module docstring).

    Args:
        probs: ``(K, *shape)`` float tensor of the network's softmax.
        channels: ``(C, *shape)`` float tensor, the network's normalised input.
        spacing: voxel size in mm, array order.
        theta_intensity: intensity scale of the appearance kernel (:func:`intensity_scale`).
        hard: optional ``(*shape)`` long tensor in scribble convention; labelled voxels keep
            their class (values above ``K`` are ignored).
        weight: strength of the pairwise term against the log-probabilities.
        iterations: mean-field iterations (information travels one stencil radius each).
        radius_mm: reach of the stencil in millimetres.
        max_steps: at most this many voxels along one direction.

    Returns:
        ``(K, *shape)`` float tensor of refined probabilities.
    """
    import torch

    k = probs.shape[0]
    sp = np.asarray(spacing, float)
    offsets = stencil(sp, radius_mm, max_steps)
    theta_p = radius_mm / 2.0
    unary = probs.clamp_min(1e-6).log()
    inv = 1.0 / (2.0 * float(theta_intensity) ** 2)

    def kernel(offset):
        dist2 = float(((np.asarray(offset) * sp) ** 2).sum())
        diff = ((channels - _shifted(channels, offset)) ** 2).sum(0)
        w = torch.exp(-diff * inv) * math.exp(-dist2 / (2.0 * theta_p**2))
        return w * _shifted(torch.ones_like(diff), offset)  # nothing from outside the volume

    # Keep the kernels when they fit in KERNEL_BYTES (they cost as much as the rest); else recompute.
    voxels = int(np.prod(probs.shape[1:]))
    kept = [kernel(o) for o in offsets] if len(offsets) * voxels * 4 <= KERNEL_BYTES else None
    norm = torch.zeros(probs.shape[1:], dtype=probs.dtype)
    for i, o in enumerate(offsets):
        norm += kept[i] if kept is not None else kernel(o)
    norm.clamp_(min=1e-6)
    fixed = onehot = None
    if hard is not None:
        fixed = (hard > 0) & (hard <= k)
        if bool(fixed.any()):
            onehot = torch.nn.functional.one_hot((hard.clamp(1, k) - 1), k).permute(3, 0, 1, 2).to(probs.dtype)
        else:
            fixed = None
    q = probs.clone()
    for _ in range(int(iterations)):
        if fixed is not None:
            q[:, fixed] = onehot[:, fixed]
        message = torch.zeros_like(q)
        for i, o in enumerate(offsets):
            message += (kept[i] if kept is not None else kernel(o)) * _shifted(q, o)
        q = torch.softmax(unary + weight * message / norm, 0)
    if fixed is not None:
        q[:, fixed] = onehot[:, fixed]
    return q
