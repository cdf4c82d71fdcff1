"""Read and write 3-D volumes: NIfTI with nibabel; DICOM series, NRRD, MHA/MHD with SimpleITK."""

from __future__ import annotations

import locale
import os
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from napari_sparseseg.core.annotations.labels import label_dtype, validate_labels
from napari_sparseseg.core.base.errors import InputError, OutputError
from napari_sparseseg.core.base.grid import validate_affine, validate_spacing
from napari_sparseseg.core.model.intensity import validate_image
from napari_sparseseg.io._native import quiet_native_output, reason
from napari_sparseseg.io.atomic import atomic_output, check_written, data_file_of, payload_bytes, replace_folder
from napari_sparseseg.io.dicom import read_dicom_series
from napari_sparseseg.io.dicom_seg import (
    is_dicom_seg,
    is_seg_path,
    read_dicom_seg,
    write_dicom_seg,
    write_dicom_seg_probabilities,
)
from napari_sparseseg.io.geometry import Geometry, sitk_geometry
from napari_sparseseg.io.paths import (
    NIFTI_SUFFIXES,
    SUPPORTED_SUFFIXES,
    SUPPORTED_TEXT,
    file_suffix,
)

# ---------------------------------------------------------------------------------- read
# The largest volume a header may claim (2**31 voxels: a 512 x 512 x 8192 scan). A damaged
# header claiming more is refused before anything is allocated.
MAX_VOXELS = 2**31
# Deflate cannot compress better than about 1032:1, so a compressed file of n bytes holds at
# most that many times n bytes: a header claiming more is damaged.
_MAX_DEFLATE_RATIO = 1032


def read_image(path: str | os.PathLike, backend: str = "auto") -> tuple[np.ndarray, Geometry]:
    """Read a 3-D scan in array order ``(k, j, i)`` with its geometry.

    Args:
        path: ``.nii``/``.nii.gz`` (nibabel), ``.nrrd``/``.mha``/``.mhd`` (SimpleITK),
            or a folder holding one DICOM series (SimpleITK).
        backend: ``"auto"``, ``"nibabel"`` or ``"sitk"`` (tests read one file both ways).

    Returns:
        ``(array, geometry)``; the array keeps the file's dtype (scaling applied); the geometry
        is finite and invertible.

    Raises:
        InputError: the path is missing, has an unsupported format, cannot be read, is not 3-D,
            its header's geometry is unusable (NaN/inf, zero or negative spacing, a singular
            direction matrix), it claims more voxels than the file holds, or (DICOM) the folder
            holds several series or the series has missing, duplicated, unevenly spaced,
            inconsistent or damaged slices. Every message names the file.

    Examples:
        >>> import napari_sparseseg as ss
        >>> image, geom = ss.read_image(ss.load_sample()["path"] / "image.nii.gz")
        >>> image.shape, image.dtype.name
        ((52, 80, 110), 'int16')
    """
    p = Path(path)
    if not p.exists():
        raise InputError("file not found; check the path.", path=p)
    if backend not in ("auto", "nibabel", "sitk"):
        raise ValueError(f"backend must be 'auto', 'nibabel' or 'sitk', got {backend!r}.")
    suffix = file_suffix(p)
    if not p.is_dir() and suffix not in SUPPORTED_SUFFIXES:
        raise InputError(f"unsupported format '{suffix or p.name}'; use {SUPPORTED_TEXT}.", path=p)
    if backend == "auto":
        backend = "nibabel" if suffix in NIFTI_SUFFIXES else "sitk"
    try:
        if p.is_dir():
            with _keep_locale():
                return read_dicom_series(p)
        return _read_nibabel(p) if backend == "nibabel" else _read_sitk_file(p)
    except InputError as exc:
        exc.path = exc.path or str(p)
        raise
    except MemoryError as exc:
        raise InputError("not enough memory to read the file; is its header damaged (a wrong size)?", path=p) from exc
    except Exception as exc:  # nibabel/SimpleITK raise many types for a damaged file
        raise InputError(f"cannot read the file ({reason(exc, path=p)}); is it damaged?", path=p) from exc


