"""Read and write 3-D volumes: NIfTI with nibabel; DICOM series, NRRD, MHA/MHD with SimpleITK."""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from napari_sparseseg.core.atomic import atomic_output, replace_folder
from napari_sparseseg.core.errors import InputError, OutputError
from napari_sparseseg.core.labels import label_dtype
from napari_sparseseg.io.geometry import Geometry

NIFTI_SUFFIXES = (".nii", ".nii.gz")
SITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
SUPPORTED_SUFFIXES = NIFTI_SUFFIXES + SITK_SUFFIXES
_SUPPORTED_TEXT = ".nii, .nii.gz, .nrrd, .mha, .mhd or a DICOM series folder"


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for s in SUPPORTED_SUFFIXES:
        if name.endswith(s):
            return s
    return path.suffix.lower()


def _looks_like_dicom_folder(path: Path) -> bool:
    if not path.is_dir():
        return False
    for i, child in enumerate(path.iterdir()):
        if i > 200:
            break
        if child.is_file():
            if child.suffix.lower() in (".dcm", ".ima") or child.suffix == "":
                return True
    return False


def is_supported_path(path: str | os.PathLike) -> bool:
    """True for a file with a supported suffix or a folder holding DICOM files."""
    p = Path(path)
    if p.is_dir():
        return _looks_like_dicom_folder(p)
    return _suffix(p) in SUPPORTED_SUFFIXES


# ---------------------------------------------------------------------------------- read
def read_image(path: str | os.PathLike, backend: str = "auto") -> tuple[np.ndarray, Geometry]:
    """Read a 3-D scan in array order ``(k, j, i)`` with its geometry.

    Args:
        path: ``.nii``/``.nii.gz`` (nibabel), ``.nrrd``/``.mha``/``.mhd`` (SimpleITK),
            or a folder holding one DICOM series (SimpleITK).
        backend: ``"auto"``, ``"nibabel"`` or ``"sitk"`` (tests read one file both ways).

    Returns:
        ``(array, geometry)``; the array keeps the file's dtype (scaling applied).

    Raises:
        InputError: the path is missing, has an unsupported format, cannot be read, or is not 3-D.
    """
    p = Path(path)
    if not p.exists():
        raise InputError("file not found; check the path.", path=p)
    if p.is_dir():
        with _keep_locale():
            return _read_dicom_series(p)
    suffix = _suffix(p)
    if suffix not in SUPPORTED_SUFFIXES:
        raise InputError(f"unsupported format '{suffix or p.name}'; use {_SUPPORTED_TEXT}.", path=p)
    if backend == "auto":
        backend = "nibabel" if suffix in NIFTI_SUFFIXES else "sitk"
    try:
        if backend == "nibabel":
            return _read_nibabel(p)
        if backend == "sitk":
            return _read_sitk_file(p)
    except InputError:
        raise
    except Exception as exc:  # nibabel/SimpleITK raise many types for a damaged file
        raise InputError(f"cannot read the file ({type(exc).__name__}: {exc}); is it damaged?", path=p) from exc
    raise ValueError(f"backend must be 'auto', 'nibabel' or 'sitk', got {backend!r}.")


def read_labels(path: str | os.PathLike, like: Geometry | None = None, what: str = "labels") -> tuple[np.ndarray, Geometry]:
    """Read a label volume (scribbles, corrections, masks) as non-negative integers.

    Args:
        path: a supported file or DICOM folder.
        like: if given, the labels must lie on this grid (same shape and world position).
        what: the word used in error messages ("scribbles", "corrections", ...).

    Raises:
        InputError: unreadable, non-integer or negative values, or on another grid than ``like``.
    """
    arr, geom = read_image(path)
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise InputError(f"{what} must hold whole numbers (0 = unlabelled); found fractional or NaN values.", path=path)
    if arr.size and arr.min() < 0:
        raise InputError(f"{what} must be >= 0 (0 = unlabelled, c+1 = class c); found {arr.min()}.", path=path)
    if arr.size and arr.max() > 65535:
        raise InputError(f"{what} values must be < 65536; found {arr.max()}.", path=path)
    arr = arr.astype(label_dtype(arr.max(initial=0)))
    if like is not None:
        if tuple(geom.shape) != tuple(like.shape):
            raise InputError(
                f"{what} grid {geom.shape} differs from the image grid {like.shape}; "
                "draw the labels on the image's own grid (same size and position).",
                path=path,
            )
        if not geom.same_grid(like, atol_mm=max(0.5 * min(like.spacing), 1e-3)):
            raise InputError(
                f"{what} have the image's size but lie elsewhere in space (origin/spacing/direction differ); "
                "resample them onto the image or save them from the same scan.",
                path=path,
            )
    return arr, geom


def _check_3d(arr: np.ndarray, path: Path) -> np.ndarray:
    if arr.ndim == 4 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 3:
        raise InputError(f"expected a 3-D volume, got {arr.ndim}-D with shape {arr.shape}.", path=path)
    if min(arr.shape) < 1:
        raise InputError(f"the volume is empty (shape {arr.shape}).", path=path)
    return arr


