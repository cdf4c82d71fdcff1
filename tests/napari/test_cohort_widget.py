"""The Cohort dock widget in a real viewer: Run on a cohort of real scans, open the worst-ranked
scan, paint a correction on its mask, Refine, and the re-run changes that scan's mask.

Waits on the widget's public signals (``runner.scan_finished``/``idle``, ``scan_opened``,
``corrections_saved``).
"""

import numpy as np
import pytest

from tests.conftest import make_cohort_files

pytestmark = pytest.mark.gui

RUN_MS = 300_000


@pytest.fixture(scope="module")
def files(tmp_path_factory, sample_dir, data_dir):
    """The model and the scans (read only: each test's cohort folder holds what it writes)."""
    return make_cohort_files(tmp_path_factory.mktemp("files"), sample_dir, data_dir, bad=False)


@pytest.fixture
def cohort_widget(make_napari_viewer, qtbot, files, monkeypatch):
    import functools

    from napari_sparseseg._qt import cohort_widget as module
    from napari_sparseseg.core.base.config import BatchConfig

    viewer = make_napari_viewer()
    widget = module.CohortWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.workers.setValue(1)
    # These tests are about the widget's wiring, not the outlines: its batches run without the CRF (on a
    # barely trained model it works on every voxel: tens of seconds per scan on 2 cores). Everything
    # else is the widget's own settings.
    monkeypatch.setattr(module, "BatchConfig", functools.partial(BatchConfig, refine=False))
    yield viewer, widget, files
    if widget.runner.busy:
        with qtbot.waitSignal(widget.runner.idle, timeout=RUN_MS):
            widget.runner.stop()
    widget.close()  # its closeEvent closes the cluster kept between runs
    assert not widget.runner.warm


def _run(widget, qtbot, start):
    with qtbot.waitSignal(widget.runner.idle, timeout=RUN_MS):
        assert start()


def test_run_review_correct_refine_rerun(cohort_widget, qtbot, tmp_path):
    from napari_sparseseg.cohort.project import Cohort
    from napari_sparseseg.io import read_labels

    viewer, widget, files = cohort_widget
    folder = tmp_path / "cohort"
    assert widget.new_cohort(folder, files / "model")
    assert widget.add_scans([files / "scans"])
    assert widget.table.rowCount() == 3 and widget.run_button.isEnabled()

    _run(widget, qtbot, widget.run)
    address = widget.runner.cluster_address  # the local cluster is kept warm for the next runs
    assert address and address.startswith("tls://127.0.0.1:")
    summary = Cohort.open(folder).summary()
    assert {r["status"] for r in summary.values()} == {"done"}
    ranks = {widget.table.item(r, 0).text(): widget.table.item(r, 2).text() for r in range(3)}
    assert sorted(ranks.values()) == ["1", "2", "3"]
    worst = next(name for name, rank in ranks.items() if rank == "1")
    row = next(r for r in range(3) if widget.table.item(r, 0).text() == worst)

    with qtbot.waitSignal(widget.scan_opened, timeout=60_000):
        widget.table.cellDoubleClicked.emit(row, 0)
    layer = widget.opened.mask_layer
    assert layer in viewer.layers and widget.opened.image_layer in viewer.layers
    assert layer.metadata["orientation"].startswith("radiological")
    before, geom = read_labels(folder / f"{worst}_mask.nii.gz")

    # Paint corrections on the middle slice: blocks of classes 1 and 2 where the mask says otherwise
    # (a correction must hold two classes to train on, like any strokes).
    z = layer.data.shape[0] // 2
    blocks = {1: (z, slice(10, 30), slice(10, 30)), 2: (z, slice(40, 50), slice(40, 50))}
    changed = sum(int((layer.data[b] != c).sum()) for c, b in blocks.items())
    with qtbot.waitSignal(widget.corrections_saved, timeout=10_000) as saved:
        for c, b in blocks.items():
            mask = np.zeros(layer.data.shape, bool)
            mask[b] = True
            layer.data_setitem(np.nonzero(mask), c)
    assert saved.args[0] == worst and saved.args[1] == changed > 0
    strokes, _ = read_labels(folder / "strokes" / f"{worst}_strokes.nii.gz", like=geom)
    assert set(np.unique(strokes)) == {0, 2, 3}  # scribble convention: class + 1, on the file's grid

    # Bounded by steps, not seconds: on a slow machine 10 s gave Refine one step after the forest's
    # features, and the re-run's mask could not change (the seconds only cap it here).
    widget.refine_seconds.setValue(600)
    widget.refine_max_steps = 60
    _run(widget, qtbot, widget.refine)
    assert widget.runner.cluster_address == address  # Refine's re-run started no new worker processes
    after, _ = read_labels(folder / f"{worst}_mask.nii.gz", like=geom)
    assert (after != before).any(), "the refined model's re-run left the corrected scan's mask as it was"
    # The open scan now shows the re-run's mask (its corrections were saved before).
    from napari_sparseseg._napari.cohort_layers import edited_mask

    assert widget.opened.name == worst and np.array_equal(edited_mask(widget.opened), after)
    cohort = Cohort.open(folder)
    assert cohort.history and cohort.history[-1]["scans_with_strokes"] == [worst]
    assert {r["status"] for r in cohort.summary().values()} == {"done"}

    # Reviewed scans keep their accepted mask through later runs; the cohort resumes from its folder.
    assert widget.mark_reviewed(worst)
    accepted, _ = read_labels(folder / f"{worst}_mask.nii.gz", like=geom)
    _run(widget, qtbot, widget.run)
    assert np.array_equal(read_labels(folder / f"{worst}_mask.nii.gz", like=geom)[0], accepted)
    assert widget.open_cohort(folder) and widget.table.rowCount() == 3
    assert next(widget.table.item(r, 3).text() for r in range(3) if widget.table.item(r, 0).text() == worst) == "yes"


def test_stop_finishes_the_running_scans_and_leaves_the_rest_queued(cohort_widget, qtbot, tmp_path):
    from napari_sparseseg.cohort.project import Cohort

    viewer, widget, files = cohort_widget
    assert not widget.use_session_model(tmp_path / "c0")  # no annotation widget with a model: a clear error
    assert "no trained model" in widget.status.text() and not (tmp_path / "c0").exists()
    folder = tmp_path / "cohort"
    assert widget.new_cohort(folder, files / "model") and widget.add_scans([files / "scans"])
    with qtbot.waitSignal(widget.runner.idle, timeout=RUN_MS):
        widget.runner.scan_finished.connect(lambda _r: widget.stop_button.click())
        assert widget.run()
    records = Cohort.open(folder).summary()
    statuses = sorted(r["status"] for r in records.values())
    assert "done" in statuses and "queued" in statuses, statuses
    for name, r in records.items():
        assert (folder / f"{name}_mask.nii.gz").is_file() == (r["status"] == "done")
    assert widget.run_button.isEnabled() and not widget.stop_button.isEnabled()
