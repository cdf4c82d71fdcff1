"""The working grid: a large scan is learned and predicted on whole-number blocks of its voxels.

A clinical CT (512 x 512 x 300, about 80 million voxels at 0.7 x 0.7 x 1 mm) is 30 to 150 times
the scans the round's defaults were measured on. At its own resolution the network's patch
covers 3 cm of tissue (too little context to tell liver from spleen: mean Dice 0.19 after a
60 s round in ``benchmarks/clinical.py``), the forest's filter features would need 5.5 GB, and
prediction with the CRF took more than 15 minutes on 2 cores (the CRF's band of
uncertain outlines holds millions of voxels there). So above ``working_voxels`` voxels
the network and the forest work on a coarser grid: blocks of ``f0 x f1 x f2`` voxels (whole
numbers, so every stroke voxel falls in exactly one block and the grids line up without
interpolation), the finest axis coarsened first until the scan fits. The network, the forest and
the CRF predict on the blocks (where the round's defaults were measured); their probabilities are
interpolated back to every voxel (trilinear between block centres, slab by slab) for the mask and
the uncertainty, so an outline is smooth at the scan's resolution, not a staircase of blocks.

* intensities: the mean of each block;
* strokes: each block takes the class most of its labelled voxels have (a stroke one voxel
  thin keeps its blocks; unlabelled voxels do not outvote it), and the strongest source
  (correction over stroke over hint) among the voxels of that class.
"""

from __future__ import annotations

import math

import numpy as np

from napari_sparseseg.core.base.grid import working_factors

__all__ = ["coarse_shape", "coarsen_image", "coarsen_labels", "expand_labels", "upsample_rows", "working_factors",
           "working_scan"]


def working_scan(image: np.ndarray, spacing, max_voxels: int) -> tuple[np.ndarray, tuple]:
    """``(image, spacing)`` of the grid a scan is learned on: itself, or its block means and block size."""
    f = working_factors(image.shape, spacing, max_voxels)
    if f == (1, 1, 1):
        return image, tuple(spacing)
    return coarsen_image(image, f), tuple(float(s) * k for s, k in zip(spacing, f, strict=True))


def coarse_shape(shape, factors) -> tuple[int, int, int]:
    """Blocks per axis (a partial block at the end counts)."""
    return tuple(math.ceil(n / f) for n, f in zip(shape, factors, strict=True))


def coarsen_image(image: np.ndarray, factors, rows: int = 8) -> np.ndarray:
    """Block means (float32) of ``image``; partial blocks at the ends average the voxels they hold.

    Computed a few block-rows at a time, so only those rows are held in float32.
    """
    f0, f1, f2 = (int(v) for v in factors)
    out = np.empty(coarse_shape(image.shape, factors), np.float32)
    _, ch, cw = out.shape
    h, w = image.shape[1:]
    for c0 in range(0, out.shape[0], rows):
        c1 = min(out.shape[0], c0 + rows)
        block = image[c0 * f0 : c1 * f0].astype(np.float32)
        n0 = block.shape[0]
        pad = ((0, (c1 - c0) * f0 - n0), (0, ch * f1 - h), (0, cw * f2 - w))
        count = np.pad(np.ones(block.shape, np.float32), pad) if any(p[1] for p in pad) else None
        if count is not None:
            block = np.pad(block, pad)
        total = block.reshape(c1 - c0, f0, ch, f1, cw, f2).sum(axis=(1, 3, 5))
        if count is not None:
            total /= count.reshape(c1 - c0, f0, ch, f1, cw, f2).sum(axis=(1, 3, 5))
        else:
            total /= f0 * f1 * f2
        out[c0:c1] = total
    return out


def coarsen_labels(labels: np.ndarray, factors, source: np.ndarray | None = None):
    """Block labels: the value most labelled voxels of a block have (0 only where none is labelled).

    Ties go to the higher value. With ``source`` (same shape), also returns the blocks' sources:
    the largest source among the block's voxels of the chosen value.

    Returns:
        the coarse labels (``labels.dtype``), or ``(labels, source)`` when ``source`` is given.
    """
    shape = coarse_shape(labels.shape, factors)
    out = np.zeros(shape, labels.dtype)
    src = None if source is None else np.zeros(shape, source.dtype)
    where = np.nonzero(labels)
    if where[0].size:
        values = labels[where].astype(np.int64)
        block = np.ravel_multi_index(tuple(c // int(f) for c, f in zip(where, factors, strict=True)), shape)
        top = int(values.max()) + 1
        keys, counts = np.unique(block * top + values, return_counts=True)
        kb, kv = keys // top, keys % top
        order = np.lexsort((kv, counts, kb))  # per block, the last entry has the most voxels (then the highest value)
        last = np.r_[kb[order][1:] != kb[order][:-1], True]
        chosen_block, chosen_value = kb[order][last], kv[order][last]
        out.reshape(-1)[chosen_block] = chosen_value
        if source is not None:
            keep = out.reshape(-1)[block] == values
            np.maximum.at(src.reshape(-1), block[keep], source[where][keep])
    return out if source is None else (out, src)


def expand_labels(coarse: np.ndarray, factors, shape) -> np.ndarray:
    """Each block's value on its voxels (the nearest-neighbour view of a coarse mask), cut to ``shape``."""
    out = coarse
    for axis, f in enumerate(factors):
        if f > 1:
            out = np.repeat(out, int(f), axis=axis)
    return np.ascontiguousarray(out[tuple(slice(0, n) for n in shape)])


def upsample_rows(p, factors, depth: int, plane: tuple, lo: int, hi: int):
    """Rows ``lo..hi`` of the scan's grid from coarse probabilities ``p`` ``(K, D', H', W')``: trilinear.

    Block centres are the samples (``align_corners=False``, edges replicated), so the result is
    that of interpolating the whole volume: a fine row lies between the two coarse rows whose
    centres surround it, and one coarse row beyond ``lo..hi`` on each side is read.
    """
    import torch.nn.functional as F

    f0, f1, f2 = (int(v) for v in factors)
    a = max(0, lo // f0 - 1)
    b = min(p.shape[1], (hi - 1) // f0 + 2)
    block = p[:, a:b]
    if f0 == f1 == f2 == 1:
        return block[:, lo - a : hi - a]
    up = F.interpolate(block[None].float(), size=(block.shape[1] * f0, block.shape[2] * f1, block.shape[3] * f2),
                       mode="trilinear", align_corners=False)[0]
    out = up[:, lo - a * f0 : hi - a * f0, : plane[0], : plane[1]]
    return out.contiguous()

