"""`sparseseg segment/predict` on a DICOM series: strokes in as a DICOM SEG, mask and probabilities out as SEGs.

The scan is a crop of the bundled sample written as a CT series with pydicom; its strokes are a
DICOM SEG (segments background, liver, ...). A `.dcm` output for an image that is not a DICOM
series is refused before any work: exit 2, one line, nothing written.
"""

import json

import numpy as np
import pytest

pytest.importorskip("highdicom")

import highdicom as hd  # noqa: E402
import pydicom  # noqa: E402

from napari_sparseseg.cli import main  # noqa: E402
from napari_sparseseg.io import Geometry, read_image, read_labels, write_labels  # noqa: E402
from napari_sparseseg.io.dicom_seg import dicom_series, read_dicom_seg  # noqa: E402
from tests.io.dicom_series import write_ct_series  # noqa: E402

CROP = (slice(10, 42), slice(0, 80), slice(0, 110))


@pytest.fixture(scope="module")
def dicom_case(tmp_path_factory, sample_dir):
    d = tmp_path_factory.mktemp("dicomseg")
    image, g = read_image(sample_dir / "image.nii.gz")
    strokes, _ = read_labels(sample_dir / "scribbles.nii.gz")
    names = json.loads((sample_dir / "classes.json").read_text())
    affine = g.affine.copy()
    affine[:3, 3] = g.index_to_world([s.start for s in CROP])
    crop = Geometry(affine, image[CROP].shape)
    uids = write_ct_series(d / "ct", image[CROP], crop)
    _, geom = read_image(d / "ct")
    # strokes as a SEG: value v is segment v, labelled; "background" is the background strokes' segment
    write_labels(d / "strokes.dcm", strokes[CROP], geom, source=d / "ct", class_names=["unlabelled", *names])
    write_labels(d / "image.nii.gz", image[CROP], crop)
    return d, uids, names, strokes[CROP], geom


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def test_segment_and_predict_write_dicom_segs_of_the_series(dicom_case, tmp_path, capsys):
    d, uids, names, strokes, geom = dicom_case
    mask, probs, model = tmp_path / "mask.dcm", tmp_path / "probs.dcm", tmp_path / "model"
    code, err = _run(capsys, "segment", d / "ct", d / "strokes.dcm", "-o", mask, "--probabilities", probs,
                     "--model-out", model, "--max-steps", 2, "--device", "cpu", "--no-refine")
    assert code == 0, err
    assert f"wrote mask {mask}" in err and f"wrote probabilities {probs}" in err
    seg = hd.seg.segread(mask)
    assert seg.SegmentationType == "BINARY" and seg.ReferencedSeriesSequence[0].SeriesInstanceUID == uids["series"]
    assert seg.FrameOfReferenceUID == uids["frame_of_reference"]
    # the class names came from the strokes' SEG (no --class-names)
    assert [seg.get_segment_description(n).segment_label for n in range(1, len(names))] == names[1:]
    assert json.loads((model / "model.json").read_text())["class_names"] == names
    labels = read_dicom_seg(mask, d / "ct")
    by_hd = seg.get_pixels_by_source_instance(dicom_series(d / "ct", geom).instance_uids, combine_segments=True,
                                              skip_overlap_checks=True)
    assert labels.shape == geom.shape and np.array_equal(by_hd, labels) and labels.max() >= 1
    p = hd.seg.segread(probs)
    assert p.SegmentationType == "FRACTIONAL" and int(p.NumberOfFrames) >= 1

    # predict with the saved model: the same SEG layout
    pred = tmp_path / "pred.dcm"
    code, err = _run(capsys, "predict", d / "ct", "--model", model, "-o", pred, "--device", "cpu", "--no-refine")
    assert code == 0, err
    ds = pydicom.dcmread(pred)
    assert ds.Modality == "SEG" and ds.ReferencedSeriesSequence[0].SeriesInstanceUID == uids["series"]
    assert [s.SegmentLabel for s in ds.SegmentSequence] == names[1:]
    assert read_dicom_seg(pred, d / "ct").shape == geom.shape


@pytest.mark.parametrize("flag", ["-o", "--probabilities"])
def test_a_dcm_output_for_a_nifti_image_is_refused_before_any_work(dicom_case, tmp_path, capsys, flag):
    d, *_ = dicom_case
    out = tmp_path / "x.dcm"
    argv = ["predict", d / "image.nii.gz", "--model", tmp_path / "no_model", "--device", "cpu"]
    argv += ["-o", out] if flag == "-o" else ["-o", tmp_path / "m.nii.gz", "--probabilities", out]
    code, err = _run(capsys, *argv)  # the model does not exist: the output check comes first
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith(f"sparseseg: error: {out}: a .dcm ") and "not a DICOM series folder" in lines[0]
    assert not list(tmp_path.iterdir())


def test_seg_strokes_for_a_nifti_image_are_refused(dicom_case, tmp_path, capsys):
    d, *_ = dicom_case
    code, err = _run(capsys, "segment", d / "image.nii.gz", d / "strokes.dcm", "-o", tmp_path / "m.nii.gz",
                     "--max-steps", 1, "--device", "cpu")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith(f"sparseseg: error: {d / 'strokes.dcm'}: the scribbles are a DICOM SEG")
    assert not (tmp_path / "m.nii.gz").exists()
