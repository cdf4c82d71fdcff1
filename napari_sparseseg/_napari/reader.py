"""npe2 reader: NIfTI, NRRD, MHA/MHD and DICOM series folders, with geometry."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_sparseseg._napari.layers import display_array, layer_kwargs
from napari_sparseseg.core.annotations.labels import label_dtype
from napari_sparseseg.io import SUPPORTED_SUFFIXES, is_supported_path, read_image

_LABEL_WORDS = ("label", "mask", "seg", "scribble", "annot", "correction", "reference")


def _name(path: Path) -> str:
    name = path.name
    for suffix in sorted(SUPPORTED_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _class_names_beside(path: Path) -> list | None:
    """Class names from a ``classes.json`` (a JSON list, background first) next to a label file."""
    import json

    f = path.parent / "classes.json"
    try:
        names = json.loads(f.read_text()) if f.is_file() else None
    except (OSError, ValueError):
        return None
    return [str(n) for n in names] if isinstance(names, list) and len(names) >= 2 else None


def get_reader(path):
    """Return :func:`read_layers` for a path this plugin reads, else ``None``."""
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    if not isinstance(path, (str, Path)) or not is_supported_path(path):
        return None
    return read_layers


def read_layers(path):
    """One layer per file: Labels for integer label maps (by name), Image otherwise.

    The data is shown in radiological order (:mod:`.orientation`) as a view of the file's grid.
    """
    if isinstance(path, (list, tuple)):
        path = path[0]
    p = Path(path)
    data, geom = read_image(p)
    name = _name(p)
    kwargs = layer_kwargs(geom, name, str(p))
    data = display_array(data, kwargs["metadata"])  # a view: the file's grid stays underneath
    is_labels = np.issubdtype(data.dtype, np.integer) and any(w in name.lower() for w in _LABEL_WORDS)
    if is_labels:
        names = _class_names_beside(p)
        if names:
            kwargs["metadata"]["class_names"] = names
        return [(data.astype(label_dtype(data.max(initial=0))), kwargs, "labels")]
    return [(data, kwargs, "image")]
