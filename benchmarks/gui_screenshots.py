"""Screenshots of the viewer + dock widget at each step of the loop, on the sample CT.

    xvfb-run -a .venv/bin/python benchmarks/gui_screenshots.py [--out benchmarks/results/screenshots]

Drives the real widget in a shown viewer (software OpenGL under Xvfb renders real pixels):
1 the sample opened with the widget, 2a the forest's early mask, 2 training (loss curve), 3 the first prediction,
4 a correction painted in the prediction layer, 5 the prediction after "Continue",
6 the same in a coronal view (painting works in any orientation), 7 the uncertainty.
The scan is shown in radiological order: anterior up, the patient's right on the left.
Only the widget's public API is used (its parts, their signals and the layers).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "screenshots"))
    ap.add_argument("--budget", type=float, default=30.0, help="training seconds per round")
    ap.add_argument("--max-steps", type=int, default=None,
                    help="also bound each round by steps (with a large --budget: the same pictures on a busy machine)")
    ap.add_argument("--pretrain", action="store_true",
                    help="switch on 'Learn the scan while I paint' and add 0_pretraining.png (the first round starts from it)")
    args = ap.parse_args(argv)
    os.environ.setdefault("SPARSESEG_AUTOSAVE_DIR", tempfile.mkdtemp(prefix="sparseseg-autosave-"))

    import napari
    from qtpy.QtCore import QCoreApplication

    from napari_sparseseg._napari.layers import display_array, grid_array
    from napari_sparseseg._qt.widget import SparseSegWidget
    from napari_sparseseg.evaluation.metrics import dice_per_class
    from napari_sparseseg.evaluation.simulated_annotator import simulate_corrections

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sample = REPO / "sample_data" / "ct_abdomen_crop"
    ref = None

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1500, 950)
    viewer.open(str(sample / "image.nii.gz"), plugin="napari-sparseseg")
    viewer.open(str(sample / "scribbles.nii.gz"), plugin="napari-sparseseg")
    img = viewer.layers["image"]
    img.contrast_limits = (-160, 240)
    widget = SparseSegWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Sparse segmentation", area="right")
    QCoreApplication.processEvents()
    viewer.reset_view()  # fit the slice to the canvas left beside the dock widget
    widget.settings.set_settings(dataclasses.replace(widget.settings.settings(), device="cpu", time_budget=args.budget,
                                                     max_steps=args.max_steps))
    from napari_sparseseg.io import read_labels

    ref, _ = read_labels(sample / "reference.nii.gz")  # on the file's grid, as the session
    ref_shown = display_array(ref, img.metadata)  # as the viewer shows it
    names = json.loads((sample / "classes.json").read_text())

    def pump(seconds=0.3):
        t = time.time()
        while time.time() - t < seconds:
            QCoreApplication.processEvents()
            time.sleep(0.01)

    def shot(name):
        pump(0.5)
        path = out / f"{name}.png"
        viewer.screenshot(str(path), canvas_only=False)
        print("wrote", path)

    scr = viewer.layers["scribbles"]
    z = int(np.argmax((scr.data > 0).sum(axis=(1, 2))))
    viewer.dims.set_point(0, z * img.scale[0] + img.translate[0])
    widget.classes.select(2)
    if args.pretrain:
        widget.settings.pretrain.setChecked(True)
        t = time.time()
        while widget.pretrainer.busy and time.time() - t < 20:
            pump(0.5)
        shot("0_pretraining")
    shot("1_scribbles")

    runner = widget.runner
    widget.train()
    while widget.pretrainer.busy:
        pump(0.1)  # Train first ends the pretraining (within a step); the round starts as it finishes
    took, previewed = False, False
    while runner.busy and runner.stage != "predict":
        pump(0.2)
        if not previewed and "preview (forest)" in viewer.layers:  # the forest's mask while the network trains
            previewed = True
            shot("2a_preview_forest")
        if len(runner.losses) > 40 and runner.stage == "train" and not took:
            took = True
            shot("2_training")
    runner.wait()
    pump(0.5)
    pred = viewer.layers["prediction"]
    d1 = dice_per_class(grid_array(pred.data, img.metadata), ref, range(1, len(names)))
    print("round 1 Dice", {names[c]: round(v, 3) for c, v in d1.items()})
    shot("3_first_prediction")

    # A correction: the simulated annotator's strokes where the prediction is wrong, painted
    # into the prediction layer (the widget turns the difference into corrections).
    # One undoable edit of the layer, which napari reports as a finished stroke (paint event).
    corr = simulate_corrections(np.asarray(pred.data), ref_shown, k=2, seed=1)
    where = np.nonzero(corr)
    pred.data_setitem(where, corr[where] - 1)
    viewer.layers.selection.active = pred
    shot("4_correction")

    widget.train()
    runner.wait()
    pump(0.5)
    d2 = dice_per_class(grid_array(viewer.layers["prediction"].data, img.metadata), ref, range(1, len(names)))
    print("round 2 Dice", {names[c]: round(v, 3) for c, v in d2.items()})
    shot("5_after_continue")
    viewer.dims.order = (1, 0, 2)
    viewer.dims.set_point(1, 40 * img.scale[1] + img.translate[1])
    shot("6_coronal")
    viewer.layers["uncertainty"].visible = True
    viewer.layers["prediction"].visible = False
    viewer.dims.order = (0, 1, 2)
    shot("7_uncertainty")
    viewer.close()


if __name__ == "__main__":
    main()
