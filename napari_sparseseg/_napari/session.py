"""Sessions <-> layers: open a saved session with its scan, and the layer data to show it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_sparseseg._napari.layers import default_colors, layer_kwargs, prediction_colormap, scribble_colormap
from napari_sparseseg.core.errors import InputError
from napari_sparseseg.core.session import Session
from napari_sparseseg.io import Geometry, read_image


def session_geometry(session: Session) -> Geometry:
    if session.geometry:
        return Geometry.from_dict(session.geometry)
    return Geometry.from_spacing(session.scribbles.shape, session.spacing)


def open_session(folder, image: np.ndarray | None = None) -> Session:
    """Load a session folder; read its scan from the path it refers to when it did not store it.

    Raises:
        CheckpointError: not a session, or corrupt.
        InputError: the referenced scan is gone (says where it was expected).
    """
    s = Session.load(folder, image=image)
    if s.image is None:
        if not s.image_path or not Path(s.image_path).exists():
            raise InputError(
                f"the session refers to the scan {s.image_path}, which is not there any more; open that scan "
                "in napari, select it, then load the session again.", path=folder)
        data, _ = read_image(s.image_path)
        if tuple(data.shape) != tuple(s.scribbles.shape):
            raise InputError(f"the scan {s.image_path} now has shape {data.shape}, the session {s.scribbles.shape}.", path=folder)
        s.image = data
    return s


def session_layer_data(session: Session, name: str = "scan") -> dict:
    """LayerData tuples (image, scribbles, prediction) of a session, on the scan's geometry."""
    geom = session_geometry(session)
    colors = session.colors or default_colors(len(session.class_names))
    out = {}
    kw = layer_kwargs(geom, name, session.image_path)
    out["image"] = (session.image, kw, "image")
    skw = layer_kwargs(geom, "scribbles")
    skw["metadata"]["class_names"] = list(session.class_names)
    skw["colormap"] = scribble_colormap(colors)
    out["scribbles"] = (session.scribbles, skw, "labels")
    if session.prediction is not None:
        pkw = layer_kwargs(geom, "prediction")
        pkw["colormap"] = prediction_colormap(colors)
        out["prediction"] = (np.array(session.prediction, copy=True), pkw, "labels")
    return out
