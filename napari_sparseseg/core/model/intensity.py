"""Intensity normalisation chosen per modality and stored with the model.

* CT (Hounsfield units): fixed HU windows, one input channel each; the default is a
  soft-tissue window (W400/L40) and a wide window (-1000..1000 HU), so organs keep their
  contrast and air/bone stay distinguishable.
* MRI (arbitrary units): robust percentiles (0.5, 99.5) of the volume itself, so the same
  model transfers between scans of different gain.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from napari_sparseseg.core.base.config import Modality, check_option, option_values
from napari_sparseseg.core.base.errors import InputError

MODALITIES = option_values(Modality)
DEFAULT_CT_WINDOWS = ((-160.0, 240.0), (-1000.0, 1000.0))


def validate_image(image, path=None) -> np.ndarray:
    """Check that an image can be segmented and return it as an array (no copy for an ndarray).

    The one check of an image's content: the command line, :class:`~napari_sparseseg.core.training.train.Trainer`,
    :func:`~napari_sparseseg.core.inference.predict.predict` and :class:`~napari_sparseseg.core.session.state.Session`
    call it.

    Args:
        image: the intensities (array-like).
        path: the file it came from, for the message.

    Raises:
        InputError: not 3-D, thinner than 2 voxels along an axis, not real numbers (boolean,
            complex, text), or NaN/inf voxels (counted).
    """
    if not isinstance(image, np.ndarray):
        try:
            image = np.asarray(image)
        except (TypeError, ValueError) as exc:
            raise InputError(f"expected the image as a 3-D array of intensities ({exc}).", path=path) from None
    if image.ndim != 3:
        raise InputError(f"expected a 3-D volume, got {image.ndim}-D with shape {image.shape}.", path=path)
    if min(image.shape) < 2:
        raise InputError(f"the volume is too thin to segment in 3-D (shape {image.shape}).", path=path)
    if image.dtype == bool or not np.issubdtype(image.dtype, np.number) or np.issubdtype(image.dtype, np.complexfloating):
        raise InputError(f"expected real-valued intensities, got dtype {image.dtype}.", path=path)
    if np.issubdtype(image.dtype, np.floating):
        bad = int(image.size - np.count_nonzero(np.isfinite(image)))
        if bad:
            raise InputError(
                f"the image has {bad} NaN/inf voxels; replace them (e.g. with the background intensity) and try again.",
                path=path,
            )
    return image


def _sample(image: np.ndarray, max_samples: int = 2_000_000) -> np.ndarray:
    step = max(1, int(np.ceil(image.size / max_samples)))
    return np.asarray(image).reshape(-1)[::step].astype(np.float32)


def detect_modality(image: np.ndarray) -> str:
    """``"ct"`` if the intensities look like Hounsfield units (air near -1000), else ``"mri"``."""
    s = _sample(image)
    p1, p99 = np.percentile(s, [1, 99])
    return "ct" if p1 < -500 and p99 < 5000 else "mri"


_MODALITY_NAMES = {"ct": "CT (Hounsfield units)", "mri": "MRI"}


def check_modality(image: np.ndarray, want: str, path=None, model: str = "the model is for",
                   remedy: str = "use a model of its modality") -> None:
    """Raise unless ``image`` looks like ``want`` (``"ct"``/``"mri"``, :func:`detect_modality`).

    One model has one normalisation policy, so every scan it trains on or segments must be of
    its modality. ``model`` and ``remedy`` word the message for the caller.

    Raises:
        InputError: ``this scan looks like <got> but <model> <want> scans; <remedy>.``
    """
    got = detect_modality(image)
    if got != want:
        raise InputError(f"this scan looks like {_MODALITY_NAMES[got]} but {model} {_MODALITY_NAMES[want]} scans; "
                         f"{remedy}.", path=path)


def check_model_modality(image: np.ndarray, modality: str, path=None) -> None:
    """Raise unless ``image`` is of the modality of the model it meets (``modality``).

    The one check wherever a saved model meets a scan: ``predict``, a warm start (``segment``
    or ``train --init-model``), ``batch`` and a cohort's Refine. ``modality`` is the model's (``model.normalization.modality``): its normalisation is only
    right for scans of that modality, so an MRI through a CT model would run silently and give
    noise.

    Raises:
        InputError: ``this scan looks like MRI but the model was trained on CT (Hounsfield units)
            scans; use a model of its modality.``
    """
    check_modality(image, modality, path, "the model was trained on",
                   "use a model trained on scans of its modality (or train one on this scan)")


@dataclass(frozen=True)
class Normalization:
    """Maps raw intensities to network input channels.

    Args:
        modality: ``"ct"`` or ``"mri"``.
        windows: CT only, ``(low, high)`` HU pairs, one channel each, scaled to [-1, 1].
        percentiles: MRI only, percentiles of the volume mapped to -1 and 1 (clipped).
    """

    modality: str
    windows: tuple = DEFAULT_CT_WINDOWS
    percentiles: tuple = (0.5, 99.5)
    _resolved: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self):
        if self.modality not in ("ct", "mri"):
            raise ValueError(f"modality must be 'ct' or 'mri', got {self.modality!r}.")
        windows = tuple((float(lo), float(hi)) for lo, hi in self.windows)
        for lo, hi in windows:
            if not hi > lo:
                raise ValueError(f"a CT window needs high > low, got ({lo}, {hi}).")
        object.__setattr__(self, "windows", windows)
        lo, hi = (float(p) for p in self.percentiles)
        if not 0 <= lo < hi <= 100:
            raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got ({lo}, {hi}).")
        object.__setattr__(self, "percentiles", (lo, hi))

    @property
    def n_channels(self) -> int:
        """Input channels of the network: one per CT window, one for MRI."""
        return len(self.windows) if self.modality == "ct" else 1

    def ranges(self, image: np.ndarray) -> list[tuple[float, float]]:
        """The intensity ranges mapped to [-1, 1] for this image (one per channel)."""
        if self.modality == "ct":
            return list(self.windows)
        lo, hi = np.percentile(_sample(image), self.percentiles)
        if not hi > lo:
            hi = lo + 1.0
        return [(float(lo), float(hi))]

    def apply(self, image: np.ndarray, ranges: list[tuple[float, float]] | None = None,
              out: np.ndarray | None = None) -> np.ndarray:
        """Normalised channels ``(C, *image.shape)`` float32 in [-1, 1].

        Args:
            image: raw intensities.
            ranges: precomputed :meth:`ranges` (pass them when normalising a part of a volume).
            out: a float32 array of that shape to write into (saves allocating one per call).
        """
        ranges = self.ranges(image) if ranges is None else ranges
        if out is None:
            out = np.empty((len(ranges),) + image.shape, dtype=np.float32)
        elif out.shape != (len(ranges),) + image.shape or out.dtype != np.float32:
            raise ValueError(f"out must be float32 of shape {(len(ranges),) + image.shape}, got {out.dtype} {out.shape}.")
        for c, (lo, hi) in enumerate(ranges):
            np.clip(image, lo, hi, out=out[c], casting="unsafe")
            out[c] -= lo
            out[c] *= 2.0 / (hi - lo)
            out[c] -= 1.0
        return out

    def to_dict(self) -> dict:
        """Plain dict stored in ``model.json``."""
        return {"modality": self.modality, "windows": [list(w) for w in self.windows], "percentiles": list(self.percentiles)}

    @classmethod
    def from_dict(cls, d: dict) -> Normalization:
        """Inverse of :meth:`to_dict`."""
        return cls(d["modality"], tuple(tuple(w) for w in d.get("windows", DEFAULT_CT_WINDOWS)), tuple(d.get("percentiles", (0.5, 99.5))))


def choose_normalization(image: np.ndarray, modality: str = "auto") -> Normalization:
    """Normalisation for ``image``: ``modality`` ``"auto"`` detects CT by its HU range."""
    modality = check_option(modality, Modality, "modality")
    if modality == "auto":
        modality = detect_modality(image)
    return Normalization(modality)
