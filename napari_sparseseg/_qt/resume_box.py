"""The offer to resume an autosaved session of the picked scan."""

from __future__ import annotations

from pathlib import Path

from qtpy.QtCore import Signal
from qtpy.QtWidgets import QGroupBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

__all__ = ["ResumeBox"]


class ResumeBox(QGroupBox):
    """Hidden until :meth:`offer`; "Resume" emits ``resume_requested``, "Start afresh" hides it.

    Args:
        parent: the parent widget.

    Signals:
        resume_requested(Path): the user chose to resume the offered folder.
    """

    resume_requested = Signal(object)

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Autosaved session found", parent)
        self.folder: Path | None = None
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.resume_button = QPushButton("Resume")
        self.discard_button = QPushButton("Start afresh")
        buttons = QHBoxLayout()
        buttons.addWidget(self.resume_button)
        buttons.addWidget(self.discard_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.label)
        layout.addLayout(buttons)
        self.resume_button.clicked.connect(lambda: self.folder is not None and self.resume_requested.emit(self.folder))
        self.discard_button.clicked.connect(self.clear)
        self.clear()

    def offer(self, folder: Path, text: str) -> None:
        """Show the offer to resume ``folder``."""
        self.folder = Path(folder)
        self.label.setText(text)
        self.setVisible(True)

    def clear(self) -> None:
        """Withdraw the offer."""
        self.folder = None
        self.setVisible(False)
