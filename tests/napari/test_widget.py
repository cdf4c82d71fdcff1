"""The annotation dock widget, driven in a real viewer (Xvfb): the whole scribble -> train ->
correct loop, Stop, export, session save/load, autosave and error notifications."""

import numpy as np
import pytest

pytestmark = pytest.mark.gui

SAMPLE = "ct_abdomen"


@pytest.fixture(autouse=True)
def _autosave_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSESEG_AUTOSAVE_DIR", str(tmp_path / "autosave"))


@pytest.fixture
def loop(make_napari_viewer, sample_dir, qtbot):
    """A viewer with the sample opened through the reader, and the widget docked."""
    from napari_sparseseg._qt.widget import SparseSegWidget

    viewer = make_napari_viewer()
    viewer.open(str(sample_dir / "image.nii.gz"), plugin="napari-sparseseg")
    viewer.open(str(sample_dir / "scribbles.nii.gz"), plugin="napari-sparseseg")
    widget = SparseSegWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.max_steps = 4
    widget.device_combo.setCurrentText("cpu")
    yield viewer, widget
    widget._stop.set()
    qtbot.waitUntil(lambda: widget._worker is None and widget._saving is None, timeout=120_000)


def _run(widget, qtbot, **kw):
    assert widget.train(**kw)
    qtbot.waitUntil(lambda: widget._worker is None, timeout=300_000)


def test_reader_layers_and_widget_setup(loop, sample_dir):
    import json

    from napari_sparseseg.io import read_image

    viewer, widget = loop
    _, geom = read_image(sample_dir / "image.nii.gz")
    img, scr = viewer.layers["image"], viewer.layers["scribbles"]
    assert np.allclose(img.scale, geom.spacing) and np.allclose(scr.scale, geom.spacing)
    assert widget.image_combo.currentText() == "image" and widget.scribbles_combo.currentText() == "scribbles"
    names = json.loads((sample_dir / "classes.json").read_text())
    # The class table drives the layer: names, colours, brush label.
    widget._set_classes(names)
    assert widget.class_names == names
    assert np.allclose(scr.colormap.map(np.array([3]))[0][:3], np.array([int(widget.colors[2][i : i + 2], 16) / 255 for i in (1, 3, 5)]), atol=0.01)
    widget.class_table.selectRow(2)
    assert scr.selected_label == 3 and scr.mode == "paint" and scr.n_edit_dimensions == 2
    widget.add_class("tumour")
    assert widget.class_names[-1] == "tumour" and scr.selected_label == len(names) + 1
    widget.remove_class(len(names))  # no strokes: allowed
    assert widget.class_names == names
    widget.remove_class(1)  # liver has strokes: refused, nothing erased
    assert widget.class_names == names and (scr.data == 2).any()


def test_train_predict_correct_export_and_session(loop, qtbot, tmp_path, sample_dir):
    from napari_sparseseg.core.session import Session
    from napari_sparseseg.io import read_image, read_labels

    viewer, widget = loop
    import json

    widget._set_classes(json.loads((sample_dir / "classes.json").read_text()))
    _run(widget, qtbot)
    s = widget.session
    img = viewer.layers["image"]
    pred, unc = viewer.layers["prediction"], viewer.layers["uncertainty"]
    assert pred.data.shape == img.data.shape and np.allclose(pred.scale, img.scale) and np.allclose(unc.scale, img.scale)
    assert not unc.visible and unc.data.min() >= 0 and unc.data.max() <= 1
    assert s.model is not None and s.history[-1]["steps"] == 4 and len(widget.loss_plot.losses) == 4
    assert widget.train_btn.text() == "Continue"

    # Correct by repainting the prediction directly: the difference becomes corrections.
    before_pred = np.array(pred.data)
    z = img.data.shape[0] // 2
    target = 1 if (before_pred[z, 30:34, 40:60] != 1).any() else 2
    pred.paint((z, 32, 50), target)  # one finished stroke
    changed = pred.data != before_pred
    assert changed.any()
    # The finished stroke triggers an autosave, which folds the edit into y and w(y).
    qtbot.waitUntil(lambda: s.corrected[changed].all(), timeout=30_000)
    assert (s.scribbles[changed] == target + 1).all()
    weights_before = {k: v.clone() for k, v in s.model.network.state_dict().items()}
    _run(widget, qtbot)
    assert len(s.history) == 2 and s.history[-1]["corrections"] >= int(changed.sum())
    import torch

    assert any(not torch.equal(weights_before[k], v) for k, v in s.model.network.state_dict().items())
    assert not np.array_equal(np.asarray(viewer.layers["prediction"].data), before_pred)
    # "Only regions touching a stroke" (default on): nothing left for the filter to drop.
    from napari_sparseseg.core.postprocess import keep_stroke_regions

    assert widget.regions_check.isChecked()
    assert keep_stroke_regions(np.array(viewer.layers["prediction"].data), s.scribbles) == {}

    # Export -> re-read gives the same geometry.
    out = widget.export_mask(str(tmp_path / "mask.nrrd"))
    back, g = read_labels(out)
    _, g0 = read_image(sample_dir / "image.nii.gz")
    assert np.array_equal(back, viewer.layers["prediction"].data) and np.allclose(g.affine, g0.affine, atol=1e-4)

    # Save -> load restores scribbles, corrections, model, classes, history.
    widget.regions_check.setChecked(False)  # a setting saved with the session
    folder = widget.save_session(str(tmp_path / "session"))
    widget.regions_check.setChecked(True)
    back = Session.load(folder)
    assert back.image is None and back.image_path.endswith("image.nii.gz")  # referenced, not copied
    assert np.array_equal(back.scribbles, s.scribbles) and np.array_equal(back.corrected, s.corrected)
    assert back.class_names == s.class_names and len(back.history) == 2 and back.model is not None

    viewer2_layers = len(viewer.layers)
    for name in ("prediction", "uncertainty", "scribbles"):
        viewer.layers.remove(name)
    widget.class_table.setRowCount(0)
    assert widget.load_session(str(folder))
    assert len(viewer.layers) == viewer2_layers - 1  # image reused; scribbles + prediction back (uncertainty not stored)
    assert np.array_equal(viewer.layers["scribbles"].data, s.scribbles)
    assert widget.class_names == back.class_names and widget.session.history == back.history
    assert widget.session.model is not None and widget.train_btn.text() == "Continue"
    assert not widget.regions_check.isChecked()


