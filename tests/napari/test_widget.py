"""The annotation dock widget, driven in a real viewer (Xvfb): the whole scribble -> train ->
correct loop, Stop, export, session save/load, autosave and error notifications.

Tests wait on the parts' public signals (``widget.runner.round_finished``/``idle``,
``widget.autosaver.saved``), never on private state.
"""

import dataclasses
import json

import numpy as np
import pytest

from napari_sparseseg.io.sessions import load_session

pytestmark = pytest.mark.gui

ROUND_MS = 300_000


@pytest.fixture(autouse=True)
def _autosave_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSESEG_AUTOSAVE_DIR", str(tmp_path / "autosave"))


def _settings(widget, **changes):
    widget.settings.set_settings(dataclasses.replace(widget.settings.settings(), **changes))


def _finish(widget, qtbot):
    """Stop whatever runs and let the last autosave end (teardown)."""
    if widget.runner.busy:
        with qtbot.waitSignal(widget.runner.idle, timeout=ROUND_MS):
            widget.stop()
            widget.stop()
    if widget.pretrainer.busy:
        with qtbot.waitSignal(widget.pretrainer.finished, timeout=60_000):
            widget.pretrainer.stop()
    qtbot.waitUntil(lambda: not widget.autosaver.busy, timeout=60_000)
    qtbot.waitUntil(lambda: not widget.feature_pass.busy, timeout=60_000)


@pytest.fixture
def loop(make_napari_viewer, sample_dir, qtbot):
    """A viewer with the sample opened through the reader, and the widget docked."""
    from napari_sparseseg._qt.widget import SparseSegWidget

    viewer = make_napari_viewer()
    viewer.open(str(sample_dir / "image.nii.gz"), plugin="napari-sparseseg")
    viewer.open(str(sample_dir / "scribbles.nii.gz"), plugin="napari-sparseseg")
    widget = SparseSegWidget(viewer)
    viewer.window.add_dock_widget(widget)
    # No CRF: none of these tests is about the outlines, and on a model of a few steps it refines every voxel
    # (the widget's default, CRF on, runs in the export, Live mode and pretraining tests below).
    _settings(widget, device="cpu", max_steps=4, refine=False)
    yield viewer, widget
    _finish(widget, qtbot)


def _run(widget, qtbot, start=None):
    """Start a round; wait until it is shown, the widget is idle and the round autosaved; returns its result."""
    runner = widget.runner
    with qtbot.waitSignals([runner.round_finished, runner.idle, widget.autosaver.saved], timeout=ROUND_MS) as got:
        assert (start or widget.train)()
    return next(s.args[0] for s in got.all_signals_and_args if s.signal_name.startswith("round_finished"))


def test_reader_layers_and_widget_setup(loop, sample_dir):
    from napari_sparseseg.io import read_image

    viewer, widget = loop
    _, geom = read_image(sample_dir / "image.nii.gz")
    img, scr = viewer.layers["image"], viewer.layers["scribbles"]
    assert np.allclose(img.scale, geom.spacing) and np.allclose(scr.scale, geom.spacing)
    assert widget.image_layer is img and widget.scribbles_layer is scr
    names = json.loads((sample_dir / "classes.json").read_text())
    assert widget.classes.names == names  # classes.json beside the scribbles file
    # The class table drives the layer: names, colours, brush label.
    widget.classes.set_classes(["background", "a", "b", "c", "d"])
    assert scr.metadata["class_names"] == ["background", "a", "b", "c", "d"]
    widget.classes.set_classes(names)
    rgb = [int(widget.classes.colors[2][i : i + 2], 16) / 255 for i in (1, 3, 5)]
    assert np.allclose(scr.colormap.map(np.array([3]))[0][:3], rgb, atol=0.01)
    widget.classes.select(3)
    assert scr.selected_label == 3 and scr.mode == "paint" and scr.n_edit_dimensions == 2 and scr.brush_size == 3
    widget.classes.add_class("tumour")
    assert widget.classes.names[-1] == "tumour" and scr.selected_label == len(names) + 1
    assert widget.classes.remove_class(len(names))  # no strokes: allowed
    assert widget.classes.names == names
    before = np.array(scr.data)
    assert not widget.classes.remove_class(1)  # liver has strokes: refused, nothing erased
    assert widget.classes.names == names and np.array_equal(scr.data, before)


