"""The annotation dock widget: scribble -> train -> predict -> correct, inside napari.

It only lays out and wires its parts (as brainglobe-segmentation composes its panels): the
layer pickers (magicgui), :class:`ClassTable`, :class:`SettingsPanel`, :class:`RoundPanel`,
:class:`ResumeBox`, :class:`FilePanel`, the :class:`RoundRunner` (the training worker),
:class:`ScanPrep` (head starts on the picked scan), the :class:`Autosaver`, and the Qt-free :class:`~napari_sparseseg._napari.binding.SessionBinding` (layers <-> session).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from napari.layers import Image, Labels
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QApplication, QLabel, QWidget

from napari_sparseseg._napari.binding import PREDICTION, SessionBinding
from napari_sparseseg._qt.autosave import Autosaver
from napari_sparseseg._qt.class_table import ClassTable
from napari_sparseseg._qt.file_panel import FilePanel
from napari_sparseseg._qt.hints_panel import HintsPanel
from napari_sparseseg._qt.layer_panel import LayerPanel
from napari_sparseseg._qt.layout import scrolling_column
from napari_sparseseg._qt.remote_panel import RemotePanel
from napari_sparseseg._qt.resume_box import ResumeBox
from napari_sparseseg._qt.round_panel import RoundPanel, round_summary
from napari_sparseseg._qt.round_runner import RoundRunner
from napari_sparseseg._qt.scan_prep import ScanPrep
from napari_sparseseg._qt.settings_panel import SettingsPanel
from napari_sparseseg._qt.suggest_list import SuggestionList
from napari_sparseseg._qt.workers import error_message
from napari_sparseseg.core.base.errors import SparseSegError
from napari_sparseseg.core.session.state import Session
from napari_sparseseg.remote.rounds import RemoteRounds

__all__ = ["SparseSegWidget"]


class SparseSegWidget(QWidget):
    """Dock widget of the interactive loop (``napari -w napari-sparseseg`` opens it).

    Its parts are public: ``layer_panel`` (:class:`LayerPanel`: the magicgui pickers), ``classes``
    (:class:`ClassTable`), ``settings`` (:class:`SettingsPanel`), ``rounds`` (:class:`RoundPanel`),
    ``runner`` (:class:`RoundRunner`: ``started``, ``progress``, ``round_finished``,
    ``round_failed``, ``idle``), ``prep`` (:class:`ScanPrep`: the head starts on the picked
    scan while the user paints) with its ``pretrainer`` (:class:`PretrainRunner`: self-supervised
    pretraining; ``finished``) and ``feature_pass`` (:class:`FeaturePass`: the forest's features
    into the cache the scan's session uses; ``busy``, ``done``), ``autosaver`` (:class:`Autosaver`:
    ``saved``, ``failed``), ``files`` (:class:`FilePanel`: export, save, load), ``remote``
    (:class:`RemotePanel`: train on a Dask cluster; ``run_here_requested``), ``resume_box`` and
    ``binding``. Background work all runs through :class:`~napari_sparseseg._qt.workers.WorkerOwner`.

    Args:
        napari_viewer: the viewer it works in.
        parent: the parent widget.
    """

    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.binding = SessionBinding(napari_viewer, on_stroke=self._on_stroke)
        self.runner = RoundRunner(self)
        self.autosaver = Autosaver(self._autosave_target, self)
        # Quitting napari does not close its dock widgets: the last strokes are saved on the way out.
        QApplication.instance().aboutToQuit.connect(self.autosaver.flush)
        self._live_pending = False
        self.layer_panel = LayerPanel(napari_viewer, exclude=(PREDICTION,))
        self.image_picker, self.scribbles_picker = self.layer_panel.image_picker, self.layer_panel.scribbles_picker
        self.resume_box = ResumeBox()
        self.classes = ClassTable(lambda value: self.binding.stroke_count(self.scribbles_layer, value))
        self.classes.set_classes(["background", "structure 1"])  # before the wiring: a picked layer's names win
        self.settings = SettingsPanel()
        self.remote = RemotePanel()
        self._cluster: RemoteRounds | None = None  # the connection of the remote rounds (made in the round's thread)
        self._remote_pending: tuple | None = None  # the last remote round's (train, time_budget), to run it here
        self.prep = ScanPrep(self.binding, self.settings, lambda: self.image_layer, lambda: self.runner.busy, self)
        self.pretrainer, self.feature_pass = self.prep.pretrainer, self.prep.feature_pass
        self.rounds = RoundPanel()
        self.suggestions = SuggestionList()
        self.hints = HintsPanel()
        self.status = QLabel("Pick the image, then paint background (class 1) and structures in the scribbles layer.")
        self.status.setWordWrap(True)
        self.pretrain_status = QLabel("")
        self.pretrain_status.setWordWrap(True)
        self.files = FilePanel(self.binding, self._sync, lambda: self.runner.busy)
        scrolling_column(self, (self.layer_panel, self.resume_box, self.classes, self.hints, self.settings, self.remote,
                                self.pretrain_status, self.rounds, self.suggestions, self.status, self.files))

        self.image_picker.changed.connect(self._on_image_changed)
        self.scribbles_picker.changed.connect(self._on_scribbles_changed)
        self.layer_panel.new_button.clicked.connect(lambda: self.new_scribbles_layer())
        self.resume_box.resume_requested.connect(lambda folder: self.load_session(str(folder)))
        self.classes.classes_changed.connect(lambda names, colors: self.binding.set_classes(self.scribbles_layer, names, colors))
        self.classes.class_selected.connect(lambda value: self.binding.paint_class(self.scribbles_layer, value))
        self.classes.class_selected.connect(lambda value: self.binding.set_hint_class(value - 1))
        self.hints.requested.connect(self.add_hint_layer)
        self.classes.class_removed.connect(lambda value: self.binding.shift_down(self.scribbles_layer, value))
        r = self.rounds
        for button, slot in ((r.train_button, self.train), (r.stop_button, self.stop), (r.predict_button, self.predict),
                             (r.reset_button, self.reset_model)):
            button.clicked.connect(lambda _=False, slot=slot: slot())
        self.runner.started.connect(self._on_started)
        self.runner.progress.connect(lambda p: self.rounds.show_progress(p, self.runner.losses))
        self.runner.preview.connect(self.binding.show_preview)
        self.runner.round_finished.connect(self._on_round_finished)
        self.suggestions.chosen.connect(lambda s: self.binding.go_to_slice(s.axis, s.index))
        self.runner.round_failed.connect(self._fail)
        self.runner.round_failed.connect(lambda _: self.remote.offer_local(self.runner.remote is not None))
        self.remote.run_here_requested.connect(self.run_here)
        self.remote.note.connect(lambda text: show_warning(text) if text.startswith("warning:") else None)
        self.runner.idle.connect(self._on_idle)
        self.autosaver.failed.connect(self._fail)
        self.files.message.connect(self.status.setText)
        self.files.failed.connect(self._fail)
        self.files.loaded.connect(self._on_loaded)
        self.prep.status.connect(self.pretrain_status.setText)
        self.prep.resume.connect(lambda pending: self._start(*pending))
        self._on_image_changed()
        self._on_scribbles_changed()

    # ------------------------------------------------------------------ layers
    @property
    def image_layer(self) -> Image | None:
        """The picked image layer."""
        return self.image_picker.value

    @property
    def scribbles_layer(self) -> Labels | None:
        """The picked scribbles layer."""
        return self.scribbles_picker.value

    @property
    def session(self) -> Session | None:
        """The session of the picked layers (started by the first round, save or autosave)."""
        return self.binding.session

    def _on_image_changed(self, *_):
        img = self.image_layer
        self.resume_box.clear()
        if img is None or self.runner.busy:
            return
        self.layer_panel.show_orientation(self.binding.show_orientation(img))
        offer = self.binding.autosave_offer(img)
        if offer is not None:
            self.resume_box.offer(offer[0], f"Scribbles for '{img.name}' were autosaved on {offer[1]}. Resume them?")
        self.prep.scan_picked(img)

    def _on_scribbles_changed(self, *_):
        lay = self.scribbles_layer
        if lay is None or self.runner.busy:
            return
        self.classes.follow_layer(lay, take_names=not (self.session is not None and self.binding.scribbles_layer is lay))
        self.binding.style_scribbles(lay, self.classes.colors)

    def add_hint_layer(self, kind: str):
        """Add (or pick) the ``boxes`` or ``clicks`` layer over the image, in the class being painted."""
        try:
            self.binding.bind(self.image_layer, self.scribbles_layer, self.classes.names, self.classes.colors)
        except (ValueError, SparseSegError) as exc:
            return self._fail(exc)
        value = int(self.scribbles_layer.selected_label)
        label = value - 1 if kind == "clicks" else max(1, value - 1)
        return self.binding.add_hint_layer(kind, label)

    def new_scribbles_layer(self) -> Labels | None:
        """Add an empty scribbles layer over the picked image, and pick it."""
        try:
            lay = self.binding.new_scribbles_layer(self.image_layer, self.classes.colors)
        except SparseSegError as exc:
            return self._fail(exc)
        self.scribbles_picker.value = lay
        return lay

    # ------------------------------------------------------------------ rounds
    def _sync(self) -> Session:
        """The session of the picked layers with every stroke, class and setting folded in."""
        self.binding.bind(self.image_layer, self.scribbles_layer, self.classes.names, self.classes.colors)
        return self.binding.sync(self.classes.names, self.classes.colors, self.settings.settings())

    def train(self, time_budget: float | None = None) -> bool:
        """Start a training round (+ prediction) in a worker; returns whether it started."""
        return self._start(True, time_budget)

    def predict(self) -> bool:
        """Predict with the current model in a worker; returns whether it started."""
        return self._start(False)

    def _start(self, train: bool, time_budget: float | None = None) -> bool:
        if self.runner.busy:
            show_info("Training is already running; press Stop first.")
            return False
        try:
            s = self._sync()
            # The boxes and clicks, checked now; the round turns them into pseudo-labels in its worker.
            s.hint_shapes, s.hints = self.binding.read_hint_shapes(strict=True), None
            tcfg = s.settings.train_config(len(s.history), time_budget) if train else None
            pcfg = s.settings.predict_config()
            cluster = self._remote_rounds()
        except (ValueError, SparseSegError) as exc:
            return self._fail(exc) or False
        if train and s.model is not None and s.model.num_classes != len(s.class_names):
            show_info(f"The class table now has {len(s.class_names)} classes, the model {s.model.num_classes}: training a new model.")
        new_model = train and (s.model is None or s.model.num_classes != len(s.class_names))
        held, pretrained = self.prep.round_start(new_model, s.settings, (train, time_budget))
        if held:  # pretraining ends within one step; the round starts from what it learned
            self.status.setText("Starting from what was learned of the scan…")
            return True
        self.remote.offer_local(False)
        self._remote_pending = None if cluster is None else (train, time_budget)
        # While no mask is shown, the forest's appears a few seconds after Train.
        return self.runner.start(s, tcfg, pcfg, train, pretrained, preview=train and s.prediction is None, remote=cluster)

    def _remote_rounds(self) -> RemoteRounds | None:
        """The cluster the next round runs on (``None``: here); the connection is kept while the settings stay."""
        cfg = self.remote.config()
        if self._cluster is not None and (cfg is None or cfg != self._cluster.cfg):
            self._cluster.close()
            self._cluster = None
        if cfg is not None and self._cluster is None:
            self._cluster = RemoteRounds(cfg, note=self.remote.note.emit)
        return self._cluster

    def run_here(self) -> bool:
        """Switch remote training off and run the round that failed on the cluster on this computer (one click)."""
        pending, self._remote_pending = self._remote_pending or (True, None), None
        self.remote.enabled.setChecked(False)
        self.remote.offer_local(False)
        return self._start(*pending)

    def stop(self) -> None:
        """First press: end training within one step (model kept, prediction follows). Second: skip the prediction."""
        what = self.runner.stop()
        if what is not None:
            self.status.setText("Stopping after this step; the model so far is kept…" if what == "training" else "Cancelling the prediction…")

    def reset_model(self) -> None:
        """Forget the model; the next Train starts a fresh network (scribbles kept)."""
        self.binding.reset_model()
        self._set_running(False)
        self.status.setText("The model was reset; the next Train starts a fresh network (scribbles kept).")

    def _set_running(self, running: bool):
        self.layer_panel.set_enabled(not running)
        self.files.load_button.setEnabled(not running)
        self.settings.set_running(running)
        self.remote.set_running(running)
        self.rounds.set_running(running, has_model=self.session is not None and self.session.model is not None)

    def _on_started(self, train: bool):
        self._set_running(True)
        self.rounds.round_started(train)
        self.status.setText("Training…" if train else "Predicting…")
        # The uncertainty layer the result fills, added now on a turn of its own, not when the result arrives.
        QTimer.singleShot(0, self.binding.prepare_uncertainty)

    def _on_round_finished(self, result):
        self.binding.accept(result, self.classes.names, self.classes.colors, self.settings.settings())
        if result.prediction is not None:
            if result.prediction.uncertainty is not None:
                # Its own turn of the event loop: on a clinical CT each layer holds the GUI thread a
                # few tenths of a second, so the user's input is served between the two.
                QTimer.singleShot(0, partial(self.binding.show_uncertainty, result.prediction.uncertainty))
            self.suggestions.show_suggestions(result.suggestions, self.binding.describe_slice)
        self.rounds.show_result(result, self.runner.losses)
        where = self.runner.remote
        self.status.setText(round_summary(result, len(self.session.history))
                            + (f" (on {where.worker}, {where.device})" if where is not None else ""))
        # Saved on a turn of its own; accept has just synced the session with the layers, so the
        # save does not compare every voxel of them again unless a stroke comes first.
        self._synced = True
        QTimer.singleShot(0, self.autosaver.save_now)

    def _on_idle(self):
        self.binding.drop_preview()
        self._set_running(False)
        if self._live_pending and self.settings.live.isChecked():
            self._live_pending = False
            self.train(time_budget=self.settings.settings().live_seconds)

    def _on_stroke(self):
        self._synced = False
        self.autosaver.schedule()
        if self.settings.live.isChecked():
            if self.runner.busy:
                self._live_pending = True
            else:
                self.train(time_budget=self.settings.settings().live_seconds)

    def _autosave_target(self):
        synced, self._synced = self._synced, False
        if not synced:
            try:
                self._sync()  # a stroke before any round starts the session
            except SparseSegError:
                return None  # nothing to save yet; Train says what is missing
        return self.binding.autosave_target()

    def _fail(self, error) -> None:
        text = error if isinstance(error, str) else error_message(error)
        self.status.setText(f"<span style='color:#ff6b6b'>{text}</span>")
        show_error(text)

    # ------------------------------------------------------------------ files
    def export_mask(self, path: str | None = None) -> Path | None:
        """Write the (possibly edited) prediction on the scan's own grid and geometry (NIfTI/NRRD/MHA)."""
        return self.files.export_mask(path)

    def save_session(self, folder: str | None = None) -> Path | None:
        """Save the scan reference, scribbles, corrections, model, classes and history to a folder."""
        return self.files.save_session(folder)

    def load_session(self, folder: str | None = None) -> bool:
        """Open a saved session: its scan (reused if already open), scribbles, prediction, model, classes."""
        return self.files.load_session(folder)

    def _on_loaded(self, s: Session, img, scr, folder: str) -> None:
        self.image_picker.value, self.scribbles_picker.value = img, scr
        self.classes.set_classes(s.class_names, s.colors)
        self.settings.set_settings(s.settings)
        self.rounds.loss_plot.set_history([h.get("losses", []) for h in s.history])
        self._set_running(False)
        self.resume_box.clear()
        self.status.setText(f"Session loaded from {folder}: {len(s.history)} round(s), "
                            f"{int((s.scribbles > 0).sum())} labelled voxels. Continue training or keep painting.")

    def resume(self) -> bool:
        """Resume the autosaved session offered for the picked image (the Resume button)."""
        return self.resume_box.folder is not None and self.load_session(str(self.resume_box.folder))

    def closeEvent(self, event):  # noqa: N802 (Qt API)
        """Save what was painted, stop a running round and pretraining when the widget closes."""
        self.autosaver.flush()
        self.runner.stop()
        self.prep.stop()
        if self._cluster is not None and not self.runner.busy:
            self._cluster.close()
            self._cluster = None
        super().closeEvent(event)
