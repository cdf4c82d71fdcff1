"""Weak hints, from boxes and clicks to pixels: low-weight pseudo-labels for training.

A box says where a structure is without drawing it: outside the box it is not (a band just
outside, where no other box lies, becomes background; everything outside the boxes once every
structure has a 3-D box), a thin shell inside is uncertain (left unlabelled), and the core is
likely the structure (an ellipsoid inscribed in the box, shrunk by ``HintConfig.box_core``)
until the user's strokes contradict or replace it. A rectangle drawn on one slice is a box one
slice thick whose band stays in its plane. A click is a
small blob grown from the clicked voxel through similar intensity, with the click's class
(background for an "outside" click). The result is a label volume in the scribble convention;
:class:`~napari_sparseseg.core.training.train.Trainer` weighs it ``WeightConfig.w_hint`` (well below a
stroke's) wherever no stroke or correction lies, so strokes always win.

Coordinates here are voxel indices in array order; :mod:`napari_sparseseg.io.hints` reads boxes
and clicks given in world millimetres.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_sparseseg.core.annotations.labels import MAX_CLASSES, label_dtype
from napari_sparseseg.core.base.config import MAX_BOXES, MAX_CLICKS, HintConfig
from napari_sparseseg.core.base.errors import ConfigError, InputError, brief
from napari_sparseseg.core.base.grid import validate_spacing


@dataclass(frozen=True)
class Box:
    """A box of class ``label`` (1..K; mask convention) between two opposite corners.

    The corners are voxel indices in array order, both inside the box; equal along an axis for
    a rectangle on one slice.
    """

    label: int
    corner_a: tuple
    corner_b: tuple


@dataclass(frozen=True)
class Click:
    """A click of class ``label`` (0 = background, "outside"; 1..K a structure) at voxel ``point``."""

    label: int
    point: tuple


def checked_hint_shapes(shapes) -> dict:
    """The boxes and clicks a user drew, as stored with a session, checked and normalised.

    ``shapes`` is ``None`` or ``{"boxes": [{"class": c, "vertices": [[i, j, k], ...]}, ...],
    "clicks": [{"class": c, "point": [i, j, k]}, ...]}`` in voxel indices on the scan's grid
    (a box's vertices are the rectangle's corners as drawn; the box spans them). Returns the
    same structure with floats, both keys present.

    Raises:
        InputError: another structure, more than ``MAX_BOXES`` boxes or ``MAX_CLICKS`` clicks
            (``core/base/config.py``), a class that is not a whole number in range, or a
            coordinate that is not three finite numbers.
    """
    if shapes is None:
        return {"boxes": [], "clicks": []}
    if not isinstance(shapes, dict) or set(shapes) - {"boxes", "clicks"}:
        raise InputError(f"the hints must be a mapping with 'boxes' and 'clicks', got {brief(shapes)}.")
    out = {"boxes": [], "clicks": []}
    for kind, key in (("boxes", "vertices"), ("clicks", "point")):
        items = shapes.get(kind, [])
        if not isinstance(items, list):
            raise InputError(f"the hints' {kind} must be a list, got {type(items).__name__}.")
        most = MAX_BOXES if kind == "boxes" else MAX_CLICKS
        if len(items) > most:
            raise InputError(f"the hints hold {len(items)} {kind}, more than the {most} allowed.")
        for item in items:
            if not isinstance(item, dict) or "class" not in item or key not in item:
                raise InputError(f"each of the hints' {kind} needs 'class' and '{key}', got {brief(item)}.")
            label = _check_label(item["class"], kind[:-1] if kind == "clicks" else "box", kind == "clicks")
            try:
                xyz = np.asarray(item[key], dtype=float).reshape((-1, 3) if kind == "boxes" else (3,))
            except (TypeError, ValueError, OverflowError):
                raise InputError(f"a {kind[:-1] if kind == 'clicks' else 'box'} needs three numbers per point, got "
                                 f"{brief(item[key])}.") from None
            if xyz.size == 0 or not np.all(np.isfinite(xyz)):
                raise InputError(f"the hints' {kind} hold a point that is not three finite numbers: {brief(item[key])}.")
            out[kind].append({"class": label, key: xyz.tolist()})
    return out


def hints_from_shapes(shapes) -> tuple[list[Box], list[Click]]:
    """``(boxes, clicks)`` from the stored structure of :func:`checked_hint_shapes`."""
    shapes = checked_hint_shapes(shapes)
    boxes = []
    for b in shapes["boxes"]:
        v = np.asarray(b["vertices"], dtype=float)
        boxes.append(Box(b["class"], tuple(v.min(0)), tuple(v.max(0))))
    return boxes, [Click(c["class"], tuple(c["point"])) for c in shapes["clicks"]]


def _check_label(label, what: str, allow_background: bool) -> int:
    if isinstance(label, bool) or not isinstance(label, (int, np.integer)):
        raise InputError(f"the class of a {what} must be a whole number, got {brief(label)}.")
    lo = 0 if allow_background else 1
    if not lo <= int(label) <= MAX_CLASSES - 1:
        raise InputError(f"the class of a {what} must be {lo}..{MAX_CLASSES - 1} "
                         f"({'0 = background, ' if allow_background else ''}1 = the first structure), got {label}.")
    return int(label)


def _inside(index, shape, what: str) -> np.ndarray:
    p = np.asarray(index, dtype=float)
    if p.shape != (3,) or not np.all(np.isfinite(p)):
        raise InputError(f"a {what} needs three finite coordinates, got {brief(index)}.")
    r = np.round(p).astype(int)
    if np.any(r < 0) or np.any(r >= np.asarray(shape)):
        raise InputError(f"a {what} at voxel {tuple(int(v) for v in r)} lies outside the scan (shape {tuple(shape)}).")
    return r


def hint_labels(image: np.ndarray, boxes=(), clicks=(), spacing=(1.0, 1.0, 1.0),
                cfg: HintConfig | None = None, painted: np.ndarray | None = None,
                num_classes: int | None = None) -> np.ndarray:
    """Pseudo-labels (scribble convention: 0 = none, 1 = background, c + 1 = class c) from hints.

    Where hints overlap, a box's core and a click's blob win over the background bands, and a
    later hint over an earlier one of the same kind. A rectangle drawn on one slice says nothing
    about the slices beside it: its background band lies in its own plane.

    ``num_classes`` (background included), when given and every structure 1..K-1 has a 3-D box:
    everything outside the 3-D boxes is background (no structure lies outside its box), not only
    the band. Without it, or with a structure unboxed, only the band is (another structure may
    lie anywhere).

    ``painted`` (the user's strokes and corrections, scribble convention, or ``None``) retires
    a box's core where the strokes contradict or replace it. The ellipsoid is a guess at the
    structure's shape (a liver fills a quarter of its box) and would keep pulling the model where
    the strokes do not:

    * core voxels within ``cfg.box_retire_mm`` of a stroke of another class inside the box are
      dropped (the guess is wrong there);
    * once strokes of the box's own class inside it lie on slices of two orientations or more
      (they outline the structure in 3-D), the whole core is dropped; the background band stays.
      Dropping it at the first stroke of its class left too little of that class to learn from
      (``benchmarks/effort.py --start boxes``: mean Dice fell from 0.59 to 0.20 after the first
      corrections on the sample CT).

    Raises:
        InputError: a corner or click outside the scan, a class out of range.
        ConfigError: ``cfg`` is not a HintConfig.
    """
    if cfg is not None and not isinstance(cfg, HintConfig):
        raise ConfigError(f"cfg must be a HintConfig, got {type(cfg).__name__}.")
    cfg = cfg or HintConfig()
    image = np.asarray(image)
    shape = image.shape
    spacing = np.asarray(validate_spacing(spacing), dtype=float)
    boxes, clicks = list(boxes), list(clicks)
    top = max([_check_label(b.label, "box", False) for b in boxes] + [_check_label(c.label, "click", True) for c in clicks]
              + [0])
    out = np.zeros(shape, dtype=label_dtype(top + 1))
    if not boxes and not clicks:
        return out
    inside_any = np.zeros(shape, dtype=bool)
    cores = []
    for b in boxes:
        a, c = _inside(b.corner_a, shape, "box corner"), _inside(b.corner_b, shape, "box corner")
        lo, hi = np.minimum(a, c), np.maximum(a, c) + 1
        box = tuple(slice(int(x), int(y)) for x, y in zip(lo, hi, strict=True))
        inside_any[box] = True
        cores.append((b.label, box, lo, hi))
    solid = [(label, box) for label, box, lo, hi in cores if np.all(hi - lo > 1)]
    if num_classes is not None and num_classes > 1 and set(range(1, num_classes)) <= {label for label, _ in solid}:
        outside = np.ones(shape, dtype=bool)
        for _, box in solid:
            outside[box] = False
        out[outside] = 1  # every structure is boxed in 3-D: none lies outside the boxes
    if cfg.box_band_mm > 0 and boxes:  # just outside the boxes, where no other box lies: background
        from scipy import ndimage as ndi

        for _, _, lo, hi in cores:
            # A rectangle on one slice: its band stays in its plane (the structure goes on beside it).
            reach = np.where(hi - lo > 1, np.ceil(cfg.box_band_mm / spacing), 0).astype(int)
            outer = tuple(slice(int(max(0, x - r)), int(min(n, y + r))) for x, y, r, n in zip(lo, hi, reach, shape, strict=True))
            region = out[outer]
            band = ~inside_any[outer]
            if band.any():
                near = ndi.distance_transform_edt(band, sampling=spacing) <= cfg.box_band_mm
                region[band & near] = 1
    if painted is not None and np.shape(painted) != shape:
        raise InputError(f"the strokes have shape {np.shape(painted)}, the scan {shape}.")
    for label, box, lo, hi in cores:  # the likely core: an inscribed ellipsoid, shrunk
        inside = None if painted is None else np.asarray(painted[box])
        if inside is not None and _orientations(inside == label + 1) >= 2:
            continue  # the user's strokes of this class outline it better than the ellipsoid
        size = hi - lo
        grids = np.ogrid[tuple(slice(0, int(n)) for n in size)]
        r2 = np.zeros(tuple(int(n) for n in size), dtype=float)
        for g, n in zip(grids, size, strict=True):
            if n > 1:  # a one-slice rectangle is not shrunk across its thickness
                half = n / 2.0
                r2 = r2 + ((g + 0.5 - half) / (half * cfg.box_core)) ** 2
        core = r2 <= 1.0
        other = None if inside is None else (inside > 0) & (inside != label + 1)
        if other is not None and other.any():  # another class painted in the core: the guess is wrong near it
            from scipy import ndimage as ndi

            core &= ndi.distance_transform_edt(~other, sampling=spacing) > cfg.box_retire_mm
        out[box][core] = label + 1
    for c in clicks:
        p = _inside(c.point, shape, "click")
        blob = _blob(image, p, spacing, cfg)
        out[blob[0]][blob[1]] = c.label + 1
    return out


def _orientations(strokes: np.ndarray) -> int:
    """In how many orientations the strokes lie: each connected piece counts along its thinnest axis."""
    from scipy import ndimage as ndi

    if not strokes.any():
        return 0
    lab, _ = ndi.label(strokes)
    return len({int(np.argmin([s.stop - s.start for s in piece])) for piece in ndi.find_objects(lab)})


def _blob(image: np.ndarray, p: np.ndarray, spacing: np.ndarray, cfg: HintConfig):
    """``(window, mask)``: voxels within the click's reach, connected to it through similar intensity."""
    from scipy import ndimage as ndi

    reach = np.ceil(cfg.click_radius_mm / spacing).astype(int)
    window = tuple(slice(int(max(0, x - r)), int(min(n, x + r + 1))) for x, r, n in zip(p, reach, image.shape, strict=True))
    local = image[window].astype(np.float32)
    centre = tuple(int(x - w.start) for x, w in zip(p, window, strict=True))
    near = tuple(slice(max(0, c - 1), c + 2) for c in centre)
    ref = float(np.median(local[near]))
    spread = float(image.max()) - float(image.min())
    tol = max(cfg.click_tolerance * float(np.std(local[near])), 0.02 * spread, 1e-6)
    grids = np.ogrid[tuple(slice(0, s) for s in local.shape)]
    dist2 = sum(((g - c) * s) ** 2 for g, c, s in zip(grids, centre, spacing, strict=True))
    mask = (np.abs(local - ref) <= tol) & (dist2 <= cfg.click_radius_mm**2)
    mask[centre] = True
    lab, _ = ndi.label(mask)
    return window, lab == lab[centre]
