"""A simulated annotator: strokes on a few slices, then corrections where the prediction is wrong.

It draws like a person with a round brush: a smooth random walk through the interior of each
structure (and of the background next to it) on ``k`` slices per orientation, never whole
slices. Used by ``sparseseg demo``, the benchmarks and the tests; all randomness is seeded.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from napari_sparseseg.core.annotations.labels import label_dtype


def _disk(radius: int) -> np.ndarray:
    r = int(radius)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return (yy**2 + xx**2) <= r * r


def stroke_2d(region: np.ndarray, rng: np.random.Generator, length: int, radius: int = 1) -> np.ndarray:
    """A brush stroke (bool mask) inside ``region``: a smooth random walk of ``length`` pixels."""
    out = np.zeros(region.shape, dtype=bool)
    if not region.any():
        return out
    dist = ndi.distance_transform_edt(region)
    inner = dist > radius + 0.5
    if not inner.any():
        inner = dist >= max(dist.max() * 0.75, 1.0)
    depth = dist[inner]
    cand = np.argwhere(inner & (dist >= np.percentile(depth, 50)))
    pos = cand[rng.integers(len(cand))].astype(float)
    theta = rng.uniform(0, 2 * np.pi)
    path = [pos.copy()]
    shape = np.array(region.shape)
    for _ in range(max(0, int(length) - 1)):
        for attempt in range(12):
            nxt = pos + (np.cos(theta), np.sin(theta))
            ij = np.round(nxt).astype(int)
            if np.all(ij >= 0) and np.all(ij < shape) and inner[tuple(ij)]:
                break
            theta += (np.pi / 6) * (1 if attempt % 2 == 0 else -1) * (attempt + 1)
        else:
            break
        pos = nxt
        theta += rng.normal(0, 0.2)
        path.append(pos.copy())
    idx = np.round(np.array(path)).astype(int)
    out[idx[:, 0], idx[:, 1]] = True
    if radius > 0:
        out = ndi.binary_dilation(out, structure=_disk(radius))
    return out & region


def _slice_positions(ref: np.ndarray, axis: int, k: int, rng: np.random.Generator) -> list[int]:
    fg = np.any(ref > 0, axis=tuple(a for a in range(3) if a != axis))
    where = np.flatnonzero(fg)
    lo, hi = (where[0], where[-1]) if where.size else (0, ref.shape[axis] - 1)
    pos = [lo + (hi - lo) * (i + 1) / (k + 1) for i in range(k)]
    jitter = max(1.0, (hi - lo) / (4 * (k + 1)))
    return sorted({int(np.clip(round(p + rng.uniform(-jitter, jitter)), 0, ref.shape[axis] - 1)) for p in pos})


def _stroke_length(area: int) -> int:
    return int(np.clip(0.8 * np.sqrt(area), 4, 60))


def simulate_scribbles(ref: np.ndarray, k: int, seed: int = 0, axes=(0, 1, 2), radius: int = 1, min_area: int = 12,
                       bg_strokes: int = 2) -> np.ndarray:
    """Strokes on ``k`` slices per axis from a dense reference (class indices, 0 = background).

    On each slice every structure with at least ``min_area`` pixels gets one stroke through
    its interior; the background, being large and varied, gets one stroke in the band around
    the structures and ``bg_strokes`` more elsewhere, as annotators do. Returns scribbles in
    the DESIGN convention (0 = unlabelled, c + 1 = class c).
    """
    rng = np.random.default_rng(seed)
    ref = np.asarray(ref)
    out = np.zeros(ref.shape, dtype=label_dtype(int(ref.max(initial=0)) + 1))
    for axis in axes:
        for pos in _slice_positions(ref, axis, k, rng):
            sl = [slice(None)] * 3
            sl[axis] = pos
            sl = tuple(sl)
            ref2d, out2d = ref[sl], out[sl]
            fg = ref2d > 0
            for c in np.unique(ref2d):
                region = ref2d == c
                if c == 0:
                    near = region & ndi.binary_dilation(fg, iterations=6) if fg.any() else region
                    for reg in (near,) + (region,) * bg_strokes:
                        area = int(reg.sum())
                        if area >= min_area:
                            out2d[stroke_2d(reg, rng, _stroke_length(area), radius)] = 1
                    continue
                area = int(region.sum())
                if area >= min_area:
                    out2d[stroke_2d(region, rng, _stroke_length(area), radius)] = c + 1
            out[sl] = out2d
    return out


def simulate_corrections(pred: np.ndarray, ref: np.ndarray, k: int, seed: int = 0, axes=(0, 1, 2), radius: int = 1,
                         max_regions: int = 3, min_area: int = 6) -> np.ndarray:
    """Correction strokes where ``pred`` is wrong, on the ``k`` slices per axis with most errors.

    In each chosen slice the ``max_regions`` largest wrong regions get a stroke with the true
    class. Returns corrections in scribble convention (0 = none, c + 1 = class c).
    """
    pred, ref = np.asarray(pred), np.asarray(ref)
    wrong = pred != ref
    slices = []
    for axis in axes:
        per_slice = wrong.sum(axis=tuple(a for a in range(3) if a != axis))
        slices += [(axis, int(pos)) for pos in np.argsort(per_slice)[::-1][:k] if per_slice[pos] >= min_area]
    return correct_slices(pred, ref, slices, seed, radius, max_regions, min_area)[0]


def correct_slices(pred: np.ndarray, ref: np.ndarray, slices, seed: int = 0, radius: int = 1, max_regions: int = 3,
                   min_area: int = 6) -> tuple[np.ndarray, int]:
    """Correction strokes on the given slices ``[(axis, index), ...]``.

    The ``max_regions`` largest regions where ``pred`` is wrong on each slice get a stroke with
    the true class.

    Returns ``(corrections, strokes)``: scribble convention (0 = none, c + 1 = class c) and the
    number of strokes drawn (a slice with nothing wrong gets none).
    """
    rng = np.random.default_rng(seed)
    pred, ref = np.asarray(pred), np.asarray(ref)
    out = np.zeros(ref.shape, dtype=label_dtype(int(ref.max(initial=0)) + 1))
    strokes = 0
    for axis, pos in slices:
        sl = [slice(None)] * 3
        sl[axis] = int(pos)
        sl = tuple(sl)
        ref2d, wrong2d, out2d = ref[sl], pred[sl] != ref[sl], out[sl]
        regions = []
        for c in np.unique(ref2d[wrong2d]):
            lab, n = ndi.label(wrong2d & (ref2d == c))
            sizes = np.bincount(lab.ravel())[1:]
            regions += [(int(s), int(c), lab == i + 1) for i, s in enumerate(sizes) if s >= min_area]
        regions.sort(key=lambda r: -r[0])
        for area, c, region in regions[:max_regions]:
            out2d[stroke_2d(region, rng, _stroke_length(area), radius)] = c + 1
            strokes += 1
        out[sl] = out2d
    return out, strokes
