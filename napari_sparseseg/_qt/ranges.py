"""The ranges the widget's spin boxes offer, where narrower than a setting's bounds.

A range is how a setting is shown, not what it may be: the bounds live with the field in
:mod:`napari_sparseseg.core.base.config` and are checked there; a control offers a range
within them. A field without an entry here offers its bounds
(:func:`napari_sparseseg._qt.settings_panel._range`).
"""

from __future__ import annotations

from napari_sparseseg.core.base.config import RoundSettings

__all__ = ["RANGES"]

#: (config class, field name) -> (lowest, highest) value a control offers.
RANGES: dict[tuple[type, str], tuple[float, float]] = {
    (RoundSettings, "time_budget"): (1.0, 3600.0),
}
