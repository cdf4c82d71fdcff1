"""`sparseseg batch --dicom-seg`: a DICOM SEG beside the NIfTI mask of each DICOM series, none for other scans.

The cohort: a small crop of the bundled sample written as a CT series with pydicom, and another
crop as NIfTI. The series gets `series_mask.dcm` (and `series_probabilities.dcm`) that read back
to the voxels of its NIfTI mask and reference the series' UIDs; the NIfTI scan gets its mask, no
SEG, and a note saying why. SEG outputs are checked before any work like the others.
"""

import csv
import importlib.util
import json
import os

import numpy as np
import pytest

pytest.importorskip("highdicom")

import pydicom  # noqa: E402

from napari_sparseseg.cli import main  # noqa: E402
from napari_sparseseg.cohort.batch import NO_SEG_NOTE, SUMMARY_CSV, SUMMARY_JSON, plan_batch  # noqa: E402
from napari_sparseseg.core.base.config import BatchConfig  # noqa: E402
from napari_sparseseg.core.base.errors import OutputError  # noqa: E402
from napari_sparseseg.io import Geometry, read_image, read_labels, write_image  # noqa: E402
from napari_sparseseg.io.cohort import expand_inputs  # noqa: E402
from napari_sparseseg.io.dicom_seg import read_dicom_seg  # noqa: E402
from tests.io.dicom_series import write_ct_series  # noqa: E402

FAST = ["--device", "cpu", "--workers", "1", "--threads", "1", "--no-refine"]
SERIES_CROP = (slice(16, 28), slice(0, 80), slice(0, 110))
NIFTI_CROP = (slice(30, 40), slice(0, 80), slice(0, 110))


def _crop_geometry(g: Geometry, crop) -> Geometry:
    affine = g.affine.copy()
    affine[:3, 3] = g.index_to_world([s.start for s in crop])
    return Geometry(affine, tuple(s.stop - s.start for s in crop))


@pytest.fixture(scope="module")
def case(tmp_path_factory, sample_dir):
    """A CT model trained 2 steps on the sample, with its forest (so the masks are not empty); ``scans/series`` (a CT series) and ``scans/plain.nii.gz``."""
    from napari_sparseseg.core.base.config import TrainConfig
    from napari_sparseseg.core.base.progress import run_to_end
    from napari_sparseseg.core.training.train import Trainer
    from napari_sparseseg.io.models import save_model

    d = tmp_path_factory.mktemp("batchseg")
    image, g = read_image(sample_dir / "image.nii.gz")
    scribbles, _ = read_labels(sample_dir / "scribbles.nii.gz", like=g)
    names = json.loads((sample_dir / "classes.json").read_text())
    trainer = Trainer(image, scribbles, TrainConfig(max_steps=2, time_budget=None, device="cpu", forest=True),
                      spacing=g.spacing, class_names=names)
    save_model(run_to_end(trainer.run()).model, d / "model")
    (d / "scans").mkdir()
    uids = write_ct_series(d / "scans" / "series", image[SERIES_CROP], _crop_geometry(g, SERIES_CROP))
    write_image(d / "scans" / "plain.nii.gz", image[NIFTI_CROP].astype(np.int16), _crop_geometry(g, NIFTI_CROP))
    return d, uids, names


def _summary(out):
    data = json.loads((out / SUMMARY_JSON).read_text())
    return data, {s["name"]: s for s in data["scans"]}


def _argv(d, out, *extra):
    return ["batch", "--model", str(d / "model"), "--out-dir", str(out), str(d / "scans" / "series"),
            str(d / "scans" / "plain.nii.gz"), *FAST, *extra]


