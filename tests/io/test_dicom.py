"""DICOM series folders: a clean series round-trips; a damaged or mixed folder is refused, saying where.

Series are written with the package's own DICOM writer (``write_labels`` to a folder), then
damaged the way copies go wrong: a slice lost, copied twice, truncated, moved, another series
mixed in. Each case must be refused with an ``InputError`` naming the problem, never read as a
shorter volume on a wrong grid.
"""

import locale
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from napari_sparseseg.cli import main
from napari_sparseseg.core.base.errors import InputError
from napari_sparseseg.io import Geometry, read_image, write_labels

SHAPE = (6, 7, 8)


def _geometry(shape=SHAPE, spacing_k=2.0):
    c, s = np.cos(0.2), np.sin(0.2)
    affine = np.array([[spacing_k, 0, 0, 10.0], [0, 1.0 * c, -1.5 * s, -20.0], [0, 1.0 * s, 1.5 * c, 30.0], [0, 0, 0, 1]])
    return Geometry(affine, shape)


def _labels(shape=SHAPE):
    k, j, i = np.indices(shape)
    return ((3 * k + 2 * j + i) % 11).astype(np.uint8)  # every slice different


@pytest.fixture
def series(tmp_path):
    return write_labels(tmp_path / "series", _labels(), _geometry())


def _slices(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.dcm"))


def _rewrite(path: Path, edit) -> None:
    """Read one slice file, change it, write it back (same UIDs)."""
    img = edit(sitk.ReadImage(str(path)))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    writer.SetFileName(str(path))
    saved = locale.setlocale(locale.LC_ALL)
    try:
        writer.Execute(img)
    finally:
        locale.setlocale(locale.LC_ALL, saved)  # GDCM's writer leaves the C locale at "C"


def _shift(mm: float):
    def edit(img):
        normal = np.asarray(img.GetDirection()).reshape(3, 3)[:, 2]
        origin = np.asarray(img.GetOrigin()) + mm * normal
        img.SetOrigin(tuple(origin))
        img.SetMetaData("0020|0032", "\\".join(f"{v:.6f}" for v in origin))
        return img

    return edit


def _refused(folder, *patterns):
    with pytest.raises(InputError) as info:
        read_image(folder)
    line = info.value.one_line()
    assert line.startswith(str(folder))
    for pattern in patterns:
        assert pattern in line, line
    return line


# ----------------------------------------------------------------------------- accepted
def test_clean_series_round_trips_exactly(series):
    arr, geom = read_image(series)
    assert np.array_equal(arr, _labels())
    assert geom.same_grid(_geometry(), atol_mm=1e-4)


def test_file_names_out_of_order_and_stray_files_do_not_matter(series):
    files = _slices(series)
    for i, f in enumerate(files):  # names now run against the positions
        f.rename(series / f"x{len(files) - i:03d}.dcm")
    (series / "notes.txt").write_text("scanned on Tuesday")
    (series / ".DS_Store").write_bytes(b"\0\1\2")
    arr, geom = read_image(series)
    assert np.array_equal(arr, _labels())
    assert geom.same_grid(_geometry(), atol_mm=1e-4)


# ----------------------------------------------------------------------------- refused
def test_missing_slice_says_between_which_positions(series):
    _slices(series)[2].unlink()  # instance number 3
    line = _refused(series, "slices are missing: 1 slice(s) between positions", "spacing is 2 mm")
    assert "instance numbers 2 and 4" in line or "instance numbers 4 and 2" in line


def test_two_missing_slices_are_counted(series):
    for f in _slices(series)[2:4]:
        f.unlink()
    _refused(series, "2 slice(s) between")


def test_duplicated_slice_position(series):
    shutil.copy(_slices(series)[3], series / "copy_of_slice.dcm")
    _refused(series, "occur twice", "copy_of_slice.dcm")


def test_uneven_spacing_lists_the_spacings(series):
    for f in _slices(series)[4:]:  # the step between the 4th and 5th slice becomes 1 or 3 mm
        _rewrite(f, _shift(1.0))
    line = _refused(series, "unevenly spaced")
    assert "spacings of 1, 2 mm" in line or "spacings of 2, 3 mm" in line, line


def test_slightly_uneven_spacing_is_refused_too(series):
    _rewrite(_slices(series)[5], _shift(0.3))  # the last step is 2.3 (or 1.7) mm
    line = _refused(series, "unevenly spaced")
    assert "2.3" in line or "1.7" in line, line


def test_rounded_positions_are_accepted(series):
    _rewrite(_slices(series)[5], _shift(0.004))  # within rounding of the position tags
    arr, _ = read_image(series)
    assert arr.shape == SHAPE


def test_damaged_slice_file_is_named(series):
    victim = _slices(series)[2]
    victim.write_bytes(victim.read_bytes()[: len(victim.read_bytes()) // 2])
    _refused(series, victim.name, "cannot be read")


def test_garbage_slice_file_is_named(series):
    victim = _slices(series)[4]
    victim.write_bytes(b"this is no DICOM file" * 20)
    _refused(series, victim.name, "damaged")


def test_slice_of_another_size(series):
    def crop(img):
        out = img[:, :-1, :]
        for key in img.GetMetaDataKeys():
            out.SetMetaData(key, img.GetMetaData(key))
        return out

    _rewrite(_slices(series)[2], crop)
    _refused(series, "different sizes", "8x6")


def test_slice_of_another_orientation(series):
    def rotate(img):
        img.SetDirection((0.0, 0.0, 1.0, 0.6, -0.8, 0.0, 0.8, 0.6, 0.0))
        img.SetMetaData("0020|0037", "0\\0.6\\0.8\\0\\-0.8\\0.6")
        return img

    victim = _slices(series)[3]
    _rewrite(victim, rotate)
    _refused(series, "different orientations", victim.name)


def test_two_series_in_one_folder_are_listed(tmp_path, series):
    other = write_labels(tmp_path / "other", _labels((4, 7, 8)), _geometry((4, 7, 8), 3.0))
    for f in _slices(other):
        f.rename(series / f"other_{f.name}")
    uids = set()
    for f in _slices(series):
        r = sitk.ImageFileReader()
        r.SetFileName(str(f))
        r.ReadImageInformation()
        uids.add(r.GetMetaData("0020|000e").strip())
    assert len(uids) == 2
    line = _refused(series, "holds 2 DICOM series", "(6 slices)", "(4 slices)", "napari-sparseseg mask",
                    "Put each series in its own folder")
    for uid in uids:
        assert uid in line


def test_single_slice_and_empty_folder(tmp_path, series):
    for f in _slices(series)[1:]:
        f.unlink()
    _refused(series, "single slice")
    (tmp_path / "empty").mkdir()
    _refused(tmp_path / "empty", "no DICOM series")


def test_only_damaged_files(tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "a.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 50)
    _refused(folder, "cannot be parsed", "a.dcm")


def test_cli_refuses_a_series_with_a_missing_slice(series, tmp_path, capsys):
    _slices(series)[2].unlink()
    out = tmp_path / "mask.nii.gz"
    code = main(["predict", str(series), "--model", str(tmp_path / "no_model"), "-o", str(out), "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith(f"sparseseg: error: {series}: slices are missing")
    assert not out.exists()