def test_train_predict_correct_export_and_session(loop, qtbot, tmp_path, sample_dir):
    import torch

    from napari_sparseseg._napari.layers import grid_array
    from napari_sparseseg.core.inference.postprocess import keep_stroke_regions
    from napari_sparseseg.io import read_image, read_labels

    viewer, widget = loop
    # Picking the scan started its forest features in the background: Train finds them ready.
    from napari_sparseseg.core.model.intensity import choose_normalization

    qtbot.waitUntil(lambda: not widget.feature_pass.busy, timeout=60_000)
    scan, spacing = widget.binding.scan(viewer.layers["image"])
    cache = widget.binding.features_for(viewer.layers["image"])  # the cache the scan's session gets
    assert cache.has(scan, choose_normalization(scan).ranges(scan), spacing)
    progress, previews = [], []
    widget.runner.progress.connect(progress.append)
    # The forest's mask is shown as soon as it is fitted, while the network trains on.
    widget.runner.preview.connect(lambda labels: previews.append(("preview (forest)" in viewer.layers, labels)))
    # The uncertainty layer is added when the round starts (hidden, empty) and filled in place
    # when the result comes: adding a layer then held the GUI thread 0.26 s on a clinical CT.
    early_uncertainty = []
    widget.runner.preview.connect(lambda _: early_uncertainty.append(viewer.layers["uncertainty"]
                                                                     if "uncertainty" in viewer.layers else None))
    result = _run(widget, qtbot)
    s = widget.session
    assert s.features is cache  # the round read them from the head start's cache
    assert result.train.stopped_by == "max_steps" and result.train.reason in widget.status.text()  # why it ended
    img = viewer.layers["image"]
    pred, unc = viewer.layers["prediction"], viewer.layers["uncertainty"]
    assert len(previews) == 1 and previews[0][0] and previews[0][1].shape == s.image.shape
    assert "preview (forest)" not in viewer.layers  # replaced by the round's prediction
    assert pred.editable and pred.n_edit_dimensions == 2  # the preview layer became it: the user repaints it
    # The strokes stay on top of the masks, and the layer painted in.
    assert viewer.layers[-1] is widget.scribbles_layer and viewer.layers.selection.active is widget.scribbles_layer
    s_ref = read_labels(sample_dir / "reference.nii.gz", like=read_image(sample_dir / "image.nii.gz")[1])[0]
    from napari_sparseseg.evaluation.metrics import dice_per_class

    assert np.mean(list(dice_per_class(previews[0][1], s_ref, [1, 2, 3, 4]).values())) > 0.3  # a real mask
    assert result.train.steps == 4 and progress and progress[0].stage == "train"
    assert pred.data.shape == img.data.shape and np.allclose(pred.scale, img.scale) and np.allclose(unc.scale, img.scale)
    assert np.allclose(pred.translate, img.translate) and pred.metadata["sparseseg_display"] == img.metadata["sparseseg_display"]
    assert not unc.visible and unc.data.min() >= 0 and unc.data.max() <= 1
    assert early_uncertainty[0] is unc and unc.data.max() > 0  # the layer there before the result, now holding it
    assert s.model is not None and s.history[-1]["steps"] == 4 and len(widget.rounds.loss_plot.losses) == 4
    assert widget.rounds.train_button.text() == "Continue"
    # The prediction layer shows the session's prediction (on the file's grid) through the display view.
    assert np.array_equal(grid_array(pred.data, img.metadata), s.prediction)

    # Correct by repainting the prediction directly: the difference becomes corrections.
    before_pred = np.array(pred.data)
    z = img.data.shape[0] // 2
    target = 1 if (before_pred[z, 30:34, 40:60] != 1).any() else 2
    # The finished stroke triggers an autosave, which folds the edit into y and w(y).
    with qtbot.waitSignal(widget.autosaver.saved, timeout=30_000):
        pred.paint((z, 32, 50), target)
    changed = grid_array(np.asarray(pred.data) != before_pred, img.metadata)
    assert changed.any() and s.corrected[changed].all() and (s.scribbles[changed] == target + 1).all()
    weights_before = {k: v.clone() for k, v in s.model.network.state_dict().items()}
    _run(widget, qtbot)
    assert len(s.history) == 2 and s.history[-1]["corrections"] >= int(changed.sum())
    assert any(not torch.equal(weights_before[k], v) for k, v in s.model.network.state_dict().items())
    shown = np.asarray(viewer.layers["prediction"].data)
    assert not np.array_equal(shown, before_pred)
    # "Only regions touching a stroke" (default on): nothing left for the filter to drop.
    assert widget.settings.stroke_regions_only.isChecked()
    assert keep_stroke_regions(np.array(s.prediction), s.scribbles) == {}

    # Export -> re-read: the prediction on the file's own grid, with its geometry. The sample's
    # display is a flipped view, so the file differs from the displayed array itself.
    out = widget.export_mask(str(tmp_path / "mask.nrrd"))
    back, g = read_labels(out)
    grid_img, g0 = read_image(sample_dir / "image.nii.gz")
    assert np.array_equal(back, grid_array(shown, img.metadata)) and np.array_equal(back, s.prediction)
    assert not np.array_equal(back, shown) and np.allclose(g.affine, g0.affine, atol=1e-4)

    # Save -> load restores scribbles, corrections, model, classes, history and settings.
    widget.settings.stroke_regions_only.setChecked(False)  # a setting saved with the session
    folder = widget.save_session(str(tmp_path / "session"))
    widget.settings.stroke_regions_only.setChecked(True)
    back = load_session(folder)
    assert back.image is None and back.image_path.endswith("image.nii.gz")  # referenced, not copied
    assert np.array_equal(back.scribbles, s.scribbles) and np.array_equal(back.corrected, s.corrected)
    assert back.class_names == s.class_names and len(back.history) == 2 and back.model is not None

    n_layers = len(viewer.layers)
    for name in ("prediction", "uncertainty", "scribbles"):
        viewer.layers.remove(name)
    widget.classes.set_classes(["background", "x"])
    assert widget.load_session(str(folder))
    assert len(viewer.layers) == n_layers - 1  # image reused; scribbles + prediction back (uncertainty not stored)
    new = widget.session
    scr = viewer.layers["scribbles"]
    assert widget.scribbles_layer is scr and np.shares_memory(new.scribbles, scr.data)  # shown through the same view
    assert np.array_equal(new.scribbles, s.scribbles) and np.array_equal(grid_array(scr.data, img.metadata), s.scribbles)
    assert np.array_equal(grid_array(viewer.layers["prediction"].data, img.metadata), s.prediction)
    assert widget.classes.names == back.class_names and new.history == back.history
    assert new.model is not None and widget.rounds.train_button.text() == "Continue"
    assert not widget.settings.stroke_regions_only.isChecked()


