"""Benchmark cases: the real scans in ../shared/data (and the bundled sample) with the
structures evaluated. Other labels in the reference count as background."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_sparseseg.io import read_image, read_labels

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
ABDOMEN = {"liver": 5, "spleen": 1, "kidney_right": 2, "kidney_left": 3}

CASES = {
    "sample_ct_crop": (REPO / "sample_data/ct_abdomen_crop/image.nii.gz", REPO / "sample_data/ct_abdomen_crop/reference.nii.gz", {"liver": 1, "spleen": 2, "kidney_right": 3, "kidney_left": 4}),
    "ct_abdomen": (SHARED / "ct_abdomen/image.nii.gz", SHARED / "ct_abdomen/labels.nii.gz", ABDOMEN),
    "mr_abdomen": (SHARED / "mr_abdomen/image.nii.gz", SHARED / "mr_abdomen/labels.nii.gz", ABDOMEN),
    "mr_brain_tumour": (SHARED / "mr_brain_tumour/image.nrrd", SHARED / "mr_brain_tumour/label.nrrd", {"tumour": 1}),
    # A second real patient scanned like mr_brain_tumour (a small lesion): the real pair for work across patients.
    "mr_brain_tumour2": (SHARED / "mr_brain_tumour2/image.nrrd", SHARED / "mr_brain_tumour2/label.nrrd", {"tumour": 1}),
}


def load_case(name: str):
    """``(image, geometry, reference, class_names)``; reference remapped to 0..K."""
    img_path, lab_path, classes = CASES[name]
    image, geom = read_image(img_path)
    lab, _ = read_labels(lab_path, like=geom)
    ref = np.zeros(lab.shape, np.uint8)
    for value, source in enumerate(classes.values(), start=1):
        ref[lab == source] = value
    return image, geom, ref, ["background", *classes]
