"""The bundled sample: a crop of a real abdominal CT with scribbles, reference mask and class names.

Used by the npe2 sample-data command, ``sparseseg demo`` and the benchmarks. The files live in
the repository's ``sample_data/`` (see its README for provenance and licence).
"""

from __future__ import annotations

import json
from pathlib import Path

from napari_sparseseg.core.base.errors import InputError
from napari_sparseseg.io.volumes import read_image, read_labels

__all__ = ["SAMPLE_NAME", "find_sample_data", "load_sample"]

SAMPLE_NAME = "ct_abdomen_crop"
_FILES = ("image.nii.gz", "scribbles.nii.gz", "reference.nii.gz", "classes.json")


def find_sample_data(data_dir=None) -> Path:
    """The sample folder: ``data_dir`` if given, else ``sample_data/ct_abdomen_crop`` of the checkout.

    Raises:
        InputError: a file of the sample is missing (says which, and how to get it).
    """
    p = Path(data_dir) if data_dir is not None else Path(__file__).resolve().parents[2] / "sample_data" / SAMPLE_NAME
    missing = [n for n in _FILES if not (p / n).is_file()]
    if missing:
        raise InputError(
            f"sample data incomplete ({', '.join(missing)} missing); install from a clone of the repository "
            "(pip install -e .) or pass --data DIR.",
            path=p,
        )
    return p


def load_sample(data_dir=None) -> dict:
    """Image, geometry, scribbles, reference mask and class names of the bundled sample.

    Returns:
        ``{"path", "image", "geometry", "scribbles", "reference", "class_names"}``.
    """
    p = find_sample_data(data_dir)
    image, geom = read_image(p / "image.nii.gz")
    scribbles, _ = read_labels(p / "scribbles.nii.gz", like=geom, what="scribbles")
    reference, _ = read_labels(p / "reference.nii.gz", like=geom, what="reference")
    names = json.loads((p / "classes.json").read_text())
    return {"path": p, "image": image, "geometry": geom, "scribbles": scribbles, "reference": reference,
            "class_names": names}