def read_labels(path: str | os.PathLike, like: Geometry | None = None, what: str = "labels",
                max_value: int | None = None, source: str | os.PathLike | None = None,
                class_names=None) -> tuple[np.ndarray, Geometry]:
    """Read a label volume (scribbles, corrections, masks) as non-negative integers.

    The values are checked by :func:`~napari_sparseseg.core.annotations.labels.validate_labels`, the
    check the API and the widget use too.

    Args:
        path: a supported file or DICOM folder.
        like: if given, the labels must lie on this grid (same shape and world position).
        what: the word used in error messages; ``"scribbles"`` and ``"corrections"`` are held
            to the scribble convention (values 0..MAX_CLASSES), other kinds to 0..65535.
        max_value: the largest value allowed, if not the default of ``what``.
        source: the scan (a DICOM series folder) the labels were drawn on; needed to read a
            DICOM SEG, which is placed on that series' grid (:func:`~napari_sparseseg.io.dicom_seg.read_dicom_seg`:
            classes by segment label, ``c + 1`` per class for scribbles and corrections).
        class_names: the class table (background first) a DICOM SEG's segment labels are matched to, if known.

    Returns:
        ``(labels, geometry)``: labels as the smallest unsigned integer dtype that holds them.

    Raises:
        InputError: unreadable (see :func:`read_image`), or on another grid than ``like``; a
            DICOM SEG without a DICOM series as ``source``, or not of that series.
        ScribbleError: (scribbles, corrections) fractional, NaN, negative or boolean values,
            or a value above the class bound (the message names it and its voxel count).

    Examples:
        >>> import napari_sparseseg as ss
        >>> folder = ss.load_sample()["path"]
        >>> image, geom = ss.read_image(folder / "image.nii.gz")
        >>> scribbles, _ = ss.read_labels(folder / "scribbles.nii.gz", like=geom, what="scribbles")
        >>> int(scribbles.max())  # 0 unlabelled, 1 background, c + 1 class c
        5
    """
    if file_suffix(Path(path)) not in SUPPORTED_SUFFIXES and is_dicom_seg(path):
        if source is None or not Path(source).is_dir():
            raise InputError(f"the {what} are a DICOM SEG, which is placed on the DICOM series it was made on; the image "
                             f"{source or '(none)'} is not a DICOM series folder: give that series as the image.", path=path)
        arr = read_dicom_seg(path, source, class_names=class_names, what=what, geometry=like)
        geom = like if like is not None else read_image(source)[1]
    else:
        arr, geom = read_image(path)
    arr = validate_labels(arr, what, max_value=max_value, path=path)
    arr = arr.astype(label_dtype(arr.max(initial=0)), copy=False)
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


def read_scan(image, scribbles=None, corrections=None, class_names=None):
    """A scan and its strokes: ``(image, geometry, scribbles, corrections)`` (``None`` where not given).

    The image is checked as every entry point checks it
    (:func:`~napari_sparseseg.core.model.intensity.validate_image`); the strokes must lie on its grid.
    Strokes may be a DICOM SEG of a DICOM series image (segments matched to ``class_names``
    by label when given).

    Raises:
        InputError: a file is unreadable, the image cannot be segmented, or strokes are on
            another grid (the message names the file).
    """
    arr, geom = read_image(image)
    validate_image(arr, path=image)
    s = read_labels(scribbles, like=geom, what="scribbles", source=image, class_names=class_names)[0] if scribbles else None
    c = read_labels(corrections, like=geom, what="corrections", source=image, class_names=class_names)[0] \
        if corrections else None
    return arr, geom, s, c


def _check_3d(arr: np.ndarray, path: Path) -> np.ndarray:
    while arr.ndim > 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 3:
        raise InputError(f"expected a 3-D volume, got {arr.ndim}-D with shape {arr.shape}.", path=path)
    if min(arr.shape) < 1:
        raise InputError(f"the volume is empty (shape {arr.shape}).", path=path)
    return arr


