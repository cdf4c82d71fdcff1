"""Scribble and weight conventions (fixed by DESIGN.md).

* Scribble volume: ``0`` = unlabelled, ``c + 1`` = class ``c`` (``1`` = background).
* Dense mask / prediction: class index, ``0`` = background, ``1..K`` = structures.
* Corrections (same convention as scribbles) overwrite ``y`` and carry ``w_correction``
  instead of ``w_scribble``; unlabelled voxels have weight 0.
* Class-balancing factors multiply those weights so every class present contributes the
  same total weight, whatever the stroke lengths.
"""

from __future__ import annotations

import numpy as np

from napari_sparseseg.core.config import WeightConfig
from napari_sparseseg.core.errors import ScribbleError

UNLABELLED = 0
SOURCE_NONE, SOURCE_SCRIBBLE, SOURCE_CORRECTION = 0, 1, 2
DEFAULT_WEIGHTS = WeightConfig()


def label_dtype(max_value) -> np.dtype:
    """The smallest unsigned dtype of a label volume whose largest value is ``max_value``.

    The one place that chooses: ``uint8`` up to 255, ``uint16`` up to 65535.

    Raises:
        ValueError: ``max_value`` is negative or above 65535.
    """
    top = int(max_value)
    if top < 0 or top > 65535:
        raise ValueError(f"label values must lie in 0..65535, got {top}.")
    return np.dtype(np.uint8) if top <= 255 else np.dtype(np.uint16)


def class_to_scribble(classes: np.ndarray) -> np.ndarray:
    """Dense class indices (0 = background) -> scribble values (c + 1)."""
    classes = np.asarray(classes)
    return (classes.astype(np.int32) + 1).astype(label_dtype(int(classes.max(initial=0)) + 1))


def merge_annotations(scribbles: np.ndarray, corrections: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Combine scribbles and corrections into the target ``y`` and its source map.

    Returns:
        ``(y, source)``: ``y`` in scribble convention (0 = unlabelled, c + 1 = class c) where a
        correction overrides a scribble; ``source`` is 0 (unlabelled), 1 (scribble) or
        2 (correction) per voxel, uint8.
    """
    scribbles = np.asarray(scribbles)
    source = (scribbles > 0).astype(np.uint8)
    if corrections is None:
        return scribbles, source
    corrections = np.asarray(corrections)
    if corrections.shape != scribbles.shape:
        raise ScribbleError(f"corrections shape {corrections.shape} differs from scribbles {scribbles.shape}.")
    corrected = corrections > 0
    y = np.where(corrected, corrections, scribbles).astype(scribbles.dtype if scribbles.dtype.itemsize >= corrections.dtype.itemsize else corrections.dtype)
    source[corrected] = SOURCE_CORRECTION
    return y, source


def class_counts(y: np.ndarray, num_classes: int) -> np.ndarray:
    """Number of labelled voxels per class (``y`` in scribble convention)."""
    counts = np.bincount(np.asarray(y).ravel(), minlength=num_classes + 1)
    return counts[1 : num_classes + 1].astype(np.int64)


def balance_factors(counts: np.ndarray, cfg: WeightConfig = DEFAULT_WEIGHTS) -> np.ndarray:
    """Per-class multipliers that even out the classes' total weights.

    ``factor_c = (N / (K_present * N_c)) ** balance_power``, capped at ``cfg.max_balance``;
    with power 1 every present class gets the same total weight. Classes without labelled
    voxels get 0. All ones when balancing is off.
    """
    counts = np.asarray(counts, dtype=np.float64)
    present = counts > 0
    if not cfg.class_balance:
        return present.astype(np.float32)
    factors = np.zeros_like(counts)
    factors[present] = (counts[present].sum() / (present.sum() * counts[present])) ** cfg.balance_power
    return np.minimum(factors, cfg.max_balance).astype(np.float32)


def weight_lookup(factors: np.ndarray, cfg: WeightConfig = DEFAULT_WEIGHTS) -> np.ndarray:
    """Table ``w[source, y]`` giving the loss weight of a voxel from its source and label."""
    k = len(factors)
    table = np.zeros((3, k + 1), dtype=np.float32)
    table[SOURCE_SCRIBBLE, 1:] = cfg.w_scribble * factors
    table[SOURCE_CORRECTION, 1:] = cfg.w_correction * factors
    return table


def voxel_weights(y: np.ndarray, source: np.ndarray, num_classes: int, cfg: WeightConfig = DEFAULT_WEIGHTS) -> np.ndarray:
    """Dense weight map ``w(y)``: 0 where unlabelled.

    For tests and small volumes; training computes the same thing per patch from
    :func:`weight_lookup`.
    """
    table = weight_lookup(balance_factors(class_counts(y, num_classes), cfg), cfg)
    return table[np.asarray(source, np.intp), np.asarray(y, np.intp)]


def validate_scribbles(y: np.ndarray, num_classes: int | None = None, path=None) -> int:
    """Check scribbles can train a model; return the number of classes K + 1 (background included).

    Raises:
        ScribbleError: no labelled voxel, fewer than two classes, or a value above ``num_classes``.
    """
    values = np.unique(y)
    values = values[values > 0]
    if values.size == 0:
        raise ScribbleError(
            "no scribbles: every voxel is 0 (unlabelled). Paint background (value 1) and at least one structure (value 2).",
            path=path,
        )
    if values.size < 2:
        cls = int(values[0]) - 1
        raise ScribbleError(
            f"only one class is scribbled (value {int(values[0])} = class {cls}); "
            "paint at least two classes, e.g. background (1) and a structure (2).",
            path=path,
        )
    top = int(values.max())
    if num_classes is not None and top > num_classes:
        raise ScribbleError(
            f"scribble value {top} means class {top - 1}, but the model has only {num_classes} classes "
            f"(values 1..{num_classes}).",
            path=path,
        )
    return max(top, num_classes or 0)


def corrections_from_edit(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Corrections from a repainted prediction: voxels whose class changed, in scribble convention.

    Args:
        before: the prediction as returned (class indices).
        after: the same layer after the user's edits.
    """
    before, after = np.asarray(before), np.asarray(after)
    if before.shape != after.shape:
        raise ScribbleError(f"edited prediction shape {after.shape} differs from the original {before.shape}.")
    changed = before != after
    out = np.zeros(before.shape, dtype=label_dtype(int(after.max(initial=0)) + 1))
    out[changed] = after[changed].astype(out.dtype) + 1
    return out
