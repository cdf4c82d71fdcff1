"""Guide the annotator: which slices a stroke would most likely fix.

After a round the prediction's uncertainty (normalised entropy, from
:func:`~napari_sparseseg.core.inference.predict.predict`) says where the mask may be wrong: in a band
around the predicted structures. Three reasons shape the choice of slices:

* **Mean Dice, not voxels.** An error costs a structure's Dice in inverse proportion to its
  size, so each uncertain voxel counts as a share of its nearest predicted structure's volume:
  a small structure's unsure outline outweighs the same area on a large one.
* **A stroke informs its neighbourhood.** The next round learns from a stroke about the voxels
  within roughly ``reach_mm`` of it (3-D patches, smooth features), so a voxel counts less the
  nearer it lies to the strokes already drawn, and a slice is worth the uncertainty within
  reach of its plane, not only on it.
* **Coverage.** Slices are chosen greedily: each choice discounts the voxels within reach of
  its plane, like a stroke would, so the next choice goes where nothing covers yet; the first
  three take the three orientations, since a stroke in one plane says little about the
  structure's extent across it.

Uncertainty far from every predicted structure is not counted: there the mask shows
background whatever the network's doubt (the stroke-region filter removes unconnected blobs),
and offering those slices showed the annotator nothing to fix (``benchmarks/effort.py``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from napari_sparseseg.core.base.config import SuggestConfig
from napari_sparseseg.core.base.errors import ConfigError, InputError
from napari_sparseseg.core.base.grid import validate_spacing, working_factors

#: Above this many voxels, slices are ranked on blocks of voxels, the finest axes first (the
#: distance transforms of a 76-million-voxel CT took 30 s and gigabytes; a slice a voxel or two off
#: shows the same uncertain outline), and the block's middle slice is suggested.
SUGGEST_VOXELS = 8_000_000


def _every(labels, uncertainty, annotations, step):
    """The scan on blocks of ``step`` voxels.

    Each block's first label, its largest uncertainty (an unsure slice one voxel thin keeps its
    blocks), and whether it holds a stroke.
    """
    sl = tuple(slice(None, None, k) for k in step)
    shape = labels[sl].shape
    u = np.pad(np.asarray(uncertainty), [(0, m * k - n) for n, m, k in zip(labels.shape, shape, step, strict=True)])
    u = u.reshape(shape[0], step[0], shape[1], step[1], shape[2], step[2]).max(axis=(1, 3, 5))
    marks = None
    if annotations is not None:
        where = np.nonzero(annotations)
        marks = np.zeros(shape, np.uint8)
        marks[tuple(w // k for w, k in zip(where, step, strict=True))] = 1
    return labels[sl], u, marks


@dataclass(frozen=True)
class SliceSuggestion:
    """A slice to annotate next.

    Args:
        axis: the array axis the slice is normal to (0, 1 or 2).
        index: the slice's index along ``axis``.
        score: what a stroke there would fix: the uncertain share of the structures' volumes
            within reach of the slice, away from the strokes and the slices suggested before it
            (1.0 = a whole structure's worth).
        uncertain_mm2: the uncertain area on the slice itself (mm², near the structures), as
            the user will see it.
    """

    axis: int
    index: int
    score: float
    uncertain_mm2: float

    def to_dict(self) -> dict:
        """Plain dict (for JSON)."""
        return asdict(self)


def _check(labels, uncertainty, annotations):
    labels, u = np.asarray(labels), np.asarray(uncertainty, dtype=np.float32)
    if labels.ndim != 3 or u.shape != labels.shape:
        raise InputError(f"labels and uncertainty must be 3-D and of one shape, got {labels.shape} and {u.shape}.")
    if annotations is not None and np.shape(annotations) != labels.shape:
        raise InputError(f"the strokes have shape {np.shape(annotations)}, the prediction {labels.shape}.")
    return labels, u


def _box(mask: np.ndarray, margin) -> tuple[slice, ...]:
    """The bounding box of ``mask`` (not empty) grown by ``margin`` voxels per axis, clipped to the array."""
    from scipy import ndimage as ndi

    (box,) = ndi.find_objects(mask.view(np.uint8))
    return tuple(slice(max(0, b.start - int(m)), min(n, b.stop + int(m))) for b, m, n in zip(box, margin, mask.shape,
                                                                                             strict=True))


def uncertain_weight(labels: np.ndarray, uncertainty: np.ndarray, annotations: np.ndarray | None = None,
                     spacing=(1.0, 1.0, 1.0), cfg: SuggestConfig | None = None):
    """Per voxel, what fixing it is worth, and where it counts at all, inside the structures' box.

    Returns:
        ``(weight, near, box)``: ``box`` (a tuple of slices, or ``None`` when nothing is
        predicted) bounds the predicted structures and their band; ``weight`` (float32) holds,
        inside it, the uncertainty of each voxel within ``cfg.band_mm`` of a predicted structure,
        divided by the voxel count of the nearest structure and discounted by the distance to the
        strokes (``1 - exp(-d / reach_mm)``); ``near`` (bool) is the band. Outside ``box`` both
        are zero.
    """
    from scipy import ndimage as ndi

    cfg = cfg or SuggestConfig()
    spacing = np.asarray(validate_spacing(spacing), dtype=float)
    labels, u = _check(labels, uncertainty, annotations)
    fg = labels > 0
    if not fg.any():
        return np.zeros((0, 0, 0), np.float32), np.zeros((0, 0, 0), bool), None
    margin = np.ceil(cfg.band_mm / spacing) + 1
    box = _box(fg, margin)
    dist, idx = ndi.distance_transform_edt(~fg[box], sampling=spacing, return_indices=True)
    near = dist <= cfg.band_mm
    nearest = labels[box][tuple(idx)]
    del dist, idx
    counts = np.bincount(labels.ravel(), minlength=int(labels.max()) + 1).astype(np.float64)
    share = np.zeros(counts.shape, np.float32)
    share[1:] = 1.0 / np.maximum(counts[1:], 1.0)
    w = np.where(near, u[box] * share[nearest], np.float32(0))
    if annotations is not None and np.any(annotations):
        # Strokes up to 3 reaches outside the box still discount it (beyond, by less than 5 %).
        wide = _box(fg, margin + np.ceil(3 * cfg.reach_mm / spacing))
        d = ndi.distance_transform_edt(np.asarray(annotations)[wide] == 0, sampling=spacing)
        inner = tuple(slice(b.start - o.start, b.stop - o.start) for b, o in zip(box, wide, strict=True))
        w *= (1.0 - np.exp(-d[inner] / cfg.reach_mm)).astype(np.float32)
    return w.astype(np.float32, copy=False), near, box


def suggest_slices(labels: np.ndarray, uncertainty: np.ndarray, annotations: np.ndarray | None = None,
                   spacing=(1.0, 1.0, 1.0), cfg: SuggestConfig | None = None) -> list[SliceSuggestion]:
    """The ``cfg.count`` slices a stroke would most likely fix, in the order chosen.

    Each score is what the slice adds after the slices before it (so a later slice of a new
    orientation may score above an earlier one).

    Args:
        labels: the prediction (class indices), as the user sees it.
        uncertainty: its normalised entropy in [0, 1], same shape.
        annotations: the strokes so far (scribble convention, corrections included), or ``None``.
        spacing: voxel size in mm (array order).
        cfg: :class:`~napari_sparseseg.core.base.config.SuggestConfig`.

    Each pick takes the slice (any orientation; the first ``min(count, 3)`` one per orientation
    when ``cfg.orthogonal``) whose plane has the most :func:`uncertain_weight` within reach,
    each voxel counted ``exp(-distance to the plane / reach_mm)``; the voxels near the chosen
    plane are then discounted as if it had been painted. Only slices that show something
    uncertain near a structure are suggested (fewer than ``cfg.count`` may come back).

    Raises:
        InputError: shapes disagree or are not 3-D.
        ConfigError: ``cfg`` is not a SuggestConfig.
    """
    if cfg is not None and not isinstance(cfg, SuggestConfig):
        raise ConfigError(f"cfg must be a SuggestConfig, got {type(cfg).__name__}.")
    cfg = cfg or SuggestConfig()
    spacing = np.asarray(validate_spacing(spacing), dtype=float)
    labels, uncertainty = _check(labels, uncertainty, annotations)
    step = working_factors(labels.shape, spacing, SUGGEST_VOXELS)
    if step != (1, 1, 1):  # a large scan: ranked on blocks (the ranking needs no more; its distances took 30 s)
        picks = _every(labels, uncertainty, annotations, step)
        return [SliceSuggestion(c.axis, min(labels.shape[c.axis] - 1, c.index * step[c.axis] + step[c.axis] // 2),
                                c.score, c.uncertain_mm2)
                for c in suggest_slices(*picks, spacing * np.asarray(step), cfg)]
    u = np.asarray(uncertainty, dtype=np.float32)
    w, near, box = uncertain_weight(labels, u, annotations, spacing, cfg)
    if box is None:
        return []
    w = w.astype(np.float64)
    others = [tuple(a for a in range(3) if a != axis) for axis in range(3)]
    shown = [np.where(near, u[box], 0).sum(axis=others[axis], dtype=np.float64) * float(np.prod(np.delete(spacing, axis)))
             for axis in range(3)]
    positions = [np.arange(box[axis].start, box[axis].stop) * spacing[axis] for axis in range(3)]
    chosen: list[SliceSuggestion] = []
    for _ in range(cfg.count):
        taken = {c.axis for c in chosen}
        best = None
        for axis in range(3):
            if cfg.orthogonal and axis in taken and len(taken) < 3:
                continue
            pos = positions[axis]
            within = np.exp(-np.abs(pos[:, None] - pos[None, :]) / cfg.reach_mm) @ w.sum(axis=others[axis])
            within[shown[axis] <= 0] = 0  # only slices that show the user something unsure
            i = int(np.argmax(within))
            if within[i] > 0 and (best is None or within[i] > best[0]):
                best = (float(within[i]), axis, i)
        if best is None:
            break
        score, axis, i = best
        chosen.append(SliceSuggestion(axis, box[axis].start + i, score, float(shown[axis][i])))
        shape = [1, 1, 1]
        shape[axis] = -1
        w *= (1.0 - np.exp(-np.abs(positions[axis] - positions[axis][i]) / cfg.reach_mm)).reshape(shape)
    return chosen