def _check_claimed_size(shape, itemsize: int, p: Path, data_bytes: int | None, compressed: bool) -> None:
    """Refuse a header that claims more voxels than any scan, or than the file can hold."""
    shape = tuple(int(s) for s in shape)
    if any(s < 0 for s in shape):
        raise InputError(f"the header gives a negative size {shape}; the file is damaged.", path=p)
    voxels = int(np.prod(shape, dtype=object)) if shape else 0
    if voxels > MAX_VOXELS:
        raise InputError(f"the header claims {voxels} voxels (size {shape}), more than any scan this package reads "
                         f"({MAX_VOXELS}); the header is damaged.", path=p)
    if data_bytes is None:
        return
    needed = voxels * max(1, int(itemsize))
    room = data_bytes * _MAX_DEFLATE_RATIO if compressed else data_bytes
    if needed > room:
        raise InputError(f"the header claims {voxels} voxels (size {shape}, {needed} bytes) but the file holds only "
                         f"{data_bytes} bytes; the file is truncated or its header damaged.", path=p)


def _read_nibabel(p: Path) -> tuple[np.ndarray, Geometry]:
    import nibabel as nib

    with quiet_native_output() as said:
        try:
            img = nib.load(str(p))
            hdr = img.header
            shape = tuple(int(s) for s in img.shape)
            raw_dtype = img.get_data_dtype()
            offset = int(getattr(img.dataobj, "offset", 0) or 0)
            size = p.stat().st_size
            compressed = p.name.lower().endswith(".gz")
            _check_claimed_size(shape, raw_dtype.itemsize, p, size if compressed else max(0, size - offset), compressed)
            affine = img.affine
            if affine is None:
                raise InputError("the header has no position matrix (no qform, sform or voxel sizes).", path=p)
            slope, inter = hdr.get_slope_inter() if hasattr(hdr, "get_slope_inter") else (None, None)
            with np.errstate(all="ignore"):
                if (slope in (None, 1.0)) and (inter in (None, 0.0)):
                    arr = np.asarray(img.dataobj, dtype=raw_dtype)
                else:
                    arr = np.asarray(img.dataobj, dtype=np.float32)
        except InputError:
            raise
        except MemoryError:
            raise
        except Exception as exc:
            raise InputError(f"cannot read the file ({reason(exc, said, p)}); is it damaged?", path=p) from exc
    arr = _check_3d(arr, p)
    geom = Geometry.from_nifti_affine(_nifti_affine(img, p), arr.shape)
    return np.ascontiguousarray(arr.transpose(2, 1, 0)), geom


def _nifti_affine(img, p: Path) -> np.ndarray:
    """The affine nibabel chose (sform, else qform, else voxel sizes), checked for the message."""
    affine = np.asarray(img.affine, dtype=float)
    hdr = img.header
    which = "sform" if int(hdr.get("sform_code", 0)) > 0 else ("qform" if int(hdr.get("qform_code", 0)) > 0 else "pixdim")
    try:
        if which != "sform":
            # nibabel quietly turns a zero voxel size into 1 mm and a negative one positive; a
            # wrong grid is worse than an error, so look at the header as it is in the file.
            from nibabel.openers import ImageOpener

            with ImageOpener(str(p)) as f:
                raw = type(hdr).from_fileobj(f, check=False)
            validate_spacing(np.asarray(raw["pixdim"], float)[1:4], what="voxel size (pixdim)")
        validate_affine(affine)
    except InputError as exc:
        raise InputError(f"unusable NIfTI {which}: {exc.message}", path=p) from None
    return affine


_SITK_BYTES = {"8-bit": 1, "16-bit": 2, "32-bit": 4, "64-bit": 8}


def _sitk_header(reader, p: Path) -> tuple:
    """Check what a SimpleITK reader found in the header; returns ``(size, spacing, origin, direction)``.

    A 4-D header whose last size is 1 counts as 3-D.
    """
    import SimpleITK as sitk

    dim = reader.GetDimension()
    size = tuple(int(s) for s in reader.GetSize())
    if dim == 4 and size[3] == 1:
        keep = 3
    elif dim != 3:
        raise InputError(f"expected a 3-D volume, got {dim}-D with size {size}.", path=p)
    else:
        keep = 3
    if reader.GetNumberOfComponents() != 1:
        raise InputError(
            f"expected one value per voxel, got {reader.GetNumberOfComponents()} (a vector/colour image).", path=p)
    pixel = sitk.GetPixelIDValueAsString(reader.GetPixelID())
    itemsize = next((b for k, b in _SITK_BYTES.items() if k in pixel), 8)
    data_file = _detached_data_file(p)
    compressed = _header_says_compressed(p)
    data_bytes = data_file.stat().st_size if data_file is not None and data_file.is_file() else None
    _check_claimed_size(size, itemsize, p, data_bytes, compressed)
    spacing = validate_spacing(reader.GetSpacing()[:keep], path=p)
    direction = np.asarray(reader.GetDirection(), float).reshape(dim, dim)[:keep, :keep]
    origin = tuple(reader.GetOrigin()[:keep])
    return size[:keep], spacing, origin, tuple(direction.ravel())