def test_stop_mid_run_keeps_a_usable_model(loop, qtbot):
    viewer, widget = loop
    widget.max_steps = 100_000
    assert widget.train(time_budget=600)
    qtbot.waitUntil(lambda: len(widget.loss_plot.losses) >= 3, timeout=120_000)
    widget.stop()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=120_000)
    h = widget.session.history[-1]
    assert h["stopped_by"] == "cancelled" and 3 <= h["steps"] < 100
    assert "prediction" in viewer.layers  # the kept model predicted
    assert widget.predict()  # and it can be used again
    qtbot.waitUntil(lambda: widget._worker is None, timeout=120_000)


def test_autosave_after_a_stroke_and_resume_offer(make_napari_viewer, sample_dir, qtbot):
    from napari_sparseseg._qt.widget import SparseSegWidget

    viewer = make_napari_viewer()
    viewer.open(str(sample_dir / "image.nii.gz"), plugin="napari-sparseseg")
    widget = SparseSegWidget(viewer)
    lay = widget.new_scribbles_layer()
    assert lay.data.shape == viewer.layers["image"].data.shape and np.allclose(lay.scale, viewer.layers["image"].scale)
    lay.paint((20, 40, 50), 2)
    qtbot.waitUntil(lambda: widget.last_autosave is not None and widget._saving is None, timeout=30_000)
    assert (widget.last_autosave / "session.json").is_file()

    # A new viewer on the same scan offers to resume, and resuming brings the stroke back.
    viewer.close()
    viewer2 = make_napari_viewer()
    viewer2.open(str(sample_dir / "image.nii.gz"), plugin="napari-sparseseg")
    w2 = SparseSegWidget(viewer2)
    assert w2.resume_box.isVisibleTo(w2)
    assert w2.resume()
    assert (np.asarray(viewer2.layers["scribbles"].data) == 2).sum() == (lay.data == 2).sum() > 0


def test_errors_become_notifications(make_napari_viewer, qtbot, monkeypatch):
    from napari_sparseseg._qt import widget as wmod

    shown = []
    monkeypatch.setattr(wmod, "show_error", shown.append)
    viewer = make_napari_viewer()
    w = wmod.SparseSegWidget(viewer)
    assert not w.train() and "No image" in shown[-1]
    viewer.add_image(np.random.default_rng(0).normal(size=(24, 32, 32)).astype(np.float32), name="img")
    assert not w.train() and "No scribbles" in shown[-1]
    viewer.add_labels(np.zeros((24, 32, 30), np.uint8), name="scribbles")
    assert not w.train() and "shape" in shown[-1]
    viewer.layers.remove("scribbles")
    lay = w.new_scribbles_layer()
    w.max_steps = 2
    w.device_combo.setCurrentText("cpu")
    assert w.train()  # no strokes: fails in the worker, reported, GUI usable
    qtbot.waitUntil(lambda: w._worker is None, timeout=60_000)
    assert "no scribbles" in shown[-1].lower()
    lay.data[5, 5:9, 5:9] = 1  # background only
    assert w.train()
    qtbot.waitUntil(lambda: w._worker is None, timeout=60_000)
    assert "one class" in shown[-1].lower() or "structure" in shown[-1].lower()
    assert w.train_btn.isEnabled() and w.session.model is None


def test_plugin_widget_from_manifest_and_live_mode(make_napari_viewer, sample_dir, qtbot):
    """`napari -w napari-sparseseg` path: the manifest's widget docks; Live retrains after a stroke."""
    from napari_sparseseg._qt.widget import SparseSegWidget

    viewer = make_napari_viewer()
    viewer.open(str(sample_dir / "image.nii.gz"), plugin="napari-sparseseg")
    viewer.open(str(sample_dir / "scribbles.nii.gz"), plugin="napari-sparseseg")
    _, widget = viewer.window.add_plugin_dock_widget("napari-sparseseg", "Sparse segmentation")
    assert isinstance(widget, SparseSegWidget)
    assert widget.class_names[1:] == ["liver", "spleen", "kidney_right", "kidney_left"]  # classes.json beside the file
    widget.max_steps = 2
    widget.device_combo.setCurrentText("cpu")
    widget.live_check.setChecked(True)
    viewer.layers["scribbles"].paint((20, 40, 50), 3)
    qtbot.waitUntil(lambda: widget.session is not None and len(widget.session.history) == 1 and widget._worker is None, timeout=120_000)
    assert "prediction" in viewer.layers and 1 <= widget.session.history[-1]["steps"] <= 2  # a short live round
    qtbot.waitUntil(lambda: widget._saving is None, timeout=30_000)
