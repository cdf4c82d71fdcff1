"""DICOM Segmentation objects (SEG): a mask of a DICOM series out, a SEG onto the series' grid in.

Out (:func:`write_dicom_seg`, :func:`write_dicom_seg_probabilities`): one multi-frame file,
written with highdicom, that references the series it was made on (its study, series, frame of
reference and, frame by frame, the slice each frame derives from). Each class but background
is a segment: segment number ``c`` is mask value ``c``, labelled with the class name and coded
with SNOMED CT where the name is a known structure (``liver``: Anatomical Structure / Liver;
``tumor``: Morphologically Abnormal Structure / Neoplasm), else the generic Tissue / Tissue.
Masks are ``BINARY``; probabilities are ``FRACTIONAL`` (``PROBABILITY``, 255 = 1.0), one
segment per class but background. The algorithm is identified as napari-sparseseg and its
version. Empty frames are left out, as highdicom does by default. The file is written under a
temporary name, read back onto the series' grid and compared voxel by voxel with what was
meant, then renamed into place (:func:`~napari_sparseseg.io.atomic.atomic_output`).

In (:func:`read_dicom_seg`): the SEG must reference the scan (its series, or the scan's slices
frame by frame) and lie in its frame of reference; each frame is placed by its plane position
(cross-checked with the slice it references) on the scan's grid, which needs the scan's
orientation and pixel spacing (a frame may cover part of a slice). Anything else is refused
with one line saying what differs. Segments become classes by their labels: a segment labelled
``background`` (or the first class name) is background; with a class table, the other labels
must name its classes; without one, the segments are the classes 1, 2, ... in segment-number
order. Where segments overlap, the higher segment number wins; a FRACTIONAL segment counts
where it is above one half.

highdicom (and pydicom under it) is the optional ``dicom`` extra: without it, asking for a SEG
says how to install it. ``core`` never sees any of this; the functions here take and return
plain arrays on the scan's grid (array order ``(k, j, i)``).
"""

from __future__ import annotations

import importlib.util
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_sparseseg import __version__
from napari_sparseseg.core.annotations.labels import MAX_CLASSES, SCRIBBLE_KINDS, label_dtype
from napari_sparseseg.core.base.config import MAX_SCAN_VOXELS
from napari_sparseseg.core.base.errors import InputError, OutputError, SparseSegError
from napari_sparseseg.io.atomic import atomic_output, check_written
from napari_sparseseg.io.dicom import _is_dicom_candidate, read_dicom_series
from napari_sparseseg.io.geometry import Geometry
from napari_sparseseg.io.paths import SUPPORTED_SUFFIXES, file_suffix

__all__ = [
    "SEG_SOP_CLASS_UID",
    "SEG_SUFFIX",
    "DicomSeries",
    "dicom_series",
    "is_dicom_seg",
    "is_seg_path",
    "made_on",
    "read_dicom_seg",
    "require_highdicom",
    "seg_class_names",
    "segment_codes",
    "write_dicom_seg",
    "write_dicom_seg_probabilities",
]

SEG_SUFFIX = ".dcm"
SEG_SOP_CLASS_UID = "1.2.840.10008.5.1.4.1.1.66.4"
INSTALL_HINT = "install it with: pip install 'napari-sparseseg[dicom]' (highdicom and pydicom)"
_LPS = np.array([-1.0, -1.0, 1.0])
_ORIENTATION_TOL = 1e-3  # direction cosines
_INDEX_TOL = 0.1  # a frame's position must fall within a tenth of a voxel of a voxel corner of the grid
_STROKE_KINDS = (*SCRIBBLE_KINDS, "strokes")

