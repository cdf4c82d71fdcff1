"""The npe2 manifest, reader and writer (no Qt needed)."""

import numpy as np
import pytest

from napari_sparseseg._napari.layers import grid_array
from napari_sparseseg._napari.reader import get_reader
from napari_sparseseg._napari.writer import write_labels_layer
from napari_sparseseg.io import read_image, read_labels


def test_manifest_is_valid():
    npe2 = pytest.importorskip("npe2")
    from pathlib import Path

    import napari_sparseseg

    mf = npe2.PluginManifest.from_file(Path(napari_sparseseg.__file__).parent / "napari.yaml")
    assert mf.name == "napari-sparseseg"
    ids = {c.id for c in mf.contributions.commands}
    assert all(i.startswith("napari-sparseseg.") for i in ids)
    for c in mf.contributions.commands:  # every python_name resolves
        mod, attr = c.python_name.split(":")
        assert callable(getattr(__import__(mod, fromlist=[attr]), attr))
    # One list of supported suffixes: the manifest's reader patterns and writer extensions follow io's.
    from napari_sparseseg.io import SUPPORTED_SUFFIXES
    from napari_sparseseg.io.dicom_seg import SEG_SUFFIX

    patterns = {p for r in mf.contributions.readers for p in r.filename_patterns}
    assert patterns == {f"*{s}" for s in SUPPORTED_SUFFIXES} | {f"*{SEG_SUFFIX}"}  # and DICOM SEGs over their scan
    for w in mf.contributions.writers:
        assert set(w.filename_extensions) <= set(SUPPORTED_SUFFIXES)


def test_reader_declines_unknown_and_reads_with_geometry(data_dir, tmp_path):
    (tmp_path / "x.txt").write_text("hi")
    assert get_reader(str(tmp_path / "x.txt")) is None
    assert get_reader([str(data_dir / "mr_brain_image.nrrd"), str(data_dir / "mr_brain_label.nrrd")]) is None
    layers = get_reader(str(data_dir / "mr_brain_image.nrrd"))(str(data_dir / "mr_brain_image.nrrd"))
    (data, kw, kind), = layers
    assert kind == "image" and data.shape == (25, 256, 256)
    assert np.allclose(kw["scale"], (6.5, 0.78125, 0.78125))
    (lab, lkw, lkind), = get_reader(str(data_dir / "mr_brain_label.nrrd"))(str(data_dir / "mr_brain_label.nrrd"))
    assert lkind == "labels" and np.allclose(lkw["translate"], kw["translate"])
    out = write_labels_layer(str(tmp_path / "m.nii.gz"), lab, lkw)
    back, g = read_labels(out[0])
    _, g0 = read_image(data_dir / "mr_brain_image.nrrd")
    assert np.array_equal(back, grid_array(lab, lkw["metadata"])) and np.allclose(g.affine, g0.affine, atol=1e-5)
    assert np.array_equal(back, read_labels(data_dir / "mr_brain_label.nrrd")[0])  # the file's own grid, exactly
