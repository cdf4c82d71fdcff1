"""Scribble and weight conventions (fixed: docs/design.md, "Label and weight conventions").

* Scribble volume: ``0`` = unlabelled, ``c + 1`` = class ``c`` (``1`` = background).
* Dense mask / prediction: class index, ``0`` = background, ``1..K`` = structures.
* Corrections (same convention as scribbles) overwrite ``y`` and carry ``w_correction``
  instead of ``w_scribble``; unlabelled voxels have weight 0.
* Class-balancing factors multiply those weights so every class present contributes the
  same total weight, whatever the stroke lengths.

Every label volume that enters the package (a file, the API, a session, the widget) is checked
by :func:`validate_labels`: 3-D, the expected shape, whole non-negative numbers and, for
scribbles and corrections, values within ``1..MAX_CLASSES``. Integer arrays are taken as they
are (no copy: the widget's layer data stays the session's array); whole-valued float arrays
(NIfTI often stores labels as float) are converted; NaN, fractional, negative or boolean
values are refused with a message that says which values and how many voxels.
"""

from __future__ import annotations

import numpy as np

from napari_sparseseg.core.base.config import WeightConfig
from napari_sparseseg.core.base.errors import ConfigError, InputError, ScribbleError, brief

UNLABELLED = 0
# Classes a session, a model or a scribble volume may have, background included: scribble
# values 1..MAX_CLASSES, mask values 0..MAX_CLASSES - 1. Far above what anyone scribbles
# interactively, yet low enough that a stray value (255 from a 0/255 mask, an atlas label
# id, 65535) is reported instead of building a network with that many outputs; masks and
# probabilities (one byte per class and voxel) stay within memory.
MAX_CLASSES = 64
LABEL_MAX = 65535  # the largest value of a label volume of any kind (uint16)
SCRIBBLE_KINDS = ("scribbles", "corrections")
SOURCE_NONE, SOURCE_SCRIBBLE, SOURCE_CORRECTION, SOURCE_HINT = 0, 1, 2, 3
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


def _value_summary(values: np.ndarray, counts: np.ndarray, limit: int = 3) -> str:
    """``"60000 (12 voxels), 255 (3 voxels)"``: the most frequent offending values first."""
    order = np.argsort(-counts, kind="stable")[:limit]
    parts = [f"{_number(values[i])} ({int(counts[i])} voxel{'s' if counts[i] != 1 else ''})" for i in order]
    more = len(values) - len(order)
    return ", ".join(parts) + (f" and {more} other value{'s' if more != 1 else ''}" if more > 0 else "")


def _number(v) -> str:
    v = float(v) if np.issubdtype(np.asarray(v).dtype, np.floating) else int(v)
    return f"{v:g}" if isinstance(v, float) else str(v)


def validate_labels(labels, what: str = "scribbles", *, shape=None, max_value: int | None = None, path=None) -> np.ndarray:
    """Check a label volume and return it as integers; the one check every entry point calls.

    Args:
        labels: the volume (array-like). Scribbles and corrections use 0 = unlabelled and
            c + 1 = class c; masks use the class index.
        what: the word used in messages; ``"scribbles"`` and ``"corrections"`` raise
            :class:`ScribbleError` and default ``max_value`` to :data:`MAX_CLASSES`, any other
            kind (``"mask"``, ``"reference"``, ``"labels"``) raises :class:`InputError` and
            defaults to :data:`LABEL_MAX`.
        shape: the shape the volume must have (the image's), if known.
        max_value: the largest value allowed.
        path: the file the volume came from, for the message.

    Returns:
        An integer array: ``labels`` itself when it already is an integer ``ndarray`` (no copy),
        else the whole-valued floats converted to the smallest unsigned label dtype.

    Raises:
        ScribbleError: (scribbles, corrections) not 3-D, another shape, boolean, not real
            numbers, NaN/inf, fractional, negative, or above ``max_value`` (each message names
            the values found and how many voxels hold them).
        InputError: the same for other kinds of label volume.
    """
    error = ScribbleError if what in SCRIBBLE_KINDS else InputError
    if max_value is None:
        max_value = MAX_CLASSES if what in SCRIBBLE_KINDS else LABEL_MAX
    convention = "0 = unlabelled, 1 = background, c + 1 = class c" if what in SCRIBBLE_KINDS else "0 = background, c = class c"
    arr = labels if isinstance(labels, np.ndarray) else np.asarray(labels)
    if arr.ndim != 3:
        raise error(f"{what} must be a 3-D volume, got {arr.ndim}-D with shape {tuple(arr.shape)}.", path=path)
    if shape is not None and tuple(arr.shape) != tuple(shape):
        raise error(f"{what} shape {tuple(arr.shape)} differs from the image shape {tuple(shape)}; "
                    "draw them on the image's own grid.", path=path)
    if arr.dtype == bool:
        raise error(f"{what} are a boolean (true/false) mask, but they need class values ({convention}); "
                    "convert them to integers, e.g. 1 for background and 2 for the structure.", path=path)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise error(f"{what} must hold whole numbers ({convention}), got values of type {arr.dtype}.", path=path)
    if arr.size == 0:
        raise error(f"{what} are empty (shape {tuple(arr.shape)}).", path=path)
    if np.issubdtype(arr.dtype, np.floating):
        finite = np.isfinite(arr)
        if not finite.all():
            bad = int(arr.size - np.count_nonzero(finite))
            raise error(f"{what} hold NaN or infinite values in {bad} voxel{'s' if bad != 1 else ''}; "
                        f"label values must be whole numbers ({convention}).", path=path)
        fractional = arr != np.floor(arr)
        if fractional.any():
            vals, counts = np.unique(arr[fractional], return_counts=True)
            raise error(f"{what} hold fractional values: {_value_summary(vals, counts)}; label values must be whole "
                        f"numbers ({convention}). Was an image given instead of {what}?", path=path)
    lo, hi = arr.min(), arr.max()
    if lo < 0:
        vals, counts = np.unique(arr[arr < 0], return_counts=True)
        raise error(f"{what} hold negative values: {_value_summary(vals, counts)}; use {convention}.", path=path)
    if hi > max_value:
        vals, counts = np.unique(arr[arr > max_value], return_counts=True)
        if what in SCRIBBLE_KINDS:
            limit = (f"at most {MAX_CLASSES} classes are supported (values 1..{MAX_CLASSES}; {convention})"
                     if max_value == MAX_CLASSES else f"values must lie in 0..{max_value}")
            hint = " (a mask saved as 0/255?)" if 255 in vals else ""
            raise error(f"{what} hold values above {max_value}: {_value_summary(vals, counts)}{hint}; {limit}. "
                        "Erase those voxels or renumber the classes.", path=path)
        raise error(f"{what} hold values above {max_value}: {_value_summary(vals, counts)}.", path=path)
    if np.issubdtype(arr.dtype, np.integer):
        return arr
    return arr.astype(label_dtype(hi))