def test_stop_mid_run_keeps_a_usable_model(loop, qtbot):
    viewer, widget = loop
    _settings(widget, max_steps=100_000)
    with qtbot.waitSignal(widget.runner.progress, timeout=120_000, check_params_cb=lambda p: p.step >= 3):
        assert widget.train(time_budget=600)
    with qtbot.waitSignals([widget.runner.round_finished, widget.runner.idle], order="strict", timeout=120_000) as got:
        widget.stop()
    result = got.all_signals_and_args[0].args[0]
    h = widget.session.history[-1]
    assert result.stopped == "training" and h["stopped_by"] == "cancelled" and 3 <= h["steps"] < 100
    assert "prediction" in viewer.layers and "stopped by you; model kept" in widget.status.text()  # the kept model predicted
    assert _run(widget, qtbot, widget.predict).train is None  # and it can be used again


def test_autosave_after_a_stroke_and_resume_offer(make_napari_viewer, sample_dir, qtbot):
    from napari_sparseseg._qt.widget import SparseSegWidget

    viewer = make_napari_viewer()
    viewer.open(str(sample_dir / "image.nii.gz"), plugin="napari-sparseseg")
    widget = SparseSegWidget(viewer)
    assert not widget.resume_box.isVisibleTo(widget)
    lay = widget.new_scribbles_layer()
    with qtbot.waitSignal(widget.autosaver.saved, timeout=30_000) as saved:
        lay.paint((20, 40, 50), 2)
    assert saved.args[0] == widget.autosaver.last_folder and (saved.args[0] / "session.json").is_file()
    _finish(widget, qtbot)

    # A new viewer on the same scan offers to resume, and resuming brings the stroke back.
    viewer.close()
    viewer2 = make_napari_viewer()
    viewer2.open(str(sample_dir / "image.nii.gz"), plugin="napari-sparseseg")
    w2 = SparseSegWidget(viewer2)
    assert w2.resume_box.isVisibleTo(w2)
    assert w2.resume()
    assert not w2.resume_box.isVisibleTo(w2)
    assert np.array_equal(viewer2.layers["scribbles"].data, lay.data) and (lay.data == 2).sum() > 0


