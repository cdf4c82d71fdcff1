"""Screenshots of the Cohort widget on a real cohort: after Run, the worst scan opened, after Refine.

    xvfb-run -a .venv/bin/python benchmarks/cohort_screenshots.py [--out benchmarks/results/screenshots]

The cohort: the abdominal CT of ../shared/data and 4 scans derived from it as in
benchmarks/cohort.py (elastic deformation, crop, intensity change, noise), written as NIfTI;
the model: 45 s of training on strokes on 3 slices per axis of the CT. Drives the widget
through its public API in a shown viewer (software OpenGL under Xvfb renders real pixels).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "screenshots"))
    ap.add_argument("--train", type=float, default=45.0, help="training seconds of the model")
    ap.add_argument("--refine", type=int, default=20, help="training seconds of Refine")
    args = ap.parse_args(argv)
    import sys

    sys.path.insert(0, str(REPO))
    import napari
    from qtpy.QtCore import QCoreApplication

    from benchmarks.cases import load_case
    from benchmarks.cohort import derive
    from napari_sparseseg._qt.cohort_widget import CohortWidget
    from napari_sparseseg.core.base.config import TrainConfig
    from napari_sparseseg.core.base.progress import run_to_end
    from napari_sparseseg.core.training.train import Trainer
    from napari_sparseseg.evaluation.simulated_annotator import simulate_scribbles
    from napari_sparseseg.io import Geometry, write_image
    from napari_sparseseg.io.models import save_model

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="sparseseg-cohort-shots-"))
    image, geom, ref, names = load_case("ct_abdomen")
    scans = tmp / "scans"
    scans.mkdir()
    write_image(scans / "ct_00.nii.gz", image, geom)
    for i in range(1, 5):
        img, _ = derive(image, ref, geom.spacing, 1000 + i, "ct")
        write_image(scans / f"ct_{i:02d}.nii.gz", img.astype(np.int16), Geometry(geom.affine, img.shape))
    res = run_to_end(Trainer(image, simulate_scribbles(ref, 3, seed=0),
                             TrainConfig(time_budget=args.train, max_steps=None, device="cpu"), spacing=geom.spacing,
                             class_names=names).run())
    save_model(res.model, tmp / "model")

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1500, 950)
    widget = CohortWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Cohort")

    def pump(seconds=0.3):
        end = time.time() + seconds
        while time.time() < end:
            QCoreApplication.processEvents()
            time.sleep(0.02)

    def wait_idle():
        while widget.runner.busy:
            pump(0.2)
        pump(0.5)

    def shot(name):
        pump(0.5)
        path = out / name
        viewer.screenshot(str(path), canvas_only=False)
        print("wrote", path, flush=True)

    widget.new_cohort(tmp / "cohort", tmp / "model")
    widget.add_scans([scans])
    widget.workers.setValue(2)
    widget.run()
    wait_idle()
    shot("c1_cohort_after_run.png")
    worst = next(widget.table.item(r, 0).text() for r in range(widget.table.rowCount())
                 if widget.table.item(r, 2).text() == "1")
    widget.open_scan(worst)
    pump(1.0)
    layer = widget.opened.mask_layer
    z = layer.data.shape[0] // 2
    viewer.dims.set_current_step(0, z)
    for c, (ys, xs) in ((1, (slice(30, 45), slice(30, 45))), (2, (slice(60, 70), slice(60, 70)))):
        block = np.zeros(layer.data.shape, bool)
        block[z, ys, xs] = True  # corrections of two classes (a round's strokes need two)
        layer.data_setitem(np.nonzero(block), c)
    pump(1.5)
    shot("c2_cohort_worst_scan_corrected.png")
    widget.refine_seconds.setValue(args.refine)
    widget.refine()
    wait_idle()
    shot("c3_cohort_after_refine.png")
    viewer.close()


if __name__ == "__main__":
    main()
