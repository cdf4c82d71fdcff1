"""Boxes and clicks in world millimetres (JSON) -> voxel hints on a scan's grid.

World coordinates (RAS, mm) survive any reorientation: a box drawn on the scan shown
radiologically, or written by a script from another viewer, lands on the same voxels.

``--boxes JSON``: a list (or ``{"boxes": [...]}``) of ``{"class": C, "corners_mm": [[x, y, z],
[x, y, z]]}``, two opposite corners of a 3-D box (equal along one axis for a rectangle on a
slice). ``--clicks JSON``: a list (or ``{"clicks": [...]}``) of ``{"class": C, "point_mm":
[x, y, z]}``. ``C`` is a class index in the mask convention (0 = background, only for clicks;
1 = the first structure) or a class name.
"""

from __future__ import annotations

import json
import os

import numpy as np

from napari_sparseseg.core.annotations.hints import Box, Click
from napari_sparseseg.core.base.errors import InputError
from napari_sparseseg.io.geometry import Geometry


def world_to_index(geometry: Geometry, point_mm) -> np.ndarray:
    """Array indices (k, j, i), as floats, of a world RAS point in mm."""
    p = np.asarray(point_mm, dtype=float)
    if p.shape != (3,) or not np.all(np.isfinite(p)):
        raise InputError(f"a world point needs three finite numbers (mm), got {point_mm!r}.")
    a = geometry.affine
    return np.linalg.solve(a[:3, :3], p - a[:3, 3])


def _items(path, key: str) -> list:
    try:
        with open(os.fspath(path), encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError:
        raise InputError(f"no {key} file at {path}; check the path.", path=path) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read the {key} file {path} as JSON ({exc}).", path=path) from None
    items = doc.get(key) if isinstance(doc, dict) else doc
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise InputError(f"the {key} file {path} must hold a list of objects (or {{\"{key}\": [...]}}).", path=path)
    return items


def _label(item: dict, class_names, path, key: str) -> int:
    if "class" not in item:
        raise InputError(f"every entry of the {key} file {path} needs a \"class\" (a number, or a name).", path=path)
    c = item["class"]
    if isinstance(c, str):
        names = list(class_names or [])
        if c not in names:
            known = ", ".join(names) if names else "none given (use --class-names, or numbers)"
            raise InputError(f"unknown class name {c!r} in {path}; the classes are: {known}.", path=path)
        return names.index(c)
    return c


def _point(item: dict, field: str, path, key: str):
    if field not in item:
        raise InputError(f"every entry of the {key} file {path} needs \"{field}\".", path=path)
    return item[field]


def read_boxes(path, geometry: Geometry, class_names=None) -> list[Box]:
    """The boxes of a ``--boxes`` JSON file, on ``geometry``'s grid (voxel indices)."""
    out = []
    for item in _items(path, "boxes"):
        corners = _point(item, "corners_mm", path, "boxes")
        if not isinstance(corners, list) or len(corners) != 2:
            raise InputError(f"\"corners_mm\" in {path} must be two points [[x, y, z], [x, y, z]].", path=path)
        a, b = (tuple(world_to_index(geometry, c)) for c in corners)
        out.append(Box(_label(item, class_names, path, "boxes"), a, b))
    return out


def read_clicks(path, geometry: Geometry, class_names=None) -> list[Click]:
    """The clicks of a ``--clicks`` JSON file, on ``geometry``'s grid (voxel indices)."""
    return [Click(_label(item, class_names, path, "clicks"), tuple(world_to_index(geometry, _point(item, "point_mm", path,
                                                                                                     "clicks"))))
            for item in _items(path, "clicks")]