def test_strokes_painted_just_before_closing_are_saved(make_napari_viewer, sample_dir, qtbot):
    """Closing the widget (or quitting napari) within the autosave's debounce still saves the last stroke."""
    from napari_sparseseg._napari.layers import grid_array
    from napari_sparseseg._qt.widget import SparseSegWidget
    from napari_sparseseg.io.sessions import load_session

    viewer = make_napari_viewer()
    viewer.open(str(sample_dir / "image.nii.gz"), plugin="napari-sparseseg")
    widget = SparseSegWidget(viewer)
    lay = widget.new_scribbles_layer()
    with qtbot.waitSignal(widget.autosaver.saved, timeout=30_000):
        lay.paint((20, 40, 50), 2)
    first = widget.autosaver.last_folder
    lay.paint((10, 40, 50), 1)  # its save is scheduled, not started
    on_grid = grid_array(np.array(lay.data), viewer.layers["image"].metadata)  # the file's grid, as sessions are
    assert widget.autosaver.busy and not np.array_equal(load_session(first).scribbles, on_grid)
    widget.close()
    assert not widget.autosaver.busy and widget.autosaver.last_folder == first
    back = load_session(first).scribbles
    assert np.array_equal(back, on_grid) and set(np.unique(back)) == {0, 1, 2}


def test_errors_become_notifications(make_napari_viewer, qtbot, notifications):
    from napari_sparseseg._qt.widget import SparseSegWidget

    viewer = make_napari_viewer()
    w = SparseSegWidget(viewer)
    assert not w.train() and "No image" in notifications[-1]
    viewer.add_image(np.random.default_rng(0).normal(size=(24, 32, 32)).astype(np.float32), name="img")
    assert not w.train() and "No scribbles" in notifications[-1]
    viewer.add_labels(np.zeros((24, 32, 30), np.uint8), name="scribbles")
    assert not w.train() and "shape" in notifications[-1]
    viewer.layers.remove("scribbles")
    lay = w.new_scribbles_layer()
    _settings(w, device="cpu", max_steps=2)
    with qtbot.waitSignals([w.runner.round_failed, w.runner.idle], order="strict", timeout=60_000) as got:
        assert w.train()  # no strokes: fails in the worker, reported, GUI usable
    assert "no scribbles" in got.all_signals_and_args[0].args[0].lower() == notifications[-1].lower()
    lay.data[5, 5:9, 5:9] = 1  # background only
    with qtbot.waitSignal(w.runner.round_failed, timeout=60_000) as failed:
        assert w.train()
    assert "one class" in failed.args[0].lower() or "structure" in failed.args[0].lower()
    qtbot.waitUntil(lambda: not w.runner.busy, timeout=60_000)
    assert w.rounds.train_button.isEnabled() and w.session.model is None
    assert not w.export_mask("never.nii.gz") and "no prediction" in notifications[-1].lower()
    _finish(w, qtbot)


