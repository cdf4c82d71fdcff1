"""Radiological display: the same scan stored in any order looks the same, and round-trips exactly.

The same real scan is written as RAS NIfTI, LPS NRRD/MHA and permuted/flipped copies; the
reader must show identical pictures (array, scale, translate), and a mask painted on the
display and exported must land on each file's own grid exactly.
"""

import itertools
import warnings

import numpy as np
import pytest

from napari_sparseseg._napari.layers import display_array, geometry_from_layer, grid_array, layer_kwargs
from napari_sparseseg._napari.orientation import (
    DisplayOrientation,
    ObliqueScanWarning,
    orientation_from_metadata,
    radiological_orientation,
)
from napari_sparseseg._napari.reader import read_layers
from napari_sparseseg._napari.writer import write_labels_layer
from napari_sparseseg.io import Geometry, read_image, read_labels, write_image, write_labels


def _reoriented(arr, geom, perm, flip):
    """The same voxels stored in another order: axes permuted then flipped, geometry to match."""
    new = np.transpose(arr, perm)
    for d, f in enumerate(flip):
        if f:
            new = np.flip(new, d)
    aff = np.eye(4)
    first = [0, 0, 0]
    for d, (p, f) in enumerate(zip(perm, flip, strict=True)):
        col = geom.affine[:3, p]
        aff[:3, d] = -col if f else col
        first[p] = geom.shape[p] - 1 if f else 0
    aff[:3, 3] = geom.index_to_world(np.array(first, float))
    return np.ascontiguousarray(new), Geometry(aff, new.shape)


@pytest.fixture(scope="module")
def stored_copies(tmp_path_factory, sample_dir):
    """The sample CT (RAS storage) as an LPS .mha, an LPS .nrrd and two permuted/flipped NIfTIs."""
    d = tmp_path_factory.mktemp("orient")
    arr, geom = read_image(sample_dir / "image.nii.gz")
    copies = {"ras.nii.gz": (arr, geom)}
    copies["lps.mha"] = _reoriented(arr, geom, (0, 1, 2), (False, True, True))  # i, j reversed: LPS order
    copies["lps.nrrd"] = copies["lps.mha"]
    copies["permuted.nii.gz"] = _reoriented(arr, geom, (2, 0, 1), (False, False, False))
    copies["permuted_flipped.nii.gz"] = _reoriented(arr, geom, (1, 2, 0), (True, False, True))
    return {name: write_image(d / name, a, g) for name, (a, g) in copies.items()}


def test_every_storage_order_shows_the_same_picture(stored_copies):
    shown = {}
    for name, path in stored_copies.items():
        (data, kw, kind), = read_layers(str(path))
        assert kind == "image"
        shown[name] = (np.asarray(data), np.array(kw["scale"]), np.array(kw["translate"]))
    ref_data, ref_scale, ref_translate = shown["ras.nii.gz"]
    for name, (data, scale, translate) in shown.items():
        assert np.array_equal(data, ref_data), name
        assert np.allclose(scale, ref_scale) and np.allclose(translate, ref_translate, atol=1e-3), name
    # The storage orders really differ on disk (otherwise the test could not fail).
    raw = {name: read_image(p)[0] for name, p in stored_copies.items()}
    assert not np.array_equal(raw["lps.mha"], raw["ras.nii.gz"]) and raw["permuted.nii.gz"].shape != raw["ras.nii.gz"].shape


def test_display_is_radiological(sample_dir):
    """Axial: anterior up, patient's right on the screen's left; slider head -> foot."""
    arr, geom = read_image(sample_dir / "image.nii.gz")
    (data, kw, _), = read_layers(str(sample_dir / "image.nii.gz"))
    g = geometry_from_layer(np.shape(data), kw["metadata"])
    o = orientation_from_metadata(kw["metadata"])
    # World position of display voxels: moving along each display axis goes inferior, posterior, left.
    for d, (axis, sign) in enumerate([(2, -1), (1, -1), (0, -1)]):
        a = [0, 0, 0]
        b = [0, 0, 0]
        b[d] = 1
        ga, gb = (grid_index(o, geom.shape, x) for x in (a, b))
        step = g.index_to_world(np.array(gb, float)) - g.index_to_world(np.array(ga, float))
        assert np.sign(step[axis]) == sign and np.argmax(np.abs(step)) == axis, (d, step)


