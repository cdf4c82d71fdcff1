"""A remote round through the widget, in a real viewer (Xvfb), against a Dask cluster on 127.0.0.1.

The widget's "Remote training" box points at a loopback `dask scheduler` with one CPU worker:
Train runs the round there (the progress, the forest's early mask and the result arrive through
the runner's public signals, as for a local round); with the worker gone the next Train fails
in one line, keeps the strokes and the model, and "Run this round on this computer" runs it here.
``SPARSESEG_DOC_IMAGES=1`` also writes the screenshot to ``docs/images/remote_round.png``.
"""

import dataclasses
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.remote.cluster import Cluster
from tests.remote.conftest import torch_threads

pytestmark = pytest.mark.gui

ROUND_MS = 600_000
DOCS = Path(__file__).resolve().parents[2] / "docs" / "images"


@pytest.fixture(autouse=True)
def _autosave_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSESEG_AUTOSAVE_DIR", str(tmp_path / "autosave"))


def test_a_remote_round_from_the_widget_then_a_lost_worker_and_run_here(make_napari_viewer, sample_dir, qtbot,
                                                                       tmp_path, notifications):
    from qtpy.QtCore import QCoreApplication
    from qtpy.QtWidgets import QScrollArea

    from napari_sparseseg._qt.widget import SparseSegWidget
    from napari_sparseseg.core.base.config import RemoteConfig

    cluster = Cluster(tmp_path, threads=torch_threads()).start(workers=1)
    widget = None
    try:
        viewer = make_napari_viewer(show=True)
        viewer.window.resize(1500, 950)
        viewer.open(str(sample_dir / "image.nii.gz"), plugin="napari-sparseseg")
        viewer.open(str(sample_dir / "scribbles.nii.gz"), plugin="napari-sparseseg")
        viewer.layers["image"].contrast_limits = (-160, 240)
        widget = SparseSegWidget(viewer)
        viewer.window.add_dock_widget(widget, name="Sparse segmentation", area="right")
        # No CRF: the outlines are not what this tests (it was a third of the rounds' time).
        widget.settings.set_settings(dataclasses.replace(widget.settings.settings(), device="cpu", max_steps=4,
                                                         time_budget=3000, refine=False))
        remote = widget.remote
        remote.set_config(RemoteConfig(connect_timeout=300, silence_timeout=300), enabled=True)
        remote.scheduler.setText(cluster.address)
        assert remote.config().scheduler == cluster.address

        runner, seen, previews = widget.runner, [], []
        runner.progress.connect(seen.append)
        runner.preview.connect(previews.append)
        with qtbot.waitSignals([runner.round_finished, runner.idle, widget.autosaver.saved], timeout=ROUND_MS) as got:
            assert widget.train()
        result = next(s.args[0] for s in got.all_signals_and_args if s.signal_name.startswith("round_finished"))
        assert runner.remote is not None and result.train.steps == 4 and result.prediction is not None
        assert {p.stage for p in seen} >= {"train", "predict"} and len(previews) == 1  # streamed while it ran
        assert f"(on {runner.remote.worker}, cpu)" in widget.status.text()
        assert "the round runs on tcp://127.0.0.1:" in remote.info.text()
        assert "prediction" in viewer.layers and (np.asarray(viewer.layers["prediction"].data) > 0).any()
        assert widget.session.model is result.model and len(widget.session.history) == 1
        assert not remote.run_here.isVisible()

        widget.findChild(QScrollArea).ensureWidgetVisible(remote)
        viewer.reset_view()
        for _ in range(20):
            QCoreApplication.processEvents()
        shot = tmp_path / "remote_round.png"
        viewer.screenshot(str(shot), canvas_only=False)
        assert shot.stat().st_size > 10_000
        if os.environ.get("SPARSESEG_DOC_IMAGES"):
            shutil.copy(shot, DOCS / "remote_round.png")

        # The worker is gone: Train says so in one line and keeps the strokes and the model.
        model, strokes = widget.session.model, widget.session.scribbles.copy()
        cluster.workers[0].kill()
        cluster.workers[0].wait(timeout=30)
        with qtbot.waitSignals([runner.round_failed, runner.idle], timeout=ROUND_MS) as got:
            assert widget.train()
        text = next(s.args[0] for s in got.all_signals_and_args if s.signal_name.startswith("round_failed"))
        assert "\n" not in text and ("no worker" in text or "left the cluster" in text), text
        assert "strokes and the last model are kept" in text or "untick" in text
        assert any(text in n for n in notifications) and text in widget.status.text()
        assert widget.session.model is model and np.array_equal(widget.session.scribbles, strokes)
        assert remote.run_here.isVisible()
        # One click: the same round here.
        with qtbot.waitSignals([runner.round_finished, runner.idle], timeout=ROUND_MS) as got:
            remote.run_here.click()
        assert runner.remote is None and not remote.enabled.isChecked() and not remote.run_here.isVisible()
        assert len(widget.session.history) == 2 and "(on " not in widget.status.text()
    finally:
        if widget is not None:
            if widget.runner.busy:
                with qtbot.waitSignal(widget.runner.idle, timeout=ROUND_MS):
                    widget.stop()
                    widget.stop()
            qtbot.waitUntil(lambda: not widget.autosaver.busy, timeout=60_000)
            qtbot.waitUntil(lambda: not widget.feature_pass.busy, timeout=60_000)
            if widget._cluster is not None:
                widget._cluster.close()
        cluster.stop()