def test_a_series_gets_a_seg_of_its_mask_and_a_nifti_scan_a_note(case, tmp_path, capsys):
    d, uids, names = case
    out = tmp_path / "out"
    assert main(_argv(d, out, "--dicom-seg", "--probabilities")) == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    assert "--dicom-seg: 1 DICOM series get NAME_mask.dcm and NAME_probabilities.dcm" in err, err
    assert "no DICOM SEG for 1 scan(s) that are not DICOM series" in err and err.rstrip().count("plain") >= 1, err

    # The SEG reads back to the NIfTI mask's voxels, on the series' grid, and references the series.
    _, geom = read_image(d / "scans" / "series")
    nifti, _ = read_labels(out / "series_mask.nii.gz", like=geom)
    seg = read_dicom_seg(out / "series_mask.dcm", d / "scans" / "series")
    assert seg.shape == geom.shape and np.array_equal(seg, nifti) and nifti.any()
    ds = pydicom.dcmread(out / "series_mask.dcm")
    assert ds.Modality == "SEG" and ds.SegmentationType == "BINARY"
    assert ds.StudyInstanceUID == uids["study"] and ds.FrameOfReferenceUID == uids["frame_of_reference"]
    ref = ds.ReferencedSeriesSequence[0]
    assert ref.SeriesInstanceUID == uids["series"]
    assert {i.ReferencedSOPInstanceUID for i in ref.ReferencedInstanceSequence} == set(uids["instances"])
    assert [s.SegmentLabel for s in ds.SegmentSequence] == names[1:]  # the model's class names
    probs = pydicom.dcmread(out / "series_probabilities.dcm", stop_before_pixels=True)
    assert probs.SegmentationType == "FRACTIONAL" and probs.ReferencedSeriesSequence[0].SeriesInstanceUID == uids["series"]

    # The NIfTI scan: its NIfTI outputs, no SEG, and the summary says why.
    assert (out / "plain_mask.nii.gz").is_file() and (out / "plain_probabilities.nii.gz").is_file()
    assert not list(out.glob("plain*.dcm"))
    data, scans = _summary(out)
    assert data["settings"]["dicom_seg"] is True
    assert scans["series"]["status"] == scans["plain"]["status"] == "done"
    assert scans["series"]["dicom_seg"] == str(out / "series_mask.dcm") and scans["series"]["note"] is None
    assert scans["series"]["dicom_seg_probabilities"] == str(out / "series_probabilities.dcm")
    assert scans["plain"]["dicom_seg"] is None and scans["plain"]["note"] == NO_SEG_NOTE
    assert "not a DICOM series" in NO_SEG_NOTE
    with open(out / SUMMARY_CSV, newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["dicom_seg"] for r in rows if r["scan"] == "series"} == {str(out / "series_mask.dcm")}
    assert {r["note"] for r in rows if r["scan"] == "plain"} == {NO_SEG_NOTE}

    # Resume: both are done, SEG included; nothing is rewritten.
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if not p.name.startswith("sparseseg_summary")}
    assert main([*_argv(d, out, "--dicom-seg", "--probabilities"), "-q"]) == 0
    _, scans = _summary(out)
    assert {s["status"] for s in scans.values()} == {"skipped"}
    assert scans["series"]["dicom_seg"] == str(out / "series_mask.dcm") and scans["plain"]["note"] == NO_SEG_NOTE
    assert mtimes == {p.name: p.stat().st_mtime_ns for p in out.iterdir() if not p.name.startswith("sparseseg_summary")}
    # Without --dicom-seg the done scans are skipped too, and the SEG stays recorded while it is there.
    assert main([*_argv(d, out, "--probabilities"), "-q"]) == 0
    _, scans = _summary(out)
    assert scans["series"]["status"] == "skipped" and scans["series"]["dicom_seg"] == str(out / "series_mask.dcm")

    # A done scan whose SEG is missing is not done: it runs again (its NIfTI outputs are this batch's own).
    entries = expand_inputs([d / "scans" / "series", d / "scans" / "plain.nii.gz"])
    cfg = BatchConfig(dicom_seg=True, probabilities=True, refine=False)
    os.unlink(out / "series_mask.dcm")
    plan = plan_batch(entries, d / "model", out, cfg)
    assert [j.entry.name for j in plan.to_run] == ["series"] and [j.entry.name for j in plan.skipped] == ["plain"]
    # ... but a SEG there that no run of ours wrote is refused before any work. (A run without --dicom-seg, all
    # skipped, records no SEG for the series once its file is gone; then a file of that name appears.)
    assert main([*_argv(d, out, "--probabilities"), "-q"]) == 0
    assert _summary(out)[1]["series"]["dicom_seg"] is None
    (out / "series_mask.dcm").write_bytes(b"the user's own file")
    with pytest.raises(OutputError, match=r"series_mask\.dcm already exist.*--overwrite"):
        plan_batch(entries, d / "model", out, cfg)
    assert (out / "series_mask.dcm").read_bytes() == b"the user's own file"


@pytest.mark.parametrize("name", ["series_mask.dcm", "series_probabilities.dcm"])
def test_existing_seg_outputs_are_refused_before_any_work_without_overwrite(case, tmp_path, capsys, name):
    d, *_ = case
    out = tmp_path / "out"
    out.mkdir()
    (out / name).write_bytes(b"the user's own file")
    code = main(_argv(d, out, "--dicom-seg", "--probabilities"))
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("sparseseg: error:"), lines
    assert name in lines[0] and "--overwrite" in lines[0]
    assert sorted(p.name for p in out.iterdir()) == [name]  # no summary, no mask: nothing ran
    assert (out / name).read_bytes() == b"the user's own file"
    # Without --dicom-seg that file is none of this batch's business; with --overwrite it is replaced.
    entries = expand_inputs([d / "scans" / "series", d / "scans" / "plain.nii.gz"])
    assert len(plan_batch(entries, d / "model", out, BatchConfig(probabilities=True)).to_run) == 2
    plan = plan_batch(entries, d / "model", out, BatchConfig(probabilities=True, dicom_seg=True, overwrite=True))
    assert out / name in plan.jobs[0].outputs and len(plan.to_run) == 2


def test_without_highdicom_dicom_seg_stops_before_any_work_saying_how_to_install(case, tmp_path, capsys, monkeypatch):
    d, *_ = case
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "highdicom" else find_spec(name, *a))
    out = tmp_path / "out"
    code = main(_argv(d, out, "--dicom-seg"))
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1, lines
    assert "--dicom-seg" in lines[0] and "pip install 'napari-sparseseg[dicom]'" in lines[0]
    assert not out.exists()
