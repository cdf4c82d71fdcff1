"""npe2 reader: NIfTI, NRRD, MHA/MHD and DICOM series folders, with geometry; DICOM SEGs over their open scan."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_sparseseg._napari.binding import image_path, kwargs_like, layer_geometry
from napari_sparseseg._napari.layers import display_array, layer_kwargs
from napari_sparseseg.core.annotations.labels import label_dtype
from napari_sparseseg.core.base.errors import InputError
from napari_sparseseg.io import SUPPORTED_SUFFIXES, is_supported_path, read_image
from napari_sparseseg.io.dicom_seg import is_dicom_seg, made_on, read_dicom_seg, seg_class_names
from napari_sparseseg.io.schema import read_json

_LABEL_WORDS = ("label", "mask", "seg", "scribble", "annot", "correction", "reference")


def _name(path: Path) -> str:
    name = path.name
    for suffix in sorted(SUPPORTED_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _class_names_beside(path: Path) -> list | None:
    """Class names from a ``classes.json`` (a JSON list, background first) next to a label file."""
    f = path.parent / "classes.json"
    try:  # within the size and depth limits of every JSON file read
        names = read_json(f, "classes.json") if f.is_file() else None
    except InputError:
        return None
    return [str(n) for n in names] if isinstance(names, list) and len(names) >= 2 else None


def get_reader(path):
    """Return :func:`read_layers` for a path this plugin reads, else ``None``."""
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    if not isinstance(path, (str, Path)):
        return None
    if is_dicom_seg(path):
        return read_seg_layers
    if not is_supported_path(path):
        return None
    return read_layers


def read_seg_layers(path, viewer=None):
    """A DICOM SEG as a Labels layer over the open scan it was made on (class of each voxel; its class names).

    The SEG is placed on the grid of that scan (a DICOM series image layer of ``viewer``, by
    default the current viewer) by its plane positions and referenced slices; it is shown
    exactly over the scan, so it can be picked as scribbles or compared with a prediction.

    Raises:
        InputError: no open scan is the series the SEG references (open that series first),
            or the SEG cannot be placed on it.
    """
    from napari.layers import Image

    if isinstance(path, (list, tuple)):
        path = path[0]
    p = Path(path)
    if viewer is None:
        import napari

        viewer = napari.current_viewer()
    scans = [lay for lay in (viewer.layers if viewer is not None else []) if isinstance(lay, Image) and lay.ndim == 3
             and image_path(lay) and Path(image_path(lay)).is_dir()]
    scan = next((lay for lay in scans if made_on(p, image_path(lay))), None)
    if scan is None:
        raise InputError("a DICOM SEG is shown over the DICOM series it was made on, and no open scan is that series; "
                         "open the series folder first, then the SEG.", path=p)
    labels = read_dicom_seg(p, image_path(scan), geometry=layer_geometry(scan))
    kwargs = kwargs_like(scan, p.name[: -len(".dcm")] if p.name.lower().endswith(".dcm") else p.name)
    kwargs["metadata"]["source_path"] = str(p)
    kwargs["metadata"]["class_names"] = seg_class_names(p)
    return [(display_array(labels, kwargs["metadata"]), kwargs, "labels")]


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
