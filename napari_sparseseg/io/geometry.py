"""Voxel geometry shared by every reader and writer."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_sparseseg.core.base.errors import InputError
from napari_sparseseg.core.base.grid import validate_affine, validate_shape, validate_spacing

# Reverses the first three homogeneous coordinates: (k, j, i) <-> (i, j, k).
_REV4 = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=float)
_LPS_RAS = np.diag([-1.0, -1.0, 1.0])


@dataclass(frozen=True)
class Geometry:
    """Where a volume's voxels lie in the world.

    Args:
        affine: 4x4 matrix mapping an array index ``(k, j, i)`` (the package's array order)
            to world RAS coordinates in millimetres.
        shape: the array shape ``(k, j, i)``.

    Raises:
        InputError: (also a ``ValueError``) the affine is not a finite, invertible 4x4 matrix
            or the shape not three positive ints (:func:`~napari_sparseseg.core.base.grid.validate_affine`).

    Examples:
        >>> import napari_sparseseg as ss
        >>> image, geom = ss.read_image(ss.load_sample()["path"] / "image.nii.gz")
        >>> geom.shape, tuple(round(s, 1) for s in geom.spacing)
        ((52, 80, 110), (3.0, 3.0, 3.0))
    """

    affine: np.ndarray = field(repr=False)
    shape: tuple[int, int, int]

    def __post_init__(self):
        object.__setattr__(self, "affine", validate_affine(self.affine))
        object.__setattr__(self, "shape", validate_shape(self.shape))

    # --- constructors -------------------------------------------------------------
    @classmethod
    def from_spacing(cls, shape, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0)) -> Geometry:
        """Axis-aligned geometry; ``spacing`` and ``origin`` in array order (k, j, i)."""
        affine = np.eye(4)
        affine[:3, :3] = np.diag([float(s) for s in spacing])
        affine[:3, 3] = [float(o) for o in origin]
        return cls(affine, tuple(shape))

    @classmethod
    def from_nifti_affine(cls, affine_ijk: np.ndarray, shape_ijk) -> Geometry:
        """From a nibabel affine (index ``(i, j, k)`` -> RAS) and the on-disk shape."""
        return cls(np.asarray(affine_ijk, float) @ _REV4, tuple(shape_ijk)[::-1])

    @classmethod
    def from_sitk(cls, spacing_xyz, origin_lps, direction_lps, size_xyz) -> Geometry:
        """From SimpleITK's spacing/origin/direction (LPS, index ``(x, y, z)``)."""
        direction = np.asarray(direction_lps, float).reshape(3, 3)
        m_xyz = _LPS_RAS @ direction @ np.diag(np.asarray(spacing_xyz, float))
        affine = np.eye(4)
        affine[:3, :3] = m_xyz[:, ::-1]
        affine[:3, 3] = _LPS_RAS @ np.asarray(origin_lps, float)
        return cls(affine, tuple(int(s) for s in size_xyz)[::-1])

    # --- views ----------------------------------------------------------------------
    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along the array axes (k, j, i)."""
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))

    @property
    def origin(self) -> tuple[float, float, float]:
        """World RAS position (mm) of voxel (0, 0, 0)."""
        return tuple(float(v) for v in self.affine[:3, 3])

    @property
    def direction(self) -> np.ndarray:
        """3x3 matrix whose columns are the unit RAS directions of the array axes."""
        return self.affine[:3, :3] / np.asarray(self.spacing)

    def nifti_affine(self) -> np.ndarray:
        """Affine for nibabel, whose arrays are in ``(i, j, k)`` order."""
        return self.affine @ _REV4

    def sitk_parameters(self) -> tuple[tuple, tuple, tuple]:
        """``(spacing_xyz, origin_lps, direction_lps_flat)`` for a SimpleITK image."""
        m_xyz = _LPS_RAS @ self.affine[:3, :3][:, ::-1]
        spacing = np.linalg.norm(m_xyz, axis=0)
        direction = m_xyz / spacing
        origin = _LPS_RAS @ self.affine[:3, 3]
        return tuple(spacing.tolist()), tuple(origin.tolist()), tuple(direction.ravel().tolist())

    def index_to_world(self, index) -> np.ndarray:
        """World RAS mm of array indices ``(..., 3)`` in (k, j, i) order."""
        index = np.asarray(index, float)
        return index @ self.affine[:3, :3].T + self.affine[:3, 3]

    def plane(self, axis: int) -> str:
        """The anatomical plane of the slices normal to array ``axis``.

        "sagittal", "coronal" or "axial", by the world direction (R-L, A-P or S-I) the axis is
        closest to.
        """
        return ("sagittal", "coronal", "axial")[int(np.argmax(np.abs(self.direction[:, int(axis)])))]

    def same_grid(self, other: Geometry, atol_mm: float = 1e-2) -> bool:
        """True when ``other`` has the same shape and places every voxel within ``atol_mm``."""
        if tuple(other.shape) != tuple(self.shape):
            return False
        corners = np.array(np.meshgrid(*[[0, s - 1] for s in self.shape], indexing="ij"))
        corners = corners.reshape(3, -1).T
        return bool(np.allclose(self.index_to_world(corners), other.index_to_world(corners), atol=atol_mm))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (session files, layer metadata)."""
        return {"affine": self.affine.tolist(), "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Geometry:
        """Inverse of :meth:`to_dict`."""
        return cls(np.asarray(d["affine"], float), tuple(d["shape"]))


def sitk_geometry(spacing, origin, direction, size_xyz, p: Path) -> Geometry:
    """A :class:`Geometry` from SimpleITK's header values, refusing NaN/inf and singular matrices."""
    origin = np.asarray(origin, float)
    direction = np.asarray(direction, float)
    if not np.all(np.isfinite(origin)):
        raise InputError(f"the header's origin {tuple(origin.tolist())} holds NaN or infinite values; fix the header.",
                         path=p)
    if not np.all(np.isfinite(direction)):
        raise InputError("the header's direction matrix holds NaN or infinite values; fix the header.", path=p)
    return Geometry.from_sitk(spacing, origin, direction, size_xyz)


def sitk_array(img, p: Path) -> tuple[np.ndarray, Geometry]:
    """Array and geometry of a SimpleITK image already in memory (a DICOM series)."""
    import SimpleITK as sitk

    if img.GetDimension() != 3:
        raise InputError(f"expected a 3-D volume, got {img.GetDimension()}-D.", path=p)
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"expected one value per voxel, got {img.GetNumberOfComponentsPerPixel()} (a vector/colour image).", path=p
        )
    spacing = validate_spacing(img.GetSpacing(), path=p)
    geom = sitk_geometry(spacing, img.GetOrigin(), img.GetDirection(), img.GetSize(), p)
    return sitk.GetArrayFromImage(img), geom
