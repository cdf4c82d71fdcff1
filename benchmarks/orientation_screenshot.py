"""Screenshot: the sample CT (RAS storage) beside the same scan stored as LPS, through the reader.

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python benchmarks/orientation_screenshot.py

Writes benchmarks/results/screenshots/orientation_axial.png and orientation_coronal.png: both
copies must look identical, radiological: anterior up, the patient's right on the screen's
left (the liver on the left of the picture), superior up in the coronal view. A third panel
shows the brain MRI of tests/data, stored in yet another order (NRRD, left-anterior-superior
axes). Letters mark the patient's directions at the edges of each panel (derived from each
layer's geometry, not typed in).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _write_lps_copy(src: Path, out: Path) -> Path:
    """The same voxels stored in LPS order (i and j reversed) as .mha, with SimpleITK."""
    from napari_sparseseg.io import Geometry, read_image, write_image

    arr, g = read_image(src)
    new = np.ascontiguousarray(arr[:, ::-1, ::-1])
    aff = g.affine.copy()
    aff[:3, 1], aff[:3, 2] = -g.affine[:3, 1], -g.affine[:3, 2]
    aff[:3, 3] = g.index_to_world(np.array([0, arr.shape[1] - 1, arr.shape[2] - 1], float))
    return write_image(out, new, Geometry(aff, new.shape))


def _direction_letters(layer, axes: tuple[int, int]) -> list[tuple[tuple, str]]:
    """Letters at the middle of each panel edge naming the patient direction found there (from the geometry)."""
    from napari_sparseseg._napari.layers import geometry_from_layer
    from napari_sparseseg._napari.orientation import orientation_from_metadata

    data_shape = layer.data.shape
    geom = geometry_from_layer(data_shape, layer.metadata)
    o = orientation_from_metadata(layer.metadata)
    mid = [s // 2 for s in data_shape]

    def world(display_index):
        grid = [0, 0, 0]
        for d, (p, f) in enumerate(zip(o.perm, o.flip, strict=True)):
            grid[p] = data_shape[d] - 1 - display_index[d] if f else display_index[d]
        return geom.index_to_world(np.array(grid, float))

    out = []
    for ax in axes:
        for end in (0, data_shape[ax] - 1):
            idx = list(mid)
            idx[ax] = end
            step = world(idx) - world(mid)
            k = int(np.argmax(np.abs(step)))
            # RAS world coordinates: +x is the patient's right, +y anterior, +z superior.
            letter = {0: "R" if step[0] > 0 else "L", 1: "A" if step[1] > 0 else "P",
                      2: "S" if step[2] > 0 else "I"}[k]
            pos = [i * s + t for i, s, t in zip(idx, layer.scale, layer.translate, strict=True)]
            out.append((tuple(pos), letter))
    return out


def _shoot(scans, prefix: str, out: Path, views=("axial", "coronal")) -> None:
    """One viewer, one grid cell per scan (with its direction letters), a PNG per view."""
    import napari
    from qtpy.QtCore import QCoreApplication

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(max(900, 500 * len(scans) + 100), 700)
    layers = []
    for path, name, window in scans:
        (lay,) = viewer.open(str(path), plugin="napari-sparseseg")
        lay.name = name
        lay.contrast_limits = window or tuple(float(v) for v in np.percentile(np.asarray(lay.data), (1, 99.5)))
        layers.append(lay)
    viewer.grid.enabled = True
    viewer.grid.shape = (1, len(scans))
    viewer.grid.stride = 2

    def pump(seconds=0.5):
        t = time.time()
        while time.time() - t < seconds:
            QCoreApplication.processEvents()
            time.sleep(0.02)

    setups = {"axial": ((1, 2), (0, 1, 2)), "coronal": ((0, 2), (1, 0, 2))}
    for view in views:
        axes, order = setups[view]
        viewer.dims.order = order
        marks = []
        for lay in layers:
            pts = _direction_letters(lay, axes)
            marks.append(viewer.add_points([p for p, _ in pts], features={"letter": [t for _, t in pts]}, size=0.1,
                                           text={"string": "{letter}", "size": 18, "color": "yellow"},
                                           name=f"{lay.name} letters"))
        for lay, m in zip(layers, marks, strict=True):  # each scan's letters in its own grid cell
            viewer.layers.move(viewer.layers.index(m), viewer.layers.index(lay) + 1)
        mid = layers[0].data.shape[order[0]] // 2
        viewer.dims.set_point(order[0], mid * layers[0].scale[order[0]] + layers[0].translate[order[0]])
        viewer.reset_view()
        pump(1.0)
        path = out / f"{prefix}_{view}.png"
        viewer.screenshot(str(path), canvas_only=True)
        print("wrote", path)
        for m in marks:
            viewer.layers.remove(m)
    viewer.close()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "screenshots"))
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    src = REPO / "sample_data" / "ct_abdomen_crop" / "image.nii.gz"
    lps = _write_lps_copy(src, Path(tempfile.mkdtemp()) / "image_lps.mha")
    ct = (-160, 240)
    _shoot([(src, "RAS storage (.nii.gz)", ct), (lps, "LPS storage (.mha)", ct)], "orientation", out)
    _shoot([(REPO / "tests" / "data" / "mr_brain_image.nrrd", "brain MRI (.nrrd)", None)], "orientation_brain", out,
           views=("axial",))


if __name__ == "__main__":
    main()
