"""Radiological display: every scan shown the same way, whatever its storage order.

napari shows an array's last two axes as rows and columns of the screen and slides along the
first. The file's own grid (``(k, j, i)``, :mod:`napari_sparseseg.io`) can run in any
anatomical direction, so the reader shows a *view* of it with the axes permuted and flipped
into one fixed anatomical order (as napari-nifti >= 0.0.17, Slicer and ITK-SNAP do):

* display axis 0 (the slider) runs head -> foot (superior at index 0),
* display axis 1 (rows) runs anterior -> posterior (anterior up in an axial slice),
* display axis 2 (columns) runs from the patient's right to the left (right on the screen's left).

So an axial slice has anterior up and the patient's right on the left; the coronal view
(display axes 0 and 2) has superior up and right on the left; the sagittal view (0 and 1) has
superior up and anterior on the left. Layer ``scale`` is the voxel size along each display
axis. The transform is a permutation plus flips: :meth:`DisplayOrientation.to_display` and
:meth:`~DisplayOrientation.to_grid` return numpy *views*, so a stroke painted on the display
array lands in the grid array underneath, and everything written (scribbles, masks, sessions,
exports) is on the file's own grid, exactly. An oblique scan is shown in the nearest such
order without resampling, with a warning saying by how much it is tilted.
"""

from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass

import numpy as np

from napari_sparseseg.io import Geometry

__all__ = [
    "AXIS_LABELS",
    "ORIENTATION_KEY",
    "DisplayOrientation",
    "ObliqueScanWarning",
    "orientation_from_metadata",
    "radiological_orientation",
]

ORIENTATION_KEY = "sparseseg_display"
# World (RAS mm) direction each display axis runs along: inferior, posterior, patient's left.
_TARGET = np.array([[0.0, 0.0, -1.0], [0.0, -1.0, 0.0], [-1.0, 0.0, 0.0]])
AXIS_LABELS = ("head→foot", "anterior→posterior", "right→left")
OBLIQUE_DEGREES = 1.0  # tilt above which the reader warns that the scan is shown unresampled


class ObliqueScanWarning(UserWarning):
    """The scan's axes are tilted against the patient's axes; it is shown in the nearest order."""


