"""Rebuild the bundled sample from ../shared/data/ct_abdomen (run from the repository root).

    python sample_data/make_sample.py

Crops the TotalSegmentator example CT around liver, spleen and kidneys, keeps those four
structures as classes 1..4 (everything else is background), and draws scribbles with the
package's simulated annotator: strokes on 2 slices per orientation, seeded.
"""

import json
import shutil
from pathlib import Path

import numpy as np

from napari_sparseseg.evaluation.simulated_annotator import simulate_scribbles
from napari_sparseseg.io import Geometry, read_image, read_labels, write_labels

SRC = Path("../shared/data/ct_abdomen")
OUT = Path("napari_sparseseg/data/ct_abdomen_crop")  # the package data (sample_data/ct_abdomen_crop links here)
CROP = (slice(60, 112), slice(15, 95), slice(5, 115))  # array order (k, j, i) = (S-I, A-P, R-L)
CLASSES = {"liver": 5, "spleen": 1, "kidney_right": 2, "kidney_left": 3}  # name -> TotalSegmentator id


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    image, geom = read_image(SRC / "image.nii.gz")
    labels, _ = read_labels(SRC / "labels.nii.gz", like=geom)
    start = np.array([s.start for s in CROP], float)
    affine = geom.affine.copy()
    affine[:3, 3] = geom.index_to_world(start)
    crop_geom = Geometry(affine, tuple(s.stop - s.start for s in CROP))
    ref = np.zeros(crop_geom.shape, np.uint8)
    for value, tid in enumerate(CLASSES.values(), start=1):
        ref[labels[CROP] == tid] = value
    img = image[CROP].astype(np.int16)

    import nibabel as nib

    nii = nib.Nifti1Image(np.ascontiguousarray(img.transpose(2, 1, 0)), crop_geom.nifti_affine())
    nii.set_qform(crop_geom.nifti_affine(), code=1)
    nii.set_sform(crop_geom.nifti_affine(), code=1)
    nib.save(nii, OUT / "image.nii.gz")
    write_labels(OUT / "reference.nii.gz", ref, crop_geom)
    write_labels(OUT / "scribbles.nii.gz", simulate_scribbles(ref, k=2, seed=0), crop_geom)
    (OUT / "classes.json").write_text(json.dumps(["background", *CLASSES], indent=1) + "\n")
    shutil.copy(SRC.parent / "LICENSE-TotalSegmentator-Apache-2.0.txt", OUT.parent / "LICENSE-TotalSegmentator-Apache-2.0.txt")


if __name__ == "__main__":
    main()
