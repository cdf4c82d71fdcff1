"""Which layers the widget works on: image and scribbles pickers, "New", the orientation note.

The pickers are magicgui combo boxes of this viewer's layers (``create_widget`` with a napari
layer annotation). As napari does for the magicgui widgets it docks, their choices are re-read
whenever a layer is inserted, removed, moved or renamed.
"""

from __future__ import annotations

from magicgui.widgets import ComboBox, create_widget
from napari.layers import Image, Labels
from qtpy.QtWidgets import QFormLayout, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

__all__ = ["LayerPanel", "layer_picker"]


def layer_picker(viewer, layer_type: type, label: str, tooltip: str = "", exclude: tuple[str, ...] = ()) -> ComboBox:
    """A combo box of ``viewer``'s layers of ``layer_type`` (value: the layer, or ``None``).

    Args:
        viewer: the napari viewer whose layers are listed.
        layer_type: ``napari.layers.Image``, ``napari.layers.Labels``...
        label: the picker's label.
        tooltip: its tooltip.
        exclude: layer names never offered (e.g. the widget's own output layers).
    """

    def choices(_widget):
        return [(lay.name, lay) for lay in viewer.layers if isinstance(lay, layer_type) and lay.name not in exclude]

    picker = create_widget(annotation=layer_type, label=label, options={"choices": choices, "tooltip": tooltip})
    events = viewer.layers.events
    for signal in (events.inserted, events.removed, events.reordered, events.renamed):
        signal.connect(picker.reset_choices)  # napari keeps a weak reference to the bound method
    return picker


class LayerPanel(QWidget):
    """The image and scribbles pickers, the "New" scribbles button and the display note.

    Args:
        viewer: the napari viewer.
        exclude: Labels layer names not offered as scribbles (the widget's outputs).
        parent: the parent widget.
    """

    def __init__(self, viewer, exclude: tuple[str, ...] = (), parent: QWidget | None = None):
        super().__init__(parent)
        self.image_picker = layer_picker(viewer, Image, "Image", "The CT/MRI volume to segment.")
        self.scribbles_picker = layer_picker(viewer, Labels, "Scribbles", "The Labels layer you paint on: value 1 = "
                                             "background, 2 = first structure, ...", exclude=exclude)
        self.new_button = QPushButton("New")
        self.new_button.setToolTip("Create an empty scribbles layer on the image's grid.")
        self.orientation = QLabel()
        self.orientation.setWordWrap(True)
        self.orientation.setStyleSheet("color: #9a9a9a")
        row = QHBoxLayout()
        row.addWidget(self.scribbles_picker.native, 1)
        row.addWidget(self.new_button)
        form = QFormLayout()
        form.addRow("Image", self.image_picker.native)
        form.addRow("Scribbles", row)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(form)
        layout.addWidget(self.orientation)
        self.show_orientation(None)

    def show_orientation(self, note: str | None) -> None:
        """Say how the scan is shown (e.g. ``radiological: head→foot, ...``); ``None`` hides the note."""
        self.orientation.setText(f"Shown {note}; saved on the scan's own grid." if note else "")
        self.orientation.setVisible(bool(note))

    def set_enabled(self, enabled: bool) -> None:
        """Lock the choice of layers while a round runs."""
        for w in (self.image_picker.native, self.scribbles_picker.native, self.new_button):
            w.setEnabled(enabled)
