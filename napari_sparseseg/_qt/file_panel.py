"""Export mask, Save session and Load session: the widget's file actions and their buttons."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from napari.utils.notifications import show_info
from qtpy.QtCore import Signal
from qtpy.QtWidgets import QFileDialog, QHBoxLayout, QPushButton, QWidget

from napari_sparseseg.core.base.errors import SparseSegError
from napari_sparseseg.core.session.state import Session
from napari_sparseseg.io.sessions import save_session

__all__ = ["FilePanel"]


class FilePanel(QWidget):
    """Three buttons and what they do; a path or folder left out is asked for in a dialog.

    Args:
        binding: the widget's :class:`~napari_sparseseg._napari.binding.SessionBinding`.
        sync: returns the session synced with the layers (raises what is missing).
        busy: returns whether a round runs (no session is loaded then).

    Signals:
        message(str): what was done, for the status line.
        failed(object): an error (or its one-line text) to report.
        loaded(object, object, object, str): a session was installed:
            ``(session, image layer, scribbles layer, folder)``.
    """

    message = Signal(str)
    failed = Signal(object)
    loaded = Signal(object, object, object, str)

    def __init__(self, binding, sync: Callable[[], Session], busy: Callable[[], bool], parent=None):
        super().__init__(parent)
        self.binding, self.sync, self.busy = binding, sync, busy
        self.export_button, self.save_button, self.load_button = (
            QPushButton(text) for text in ("Export mask…", "Save session…", "Load session…"))
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        for button, slot in ((self.export_button, self.export_mask), (self.save_button, self.save_session),
                             (self.load_button, self.load_session)):
            row.addWidget(button)
            button.clicked.connect(lambda _=False, slot=slot: slot())

    def export_mask(self, path: str | None = None) -> Path | None:
        """Write the (possibly edited) prediction on the scan's own grid and geometry (NIfTI/NRRD/MHA; DICOM SEG of a DICOM scan)."""
        if self.binding.prediction_layer is None or self.binding.session is None:
            return self.failed.emit("There is no prediction yet: press Train first.")
        if not path:
            path = QFileDialog.getSaveFileName(self, "Export mask", "mask.nii.gz", ";;".join(self.export_filters()))[0]
        try:
            out = self.binding.export_mask(path) if path else None
        except (SparseSegError, ValueError, OSError) as exc:
            return self.failed.emit(exc)
        if out:
            self.message.emit(f"Mask written to {out}.")
        return out

    def export_filters(self) -> list[str]:
        """The file types Export offers: the volume formats, and DICOM SEG when the scan is a DICOM series."""
        filters = ["Masks (*.nii.gz *.nii *.nrrd *.mha *.mhd)"]
        scan = self.binding.session.image_path if self.binding.session is not None else None
        if scan and Path(scan).is_dir():
            filters.append("DICOM SEG, referencing the scan's series (*.dcm)")
        return filters

    def save_session(self, folder: str | None = None) -> Path | None:
        """Save the scan reference, scribbles, corrections, model, classes and history to a folder."""
        try:
            s = self.sync()
            folder = folder or QFileDialog.getExistingDirectory(self, "Save session into folder")
            out = save_session(s, folder) if folder else None
        except SparseSegError as exc:
            return self.failed.emit(exc)
        if out:
            self.message.emit(f"Session saved to {out}.")
        return out

    def load_session(self, folder: str | None = None) -> bool:
        """Open a saved session: its scan (reused if already open), scribbles, prediction, model, classes."""
        if self.busy():
            show_info("Stop training before loading a session.")
            return False
        folder = folder or QFileDialog.getExistingDirectory(self, "Load session from folder")
        try:
            s, img = self.binding.load(folder) if folder else (None, None)
        except SparseSegError as exc:
            self.failed.emit(exc)
            return False
        if s is None:
            return False
        img, scr = self.binding.install(s, img)
        self.loaded.emit(s, img, scr, str(folder))
        return True
