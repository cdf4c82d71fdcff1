"""The cohort folder: scans, the model copy, corrections from edits, review flags, resume; no Dask, no Qt."""

import json

import numpy as np
import pytest

from napari_sparseseg.cohort.project import COHORT_FILE, Cohort
from napari_sparseseg.core.annotations.labels import corrections_from_edit
from napari_sparseseg.core.base.errors import CheckpointError, InputError, OutputError, ScribbleError
from napari_sparseseg.io import read_image, read_labels
from tests.conftest import make_cohort_files


@pytest.fixture(scope="module")
def files(tmp_path_factory, sample_dir, data_dir):
    return make_cohort_files(tmp_path_factory.mktemp("files"), sample_dir, data_dir, bad=False)


def test_corrections_are_the_edited_voxels_in_scribble_convention():
    pred = np.zeros((4, 5, 6), np.uint8)
    pred[1, 1:3, 1:3] = 2
    edited = pred.copy()
    edited[1, 1, 1] = 0  # erased: background
    edited[2, 4, 5] = 3  # added class 3
    c = corrections_from_edit(pred, edited)
    assert c[1, 1, 1] == 1 and c[2, 4, 5] == 4 and (c > 0).sum() == 2
    with pytest.raises(InputError, match="grid"):
        corrections_from_edit(pred, edited[:, :4])


def test_create_add_correct_review_and_resume(files, tmp_path):
    folder = tmp_path / "cohort"
    cohort = Cohort.create(folder, files / "model")
    assert (folder / "model" / "model.json").is_file() and (folder / COHORT_FILE).is_file()
    new = cohort.add([files / "scans"])
    assert [s.name for s in new] == ["abdomen", "sample", "shifted"]
    assert cohort.add([files / "scans" / "sample.nii.gz"]) == []  # the same scan is not added twice

    image, geom = read_image(files / "scans" / "sample.nii.gz")
    pred = np.zeros(geom.shape, np.uint8)
    edited = pred.copy()
    edited[10, 20:30, 20:30] = 1
    assert cohort.add_corrections("sample", pred, edited, geom) == 100
    edited2 = edited.copy()
    edited2[11, 0:5, 0:5] = 2
    assert cohort.add_corrections("sample", edited, edited2, geom) == 125  # merged with the earlier strokes
    strokes, _ = read_labels(cohort.strokes_path("sample"), like=geom)
    assert (strokes == 2).sum() == 100 and (strokes == 3).sum() == 25

    cohort.mark_reviewed("sample", edited2, geom)
    assert np.array_equal(read_labels(cohort.mask_path("sample"), like=geom)[0], edited2)
    again = Cohort.open(folder)
    assert [s.name for s in again.scans] == ["abdomen", "sample", "shifted"]
    assert [s.reviewed for s in again.scans] == [False, True, False]
    assert [e.name for e in again.entries(only_unreviewed=True)] == ["abdomen", "shifted"]
    assert again.entries()[1].scribbles == again.strokes_path("sample")


def test_refine_needs_corrections_and_trains_on_every_scans_strokes(files, tmp_path):
    from napari_sparseseg.core.base.config import TrainConfig
    from napari_sparseseg.core.base.progress import run_to_end

    cohort = Cohort.create(tmp_path / "c", files / "model")
    cohort.add([files / "scans"])
    with pytest.raises(ScribbleError, match="no scan has corrections"):
        cohort.refine_trainer()
    for name in ("sample", "abdomen"):
        _, geom = read_image(next((files / "scans").glob(f"{name}.*")))
        pred = np.zeros(geom.shape, np.uint8)
        edited = pred.copy()
        edited[geom.shape[0] // 2, 10:20, 10:20] = 1 if name == "sample" else 0
        edited[geom.shape[0] // 2, 30:40, 30:40] = 0 if name == "sample" else 2
        if name == "abdomen":
            pred[geom.shape[0] // 2, 10:20, 10:20] = 3  # the reader "erased" a wrong structure: background strokes
        cohort.add_corrections(name, pred, edited, geom)
    trainer = cohort.refine_trainer(TrainConfig(max_steps=2, time_budget=None, device="cpu", forest=False))
    assert len(trainer.more) == 1 and trainer.num_classes == 5  # the shared model's classes
    result = run_to_end(trainer.run())
    cohort.save_refined(result.model, result.steps, result.elapsed)
    assert Cohort.open(cohort.folder).history[-1]["scans_with_strokes"] == ["abdomen", "sample"]


def test_bad_folders_and_models_are_clear_errors(files, tmp_path):
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="not empty"):
        Cohort.create(tmp_path / "used", files / "model")
    assert (tmp_path / "used" / "notes.txt").read_text() == "mine"
    with pytest.raises(CheckpointError):
        Cohort.create(tmp_path / "new", tmp_path / "used")
    assert not (tmp_path / "new").exists()
    with pytest.raises(InputError, match="no cohort here"):
        Cohort.open(tmp_path / "used")
    (tmp_path / "used" / COHORT_FILE).write_text(json.dumps({"format": "something else"}))
    with pytest.raises(InputError, match="not a napari-sparseseg cohort"):
        Cohort.open(tmp_path / "used")
    Cohort.create(tmp_path / "c", files / "model")
    with pytest.raises(OutputError, match="existing cohort; open it"):
        Cohort.create(tmp_path / "c", files / "model")