# Class name (lower case, words) -> (category, type): pydicom's SNOMED CT keywords (codes.SCT).
_ANATOMY, _TISSUE, _ABNORMAL = "AnatomicalStructure", "Tissue", "MorphologicallyAbnormalStructure"
_CODES = {
    **{name: (_ANATOMY, keyword) for keyword, names in {
        "Liver": ("liver",), "Spleen": ("spleen",), "Kidney": ("kidney", "kidneys"), "Pancreas": ("pancreas",),
        "Stomach": ("stomach",), "Aorta": ("aorta",), "Lung": ("lung", "lungs"), "Heart": ("heart",),
        "Brain": ("brain",), "Bladder": ("bladder", "urinary bladder"), "Prostate": ("prostate",),
        "Gallbladder": ("gallbladder", "gall bladder"), "Vertebra": ("vertebra", "vertebrae"),
        "Esophagus": ("esophagus", "oesophagus"), "Colon": ("colon",), "SmallIntestine": ("small intestine", "small bowel"),
        "Duodenum": ("duodenum",), "AdrenalGland": ("adrenal gland", "adrenal", "adrenals"), "Trachea": ("trachea",),
        "InferiorVenaCava": ("inferior vena cava", "ivc"), "PortalVein": ("portal vein",), "Rectum": ("rectum",),
        "Femur": ("femur",), "Skull": ("skull",), "Rib": ("rib", "ribs"), "Spine": ("spine",),
        "SpinalCord": ("spinal cord",), "Thyroid": ("thyroid", "thyroid gland"), "Uterus": ("uterus",),
        "Artery": ("artery",), "Vein": ("vein",), "BloodVessel": ("vessel", "vessels", "blood vessel"), "Eye": ("eye",),
        "Breast": ("breast",), "LymphNode": ("lymph node", "lymph nodes"),
    }.items() for name in names},
    **{name: (_TISSUE, keyword) for keyword, names in {
        "Bone": ("bone",), "Muscle": ("muscle",), "AdiposeTissue": ("fat", "adipose tissue"), "Skin": ("skin",),
        "WhiteMatter": ("white matter",), "GrayMatter": ("gray matter", "grey matter"), "Cartilage": ("cartilage",),
        "Tendon": ("tendon",), "Ligament": ("ligament",), "Tissue": ("tissue", "soft tissue"),
    }.items() for name in names},
    **{name: (_ABNORMAL, keyword) for keyword, names in {
        "Neoplasm": ("tumor", "tumour", "neoplasm"), "Lesion": ("lesion", "lesions"), "Mass": ("mass",),
        "Cyst": ("cyst",), "Nodule": ("nodule",), "Edema": ("edema", "oedema"), "Necrosis": ("necrosis",),
        "Hemorrhage": ("hemorrhage", "haemorrhage", "bleeding"),
    }.items() for name in names},
}
_SIDES = re.compile(r"^(left|right|l|r)[\s_-]+|[\s_-]+(left|right|l|r)$")


def require_highdicom(what: str, path=None) -> None:
    """Raise unless highdicom is installed (looked up, not imported: checked before any work, and cheaply).

    Raises:
        OutputError: ``"{what} needs highdicom, which is not installed; install it with: ..."``.
    """
    if importlib.util.find_spec("highdicom") is None:
        raise OutputError(f"{what} needs highdicom, which is not installed; {INSTALL_HINT}.", path=path)


def _highdicom():
    try:
        import highdicom
    except ImportError as exc:
        raise OutputError(f"writing a DICOM SEG needs highdicom, which is not installed; {INSTALL_HINT}.") from exc
    return highdicom


def _pydicom():
    try:
        import pydicom
    except ImportError as exc:
        raise InputError(f"reading a DICOM SEG needs pydicom, which is not installed; {INSTALL_HINT}.") from exc
    return pydicom


# ----------------------------------------------------------------------------- paths
def is_seg_path(path: str | os.PathLike) -> bool:
    """Whether an output path asks for a DICOM SEG: a file name ending in ``.dcm``."""
    p = Path(path)
    return p.name.lower().endswith(SEG_SUFFIX) and not p.is_dir()


