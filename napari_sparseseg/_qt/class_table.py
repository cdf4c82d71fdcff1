"""The class table: names and colours of the classes, background first (scribble value = row + 1).

A panel of its own (brainglobe-segmentation style): it knows nothing about layers or sessions.
It asks a callable how many voxels carry a class's value before removing it, so nothing drawn is
ever deleted silently, and announces what changed through signals.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from napari.utils.notifications import show_warning
from qtpy.QtCore import Qt, Signal
from qtpy.QtGui import QColor, QIcon, QPixmap
from qtpy.QtWidgets import (
    QColorDialog,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)

from napari_sparseseg._napari.layers import default_colors
from napari_sparseseg.core.annotations.labels import MAX_CLASSES

__all__ = ["ClassTable"]

_COLOR = Qt.ItemDataRole.UserRole


def _swatch(color: str) -> QIcon:
    """A colour chip (stays visible when the row is selected)."""
    pm = QPixmap(28, 14)
    pm.fill(QColor(color))
    return QIcon(pm)


class ClassTable(QGroupBox):
    """Editable class names and colours; clicking a row picks the class to paint.

    Row ``r`` is class ``r`` (row 0 is background) and scribble value ``r + 1``. Names are
    edited in place, a colour by double-clicking its chip.

    Args:
        stroke_count: voxels painted with a scribble value (``value -> count``); a class with
            strokes is never removed. ``None``: nothing is painted anywhere.
        parent: the parent widget.

    Signals:
        classes_changed(list, list): names and colours after any change.
        class_selected(int): the scribble value of the row the user selected.
        class_removed(int): the scribble value of a removed (unused) class; values above it
            move down by one, so the owner of the scribbles shifts them (emitted before
            ``classes_changed``).
    """

    classes_changed = Signal(list, list)
    class_selected = Signal(int)
    class_removed = Signal(int)

    def __init__(self, stroke_count: Callable[[int], int] | None = None, parent=None):
        super().__init__("Classes (click one to paint it)", parent)
        self.stroke_count = stroke_count
        self.table = QTableWidget(0, 2)
        self.table.setHorizontalHeaderLabels(["Name", "Colour"])
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QTableWidget.SelectionMode.SingleSelection)
        self.table.setMaximumHeight(150)
        self.add_button = QPushButton("Add class")
        self.remove_button = QPushButton("Remove class")
        buttons = QHBoxLayout()
        buttons.addWidget(self.add_button)
        buttons.addWidget(self.remove_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.table)
        layout.addLayout(buttons)
        self.add_button.clicked.connect(lambda: self.add_class())
        self.remove_button.clicked.connect(lambda: self.remove_class())
        self.table.itemChanged.connect(lambda _item: self._changed())
        self.table.cellDoubleClicked.connect(self._pick_color)
        self.table.itemSelectionChanged.connect(self._selected)

    # ------------------------------------------------------------------ state
    @property
    def names(self) -> list[str]:
        """Class names, background first (an emptied name reads ``class r``)."""
        return [self.table.item(r, 0).text().strip() or f"class {r}" for r in range(self.table.rowCount())]

    @property
    def colors(self) -> list[str]:
        """One ``#rrggbb`` colour per class."""
        return [self.table.item(r, 1).data(_COLOR) for r in range(self.table.rowCount())]

    def set_classes(self, names: list[str], colors: list[str] | None = None) -> None:
        """Replace the table; missing colours come from the default palette."""
        colors = list(colors or [])
        colors += default_colors(len(names))[len(colors):]
        self.table.blockSignals(True)
        self.table.setRowCount(0)
        for name, color in zip(names, colors, strict=False):
            self._append_row(name, color)
        self.table.blockSignals(False)
        self._changed()

    def add_class(self, name: str | None = None, color: str | None = None) -> int:
        """Append a class and select it; returns its scribble value (0 when the table is full)."""
        n = self.table.rowCount()
        if n >= MAX_CLASSES:
            show_warning(f"At most {MAX_CLASSES} classes (background included) can be segmented together.")
            return 0
        self.table.blockSignals(True)
        self._append_row(name or f"structure {n}", color or default_colors(n + 1)[n])
        self.table.blockSignals(False)
        self._changed()
        self.table.selectRow(n)
        return n + 1

    def rename_class(self, row: int, name: str) -> None:
        """Rename class ``row``."""
        self.table.item(row, 0).setText(name)  # itemChanged -> classes_changed

    def set_color(self, row: int, color: str) -> None:
        """Give class ``row`` a new colour (``#rrggbb``)."""
        item = self.table.item(row, 1)
        self.table.blockSignals(True)
        item.setData(_COLOR, color)
        item.setIcon(_swatch(color))
        item.setText(color)
        self.table.blockSignals(False)
        self._changed()

    def remove_class(self, row: int | None = None) -> bool:
        """Remove class ``row`` (default: the selected one) if it is unused.

        Refused, with a warning, for background, for the last structure, and for a class that
        has strokes. Returns whether the class was removed.
        """
        row = self.table.currentRow() if row is None else row
        if row < 0:
            show_warning("Select the class to remove in the table first.")
            return False
        if row == 0:
            show_warning("Background (class 1) cannot be removed.")
            return False
        if self.table.rowCount() <= 2:
            show_warning("At least one structure besides background is needed.")
            return False
        used = self.stroke_count(row + 1) if self.stroke_count is not None else 0
        if used:
            show_warning(f"'{self.names[row]}' has {used} painted voxels; erase them first (nothing you drew is deleted silently).")
            return False
        self.class_removed.emit(row + 1)
        self.table.blockSignals(True)
        self.table.removeRow(row)
        for r in range(self.table.rowCount()):
            self.table.setVerticalHeaderItem(r, QTableWidgetItem(str(r + 1)))
        self.table.blockSignals(False)
        self._changed()
        return True

    def select(self, value: int) -> None:
        """Select the row of scribble ``value`` (emits ``class_selected``)."""
        self.table.selectRow(value - 1)

    def follow_layer(self, layer, take_names: bool) -> None:
        """Fit the table to a picked scribbles layer: its class names (when ``take_names``) and a row per painted value.

        A layer holding values above :data:`MAX_CLASSES` (a mask or an atlas picked as
        scribbles) gets a warning rather than rows.
        """
        names = (layer.metadata or {}).get("class_names")
        if names and take_names:
            self.set_classes(list(names))
        top = int(np.asarray(layer.data).max(initial=0))
        if top > MAX_CLASSES:
            show_warning(f"'{layer.name}' holds the value {top}, but scribbles use 1..{MAX_CLASSES} (1 = background, "
                         "c + 1 = class c); pick a scribbles layer, or press New.")
            top = MAX_CLASSES
        while len(self.names) < top:  # every painted value gets a row
            self.add_class()

    # ------------------------------------------------------------------ internals
    def _append_row(self, name: str, color: str) -> None:
        r = self.table.rowCount()
        self.table.insertRow(r)
        self.table.setItem(r, 0, QTableWidgetItem(name))
        chip = QTableWidgetItem(color)
        chip.setFlags(chip.flags() & ~Qt.ItemFlag.ItemIsEditable)
        chip.setData(_COLOR, color)
        chip.setIcon(_swatch(color))
        chip.setToolTip("Double-click to change the colour")
        self.table.setItem(r, 1, chip)
        self.table.setVerticalHeaderItem(r, QTableWidgetItem(str(r + 1)))

    def _changed(self) -> None:
        self.classes_changed.emit(self.names, self.colors)

    def _pick_color(self, row: int, col: int) -> None:
        if col != 1:
            return
        color = QColorDialog.getColor(QColor(self.colors[row]), self, "Class colour")
        if color.isValid():
            self.set_color(row, color.name())

    def _selected(self) -> None:
        row = self.table.currentRow()
        if row >= 0:
            self.class_selected.emit(row + 1)
