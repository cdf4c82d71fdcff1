"""Layer keyword arguments from a scan's geometry, and back."""

from __future__ import annotations

import numpy as np

from napari_sparseseg._napari.orientation import (
    AXIS_LABELS,
    ORIENTATION_KEY,
    DisplayOrientation,
    orientation_from_metadata,
    radiological_orientation,
)
from napari_sparseseg.io import Geometry

GEOMETRY_KEY = "sparseseg_geometry"


def layer_kwargs(geometry: Geometry, name: str, source_path: str | None = None,
                 orientation: DisplayOrientation | None = None) -> dict:
    """Layer keyword arguments for a volume on ``geometry``, shown in radiological order.

    ``scale`` is the voxel size and ``translate`` the position along each display axis
    (:mod:`.orientation`); the file's geometry and the display orientation ride in
    ``metadata``, so :func:`grid_array` and :func:`geometry_from_layer` restore the file's own
    grid exactly. Pass the data through :func:`display_array` with the same metadata.

    Args:
        geometry: the scan's geometry (its own grid).
        name: the layer name.
        source_path: the file the data came from, if any.
        orientation: the display orientation (default: radiological for ``geometry``).
    """
    orientation = orientation or radiological_orientation(geometry)
    scale, translate = orientation.layer_transform(geometry)
    meta = {GEOMETRY_KEY: geometry.to_dict(), ORIENTATION_KEY: orientation.to_dict(),
            "orientation": "radiological: " + ", ".join(AXIS_LABELS)}
    if source_path:
        meta["source_path"] = str(source_path)
    return {"name": name, "scale": scale, "translate": translate, "metadata": meta}


def display_array(grid: np.ndarray, metadata: dict | None) -> np.ndarray:
    """The view of an array on the file's grid that a layer with ``metadata`` shows."""
    return orientation_from_metadata(metadata).to_display(grid)


def grid_array(data: np.ndarray, metadata: dict | None) -> np.ndarray:
    """The file-grid view of a layer's data (inverse of :func:`display_array`; no copy)."""
    return orientation_from_metadata(metadata).to_grid(np.asarray(data))


def geometry_from_layer(data_shape, metadata: dict | None, scale=None, translate=None) -> Geometry:
    """The file geometry of a layer whose (display) data has ``data_shape``.

    The geometry stored by :func:`layer_kwargs` when it matches, else an axis-aligned one from
    the layer's ``scale``/``translate`` (a plain array added in napari).
    """
    meta = metadata or {}
    if GEOMETRY_KEY in meta:
        g = Geometry.from_dict(meta[GEOMETRY_KEY])
        if tuple(g.shape) == orientation_from_metadata(meta).grid_shape(data_shape):
            return g
    scale = (1.0, 1.0, 1.0) if scale is None else tuple(scale)[-3:]
    translate = (0.0, 0.0, 0.0) if translate is None else tuple(translate)[-3:]
    return Geometry.from_spacing(tuple(data_shape), scale, translate)


# Colour per class, background first: a light blue background stroke stands out on grey CT/MRI,
# structures get well-separated saturated colours (Kelly/Tableau-like).
PALETTE = (
    "#4da6ff", "#e6194b", "#3cb44b", "#ffe119", "#f58231", "#911eb4", "#42d4f4", "#f032e6",
    "#bfef45", "#fabed4", "#469990", "#dcbeff", "#9a6324", "#fffac8", "#800000", "#aaffc3",
)


def default_colors(n: int) -> list[str]:
    return [PALETTE[i % len(PALETTE)] for i in range(n)]


def scribble_colormap(colors):
    """Scribble value ``c + 1`` shows class ``c``'s colour; 0 (unlabelled) is transparent."""
    from napari.utils.colormaps import DirectLabelColormap

    return DirectLabelColormap(color_dict={None: (0, 0, 0, 0), 0: (0, 0, 0, 0), **{i + 1: c for i, c in enumerate(colors)}})


def prediction_colormap(colors):
    """Class ``c`` shows its colour; background (0) is transparent so the scan shows through."""
    from napari.utils.colormaps import DirectLabelColormap

    return DirectLabelColormap(color_dict={None: (0, 0, 0, 0), 0: (0, 0, 0, 0), **{i: c for i, c in enumerate(colors) if i > 0}})
