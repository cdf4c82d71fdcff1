"""Screenshots of the annotation widget's guidance: hints drawn, the estimate, where to paint next.

    xvfb-run -a .venv/bin/python benchmarks/guide_screenshots.py [--out benchmarks/results/screenshots]

Opens the bundled sample CT and its scribbles through the reader in a shown viewer, docks the
widget, draws a box (spleen) on the middle slice and an outside click, trains one round with
"Estimate quality" on (bounded by --steps), then clicks the first "Paint next" suggestion; saves the session, drops the hint layers and
loads it again (the boxes and clicks come back).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "screenshots"))
    ap.add_argument("--steps", type=int, default=150)
    args = ap.parse_args(argv)
    import sys

    sys.path.insert(0, str(REPO))
    import napari
    from qtpy.QtCore import QCoreApplication, Qt

    from napari_sparseseg._qt.widget import SparseSegWidget

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sample = REPO / "sample_data" / "ct_abdomen_crop"
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1500, 1000)
    viewer.open(str(sample / "image.nii.gz"), plugin="napari-sparseseg")
    viewer.open(str(sample / "scribbles.nii.gz"), plugin="napari-sparseseg")
    widget = SparseSegWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Sparse segmentation")
    widget.settings.set_settings(dataclasses.replace(widget.settings.settings(), device="cpu", max_steps=args.steps,
                                                     time_budget=3600.0, estimate=True))

    def pump(seconds=0.3):
        end = time.time() + seconds
        while time.time() < end:
            QCoreApplication.processEvents()
            time.sleep(0.02)

    def shot(name):
        pump(0.8)
        path = out / name
        viewer.screenshot(str(path), canvas_only=False)
        print("wrote", path, flush=True)

    img = viewer.layers["image"]
    z = img.data.shape[0] // 2
    viewer.dims.set_current_step(0, z)
    widget.classes.select(3)  # spleen
    widget.hints.box_button.click()
    boxes = viewer.layers["boxes"]
    boxes.add(np.array([[z, 18, 62], [z, 18, 92], [z, 42, 92], [z, 42, 62]], float), shape_type="rectangle")
    boxes.edge_color = "yellow"
    boxes.edge_width = 1.5
    viewer.layers.move(viewer.layers.index(boxes), len(viewer.layers))  # drawn on top
    widget.classes.select(1)
    widget.hints.click_button.click()
    viewer.layers["clicks"].add(np.array([[z, 6.0, 10.0]]))
    pump(0.5)
    shot("g1_hints_drawn.png")
    widget.train()
    while widget.runner.busy:
        pump(0.3)
    pump(1.0)
    from qtpy.QtWidgets import QScrollArea

    bar = widget.findChild(QScrollArea).verticalScrollBar()
    bar.setValue(bar.maximum())  # the estimate and the suggestions, at the dock's foot
    shot("g2_round_estimate_and_suggestions.png")
    items = widget.suggestions.list
    if items.count():
        item = items.item(0)
        widget.suggestions.chosen.emit(item.data(Qt.ItemDataRole.UserRole))
        items.setCurrentItem(item)
        shot("g3_suggested_slice_shown.png")
    print("estimate:", widget.rounds.estimate.text())
    print("suggestions:", [items.item(i).text() for i in range(items.count())])
    # Save, drop the hint layers, load: the boxes and clicks come back with the session.
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        widget.save_session(str(Path(tmp) / "session"))
        for name in ("boxes", "clicks"):
            viewer.layers.remove(name)
        widget.load_session(str(Path(tmp) / "session"))
        viewer.dims.order = (0, 1, 2)  # back to the axial view the box was drawn in
        viewer.dims.set_current_step(0, z)
        viewer.layers["boxes"].edge_color = "yellow"
        viewer.layers["boxes"].edge_width = 1.5
        shot("g4_session_resumed_with_hints.png")
    viewer.close()


if __name__ == "__main__":
    main()
