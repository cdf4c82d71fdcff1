"""A widget session killed with SIGKILL in the middle of a training round loses no stroke.

A separate process (same Xvfb display) opens the sample CT in a viewer with the widget, paints
strokes, waits for the autosave, starts a long training round and reports its first progress.
It is then killed with SIGKILL. A new viewer on the same scan, with the same autosave folder,
must offer to resume and bring back exactly the voxels painted before the kill.
"""

import os
import select
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

pytestmark = pytest.mark.gui

SESSION = r'''
import dataclasses
import sys

import napari
import numpy as np
from qtpy.QtWidgets import QApplication

from napari_sparseseg._qt.widget import SparseSegWidget

image, strokes_file = sys.argv[1], sys.argv[2]
viewer = napari.Viewer(show=False)
viewer.open(image, plugin="napari-sparseseg")
widget = SparseSegWidget(viewer)
widget.settings.set_settings(dataclasses.replace(widget.settings.settings(), device="cpu", time_budget=600))
layer = widget.new_scribbles_layer()
layer.brush_size = 2


def on_saved(folder):
    np.save(strokes_file, np.asarray(layer.data))  # what the user drew, as the viewer shows it
    print("SAVED", folder, flush=True)
    widget.autosaver.saved.disconnect(on_saved)
    widget.train()


def on_progress(p):
    if p.stage == "train":
        print("TRAINING", p.step, flush=True)


widget.autosaver.saved.connect(on_saved)
widget.runner.progress.connect(on_progress)
widget.runner.round_failed.connect(lambda message: print("FAILED", message, flush=True))
for z, value in ((12, 1), (20, 2), (28, 1), (30, 2)):  # background and a structure on four slices
    for y in range(20, 60, 4):
        layer.paint((z, y, 30 + z), value)  # each call is a finished stroke (autosave is debounced)
print("PAINTED", flush=True)
QApplication.instance().exec()
'''


def _read_until(proc, marker, deadline):
    lines = []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
            lines.append(line.strip())
            if line.startswith(marker):
                return lines
        elif proc.poll() is not None:
            break
    raise AssertionError(f"no {marker!r} from the GUI session; it said: {lines}")


def test_sigkill_mid_training_then_resume_restores_every_stroke(make_napari_viewer, sample_dir, tmp_path, monkeypatch, qtbot):
    from napari_sparseseg._napari.layers import grid_array
    from napari_sparseseg._qt.widget import SparseSegWidget

    autosave = tmp_path / "autosave"
    monkeypatch.setenv("SPARSESEG_AUTOSAVE_DIR", str(autosave))
    script, strokes_file = tmp_path / "session.py", tmp_path / "strokes.npy"
    script.write_text(SESSION)
    image = str(sample_dir / "image.nii.gz")
    env = {**os.environ, "SPARSESEG_AUTOSAVE_DIR": str(autosave), "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, str(script), image, str(strokes_file)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        said = _read_until(proc, "TRAINING", time.monotonic() + 240)
        assert proc.poll() is None and any(line.startswith("SAVED") for line in said)
        os.kill(proc.pid, signal.SIGKILL)  # mid-round: the worker thread is training
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    drawn = np.load(strokes_file)
    assert (drawn == 1).sum() > 0 and (drawn == 2).sum() > 0

    viewer = make_napari_viewer()
    viewer.open(image, plugin="napari-sparseseg")
    widget = SparseSegWidget(viewer)
    assert widget.resume_box.isVisibleTo(widget) and "autosaved" in widget.resume_box.label.text()
    assert widget.resume()
    shown = np.asarray(widget.scribbles_layer.data)
    assert np.array_equal(shown, drawn)  # every stroke, voxel for voxel, where it was drawn
    img = viewer.layers["image"]
    assert np.array_equal(widget.session.scribbles, grid_array(drawn, img.metadata))  # on the file's grid
    assert widget.session.model is None and widget.session.history == []  # the killed round left nothing half-done