def validate_class_names(names, max_classes: int = MAX_CLASSES) -> list[str]:
    """Check a class table (background first) and return it as a list of strings.

    Raises:
        ConfigError: not a list of non-empty strings, or fewer than 2 or more than
            ``max_classes`` names.
    """
    if isinstance(names, (str, bytes)) or not hasattr(names, "__iter__"):
        raise ConfigError(f"class names must be a list of names (background first), got {brief(names)}.")
    names = list(names)
    bad = [n for n in names if not isinstance(n, str) or not n.strip()]
    if bad:
        raise ConfigError(f"class names must be non-empty text, got {brief(bad[0])} in {brief(names)}.")
    if not 2 <= len(names) <= max_classes:
        raise ConfigError(f"a class table needs 2..{max_classes} classes (background first), got {len(names)}: {brief(names)}.")
    return names


def class_to_scribble(classes: np.ndarray) -> np.ndarray:
    """Dense class indices (0 = background) -> scribble values (c + 1)."""
    classes = np.asarray(classes)
    return (classes.astype(np.int32) + 1).astype(label_dtype(int(classes.max(initial=0)) + 1))


def merge_annotations(scribbles: np.ndarray, corrections: np.ndarray | None = None,
                      hints: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Combine scribbles, corrections and pseudo-labels into the target ``y`` and its source map.

    Returns:
        ``(y, source)``: ``y`` in scribble convention (0 = unlabelled, c + 1 = class c) where a
        correction overrides a scribble and both override a hint (a pseudo-label from a box or a
        click, :mod:`~napari_sparseseg.core.annotations.hints`); ``source`` is 0 (unlabelled), 1 (scribble),
        2 (correction) or 3 (hint) per voxel, uint8.
    """
    scribbles = np.asarray(scribbles)
    source = (scribbles > 0).astype(np.uint8)
    y = scribbles
    for extra, code, wins in ((corrections, SOURCE_CORRECTION, True), (hints, SOURCE_HINT, False)):
        if extra is None:
            continue
        extra = np.asarray(extra)
        if extra.shape != scribbles.shape:
            name = "corrections" if code == SOURCE_CORRECTION else "hints"
            raise ScribbleError(f"{name} shape {extra.shape} differs from scribbles {scribbles.shape}.")
        take = extra > 0 if wins else (extra > 0) & (source == SOURCE_NONE)
        dtype = y.dtype if y.dtype.itemsize >= extra.dtype.itemsize else extra.dtype
        y = np.where(take, extra, y).astype(dtype)
        source[take] = code
    return y, source


def combine_hints(first: np.ndarray | None, second: np.ndarray | None) -> np.ndarray | None:
    """Two pseudo-label volumes in one: ``first`` where it has a label, else ``second``."""
    if first is None or not np.any(first):
        return second
    if second is None:
        return first
    dtype = first.dtype if first.dtype.itemsize >= second.dtype.itemsize else second.dtype
    return np.where(first > 0, first, second).astype(dtype)


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
    table = np.zeros((4, k + 1), dtype=np.float32)
    table[SOURCE_SCRIBBLE, 1:] = cfg.w_scribble * factors
    table[SOURCE_CORRECTION, 1:] = cfg.w_correction * factors
    table[SOURCE_HINT, 1:] = cfg.w_hint * factors
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

    ``y`` is first checked by :func:`validate_labels` (3-D, whole numbers in 0..MAX_CLASSES).

    Raises:
        ScribbleError: bad values (see :func:`validate_labels`), no labelled voxel, fewer than
            two classes, or a value above ``num_classes``.
    """
    y = validate_labels(y, "scribbles", path=path)
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

    The one rule for an edited mask, in the widget's session and in a cohort's corrected scans
    alike: a voxel whose class the user changed becomes a stroke of its new class (class + 1).

    Args:
        before: the prediction as returned (class indices).
        after: the same layer after the user's edits.

    Raises:
        ScribbleError: ``"the edited mask (...) is not on the prediction's grid (...)"``.
    """
    before, after = np.asarray(before), np.asarray(after)
    if before.shape != after.shape:
        raise ScribbleError(f"the edited mask {after.shape} is not on the prediction's grid {before.shape}; edit the mask "
                            "that was predicted for this scan.")
    changed = before != after
    out = np.zeros(before.shape, dtype=label_dtype(int(after.max(initial=0)) + 1))
    out[changed] = after[changed].astype(out.dtype) + 1
    return out
