"""Runs a cohort's batch (and Refine: multi-scan training, then the re-run) in a napari worker.

The batch itself runs on Dask (:func:`~napari_sparseseg.cohort.batch.run_batch`); this worker
only drives its generator off the GUI thread and re-emits each finished scan. Stop lets the
scans that are running finish and leaves the rest queued (a Refine's training stops within a
step and its model so far is kept, without a re-run).

The local Dask cluster is started by the first run and kept warm for the next ones (a re-run
after corrections or Refine starts at once instead of starting worker processes again); it is
started again when the worker settings change or a run ended in an error, and closed with
:meth:`CohortRunner.close` (the widget's close).
"""

from __future__ import annotations

from napari.utils import progress as napari_progress
from qtpy.QtCore import QObject, Signal

from napari_sparseseg._qt.round_runner import REFRESH_MS
from napari_sparseseg._qt.workers import WorkerOwner
from napari_sparseseg.cohort.batch import ScanResult, run_batch
from napari_sparseseg.cohort.cluster import DaskRunner
from napari_sparseseg.cohort.project import Cohort
from napari_sparseseg.core.base.config import BatchConfig, TrainConfig
from napari_sparseseg.core.base.progress import Progress

__all__ = ["CohortRunner"]


def _job(cohort: Cohort, batch: BatchConfig, train: TrainConfig | None, stop, cluster, drop):
    """Yields training :class:`Progress` (Refine), a ``("planned", n)`` tuple, then a :class:`ScanResult` per scan.

    ``cluster(batch)`` gives the Dask client the scans run on (the runner's warm local cluster);
    after an error ``drop()`` closes it (it may be what failed), so the next run starts a fresh one.
    """
    try:
        yield from _steps(cohort, batch, train, stop, cluster)
    except Exception:
        drop()
        raise


def _steps(cohort: Cohort, batch: BatchConfig, train: TrainConfig | None, stop, cluster):
    if train is not None:
        trainer = cohort.refine_trainer(train)
        gen = trainer.run()
        result = None
        while result is None:
            try:
                p = next(gen)
            except StopIteration as done:
                result = done.value
                break
            yield p
            if stop.is_set():
                gen.close()  # the averaged weights so far stay in trainer.model
                last = trainer.model.history[-1] if trainer.model.history else {}
                cohort.save_refined(trainer.model, last.get("steps", 0), last.get("seconds", 0.0))
                return
        cohort.save_refined(result.model, result.steps, result.elapsed)
    plan = cohort.plan(batch)
    yield ("planned", len(plan.jobs))
    client = cluster(batch) if plan.to_run else None
    yield from run_batch(plan, stop=stop.is_set, client=client)


class CohortRunner(WorkerOwner):
    """One batch (or Refine + re-run) at a time, off the GUI thread.

    :meth:`stop` lets the running scans finish and starts no more (Refine: training ends now).

    Signals:
        started(str): ``"run"`` or ``"refine"``.
        training(Progress): Refine's training progress, at most about twice a second.
        planned(int): the number of scans the batch will go through.
        scan_finished(ScanResult): a scan is done, skipped, failed or (after Stop) left queued.
        failed(str): a one-line message (nothing the user made is lost).
        idle(): the worker is gone.
    """

    started = Signal(str)
    training = Signal(object)
    planned = Signal(int)
    scan_finished = Signal(object)
    failed = Signal(str)
    idle = Signal()

    def __init__(self, parent: QObject | None = None):
        super().__init__(REFRESH_MS, parent)
        self._bar = None
        self._warm: tuple | None = None  # (settings, DaskRunner) of the local cluster kept between runs

    def _cluster(self, batch: BatchConfig):
        """The client of the warm local cluster for ``batch``'s worker settings (started here if needed; worker thread)."""
        key = (batch.workers, batch.threads, batch.worker_memory_gib, batch.retries)
        if self._warm is not None and self._warm[0] != key:
            self._close_cluster()
        if self._warm is None:
            runner = DaskRunner(batch)
            runner.__enter__()
            self._warm = (key, runner)
        return self._warm[1].client

    def _close_cluster(self) -> None:
        warm, self._warm = self._warm, None
        if warm is not None:
            warm[1].__exit__(None, None, None)

    @property
    def warm(self) -> bool:
        """Whether a local cluster is kept for the next run."""
        return self._warm is not None

    @property
    def cluster_address(self) -> str | None:
        """The scheduler address of the local cluster kept between runs, or ``None``."""
        return None if self._warm is None else self._warm[1].client.scheduler.address

    def close(self) -> None:
        """Stop the run (its running scans finish) and close the warm cluster once idle."""
        self.stop()
        if self.busy:
            self.idle.connect(self._close_cluster)
        else:
            self._close_cluster()

    def start(self, cohort: Cohort, batch: BatchConfig, train: TrainConfig | None = None) -> bool:
        """Run the batch over the cohort's unreviewed scans; with ``train``, Refine first. ``False`` while busy."""
        if self.busy:
            return False
        self._stop.clear()
        self._latest = None
        self._bar = napari_progress(total=0, desc="sparseseg: refining" if train else "sparseseg: cohort")
        self._launch(_job, cohort, batch, train, self._stop, self._cluster, self._close_cluster, failed=self.failed,
                     announce=lambda: self.started.emit("refine" if train else "run"))
        return True

    def _on_yielded(self, item) -> None:
        if isinstance(item, Progress):
            first = self._latest is None
            self._latest = item
            if first:
                self._refresh()
        elif isinstance(item, ScanResult):
            self.scan_finished.emit(item)
            if self._bar is not None:
                self._bar.update(1)
        elif isinstance(item, tuple) and item[0] == "planned":
            if self._bar is not None:
                self._bar.total = item[1]
                self._bar.set_description("sparseseg: cohort")
            self.planned.emit(item[1])

    def _refresh(self) -> None:
        if self._latest is not None and self.busy:
            self.training.emit(self._latest)

    def _on_finished(self) -> None:
        self._timer.stop()
        if self._bar is not None:  # may process events: still busy, so nothing starts in there
            self._bar.close()
            self._bar = None
        super()._on_finished()
        self._latest = None
        self.idle.emit()