def is_dicom_seg(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a DICOM Segmentation file (read from its header; ``False`` for folders and other files).

    A ``.dcm`` file is taken as a SEG when pydicom is missing, so that reading it says how to install it.
    """
    p = Path(path)
    if not p.is_file() or file_suffix(p) in SUPPORTED_SUFFIXES:
        return False
    try:
        import pydicom
    except ImportError:
        return p.name.lower().endswith(SEG_SUFFIX)
    try:
        ds = pydicom.dcmread(p, stop_before_pixels=True, specific_tags=["SOPClassUID"])
    except Exception:  # not DICOM at all (pydicom raises many kinds)
        return False
    return str(getattr(ds, "SOPClassUID", "")) == SEG_SOP_CLASS_UID


# ----------------------------------------------------------------------------- the scan
@dataclass(frozen=True)
class DicomSeries:
    """A DICOM series as a SEG refers to it: its UIDs and its slice files in array order.

    Attributes:
        folder: the series folder.
        geometry: the scan's grid (as :func:`~napari_sparseseg.io.read_image` reads it).
        headers: one pydicom dataset (no pixels) per array index ``k``.
        series_uid, study_uid, frame_of_reference_uid: the series' UIDs (the last may be ``""``).
    """

    folder: Path
    geometry: Geometry
    headers: tuple
    series_uid: str
    study_uid: str
    frame_of_reference_uid: str

    @property
    def instance_uids(self) -> list[str]:
        """SOP Instance UID of each slice, in array order ``k``."""
        return [str(h.SOPInstanceUID) for h in self.headers]

    def plane(self) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
        """``(row direction, column direction, (row spacing, column spacing))`` in DICOM's LPS terms.

        A DICOM row runs along the array axis ``i`` (columns), a column along ``j`` (rows).
        """
        d = self.geometry.direction
        return _LPS * d[:, 2], _LPS * d[:, 1], (self.geometry.spacing[1], self.geometry.spacing[2])


def dicom_series(folder: str | os.PathLike, geometry: Geometry | None = None) -> DicomSeries:
    """The series in ``folder`` with its slices matched to the scan's array indices by position.

    Args:
        folder: a DICOM series folder (one series, as :func:`~napari_sparseseg.io.read_image` accepts).
        geometry: the scan's geometry if already read (else the series is read for it).

    Raises:
        InputError: not a DICOM series folder (the image is a file), pydicom missing, or the
            slice files do not match the grid one to one.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("a DICOM SEG belongs to a DICOM series, and this scan is a file, not a DICOM series folder; "
                         "give the series folder as the image, or use .nii.gz/.nrrd labels.", path=folder)
    pydicom = _pydicom()
    if geometry is None:
        geometry = read_dicom_series(folder)[1]
    inv = np.linalg.inv(geometry.affine)
    slots: list = [None] * geometry.shape[0]
    series_uid = None
    for p in sorted(folder.iterdir()):
        if not _is_dicom_candidate(p):
            continue
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=True)
        except Exception as exc:
            raise InputError(f"the slice file {p.name} cannot be read by pydicom ({exc}).", path=folder) from exc
        if series_uid is None:
            series_uid = str(ds.SeriesInstanceUID)
        elif str(ds.SeriesInstanceUID) != series_uid:
            continue  # read_dicom_series refuses mixed folders; only its series counts here
        k = _slice_index(ds, inv)
        if k is None or not 0 <= k < len(slots) or slots[k] is not None:
            raise InputError(f"the slice file {p.name} does not match one slice of the scan's grid; the series cannot "
                             "be referenced slice by slice.", path=folder)
        slots[k] = ds
    if any(s is None for s in slots):
        raise InputError(f"{sum(s is None for s in slots)} slice(s) of the scan have no slice file; the series cannot be "
                         "referenced slice by slice.", path=folder)
    first = slots[0]
    return DicomSeries(folder, geometry, tuple(slots), str(first.SeriesInstanceUID), str(first.StudyInstanceUID),
                       str(getattr(first, "FrameOfReferenceUID", "") or ""))


def _slice_index(ds, inv: np.ndarray) -> int | None:
    """The array index ``k`` of a slice header by its position; ``None`` when it lies off the grid."""
    try:
        lps = np.asarray([float(v) for v in ds.ImagePositionPatient], float)
    except (AttributeError, TypeError, ValueError):
        return None
    if lps.shape != (3,) or not np.all(np.isfinite(lps)):
        return None
    kji = (inv @ np.append(_LPS * lps, 1.0))[:3]
    if np.abs(kji - np.round(kji)).max() > _INDEX_TOL or np.abs(kji[1:]).max() > _INDEX_TOL:
        return None
    return int(np.round(kji[0]))


def _series(scan, geometry: Geometry | None = None) -> DicomSeries:
    return scan if isinstance(scan, DicomSeries) else dicom_series(scan, geometry)


# ----------------------------------------------------------------------------- codes
def segment_codes(name: str) -> tuple[str, str]:
    """SNOMED CT keywords of pydicom ``(category, type)`` for a class name: a known structure, else Tissue/Tissue.

    ``"left kidney"`` is a Kidney (the label keeps the side); unknown names are generic
    ``("Tissue", "Tissue")``.
    """
    words = " ".join(re.sub(r"[_\-]+", " ", str(name)).lower().split())
    for candidate in (words, _SIDES.sub("", words).strip()):
        if candidate in _CODES:
            return _CODES[candidate]
    return _TISSUE, _TISSUE


