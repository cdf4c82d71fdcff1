"""Round trips on the real scans; both libraries agree on world coordinates."""

import gzip

import numpy as np
import pytest

from napari_sparseseg.core.base.errors import InputError, OutputError
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


# ------------------------------------------------------------------------- unusable headers
def _small(tmp_path, suffix):
    k, j, i = np.indices((6, 7, 8))
    lab = ((k + 2 * j + 3 * i) % 4).astype(np.uint8)
    return write_labels(tmp_path / f"small{suffix}", lab, Geometry.from_spacing((6, 7, 8), (2.0, 1.0, 1.5), (5, 6, 7)))


def _nifti_with(tmp_path, name, **fields):
    import nibabel as nib

    img = nib.load(str(_small(tmp_path, ".nii.gz")))
    hdr = img.header.copy()
    for key, value in fields.items():
        hdr[key] = value
    path = tmp_path / name
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), None, hdr), str(path))
    return path


@pytest.mark.parametrize("fields, message", [
    (dict(srow_x=[np.nan, 0, 0, 0]), "unusable NIfTI sform: the header's position/orientation matrix holds NaN"),
    (dict(srow_y=[0, 0, 0, np.inf]), "NaN or infinite"),
    (dict(srow_x=[0, 0, 0, 5], srow_y=[0, 0, 0, 6], srow_z=[0, 0, 0, 7]), "voxel size of 0"),
    (dict(srow_x=[1.5, 1, 0, 5], srow_y=[0, 0, 0, 6], srow_z=[0, 0, 2, 7]), "singular"),
    (dict(sform_code=0, qoffset_x=np.nan), "unusable NIfTI qform"),
])
def test_nifti_with_unusable_position_matrix_is_refused(tmp_path, fields, message):
    path = _nifti_with(tmp_path, "bad.nii.gz", **fields)
    with pytest.raises(InputError, match=message) as e:
        read_image(path)
    assert e.value.one_line().startswith(str(path))


@pytest.mark.parametrize("value", [0.0, -1.5, np.nan])
def test_nifti_qform_with_zero_or_negative_voxel_size_is_refused(tmp_path, value):
    # nibabel itself would read a zero voxel size as 1 mm: a volume on a wrong grid.
    import nibabel as nib

    path = _small(tmp_path, ".nii")
    raw = bytearray(path.read_bytes())
    offset = nib.nifti1.header_dtype.fields["pixdim"][1]
    raw[offset + 4 * 2 : offset + 4 * 3] = np.float32(value).tobytes()  # pixdim[2]
    raw[nib.nifti1.header_dtype.fields["sform_code"][1] : nib.nifti1.header_dtype.fields["sform_code"][1] + 2] = b"\0\0"
    path.write_bytes(bytes(raw))
    with pytest.raises(InputError, match="NIfTI qform") as e:
        read_image(path)
    assert e.value.one_line().startswith(str(path))


def _text_header(tmp_path, suffix, old, new):
    path = _small(tmp_path, suffix)
    data = path.read_bytes()
    assert old.encode() in data
    bad = tmp_path / f"bad{suffix}"
    bad.write_bytes(data.replace(old.encode(), new.encode(), 1))
    return bad


@pytest.mark.parametrize("suffix, old, new, message", [
    (".mha", "ElementSpacing = 1.5 1 2", "ElementSpacing = 1.5 0 2", "voxel spacing"),
    (".mha", "ElementSpacing = 1.5 1 2", "ElementSpacing = 1.5 -1 2", "voxel spacing"),
    (".mha", "ElementSpacing = 1.5 1 2", "ElementSpacing = 1.5 nan 2", "ElementSpacing holds NaN"),
    (".mha", "Offset = -5 -6 7", "Offset = -5 inf 7", "Offset holds NaN or infinite"),
    (".mha", "TransformMatrix = 0 0 1 0 -1 0 -1 0 0", "TransformMatrix = 0 0 1 0 0 1 -1 0 0", "singular"),
    (".mha", "NDims = 3", "NDims = -237", "NDims = -237"),  # crashed the process (found by the fuzzer)
    (".mha", "DimSize = 8 7 6", "DimSize = 100000 100000 100000", "claims 1000000000000000 voxels"),
    (".mha", "DimSize = 8 7 6", "DimSize = 8 7", "DimSize holds 2 numbers"),
    (".nrrd", "space directions: (0,0,1.5) (0,-1,0) (-2,0,0)", "space directions: (0,0,1.5) (0,-1,0) (nan,0,0)", "cannot read the header"),
    (".nrrd", "space directions: (0,0,1.5) (0,-1,0) (-2,0,0)", "space directions: (0,0,1.5) (0,-1,0) (0,0,0)", "voxel spacing"),
    (".nrrd", "space directions: (0,0,1.5) (0,-1,0) (-2,0,0)", "space directions: (0,0,1.5) (0,0,1.5) (-2,0,0)", "singular"),
    (".nrrd", "sizes: 8 7 6", "sizes: 8 7 600000", "claims 33600000 voxels"),
])
def test_sitk_headers_with_unusable_geometry_are_refused(tmp_path, suffix, old, new, message):
    bad = _text_header(tmp_path, suffix, old, new)
    with pytest.raises(InputError, match=message) as e:
        read_image(bad)
    assert e.value.one_line().startswith(str(bad))


def test_labels_hold_the_scribble_convention(tmp_path):
    from napari_sparseseg.core.base.errors import ScribbleError

    g = Geometry.from_spacing((6, 7, 8))
    lab = np.zeros((6, 7, 8), np.uint16)
    lab[0, 0, :5] = 60000
    write_labels(tmp_path / "atlas.nrrd", lab, g)
    with pytest.raises(ScribbleError, match=r"60000 \(5 voxels\)") as e:
        read_labels(tmp_path / "atlas.nrrd", what="scribbles")
    assert e.value.one_line().startswith(str(tmp_path / "atlas.nrrd"))
    back, _ = read_labels(tmp_path / "atlas.nrrd", what="reference")  # a mask may hold atlas ids
    assert back.dtype == np.uint16 and back.max() == 60000
    import nibabel as nib

    frac = np.zeros((8, 7, 6), np.float32)
    frac[1, 1, 1] = 1.5
    nib.save(nib.Nifti1Image(frac, np.eye(4)), tmp_path / "frac.nii.gz")
    with pytest.raises(ScribbleError, match=r"fractional values: 1.5 \(1 voxel\)"):
        read_labels(tmp_path / "frac.nii.gz", what="corrections")


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
