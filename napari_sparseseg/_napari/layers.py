"""Layer keyword arguments from a scan's geometry, and back."""

from __future__ import annotations

import numpy as np

from napari_sparseseg.io import Geometry

GEOMETRY_KEY = "sparseseg_geometry"


def layer_kwargs(geometry: Geometry, name: str, source_path: str | None = None) -> dict:
    """Layer keyword arguments for a volume on ``geometry``.

    ``scale`` = voxel size, ``translate`` = origin along each array axis; the full geometry
    (direction included) rides in ``metadata`` so writers can restore it exactly.
    """
    direction = geometry.direction
    origin = np.asarray(geometry.origin)
    translate = tuple(float(direction[:, a] @ origin) for a in range(3))
    meta = {GEOMETRY_KEY: geometry.to_dict()}
    if source_path:
        meta["source_path"] = str(source_path)
    return {"name": name, "scale": tuple(geometry.spacing), "translate": translate, "metadata": meta}


def geometry_from_layer(data_shape, metadata: dict | None, scale=None, translate=None) -> Geometry:
    """The geometry stored by :func:`layer_kwargs`, else an axis-aligned one from scale/translate."""
    meta = metadata or {}
    if GEOMETRY_KEY in meta:
        g = Geometry.from_dict(meta[GEOMETRY_KEY])
        if tuple(g.shape) == tuple(data_shape):
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
