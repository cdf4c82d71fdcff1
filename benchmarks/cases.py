"""Benchmark cases: the real scans in ../shared/data (and the bundled sample) with the
structures evaluated. Other labels in the reference count as background."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_sparseseg.core.annotations.labels import merge_annotations
from napari_sparseseg.core.base.config import TrainConfig
from napari_sparseseg.core.base.progress import run_to_end
from napari_sparseseg.core.training.train import Trainer
from napari_sparseseg.evaluation.simulated_annotator import simulate_corrections, simulate_scribbles
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
    if name in DERIVED:
        img_path, lab_path = derived_paths(name)
        image, geom = read_image(img_path)
        ref, _ = read_labels(lab_path, like=geom)
        return image, geom, ref.astype(np.uint8), ["background", *CASES[DERIVED[name][0]][2]]
    img_path, lab_path, classes = CASES[name]
    image, geom = read_image(img_path)
    lab, _ = read_labels(lab_path, like=geom)
    ref = np.zeros(lab.shape, np.uint8)
    for value, source in enumerate(classes.values(), start=1):
        ref[lab == source] = value
    return image, geom, ref, ["background", *classes]


# Scans derived from the shared data, built on first use and kept under CACHE (not in CASES, so the
# accuracy benchmarks do not loop over them). "ct_abdomen_clinical": the abdominal CT resampled to
# 1 x 0.7 x 0.7 mm (array order; linear for the intensities, nearest for the labels), 336 x 433 x 523
# = 76 million voxels, the size of a clinical abdominal CT (issue 23).
CACHE = Path(os.environ.get("SPARSESEG_BENCH_CACHE", Path.home() / ".cache" / "napari-sparseseg-benchmarks"))
DERIVED = {"ct_abdomen_clinical": ("ct_abdomen", (1.0, 0.7, 0.7))}


def derived_paths(name: str) -> tuple[Path, Path]:
    """``(image, labels)`` files of a derived case, written (atomically) the first time."""
    from scipy import ndimage as ndi

    from napari_sparseseg.io import Geometry, write_image

    source, spacing = DERIVED[name]
    folder = CACHE / name
    img_path, lab_path = folder / "image.nii.gz", folder / "labels.nii.gz"
    if img_path.exists() and lab_path.exists():
        return img_path, lab_path
    folder.mkdir(parents=True, exist_ok=True)
    image, geom, ref, _ = load_case(source)
    zoom = [s / t for s, t in zip(geom.spacing, spacing, strict=True)]
    big = ndi.zoom(image.astype(np.float32), zoom, order=1)
    big = np.clip(np.rint(big), -32768, 32767).astype(np.int16)
    labels = ndi.zoom(ref, zoom, order=0).astype(np.uint8)
    # The source's orientation, its axes shortened to the new voxel size (the corner voxel's centre kept).
    affine = np.array(geom.affine, float)
    affine[:3, :3] = affine[:3, :3] / np.asarray(zoom)
    g = Geometry(affine, big.shape)
    write_image(lab_path, labels, g)  # reference already remapped to 0..K
    write_image(img_path, big, g)
    return img_path, lab_path


def case_image_path(name: str) -> Path:
    """The image file of a case (a derived case's is built first)."""
    return derived_paths(name)[0] if name in DERIVED else CASES[name][0]


@dataclass
class TrainedRound:
    """One round of :func:`trained_rounds`: set :attr:`mask` to the mask the annotator corrects next."""

    k: int
    seed: int
    round: int
    y: np.ndarray  # the round's strokes and corrections (scribble convention)
    result: object  # the round's TrainResult
    mask: np.ndarray | None = None


def trained_rounds(image, geom, ref, names, features, ks, seeds, rounds: int, max_steps: int | None = None):
    """Each annotator's rounds, trained with the defaults and no time cap (the Dice does not depend on the load).

    ``max_steps`` caps each round's steps instead (the defaults' cap when None): a short round
    made the same on any machine.

    Yields a :class:`TrainedRound` per round; the simulated annotator's corrections for the next
    round are drawn on the ``mask`` the caller sets on it (``k`` slices per axis with most errors).
    """
    for seed in seeds:
        for k in ks:
            scribbles = simulate_scribbles(ref, k, seed=seed)
            corr, model = None, None
            for r in range(rounds + 1):
                y, _ = merge_annotations(scribbles, corr)
                cfg = TrainConfig(time_budget=None, max_steps=max_steps or TrainConfig.max_steps, seed=seed + r, device="cpu")
                res = run_to_end(Trainer(image, scribbles, cfg, corrections=corr, init=model, spacing=geom.spacing,
                                         class_names=names, features=features).run())
                model = res.model
                step = TrainedRound(k, seed, r, y, res)
                yield step
                if r < rounds:
                    new = simulate_corrections(step.mask, ref, k, seed=seed + 17 * (r + 1))
                    corr = new if corr is None else merge_annotations(corr, new)[0]
