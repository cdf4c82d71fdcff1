"""Where to paint next: the round's suggested slices as a list; a click asks to go there."""

from __future__ import annotations

from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import QLabel, QListWidget, QListWidgetItem, QVBoxLayout, QWidget


class SuggestionList(QWidget):
    """The slices a stroke would most likely fix, best first.

    Signals:
        chosen(object): the :class:`~napari_sparseseg.core.annotations.guide.SliceSuggestion` clicked.
    """

    chosen = Signal(object)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.title = QLabel("Paint next (after a round: where a stroke would fix most, one slice per orientation first, away "
                            "from your strokes)")
        self.title.setWordWrap(True)
        self.list = QListWidget()
        self.list.setMaximumHeight(110)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.title)
        layout.addWidget(self.list)
        self.list.itemClicked.connect(lambda item: self.chosen.emit(item.data(Qt.ItemDataRole.UserRole)))

    def set_suggestions(self, rows: list[tuple[str, object]]) -> None:
        """Show ``(text, suggestion)`` rows, best first."""
        self.list.clear()
        for text, suggestion in rows:
            item = QListWidgetItem(text)
            item.setData(Qt.ItemDataRole.UserRole, suggestion)
            self.list.addItem(item)

    def show_suggestions(self, suggestions, describe) -> None:
        """Show a round's suggested slices; ``describe(axis, index)`` names one as ``(plane, position)``."""
        rows = []
        for s in suggestions:
            plane, position = describe(s.axis, s.index)
            rows.append((f"{plane} slice {position}: {s.uncertain_mm2 / 100:.1f} cm² unsure", s))
        self.set_suggestions(rows)