def _detached_data_file(p: Path) -> Path | None:
    """The file holding the voxels: ``p`` itself for .mha/.nrrd, the named data file for .mhd/.nhdr."""
    suffix = file_suffix(p)
    if suffix in (".mha", ".nrrd"):
        return p
    try:
        head = p.read_bytes()[:65536].decode("latin1")
    except OSError:
        return None
    for line in head.splitlines():
        key, sep, value = line.partition("=" if suffix == ".mhd" else ":")
        if sep and key.strip().lower() in ("elementdatafile", "data file", "datafile"):
            value = value.strip()
            if value.upper() in ("LOCAL", "LIST") or " " in value or "%" in value:
                return None
            return p.parent / value
    return None


def _header_says_compressed(p: Path) -> bool:
    try:
        head = p.read_bytes()[:65536].decode("latin1").lower()
    except OSError:
        return True
    return any(word in head for word in ("compresseddata = true", "encoding: gz", "encoding: gzip", "encoding: bz",
                                         "encoding: bzip2"))


_META_COUNTS = {  # MetaImage fields holding numbers, and how many (in NDims)
    "dimsize": 1, "elementspacing": 1, "elementsize": 1, "offset": 1, "position": 1, "origin": 1,
    "centerofrotation": 1, "transformmatrix": 2, "rotation": 2, "orientation": 2,
}


def _check_metaimage_header(p: Path) -> None:
    """Refuse a MetaImage header (.mha/.mhd) that MetaIO cannot parse safely.

    MetaIO trusts ``NDims`` and the lengths of the number lists: a negative ``NDims`` crashes
    the process (found by tests/io/test_fuzz_readers.py). So the counts are checked here, in
    Python, before ITK sees the file.
    """
    try:
        head = p.read_bytes()[:65536].decode("latin1")
    except OSError as exc:
        raise InputError(f"cannot read the file ({exc.strerror or exc}).", path=p) from exc
    fields, names = {}, {}
    for line in head.split("\n"):
        name, sep, value = line.partition("=")
        key = name.strip().lower()
        if not sep:
            continue
        fields[key], names[key] = value.strip(), name.strip()
        if key == "elementdatafile":
            break
    data_file = fields.get("elementdatafile")
    if data_file is None:
        raise InputError("the MetaImage header has no ElementDataFile line; the file is truncated or damaged.", path=p)
    if data_file.upper() not in ("LOCAL", "LIST") and "%" not in data_file and not (p.parent / data_file).is_file():
        raise InputError(f"the data file '{data_file}' named in the header is not there; keep the .mhd and its data "
                         "file together (or the header is damaged).", path=p)
    try:
        ndims = int(fields.get("ndims", ""))
    except ValueError:
        raise InputError(f"the MetaImage header's NDims is {fields.get('ndims')!r}, not a whole number; "
                         "the header is damaged.", path=p) from None
    if ndims not in (3, 4):
        raise InputError(f"expected a 3-D volume, but the header says NDims = {ndims}.", path=p)
    for key, power in _META_COUNTS.items():
        if key not in fields:
            continue
        name = names[key]
        try:
            values = [float(v) for v in fields[key].split()]
        except ValueError:
            raise InputError(f"the MetaImage header's {name} is {fields[key]!r}, not a list of numbers; "
                             "the header is damaged.", path=p) from None
        if len(values) != ndims**power:
            raise InputError(f"the MetaImage header's {name} holds {len(values)} numbers, NDims = {ndims} needs "
                             f"{ndims**power}; the header is damaged.", path=p)
        if not all(np.isfinite(values)):
            raise InputError(f"the MetaImage header's {name} holds NaN or infinite values ({fields[key]!r}); "
                             "fix the header.", path=p)
        if key == "dimsize" and not all(v >= 1 and v == int(v) for v in values):
            raise InputError(f"the MetaImage header's {name} {fields[key]!r} is not positive whole numbers.", path=p)
    for key in ("elementnumberofchannels", "headersize", "compresseddatasize"):
        if key in fields:
            try:
                value = int(fields[key])
            except ValueError:
                raise InputError(f"the MetaImage header's {names[key]} is {fields[key]!r}, not a whole number.",
                                 path=p) from None
            if value < (1 if key == "elementnumberofchannels" else -1):
                raise InputError(f"the MetaImage header's {names[key]} is {value}; the header is damaged.", path=p)


