"""The annotation dock widget: scribble -> train -> predict -> correct, inside napari.

It only lays out and wires its parts (as brainglobe-segmentation composes its panels): the
layer pickers (magicgui), :class:`ClassTable`, :class:`SettingsPanel`, :class:`RoundPanel`,
:class:`ResumeBox`, the :class:`RoundRunner` (the training worker), the :class:`Autosaver`,
and the Qt-free :class:`~napari_sparseseg._napari.binding.SessionBinding` (layers <-> session).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from napari.layers import Image, Labels
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtWidgets import (
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from napari_sparseseg._napari.binding import PREDICTION, SessionBinding
from napari_sparseseg._qt.autosave import Autosaver
from napari_sparseseg._qt.class_table import ClassTable
from napari_sparseseg._qt.hints_panel import HintsPanel
from napari_sparseseg._qt.layer_panel import LayerPanel
from napari_sparseseg._qt.pretrain_runner import PretrainRunner
from napari_sparseseg._qt.resume_box import ResumeBox
from napari_sparseseg._qt.round_panel import RoundPanel, round_summary
from napari_sparseseg._qt.round_runner import RoundRunner, error_message
from napari_sparseseg._qt.settings_panel import SettingsPanel
from napari_sparseseg._qt.suggest_list import SuggestionList
from napari_sparseseg.core.annotations.holdout import format_estimate
from napari_sparseseg.core.annotations.labels import MAX_CLASSES
from napari_sparseseg.core.base.device import resolve_device
from napari_sparseseg.core.base.errors import SparseSegError
from napari_sparseseg.core.model.forest import prepare_features
from napari_sparseseg.core.model.network import size_for_device
from napari_sparseseg.core.session.state import Session
from napari_sparseseg.io.sessions import save_session

__all__ = ["SparseSegWidget"]


class SparseSegWidget(QWidget):
    """Dock widget of the interactive loop (``napari -w napari-sparseseg`` opens it).

    Its parts are public: ``layer_panel`` (:class:`LayerPanel`: the magicgui pickers), ``classes``
    (:class:`ClassTable`), ``settings`` (:class:`SettingsPanel`), ``rounds`` (:class:`RoundPanel`),
    ``runner`` (:class:`RoundRunner`: ``started``, ``progress``, ``round_finished``,
    ``round_failed``, ``idle``), ``pretrainer`` (:class:`PretrainRunner`: self-supervised
    pretraining on the picked scan while the user paints; ``finished``), ``autosaver``
    (:class:`Autosaver`: ``saved``, ``failed``), ``resume_box``, ``binding`` and ``feature_pass``
    (the thread computing the picked scan's forest features while the user paints, or ``None``).

    Args:
        napari_viewer: the viewer it works in.
        parent: the parent widget.
    """

    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.binding = SessionBinding(napari_viewer, on_stroke=self._on_stroke)
        self.runner = RoundRunner(self)
        self.pretrainer = PretrainRunner(self)
        self._pending_round: tuple | None = None  # Train pressed while pretraining: starts when it has stopped
        self.feature_pass = None
        self.autosaver = Autosaver(self._autosave_target, self)
        self._live_pending = False
        self.layer_panel = LayerPanel(napari_viewer, exclude=(PREDICTION,))
        self.image_picker, self.scribbles_picker = self.layer_panel.image_picker, self.layer_panel.scribbles_picker
        self.resume_box = ResumeBox()
        self.classes = ClassTable(lambda value: self.binding.stroke_count(self.scribbles_layer, value))
        self.classes.set_classes(["background", "structure 1"])  # before the wiring: a picked layer's names win
        self.settings = SettingsPanel()
        self.rounds = RoundPanel()
        self.suggestions = SuggestionList()
        self.hints = HintsPanel()
        self.status = QLabel("Pick the image, then paint background (class 1) and structures in the scribbles layer.")
        self.status.setWordWrap(True)
        self.pretrain_status = QLabel("")
        self.pretrain_status.setWordWrap(True)
        self.export_button, self.save_button, self.load_button = (
            QPushButton(text) for text in ("Export mask…", "Save session…", "Load session…"))
        files = QHBoxLayout()
        for w in (self.export_button, self.save_button, self.load_button):
            files.addWidget(w)
        # The parts keep their natural heights and the dock scrolls: squeezed into a short dock,
        # the settings form's rows overlapped (seen in a screenshot).
        inner = QWidget()
        root = QVBoxLayout(inner)
        for w in (self.layer_panel, self.resume_box, self.classes, self.hints, self.settings, self.pretrain_status,
                  self.rounds, self.suggestions, self.status):
            root.addWidget(w)
        root.addLayout(files)
        root.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setWidget(inner)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)

        self.image_picker.changed.connect(self._on_image_changed)
        self.scribbles_picker.changed.connect(self._on_scribbles_changed)
        self.layer_panel.new_button.clicked.connect(lambda: self.new_scribbles_layer())
        self.resume_box.resume_requested.connect(lambda folder: self.load_session(str(folder)))
        self.classes.classes_changed.connect(lambda names, colors: self.binding.set_classes(self.scribbles_layer, names, colors))
        self.classes.class_selected.connect(self._paint_class)
        self.classes.class_selected.connect(lambda value: self.binding.set_hint_class(value - 1))
        self.hints.requested.connect(self.add_hint_layer)
        self.classes.class_removed.connect(lambda value: self.binding.shift_down(self.scribbles_layer, value))
        r = self.rounds
        for button, slot in ((r.train_button, self.train), (r.stop_button, self.stop), (r.predict_button, self.predict),
                             (r.reset_button, self.reset_model), (self.export_button, self.export_mask),
                             (self.save_button, self.save_session), (self.load_button, self.load_session)):
            button.clicked.connect(lambda _=False, slot=slot: slot())
        self.runner.started.connect(self._on_started)
        self.runner.progress.connect(lambda p: self.rounds.show_progress(p, self.runner.losses))
        self.runner.preview.connect(self.binding.show_preview)
        self.runner.round_finished.connect(self._on_round_finished)
        self.suggestions.chosen.connect(lambda s: self.binding.go_to_slice(s.axis, s.index))
        self.runner.round_failed.connect(self._fail)
        self.runner.idle.connect(self._on_idle)
        self.autosaver.failed.connect(self._fail)
        self.pretrainer.progress.connect(
            lambda p: self.pretrain_status.setText(f"Learning the scan while you paint: {p.elapsed:.0f} s "
                                                   "(self-supervised; Train starts from it)"))
        self.pretrainer.finished.connect(self._on_pretrained)
        self.pretrainer.failed.connect(lambda text: self.pretrain_status.setText(f"Pretraining stopped: {text}"))
        self.settings.pretrain.toggled.connect(lambda on: self._pretrain(self.image_layer) if on else self.pretrainer.stop())
        self.settings.forest.toggled.connect(lambda on: self._prepare_features(self.image_layer) if on else None)
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
        self._pretrain(img)
        self._prepare_features(img)

    def _prepare_features(self, img) -> None:
        """Compute the forest's filters of ``img`` in the background, so Train finds them ready."""
        if img is None or not self.settings.forest.isChecked():
            return
        try:
            self.binding.check_image(img)
            scan, spacing = self.binding.scan(img)
        except (ValueError, SparseSegError):
            return  # Train reports what is wrong with the image
        import threading


        def run():
            try:
                prepare_features(scan, spacing)
            except Exception:  # noqa: BLE001 - only a head start: Train computes them and reports errors
                pass

        # A plain daemon thread: no signals to outlive the widget; it only fills the feature cache.
        self.feature_pass = threading.Thread(target=run, name="sparseseg-features", daemon=True)
        self.feature_pass.start()

    # ------------------------------------------------------------------ pretraining
    def _pretrain(self, img) -> None:
        """Start background pretraining on ``img`` unless it is off, running, or a model of this scan exists."""
        if self.pretrainer.busy:
            if self.pretrainer.key is not img:
                self.pretrainer.stop()  # another scan was picked: _on_pretrained starts this one
            return
        if (img is None or not self.settings.pretrain.isChecked() or self.runner.busy
                or self.pretrainer.state_for(img) is not None
                or (self.binding.is_bound(img) and self.session.model is not None)):
            return
        try:
            self.binding.check_image(img)
            scan, spacing = self.binding.scan(img)
            cfg = self.settings.settings().pretrain_config()
        except (ValueError, SparseSegError):
            return  # Train reports what is wrong with the image
        self.pretrainer.start(img, scan, spacing, cfg)

    def _on_pretrained(self, state) -> None:
        if state is not None:
            self.pretrain_status.setText(f"Learned the scan for {state.seconds:.0f} s ({state.steps} steps, cached); "
                                         "the first round starts from it.")
        pending, self._pending_round = self._pending_round, None
        if pending is not None:
            self._start(*pending)
        elif self.image_layer is not self.pretrainer.key:
            self._pretrain(self.image_layer)

    def _on_scribbles_changed(self, *_):
        lay = self.scribbles_layer
        if lay is None or self.runner.busy:
            return
        names = (lay.metadata or {}).get("class_names")
        if names and not (self.session is not None and self.binding.scribbles_layer is lay):
            self.classes.set_classes(list(names))
        top = int(np.asarray(lay.data).max(initial=0))
        if top > MAX_CLASSES:  # a mask or an atlas picked as scribbles: say so rather than add rows
            show_warning(f"'{lay.name}' holds the value {top}, but scribbles use 1..{MAX_CLASSES} (1 = background, "
                         "c + 1 = class c); pick a scribbles layer, or press New.")
            top = MAX_CLASSES
        while len(self.classes.names) < top:  # every painted value gets a row
            self.classes.add_class()
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

    def _paint_class(self, value: int):
        lay = self.scribbles_layer
        if lay is not None:
            lay.selected_label = value
            self.viewer.layers.selection.active = lay
            lay.mode = "paint"

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
        except (ValueError, SparseSegError) as exc:
            return self._fail(exc) or False
        if train and s.model is not None and s.model.num_classes != len(s.class_names):
            show_info(f"The class table now has {len(s.class_names)} classes, the model {s.model.num_classes}: training a new model.")
        pretrained = None
        if train and (s.model is None or s.model.num_classes != len(s.class_names)):
            if self.pretrainer.busy:  # ends within one step; the round starts from what it learned
                self._pending_round = (train, time_budget)
                self.pretrainer.stop()
                self.status.setText("Starting from what was learned of the scan…")
                return True
            pretrained = self._usable_pretraining(s.settings)
        elif self.pretrainer.busy:
            self.pretrainer.stop()
        # While no mask is shown, the forest's appears a few seconds after Train.
        return self.runner.start(s, tcfg, pcfg, train, pretrained, preview=train and s.prediction is None)

    def _usable_pretraining(self, settings):
        """The pretrained state of the picked scan if it suits the round's settings (device type and size)."""
        state = self.pretrainer.state_for(self.image_layer)
        if state is None or not settings.pretrain:
            return None

        return state if size_for_device(settings.model_size, resolve_device(settings.device).type) == state.size else None

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
        self.load_button.setEnabled(not running)
        self.settings.set_running(running)
        self.rounds.set_running(running, has_model=self.session is not None and self.session.model is not None)

    def _on_started(self, train: bool):
        self._set_running(True)
        self.rounds.round_started(train)
        self.status.setText("Training…" if train else "Predicting…")

    def _on_round_finished(self, result):
        self.binding.accept(result, self.classes.names, self.classes.colors, self.settings.settings())
        if result.prediction is not None:
            rows = []
            for s in result.suggestions:
                plane, position = self.binding.describe_slice(s.axis, s.index)
                rows.append((f"{plane} slice {position}: {s.uncertain_mm2 / 100:.1f} cm² unsure", s))
            self.suggestions.set_suggestions(rows)
        if result.estimate:

            self.rounds.estimate.setText("Held-out strokes (estimate on your own strokes): "
                                         + format_estimate(result.estimate, result.class_names))
        elif result.train is not None:
            self.rounds.estimate.setText("")
        if result.train is not None:
            self.rounds.loss_plot.set_current(self.runner.losses)
        self.status.setText(round_summary(result, len(self.session.history)))
        self.autosaver.save_now()

    def _on_idle(self):
        self.binding.drop_preview()
        self._set_running(False)
        if self._live_pending and self.settings.live.isChecked():
            self._live_pending = False
            self.train(time_budget=self.settings.settings().live_seconds)

    def _on_stroke(self):
        self.autosaver.schedule()
        if self.settings.live.isChecked():
            if self.runner.busy:
                self._live_pending = True
            else:
                self.train(time_budget=self.settings.settings().live_seconds)

    def _autosave_target(self):
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
        if self.binding.prediction_layer is None or self.session is None:
            return self._fail("There is no prediction yet: press Train first.")
        path = path or QFileDialog.getSaveFileName(self, "Export mask", "mask.nii.gz", "Masks (*.nii.gz *.nii *.nrrd *.mha *.mhd)")[0]
        try:
            out = self.binding.export_mask(path) if path else None
        except (SparseSegError, ValueError, OSError) as exc:
            return self._fail(exc)
        self.status.setText(f"Mask written to {out}." if out else self.status.text())
        return out

    def save_session(self, folder: str | None = None) -> Path | None:
        """Save the scan reference, scribbles, corrections, model, classes and history to a folder."""
        try:
            s = self._sync()
            folder = folder or QFileDialog.getExistingDirectory(self, "Save session into folder")
            out = save_session(s, folder) if folder else None
        except SparseSegError as exc:
            return self._fail(exc)
        self.status.setText(f"Session saved to {out}." if out else self.status.text())
        return out

    def load_session(self, folder: str | None = None) -> bool:
        """Open a saved session: its scan (reused if already open), scribbles, prediction, model, classes."""
        if self.runner.busy:
            show_info("Stop training before loading a session.")
            return False
        folder = folder or QFileDialog.getExistingDirectory(self, "Load session from folder")
        try:
            s, img = self.binding.load(folder) if folder else (None, None)
        except SparseSegError as exc:
            return self._fail(exc) or False
        if s is None:
            return False
        img, scr = self.binding.install(s, img)
        self.image_picker.value, self.scribbles_picker.value = img, scr
        self.classes.set_classes(s.class_names, s.colors)
        self.settings.set_settings(s.settings)
        self.rounds.loss_plot.set_history([h.get("losses", []) for h in s.history])
        self._set_running(False)
        self.resume_box.clear()
        self.status.setText(f"Session loaded from {folder}: {len(s.history)} round(s), "
                            f"{int((s.scribbles > 0).sum())} labelled voxels. Continue training or keep painting.")
        return True

    def resume(self) -> bool:
        """Resume the autosaved session offered for the picked image (the Resume button)."""
        return self.resume_box.folder is not None and self.load_session(str(self.resume_box.folder))

    def closeEvent(self, event):  # noqa: N802 (Qt API)
        """Stop a running round and pretraining when the widget closes."""
        self.runner.stop()
        self.pretrainer.stop()
        super().closeEvent(event)
