"""The one way the GUI runs work off its thread: a napari worker owned by a QObject.

Every background job of the widgets (a round, pretraining, a cohort's batch, an autosave, the
forest's feature head start) is a :class:`WorkerOwner` subclass: it owns at most one napari
worker (:func:`napari.qt.threading.create_worker`), a Stop event and, for jobs that report
progress, a timer that re-emits the latest of it at a few hertz.
"""

from __future__ import annotations

import threading

from napari.qt.threading import create_worker
from qtpy.QtCore import QObject, QThreadPool, QTimer

from napari_sparseseg.core.base.errors import SparseSegError

__all__ = ["WorkerOwner", "error_message"]


def error_message(exc: BaseException) -> str:
    """One line for a notification: our errors' own text, else the exception's type and text."""
    return exc.one_line() if isinstance(exc, SparseSegError) else f"{type(exc).__name__}: {exc}"


def _room_for_one_more() -> None:
    # napari's workers run in Qt's global pool, sized by the CPU count. Ours are long jobs that
    # must not queue behind one another (an autosave behind a feature pass on a 2-core machine),
    # so the pool grows to run each one now; its threads are made on demand.
    pool = QThreadPool.globalInstance()
    pool.setMaxThreadCount(max(pool.maxThreadCount(), pool.activeThreadCount() + 1))


class WorkerOwner(QObject):
    """Owns at most one napari worker, its Stop event and a timer that re-emits progress.

    Args:
        refresh_ms: the timer's interval (subclasses re-emit their latest progress in
            ``_refresh``); ``None``: no timer (jobs without progress).
        parent: the owning QObject.
    """

    def __init__(self, refresh_ms: int | None, parent: QObject | None = None):
        super().__init__(parent)
        self._worker = None
        self._stop = threading.Event()
        self._latest = None
        self._timer = None
        if refresh_ms is not None:
            self._timer = QTimer(self)
            self._timer.setInterval(refresh_ms)
            self._timer.timeout.connect(self._refresh)

    @property
    def busy(self) -> bool:
        """True while the worker runs (from ``start`` until its last signal)."""
        return self._worker is not None

    def _launch(self, fn, *args, failed=None, returned=None, announce=None, **kwargs) -> None:
        """Run ``fn(*args, **kwargs)`` in a napari worker owned by this object.

        Yields go to ``_on_yielded``, an error to the ``failed`` signal as one line (dropped
        when ``None``), the return value to ``returned``, the end to ``_on_finished``; the
        refresh timer starts and ``announce()`` runs before the thread does.
        """
        self._worker = create_worker(fn, *args, _start_thread=False, _ignore_errors=True, **kwargs)
        if hasattr(self._worker, "yielded"):
            self._worker.yielded.connect(self._on_yielded)
        if returned is not None:
            self._worker.returned.connect(returned)
        if failed is not None:
            self._worker.errored.connect(lambda exc: failed.emit(error_message(exc)))
        self._worker.finished.connect(self._on_finished)
        if self._timer is not None:
            self._timer.start()
        if announce is not None:
            announce()
        _room_for_one_more()
        self._worker.start()

    def stop(self):
        """Ask the worker to stop (it ends at its next check); returns whether one was running."""
        if not self.busy:
            return False
        self._stop.set()
        return True

    def _on_yielded(self, item) -> None:  # pragma: no cover - overridden by jobs that yield
        pass

    def _refresh(self) -> None:  # pragma: no cover - overridden by jobs with a timer
        raise NotImplementedError

    def _on_finished(self) -> None:
        if self._timer is not None:
            self._timer.stop()
        self._worker = None
