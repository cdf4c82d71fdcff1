"""Autosave: the session is written in a worker shortly after each stroke and after each round.

Requests are debounced (a burst of strokes saves once) and coalesced (a request during a save
saves once more when it ends). What to save is asked for on the GUI thread, right before the
worker starts, so the session is synced with the layers there and never from the worker.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from qtpy.QtCore import QObject, QTimer, Signal

from napari_sparseseg._qt.workers import WorkerOwner
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
        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(DEBOUNCE_MS)
        self._debounce.timeout.connect(self.save_now)

    @property
    def busy(self) -> bool:
        """True while a save runs or one is scheduled."""
        return self._worker is not None or self._debounce.isActive() or self._again

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
        self._launch(save_session, session, folder, failed=self.failed, returned=self._on_saved)

    def _on_saved(self, folder) -> None:
        self.last_folder = Path(folder)
        self.saved.emit(self.last_folder)

    def _on_finished(self) -> None:
        super()._on_finished()
        if self._again:
            self.save_now()
