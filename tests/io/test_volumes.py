"""Round trips on the real scans; both libraries agree on world coordinates."""

import gzip

import numpy as np
import pytest

from napari_sparseseg.core.errors import InputError, OutputError
from napari_sparseseg.io import Geometry, read_image, read_labels, write_labels

NIFTI_CASES = ["ct_abdomen_image.nii.gz", "mr_abdomen_image.nii.gz"]


@pytest.mark.parametrize("name", NIFTI_CASES)
def test_nibabel_and_sitk_give_same_array_and_world_coordinates(data_dir, name):
    a, ga = read_image(data_dir / name, backend="nibabel")
    b, gb = read_image(data_dir / name, backend="sitk")
    assert np.array_equal(a, b)
    assert ga.shape == a.shape
    idx = np.array([[0, 0, 0], [s - 1 for s in a.shape], [3, 7, 11]])
    assert np.allclose(ga.index_to_world(idx), gb.index_to_world(idx), atol=1e-4)


def test_known_geometry_of_the_ct(data_dir):
    img, g = read_image(data_dir / "ct_abdomen_image.nii.gz")
    assert img.shape == (112, 101, 122)  # (k, j, i): slice axis first
    assert np.allclose(g.spacing, (3, 3, 3))
    # nibabel affine of the file: diag(3,3,3), offset (-177.956, 11.319, 94.302) for (i,j,k).
    assert np.allclose(g.index_to_world([[0, 0, 0]]), [[-177.956, 11.319, 94.302]], atol=1e-3)
    assert np.allclose(g.index_to_world([[1, 0, 0]]) - g.index_to_world([[0, 0, 0]]), [[0, 0, 3]])


def test_anisotropic_nrrd(data_dir):
    img, g = read_image(data_dir / "mr_brain_image.nrrd")
    assert img.shape == (25, 256, 256)
    assert np.allclose(g.spacing, (6.5, 0.78125, 0.78125))
    lab, _ = read_labels(data_dir / "mr_brain_label.nrrd", like=g)
    assert set(np.unique(lab)) == {0, 1}


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"])
@pytest.mark.parametrize("case", [("ct_abdomen_image.nii.gz", "ct_abdomen_labels.nii.gz"), ("mr_brain_image.nrrd", "mr_brain_label.nrrd")])
def test_mask_round_trip_keeps_values_and_geometry(data_dir, tmp_path, suffix, case):
    _, g = read_image(data_dir / case[0])
    lab, _ = read_labels(data_dir / case[1], like=g)
    out = write_labels(tmp_path / f"mask{suffix}", lab, g)
    back, gb = read_labels(out, like=g)
    assert np.array_equal(back, lab)
    assert np.allclose(gb.affine, g.affine, atol=1e-5)
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_dicom_series_round_trip(data_dir, tmp_path):
    _, g = read_image(data_dir / "mr_abdomen_image.nii.gz")
    lab, _ = read_labels(data_dir / "mr_abdomen_labels.nii.gz", like=g)
    folder = write_labels(tmp_path / "dicom_mask", lab, g)
    assert len(list(folder.glob("*.dcm"))) == lab.shape[0]
    back, gb = read_image(folder)
    assert np.array_equal(back, lab)
    assert gb.same_grid(g, atol_mm=1e-3)


def test_errors_name_the_file_and_problem(data_dir, tmp_path):
    with pytest.raises(InputError, match="not found") as e:
        read_image(tmp_path / "missing.nii.gz")
    assert "missing.nii.gz" in e.value.one_line()
    (tmp_path / "scan.png").write_bytes(b"\x89PNG")
    with pytest.raises(InputError, match="unsupported format"):
        read_image(tmp_path / "scan.png")
    (tmp_path / "broken.nii.gz").write_bytes(gzip.compress(b"not a nifti at all" * 10))
    with pytest.raises(InputError, match="cannot read"):
        read_image(tmp_path / "broken.nii.gz")
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.zeros((5, 5), np.int16), np.eye(4)), tmp_path / "flat.nii.gz")
    with pytest.raises(InputError, match="3-D"):
        read_image(tmp_path / "flat.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((5, 5, 5, 3), np.int16), np.eye(4)), tmp_path / "4d.nii.gz")
    with pytest.raises(InputError, match="3-D"):
        read_image(tmp_path / "4d.nii.gz")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(InputError, match="no DICOM series"):
        read_image(tmp_path / "empty_dir")


def test_labels_on_another_grid_are_rejected(data_dir, tmp_path):
    _, g = read_image(data_dir / "ct_abdomen_image.nii.gz")
    lab, _ = read_labels(data_dir / "ct_abdomen_labels.nii.gz")
    with pytest.raises(InputError, match="differs from the image grid"):
        read_labels(data_dir / "mr_abdomen_labels.nii.gz", like=g)
    moved = Geometry(g.affine + np.array([[0, 0, 0, 30.0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]), g.shape)
    write_labels(tmp_path / "moved.nii.gz", lab, moved)
    with pytest.raises(InputError, match="lie elsewhere in space"):
        read_labels(tmp_path / "moved.nii.gz", like=g)


def test_failed_write_keeps_existing_file(tmp_path, data_dir):
    lab, g = read_labels(data_dir / "mr_abdomen_labels.nii.gz")
    target = tmp_path / "mask.nii.gz"
    target.write_bytes(b"precious")
    with pytest.raises(InputError):
        write_labels(target, lab[:-1], g)  # wrong shape: refused before touching the disk
    assert target.read_bytes() == b"precious"
    with pytest.raises(OutputError, match="does not exist"):
        write_labels(tmp_path / "no_such_dir" / "m.nii.gz", lab, g)


def test_writing_dicom_leaves_the_process_locale_alone(tmp_path):
    # GDCM's writer switched the C locale to "C" for good; Python then decoded every
    # subprocess's output as ASCII (lint-imports' box-drawing output failed to decode).
    import locale

    before = locale.setlocale(locale.LC_ALL)
    try:
        locale.setlocale(locale.LC_CTYPE, "C.UTF-8")
    except locale.Error:
        pytest.skip("no C.UTF-8 locale here")
    try:
        expected = locale.setlocale(locale.LC_ALL)
        write_labels(tmp_path / "dicom", np.ones((3, 4, 5), np.uint8), Geometry.from_spacing((3, 4, 5)))
        assert locale.setlocale(locale.LC_ALL) == expected
    finally:
        locale.setlocale(locale.LC_ALL, before)