def _read_sitk_file(p: Path) -> tuple[np.ndarray, Geometry]:
    import SimpleITK as sitk

    if file_suffix(p) in (".mha", ".mhd"):
        _check_metaimage_header(p)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(p))
    with quiet_native_output() as said:
        try:
            reader.ReadImageInformation()
        except RuntimeError as exc:
            raise InputError(f"cannot read the header ({reason(exc, said, p)}); is the file damaged?", path=p) from exc
    size, spacing, origin, direction = _sitk_header(reader, p)
    geom = sitk_geometry(spacing, origin, direction, size, p)
    with quiet_native_output() as said:
        try:
            img = reader.Execute()
        except RuntimeError as exc:
            raise InputError(f"cannot read the voxels ({reason(exc, said, p)}); is the file damaged or truncated?",
                             path=p) from exc
    if img.GetDimension() == 4:
        img = img[:, :, :, 0]
    arr = _check_3d(sitk.GetArrayFromImage(img), p)
    if tuple(arr.shape) != tuple(geom.shape):
        raise InputError(f"the voxels read ({arr.shape}) do not match the header's size {geom.shape}.", path=p)
    return arr, geom


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


def write_labels(path: str | os.PathLike, labels: np.ndarray, geometry: Geometry,
                 source: str | os.PathLike | None = None, class_names=None) -> Path:
    """Write a label volume (array order ``(k, j, i)``) on ``geometry``'s grid.

    The file is written to a temporary name next to the target and renamed into place, so
    a failure never leaves half a file nor destroys an existing one.

    Args:
        path: a ``.nii``/``.nii.gz``/``.nrrd``/``.mha``/``.mhd`` file, a folder (DICOM series),
            or a ``.dcm`` file: a DICOM SEG of ``source``
            (:func:`~napari_sparseseg.io.dicom_seg.write_dicom_seg`).
        labels: integer array with ``geometry.shape``.
        geometry: the scan's geometry.
        source: the scan the labels were made on (a DICOM series folder for a ``.dcm`` SEG).
        class_names: the class table, background first (a SEG's segment labels).

    Raises:
        OutputError: a ``.dcm`` SEG asked for without a DICOM series as ``source``.

    Examples:
        ```python
        import napari_sparseseg as ss
        image, geom = ss.read_image("ct.nii.gz")
        ss.write_labels("mask.nii.gz", prediction.labels, geom)
        # returns the path written, after checking the file reads back whole
        ```
    """
    labels = np.asarray(labels)
    if tuple(labels.shape) != tuple(geometry.shape):
        raise InputError(f"labels shape {labels.shape} does not match the geometry {geometry.shape}.", path=path)
    labels = labels.astype(label_dtype(labels.max(initial=0)))
    p = Path(path)
    if is_seg_path(p):
        return write_dicom_seg(p, labels, _seg_source(p, source), class_names, geometry=geometry)
    suffix = file_suffix(p)
    if suffix not in SUPPORTED_SUFFIXES:
        if p.suffix == "" or p.is_dir():
            return _write_dicom_series(p, labels, geometry)
        raise OutputError(f"unsupported output format '{p.suffix}'; use {SUPPORTED_TEXT}.", path=p)
    return _write_volume(p, labels, geometry)