def _descriptions(hd, names: list[str], algorithm_type):
    from pydicom.sr.codedict import codes

    algorithm = hd.AlgorithmIdentificationSequence(name="napari-sparseseg", version=__version__,
                                                   family=codes.cid7162.ArtificialIntelligence,
                                                   source="napari-sparseseg (MONAI 3-D U-Net trained on sparse strokes)")
    out = []
    for number, name in enumerate(names, start=1):
        category, kind = segment_codes(name)
        out.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=str(name)[:64], segmented_property_category=getattr(codes.SCT, category),
            segmented_property_type=getattr(codes.SCT, kind), algorithm_type=algorithm_type,
            algorithm_identification=algorithm, tracking_id=str(name)[:64], tracking_uid=hd.UID()))
    return out


def _class_table(class_names, num_classes: int) -> list[str]:
    names = [str(n) for n in class_names] if class_names else ["background"]
    return names + [f"structure {c}" for c in range(len(names), num_classes)]


# ----------------------------------------------------------------------------- write
def write_dicom_seg(path: str | os.PathLike, mask: np.ndarray, scan, class_names=None,
                    geometry: Geometry | None = None) -> Path:
    """Write a mask of a DICOM series as a BINARY DICOM SEG referencing the series, atomically and verified.

    Args:
        path: the ``.dcm`` file to write.
        mask: the class of each voxel (0 = background), array order ``(k, j, i)`` on the scan's grid.
        scan: the series folder the mask was made on, or its :class:`DicomSeries`.
        class_names: background first; segment ``c`` is labelled ``class_names[c]`` (missing
            names are ``structure c``). Every class gets a segment, empty or not.
        geometry: the scan's geometry if already read.

    Returns:
        ``path``.

    Raises:
        InputError: the scan is not a DICOM series, or the mask is not on its grid.
        OutputError: highdicom is missing, the series cannot carry a SEG (no frame of
            reference), or the file cannot be written or did not verify.
    """
    series = _series(scan, geometry)
    mask = np.asarray(mask)
    _check_on_grid(mask.shape, series, path)
    if not np.issubdtype(mask.dtype, np.integer) or (mask.size and mask.min() < 0):
        raise InputError("a DICOM SEG mask must hold non-negative integer classes.", path=path)
    top = int(mask.max(initial=0))
    names = _class_table(class_names, max(top + 1, len(class_names or ()), 2))
    hd = _highdicom()
    descriptions = _descriptions(hd, names[1:], hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC)
    pixels = mask.astype(label_dtype(top), copy=False)

    def build():
        return _segmentation(hd, series, pixels, hd.seg.SegmentationTypeValues.BINARY, descriptions,
                             omit_empty=bool(top), description="napari-sparseseg mask")

    def verify(tmp: Path) -> None:
        back = _segment_numbers(_open(_pydicom(), tmp, path), series, path)
        if not np.array_equal(back, mask):
            raise _unverified(path, f"{int((back != mask).sum())} voxels read back differ")

    return _write(path, build, verify)


