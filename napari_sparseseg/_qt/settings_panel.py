"""The training settings panel, built from :class:`~napari_sparseseg.core.base.config.RoundSettings`.

Every control takes its choices (the option enums), range (the field's bounds, or the narrower
one in :data:`~napari_sparseseg._qt.ranges.RANGES`) and tooltip (``help``) from the field, and
its value from a ``RoundSettings``: no default is written here (cellfinder's containers, with
the dataclass as the single source).
"""

from __future__ import annotations

import dataclasses

from qtpy.QtCore import Signal
from qtpy.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QGroupBox, QSpinBox, QWidget

from napari_sparseseg._qt.ranges import RANGES
from napari_sparseseg.core.base.config import RoundSettings, field_info, option_values

__all__ = ["SettingsPanel"]

# Row labels (layout only); checkboxes carry their label as text.
_LABELS = {"device": "Device", "model_size": "Model size", "time_budget": "Time per round at most", "seed": "Seed"}
# GUI-only advice appended to a field's help.
_NOTES = {"model_size": "A trained model keeps its size; 'New model' starts over.",
          "stroke_regions_only": "A region you want kept needs one stroke of its class.",
          "pretrain": "It runs in the background from the moment the scan is picked; Train ends it at once."}
_LARGEST_INT = 2**31 - 1  # QSpinBox holds a C int


def _tooltip(name: str) -> str:
    """The field's ``help``; for an option, its enum's docstring (what ``auto`` means)."""
    meta = field_info(RoundSettings, name).metadata
    text = meta.get("help", "")
    parts = [text[:1].upper() + text[1:] + "."]
    if "choices" in meta and meta["choices"].__doc__:
        parts = [meta["choices"].__doc__.replace("``", "").strip()]
    return " ".join(parts + ([_NOTES[name]] if name in _NOTES else []))


def _range(name: str) -> tuple[float, float]:
    """The range a spin box offers: its entry in :data:`RANGES` if it has one, else the field's bounds."""
    if (RoundSettings, name) in RANGES:
        return tuple(RANGES[RoundSettings, name])
    meta = field_info(RoundSettings, name).metadata
    low = meta.get("ge", meta.get("gt", 0))
    high = meta.get("le", meta.get("lt", _LARGEST_INT))
    if "gt" in meta and "ge" not in meta:
        low = low + (1 if field_info(RoundSettings, name).type == "int" else 0.01)
    return low, min(high, _LARGEST_INT)


class SettingsPanel(QGroupBox):
    """Device, model size, time per round, stop on plateau, seed, Live, regions, "Refine outlines" and "Learn the scan" (pretraining).

    Fields without a control (``max_steps``, ``live_seconds``) keep the values of the last
    :meth:`set_settings`, so scripts and tests can bound a round by steps.

    Args:
        settings: the initial settings (default: ``RoundSettings()``).
        parent: the parent widget.

    Signals:
        settings_changed(RoundSettings): any control changed (also after :meth:`set_settings`).
    """

    settings_changed = Signal(object)

    def __init__(self, settings: RoundSettings | None = None, parent: QWidget | None = None):
        super().__init__("Training", parent)
        self._base = RoundSettings()
        self.device = self._combo("device")
        self.model_size = self._combo("model_size")
        self.time_budget = QDoubleSpinBox()
        self.time_budget.setRange(*_range("time_budget"))
        self.time_budget.setSuffix(" s")
        self.plateau = QCheckBox("Stop when the network has learned the strokes")
        self.seed = QSpinBox()
        self.seed.setRange(*(int(v) for v in _range("seed")))
        self.live = QCheckBox()
        self.stroke_regions_only = QCheckBox("Only regions touching a stroke")
        self.refine = QCheckBox("Refine outlines along the image's edges")
        self.forest = QCheckBox("Also fit a forest on image filters (fused)")
        self.pretrain = QCheckBox("Learn the scan while I paint (pretraining)")
        self.fill_between = QCheckBox("Fill between outlined slices (low weight)")
        self.estimate = QCheckBox("Estimate quality on held-out strokes")
        form = QFormLayout(self)
        for name in ("device", "model_size", "time_budget", "plateau", "seed", "live", "stroke_regions_only", "refine", "forest",
                     "pretrain", "fill_between", "estimate"):
            control = getattr(self, name)
            control.setToolTip(_tooltip(name))
            if name in _LABELS:
                form.addRow(_LABELS[name], control)
            else:
                form.addRow(control)
        self.set_settings(settings or self._base)
        for signal in (self.device.currentTextChanged, self.model_size.currentTextChanged, self.time_budget.valueChanged,
                       self.plateau.toggled, self.seed.valueChanged, self.live.toggled, self.stroke_regions_only.toggled, self.refine.toggled,
                       self.forest.toggled, self.pretrain.toggled, self.fill_between.toggled, self.estimate.toggled):
            signal.connect(self._emit)

    @staticmethod
    def _combo(name: str) -> QComboBox:
        combo = QComboBox()
        combo.addItems(list(option_values(field_info(RoundSettings, name).metadata["choices"])))
        return combo

    def settings(self) -> RoundSettings:
        """The settings shown (validated; raises ``ConfigError`` for an impossible value)."""
        return dataclasses.replace(
            self._base, device=self.device.currentText(), model_size=self.model_size.currentText(),
            time_budget=self.time_budget.value(), plateau=self.plateau.isChecked(), seed=self.seed.value(),
            live=self.live.isChecked(),
            stroke_regions_only=self.stroke_regions_only.isChecked(), refine=self.refine.isChecked(),
            forest=self.forest.isChecked(), pretrain=self.pretrain.isChecked(),
            fill_between=self.fill_between.isChecked(), estimate=self.estimate.isChecked())

    def set_settings(self, settings: RoundSettings) -> None:
        """Show ``settings`` (a device not in the list, e.g. ``cuda:1``, is added to it)."""
        self._base = settings
        controls = (self.device, self.model_size, self.time_budget, self.plateau, self.seed, self.live, self.stroke_regions_only,
                    self.refine, self.forest, self.pretrain, self.fill_between, self.estimate)
        for control in controls:
            control.blockSignals(True)
        for combo, value in ((self.device, settings.device), (self.model_size, settings.model_size)):
            if combo.findText(value) < 0:
                combo.addItem(value)
            combo.setCurrentText(value)
        self.time_budget.setValue(float(settings.time_budget))
        self.plateau.setChecked(bool(settings.plateau))
        self.seed.setValue(int(settings.seed))
        self.live.setText(f"Live: retrain {settings.live_seconds:g} s after each stroke")
        self.live.setChecked(bool(settings.live))
        self.stroke_regions_only.setChecked(bool(settings.stroke_regions_only))
        self.refine.setChecked(bool(settings.refine))
        self.forest.setChecked(bool(settings.forest))
        self.pretrain.setChecked(bool(settings.pretrain))
        self.fill_between.setChecked(bool(settings.fill_between))
        self.estimate.setChecked(bool(settings.estimate))
        for control in controls:
            control.blockSignals(False)
        self._emit()

    def set_running(self, running: bool) -> None:
        """While a round runs the device and model size are fixed; the rest applies to the next round."""
        self.device.setEnabled(not running)
        self.model_size.setEnabled(not running)

    def _emit(self, *_) -> None:
        self.settings_changed.emit(self.settings())
