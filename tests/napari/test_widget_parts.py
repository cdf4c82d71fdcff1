"""The dock widget's parts on their own, training nothing: class table, settings panel, layer
pickers, and the layer <-> session binding on the radiological display (views of the file grid)."""

import dataclasses

import numpy as np
import pytest

from napari_sparseseg.io.sessions import load_session, save_session

pytestmark = pytest.mark.gui


# ------------------------------------------------------------------ class table
def test_class_table_add_rename_colour_remove_and_refuse(qtbot, monkeypatch, notifications):
    from qtpy.QtGui import QColor

    from napari_sparseseg._qt import class_table as ct

    strokes = {1: 10, 2: 5}  # background and the first structure have strokes
    table = ct.ClassTable(stroke_count=lambda value: strokes.get(value, 0))
    qtbot.addWidget(table)
    changes = []
    table.classes_changed.connect(lambda names, colors: changes.append((names, colors)))
    table.set_classes(["background", "liver"])
    assert changes[-1][0] == ["background", "liver"] and len(set(changes[-1][1])) == 2

    with qtbot.waitSignal(table.class_selected) as selected:
        assert table.add_class("spleen") == 3
    assert selected.args == [3] and table.names == ["background", "liver", "spleen"]
    with qtbot.waitSignal(table.class_selected) as selected:
        table.select(2)
    assert selected.args == [2]

    with qtbot.waitSignal(table.classes_changed) as changed:
        table.rename_class(2, "kidney")
    assert changed.args[0] == ["background", "liver", "kidney"]
    table.rename_class(2, "  ")  # an emptied name still names the class
    assert table.names[2] == "class 2"
    table.rename_class(2, "kidney")

    # Double-click on a colour chip asks for a colour.
    monkeypatch.setattr(ct.QColorDialog, "getColor", staticmethod(lambda *a, **k: QColor("#123456")))
    with qtbot.waitSignal(table.classes_changed) as changed:
        table.table.cellDoubleClicked.emit(2, 1)
    assert changed.args[1][2] == "#123456" and table.colors[2] == "#123456"
    table.table.cellDoubleClicked.emit(2, 0)  # the name column does not
    assert table.colors[2] == "#123456"

    # Refusals: background, a class with strokes, the last structure. Nothing changes.
    table.add_class("tumour")
    before = (table.names, table.colors)
    assert not table.remove_class(0) and "Background" in notifications[-1]
    assert not table.remove_class(1) and "5 painted voxels" in notifications[-1]
    assert (table.names, table.colors) == before
    # An unused class goes; the owner of the scribbles is told which value to shift down.
    with qtbot.waitSignals([table.class_removed, table.classes_changed], order="strict") as both:
        assert table.remove_class(2)
    assert list(both.all_signals_and_args[0].args) == [3]
    assert table.names == ["background", "liver", "tumour"] and table.colors[:2] == before[1][:2]
    assert table.table.verticalHeaderItem(2).text() == "3"
    strokes.clear()
    assert table.remove_class(2) and not table.remove_class(1) and "besides background" in notifications[-1]
    # The table stops at the class bound the core enforces.
    from napari_sparseseg.core.annotations.labels import MAX_CLASSES

    table.set_classes([f"c{i}" for i in range(MAX_CLASSES)])
    assert table.add_class() == 0 and len(table.names) == MAX_CLASSES and f"At most {MAX_CLASSES}" in notifications[-1]


# ------------------------------------------------------------------ settings panel
def test_settings_panel_is_built_from_round_settings(qtbot):
    from napari_sparseseg._qt.settings_panel import SettingsPanel
    from napari_sparseseg.core.base.config import Device, ModelSize, RoundSettings, field_info, option_values

    panel = SettingsPanel()
    qtbot.addWidget(panel)
    assert panel.settings() == RoundSettings()  # no default of its own
    assert [panel.device.itemText(i) for i in range(panel.device.count())] == list(option_values(Device))
    assert [panel.model_size.itemText(i) for i in range(panel.model_size.count())] == list(option_values(ModelSize))
    from napari_sparseseg._qt.ranges import RANGES

    low, high = RANGES[RoundSettings, "time_budget"]
    assert (panel.time_budget.minimum(), panel.time_budget.maximum()) == (low, high)
    meta = field_info(RoundSettings, "seed").metadata
    assert (panel.seed.minimum(), panel.seed.maximum()) == (meta["ge"], meta["le"])
    assert "seed + n" in panel.seed.toolTip() and "small on the CPU" in panel.model_size.toolTip()
    assert f"{RoundSettings().live_seconds:g} s" in panel.live.text()
    assert panel.refine.isChecked() == RoundSettings().refine and "CRF" in panel.refine.toolTip()
    assert panel.forest.isChecked() == RoundSettings().forest and "forest" in panel.forest.toolTip()


