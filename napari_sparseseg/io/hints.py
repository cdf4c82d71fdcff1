"""Boxes and clicks in world millimetres (JSON) -> voxel hints on a scan's grid.

World coordinates (RAS, mm) survive any reorientation: a box drawn on the scan shown
radiologically, or written by a script from another viewer, lands on the same voxels.

``--boxes JSON``: a list (or ``{"boxes": [...]}``) of ``{"class": C, "corners_mm": [[x, y, z],
[x, y, z]]}``, two opposite corners of a 3-D box (equal along one axis for a rectangle on a
slice). ``--clicks JSON``: a list (or ``{"clicks": [...]}``) of ``{"class": C, "point_mm":
[x, y, z]}``. ``C`` is a class index in the mask convention (0 = background, only for clicks;
1 = the first structure) or a class name.

The files are read through :mod:`napari_sparseseg.io.schema` into :class:`BoxRecord` and
:class:`ClickRecord`: at most :data:`~napari_sparseseg.core.base.config.MAX_BOXES` boxes and
:data:`~napari_sparseseg.core.base.config.MAX_CLICKS` clicks (counted before any is looked at),
coordinates finite and within :data:`~napari_sparseseg.core.base.config.MAX_WORLD_MM`; anything
else is one :class:`~napari_sparseseg.core.base.errors.InputError` naming the file and the field.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_sparseseg.core.annotations.hints import Box, Click
from napari_sparseseg.core.annotations.labels import MAX_CLASSES
from napari_sparseseg.core.base.config import MAX_BOXES, MAX_CLICKS, MAX_WORLD_MM
from napari_sparseseg.core.base.errors import InputError
from napari_sparseseg.io.geometry import Geometry
from napari_sparseseg.io.schema import AnyOf, ListOf, Number, Record, Text, parse, read_json, spec

__all__ = ["BoxRecord", "ClickRecord", "read_box_records", "read_boxes", "read_click_records", "read_clicks",
           "world_to_index"]

_FORMAT = "the format is in docs/cli.md (--boxes, --clicks)"
_MM = Number(ge=-MAX_WORLD_MM, le=MAX_WORLD_MM, what=f"a finite number of mm (at most {MAX_WORLD_MM:g} in size)")
_POINT = ListOf(_MM, exact=3, what="a point [x, y, z] of three numbers (world mm, RAS)")
_NAME = Text(nonempty=True, max_chars=256)


def _label(low: int) -> AnyOf:
    return AnyOf((Number(ge=low, le=MAX_CLASSES - 1, whole=True), _NAME),
                 what=f"a class number {low}..{MAX_CLASSES - 1} ({'0 = background, ' if low == 0 else ''}1 = the first "
                      "structure) or a class name")


@dataclass(frozen=True)
class BoxRecord:
    """One box of a ``--boxes`` file: its class (a number 1.. or a name) and two opposite corners in world mm."""

    label: int | str = spec(_label(1), key="class")
    corners_mm: list = spec(ListOf(_POINT, exact=2, what="two opposite corners [[x, y, z], [x, y, z]] (world mm)"))


@dataclass(frozen=True)
class ClickRecord:
    """One click of a ``--clicks`` file: its class (0 = background, 1.., or a name) and a point in world mm."""

    label: int | str = spec(_label(0), key="class")
    point_mm: list = spec(_POINT)


@dataclass(frozen=True)
class _Boxes:
    boxes: list = spec(ListOf(Record(BoxRecord, "a box {\"class\": C, \"corners_mm\": [[x, y, z], [x, y, z]]}"),
                              max_items=MAX_BOXES, what=f"a list of at most {MAX_BOXES} boxes"))


@dataclass(frozen=True)
class _Clicks:
    clicks: list = spec(ListOf(Record(ClickRecord, "a click {\"class\": C, \"point_mm\": [x, y, z]}"),
                               max_items=MAX_CLICKS, what=f"a list of at most {MAX_CLICKS} clicks"))


def _records(path, kind: str) -> list:
    """The records of a boxes or clicks file: a list, or ``{kind: [...]}``."""
    remedy = f"the format: docs/cli.md, --{kind}"
    record, most = (_Boxes, MAX_BOXES) if kind == "boxes" else (_Clicks, MAX_CLICKS)
    items = record.__dataclass_fields__[kind].metadata["schema"]
    doc = read_json(path, f"{kind} file", remedy=remedy)
    if isinstance(doc, list):
        return parse(items, doc, f"{kind} file", path=path, remedy=remedy, root=kind)
    if isinstance(doc, dict):
        return getattr(parse(Record(record), doc, f"{kind} file", path=path, remedy=remedy), kind)
    return parse(AnyOf((), what=f"a list of at most {most} {kind} (or {{\"{kind}\": [...]}})"), doc, f"{kind} file",
                 path=path, remedy=remedy)


def read_box_records(path) -> list[BoxRecord]:
    """The boxes of a ``--boxes`` JSON file as records, checked (world mm; classes not yet resolved)."""
    return _records(path, "boxes")


def read_click_records(path) -> list[ClickRecord]:
    """The clicks of a ``--clicks`` JSON file as records, checked (world mm; classes not yet resolved)."""
    return _records(path, "clicks")


def world_to_index(geometry: Geometry, point_mm) -> np.ndarray:
    """Array indices (k, j, i), as floats, of a world RAS point in mm."""
    try:
        p = np.asarray(point_mm, dtype=float)
    except (TypeError, ValueError, OverflowError):
        p = np.full(0, np.nan)
    if p.shape != (3,) or not np.all(np.isfinite(p)):
        raise InputError(f"a world point needs three finite numbers (mm), got {point_mm!r:.80}.")
    a = geometry.affine
    return np.linalg.solve(a[:3, :3], p - a[:3, 3])


def _resolver(class_names, path, kind: str):
    """``label, i -> class number``: a number as it is, a name looked up once (a dict, not a scan of the list)."""
    names: dict = {}
    for i, n in enumerate(class_names or []):
        names.setdefault(n, i)
    known = ", ".join(map(str, class_names or [])) or "none given (use --class-names, or numbers)"

    def resolve(label, i: int) -> int:
        if isinstance(label, int):
            return label
        if label not in names:
            raise InputError(f"in the {kind} file, field {kind}[{i}].class: unknown class name {label!r:.60}; the "
                             f"classes are: {known}.", path=path)
        if kind == "boxes" and names[label] == 0:
            raise InputError(f"in the boxes file, field boxes[{i}].class: {label!r:.60} is the background; a box is "
                             "drawn around a structure (class 1 or more).", path=path)
        return names[label]

    return resolve


def read_boxes(path, geometry: Geometry, class_names=None) -> list[Box]:
    """The boxes of a ``--boxes`` JSON file, on ``geometry``'s grid (voxel indices).

    Raises:
        InputError: the file is missing, too large, not JSON, or a box does not fit the format
            (names the field, e.g. ``boxes[3].corners_mm[1]``); an unknown class name.
    """
    resolve = _resolver(class_names, path, "boxes")
    return [Box(resolve(r.label, i), *(tuple(world_to_index(geometry, c)) for c in r.corners_mm))
            for i, r in enumerate(read_box_records(path))]


def read_clicks(path, geometry: Geometry, class_names=None) -> list[Click]:
    """The clicks of a ``--clicks`` JSON file, on ``geometry``'s grid (voxel indices).

    Raises:
        InputError: as :func:`read_boxes`.
    """
    resolve = _resolver(class_names, path, "clicks")
    return [Click(resolve(r.label, i), tuple(world_to_index(geometry, r.point_mm)))
            for i, r in enumerate(read_click_records(path))]
