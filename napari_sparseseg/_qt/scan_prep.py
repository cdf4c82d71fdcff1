"""Head starts on the picked scan while the user paints: pretraining and the forest's features.

The moment a scan is picked, :class:`ScanPrep` starts self-supervised pretraining on it
(:class:`~napari_sparseseg._qt.pretrain_runner.PretrainRunner`, when switched on) and computes
the forest's filter features into the cache its session will use
(:meth:`~napari_sparseseg._napari.binding.SessionBinding.features_for`, :class:`FeaturePass`).
When Train is pressed it says what the round starts from, holding the round back while
pretraining stops (within a step). Neither head start touches layers or holds up the user.
"""

from __future__ import annotations

from collections.abc import Callable

from qtpy.QtCore import QObject, Signal

from napari_sparseseg._qt.pretrain_runner import PretrainRunner
from napari_sparseseg._qt.workers import WorkerOwner
from napari_sparseseg.core.base.device import resolve_device
from napari_sparseseg.core.base.errors import SparseSegError
from napari_sparseseg.core.model.forest import FeatureCache
from napari_sparseseg.core.model.network import size_for_device
from napari_sparseseg.core.training.train import preload

__all__ = ["FeaturePass", "ScanPrep"]


def _prepare(cache: FeatureCache, scan, spacing) -> bool:
    try:
        preload()  # the round's libraries, so Train starts at once
        return cache.prepare(scan, spacing)
    except Exception:  # noqa: BLE001 - only a head start: Train computes them and reports errors
        return False


class FeaturePass(WorkerOwner):
    """Computes a scan's forest features into a :class:`FeatureCache` in a worker.

    A scan asked for while another is computed follows it (the latest only).

    Signals:
        done(bool): a pass ended; whether the features were computed (``False``: too large, or
            it failed: Train computes them and says what is wrong).
    """

    done = Signal(bool)

    def __init__(self, parent: QObject | None = None):
        super().__init__(None, parent)
        self._next: tuple | None = None

    def start(self, cache: FeatureCache, scan, spacing) -> None:
        """Compute ``scan``'s features (file grid, ``spacing`` in array order) into ``cache``."""
        if self.busy:
            self._next = (cache, scan, spacing)
            return
        self._launch(_prepare, cache, scan, spacing, returned=self.done.emit)

    def _on_finished(self) -> None:
        super()._on_finished()
        pending, self._next = self._next, None
        if pending is not None:
            self.start(*pending)


class ScanPrep(QObject):
    """The head starts of the widget (see the module docstring).

    Args:
        binding: the widget's :class:`~napari_sparseseg._napari.binding.SessionBinding`.
        settings: the widget's :class:`~napari_sparseseg._qt.settings_panel.SettingsPanel`
            (its Pretrain and Forest switches start and stop the head starts).
        picked: returns the picked image layer.
        round_busy: returns whether a round runs (pretraining does not start then).
        parent: the owning QObject.

    Attributes:
        pretrainer: the :class:`PretrainRunner`.
        feature_pass: the :class:`FeaturePass`.

    Signals:
        status(str): a line about pretraining, for the widget to show.
        resume(object): the round held back by :meth:`round_start` (its ``pending`` value), to
            start now that pretraining has stopped.
    """

    status = Signal(str)
    resume = Signal(object)

    def __init__(self, binding, settings, picked: Callable, round_busy: Callable[[], bool],
                 parent: QObject | None = None):
        super().__init__(parent)
        self.binding, self.settings, self.picked, self.round_busy = binding, settings, picked, round_busy
        self.pretrainer = PretrainRunner(self)
        self.feature_pass = FeaturePass(self)
        self._pending = None
        self.pretrainer.progress.connect(
            lambda p: self.status.emit(f"Learning the scan while you paint: {p.elapsed:.0f} s "
                                       "(self-supervised; Train starts from it)"))
        self.pretrainer.finished.connect(self._on_pretrained)
        self.pretrainer.failed.connect(lambda text: self.status.emit(f"Pretraining stopped: {text}"))
        settings.pretrain.toggled.connect(lambda on: self.pretrain(self.picked()) if on else self.pretrainer.stop())
        settings.forest.toggled.connect(lambda on: self.prepare_features(self.picked()) if on else None)

    def scan_picked(self, img) -> None:
        """Start both head starts on ``img`` (each only where it is switched on)."""
        self.pretrain(img)
        self.prepare_features(img)

    def _scan(self, img):
        try:
            self.binding.check_image(img)
            return self.binding.scan(img)
        except (ValueError, SparseSegError):
            return None  # Train reports what is wrong with the image

    def prepare_features(self, img) -> None:
        """Compute the forest's filters of ``img`` into its sessions' cache, so Train finds them ready."""
        if img is None or not self.settings.forest.isChecked():
            return
        scan = self._scan(img)
        if scan is not None:
            self.feature_pass.start(self.binding.features_for(img), *scan)

    def pretrain(self, img) -> None:
        """Start background pretraining on ``img`` unless it is off, running, or a model of this scan exists."""
        if self.pretrainer.busy:
            if self.pretrainer.key is not img:
                self.pretrainer.stop()  # another scan was picked: _on_pretrained starts this one
            return
        session = self.binding.session
        if (img is None or not self.settings.pretrain.isChecked() or self.round_busy()
                or self.pretrainer.state_for(img) is not None
                or (self.binding.is_bound(img) and session.model is not None)):
            return
        scan = self._scan(img)
        if scan is None:
            return
        try:
            cfg = self.settings.settings().pretrain_config()
        except (ValueError, SparseSegError):
            return  # Train reports what is wrong with the settings
        self.pretrainer.start(img, *scan, cfg)

    def round_start(self, new_model: bool, settings, pending) -> tuple[bool, object]:
        """What a round starts from: ``(held, pretrained)``.

        A round of a new model starts from the picked scan's pretrained state if it suits the
        settings (device type and size); while pretraining runs, the round is held (``held``):
        pretraining stops within a step and :attr:`resume` then carries ``pending``. A round
        of an existing model stops pretraining.
        """
        if not new_model:
            self.pretrainer.stop()
            return False, None
        if self.pretrainer.busy:
            self._pending = pending
            self.pretrainer.stop()
            return True, None
        state = self.pretrainer.state_for(self.picked())
        if state is None or not settings.pretrain:
            return False, None
        fits = size_for_device(settings.model_size, resolve_device(settings.device).type) == state.size
        return False, state if fits else None

    def stop(self) -> None:
        """Stop pretraining (the widget closes); the feature pass ends by itself."""
        self.pretrainer.stop()

    def _on_pretrained(self, state) -> None:
        if state is not None:
            self.status.emit(f"Learned the scan for {state.seconds:.0f} s ({state.steps} steps, cached); "
                             "the first round starts from it.")
        pending, self._pending = self._pending, None
        if pending is not None:
            self.resume.emit(pending)
        elif self.picked() is not self.pretrainer.key:
            self.pretrain(self.picked())