def test_settings_round_trip_through_a_session_file(qtbot, tmp_path):
    from napari_sparseseg._qt.settings_panel import SettingsPanel
    from napari_sparseseg.core.base.config import RoundSettings
    from napari_sparseseg.core.session.state import Session

    panel = SettingsPanel()
    qtbot.addWidget(panel)
    with qtbot.waitSignal(panel.settings_changed) as changed:
        panel.time_budget.setValue(42.5)
    assert changed.args[0].time_budget == 42.5
    panel.device.setCurrentText("cpu")
    panel.model_size.setCurrentText("medium")
    panel.seed.setValue(7)
    panel.live.setChecked(True)
    panel.stroke_regions_only.setChecked(False)
    panel.refine.setChecked(False)
    panel.forest.setChecked(False)
    panel.set_settings(dataclasses.replace(panel.settings(), max_steps=9))  # a field without a control is kept
    shown = panel.settings()
    assert shown == RoundSettings(device="cpu", model_size="medium", time_budget=42.5, seed=7, live=True,
                                  stroke_regions_only=False, refine=False, forest=False, max_steps=9)
    s = Session(np.zeros((4, 5, 6), np.float32), np.zeros((4, 5, 6), np.uint8), settings=shown)
    back = load_session(save_session(s, tmp_path / "session"))
    other = SettingsPanel()
    qtbot.addWidget(other)
    assert other.settings() != shown
    other.set_settings(back.settings)
    assert other.settings() == shown and other.model_size.currentText() == "medium" and other.live.isChecked()


# ------------------------------------------------------------------ pickers
def test_pickers_follow_layer_insert_remove_and_rename(make_napari_viewer, qtbot):
    from napari_sparseseg._qt.widget import SparseSegWidget

    viewer = make_napari_viewer()
    widget = SparseSegWidget(viewer)
    assert widget.image_layer is None and widget.scribbles_layer is None
    a = viewer.add_image(np.zeros((4, 5, 6), np.float32), name="a")
    b = viewer.add_image(np.ones((4, 5, 6), np.float32), name="b")
    assert widget.image_picker.choices == (a, b) and widget.image_layer is a
    widget.image_picker.value = b
    a.name = "renamed"
    labels = [widget.image_picker.native.itemText(i) for i in range(widget.image_picker.native.count())]
    assert sorted(labels) == ["b", "renamed"] and widget.image_layer is b
    scr = viewer.add_labels(np.zeros((4, 5, 6), np.uint8), name="scribbles")
    viewer.add_labels(np.zeros((4, 5, 6), np.uint8), name="prediction")  # the widget's output is never offered
    assert widget.scribbles_picker.choices == (scr,) and widget.scribbles_layer is scr
    viewer.layers.remove(b)
    assert widget.image_picker.choices == (a,) and widget.image_layer is a
    viewer.layers.remove(scr)
    assert widget.scribbles_layer is None


