"""The annotation dock widget: scribble -> train -> predict -> correct, inside napari.

Thin by design: every computation is a :mod:`napari_sparseseg.core` generator
(:meth:`Session.run_round`) run off the GUI thread by napari's ``create_worker``; this module
only wires buttons, layers and notifications to it.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
from napari.layers import Image, Labels
from napari.qt.threading import create_worker
from napari.utils import progress
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import Qt, QTimer
from qtpy.QtGui import QColor, QIcon, QPixmap
from qtpy.QtWidgets import (
    QCheckBox,
    QColorDialog,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from napari_sparseseg._napari.layers import (
    default_colors,
    geometry_from_layer,
    layer_kwargs,
    prediction_colormap,
    scribble_colormap,
)
from napari_sparseseg._napari.session import open_session, session_geometry
from napari_sparseseg._qt.loss_plot import LossPlot
from napari_sparseseg.core.config import RoundSettings
from napari_sparseseg.core.device import DEVICES
from napari_sparseseg.core.errors import SparseSegError
from napari_sparseseg.core.labels import label_dtype
from napari_sparseseg.core.network import SIZE_CHOICES
from napari_sparseseg.core.session import Session, autosave_folder, find_autosave, read_session_info

SCRIBBLES, PREDICTION, UNCERTAINTY = "scribbles", "prediction", "uncertainty"
LIVE_SECONDS = RoundSettings.live_seconds
UI_REFRESH_MS = 500  # progress/loss repaint period while a worker runs


def _message(exc: BaseException) -> str:
    return exc.one_line() if isinstance(exc, SparseSegError) else f"{type(exc).__name__}: {exc}"


def _swatch(color: str) -> QIcon:
    """A colour chip for the class table (stays visible when the row is selected)."""
    pm = QPixmap(28, 14)
    pm.fill(QColor(color))
    return QIcon(pm)


class SparseSegWidget(QWidget):
    """Dock widget of the interactive loop. ``napari -w napari-sparseseg`` opens it."""

    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.session: Session | None = None
        self._session_layers: tuple | None = None  # (image layer, scribbles layer) of self.session
        self._worker = None
        self._stop = threading.Event()
        self._pbar = None
        self._stage = None
        self._live_pending = False
        self._saving = None
        self._save_again = False
        self._resume_folder: Path | None = None
        self.max_steps = None  # the time budget is the usual limit; tests set a step bound
        self.last_autosave: Path | None = None
        self._watched: set[int] = set()
        self._named: set[int] = set()
        self._autosave_timer = QTimer(self)
        self._autosave_timer.setSingleShot(True)
        self._autosave_timer.setInterval(300)
        self._autosave_timer.timeout.connect(self.autosave)
        self._progress = None
        self._ui_timer = QTimer(self)
        self._ui_timer.setInterval(UI_REFRESH_MS)
        self._ui_timer.timeout.connect(self._show_progress)
        self._build_ui()
        for ev in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed, self.viewer.layers.events.moved):
            ev.connect(self._refresh_layers)
        self._refresh_layers()

    # ================================================================== UI
    def _build_ui(self):
        root = QVBoxLayout(self)
        form = QFormLayout()
        self.image_combo = QComboBox()
        self.image_combo.setToolTip("The CT/MRI volume to segment.")
        self.scribbles_combo = QComboBox()
        self.scribbles_combo.setToolTip("The Labels layer you paint on: value 1 = background, 2 = first structure, ...")
        self.new_scribbles_btn = QPushButton("New")
        self.new_scribbles_btn.setToolTip("Create an empty scribbles layer on the image's grid.")
        row = QHBoxLayout()
        row.addWidget(self.scribbles_combo, 1)
        row.addWidget(self.new_scribbles_btn)
        form.addRow("Image", self.image_combo)
        form.addRow("Scribbles", row)
        root.addLayout(form)

        self.resume_box = QGroupBox("Autosaved session found")
        rb = QVBoxLayout(self.resume_box)
        self.resume_label = QLabel()
        self.resume_label.setWordWrap(True)
        rbr = QHBoxLayout()
        self.resume_btn = QPushButton("Resume")
        self.discard_btn = QPushButton("Start afresh")
        rbr.addWidget(self.resume_btn)
        rbr.addWidget(self.discard_btn)
        rb.addWidget(self.resume_label)
        rb.addLayout(rbr)
        self.resume_box.setVisible(False)
        root.addWidget(self.resume_box)

        classes = QGroupBox("Classes (click one to paint it)")
        cl = QVBoxLayout(classes)
        self.class_table = QTableWidget(0, 2)
        self.class_table.setHorizontalHeaderLabels(["Name", "Colour"])
        self.class_table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.class_table.verticalHeader().setVisible(True)
        self.class_table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.class_table.setSelectionMode(QTableWidget.SelectionMode.SingleSelection)
        self.class_table.setMaximumHeight(150)
        cl.addWidget(self.class_table)
        cr = QHBoxLayout()
        self.add_class_btn = QPushButton("Add class")
        self.remove_class_btn = QPushButton("Remove class")
        cr.addWidget(self.add_class_btn)
        cr.addWidget(self.remove_class_btn)
        cl.addLayout(cr)
        root.addWidget(classes)

        settings = QGroupBox("Training")
        sf = QFormLayout(settings)
        self.device_combo = QComboBox()
        self.device_combo.addItems(list(DEVICES))
        self.size_combo = QComboBox()
        self.size_combo.addItems(list(SIZE_CHOICES))
        self.size_combo.setToolTip("Network size of a new model (auto: small on CPU, medium on GPU). A trained model keeps its size; 'New model' starts over.")
        self.budget_spin = QDoubleSpinBox()
        self.budget_spin.setRange(1, 3600)
        self.budget_spin.setValue(60)
        self.budget_spin.setSuffix(" s")
        self.budget_spin.setToolTip("Training time per round.")
        self.seed_spin = QSpinBox()
        self.seed_spin.setRange(0, 2**31 - 1)
        self.live_check = QCheckBox(f"Live: retrain {LIVE_SECONDS:g} s after each stroke")
        self.regions_check = QCheckBox("Only regions touching a stroke")
        self.regions_check.setChecked(True)
        self.regions_check.setToolTip(
            "Drop predicted regions of a class that contain none of its strokes (the usual look-alike errors far from "
            "the strokes). A region you want kept needs one stroke of its class."
        )
        sf.addRow("Device", self.device_combo)
        sf.addRow("Model size", self.size_combo)
        sf.addRow("Time per round", self.budget_spin)
        sf.addRow("Seed", self.seed_spin)
        sf.addRow(self.live_check)
        sf.addRow(self.regions_check)
        root.addWidget(settings)

        br = QHBoxLayout()
        self.train_btn = QPushButton("Train")
        self.train_btn.setToolTip("Train from the scribbles (continuing from the current model), then predict.")
        self.stop_btn = QPushButton("Stop")
        self.stop_btn.setToolTip("Stop training within one step, keep the model and predict; press again to skip the prediction.")
        self.stop_btn.setEnabled(False)
        self.predict_btn = QPushButton("Predict")
        self.reset_btn = QPushButton("New model")
        self.reset_btn.setToolTip("Forget the trained model; the next Train starts a fresh network. Your scribbles stay.")
        for b in (self.train_btn, self.stop_btn, self.predict_btn, self.reset_btn):
            br.addWidget(b)
        root.addLayout(br)
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1000)
        self.progress_bar.setTextVisible(True)
        self.progress_bar.setFormat("idle")
        root.addWidget(self.progress_bar)
        self.loss_plot = LossPlot()
        root.addWidget(self.loss_plot)
        self.status = QLabel("Pick the image, then paint background (class 1) and structures in the scribbles layer.")
        self.status.setWordWrap(True)
        root.addWidget(self.status)

        fr = QHBoxLayout()
        self.export_btn = QPushButton("Export mask…")
        self.save_btn = QPushButton("Save session…")
        self.load_btn = QPushButton("Load session…")
        for b in (self.export_btn, self.save_btn, self.load_btn):
            fr.addWidget(b)
        root.addLayout(fr)
        root.addStretch(1)

        self.image_combo.currentIndexChanged.connect(self._on_image_changed)
        self.scribbles_combo.currentIndexChanged.connect(self._on_scribbles_changed)
        self.new_scribbles_btn.clicked.connect(lambda: self.new_scribbles_layer())
        self.add_class_btn.clicked.connect(lambda: self.add_class())
        self.remove_class_btn.clicked.connect(lambda: self.remove_class())
        self.class_table.itemChanged.connect(self._on_class_item_changed)
        self.class_table.cellDoubleClicked.connect(self._on_cell_double_clicked)
        self.class_table.itemSelectionChanged.connect(self._on_class_selected)
        self.train_btn.clicked.connect(lambda: self.train())
        self.stop_btn.clicked.connect(self.stop)
        self.predict_btn.clicked.connect(lambda: self.predict())
        self.reset_btn.clicked.connect(self.reset_model)
        self.export_btn.clicked.connect(lambda: self.export_mask())
        self.save_btn.clicked.connect(lambda: self.save_session())
        self.load_btn.clicked.connect(lambda: self.load_session())
        self.resume_btn.clicked.connect(lambda: self.resume())
        self.discard_btn.clicked.connect(lambda: self.resume_box.setVisible(False))
        self._set_classes(["background", "structure 1"])

    # ================================================================== layers
    def _layers_of(self, kind):
        return [lay for lay in self.viewer.layers if isinstance(lay, kind)]

    def _refresh_layers(self, event=None):
        for combo, kind, skip in ((self.image_combo, Image, ()), (self.scribbles_combo, Labels, (PREDICTION,))):
            current = combo.currentText()
            names = [lay.name for lay in self._layers_of(kind) if lay.name not in skip]
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(names)
            if current in names:
                combo.setCurrentText(current)
            elif kind is Labels and SCRIBBLES in names:
                combo.setCurrentText(SCRIBBLES)
            combo.blockSignals(False)
        for lay in self._layers_of(Image) + self._layers_of(Labels):
            if id(lay) not in self._named:
                self._named.add(id(lay))
                lay.events.name.connect(self._refresh_layers)
        self._on_image_changed()
        self._on_scribbles_changed()

    @property
    def image_layer(self) -> Image | None:
        return self._layer(self.image_combo.currentText())

    @property
    def scribbles_layer(self) -> Labels | None:
        return self._layer(self.scribbles_combo.currentText())

    def _layer(self, name):
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def _geometry(self):
        lay = self.image_layer
        return geometry_from_layer(np.shape(lay.data), lay.metadata, lay.scale, lay.translate)

    def _image_path(self, lay) -> str | None:
        path = lay.metadata.get("source_path") if lay.metadata else None
        return str(path) if path else (str(lay.source.path) if lay.source.path else None)

    def _on_image_changed(self, *_):
        lay = self.image_layer
        self.resume_box.setVisible(False)
        self._resume_folder = None
        if lay is None or self._busy() or lay.ndim != 3:
            return
        if self.session is not None and self._session_layers and self._session_layers[0] is lay:
            return
        folder = find_autosave(lay.name, np.shape(lay.data), self._image_path(lay))
        if folder is not None:
            try:
                saved = read_session_info(folder).get("saved", "?")
            except SparseSegError:
                return  # unreadable or from another version: nothing to offer
            self._resume_folder = folder
            self.resume_label.setText(f"Scribbles for '{lay.name}' were autosaved on {saved}. Resume them?")
            self.resume_box.setVisible(True)

    def _on_scribbles_changed(self, *_):
        lay = self.scribbles_layer
        if lay is None or self._busy():
            return
        names = (lay.metadata or {}).get("class_names")
        if names and (self.session is None or self._session_layers[1] is not lay):
            self._set_classes(list(names))
        top = int(np.asarray(lay.data).max(initial=0))
        while self.class_table.rowCount() < top:  # every painted value gets a row
            self.add_class()
        self._style_scribbles(lay)

    def _style_scribbles(self, lay: Labels):
        lay.colormap = scribble_colormap(self.colors)
        lay.n_edit_dimensions = 2  # paint on the slice shown, in whichever orientation
        if lay.selected_label < 1 or lay.selected_label > len(self.class_names):
            lay.selected_label = 1
        self._watch(lay)

    def _watch(self, lay: Labels):
        """Autosave (and live retraining) after every finished stroke in this layer."""
        if id(lay) in self._watched:
            return
        self._watched.add(id(lay))
        lay.brush_size = 3  # thin strokes: a few voxels wide, as scribbles should be
        lay.events.paint.connect(self._on_stroke)

    def new_scribbles_layer(self) -> Labels | None:
        """An empty uint8 scribbles layer on the image's grid (scale, translate, geometry)."""
        img = self.image_layer
        if img is None:
            show_error("Open a CT/MRI volume first (File > Open, or the sample data), then create the scribbles layer.")
            return None
        if img.ndim != 3:
            show_error(f"'{img.name}' has {img.ndim} dimensions; sparse segmentation needs a 3-D volume.")
            return None
        name = SCRIBBLES if SCRIBBLES not in self.viewer.layers else f"{SCRIBBLES} ({img.name})"
        kw = layer_kwargs(self._geometry(), name)
        lay = self.viewer.add_labels(np.zeros(np.shape(img.data), np.uint8), **kw)
        self.scribbles_combo.setCurrentText(lay.name)
        self._style_scribbles(lay)
        lay.mode = "paint"
        return lay

    # ================================================================== classes
    @property
    def class_names(self) -> list[str]:
        return [self.class_table.item(r, 0).text().strip() or f"class {r}" for r in range(self.class_table.rowCount())]

    @property
    def colors(self) -> list[str]:
        return [self.class_table.item(r, 1).data(Qt.ItemDataRole.UserRole) for r in range(self.class_table.rowCount())]

    def _set_classes(self, names, colors=None):
        colors = list(colors or []) + default_colors(len(names))[len(colors or []) :]
        self.class_table.blockSignals(True)
        self.class_table.setRowCount(0)
        for name, col in zip(names, colors, strict=False):
            self._append_row(name, col)
        self.class_table.blockSignals(False)
        self._classes_changed()

    def _append_row(self, name, color):
        r = self.class_table.rowCount()
        self.class_table.insertRow(r)
        self.class_table.setItem(r, 0, QTableWidgetItem(name))
        c = QTableWidgetItem("")
        c.setFlags(c.flags() & ~Qt.ItemFlag.ItemIsEditable)
        c.setData(Qt.ItemDataRole.UserRole, color)
        c.setIcon(_swatch(color))
        c.setText(color)
        c.setToolTip("Double-click to change the colour")
        self.class_table.setItem(r, 1, c)
        self.class_table.setVerticalHeaderItem(r, QTableWidgetItem(str(r + 1)))

    def add_class(self, name: str | None = None, color: str | None = None):
        n = self.class_table.rowCount()
        self.class_table.blockSignals(True)
        self._append_row(name or f"structure {n}", color or default_colors(n + 1)[n])
        self.class_table.blockSignals(False)
        self._classes_changed()
        self.class_table.selectRow(n)

    def remove_class(self, row: int | None = None):
        """Remove a class that has no strokes; higher classes move down by one."""
        row = self.class_table.currentRow() if row is None else row
        if row < 0:
            show_warning("Select the class to remove in the table first.")
            return
        if row == 0:
            show_warning("Background (class 1) cannot be removed.")
            return
        if self.class_table.rowCount() <= 2:
            show_warning("At least one structure besides background is needed.")
            return
        lay = self.scribbles_layer
        if lay is not None:
            used = int((np.asarray(lay.data) == row + 1).sum())
            if used:
                show_warning(f"'{self.class_names[row]}' has {used} painted voxels; erase them first (nothing you drew is deleted silently).")
                return
            data = np.asarray(lay.data)
            data[data > row + 1] -= 1
            lay.refresh()
        self.class_table.removeRow(row)
        for r in range(self.class_table.rowCount()):
            self.class_table.setVerticalHeaderItem(r, QTableWidgetItem(str(r + 1)))
        self._classes_changed()

    def _on_class_item_changed(self, item):
        self._classes_changed()

    def _on_cell_double_clicked(self, row, col):
        if col != 1:
            return
        item = self.class_table.item(row, 1)
        color = QColorDialog.getColor(QColor(item.data(Qt.ItemDataRole.UserRole)), self, "Class colour")
        if color.isValid():
            self.set_class_color(row, color.name())

    def set_class_color(self, row: int, color: str):
        item = self.class_table.item(row, 1)
        item.setData(Qt.ItemDataRole.UserRole, color)
        item.setIcon(_swatch(color))
        item.setText(color)
        self._classes_changed()

    def _classes_changed(self):
        names, colors = self.class_names, self.colors
        lay = self.scribbles_layer
        if lay is not None:
            lay.colormap = scribble_colormap(colors)
            lay.metadata["class_names"] = names
        pred = self._layer(PREDICTION)
        if pred is not None:
            pred.colormap = prediction_colormap(colors)
        if self.session is not None:
            self.session.class_names, self.session.colors = names, colors

    def _on_class_selected(self):
        row = self.class_table.currentRow()
        lay = self.scribbles_layer
        if row < 0 or lay is None:
            return
        lay.selected_label = row + 1
        self.viewer.layers.selection.active = lay
        lay.mode = "paint"

    # ================================================================== session
    def _busy(self) -> bool:
        return self._worker is not None

    def _ensure_session(self) -> Session | None:
        """The session of the selected image + scribbles layers (created on first use)."""
        img, scr = self.image_layer, self.scribbles_layer
        if img is None:
            show_error("No image: open a CT/MRI volume (File > Open or File > Open Sample) and select it in 'Image'.")
            return None
        if img.ndim != 3 or img.multiscale or img.rgb:
            show_error(f"'{img.name}' is not a single-channel 3-D volume; pick a 3-D CT/MRI image layer.")
            return None
        if scr is None:
            show_error("No scribbles layer: press 'New' next to Scribbles, then paint background and at least one structure.")
            return None
        if tuple(scr.data.shape) != tuple(np.shape(img.data)):
            show_error(f"The scribbles layer '{scr.name}' has shape {tuple(scr.data.shape)} but the image '{img.name}' has "
                       f"{tuple(np.shape(img.data))}; press 'New' to create scribbles on the image's grid.")
            return None
        if self.session is not None and self._session_layers == (img, scr) and self.session.scribbles is scr.data:
            return self.session
        if not isinstance(scr.data, np.ndarray) or not np.issubdtype(scr.data.dtype, np.integer):
            scr.data = np.asarray(scr.data).astype(label_dtype(np.asarray(scr.data).max(initial=0)))
        geom = self._geometry()
        model = self.session.model if self.session is not None and self._session_layers and self._session_layers[0] is img else None
        history = self.session.history if model is not None else []
        self.session = Session(np.asarray(img.data), scr.data, self.class_names, tuple(geom.spacing), geom.to_dict(),
                               self._image_path(img), self.colors, model=model, history=history)
        pred = self._layer(PREDICTION)
        if model is not None and pred is not None and pred.data.shape == scr.data.shape:
            self.session.set_prediction(pred.data)
        self._session_layers = (img, scr)
        return self.session

    def _settings(self) -> RoundSettings:
        return RoundSettings(device=self.device_combo.currentText(), model_size=self.size_combo.currentText(),
                             time_budget=self.budget_spin.value(), seed=self.seed_spin.value(), live=self.live_check.isChecked(),
                             stroke_regions_only=self.regions_check.isChecked(), max_steps=self.max_steps)

    def _apply_settings(self, s: RoundSettings):
        self.device_combo.setCurrentText(s.device)
        self.size_combo.setCurrentText(s.model_size)
        self.budget_spin.setValue(float(s.time_budget))
        self.seed_spin.setValue(int(s.seed))
        self.regions_check.setChecked(bool(s.stroke_regions_only))

    def _sync_session(self) -> None:
        """Before train/save: fold strokes in either layer into the session's corrections.

        Also copies the class table and settings into the session.
        """
        s = self.session
        pred = self._layer(PREDICTION)
        edited = pred.data if pred is not None and s.prediction is not None and pred.data.shape == s.prediction.shape else None
        s.absorb_edits(edited)
        scr = self._session_layers[1]
        if scr.data is not s.scribbles:
            scr.data = s.scribbles
        scr.refresh()
        s.class_names, s.colors, s.settings = self.class_names, self.colors, self._settings()

    # ================================================================== train / predict
    def train(self, time_budget: float | None = None) -> bool:
        """Start a training round (+ prediction) in a worker. Returns whether it started."""
        return self._start(train=True, time_budget=time_budget)

    def predict(self) -> bool:
        return self._start(train=False)

    def _start(self, train: bool, time_budget: float | None = None) -> bool:
        if self._busy():
            show_info("Training is already running; press Stop first.")
            return False
        s = self._ensure_session()
        if s is None:
            return False
        try:
            self._sync_session()
            tcfg = s.settings.train_config(len(s.history), time_budget)
            pcfg = s.settings.predict_config()
        except (ValueError, SparseSegError) as exc:
            self._fail(exc)
            return False
        if train and s.model is not None and s.model.num_classes != len(s.class_names):
            show_info(f"The class table now has {len(s.class_names)} classes, the model {s.model.num_classes}: training a new model.")
        self._stop.clear()
        self._stage, self._progress = None, None
        # Created here, before the worker starts: napari's progress may process events.
        self._pbar = progress(total=1000, desc="sparseseg: training" if train else "sparseseg: predicting")
        self._ui_timer.start()
        self._worker = create_worker(s.run_round, tcfg, pcfg, self._stop, train, _start_thread=False, _ignore_errors=True)
        self._worker.yielded.connect(self._on_progress)
        self._worker.returned.connect(self._on_round_done)
        self._worker.errored.connect(self._fail)
        self._worker.finished.connect(self._on_finished)
        self._set_running(True)
        if train:
            self.loss_plot.start_round()
        self.status.setText("Training…" if train else "Predicting…")
        self._worker.start()
        return True

    def _set_running(self, running: bool):
        for w in (self.train_btn, self.predict_btn, self.reset_btn, self.image_combo, self.scribbles_combo,
                  self.new_scribbles_btn, self.load_btn, self.device_combo, self.size_combo):
            w.setEnabled(not running)
        self.stop_btn.setEnabled(running)
        self.train_btn.setText("Continue" if self.session is not None and self.session.model is not None else "Train")

    def stop(self):
        """First press: end training within one step (model kept, prediction follows). Second: skip the prediction."""
        if not self._busy():
            return
        self._stop.set()
        self.status.setText("Stopping after this step; the model so far is kept…" if self._stage == "train" else "Cancelling the prediction…")

    def _on_progress(self, p):
        if not self._busy():
            return
        # Called once per training step; the screen is refreshed by _show_progress at a few Hz,
        # because every repaint of the window costs the training thread CPU (a lot of it under
        # software OpenGL: per-step updates cut training throughput 4x there).
        if p.stage == "train":
            self.loss_plot.add(p.loss, repaint=False)
        first = self._progress is None or p.stage != self._progress.stage
        self._progress = p
        if first:
            self._show_progress()

    def _show_progress(self):
        p = self._progress
        if p is None or not self._busy():
            return
        value = int(1000 * p.fraction)
        self.progress_bar.setValue(value)
        if p.stage == "train":
            self.loss_plot.update()
            self.progress_bar.setFormat(f"training: step {p.step}, loss {p.loss:.3f}, {p.elapsed:.0f} s")
        else:
            self.progress_bar.setFormat(f"predicting: slab {p.step}/{p.total}")
        # napari's progress may process events (the round can finish re-entrantly in there),
        # so it is updated last and only while it is still this run's bar. One bar per run,
        # relabelled per stage: replacing it re-laid out the window (a 0.6 s stall, software GL).
        pbar, relabel = self._pbar, p.stage != self._stage
        self._stage = p.stage
        if pbar is not None and relabel:
            pbar.set_description("sparseseg: training" if p.stage == "train" else "sparseseg: predicting")
        if pbar is not None and self._pbar is pbar and pbar.n != value:
            pbar.n = value
            pbar.refresh()

    def _on_round_done(self, result):
        s = self.session
        self._sync_session()  # strokes painted while it ran are kept (and count against the old prediction)
        s.accept(result)
        if result.prediction is not None:
            self._show_prediction(result.prediction)
        parts = []
        if result.train is not None:
            t = result.train
            parts.append(f"Round {len(s.history)}: {t.steps} steps in {t.elapsed:.0f} s"
                         + (" (stopped; model kept)" if t.stopped_by == "cancelled" else ""))
        parts.append("prediction skipped" if result.prediction is None else "prediction updated")
        self.status.setText("; ".join(parts) + ". Repaint wrong regions (in the scribbles or the prediction), then Continue.")
        self._schedule_autosave(now=True)

    def _show_prediction(self, prediction):
        geom, colors = session_geometry(self.session), self.colors
        pred = self._layer(PREDICTION)
        if pred is not None and pred.data.shape == prediction.labels.shape:
            pred.data = prediction.labels
        else:
            if pred is not None:
                self.viewer.layers.remove(pred)
            kw = layer_kwargs(geom, PREDICTION)
            pred = self.viewer.add_labels(prediction.labels, opacity=0.45, **kw)
            pred.n_edit_dimensions = 2
            self._watch(pred)
        pred.colormap = prediction_colormap(colors)
        if prediction.uncertainty is not None:
            unc = self._layer(UNCERTAINTY)
            data = prediction.uncertainty.astype(np.float32)
            if unc is not None and unc.data.shape == data.shape:
                unc.data = data
            else:
                if unc is not None:
                    self.viewer.layers.remove(unc)
                self.viewer.add_image(data, colormap="magma", contrast_limits=(0, 1), visible=False, blending="additive",
                                      **layer_kwargs(geom, UNCERTAINTY))
        # Keep the scribbles on top so strokes stay visible over the prediction.
        scr = self._session_layers[1]
        idx = self.viewer.layers.index(scr)
        self.viewer.layers.move(idx, len(self.viewer.layers))
        self.viewer.layers.selection.active = scr

    def _fail(self, exc):
        text = _message(exc)
        self.status.setText(f"<span style='color:#ff6b6b'>{text}</span>")
        show_error(text)

    def _on_finished(self):
        self._ui_timer.stop()
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        self._worker = None
        self._stage = None
        self.progress_bar.setFormat("idle")
        self.progress_bar.setValue(0)
        self._set_running(False)
        if self._live_pending and self.live_check.isChecked():
            self._live_pending = False
            QTimer.singleShot(0, lambda: self.train(time_budget=LIVE_SECONDS))

    def reset_model(self):
        if self.session is not None:
            self.session.model = None
            self._set_running(False)
            self.status.setText("The model was reset; the next Train starts a fresh network (scribbles kept).")

    def wait(self, timeout_ms: int = 600_000):
        """Block (processing events) until the worker is done; for scripts and tests."""
        from qtpy.QtCore import QCoreApplication, QElapsedTimer

        t = QElapsedTimer()
        t.start()
        while self._busy() and t.elapsed() < timeout_ms:
            QCoreApplication.processEvents()
            time.sleep(0.01)
        return not self._busy()

    # ================================================================== strokes, autosave
    def _on_stroke(self, event=None):
        self._schedule_autosave()
        if self.live_check.isChecked():
            if self._busy():
                self._live_pending = True
            else:
                self.train(time_budget=LIVE_SECONDS)

    def _schedule_autosave(self, now: bool = False):
        if now:
            self.autosave()
        else:
            self._autosave_timer.start()

    def autosave(self):
        """Save the session to its autosave folder in a worker (coalesced if one is running)."""
        if self._saving is not None:
            self._save_again = True
            return
        s = self._ensure_session()
        if s is None:
            return
        self._sync_session()
        img = self._session_layers[0]
        folder = autosave_folder(img.name, s.scribbles.shape, s.image_path)
        self._saving = create_worker(s.save, folder, _start_thread=False, _ignore_errors=True)

        def done(*_):
            self._saving = None
            self.last_autosave = folder
            if self._save_again:
                self._save_again = False
                self.autosave()

        def failed(exc):
            self._saving = None
            self._fail(exc)

        self._saving.returned.connect(done)
        self._saving.errored.connect(failed)
        self._saving.start()

    # ================================================================== files
    def export_mask(self, path: str | None = None) -> Path | None:
        """Write the (possibly edited) prediction on the scan's geometry (NIfTI/NRRD/MHA)."""
        from napari_sparseseg.io import check_writable, write_labels

        pred = self._layer(PREDICTION)
        if pred is None:
            show_error("There is no prediction yet: press Train first.")
            return None
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Export mask", "mask.nii.gz", "Masks (*.nii.gz *.nii *.nrrd *.mha *.mhd)")
            if not path:
                return None
        try:
            check_writable(path, "mask")
            out = write_labels(path, np.asarray(pred.data), self._geometry())
        except (SparseSegError, ValueError) as exc:
            self._fail(exc)
            return None
        self.status.setText(f"Mask written to {out}.")
        return Path(out)

    def save_session(self, folder: str | None = None) -> Path | None:
        """Save image reference, scribbles, corrections, model, classes and history to a folder."""
        s = self._ensure_session()
        if s is None:
            return None
        if folder is None:
            folder = QFileDialog.getExistingDirectory(self, "Save session into folder")
            if not folder:
                return None
        try:
            self._sync_session()
            out = s.save(folder)
        except SparseSegError as exc:
            self._fail(exc)
            return None
        self.status.setText(f"Session saved to {out}.")
        return out

    def load_session(self, folder: str | None = None) -> bool:
        """Open a saved session: its scan (reused if already open), scribbles, prediction, model, classes."""
        if self._busy():
            show_info("Stop training before loading a session.")
            return False
        if folder is None:
            folder = QFileDialog.getExistingDirectory(self, "Load session from folder")
            if not folder:
                return False
        img = self._find_image_for(folder)
        try:
            s = open_session(folder, image=None if img is None else np.asarray(img.data))
        except SparseSegError as exc:
            self._fail(exc)
            return False
        self._install_session(s, img)
        self.status.setText(f"Session loaded from {folder}: {len(s.history)} round(s), "
                            f"{int((s.scribbles > 0).sum())} labelled voxels. Continue training or keep painting.")
        return True

    def _find_image_for(self, folder):
        try:
            meta = read_session_info(folder)
        except SparseSegError:
            return None  # open_session reports what is wrong
        for lay in self._layers_of(Image):
            p = self._image_path(lay)
            if meta.get("image_path") and p and Path(p).resolve() == Path(meta["image_path"]).resolve() \
                    and list(np.shape(lay.data)) == meta.get("shape"):
                return lay
        return None

    def resume(self) -> bool:
        """Resume the autosaved session offered for the selected image."""
        if self._resume_folder is None:
            return False
        self.resume_box.setVisible(False)
        return self.load_session(str(self._resume_folder))

    def _install_session(self, s: Session, img: Image | None):
        geom = session_geometry(s)
        if img is None:
            name = Path(s.image_path).name if s.image_path else "scan"
            img = self.viewer.add_image(s.image, colormap="gray", **layer_kwargs(geom, name, s.image_path))
        # Never overwrite strokes already in a layer: resumed scribbles get their own layer if needed.
        scr = self._layer(SCRIBBLES)
        if scr is not None and scr.data.shape == s.scribbles.shape and not np.asarray(scr.data).any():
            scr.data = s.scribbles
        else:
            name = SCRIBBLES if scr is None else f"{SCRIBBLES} (session)"
            scr = self.viewer.add_labels(s.scribbles, **layer_kwargs(geom, name))
        self._set_classes(s.class_names, s.colors)
        self._apply_settings(s.settings)
        self.image_combo.setCurrentText(img.name)
        self.scribbles_combo.setCurrentText(scr.name)
        self._style_scribbles(scr)
        self.session, self._session_layers = s, (img, scr)
        s.colors = self.colors
        if s.prediction is not None:
            from napari_sparseseg.core.predict import Prediction

            self._show_prediction(Prediction(np.array(s.prediction, copy=True)))
        self.loss_plot.set_history([h.get("losses", []) for h in s.history])
        self._set_running(False)
        self.resume_box.setVisible(False)

    def closeEvent(self, event):  # noqa: N802 (Qt API)
        self._stop.set()
        super().closeEvent(event)