def test_plugin_widget_from_manifest_and_live_mode(make_napari_viewer, sample_dir, qtbot):
    """`napari -w napari-sparseseg` path: the manifest's widget docks; Live retrains after a stroke."""
    from napari_sparseseg._qt.widget import SparseSegWidget

    viewer = make_napari_viewer()
    viewer.open(str(sample_dir / "image.nii.gz"), plugin="napari-sparseseg")
    viewer.open(str(sample_dir / "scribbles.nii.gz"), plugin="napari-sparseseg")
    _, widget = viewer.window.add_plugin_dock_widget("napari-sparseseg", "Sparse segmentation")
    assert isinstance(widget, SparseSegWidget)
    assert widget.classes.names[1:] == ["liver", "spleen", "kidney_right", "kidney_left"]  # classes.json beside the file
    _settings(widget, device="cpu", max_steps=2, live=True)
    assert widget.settings.live.isChecked()
    with qtbot.waitSignals([widget.runner.round_finished, widget.runner.idle], order="strict", timeout=120_000):
        viewer.layers["scribbles"].paint((20, 40, 50), 3)  # a finished stroke starts a short round
    assert "prediction" in viewer.layers and len(widget.session.history) == 1
    assert 1 <= widget.session.history[-1]["steps"] <= 2
    _finish(widget, qtbot)


def test_export_never_overwrites_the_scan_or_its_scribbles(make_napari_viewer, sample_dir, qtbot, tmp_path, notifications):
    """The safety contract in the widget: Export mask refuses the scan's and the scribbles' own files."""
    import hashlib
    import shutil

    from napari_sparseseg._qt.widget import SparseSegWidget
    from napari_sparseseg.io import read_labels

    for name in ("image.nii.gz", "scribbles.nii.gz", "classes.json"):
        shutil.copy(sample_dir / name, tmp_path / name)
    viewer = make_napari_viewer()
    viewer.open(str(tmp_path / "image.nii.gz"), plugin="napari-sparseseg")
    viewer.open(str(tmp_path / "scribbles.nii.gz"), plugin="napari-sparseseg")
    widget = SparseSegWidget(viewer)
    _settings(widget, device="cpu", max_steps=2)
    try:
        _run(widget, qtbot)
        digest = {n: hashlib.sha256((tmp_path / n).read_bytes()).hexdigest() for n in ("image.nii.gz", "scribbles.nii.gz")}
        (tmp_path / "link.nii.gz").symlink_to(tmp_path / "image.nii.gz")
        for target in ("image.nii.gz", "scribbles.nii.gz", "link.nii.gz"):
            assert widget.export_mask(str(tmp_path / target)) is None
            assert "would overwrite" in notifications[-1]
        assert digest == {n: hashlib.sha256((tmp_path / n).read_bytes()).hexdigest() for n in digest}
        out = widget.export_mask(str(tmp_path / "mask.nii.gz"))
        assert out is not None and read_labels(out)[0].shape == widget.session.scribbles.shape
    finally:
        _finish(widget, qtbot)


