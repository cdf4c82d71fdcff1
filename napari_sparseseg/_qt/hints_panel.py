"""Cheaper hints than strokes: buttons that add a boxes (rectangles) or clicks (points) layer."""

from __future__ import annotations

from qtpy.QtCore import Signal
from qtpy.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget


class HintsPanel(QWidget):
    """*Box* and *Click* buttons; the widget adds the layers (in the class picked in the table).

    Signals:
        requested(str): ``"boxes"`` or ``"clicks"``.
    """

    requested = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.box_button, self.click_button = QPushButton("Box"), QPushButton("Click")
        self.box_button.setToolTip("Draw rectangles around a structure on any slice, in the class picked in the table: "
                                   "its middle becomes likely that class, just outside background (weighted below strokes)")
        self.click_button.setToolTip("Click inside a structure (its class) or outside (background): a small blob of "
                                     "similar intensity becomes that class (weighted below strokes)")
        note = QLabel("Hints:")
        row = QHBoxLayout()
        for w in (note, self.box_button, self.click_button):
            row.addWidget(w)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row)
        self.box_button.clicked.connect(lambda: self.requested.emit("boxes"))
        self.click_button.clicked.connect(lambda: self.requested.emit("clicks"))