def write_dicom_seg_probabilities(path: str | os.PathLike, probabilities: np.ndarray, scan, class_names=None,
                                  geometry: Geometry | None = None) -> Path:
    """Write class probabilities ``(C, k, j, i)`` (uint8, p * 255) as a FRACTIONAL DICOM SEG.

    Segment ``c`` (for ``c = 1..C-1``) is the probability of class ``c``, stored as 0..255
    (Maximum Fractional Value 255, type PROBABILITY); background's is one minus their sum and
    is not written. Verified by reading every frame back.

    Raises:
        InputError, OutputError: as :func:`write_dicom_seg`.
    """
    series = _series(scan, geometry)
    probs = np.asarray(probabilities)
    if probs.ndim != 4 or probs.dtype != np.uint8 or probs.shape[0] < 2:
        raise InputError(f"probabilities must be uint8 (C, k, j, i) with C >= 2, got {probs.dtype} {probs.shape}.",
                         path=path)
    _check_on_grid(probs.shape[1:], series, path)
    names = _class_table(class_names, probs.shape[0])[: probs.shape[0]]
    hd = _highdicom()
    descriptions = _descriptions(hd, names[1:], hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC)

    def build():
        stacked = np.moveaxis(probs[1:], 0, -1).astype(np.float32) / np.float32(255.0)
        return _segmentation(hd, series, stacked, hd.seg.SegmentationTypeValues.FRACTIONAL, descriptions,
                             omit_empty=bool(probs[1:].any()), description="napari-sparseseg probabilities")

    def verify(tmp: Path) -> None:
        pydicom = _pydicom()
        ds = _open(pydicom, tmp, path)
        got = np.zeros_like(probs[1:])
        try:
            for number, k, j0, i0, frame in _placed_frames(ds, series, tmp):
                got[number - 1, k, j0:j0 + frame.shape[0], i0:i0 + frame.shape[1]] = frame
        except SparseSegError:
            raise
        except Exception as exc:  # a damaged file: see _segment_numbers
            raise _unverified(path, f"it cannot be read back: {type(exc).__name__}") from exc
        if not np.array_equal(got, probs[1:]):
            raise _unverified(path, f"{int((got != probs[1:]).sum())} values read back differ")

    return _write(path, build, verify)


def _check_on_grid(shape, series: DicomSeries, path) -> None:
    if tuple(shape) != tuple(series.geometry.shape):
        raise InputError(f"the volume {tuple(shape)} is not on the scan's grid {series.geometry.shape}; a DICOM SEG must "
                         "cover the series it references.", path=path)
    rows, cols = int(shape[1]), int(shape[2])
    if rows > 65535 or cols > 65535:
        raise OutputError(f"DICOM frames hold at most 65535 rows and columns, the scan has {rows}x{cols}.", path=path)


def _segmentation(hd, series: DicomSeries, pixels, seg_type, descriptions, omit_empty: bool, description: str):
    if not series.frame_of_reference_uid:
        raise OutputError("the series has no Frame of Reference UID (0020,0052), so a DICOM SEG cannot place its frames "
                          "in it; write .nii.gz/.nrrd instead.", path=series.folder)
    try:
        number = int(getattr(series.headers[0], "SeriesNumber", None) or 0)
    except (TypeError, ValueError):
        number = 0
    fractional = seg_type == hd.seg.SegmentationTypeValues.FRACTIONAL
    return hd.seg.Segmentation(
        source_images=list(series.headers), pixel_array=pixels, segmentation_type=seg_type,
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=min(number + 1000, 2**31 - 1),
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="napari-sparseseg",
        manufacturer_model_name="napari-sparseseg", software_versions=__version__, device_serial_number="0",
        fractional_type=hd.seg.SegmentationFractionalTypeValues.PROBABILITY if fractional else None,
        max_fractional_value=255, content_label="SPARSESEG", content_description=description[:64],
        series_description=description[:64], omit_empty_frames=omit_empty)


def _unverified(path, detail: str) -> OutputError:
    return OutputError(f"the DICOM SEG did not verify after writing ({detail}); the previous file, if any, is unchanged.",
                       path=path)


def _write(path, build, verify) -> Path:
    p = Path(path)
    if not p.name.lower().endswith(SEG_SUFFIX) or len(p.name) <= len(SEG_SUFFIX):
        raise OutputError(f"a DICOM SEG is written to a file named NAME{SEG_SUFFIX}.", path=p)
    try:
        seg = build()
    except SparseSegError:
        raise
    except (ValueError, TypeError, AttributeError, KeyError) as exc:  # highdicom's refusals of the source headers
        raise OutputError(f"highdicom cannot build a DICOM SEG from this series ({' '.join(str(exc).split())[:200]}).",
                          path=p) from exc

    def write(tmp: Path) -> None:
        seg.save_as(tmp, enforce_file_format=True)
        check_written(tmp, "DICOM SEG", target=p)

    try:
        return atomic_output(p, write, verify=verify)
    except OutputError:
        raise
    except InputError as exc:  # the file read back is not what was written
        raise _unverified(p, exc.message.rstrip(".")) from exc


# ----------------------------------------------------------------------------- read
def _open(pydicom, path, target=None):
    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:
        raise InputError(f"cannot read the DICOM file ({' '.join(str(exc).split())[:160]}); is it damaged?",
                         path=target or path) from exc
    if str(getattr(ds, "SOPClassUID", "")) != SEG_SOP_CLASS_UID:
        raise InputError(f"not a DICOM Segmentation (its SOP class is {getattr(ds, 'SOPClassUID', 'missing')}); give a "
                         "SEG file, or the labels as .nii.gz/.nrrd.", path=target or path)
    return ds


