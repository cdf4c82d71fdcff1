"""Autosave: the session is written in a worker shortly after each stroke and after each round.

Requests are debounced (a burst of strokes saves once) and coalesced (a request during a save
saves once more when it ends). What to save is asked for on the GUI thread, right before the
worker starts, so the session is synced with the layers there and never from the worker.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from napari.qt.threading import create_worker
from qtpy.QtCore import QObject, QTimer, Signal

from napari_sparseseg._qt.round_runner import error_message
from napari_sparseseg.core.session.state import Session
from napari_sparseseg.io.sessions import save_session

__all__ = ["DEBOUNCE_MS", "Autosaver"]

DEBOUNCE_MS = 300


class Autosaver(QObject):
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
        super().__init__(parent)
        self.target = target
        self.last_folder: Path | None = None
        self._worker = None
        self._again = False
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(DEBOUNCE_MS)
        self._timer.timeout.connect(self.save_now)

    @property
    def busy(self) -> bool:
        """True while a save runs or one is scheduled."""
        return self._worker is not None or self._timer.isActive() or self._again

    def schedule(self) -> None:
        """Save after :data:`DEBOUNCE_MS` without a further request (after each stroke)."""
        self._timer.start()

    def save_now(self) -> None:
        """Save now, or right after the save that is running (after each round)."""
        self._timer.stop()
        if self._worker is not None:
            self._again = True
            return
        self._again = False
        job = self.target()
        if job is None:
            return
        session, folder = job
        self._worker = create_worker(save_session, session, folder, _start_thread=False, _ignore_errors=True)
        self._worker.returned.connect(self._on_saved)
        self._worker.errored.connect(lambda exc: self.failed.emit(error_message(exc)))
        self._worker.finished.connect(self._on_finished)
        self._worker.start()

    def _on_saved(self, folder) -> None:
        self.last_folder = Path(folder)
        self.saved.emit(self.last_folder)

    def _on_finished(self) -> None:
        self._worker = None
        if self._again:
            self.save_now()