# ------------------------------------------------------------------ binding on the radiological display
def test_new_scribbles_are_a_view_of_the_session_grid(make_napari_viewer, sample_dir, qtbot):
    from napari_sparseseg._napari.layers import GEOMETRY_KEY, grid_array
    from napari_sparseseg._napari.orientation import AXIS_LABELS, ORIENTATION_KEY
    from napari_sparseseg._qt.widget import SparseSegWidget
    from napari_sparseseg.io import read_image

    viewer = make_napari_viewer()
    viewer.open(str(sample_dir / "image.nii.gz"), plugin="napari-sparseseg")
    widget = SparseSegWidget(viewer)
    img = viewer.layers["image"]
    assert viewer.dims.axis_labels == AXIS_LABELS and "right→left" in widget.layer_panel.orientation.text()
    lay = widget.new_scribbles_layer()
    assert widget.scribbles_layer is lay and lay.data.shape == img.data.shape
    assert np.allclose(lay.scale, img.scale) and np.allclose(lay.translate, img.translate)
    assert lay.metadata[ORIENTATION_KEY] == img.metadata[ORIENTATION_KEY] and lay.metadata[GEOMETRY_KEY] == img.metadata[GEOMETRY_KEY]
    assert lay.brush_size == 3 and lay.n_edit_dimensions == 2 and lay.mode == "paint"

    with qtbot.waitSignal(widget.autosaver.saved, timeout=30_000):
        lay.paint((10, 20, 30), 2)  # a stroke on the display...
    s = widget.session
    grid, _ = read_image(sample_dir / "image.nii.gz")
    # ...is in the session's scribbles on the file's own grid, without a copy.
    assert np.array_equal(s.image, grid) and not np.array_equal(np.asarray(img.data), grid)  # the display really differs
    assert np.shares_memory(s.scribbles, lay.data) and np.array_equal(s.scribbles, grid_array(lay.data, img.metadata))
    painted = np.argwhere(s.scribbles == 2)
    assert len(painted) and not (np.asarray(lay.data)[tuple(painted.T)] == 2).all()  # flipped: other indices
    widget.classes.add_class("other")  # value 3
    widget.classes.add_class("extra")  # value 4
    lay.paint((30, 40, 50), 3)
    assert (s.scribbles == 3).sum() == (np.asarray(lay.data) == 3).sum() > 0  # painting on goes straight in

    # Removing an unused class shifts the higher values down, in the session too.
    assert not widget.classes.remove_class(2)  # value 3 is painted: refused
    lay.paint((30, 40, 50), 4)  # the same disc, now value 4: value 3 is unused
    n4 = int((s.scribbles == 4).sum())
    assert widget.classes.remove_class(2)
    assert (s.scribbles == 4).sum() == 0 and (s.scribbles == 3).sum() == n4 > 0
    assert widget.classes.names == ["background", "structure 1", "extra"]


def test_permuted_scan_sessions_autosave_and_export_stay_on_the_file_grid(make_napari_viewer, sample_dir, tmp_path, monkeypatch, qtbot):
    """A scan stored with permuted axes: display shape != grid shape; nothing written uses the display order."""
    from napari_sparseseg._napari.layers import display_array, grid_array
    from napari_sparseseg._qt.widget import SparseSegWidget
    from napari_sparseseg.io import read_image, read_labels, write_image
    from tests.napari.test_orientation import _reoriented

    monkeypatch.setenv("SPARSESEG_AUTOSAVE_DIR", str(tmp_path / "autosave"))
    arr, geom = read_image(sample_dir / "image.nii.gz")
    path = write_image(tmp_path / "permuted.nii.gz", *_reoriented(arr, geom, (1, 2, 0), (True, False, True)))
    grid, grid_geom = read_image(path)
    viewer = make_napari_viewer()
    viewer.open(str(path), plugin="napari-sparseseg")
    img = viewer.layers["permuted"]
    assert img.data.shape != grid.shape  # the display really permutes the axes
    widget = SparseSegWidget(viewer)
    lay = widget.new_scribbles_layer()
    with qtbot.waitSignal(widget.autosaver.saved, timeout=30_000) as saved:
        lay.paint((20, 40, 50), 2)
    s = widget.session
    assert s.scribbles.shape == s.image.shape == grid.shape and np.array_equal(s.image, grid)
    assert np.shares_memory(s.scribbles, lay.data) and (s.scribbles == 2).sum() == (np.asarray(lay.data) == 2).sum() > 0

    # A prediction (here: the strokes themselves) is shown through the view and exported on the grid.
    labels = (s.scribbles == 2).astype(np.uint8)
    widget.binding.show_prediction(labels)
    assert np.array_equal(viewer.layers["prediction"].data, display_array(labels, img.metadata))
    back, g = read_labels(widget.export_mask(str(tmp_path / "mask.nii.gz")))
    assert np.array_equal(back, labels) and np.allclose(g.affine, grid_geom.affine, atol=1e-4)

    # The autosave is found again for the same scan (keyed by its grid shape), and resumes through the view.
    viewer2 = make_napari_viewer()
    viewer2.open(str(path), plugin="napari-sparseseg")
    w2 = SparseSegWidget(viewer2)
    assert w2.resume_box.isVisibleTo(w2) and w2.resume_box.folder == saved.args[0]
    assert w2.resume()
    assert np.array_equal(w2.scribbles_layer.data, lay.data)
    assert np.array_equal(grid_array(w2.scribbles_layer.data, viewer2.layers["permuted"].metadata), s.scribbles)
