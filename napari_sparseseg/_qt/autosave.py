"""Autosave: the session is written in a worker shortly after each stroke and after each round.

Requests are debounced (a burst of strokes saves once) and coalesced (a request during a save
saves once more when it ends). What to save is asked for on the GUI thread, right before the
worker starts, so the session is synced with the layers there and never from the worker.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from qtpy.QtCore import QObject, QTimer, Signal

from napari_sparseseg._qt.workers import WorkerOwner, error_message
from napari_sparseseg.core.base.errors import SparseSegError
from napari_sparseseg.core.session.state import Session
from napari_sparseseg.io.sessions import save_session

__all__ = ["DEBOUNCE_MS", "Autosaver"]

DEBOUNCE_MS = 300


class Autosaver(WorkerOwner):
    """Debounced, coalesced background saves of one session.

    Args:
        target: called on the GUI thread when a save starts; returns ``(session, folder)``
            (the session synced with the layers) or ``None`` when there is nothing to save.
        parent: the owning QObject.

    Signals:
        saved(Path): a save finished, into that folder.
        failed(str): a save failed (one line saying why).
    """

    saved = Signal(object)
    failed = Signal(str)

    def __init__(self, target: Callable[[], tuple[Session, Path] | None], parent: QObject | None = None):
        super().__init__(None, parent)
        self.target = target
        self.last_folder: Path | None = None
        self._again = False
        self._done = threading.Event()  # set when the running save has written (or failed)
        self._done.set()
        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(DEBOUNCE_MS)
        self._debounce.timeout.connect(self.save_now)

    @property
    def busy(self) -> bool:
        """True while a save runs or one is scheduled.

        A save has run once it has written (or failed), even before its worker's end reaches
        the event loop: after :meth:`flush` nothing is busy.
        """
        return not self._done.is_set() or self._debounce.isActive() or self._again

    def schedule(self) -> None:
        """Save after :data:`DEBOUNCE_MS` without a further request (after each stroke)."""
        self._debounce.start()

    def save_now(self) -> None:
        """Save now, or right after the save that is running (after each round)."""
        self._debounce.stop()
        if self._worker is not None:
            self._again = True
            return
        self._again = False
        job = self.target()
        if job is None:
            return
        session, folder = job
        self._done.clear()
        self._launch(self._save, session, folder, failed=self.failed, returned=self._on_saved)

    def _save(self, session: Session, folder: Path) -> Path:
        try:
            return save_session(session, folder)
        finally:
            self._done.set()

    def flush(self, timeout_s: float = 120.0) -> None:
        """Before the widget or the application goes: no save is cut off and none asked for is skipped.

        Waits (on this thread, at most ``timeout_s``) for a running save, then writes a save
        that was scheduled or queued behind it here and now. A save in a worker thread that
        outlived the application was cut off at exit, and the strokes of the last second with it.
        """
        pending = self._debounce.isActive() or self._again
        self._debounce.stop()
        self._again = False
        self._done.wait(timeout_s)
        if not pending:
            return
        job = self.target()
        if job is None:
            return
        try:
            self._on_saved(save_session(*job))
        except SparseSegError as exc:
            self.failed.emit(error_message(exc))

    def _on_saved(self, folder) -> None:
        self.last_folder = Path(folder)
        self.saved.emit(self.last_folder)

    def _on_finished(self) -> None:
        super()._on_finished()
        if self._again:
            self.save_now()
