"""io.check_outputs / check_format_limits / OutputLog as the widget and the CLI call them."""

import os

import pytest

from napari_sparseseg.core.base.errors import OutputError
from napari_sparseseg.io import OutputLog, check_format_limits, check_outputs


def test_export_mask_refuses_the_scan_itself_by_any_path(tmp_path):
    scan = tmp_path / "ct.nii.gz"
    scan.write_bytes(b"scan")
    (tmp_path / "alias.nii.gz").symlink_to(scan)
    for path in (scan, tmp_path / "alias.nii.gz", tmp_path / "." / "ct.nii.gz"):
        with pytest.raises(OutputError, match="the mask would overwrite the image"):
            check_outputs({"mask": path}, {"image": scan})
    assert check_outputs({"mask": tmp_path / "mask.nii.gz"}, {"image": scan}) == {"mask": tmp_path / "mask.nii.gz"}


def test_session_output_is_new_empty_or_ours(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "data.csv").write_text("x")
    with pytest.raises(OutputError, match=r"holds other files \(data.csv\)"):
        check_outputs({"session": tmp_path / "mine"})
    (tmp_path / "empty").mkdir()
    check_outputs({"session": tmp_path / "empty"}, {"image": tmp_path / "ct.nii.gz"})
    with pytest.raises(OutputError, match="the session folder would replace the image inside it"):
        (tmp_path / "empty" / "ct.nii.gz").write_bytes(b"scan")
        check_outputs({"session": tmp_path / "empty"}, {"image": tmp_path / "empty" / "ct.nii.gz"})


def test_unknown_kind_is_a_programming_error(tmp_path):
    with pytest.raises(ValueError, match="unknown output kind"):
        check_outputs({"masks": tmp_path / "m.nii.gz"})


def test_format_limits():
    check_format_limits({"mask": "m.nii.gz", "probabilities": "p.nrrd"}, (32767, 2, 2), 3)
    with pytest.raises(OutputError, match="more than NIfTI-1's 32767"):
        check_format_limits({"mask": "m.nii"}, (2, 32768, 2))
    with pytest.raises(OutputError, match="2x2x2x40000"):
        check_format_limits({"probabilities": "p.nii.gz"}, (2, 2, 2), 40000)
    check_format_limits({"mask": "m.nrrd", "model": "model"}, (2, 2, 70000))
    with pytest.raises(OutputError, match="DICOM slices hold at most 65535"):
        check_format_limits({"mask": "maskdir"}, (2, 2, 70000))


def test_output_log_summary(tmp_path):
    log = OutputLog()
    log.plan({"mask": tmp_path / "m.nii.gz", "probabilities": tmp_path / "p.nii.gz", "model": tmp_path / "model"})
    assert log.summary() == "nothing was written"
    log.write("mask", lambda: (tmp_path / "m.nii.gz").write_bytes(b"m"))
    assert log.summary() == f"wrote mask {tmp_path / 'm.nii.gz'}; the probabilities and model were not written"

    def interrupted_after_the_rename():
        os.mkdir(tmp_path / "model")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        log.write("model", interrupted_after_the_rename)
    assert log.summary().endswith(f"and model {tmp_path / 'model'}; the probabilities were not written")


def test_a_dicom_series_leaves_the_process_locale_alone(tmp_path):
    import locale

    import numpy as np

    from napari_sparseseg.io import Geometry, read_image, write_labels

    before = locale.setlocale(locale.LC_ALL)
    write_labels(tmp_path / "dcm", np.arange(60, dtype=np.int16).reshape(3, 4, 5), Geometry(np.eye(4), (3, 4, 5)))
    assert read_image(tmp_path / "dcm")[0].shape == (3, 4, 5)
    assert locale.setlocale(locale.LC_ALL) == before  # GDCM had left it at "C" (ASCII subprocess output)
