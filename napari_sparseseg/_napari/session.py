"""Sessions and scans: open a saved session with its scan, and the geometry to show it on."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_sparseseg.core.base.errors import InputError
from napari_sparseseg.core.session.state import Session
from napari_sparseseg.io import Geometry, read_image
from napari_sparseseg.io.sessions import load_session


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
    s = load_session(folder, image=image)
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