def _read_nibabel(p: Path) -> tuple[np.ndarray, Geometry]:
    import nibabel as nib

    img = nib.load(str(p))
    hdr = img.header
    slope, inter = hdr.get_slope_inter() if hasattr(hdr, "get_slope_inter") else (None, None)
    raw_dtype = img.get_data_dtype()
    if (slope in (None, 1.0)) and (inter in (None, 0.0)):
        arr = np.asarray(img.dataobj, dtype=raw_dtype)
    else:
        arr = np.asarray(img.dataobj, dtype=np.float32)
    arr = _check_3d(arr, p)
    geom = Geometry.from_nifti_affine(img.affine, arr.shape)
    return np.ascontiguousarray(arr.transpose(2, 1, 0)), geom


def _sitk_to_numpy(img, p: Path) -> tuple[np.ndarray, Geometry]:
    import SimpleITK as sitk

    if img.GetDimension() != 3:
        raise InputError(f"expected a 3-D volume, got {img.GetDimension()}-D.", path=p)
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"expected one value per voxel, got {img.GetNumberOfComponentsPerPixel()} (a vector/colour image).", path=p
        )
    arr = sitk.GetArrayFromImage(img)
    geom = Geometry.from_sitk(img.GetSpacing(), img.GetOrigin(), img.GetDirection(), img.GetSize())
    return arr, geom


def _read_sitk_file(p: Path) -> tuple[np.ndarray, Geometry]:
    import SimpleITK as sitk

    img = sitk.ReadImage(str(p))
    if img.GetDimension() == 4 and img.GetSize()[3] == 1:
        img = img[:, :, :, 0]
    return _sitk_to_numpy(img, p)


def _read_dicom_series(p: Path) -> tuple[np.ndarray, Geometry]:
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    ids = reader.GetGDCMSeriesIDs(str(p))
    if not ids:
        raise InputError(f"no DICOM series found in this folder; give {_SUPPORTED_TEXT}.", path=p)
    # Several series in one folder: take the one with the most slices, as viewers do.
    files = max((reader.GetGDCMSeriesFileNames(str(p), sid) for sid in ids), key=len)
    if len(files) < 2:
        raise InputError("the DICOM series has a single slice; a 3-D volume needs several.", path=p)
    reader.SetFileNames(files)
    try:
        img = reader.Execute()
    except RuntimeError as exc:
        raise InputError(f"cannot read the DICOM series ({exc}).", path=p) from exc
    return _sitk_to_numpy(img, p)


# --------------------------------------------------------------------------------- write
def check_writable(path: str | os.PathLike, what: str = "output") -> Path:
    """Fail early (before any long computation) if ``path`` cannot be written.

    Raises:
        OutputError: the parent folder is missing or not writable, or the path is a folder
            where a file is expected.
    """
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.exists():
        raise OutputError(f"the {what} folder {parent} does not exist; create it first.", path=p)
    if not parent.is_dir():
        raise OutputError(f"{parent} is a file, not a folder; choose a path inside an existing folder.", path=p)
    try:
        fd, probe = tempfile.mkstemp(prefix=".sparseseg-probe-", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"the {what} folder {parent} is not writable ({exc.strerror or exc}); choose another folder.",
                          path=p) from exc
    return p


def write_labels(path: str | os.PathLike, labels: np.ndarray, geometry: Geometry) -> Path:
    """Write a label volume (array order ``(k, j, i)``) on ``geometry``'s grid.

    The file is written to a temporary name next to the target and renamed into place, so
    a failure never leaves half a file nor destroys an existing one.

    Args:
        path: a ``.nii``/``.nii.gz``/``.nrrd``/``.mha``/``.mhd`` file, or a folder (DICOM series).
        labels: integer array with ``geometry.shape``.
        geometry: the scan's geometry.
    """
    labels = np.asarray(labels)
    if tuple(labels.shape) != tuple(geometry.shape):
        raise InputError(f"labels shape {labels.shape} does not match the geometry {geometry.shape}.", path=path)
    labels = labels.astype(label_dtype(labels.max(initial=0)))
    p = Path(path)
    suffix = _suffix(p)
    if suffix not in SUPPORTED_SUFFIXES:
        if p.suffix == "" or p.is_dir():
            return _write_dicom_series(p, labels, geometry)
        raise OutputError(f"unsupported output format '{p.suffix}'; use {_SUPPORTED_TEXT}.", path=p)
    check_writable(p)
    with _sitk_errors(p):
        return atomic_output(p, lambda tmp: _write_array(tmp, suffix, labels, geometry))


