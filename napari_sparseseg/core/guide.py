"""Guide the annotator: which slices a stroke would most likely fix.

After a round the prediction's uncertainty (normalised entropy, from
:func:`~napari_sparseseg.core.predict.predict`) says where the model is unsure. A stroke fixes
most where many unsure voxels share one slice, near the predicted structures (their outlines
and look-alikes) or anywhere the model is very unsure (a structure it may have missed), and far
from the strokes already drawn (near them the next round learns anyway). Slices of all three
orientations compete on one scale: the uncertain area in mm².
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from napari_sparseseg.core.config import SuggestConfig
from napari_sparseseg.core.errors import ConfigError, InputError
from napari_sparseseg.core.grid import validate_spacing


@dataclass(frozen=True)
class SliceSuggestion:
    """A slice to annotate next.

    Args:
        axis: the array axis the slice is normal to (0, 1 or 2).
        index: the slice's index along ``axis``.
        score: uncertain area in mm², each voxel discounted by its distance to the strokes.
        uncertain_mm2: the same without the discount.
    """

    axis: int
    index: int
    score: float
    uncertain_mm2: float

    def to_dict(self) -> dict:
        """Plain dict (for JSON)."""
        return asdict(self)


def slice_scores(labels: np.ndarray, uncertainty: np.ndarray, annotations: np.ndarray | None = None, spacing=(1.0, 1.0, 1.0),
                 cfg: SuggestConfig | None = None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per axis, the discounted and raw uncertain area (mm²) of every slice.

    Returns:
        ``(scores, raw)``: two lists of three 1-D arrays (one value per slice of each axis).
    """
    from scipy import ndimage as ndi

    cfg = cfg or SuggestConfig()
    spacing = np.asarray(validate_spacing(spacing), dtype=float)
    labels, u = np.asarray(labels), np.asarray(uncertainty, dtype=np.float32)
    if labels.ndim != 3 or u.shape != labels.shape:
        raise InputError(f"labels and uncertainty must be 3-D and of one shape, got {labels.shape} and {u.shape}.")
    if annotations is not None and np.shape(annotations) != labels.shape:
        raise InputError(f"the strokes have shape {np.shape(annotations)}, the prediction {labels.shape}.")
    reach = np.ceil(cfg.band_mm / spacing).astype(int)
    near = ndi.maximum_filter(labels > 0, size=tuple(2 * reach + 1)) if cfg.band_mm > 0 else labels > 0
    w = np.where(near | (u > cfg.unsure), u, np.float32(0))
    raw_w = w
    if annotations is not None and np.any(annotations):
        d = ndi.distance_transform_edt(np.asarray(annotations) == 0, sampling=spacing)
        w = w * (1.0 - np.exp(-d / cfg.stroke_reach_mm)).astype(np.float32)
    scores, raw = [], []
    for axis in range(3):
        others = tuple(a for a in range(3) if a != axis)
        area = float(np.prod(spacing[list(others)]))
        scores.append(w.sum(axis=others, dtype=np.float64) * area)
        raw.append(raw_w.sum(axis=others, dtype=np.float64) * area)
    return scores, raw


def suggest_slices(labels: np.ndarray, uncertainty: np.ndarray, annotations: np.ndarray | None = None,
                   spacing=(1.0, 1.0, 1.0), cfg: SuggestConfig | None = None) -> list[SliceSuggestion]:
    """The ``cfg.count`` slices a stroke would most likely fix, best first.

    Args:
        labels: the prediction (class indices).
        uncertainty: its normalised entropy in [0, 1], same shape.
        annotations: the strokes so far (scribble convention, corrections included), or ``None``.
        spacing: voxel size in mm (array order).
        cfg: :class:`~napari_sparseseg.core.config.SuggestConfig`.

    Slices are chosen greedily by score; a slice within ``cfg.min_gap_mm`` of one already chosen
    in the same orientation is skipped, so the suggestions spread out. Slices with nothing
    uncertain are never suggested (fewer than ``cfg.count`` may come back).

    Raises:
        InputError: shapes disagree or are not 3-D.
        ConfigError: ``cfg`` is not a SuggestConfig.
    """
    if cfg is not None and not isinstance(cfg, SuggestConfig):
        raise ConfigError(f"cfg must be a SuggestConfig, got {type(cfg).__name__}.")
    cfg = cfg or SuggestConfig()
    spacing = validate_spacing(spacing)
    scores, raw = slice_scores(labels, uncertainty, annotations, spacing, cfg)
    ranked = sorted(((float(s[i]), axis, int(i)) for axis, s in enumerate(scores) for i in np.flatnonzero(s > 0)),
                    reverse=True)
    chosen: list[SliceSuggestion] = []
    for score, axis, index in ranked:
        if len(chosen) == cfg.count:
            break
        if any(c.axis == axis and abs(c.index - index) * spacing[axis] < cfg.min_gap_mm for c in chosen):
            continue
        chosen.append(SliceSuggestion(axis, index, score, float(raw[axis][index])))
    return chosen
