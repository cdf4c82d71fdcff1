"""Background pretraining while the user paints (:func:`napari_sparseseg.core.training.pretrain.pretrain`).

The widget starts it the moment a scan is picked; Train ends it within one step and the first
round starts from the state reached (it is cached per scan, so picking the scan again later
costs nothing). It never touches layers and never holds up the user: :meth:`PretrainRunner.stop`
returns at once and ``finished`` follows a step later.
"""

from __future__ import annotations

from qtpy.QtCore import QObject, Signal

from napari_sparseseg._qt.workers import WorkerOwner
from napari_sparseseg.core.base.config import PretrainConfig
from napari_sparseseg.core.training.pretrain import Pretrained
from napari_sparseseg.io.cache import pretrain

__all__ = ["PretrainRunner"]

REFRESH_MS = 1000  # a status line, not a progress bar: once a second is plenty


class PretrainRunner(WorkerOwner):
    """At most one pretraining, off the GUI thread.

    :meth:`stop` ends it after the current step (``finished`` follows).

    Args:
        parent: the owning QObject.

    Signals:
        started(): pretraining of a scan started.
        progress(Progress): the latest step, about once a second.
        finished(object): the :class:`~napari_sparseseg.core.training.pretrain.Pretrained` state reached
            (the bound, or :meth:`stop`), ``None`` if it failed.
        failed(str): a one-line message (the user's work is untouched; training starts fresh).
    """

    started = Signal()
    progress = Signal(object)
    finished = Signal(object)
    failed = Signal(str)

    def __init__(self, parent: QObject | None = None):
        super().__init__(REFRESH_MS, parent)
        self.state: Pretrained | None = None
        self.key: object = None

    def start(self, key: object, image, spacing, cfg: PretrainConfig) -> bool:
        """Pretrain on ``image`` (file-grid array) in a worker; ``key`` names the scan (e.g. its layer).

        Returns ``False`` (and does nothing) while another pretraining runs.
        """
        if self.busy:
            return False
        self._stop.clear()
        self.state, self.key, self._latest = None, key, None
        self._launch(pretrain, image, cfg, spacing=spacing, stop=self._stop, failed=self.failed,
                     returned=self._on_returned, announce=self.started.emit)
        return True

    def state_for(self, key: object) -> Pretrained | None:
        """The finished state of the scan ``key``, if that is the scan last pretrained."""
        return self.state if key is not None and key is self.key and not self.busy else None

    def _on_yielded(self, p) -> None:
        first = self._latest is None
        self._latest = p
        if first:
            self._refresh()

    def _refresh(self) -> None:
        if self._latest is not None and self.busy:
            self.progress.emit(self._latest)

    def _on_returned(self, state) -> None:
        self.state = state

    def _on_finished(self) -> None:
        super()._on_finished()
        self.finished.emit(self.state)