def test_pretraining_runs_while_painting_and_train_starts_from_it(make_napari_viewer, sample_dir, qtbot, tmp_path,
                                                                  monkeypatch):
    """Picking the scan starts self-supervised pretraining; Train ends it and the first round starts from it."""
    from napari_sparseseg._qt.widget import SparseSegWidget
    from napari_sparseseg.io.cache import load_cached

    monkeypatch.setenv("SPARSESEG_CACHE", str(tmp_path / "cache"))
    viewer = make_napari_viewer()
    viewer.open(str(sample_dir / "image.nii.gz"), plugin="napari-sparseseg")
    viewer.open(str(sample_dir / "scribbles.nii.gz"), plugin="napari-sparseseg")
    widget = SparseSegWidget(viewer)
    viewer.window.add_dock_widget(widget)
    try:
        assert not widget.pretrainer.busy  # off by default
        widget.settings.pretrain.setChecked(True)  # on: starts at once on the picked scan
        assert widget.pretrainer.busy and widget.pretrainer.key is widget.image_layer
        with qtbot.waitSignal(widget.pretrainer.progress, timeout=60_000):
            pass
        _settings(widget, device="cpu", max_steps=4)
        with qtbot.waitSignals([widget.pretrainer.finished, widget.runner.round_finished, widget.runner.idle],
                               order="strict", timeout=ROUND_MS) as got:
            assert widget.train()
        state = got.all_signals_and_args[0].args[0]
        result = got.all_signals_and_args[1].args[0]
        assert state is not None and state.steps >= 1
        first = result.model.history[0]
        assert first["pretrained"] == "inpaint" and first["steps"] == state.steps
        assert result.model.history[-1]["round"] == 1 and result.train.steps == 4
        assert load_cached(state.fingerprint).steps == state.steps  # paid once: cached for this scan
        assert "Learned the scan" in widget.pretrain_status.text()
        # A model of this scan exists now: switching pretraining on again does not start it.
        widget.settings.pretrain.setChecked(False)
        widget.settings.pretrain.setChecked(True)
        assert not widget.pretrainer.busy
    finally:
        _finish(widget, qtbot)


def test_pretraining_starts_when_a_scan_is_picked_and_stops_when_switched_off(make_napari_viewer, sample_dir, qtbot):
    from napari_sparseseg._qt.widget import SparseSegWidget

    viewer = make_napari_viewer()
    widget = SparseSegWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.settings.pretrain.setChecked(True)
    assert not widget.pretrainer.busy  # no scan yet
    viewer.open(str(sample_dir / "image.nii.gz"), plugin="napari-sparseseg")
    assert widget.image_layer is not None and widget.pretrainer.busy  # the moment the scan is picked
    with qtbot.waitSignal(widget.pretrainer.finished, timeout=60_000):
        widget.settings.pretrain.setChecked(False)  # switched off: stops within a step
    _finish(widget, qtbot)


