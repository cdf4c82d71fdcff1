"""How a dock widget stacks its parts."""

from __future__ import annotations

from qtpy.QtWidgets import QFrame, QScrollArea, QVBoxLayout, QWidget

__all__ = ["scrolling_column"]


def scrolling_column(widget: QWidget, parts) -> None:
    """Lay ``parts`` out top to bottom in ``widget``, scrolling when the dock is short.

    The parts keep their natural heights and the dock scrolls: squeezed into a short dock, the
    settings form's rows overlapped (seen in a screenshot).
    """
    inner = QWidget()
    column = QVBoxLayout(inner)
    for part in parts:
        column.addWidget(part)
    column.addStretch(1)
    scroll = QScrollArea()
    scroll.setWidgetResizable(True)
    scroll.setFrameShape(QFrame.Shape.NoFrame)
    scroll.setWidget(inner)
    outer = QVBoxLayout(widget)
    outer.setContentsMargins(0, 0, 0, 0)
    outer.addWidget(scroll)