def grid_index(o: DisplayOrientation, grid_shape, display_index):
    out = [0, 0, 0]
    for d, (p, f) in enumerate(zip(o.perm, o.flip, strict=True)):
        out[p] = grid_shape[p] - 1 - display_index[d] if f else display_index[d]
    return out


def test_painting_the_display_writes_the_file_grid_and_exports_exactly(stored_copies, tmp_path):
    for name, path in stored_copies.items():
        (data, kw, _), = read_layers(str(path))
        grid_img, geom = read_image(path)
        scribbles_grid = np.zeros(grid_img.shape, np.uint8)
        shown = display_array(scribbles_grid, kw["metadata"])
        shown[10, 20:25, 30] = 2  # a stroke on the display...
        assert (scribbles_grid == 2).sum() == 5  # ...lands in the grid array underneath (a view)
        assert np.shares_memory(grid_array(shown, kw["metadata"]), scribbles_grid)
        out = write_labels_layer(str(tmp_path / f"mask_{name.split('.')[0]}.nrrd"), shown, kw)[0]
        back, g = read_labels(out)
        assert np.array_equal(back, scribbles_grid) and np.allclose(g.affine, geom.affine, atol=1e-4), name
    # The same stroke on the display is the same anatomy in every copy.
    worlds = []
    for name in stored_copies:
        back, g = read_labels(tmp_path / f"mask_{name.split('.')[0]}.nrrd")
        worlds.append(np.round(sorted(map(tuple, g.index_to_world(np.argwhere(back == 2)))), 3))
    for w in worlds[1:]:
        assert np.allclose(w, worlds[0], atol=1e-3)


@pytest.mark.parametrize("perm, flip", list(itertools.product(itertools.permutations(range(3)), [(False,) * 3, (True, False, True)])))
def test_views_invert_each_other(perm, flip):
    o = DisplayOrientation(perm, flip)
    a = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)  # a leading channel axis is kept
    shown = o.to_display(a)
    assert shown.shape[1:] == o.display_shape(a.shape[1:]) and o.grid_shape(shown.shape[1:]) == a.shape[1:]
    assert np.array_equal(o.to_grid(shown), a) and np.shares_memory(shown, a)
    assert DisplayOrientation.from_dict(o.to_dict()) == o
    # Voxel indices follow the arrays: a grid voxel lands where the display array shows it.
    grid = np.argwhere(a[0] >= 0)
    display = o.to_display_index(grid, a.shape[1:])
    assert np.array_equal(shown[0][tuple(display.astype(int).T)], a[0][tuple(grid.T)])
    assert np.array_equal(o.to_grid_index(display, shown.shape[1:]), grid)


def test_oblique_scan_warns_and_still_round_trips(tmp_path):
    theta = np.radians(12)
    rot = np.array([[1, 0, 0], [0, np.cos(theta), -np.sin(theta)], [0, np.sin(theta), np.cos(theta)]])
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag([2.0, 1.0, 1.0])
    geom = Geometry(aff, (6, 7, 8))
    with pytest.warns(ObliqueScanWarning, match="oblique"):
        o = radiological_orientation(geom)
    assert 11 < o.tilt_degrees < 13
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        radiological_orientation(Geometry.from_spacing((6, 7, 8), (2, 1, 1)))  # axis-aligned: no warning
    labels = np.random.default_rng(0).integers(0, 3, (6, 7, 8)).astype(np.uint8)
    with pytest.warns(ObliqueScanWarning):
        kw = layer_kwargs(geom, "m")
    out = write_labels(tmp_path / "oblique.nii.gz", labels, geom)
    with pytest.warns(ObliqueScanWarning):
        (data, kw, kind), = read_layers(str(out))
    back, g = read_labels(write_labels_layer(str(tmp_path / "again.mha"), data, kw)[0])
    assert np.array_equal(back, labels) and np.allclose(g.affine, geom.affine, atol=1e-4)