@contextmanager
def _damaged(path):
    """One InputError for a damaged SEG: pydicom parses sequences lazily, so it fails while it is read, in many ways."""
    try:
        yield
    except SparseSegError:
        raise
    except Exception as exc:
        raise InputError(f"the DICOM SEG is damaged ({type(exc).__name__}: {' '.join(str(exc).split())[:120]}); export "
                         "it again.", path=path) from exc


def _segments(ds, path) -> dict[int, str]:
    found = {}
    for item in getattr(ds, "SegmentSequence", []) or []:
        try:
            found[int(item.SegmentNumber)] = str(getattr(item, "SegmentLabel", "") or f"segment {item.SegmentNumber}")
        except (AttributeError, TypeError, ValueError):
            continue
    if not found:
        raise InputError("the DICOM SEG describes no segments (Segment Sequence); it is damaged.", path=path)
    return dict(sorted(found.items()))


def seg_class_names(path: str | os.PathLike) -> list[str]:
    """The classes a SEG holds, background first: its segment labels in segment-number order."""
    ds = _open(_pydicom(), path)
    with _damaged(path):
        labels = list(_segments(ds, path).values())
    background = [n for n in labels if n.strip().lower() == "background"]
    return (background or ["background"]) + [n for n in labels if n.strip().lower() != "background"]


