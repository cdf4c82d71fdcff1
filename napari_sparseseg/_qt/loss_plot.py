"""A small live plot of the training loss (QPainter; no plotting library needed)."""

from __future__ import annotations

import math

from qtpy.QtCore import QPointF, Qt
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QSizePolicy, QWidget


class LossPlot(QWidget):
    """Loss per step on a log scale; round boundaries as faint vertical lines."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.losses: list[float] = []
        self.rounds: list[int] = []  # index where each round starts
        self.setMinimumHeight(70)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setToolTip("Training loss per step (log scale); grey lines mark the start of each round.")

    def start_round(self) -> None:
        self.rounds.append(len(self.losses))
        self.update()

    def add(self, loss: float, repaint: bool = True) -> None:
        if loss is not None and math.isfinite(loss) and loss > 0:
            self.losses.append(float(loss))
            if repaint:
                self.update()

    def set_current(self, losses: list[float]) -> None:
        """Show ``losses`` as the current round's curve so far (replacing what it had) and repaint."""
        if not self.rounds:
            self.rounds.append(0)
        self.losses[self.rounds[-1]:] = [float(v) for v in losses if v is not None and math.isfinite(v) and v > 0]
        self.update()

    def set_history(self, rounds_losses: list[list[float]]) -> None:
        self.losses, self.rounds = [], []
        for losses in rounds_losses:
            self.rounds.append(len(self.losses))
            self.losses.extend(float(v) for v in losses if v and v > 0)
        self.update()

    def paintEvent(self, event):  # noqa: N802 (Qt API)
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        w, h = self.width(), self.height()
        p.fillRect(0, 0, w, h, QColor(38, 41, 48))
        p.setPen(QColor(170, 170, 170))
        if not self.losses:
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "loss curve appears while training")
            return
        logs = [math.log10(v) for v in self.losses]
        lo, hi = min(logs), max(logs)
        hi = hi if hi > lo else lo + 1.0
        n = max(len(logs) - 1, 1)
        m = 6

        def pt(i, v):
            return QPointF(m + (w - 2 * m) * i / n, m + (h - 2 * m) * (hi - v) / (hi - lo))

        p.setPen(QPen(QColor(90, 90, 90), 1))
        for r in self.rounds[1:]:
            x = pt(r, lo).x()
            p.drawLine(QPointF(x, 0), QPointF(x, h))
        # A light moving average over the raw points reads better than the noisy per-step loss.
        p.setPen(QPen(QColor(120, 160, 220, 110), 1))
        p.drawPolyline(QPolygonF([pt(i, v) for i, v in enumerate(logs)]))
        k = max(1, len(logs) // 40)
        smooth = [sum(logs[max(0, i - k) : i + 1]) / len(logs[max(0, i - k) : i + 1]) for i in range(len(logs))]
        p.setPen(QPen(QColor(255, 190, 60), 2))
        p.drawPolyline(QPolygonF([pt(i, v) for i, v in enumerate(smooth)]))
        p.setPen(QColor(200, 200, 200))
        p.drawText(m + 2, m + 10, f"loss {self.losses[-1]:.3f}  (step {len(self.losses)})")
