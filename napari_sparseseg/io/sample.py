"""The bundled sample: a crop of a real abdominal CT with scribbles, reference mask and class names.

Used by the npe2 sample-data command, ``sparseseg demo`` and the benchmarks. The files are
package data, ``napari_sparseseg/data/ct_abdomen_crop`` (its ``README.md`` gives provenance and
licence), so an installed wheel carries them; the repository's ``sample_data/`` links there.
"""

from __future__ import annotations

import json
from pathlib import Path

from napari_sparseseg.core.base.errors import InputError
from napari_sparseseg.io.volumes import read_image, read_labels

__all__ = ["SAMPLE_DIR", "SAMPLE_NAME", "find_sample_data", "load_sample"]

SAMPLE_NAME = "ct_abdomen_crop"
SAMPLE_DIR = Path(__file__).resolve().parents[1] / "data" / SAMPLE_NAME
"""Where the bundled sample is: inside the installed package."""
_FILES = ("image.nii.gz", "scribbles.nii.gz", "reference.nii.gz", "classes.json")


def find_sample_data(data_dir=None) -> Path:
    """The sample folder: ``data_dir`` if given, else the bundled one (:data:`SAMPLE_DIR`).

    Examples:
        >>> from napari_sparseseg.io.sample import find_sample_data
        >>> sorted(p.name for p in find_sample_data().iterdir())[:2]
        ['classes.json', 'image.nii.gz']

    Raises:
        InputError: a file of the sample is missing (says which, and how to get it).
    """
    p = Path(data_dir) if data_dir is not None else SAMPLE_DIR
    missing = [n for n in _FILES if not (p / n).is_file()]
    if missing:
        how = "pass --data DIR" if data_dir is not None else "reinstall napari-sparseseg (the wheel carries the sample) or pass --data DIR"
        raise InputError(f"sample data incomplete ({', '.join(missing)} missing); {how}.", path=p)
    return p


def load_sample(data_dir=None) -> dict:
    """Image, geometry, scribbles, reference mask and class names of the bundled sample.

    Examples:
        >>> import napari_sparseseg as ss
        >>> sample = ss.load_sample()
        >>> sample["image"].shape, sample["class_names"][0]
        ((52, 80, 110), 'background')

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