def made_on(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """Whether the SEG at ``path`` names the series in ``folder`` (a DICOM series folder) among its sources.

    Reads two headers only (the SEG's and one slice's); ``False`` for anything unreadable.
    """
    pydicom = _pydicom()
    folder = Path(folder)
    try:
        refs = _referenced(pydicom.dcmread(path, stop_before_pixels=True))[0]
        first = next((p for p in sorted(folder.iterdir()) if _is_dicom_candidate(p)), None)
        uid = str(pydicom.dcmread(first, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"]).SeriesInstanceUID)
    except Exception:  # an unreadable file or folder is not the scan
        return False
    return uid in refs


def _referenced(ds) -> tuple[set, set]:
    """``(series UIDs, SOP instance UIDs)`` the SEG names as its sources."""
    series, instances = set(), set()
    for item in getattr(ds, "ReferencedSeriesSequence", []) or []:
        if "SeriesInstanceUID" in item:
            series.add(str(item.SeriesInstanceUID))
        for inst in getattr(item, "ReferencedInstanceSequence", []) or []:
            if "ReferencedSOPInstanceUID" in inst:
                instances.add(str(inst.ReferencedSOPInstanceUID))
    return series, instances


def _frame_item(ds, f: int, name: str):
    """The functional group ``name`` of frame ``f``: per-frame first, then shared."""
    per_frame = getattr(ds, "PerFrameFunctionalGroupsSequence", None)
    shared = getattr(ds, "SharedFunctionalGroupsSequence", None)
    for group in (per_frame[f] if per_frame and f < len(per_frame) else None, shared[0] if shared else None):
        seq = group.get(name) if group is not None else None
        if seq:
            return seq[0]
    return None


def _frame_source(ds, f: int) -> str | None:
    groups = getattr(ds, "PerFrameFunctionalGroupsSequence", None)
    if not groups:
        return None
    for der in groups[f].get("DerivationImageSequence", []) or []:
        for src in der.get("SourceImageSequence", []) or []:
            if "ReferencedSOPInstanceUID" in src:
                return str(src.ReferencedSOPInstanceUID)
    return None


def _placed_frames(ds, series: DicomSeries, path):
    """Yield ``(segment number, k, j0, i0, frame pixels)`` for every frame of the SEG, placed on the scan's grid.

    Raises:
        InputError: the SEG does not reference the scan, lies in another frame of reference,
            has another orientation or pixel spacing, or a frame falls off the grid (each says which).
    """
    folder = series.folder
    ref_series, ref_instances = _referenced(ds)
    uids = series.instance_uids
    frame_sources = [_frame_source(ds, f) for f in range(int(getattr(ds, "NumberOfFrames", 1) or 1))]
    ours = set(uids)
    if series.series_uid not in ref_series and not (ours & (ref_instances | {s for s in frame_sources if s})):
        named = ", ".join(sorted(ref_series)) or "none named"
        raise InputError(f"the DICOM SEG does not reference this scan: it was made on series {named}, the scan {folder} "
                         f"is series {series.series_uid}; open it with the scan it was made on.", path=path)
    frame_of_reference = str(getattr(ds, "FrameOfReferenceUID", "") or "")
    if frame_of_reference and series.frame_of_reference_uid and frame_of_reference != series.frame_of_reference_uid:
        raise InputError(f"the DICOM SEG lies in another frame of reference ({frame_of_reference}) than the scan "
                         f"({series.frame_of_reference_uid}); it cannot be placed on it.", path=path)
    segments = _segments(ds, path)
    rows, cols = int(ds.Rows), int(ds.Columns)
    frames = len(frame_sources)
    if frames * rows * cols > MAX_SCAN_VOXELS or frames > len(segments) * series.geometry.shape[0]:
        raise InputError(f"the DICOM SEG claims {frames} frames of {rows}x{cols}, more than {len(segments)} segments of "
                         f"this scan can hold; it is damaged or not of this scan.", path=path)
    row_dir, col_dir, (row_mm, col_mm) = series.plane()
    inv = np.linalg.inv(series.geometry.affine)
    index_of = {uid: k for k, uid in enumerate(uids)}
    shape = series.geometry.shape
    try:
        pixels = ds.pixel_array
    except Exception as exc:
        raise InputError(f"cannot decode the DICOM SEG's frames ({' '.join(str(exc).split())[:160]}).", path=path) from exc
    pixels = pixels.reshape(frames, rows, cols)
    binary = str(getattr(ds, "SegmentationType", "BINARY")).upper() != "FRACTIONAL"
    for f in range(frames):
        ident = _frame_item(ds, f, "SegmentIdentificationSequence")
        try:
            number = int(ident.ReferencedSegmentNumber)
        except (AttributeError, TypeError, ValueError):
            raise InputError(f"frame {f + 1} of the DICOM SEG names no segment; it is damaged.", path=path) from None
        if number not in segments:
            raise InputError(f"frame {f + 1} of the DICOM SEG belongs to segment {number}, which it does not describe.",
                             path=path)
        orient = _frame_item(ds, f, "PlaneOrientationSequence")
        measures = _frame_item(ds, f, "PixelMeasuresSequence")
        if orient is not None:
            o = np.asarray([float(v) for v in orient.ImageOrientationPatient], float)
            if np.abs(o[:3] - row_dir).max() > _ORIENTATION_TOL or np.abs(o[3:] - col_dir).max() > _ORIENTATION_TOL:
                raise InputError(f"the DICOM SEG's frames are oriented ({', '.join(f'{v:.3f}' for v in o)}) unlike the "
                                 f"scan's slices ({', '.join(f'{v:.3f}' for v in (*row_dir, *col_dir))}); a SEG is placed on "
                                 "the scan's own slices, and resampling it is not supported.", path=path)
        if measures is not None and "PixelSpacing" in measures:
            s = [float(v) for v in measures.PixelSpacing]
            if not np.allclose(s, (row_mm, col_mm), rtol=1e-3, atol=1e-4):
                raise InputError(f"the DICOM SEG's pixel spacing {s[0]:g} x {s[1]:g} mm differs from the scan's "
                                 f"{row_mm:g} x {col_mm:g} mm; resampling it is not supported.", path=path)
        source = frame_sources[f]
        position = _frame_item(ds, f, "PlanePositionSequence")
        if position is not None and "ImagePositionPatient" in position:
            lps = np.asarray([float(v) for v in position.ImagePositionPatient], float)
            kji = (inv @ np.append(_LPS * lps, 1.0))[:3]
            near = np.round(kji)
            if np.abs(kji - near).max() > _INDEX_TOL:
                raise InputError(f"frame {f + 1} of the DICOM SEG lies between the scan's voxels (at array index "
                                 f"{', '.join(f'{v:.2f}' for v in kji)}); it was not made on this grid.", path=path)
            k, j0, i0 = (int(v) for v in near)
            if source in index_of and index_of[source] != k:
                raise InputError(f"frame {f + 1} of the DICOM SEG references slice {index_of[source]} of the scan but lies "
                                 f"at slice {k}; the SEG's positions and references disagree.", path=path)
        elif source in index_of:
            k, j0, i0 = index_of[source], 0, 0
        else:
            raise InputError(f"frame {f + 1} of the DICOM SEG has no position and references no slice of the scan; "
                             "it cannot be placed.", path=path)
        if not (0 <= k < shape[0] and 0 <= j0 and j0 + rows <= shape[1] and 0 <= i0 and i0 + cols <= shape[2]):
            raise InputError(f"frame {f + 1} of the DICOM SEG falls outside the scan's grid (slice {k}, rows "
                             f"{j0}..{j0 + rows - 1}, columns {i0}..{i0 + cols - 1} of {shape}).", path=path)
        frame = pixels[f]
        yield number, k, j0, i0, (frame if not binary else frame.astype(bool))


def read_dicom_seg(path: str | os.PathLike, scan, class_names=None, what: str = "mask",
                   geometry: Geometry | None = None) -> np.ndarray:
    """Read a DICOM SEG onto the grid of the DICOM series it was made on.

    Args:
        path: the SEG file.
        scan: the series folder, or its :class:`DicomSeries`.
        class_names: the class table (background first), if known: segments are matched to
            it by label (case-insensitive). Without it, the segments are classes 1, 2, ... in
            segment-number order, and a segment labelled ``background`` is background.
        what: ``"mask"`` (and other label kinds): the class of each voxel, 0 where no segment
            (or the background segment) covers it. ``"scribbles"``/``"corrections"``/``"strokes"``:
            class + 1 where a segment covers the voxel (1 for the background segment), 0 elsewhere.
        geometry: the scan's geometry if already read.

    Returns:
        Labels on the scan's grid, array order ``(k, j, i)``, the smallest unsigned dtype.

    Raises:
        InputError: pydicom missing, not a SEG, not of this scan, unplaceable frames, or a
            segment label that is not one of ``class_names`` (all listed).
    """
    target = path
    series = _series(scan, geometry)
    ds = _open(_pydicom(), path, target)
    with _damaged(target):
        classes = _segment_classes(_segments(ds, target), class_names, target)
        strokes = what in _STROKE_KINDS
        top = max(classes.values(), default=0) + (1 if strokes else 0)
        if strokes and top > MAX_CLASSES:
            raise InputError(f"the DICOM SEG has {top - 1} classes; scribbles hold at most {MAX_CLASSES - 1}.", path=target)
        numbers = _segment_numbers(ds, series, target)
    lut = np.zeros(max(classes) + 1, label_dtype(top))
    for number, c in classes.items():
        lut[number] = c + 1 if strokes else c
    return lut[numbers]


def _segment_numbers(ds, series: DicomSeries, path) -> np.ndarray:
    """The segment number covering each voxel of the scan's grid (0: none; the higher number where segments overlap)."""
    out = np.zeros(series.geometry.shape, label_dtype(max(_segments(ds, path))))
    half = float(getattr(ds, "MaximumFractionalValue", 255) or 255) / 2.0
    with _damaged(path):
        placed = sorted(_placed_frames(ds, series, path), key=lambda t: t[0])  # higher segment numbers win
    for number, k, j0, i0, frame in placed:
        on = frame if frame.dtype == bool else frame > half
        out[k, j0:j0 + frame.shape[0], i0:i0 + frame.shape[1]][on] = number
    return out


def _segment_classes(segments: dict[int, str], class_names, path) -> dict[int, int]:
    """Segment number -> class index (0 = background)."""
    def key(name: str) -> str:
        return " ".join(str(name).lower().split())

    background = {"background"} | ({key(class_names[0])} if class_names else set())
    if not class_names:
        classes, c = {}, 0
        for number, label in segments.items():
            if key(label) in background:
                classes[number] = 0
            else:
                c += 1
                classes[number] = c
        return classes
    table = {key(n): i for i, n in enumerate(class_names)}
    unknown = [label for label in segments.values() if key(label) not in table and key(label) not in background]
    if unknown:
        raise InputError(f"the DICOM SEG's segment(s) {', '.join(repr(u) for u in unknown)} are not among the classes "
                         f"{', '.join(class_names)}; name the classes as the SEG does (--class-names), or relabel it.",
                         path=path)
    return {number: (0 if key(label) in background else table[key(label)]) for number, label in segments.items()}