def write_probabilities(path: str | os.PathLike, probs_uint8: np.ndarray, geometry: Geometry) -> Path:
    """Write class probabilities ``(C, k, j, i)`` stored as uint8 (p * 255).

    NIfTI gets a 4-D image with ``scl_slope = 1/255`` so readers see probabilities in [0, 1];
    the SimpleITK formats get a vector image of uint8 (divide by 255).
    """
    p = Path(path)
    suffix = _suffix(p)
    if suffix not in SUPPORTED_SUFFIXES:
        raise OutputError(f"unsupported probability format '{p.suffix}'; use .nii.gz, .nrrd or .mha.", path=p)
    check_writable(p, "probabilities")

    def write(tmp: Path):
        if suffix in NIFTI_SUFFIXES:
            import nibabel as nib

            data = np.ascontiguousarray(np.moveaxis(probs_uint8, 0, -1).transpose(2, 1, 0, 3))
            img = nib.Nifti1Image(data, geometry.nifti_affine())
            img.header.set_slope_inter(1.0 / 255.0, 0.0)
            img.set_qform(geometry.nifti_affine(), code=1)
            img.set_sform(geometry.nifti_affine(), code=1)
            img.header["intent_code"] = 2  # NIFTI_INTENT... any vector-ish: keep readers happy
            nib.save(img, str(tmp))
        else:
            import SimpleITK as sitk

            img = sitk.GetImageFromArray(np.moveaxis(probs_uint8, 0, -1), isVector=True)
            _set_sitk_geometry(img, geometry)
            sitk.WriteImage(img, str(tmp), useCompression=True)

    with _sitk_errors(p):
        return atomic_output(p, write)


@contextmanager
def _keep_locale():
    """GDCM (SimpleITK's DICOM layer) leaves the process locale at "C" after writing a series: put it back."""
    import locale

    saved = locale.setlocale(locale.LC_ALL)
    try:
        yield
    finally:
        if locale.setlocale(locale.LC_ALL) != saved:
            try:
                locale.setlocale(locale.LC_ALL, saved)
            except locale.Error:
                pass


@contextmanager
def _sitk_errors(path: Path):
    """SimpleITK reports every write failure (a full disk included) as a RuntimeError: name the file instead."""
    try:
        yield
    except RuntimeError as exc:
        text = " ".join(str(exc).split())
        detail = text.rsplit("itk::ERROR:", 1)[-1].strip()[:200]
        raise OutputError(f"cannot write the file ({detail}); the previous file, if any, is unchanged. Free some space or "
                          "choose a writable folder.", path=path) from exc


def _set_sitk_geometry(img, geometry: Geometry) -> None:
    spacing, origin, direction = geometry.sitk_parameters()
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    img.SetDirection(direction)


def _write_array(tmp: Path, suffix: str, arr: np.ndarray, geometry: Geometry) -> None:
    if suffix in NIFTI_SUFFIXES:
        import nibabel as nib

        img = nib.Nifti1Image(np.ascontiguousarray(arr.transpose(2, 1, 0)), geometry.nifti_affine())
        img.set_qform(geometry.nifti_affine(), code=1)
        img.set_sform(geometry.nifti_affine(), code=1)
        img.header.set_xyzt_units("mm")
        nib.save(img, str(tmp))
    else:
        import SimpleITK as sitk

        img = sitk.GetImageFromArray(arr)
        _set_sitk_geometry(img, geometry)
        sitk.WriteImage(img, str(tmp), useCompression=True)


def _write_dicom_series(folder: Path, arr: np.ndarray, geometry: Geometry) -> Path:
    """Write one DICOM file per slice (axis 0) with position/orientation/spacing tags."""
    import SimpleITK as sitk

    check_writable(folder, "DICOM output")
    _check_empty_folder(folder)
    arr = arr.astype(np.uint16)
    spacing, origin, direction = geometry.sitk_parameters()
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    img.SetDirection(direction)
    series_uid = "1.2.826.0.1.3680043.2.1125." + str(uuid.uuid4().int)[:30]
    study_uid = series_uid + ".1"
    d = direction
    orientation = "\\".join(f"{v:.6f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7]))

    def build(tmp: Path) -> None:
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        date, clock = time.strftime("%Y%m%d"), time.strftime("%H%M%S")
        for z in range(arr.shape[0]):
            sl = img[:, :, z]
            pos = img.TransformIndexToPhysicalPoint((0, 0, z))
            tags = {
                "0008|0060": "OT",
                "0008|0008": "DERIVED\\SECONDARY",
                "0008|0021": date,
                "0008|0031": clock,
                "0020|000d": study_uid,
                "0020|000e": series_uid,
                "0020|0037": orientation,
                "0020|0032": "\\".join(f"{v:.6f}" for v in pos),
                "0020|0013": str(z + 1),
                "0018|0050": f"{spacing[2]:.6f}",
                "0028|0030": f"{spacing[1]:.6f}\\{spacing[0]:.6f}",
                "0008|103e": "napari-sparseseg mask",
                "0008|0018": series_uid + f".{z + 1}",
            }
            for k, v in tags.items():
                sl.SetMetaData(k, v)
            writer.SetFileName(str(tmp / f"slice_{z:04d}.dcm"))
            with _sitk_errors(folder):
                writer.Execute(sl)

    with _keep_locale():
        return replace_folder(folder, build, check=_check_empty_folder)


def _check_empty_folder(folder: Path) -> None:
    if os.path.lexists(folder) and not folder.is_dir():
        raise OutputError("a file exists where the DICOM output folder should go; choose another path.", path=folder)
    if folder.is_dir() and any(folder.iterdir()):
        raise OutputError("the DICOM output folder is not empty; choose a new or empty folder.", path=folder)
