"""Runs one round (:func:`~napari_sparseseg.core.session.rounds.run_round`) in a napari worker and reports it through signals.

The generator yields a :class:`~napari_sparseseg.core.base.progress.Progress` per training step and
per prediction slab and ``return``s a :class:`~napari_sparseseg.core.session.state.RoundResult`
(the stardist-napari pattern with ``GeneratorWorker.returned``). The runner (a
:class:`~napari_sparseseg._qt.workers.WorkerOwner`) owns that worker,
the Stop event and napari's progress bar in the activity dock; it never touches layers.

Progress is re-emitted at a few hertz, not per step: every repaint of the window costs the
training thread CPU, a lot of it under software OpenGL (per-step repaints cut training
throughput 4x there; at 2 Hz the widget trains at about 0.6x the headless rate, most of the
rest being napari's own activity indicator).
"""

from __future__ import annotations

import time

from napari.utils import progress as napari_progress
from qtpy.QtCore import QCoreApplication, QElapsedTimer, QObject, Signal

from napari_sparseseg._qt.workers import WorkerOwner
from napari_sparseseg.core.base.config import PredictConfig, TrainConfig
from napari_sparseseg.core.base.progress import Progress
from napari_sparseseg.core.session.rounds import run_round
from napari_sparseseg.core.session.state import Session
from napari_sparseseg.remote.rounds import RemoteRounds

__all__ = ["REFRESH_MS", "RoundRunner"]

REFRESH_MS = 500  # progress re-emitted at 2 Hz while a round runs
_DESCRIPTION = {"train": "sparseseg: training", "predict": "sparseseg: predicting"}


class RoundRunner(WorkerOwner):
    """One training (+ prediction) round at a time, off the GUI thread.

    Args:
        parent: the owning QObject.

    Signals:
        started(bool): a round started; ``True`` when it trains, ``False`` for predict-only.
        progress(Progress): the latest step, at most about twice a second (and at each stage's
            first step). :attr:`losses` holds every training loss of the round so far.
        preview(ndarray): an early mask (file grid) while training goes on (the forest's;
            only when started with ``preview=True``).
        round_finished(RoundResult): the round's result, still to be accepted by the session.
        round_failed(str): a one-line message of what went wrong (the annotations are kept);
            :attr:`remote` says whether the round ran on a cluster.
        idle(): the worker is gone; a new round may start.
    """

    started = Signal(bool)
    progress = Signal(object)
    preview = Signal(object)
    round_finished = Signal(object)
    round_failed = Signal(str)
    idle = Signal()

    def __init__(self, parent: QObject | None = None):
        super().__init__(REFRESH_MS, parent)
        self.losses: list[float] = []
        self.remote: RemoteRounds | None = None  # the cluster of the current (or last) round, None when local
        self._stage: str | None = None
        self._bar = None

    @property
    def stage(self) -> str | None:
        """``"train"`` or ``"predict"`` while running (from the first progress on), else ``None``."""
        return self._latest.stage if self.busy and self._latest is not None else None

    def start(self, session: Session, train_config: TrainConfig | None, predict_config: PredictConfig,
              train: bool = True, pretrained=None, preview: bool = False, remote: RemoteRounds | None = None) -> bool:
        """Start ``run_round(session, train_config, predict_config, stop, train, pretrained, preview)`` in a worker.

        With ``remote`` the round runs on a worker of that Dask cluster
        (:meth:`~napari_sparseseg.remote.rounds.RemoteRounds.run_round`: the same progress,
        Stop and result). The session is not changed by the round; apply the result on
        ``round_finished`` with :func:`~napari_sparseseg.core.session.rounds.accept_round`.
        Returns ``False`` (and does nothing) while a round runs.
        """
        if self.busy:
            return False
        self._stop.clear()
        self._latest, self._stage, self.losses = None, None, []
        self.remote = remote
        # Created before the worker starts: napari's progress may process events.
        self._bar = napari_progress(total=1000, desc=_DESCRIPTION["train" if train else "predict"])
        rounds = run_round if remote is None else remote.run_round
        self._launch(rounds, session, train_config, predict_config, self._stop, train, pretrained, preview,
                     failed=self.round_failed, returned=self.round_finished.emit, announce=lambda: self.started.emit(train))
        return True

    def stop(self) -> str | None:
        """Stop the round (the Stop button).

        During training: training ends within one step, its model is kept and the prediction
        still runs. During the prediction (a second press): the prediction is skipped.

        Returns:
            ``"training"`` or ``"prediction"`` (what is being stopped), ``None`` when idle.
        """
        if not self.busy:
            return None
        self._stop.set()
        return "prediction" if self.stage == "predict" else "training"

    def wait(self, timeout_ms: int = 600_000) -> bool:
        """Process events until the round is over (scripts, benchmarks); returns whether it is."""
        clock = QElapsedTimer()
        clock.start()
        while self.busy and clock.elapsed() < timeout_ms:
            QCoreApplication.processEvents()
            time.sleep(0.01)
        return not self.busy

    # ------------------------------------------------------------------ internals
    def _on_yielded(self, p: Progress) -> None:
        if not self.busy:
            return
        if p.stage == "train" and p.loss is not None:
            self.losses.append(float(p.loss))
        if p.preview is not None:
            self.preview.emit(p.preview)
        first = self._latest is None or p.stage != self._latest.stage
        self._latest = p
        if first:
            self._refresh()

    def _refresh(self) -> None:
        p = self._latest
        if p is None or not self.busy:
            return
        self.progress.emit(p)
        # napari's progress may process events (the round can even finish re-entrantly in
        # there), so it is updated last and only while it is still this run's bar. One bar per
        # run, relabelled per stage: replacing it re-laid out the window (0.6 s, software GL).
        bar, relabel = self._bar, p.stage != self._stage
        self._stage = p.stage
        value = int(1000 * p.fraction)
        if bar is not None and relabel:
            bar.set_description(_DESCRIPTION.get(p.stage, p.stage))
        if bar is not None and self._bar is bar and bar.n != value:
            bar.n = value
            bar.refresh()

    def _on_finished(self) -> None:
        self._timer.stop()
        if self._bar is not None:  # may process events: still busy, so nothing starts in there
            self._bar.close()
            self._bar = None
        super()._on_finished()
        self._latest, self._stage = None, None
        self.idle.emit()
