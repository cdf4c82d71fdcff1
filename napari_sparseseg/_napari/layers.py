"""Layer keyword arguments from a scan's geometry, and back."""

from __future__ import annotations

import numpy as np

from napari_sparseseg.io import Geometry

GEOMETRY_KEY = "sparseseg_geometry"


def layer_kwargs(geometry: Geometry, name: str, source_path: str | None = None) -> dict:
    """``scale`` = voxel size, ``translate`` = origin along each array axis; the full geometry
    (direction included) rides in ``metadata`` so writers can restore it exactly."""
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