def test_suggested_slices_and_the_estimate_after_a_round(loop, qtbot):
    from qtpy.QtCore import Qt

    viewer, widget = loop
    _settings(widget, estimate=True)  # the held-out-stroke estimate shows next to the loss curve
    result = _run(widget, qtbot)
    assert result.estimate and widget.rounds.estimate.text().startswith("Held-out strokes (estimate on your own strokes): ")
    assert all(f"{widget.classes.names[c]} {e.dice:.2f}" in widget.rounds.estimate.text() for c, e in result.estimate.items())
    items = widget.suggestions.list
    assert result.suggestions and items.count() == len(result.suggestions)
    unc_grid = result.prediction.uncertainty.astype(np.float32)
    img, unc = viewer.layers["image"], viewer.layers["uncertainty"]
    for row in range(min(3, items.count())):
        item = items.item(row)
        s = item.data(Qt.ItemDataRole.UserRole)
        plane, position = widget.binding.describe_slice(s.axis, s.index)
        assert item.text().startswith(f"{plane} slice {position}:")
        rect = items.visualItemRect(item)
        qtbot.mouseClick(items.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
        d = viewer.dims.order[0]  # the axis slices are taken across, in display order
        assert viewer.dims.ndisplay == 2 and viewer.dims.current_step[d] == position
        # The slice shown is the suggested one: same uncertainty as the grid slice the core ranked.
        shown = np.take(np.asarray(unc.data), position, axis=d)
        assert np.isclose(shown.sum(), np.take(unc_grid, s.index, axis=s.axis).sum(), rtol=1e-3)
        assert img.data.shape[d] == unc_grid.shape[s.axis]


def test_a_drawn_rectangle_and_a_click_become_pseudo_labels_under_the_strokes(loop, qtbot):
    from qtpy.QtCore import Qt

    from napari_sparseseg.core.annotations.labels import SOURCE_HINT, merge_annotations

    viewer, widget = loop
    img = viewer.layers["image"]
    strokes_before = np.array(viewer.layers["scribbles"].data)
    widget.classes.select(3)  # paint value 3 = class 2 (spleen)
    qtbot.mouseClick(widget.hints.box_button, Qt.MouseButton.LeftButton)
    boxes = viewer.layers["boxes"]
    assert boxes.mode == "add_rectangle" and viewer.layers.selection.active is boxes
    z = img.data.shape[0] // 2
    rect = np.array([[z, 20, 30], [z, 20, 50], [z, 35, 50], [z, 35, 30]], float)  # on the slice shown, display voxels
    boxes.add(rect, shape_type="rectangle")
    widget.classes.select(1)  # background
    qtbot.mouseClick(widget.hints.click_button, Qt.MouseButton.LeftButton)
    clicks = viewer.layers["clicks"]
    clicks.add(np.array([[z, 5.0, 5.0]]))
    assert list(boxes.features["class"]) == [2] and list(clicks.features["class"]) == [0]
    _run(widget, qtbot)
    s = widget.session
    assert [b["class"] for b in s.hint_shapes["boxes"]] == [2] and [c["class"] for c in s.hint_shapes["clicks"]] == [0]
    hints = s.drawn_hints()  # what the round trained on (no strokes of class 2 lie inside the rectangle)
    shown = widget.binding.to_display(hints)  # back in the viewer's voxels
    inside = np.zeros(shown.shape, bool)
    inside[z, 20:36, 30:51] = True
    assert (shown[inside] == 3).sum() > 50 and not (shown[~inside] == 3).any()  # the rectangle's core, that slice only
    assert shown[z, 5, 5] == 1  # the click: background
    assert np.array_equal(np.array(viewer.layers["scribbles"].data), strokes_before)  # the user's strokes untouched
    # Training saw them as hints, under the strokes.
    y, source = merge_annotations(s.scribbles, None, hints)
    assert ((source == SOURCE_HINT) & (y == 3)).sum() == ((hints == 3) & (s.scribbles == 0)).sum() > 0


def test_drawn_boxes_and_clicks_are_saved_with_the_session_and_shown_again(loop, qtbot, tmp_path):
    from qtpy.QtCore import Qt

    viewer, widget = loop
    img = viewer.layers["image"]
    widget.classes.select(2)  # liver
    qtbot.mouseClick(widget.hints.box_button, Qt.MouseButton.LeftButton)
    z = img.data.shape[0] // 2
    rect = np.array([[z, 10, 12], [z, 10, 40], [z, 30, 40], [z, 30, 12]], float)
    viewer.layers["boxes"].add(rect, shape_type="rectangle")
    widget.classes.select(1)
    qtbot.mouseClick(widget.hints.click_button, Qt.MouseButton.LeftButton)
    viewer.layers["clicks"].add(np.array([[z, 3.0, 4.0], [z + 1, 6.0, 7.0]]))
    folder = widget.save_session(str(tmp_path / "session"))
    stored = json.loads((folder / "session.json").read_text())["hints"]
    assert [b["class"] for b in stored["boxes"]] == [1] and [c["class"] for c in stored["clicks"]] == [0, 0]
    for name in ("boxes", "clicks", "scribbles"):
        viewer.layers.remove(name)
    assert widget.load_session(str(folder))
    boxes, clicks = viewer.layers["boxes"], viewer.layers["clicks"]
    assert len(boxes.data) == 1 and np.allclose(boxes.data[0], rect) and list(boxes.features["class"]) == [1]
    assert np.allclose(clicks.data, [[z, 3, 4], [z + 1, 6, 7]]) and list(clicks.features["class"]) == [0, 0]
    assert widget.session.hint_shapes == stored  # and the next round trains on them again