def write_image(path: str | os.PathLike, image: np.ndarray, geometry: Geometry) -> Path:
    """Write intensities (array order ``(k, j, i)``, dtype kept) on ``geometry``'s grid, atomically.

    For derived scans (a crop, a resampled or synthetic volume) and tests; NIfTI with nibabel,
    NRRD/MHA/MHD with SimpleITK.

    Raises:
        InputError: the array does not match the geometry or is not real-valued.
        OutputError: unsupported format, or the file cannot be written.
    """
    image = np.asarray(image)
    if tuple(image.shape) != tuple(geometry.shape):
        raise InputError(f"image shape {image.shape} does not match the geometry {geometry.shape}.", path=path)
    if not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)):
        raise InputError(f"expected real-valued intensities, got dtype {image.dtype}.", path=path)
    p = Path(path)
    if file_suffix(p) not in SUPPORTED_SUFFIXES:
        raise OutputError(f"unsupported output format '{p.suffix}'; use .nii, .nii.gz, .nrrd, .mha or .mhd.", path=p)
    return _write_volume(p, image, geometry)


def _seg_source(p: Path, source) -> Path:
    """The DICOM series folder a ``.dcm`` SEG output refers to, or the one-line refusal."""
    if source is None or not Path(source).is_dir():
        raise OutputError(f"a .dcm output is a DICOM SEG, which references the DICOM series it was made on, and the scan "
                          f"{source or '(none given)'} is not a DICOM series; write .nii.gz, .nrrd or .mha instead, or "
                          "give the series folder as the image.", path=p)
    return Path(source)


def _write_volume(p: Path, arr: np.ndarray, geometry: Geometry) -> Path:
    suffix = file_suffix(p)
    check_writable(p)
    with _sitk_errors(p):
        return atomic_output(p, lambda tmp: _write_array(tmp, suffix, arr, geometry),
                             verify=lambda tmp: verify_volume(tmp, arr.shape, target=p))


def verify_volume(path: str | os.PathLike, shape, components: int = 1, target: str | os.PathLike | None = None) -> None:
    """Read a volume file just written back, cheaply: its header, then the count of its voxel bytes.

    A library writer may fail without raising (SimpleITK on a full disk leaves a 0-byte
    header, a header without its data, or a truncated compressed stream, and returns
    normally), so every file :func:`write_labels`, :func:`write_image` and
    :func:`write_probabilities` write passes this before it replaces anything. The header is
    read with nibabel (NIfTI) or SimpleITK's ``ReadImageInformation`` and must give the shape
    and components written; the voxel bytes (the data file of a ``.mhd``/``.nhdr``, the rest of
    the file otherwise) are counted, decompressed as a stream when compressed
    (:func:`~napari_sparseseg.io.atomic.payload_bytes`), and must be all there. Memory stays
    small whatever the volume's size; nothing is decoded into an array.

    Args:
        path: the file written (for a header, its data file is found through it).
        shape: the array's shape, array order ``(k, j, i)``.
        components: values per voxel (a probability map's classes).
        target: the path the user named (for the message), default ``path``.

    Raises:
        OutputError: the file is empty, its header unreadable or not what was written, or its
            voxel data short or damaged.
    """
    p, target = Path(path), Path(target or path)
    shape = tuple(int(n) for n in shape)

    def bad(detail: str) -> OutputError:
        return OutputError(f"the file did not verify after writing ({detail}); the disk may be full. The previous file, "
                           "if any, is unchanged. Free some space or choose a writable folder.", path=target)

    check_written(p, target=target)
    try:
        if file_suffix(p) in NIFTI_SUFFIXES:
            found, need, data, offset, compressed = _nifti_layout(p, shape, components)
        else:
            found, need, data, offset, compressed = _sitk_layout(p, shape, components)
    except OutputError:
        raise
    except Exception as exc:  # nibabel/SimpleITK: any failure to read the header back
        raise bad(f"its header cannot be read back: {' '.join(str(exc).split())[:160]}") from exc
    if found is not None:
        raise bad(f"the header read back gives {found}")
    try:
        got = payload_bytes(data, offset, compressed)
    except OutputError as exc:
        raise bad(exc.message.split(";")[0]) from exc
    except OSError as exc:
        raise bad(f"its data cannot be read back: {exc.strerror or exc}") from exc
    if got < need:
        raise bad(f"{got} of its {need} voxel bytes are there")