@dataclass(frozen=True)
class DisplayOrientation:
    """A permutation and flips from the file's grid to the display order.

    Args:
        perm: display axis ``d`` shows grid axis ``perm[d]``.
        flip: display axis ``d`` runs against that grid axis.
        tilt_degrees: largest angle between a grid axis and the display axis it is shown along.
    """

    perm: tuple[int, int, int] = (0, 1, 2)
    flip: tuple[bool, bool, bool] = (False, False, False)
    tilt_degrees: float = 0.0

    def __post_init__(self):
        perm = tuple(int(p) for p in self.perm)
        if sorted(perm) != [0, 1, 2] or len(self.flip) != 3:
            raise ValueError(f"perm must be a permutation of (0, 1, 2) and flip three booleans, got {self.perm}, {self.flip}.")
        object.__setattr__(self, "perm", perm)
        object.__setattr__(self, "flip", tuple(bool(f) for f in self.flip))

    @property
    def is_identity(self) -> bool:
        """True when the display array is the grid array itself."""
        return self.perm == (0, 1, 2) and not any(self.flip)

    def to_display(self, grid_array: np.ndarray) -> np.ndarray:
        """The display view of an array on the file's grid (leading channel axes are kept)."""
        a = np.asarray(grid_array)
        lead = a.ndim - 3
        v = np.transpose(a, tuple(range(lead)) + tuple(lead + p for p in self.perm))
        sl = tuple([slice(None)] * lead + [slice(None, None, -1) if f else slice(None) for f in self.flip])
        return v[sl]

    def to_grid(self, display_array: np.ndarray) -> np.ndarray:
        """The grid view of a display array (inverse of :meth:`to_display`)."""
        a = np.asarray(display_array)
        lead = a.ndim - 3
        sl = tuple([slice(None)] * lead + [slice(None, None, -1) if f else slice(None) for f in self.flip])
        inv = np.argsort(self.perm)
        return np.transpose(a[sl], tuple(range(lead)) + tuple(lead + int(p) for p in inv))

    def display_shape(self, grid_shape) -> tuple[int, int, int]:
        """Shape of the display array of a grid array of ``grid_shape``."""
        return tuple(int(grid_shape[p]) for p in self.perm)

    def grid_shape(self, display_shape) -> tuple[int, int, int]:
        """Shape on the file's grid of a display array of ``display_shape``."""
        out = [0, 0, 0]
        for d, p in enumerate(self.perm):
            out[p] = int(display_shape[d])
        return tuple(out)

    def _reindex(self, points, shape, to_display: bool) -> np.ndarray:
        """Voxel indices ``(n, 3)`` of an array of ``shape`` -> the other view's (display axis d is grid axis perm[d])."""
        p = np.asarray(points, dtype=float).reshape(-1, 3)
        out = np.empty_like(p)
        for d, g in enumerate(self.perm):
            src, dst = (g, d) if to_display else (d, g)
            out[:, dst] = (shape[src] - 1 - p[:, src]) if self.flip[d] else p[:, src]
        return out

    def to_grid_index(self, points, display_shape) -> np.ndarray:
        """Display voxel indices ``(n, 3)`` (of an array of ``display_shape``) -> indices on the file's grid."""
        return self._reindex(points, display_shape, to_display=False)

    def to_display_index(self, points, grid_shape) -> np.ndarray:
        """Indices ``(n, 3)`` on the file's grid (of an array of ``grid_shape``) -> display voxel indices."""
        return self._reindex(points, grid_shape, to_display=True)

    def to_display_slice(self, axis: int, index: int, grid_shape) -> tuple[int, int]:
        """``(display axis, display index)`` of slice ``index`` across grid ``axis``."""
        d = self.perm.index(int(axis))
        return d, (int(grid_shape[int(axis)]) - 1 - int(index)) if self.flip[d] else int(index)

    def layer_transform(self, geometry: Geometry) -> tuple[tuple, tuple]:
        """``(scale, translate)`` of a napari layer showing ``geometry``'s volume in this order.

        ``scale`` is the voxel size along each display axis; ``translate`` the position (mm)
        of display voxel 0 along each display direction, so scans of one patient line up.
        """
        spacing = geometry.spacing
        scale = tuple(float(spacing[p]) for p in self.perm)
        first = [0, 0, 0]
        for d, p in enumerate(self.perm):
            first[p] = geometry.shape[p] - 1 if self.flip[d] else 0
        world = geometry.index_to_world(np.array(first, float))
        translate = tuple(float(world @ _TARGET[d]) for d in range(3))
        return scale, translate

    def to_dict(self) -> dict:
        """Plain dict for layer metadata."""
        return {"perm": list(self.perm), "flip": list(self.flip), "tilt_degrees": self.tilt_degrees}

    @classmethod
    def from_dict(cls, d: dict) -> DisplayOrientation:
        """Inverse of :meth:`to_dict`."""
        return cls(tuple(d["perm"]), tuple(d["flip"]), float(d.get("tilt_degrees", 0.0)))


def radiological_orientation(geometry: Geometry, warn: bool = True) -> DisplayOrientation:
    """The permutation and flips that show ``geometry``'s volume in radiological order.

    Each display axis takes the grid axis closest to its anatomical direction (the assignment
    with the largest total alignment), flipped where it runs the other way.

    Args:
        geometry: the scan's geometry (direction matrix in RAS).
        warn: emit :class:`ObliqueScanWarning` when a grid axis is tilted by more than
            ``OBLIQUE_DEGREES`` against the display axis it is shown along.
    """
    direction = geometry.direction  # columns: RAS unit vectors of the grid axes
    align = _TARGET @ direction  # align[d, a]: cosine between display axis d and grid axis a
    best = max(itertools.permutations(range(3)), key=lambda p: sum(abs(align[d, p[d]]) for d in range(3)))
    flip = tuple(bool(align[d, best[d]] < 0) for d in range(3))
    cosines = [min(1.0, abs(float(align[d, best[d]]))) for d in range(3)]
    tilt = max(math.degrees(math.acos(c)) for c in cosines)
    result = DisplayOrientation(best, flip, round(tilt, 3))
    if warn and tilt > OBLIQUE_DEGREES:
        warnings.warn(
            f"the scan is oblique (its axes are tilted up to {tilt:.1f}° against the patient's axes); it is shown "
            "in the nearest radiological orientation without resampling, and everything is saved on its own grid.",
            ObliqueScanWarning,
            stacklevel=2,
        )
    return result


def orientation_from_metadata(metadata: dict | None) -> DisplayOrientation:
    """The display orientation stored in a layer's metadata (identity for plain arrays)."""
    meta = metadata or {}
    if ORIENTATION_KEY in meta:
        return DisplayOrientation.from_dict(meta[ORIENTATION_KEY])
    return DisplayOrientation()
