"""The round controls: Train/Continue, Stop, Predict, New model, the progress bar and the loss curve.

Display only: the dock widget connects the buttons and feeds it the runner's progress.
"""

from __future__ import annotations

from qtpy.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget

from napari_sparseseg._qt.loss_plot import LossPlot
from napari_sparseseg.core.annotations.holdout import format_estimate
from napari_sparseseg.core.base.progress import Progress

__all__ = ["RoundPanel", "round_summary"]


def round_summary(result, rounds_done: int) -> str:
    """One status line for a finished :class:`~napari_sparseseg.core.session.state.RoundResult`."""
    parts = []
    if result.train is not None:
        t = result.train
        parts.append(f"Round {rounds_done}: {t.steps} steps in {t.elapsed:.0f} s ({t.reason})")
    parts.append("prediction skipped" if result.prediction is None else "prediction updated")
    return "; ".join(parts) + ". Repaint wrong regions (in the scribbles or the prediction), then Continue."


def _button(text: str, tooltip: str) -> QPushButton:
    button = QPushButton(text)
    button.setToolTip(tooltip)
    return button


class RoundPanel(QWidget):
    """Buttons of a round, its progress and the loss per step.

    Args:
        parent: the parent widget.
    """

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.train_button = _button("Train", "Train from the scribbles (continuing from the current model), then predict.")
        self.stop_button = _button("Stop", "Stop training within one step, keep the model and predict; press again to skip "
                                   "the prediction.")
        self.predict_button = _button("Predict", "Predict with the current model.")
        self.reset_button = _button("New model", "Forget the trained model; the next Train starts a fresh network. Your "
                                    "scribbles stay.")
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1000)
        self.loss_plot = LossPlot()
        buttons = QHBoxLayout()
        for b in (self.train_button, self.stop_button, self.predict_button, self.reset_button):
            buttons.addWidget(b)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.loss_plot)
        self.estimate = QLabel("")
        self.estimate.setWordWrap(True)
        self.estimate.setToolTip("Dice per class on the strokes held out of the last round (rotating): an estimate on "
                                 "your own strokes, not on every voxel. Scored on one piece it is a rough guide; with "
                                 "several pieces, ± is the spread over them. Switch it on in the settings (Estimate "
                                 "quality).")
        layout.addWidget(self.estimate)
        self.set_running(False, has_model=False)

    def set_running(self, running: bool, has_model: bool) -> None:
        """Enable Stop only while a round runs; Train reads "Continue" once there is a model."""
        for b in (self.train_button, self.predict_button, self.reset_button):
            b.setEnabled(not running)
        self.stop_button.setEnabled(running)
        self.train_button.setText("Continue" if has_model else "Train")
        if not running:
            self.progress_bar.setFormat("idle")
            self.progress_bar.setValue(0)

    def round_started(self, train: bool) -> None:
        """A new round: a new segment of the loss curve when it trains."""
        if train:
            self.loss_plot.start_round()

    def show_progress(self, p: Progress, losses: list[float]) -> None:
        """Show the latest step, and the round's ``losses`` so far."""
        self.progress_bar.setValue(int(1000 * p.fraction))
        if p.stage == "train" and p.loss is None:  # before the first step: the forest was fitted
            self.progress_bar.setFormat(f"training: forest fitted, network starting, {p.elapsed:.0f} s")
        elif p.stage == "train":
            self.loss_plot.set_current(losses)
            self.progress_bar.setFormat(f"training: step {p.step}, loss {p.loss:.3f}, {p.elapsed:.0f} s")
        else:
            self.progress_bar.setFormat(f"predicting: row {p.step}/{p.total}")

    def show_result(self, result, losses: list[float]) -> None:
        """A finished round: its held-out estimate (if any) and, after training, its loss curve."""
        if result.estimate:
            self.estimate.setText("Held-out strokes (estimate on your own strokes): "
                                  + format_estimate(result.estimate, result.class_names))
        elif result.train is not None:
            self.estimate.setText("")
        if result.train is not None:
            self.loss_plot.set_current(losses)