def _nifti_layout(p: Path, shape: tuple, components: int) -> tuple:
    """``(mismatch or None, voxel bytes needed, data file, offset, compressed)`` of a NIfTI file."""
    import nibabel as nib

    img = nib.load(str(p))
    want = shape[::-1] + ((components,) if components > 1 else ())
    got = tuple(int(n) for n in img.shape)
    offset = int(img.header.get("vox_offset", 0) or 0)
    need = offset + int(np.prod(got, dtype=np.int64)) * img.get_data_dtype().itemsize
    return (None if got == want else f"size {got}, not {want}"), need, p, 0, p.name.lower().endswith(".gz")


def _sitk_layout(p: Path, shape: tuple, components: int) -> tuple:
    """``(mismatch or None, voxel bytes needed, data file, offset, compressed)`` of a SimpleITK file."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(p))
    with quiet_native_output():
        reader.ReadImageInformation()
    size = tuple(int(n) for n in reader.GetSize())
    comps = int(reader.GetNumberOfComponents())
    if size != shape[::-1] or comps != components:
        return f"size {size} x {comps}, not {shape[::-1]} x {components}", 0, p, 0, False
    pixel = sitk.GetPixelIDValueAsString(reader.GetPixelID())
    itemsize = next((b for k, b in _SITK_BYTES.items() if k in pixel), 1)
    need = int(np.prod(size, dtype=np.int64)) * comps * itemsize
    suffix = file_suffix(p)
    head = p.read_bytes()[:65536]
    if suffix in (".mhd", ".nhdr"):
        data, offset = data_file_of(p), 0
        if data is None:
            raise OutputError("the header names no data file", path=p)
    else:
        data = p
        end = (head.find(b"\n\n") + 2 if suffix == ".nrrd"
               else head.lower().find(b"elementdatafile"))
        if end < (2 if suffix == ".nrrd" else 0):
            return "no end of header", 0, p, 0, False
        offset = end if suffix == ".nrrd" else head.index(b"\n", end) + 1
    return None, need, data, offset, _header_says_compressed(p)


def write_probabilities(path: str | os.PathLike, probs_uint8: np.ndarray, geometry: Geometry,
                        source: str | os.PathLike | None = None, class_names=None) -> Path:
    """Write class probabilities ``(C, k, j, i)`` stored as uint8 (p * 255).

    NIfTI gets a 4-D image with ``scl_slope = 1/255`` so readers see probabilities in [0, 1];
    the SimpleITK formats get a vector image of uint8 (divide by 255); a ``.dcm`` file a
    FRACTIONAL DICOM SEG of ``source`` (a DICOM series folder; one segment per class but background).
    """
    p = Path(path)
    if is_seg_path(p):
        return write_dicom_seg_probabilities(p, np.asarray(probs_uint8), _seg_source(p, source), class_names,
                                             geometry=geometry)
    suffix = file_suffix(p)
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
            _setsitk_geometry(img, geometry)
            sitk.WriteImage(img, str(tmp), useCompression=True)

    with _sitk_errors(p):
        return atomic_output(p, write, verify=lambda tmp: verify_volume(tmp, probs_uint8.shape[1:], probs_uint8.shape[0],
                                                                        target=p))


@contextmanager
def _keep_locale():
    """GDCM (SimpleITK's DICOM layer) leaves the process locale at "C" after writing a series: put it back."""
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


def _setsitk_geometry(img, geometry: Geometry) -> None:
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
        _setsitk_geometry(img, geometry)
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
    study_uid, frame_uid = series_uid + ".1", series_uid + ".2"
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
                "0020|0052": frame_uid,  # a frame of reference: what a DICOM SEG of this series is placed in
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
            check_written(tmp / f"slice_{z:04d}.dcm", "DICOM slice", target=folder)  # GDCM may fail silently

    # GDCM's writer sets the process's C locale to "C" and leaves it so; Python then decodes
    # subprocess output as ASCII. Put the locale back.
    with _keep_locale():
        return replace_folder(folder, build, check=_check_empty_folder)


def _check_empty_folder(folder: Path) -> None:
    if os.path.lexists(folder) and not folder.is_dir():
        raise OutputError("a file exists where the DICOM output folder should go; choose another path.", path=folder)
    if folder.is_dir() and any(folder.iterdir()):
        raise OutputError("the DICOM output folder is not empty; choose a new or empty folder.", path=folder)
