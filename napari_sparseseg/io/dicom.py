"""Reading one DICOM series from a folder, refusing what would give a volume on a wrong grid.

GDCM (through SimpleITK) silently skips a slice file it cannot parse and stacks whatever is
left: a missing, damaged or duplicated slice gives a shorter (or longer) volume with a wrong
slice spacing, and a folder with two series gives one of them. Before any voxel is read, every
slice's header is checked:

* one series in the folder (else each is listed: UID, description, slice count);
* every DICOM-looking file in the folder parses (else the damaged file is named);
* same orientation, size and pixel spacing in every slice, each with a position;
* positions along the slice normal evenly spaced: no duplicate, no gap (named by position and
  instance number), no uneven spacing (the spacings found are listed), no in-plane drift.

The slices are then read in the order of their positions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_sparseseg.core.base.errors import InputError
from napari_sparseseg.io._native import quiet_native_output, reason
from napari_sparseseg.io.geometry import Geometry, sitk_array

__all__ = ["read_dicom_series"]

_TAG_POSITION, _TAG_INSTANCE, _TAG_DESCRIPTION, _TAG_SERIES = "0020|0032", "0020|0013", "0008|103e", "0020|000e"
_SUPPORTED = ".nii, .nii.gz, .nrrd, .mha, .mhd or a DICOM series folder"
# Slice spacing is "even" when every step is within 1 % (+ 0.01 mm for rounded positions) of
# the median step; a step of k medians (within 10 %) is k - 1 missing slices.
_REL_TOL, _ABS_TOL_MM, _GAP_TOL = 0.01, 0.01, 0.1


@dataclass
class _Slice:
    path: Path
    position: np.ndarray | None
    direction: np.ndarray
    size: tuple
    spacing: tuple
    instance: str


def _is_dicom_candidate(path: Path) -> bool:
    """A file that should be part of the series: a .dcm/.ima suffix, or the DICM magic at byte 128."""
    if not path.is_file() or path.name.startswith(".") or path.name.upper() == "DICOMDIR":
        return False
    if path.suffix.lower() in (".dcm", ".ima", ".dicom"):
        return True
    try:
        with path.open("rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def _read_header(path: Path) -> _Slice:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.SetImageIO("GDCMImageIO")
    with quiet_native_output() as said:
        try:
            reader.ReadImageInformation()
        except RuntimeError as exc:
            raise InputError(f"the slice file {path.name} cannot be read ({reason(exc, said)}); it is damaged: "
                             "copy the series again or remove that file.", path=path.parent) from exc
    keys = set(reader.GetMetaDataKeys())
    position = None
    if _TAG_POSITION in keys:
        position = np.asarray(reader.GetOrigin(), float)
    instance = reader.GetMetaData(_TAG_INSTANCE).strip() if _TAG_INSTANCE in keys else "?"
    direction = np.asarray(reader.GetDirection(), float).reshape(3, 3)
    size = tuple(int(s) for s in reader.GetSize()[:2])
    spacing = tuple(float(s) for s in reader.GetSpacing()[:2])
    return _Slice(path, position, direction, size, spacing, instance)


def _series_summary(folder: Path, ids, reader) -> str:
    import SimpleITK as sitk

    parts = []
    for sid in ids:
        files = reader.GetGDCMSeriesFileNames(str(folder), sid)
        description = ""
        if files:
            r = sitk.ImageFileReader()
            r.SetFileName(files[0])
            try:
                r.ReadImageInformation()
                if r.HasMetaDataKey(_TAG_DESCRIPTION):
                    description = r.GetMetaData(_TAG_DESCRIPTION).strip()
            except RuntimeError:
                pass
        parts.append(f"{sid} '{description or 'no description'}' ({len(files)} slice{'s' if len(files) != 1 else ''})")
    return "; ".join(parts)


def _instance_number(s: _Slice) -> float:
    try:
        return float(s.instance)
    except ValueError:
        return 0.0


def _fmt(v: float) -> str:
    return f"{v:.3f}".rstrip("0").rstrip(".") if np.isfinite(v) else str(v)


def _check_slices(slices: list[_Slice], folder: Path) -> list[_Slice]:
    """Check consistency and spacing; return the slices in order along the slice normal."""
    first = slices[0]
    for s in slices[1:]:
        if s.size != first.size:
            raise InputError(f"the slices have different sizes: {first.path.name} is {first.size[0]}x{first.size[1]}, "
                             f"{s.path.name} is {s.size[0]}x{s.size[1]}; a volume needs one size. Is another series "
                             "mixed in?", path=folder)
        if not np.allclose(s.direction[:, :2], first.direction[:, :2], atol=1e-4):
            raise InputError(f"the slices have different orientations (Image Orientation 0020,0037): {first.path.name} "
                             f"and {s.path.name}; a volume needs one orientation. Is another series mixed in?",
                             path=folder)
        if not np.allclose(s.spacing, first.spacing, rtol=1e-4, atol=1e-6):
            raise InputError(f"the slices have different pixel spacings: {first.path.name} {first.spacing}, "
                             f"{s.path.name} {s.spacing}; a volume needs one spacing.", path=folder)
    unplaced = [s.path.name for s in slices if s.position is None]
    if unplaced:
        raise InputError(f"{len(unplaced)} slice file(s) have no Image Position (0020,0032), e.g. {unplaced[0]}; "
                         "without positions the slices cannot be stacked into a volume.", path=folder)
    positions = np.array([s.position for s in slices])
    if not np.all(np.isfinite(positions)) or not np.all(np.isfinite(first.direction)):
        raise InputError("a slice's position or orientation is not a number (NaN/inf); the headers are damaged.",
                         path=folder)
    normal = first.direction[:, 2]
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    if _instance_number(slices[order[0]]) > _instance_number(slices[order[-1]]):
        order = order[::-1]  # slice 0 is the first acquired (lowest instance number), as written
    slices = [slices[i] for i in order]
    along = along[order]
    positions = positions[order]
    pixel = min(first.spacing)

    def where(i: int) -> str:
        a, b = slices[i], slices[i + 1]
        return (f"positions {_fmt(along[i])} and {_fmt(along[i + 1])} mm along the slice normal "
                f"(instance numbers {a.instance} and {b.instance}, files {a.path.name} and {b.path.name})")

    steps = np.abs(np.diff(along))
    dup_tol = max(1e-3, 0.01 * pixel)
    dups = np.flatnonzero(steps <= dup_tol)
    if dups.size:
        i = int(dups[0])
        raise InputError(f"{dups.size} slice position(s) occur twice, e.g. at {where(i)}; a volume needs one slice per "
                         "position. Remove the duplicated files (or separate echoes/phases into their own folders).",
                         path=folder)
    drift = positions - positions[0] - np.outer(along - along[0], normal)
    worst = float(np.abs(drift).max()) if drift.size else 0.0
    if worst > 0.25 * pixel:
        raise InputError(f"the slices are not stacked along the slice normal (shifted in-plane by up to {_fmt(worst)} mm; "
                         "a tilted gantry?); this reader needs a regular grid: resample the series first.", path=folder)
    step = float(np.median(steps))
    tol = _REL_TOL * step + _ABS_TOL_MM
    ratio = steps / step
    gaps = np.flatnonzero((np.round(ratio) >= 2) & (np.abs(steps - np.round(ratio) * step) <= _GAP_TOL * step))
    if gaps.size:
        i = int(gaps[0])
        missing = int(np.round(ratio[i])) - 1
        more = f" ({gaps.size} gaps in all)" if gaps.size > 1 else ""
        raise InputError(f"slices are missing: {missing} slice(s) between {where(i)}, where the spacing is "
                         f"{_fmt(step)} mm{more}. Copy the complete series again.", path=folder)
    uneven = np.flatnonzero(np.abs(steps - step) > tol)
    if uneven.size:
        found = sorted({round(float(v), 3) for v in steps})
        shown = ", ".join(_fmt(v) for v in found[:6]) + (" ..." if len(found) > 6 else "")
        raise InputError(f"the slices are unevenly spaced: spacings of {shown} mm found (e.g. between "
                         f"{where(int(uneven[0]))}); this reader needs a regular grid: resample the series first.",
                         path=folder)
    return slices


def read_dicom_series(folder: Path) -> tuple[np.ndarray, Geometry]:
    """Read the one DICOM series in ``folder`` in array order ``(k, j, i)`` with its geometry.

    Raises:
        InputError: no series, several series (listed), a damaged slice file (named), slices
            of different size/orientation/spacing or without position, duplicated positions,
            missing slices (where), uneven spacing (the spacings found), a single slice.
    """
    import SimpleITK as sitk

    folder = Path(folder)
    reader = sitk.ImageSeriesReader()
    with quiet_native_output():
        ids = list(reader.GetGDCMSeriesIDs(str(folder)))
    candidates = sorted((p for p in folder.iterdir() if _is_dicom_candidate(p)), key=lambda p: p.name)
    if not ids:
        if candidates:
            raise InputError(f"no readable DICOM series: the {len(candidates)} DICOM file(s) here (e.g. {candidates[0].name}) "
                             "cannot be parsed; are they damaged?", path=folder)
        raise InputError(f"no DICOM series found in this folder; give {_SUPPORTED}.", path=folder)
    if len(ids) > 1:
        raise InputError(f"the folder holds {len(ids)} DICOM series: {_series_summary(folder, ids, reader)}. Put each series "
                         "in its own folder and give that folder.", path=folder)
    with quiet_native_output():
        files = [Path(f) for f in reader.GetGDCMSeriesFileNames(str(folder), ids[0])]
    listed = {f.name for f in files}
    unreadable = [p for p in candidates if p.name not in listed]
    for p in unreadable:
        _read_header(p)  # raises, naming the file, if it cannot be parsed
    if unreadable:  # parses alone but GDCM left it out of the series
        raise InputError(f"the file {unreadable[0].name} is DICOM but not part of the series "
                         f"{ids[0]}; put each series in its own folder.", path=folder)
    if len(files) < 2:
        raise InputError("the DICOM series has a single slice; a 3-D volume needs several.", path=folder)
    slices = _check_slices([_read_header(f) for f in files], folder)
    reader.SetFileNames([str(s.path) for s in slices])
    with quiet_native_output() as said:
        try:
            img = reader.Execute()
        except RuntimeError as exc:
            for s in slices:  # name the slice whose voxels cannot be read
                try:
                    with quiet_native_output():
                        sitk.ReadImage(str(s.path))
                except RuntimeError:
                    raise InputError(f"the voxels of slice file {s.path.name} (instance {s.instance}) cannot be read; "
                                     "it is damaged or truncated: copy the series again.", path=folder) from exc
            raise InputError(f"cannot read the DICOM series ({reason(exc, said)}).", path=folder) from exc
    arr, geom = sitk_array(img, folder)
    if arr.shape[0] != len(slices):
        raise InputError(f"the series has {len(slices)} slices but {arr.shape[0]} were read; is a file damaged?",
                         path=folder)
    return arr, geom
