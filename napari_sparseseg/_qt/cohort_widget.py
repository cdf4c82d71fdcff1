"""The Cohort dock widget: one model over many scans, review the worst, correct, refine, re-run.

Layout and wiring only: the cohort on disk is :class:`~napari_sparseseg.cohort.project.Cohort`
(Qt-free, autosaved after every change), the batch runs on Dask in a :class:`CohortRunner`, and
scans open as layers through :mod:`napari_sparseseg._napari.cohort_layers`.
"""

from __future__ import annotations

from pathlib import Path

from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QTimer, Signal
from qtpy.QtWidgets import (
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from napari_sparseseg._napari.cohort_layers import OpenedScan, edited_mask, open_scan
from napari_sparseseg._qt.cohort_runner import CohortRunner
from napari_sparseseg._qt.widget import SparseSegWidget
from napari_sparseseg._qt.workers import error_message
from napari_sparseseg.cohort.batch import read_summary
from napari_sparseseg.cohort.project import Cohort
from napari_sparseseg.core.base.config import BatchConfig, TrainConfig
from napari_sparseseg.core.base.errors import SparseSegError
from napari_sparseseg.io.models import load_model, save_model

__all__ = ["CohortWidget"]

_FIXED = ("scan", "status", "review", "reviewed")
_SAVE_DELAY_MS = 1000  # corrections are written this long after the last brush stroke


class CohortWidget(QWidget):
    """Dock widget for cohorts (``Plugins > Sparse segmentation: cohort``).

    Public parts: ``runner`` (:class:`CohortRunner`: ``scan_finished``, ``idle``...), ``table``
    (scan, status, review rank, reviewed, one column of volume in mL per class), ``cohort`` (the
    open :class:`Cohort` or ``None``), ``opened`` (the scan shown for correction),
    ``refine_seconds`` (Refine's training time) and ``refine_max_steps`` (a step bound of Refine
    besides its seconds, ``None`` by default: set it for the same Refine on any machine).

    Signals:
        scan_opened(str): a scan and its mask were added to the viewer.
        corrections_saved(str, int): scan name, stroke voxels it now has.
    """

    scan_opened = Signal(str)
    corrections_saved = Signal(str, int)

    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.cohort: Cohort | None = None
        self.opened: OpenedScan | None = None
        self._rerun = False  # the open scan was segmented again by the running batch
        self.runner = CohortRunner(self)
        self.folder_label = QLabel("No cohort: New… (a new or empty folder and a model) or Open…")
        self.folder_label.setWordWrap(True)
        self.new_button, self.open_button, self.model_button = (QPushButton(t) for t in ("New…", "Open…", "Model…"))
        self.session_model_button = QPushButton("Session's model")
        self.session_model_button.setToolTip("use the model trained in the Sparse segmentation widget (for a new "
                                             "cohort, or instead of the cohort's)")
        self.add_files_button, self.add_folder_button = QPushButton("Add scans…"), QPushButton("Add folder…")
        self.run_button, self.stop_button, self.refine_button = (QPushButton(t) for t in ("Run", "Stop", "Refine model"))
        self.review_button = QPushButton("Mark reviewed")
        self.workers = QSpinBox()
        self.workers.setRange(0, 64)
        self.workers.setSpecialValueText("auto")
        self.workers.setToolTip("Dask workers of the local cluster (auto: sized to the machine)")
        self.refine_seconds = QSpinBox()
        self.refine_seconds.setRange(1, 3600)
        self.refine_seconds.setValue(int(TrainConfig.time_budget))
        self.refine_seconds.setSuffix(" s")
        self.refine_seconds.setToolTip("training time of Refine (all scans' corrections, from the shared model)")
        # A step bound of Refine besides its seconds (None: the seconds alone): a script or a test
        # that wants the same Refine on any machine sets it (the seconds then only cap it).
        self.refine_max_steps: int | None = None
        self.table = QTableWidget(0, len(_FIXED))
        self.table.setHorizontalHeaderLabels(list(_FIXED))
        self.table.setEditTriggers(QTableWidget.NoEditTriggers)
        self.table.setSelectionBehavior(QTableWidget.SelectRows)
        self.table.setToolTip("Double-click a scan to open it with its mask; paint on the mask to correct it.")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self._save_timer = QTimer(self)
        self._save_timer.setSingleShot(True)
        self._save_timer.setInterval(_SAVE_DELAY_MS)
        self._save_timer.timeout.connect(self.save_corrections)

        top = QHBoxLayout()
        for w in (self.new_button, self.open_button, self.model_button, self.session_model_button):
            top.addWidget(w)
        scans = QHBoxLayout()
        for w in (self.add_files_button, self.add_folder_button):
            scans.addWidget(w)
        grid = QGridLayout()
        grid.addWidget(QLabel("Workers"), 0, 0)
        grid.addWidget(self.workers, 0, 1)
        grid.addWidget(QLabel("Refine for"), 0, 2)
        grid.addWidget(self.refine_seconds, 0, 3)
        actions = QHBoxLayout()
        for w in (self.run_button, self.stop_button, self.refine_button, self.review_button):
            actions.addWidget(w)
        root = QVBoxLayout(self)
        root.addWidget(self.folder_label)
        root.addLayout(top)
        root.addLayout(scans)
        root.addLayout(grid)
        root.addWidget(self.table)
        root.addLayout(actions)
        root.addWidget(self.status)

        self.new_button.clicked.connect(lambda: self._ask_new())
        self.open_button.clicked.connect(lambda: self._ask_open())
        self.model_button.clicked.connect(lambda: self._ask_model())
        self.session_model_button.clicked.connect(lambda: self._ask_session_model())
        self.add_files_button.clicked.connect(lambda: self._ask_scans(folder=False))
        self.add_folder_button.clicked.connect(lambda: self._ask_scans(folder=True))
        self.run_button.clicked.connect(lambda: self.run())
        self.stop_button.clicked.connect(lambda: self.runner.stop())
        self.refine_button.clicked.connect(lambda: self.refine())
        self.review_button.clicked.connect(lambda: self.mark_reviewed())
        self.table.cellDoubleClicked.connect(lambda row, _col: self.open_scan(self.table.item(row, 0).text()))
        self.runner.started.connect(self._on_started)
        self.runner.training.connect(lambda p: self.status.setText(f"Refining on every scan's corrections: step {p.step}, "
                                                                   f"{p.elapsed:.0f} s"))
        self.runner.planned.connect(lambda n: self.status.setText(f"Segmenting {n} scans…"))
        self.runner.scan_finished.connect(self._on_scan)
        self.runner.failed.connect(self._fail)
        self.runner.idle.connect(self._on_idle)
        self._enable()

    # ------------------------------------------------------------------ cohort
    def new_cohort(self, folder, model_dir) -> bool:
        """Start a cohort in ``folder`` (new or empty) with a copy of the model in ``model_dir``."""
        return self._try(lambda: self._show(Cohort.create(folder, model_dir)))

    def open_cohort(self, folder) -> bool:
        """Resume the cohort saved in ``folder``."""
        return self._try(lambda: self._show(Cohort.open(folder)))

    def set_model(self, model_dir) -> bool:
        """Use the model in ``model_dir`` (copied into the cohort)."""
        return self._try(lambda: (self.cohort.set_model(model_dir), self._show(self.cohort)))

    def session_model(self):
        """The model of the Sparse segmentation widget docked in this viewer, or ``None``."""
        for w in self.viewer.window.dock_widgets.values():
            if isinstance(w, SparseSegWidget) and w.session is not None and w.session.model is not None:
                return w.session.model
        return None

    def use_session_model(self, folder=None) -> bool:
        """Use the annotation widget's model: in the open cohort, or in a new cohort in ``folder``."""
        import tempfile

        model = self.session_model()
        if model is None:
            self._fail("no trained model in the Sparse segmentation widget; train a round there, or pick a model folder.")
            return False
        with tempfile.TemporaryDirectory(prefix="sparseseg-session-model-") as tmp:
            saved = Path(tmp) / "model"
            if not self._try(lambda: save_model(model, saved)):
                return False
            return self.new_cohort(folder, saved) if folder is not None else self.set_model(saved)

    def add_scans(self, paths) -> bool:
        """Add scan files, folders, globs or a manifest to the cohort."""
        return self._try(lambda: (self.cohort.add([str(p) for p in paths]), self._show(self.cohort)))

    def closeEvent(self, event):  # noqa: N802 (Qt API)
        """Stop a running batch (its running scans finish) and close the local cluster kept between runs."""
        self.runner.close()
        super().closeEvent(event)

    def _config(self) -> BatchConfig:
        return BatchConfig(workers=self.workers.value() or None)

    def run(self) -> bool:
        """Segment every scan not reviewed (the shared model; existing masks of the cohort are replaced)."""
        if self.cohort is None or self.runner.busy:
            return False
        self.save_corrections()
        return self.runner.start(self.cohort, self._config())

    def refine(self) -> bool:
        """Train the shared model on every scan's corrections, then re-run the scans not reviewed."""
        if self.cohort is None or self.runner.busy:
            return False
        self.save_corrections()
        cfg = TrainConfig(time_budget=float(self.refine_seconds.value()), max_steps=self.refine_max_steps)
        return self.runner.start(self.cohort, self._config(), cfg)

    # ------------------------------------------------------------------ one scan
    def open_scan(self, name: str) -> bool:
        """Show scan ``name`` with its mask as an editable layer; painting on it records corrections."""
        if self.cohort is None:
            return False
        self.save_corrections()

        def show():
            names = self._class_names()
            self.opened = open_scan(self.viewer, self.cohort, name, names)
            self.opened.mask_layer.events.paint.connect(lambda _e: self._save_timer.start())
            self.viewer.layers.selection.active = self.opened.mask_layer
            self.status.setText(f"{name}: paint the right class over what is wrong (a class picked in the layer's "
                                "controls); the changes become this scan's strokes for Refine.")
            self.scan_opened.emit(name)

        return self._try(show)

    def save_corrections(self) -> int:
        """Write the open scan's corrections (where its mask was changed) now; returns its stroke voxels."""
        self._save_timer.stop()
        o = self.opened
        if o is None or self.cohort is None or o.mask_layer not in self.viewer.layers:
            return 0
        edited = edited_mask(o)
        if (edited == o.predicted).all() and not self.cohort.strokes_path(o.name).is_file():
            return 0
        n = 0

        def save():
            nonlocal n
            n = self.cohort.add_corrections(o.name, o.predicted, edited, o.geometry)
            o.predicted = edited  # what is saved is the new reference for the next edit
            self.corrections_saved.emit(o.name, n)

        self._try(save)
        return n

    def mark_reviewed(self, name: str | None = None) -> bool:
        """Accept a scan's mask as it is shown (the open scan by default); re-runs leave it alone."""
        if self.cohort is None:
            return False
        o = self.opened
        name = name or (o.name if o is not None else None)
        if name is None:
            return False
        self.save_corrections()
        labels = edited_mask(o) if o is not None and o.name == name else None
        geom = o.geometry if labels is not None else None
        return self._try(lambda: (self.cohort.mark_reviewed(name, labels, geom), self._show(self.cohort)))

    # ------------------------------------------------------------------ internals
    def _class_names(self, data: dict | None = None) -> list:
        """The model's class names: from the batch summary ``data`` (read if not given), else the model."""
        data = read_summary(self.cohort.folder) or {} if data is None else data
        if data.get("class_names"):
            return list(data["class_names"])

        return list(load_model(self.cohort.model_dir).class_names)

    def _show(self, cohort: Cohort) -> None:

        self.cohort = cohort
        data = read_summary(cohort.folder) or {}  # read once: the rows and the class names
        summary = {rec["name"]: rec for rec in data.get("scans", [])}
        classes = self._class_names(data)[1:]
        self.table.setColumnCount(len(_FIXED) + len(classes))
        self.table.setHorizontalHeaderLabels([*_FIXED, *(f"{c} mL" for c in classes)])
        self.table.setRowCount(len(cohort.scans))
        for row, scan in enumerate(cohort.scans):
            rec = summary.get(scan.name, {})
            cells = [scan.name, rec.get("status", "queued"), rec.get("review_rank"), "yes" if scan.reviewed else ""]
            cells += [(rec.get("classes") or {}).get(c, {}).get("volume_ml") for c in classes]
            for col, value in enumerate(cells):
                item = QTableWidgetItem("" if value is None else str(value))
                if col == 1 and rec.get("reason"):
                    item.setToolTip(rec["reason"])
                self.table.setItem(row, col, item)
        self.table.resizeColumnsToContents()
        self.folder_label.setText(f"Cohort {cohort.folder} — {len(cohort.scans)} scans, "
                                  f"{sum(s.reviewed for s in cohort.scans)} reviewed")
        self._enable()

    def _on_started(self, what: str) -> None:
        self.status.setText("Refining the shared model…" if what == "refine" else "Starting the Dask cluster…")
        self._enable()

    def _on_scan(self, r) -> None:
        self._rerun |= self.opened is not None and r.name == self.opened.name and r.status == "done"
        self._show(self.cohort)
        if r.status == "failed":
            self.status.setText(f"{r.name} failed: {r.reason}")

    def _on_idle(self) -> None:
        o = self.opened
        if o is not None and self.cohort is not None and o.mask_layer in self.viewer.layers \
                and not self.cohort.scan(o.name).reviewed and self._rerun:
            self.open_scan(o.name)  # its corrections are saved; show the re-run's mask to correct further
        self._rerun = False
        if self.cohort is not None:
            self._show(self.cohort)
            counts = {}
            for rec in self.cohort.summary().values():
                counts[rec.get("status")] = counts.get(rec.get("status"), 0) + 1
            text = ", ".join(f"{n} {s}" for s, n in counts.items())
            self.status.setText(f"Done: {text}. Double-click the top-ranked scans to review them.")
            show_info(f"sparseseg cohort: {text}")
        self._enable()

    def _fail(self, text: str) -> None:
        self.status.setText(text)
        show_error(text)

    def _try(self, action) -> bool:
        try:
            action()
        except (SparseSegError, OSError) as exc:
            self._fail(error_message(exc))
            return False
        return True

    def _enable(self) -> None:
        have, busy = self.cohort is not None, self.runner.busy
        for w in (self.model_button, self.add_files_button, self.add_folder_button, self.run_button,
                  self.refine_button, self.review_button):
            w.setEnabled(have and not busy)
        self.new_button.setEnabled(not busy)
        self.session_model_button.setEnabled(not busy)
        self.open_button.setEnabled(not busy)
        self.stop_button.setEnabled(busy)

    def _ask_new(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "New cohort: a new or empty folder")
        model = folder and QFileDialog.getExistingDirectory(self, "The model to start from (a saved model folder)")
        if folder and model:
            self.new_cohort(folder, model)

    def _ask_open(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a cohort folder")
        if folder:
            self.open_cohort(folder)

    def _ask_model(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Model folder")
        if folder:
            self.set_model(folder)

    def _ask_session_model(self) -> None:
        if self.cohort is not None:
            self.use_session_model()
            return
        folder = QFileDialog.getExistingDirectory(self, "New cohort with the session's model: a new or empty folder")
        if folder:
            self.use_session_model(folder)

    def _ask_scans(self, folder: bool) -> None:
        if folder:
            chosen = QFileDialog.getExistingDirectory(self, "A folder of scans (or a DICOM series)")
            paths = [chosen] if chosen else []
        else:
            paths, _ = QFileDialog.getOpenFileNames(self, "Scans", "", "Scans (*.nii *.nii.gz *.nrrd *.nhdr *.mha *.mhd);;"
                                                                        "Manifest (*.csv)")
        if paths:
            self.add_scans([Path(p) for p in paths])
