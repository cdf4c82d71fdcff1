"""DICOM SEG in napari: opened over its open scan on the scan's grid; Export writes one for a DICOM scan only."""

import numpy as np
import pytest

pytest.importorskip("highdicom")

from napari_sparseseg._napari.layers import display_array, grid_array  # noqa: E402
from napari_sparseseg._napari.reader import get_reader, read_seg_layers  # noqa: E402
from napari_sparseseg.core.base.errors import InputError  # noqa: E402
from napari_sparseseg.io import read_image, write_labels  # noqa: E402
from napari_sparseseg.io.dicom_seg import read_dicom_seg, seg_class_names  # noqa: E402
from tests.io.dicom_series import oblique_geometry, write_ct_series  # noqa: E402

pytestmark = pytest.mark.gui


@pytest.fixture
def scan(tmp_path):
    geom = oblique_geometry(shape=(8, 20, 24))
    rng = np.random.default_rng(1)
    write_ct_series(tmp_path / "ct", rng.integers(-200, 300, geom.shape).astype(np.int16), geom)
    _, g = read_image(tmp_path / "ct")
    mask = np.zeros(g.shape, np.uint8)
    mask[2:6, 3:9, 4:15] = 1
    mask[5, 12:18, 2:5] = 2
    return tmp_path / "ct", g, mask


def test_a_seg_opens_over_its_scan_on_the_scan_grid(make_napari_viewer, scan, tmp_path):
    folder, g, mask = scan
    seg = write_labels(tmp_path / "organs.dcm", mask, g, source=folder, class_names=["background", "liver", "spleen"])
    viewer = make_napari_viewer()
    with pytest.raises(InputError, match="no open scan is that series"):
        read_seg_layers(str(seg), viewer)
    viewer.open(str(folder), plugin="napari-sparseseg")
    image = viewer.layers["ct"]
    assert get_reader(str(seg)) is read_seg_layers
    ((data, kwargs, kind),) = read_seg_layers(str(seg), viewer)
    assert kind == "labels" and kwargs["metadata"]["class_names"] == ["background", "liver", "spleen"]
    assert data.shape == image.data.shape
    assert tuple(kwargs["scale"]) == tuple(image.scale) and tuple(kwargs["translate"]) == tuple(image.translate)
    assert np.array_equal(grid_array(data, kwargs["metadata"]), mask)


def test_export_writes_a_dicom_seg_of_a_dicom_scan(make_napari_viewer, scan, tmp_path, notifications):
    from napari_sparseseg._qt.widget import SparseSegWidget

    folder, g, mask = scan
    viewer = make_napari_viewer()
    viewer.open(str(folder), plugin="napari-sparseseg")
    widget = SparseSegWidget(viewer)
    widget.new_scribbles_layer()
    widget.binding.bind(viewer.layers["ct"], widget.scribbles_layer, ["background", "liver", "tumour"], ["#000"] * 3)
    widget.binding.show_prediction(mask)
    assert any("*.dcm" in f for f in widget.files.export_filters())
    out = widget.export_mask(str(tmp_path / "exported.dcm"))
    assert out is not None and np.array_equal(read_dicom_seg(out, folder), mask)
    assert seg_class_names(out) == ["background", "liver", "tumour"]
    assert np.array_equal(viewer.layers["prediction"].data, display_array(mask, viewer.layers["ct"].metadata))


def test_export_refuses_a_dicom_seg_of_a_nifti_scan(make_napari_viewer, scan, tmp_path, notifications):
    from napari_sparseseg._qt.widget import SparseSegWidget

    folder, g, mask = scan
    image, _ = read_image(folder)
    nifti = write_labels(tmp_path / "scan.nii.gz", image - image.min(), g)
    viewer = make_napari_viewer()
    viewer.open(str(nifti), plugin="napari-sparseseg")
    widget = SparseSegWidget(viewer)
    widget.new_scribbles_layer()
    widget.binding.bind(viewer.layers["scan"], widget.scribbles_layer, ["background", "liver", "tumour"], ["#000"] * 3)
    widget.binding.show_prediction(mask)
    assert not any("*.dcm" in f for f in widget.files.export_filters())
    assert widget.export_mask(str(tmp_path / "exported.dcm")) is None
    assert "not a DICOM series folder" in notifications[-1]
    assert not (tmp_path / "exported.dcm").exists()
