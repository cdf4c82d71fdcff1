"""Checks on a voxel grid that need no file reader (voxel spacing, the index-to-world affine), and the working grid.

``io.Geometry`` (every reader), :class:`~napari_sparseseg.core.session.state.Session` (a saved
geometry) and :class:`~napari_sparseseg.core.training.train.Trainer` (the spacing that shapes patches)
call these, so a NaN, a zero or a singular matrix is refused the same way wherever it comes from.
"""

from __future__ import annotations

import math

import numpy as np

from napari_sparseseg.core.base.errors import InputError, brief

__all__ = ["validate_affine", "validate_geometry", "validate_shape", "validate_spacing", "working_factors"]


def validate_spacing(spacing, path=None, what: str = "voxel spacing") -> tuple[float, float, float]:
    """Return ``spacing`` as three positive finite floats (mm, array order).

    Raises:
        InputError: not three numbers, or one is NaN/inf, zero or negative.
    """
    try:
        values = np.asarray(spacing, dtype=float).reshape(-1)
    except (TypeError, ValueError):
        raise InputError(f"the {what} must be three numbers in mm, got {brief(spacing)}.", path=path) from None
    if values.size != 3:
        raise InputError(f"the {what} must be three numbers in mm, got {brief(spacing)}.", path=path)
    if not np.all(np.isfinite(values)) or not np.all(values > 0):
        raise InputError(f"the {what} {tuple(values.tolist())} is not usable: every voxel size must be a positive, "
                         "finite number of mm; fix the file's header.", path=path)
    return tuple(float(v) for v in values)


def validate_shape(shape, path=None, what: str = "shape") -> tuple[int, int, int]:
    """Return ``shape`` as three positive ints.

    Raises:
        InputError: not three positive whole numbers.
    """
    try:
        values = tuple(shape)
    except TypeError:
        raise InputError(f"the {what} must be three positive whole numbers, got {brief(shape)}.", path=path) from None
    if len(values) != 3 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in values):
        raise InputError(f"the {what} must be three positive whole numbers, got {brief(shape)}.", path=path)
    return tuple(int(v) for v in values)


def validate_affine(affine, path=None) -> np.ndarray:
    """Return ``affine`` as a 4x4 float matrix mapping voxel indices to world millimetres.

    The 3x3 part (voxel axes times spacing) must be finite and invertible, i.e. the voxels have
    a size and directions that span space; the translation finite; the last row ``0 0 0 1``.

    Raises:
        InputError: another shape, NaN/inf entries, a singular (or nearly singular) 3x3 part,
            or a last row other than ``0 0 0 1``; says what to fix.
    """
    try:
        m = np.asarray(affine, dtype=float)
    except (TypeError, ValueError):
        raise InputError(f"the position matrix must be 4x4 numbers, got {brief(affine)}.", path=path) from None
    if m.shape != (4, 4):
        raise InputError(f"the position matrix must be 4x4, got shape {m.shape}.", path=path)
    if not np.all(np.isfinite(m)):
        raise InputError("the header's position/orientation matrix holds NaN or infinite values, so the voxels have no "
                         "place in space; fix the header (e.g. re-export the scan).", path=path)
    if not np.allclose(m[3], [0, 0, 0, 1]):
        raise InputError(f"the position matrix's last row must be 0 0 0 1, got {m[3].tolist()}.", path=path)
    axes = m[:3, :3]
    sizes = np.linalg.norm(axes, axis=0)
    if not np.all(sizes > 0):
        raise InputError(f"the header gives a voxel size of 0 along array axis {int(np.argmin(sizes))}; "
                         "fix the header's spacing.", path=path)
    # Independent of scale: the determinant of the unit direction vectors (1 for orthogonal axes).
    if abs(np.linalg.det(axes / sizes)) < 1e-6:
        raise InputError("the header's direction matrix is singular (two voxel axes point the same way), so the voxels "
                         "have no place in space; fix the header.", path=path)
    return m


def validate_geometry(geometry, shape: tuple) -> dict:
    """A geometry dict (``io.Geometry.to_dict``): a finite, invertible 4x4 affine and the session's shape.

    Raises:
        InputError: another structure, an unusable affine, or another shape.
    """
    if not isinstance(geometry, dict) or "affine" not in geometry:
        raise InputError(f"the geometry must be a dict with an 'affine' (4x4) and a 'shape', got {type(geometry).__name__}.")
    affine = validate_affine(geometry["affine"])
    gshape = geometry.get("shape", list(shape))
    if not isinstance(gshape, (list, tuple)) or tuple(gshape) != tuple(shape):
        raise InputError(f"the geometry is for shape {gshape}, the scribbles have {tuple(shape)}.")
    return {**geometry, "affine": affine.tolist(), "shape": list(shape)}


def working_factors(shape, spacing, max_voxels: int) -> tuple[int, int, int]:
    """Whole-number block factors per axis: ``(1, 1, 1)`` for a scan of at most ``max_voxels``.

    Otherwise the axis whose blocks are thinnest in millimetres grows by one voxel (the first
    such axis on a tie) until the coarse grid has at most ``max_voxels`` voxels, so the working
    voxels become as close to isotropic as the scan allows (a 0.7 x 0.7 x 1 mm CT of 76 million
    voxels gets 2.1 x 2.1 x 2 mm blocks with the default 6 million).
    """
    f = [1, 1, 1]
    if max_voxels <= 0:
        return (1, 1, 1)
    while math.prod(math.ceil(n / k) for n, k in zip(shape, f, strict=True)) > max_voxels:
        grow = [a for a in range(3) if f[a] < shape[a]]
        if not grow:
            break
        a = min(grow, key=lambda i: (spacing[i] * f[i], i))
        f[a] += 1
    return tuple(f)
