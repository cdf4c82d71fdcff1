"""Which paths are scans: the supported suffixes, a file's format suffix, DICOM series folders."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["NIFTI_SUFFIXES", "SITK_SUFFIXES", "SUPPORTED_SUFFIXES", "SUPPORTED_TEXT", "file_suffix", "is_supported_path",
           "looks_like_dicom_folder"]

NIFTI_SUFFIXES = (".nii", ".nii.gz")
SITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
SUPPORTED_SUFFIXES = NIFTI_SUFFIXES + SITK_SUFFIXES
SUPPORTED_TEXT = ".nii, .nii.gz, .nrrd, .mha, .mhd or a DICOM series folder"


def file_suffix(path: Path) -> str:
    """The format suffix of ``path``, lower case: a supported double suffix (``.nii.gz``) whole."""
    name = path.name.lower()
    for s in SUPPORTED_SUFFIXES:
        if name.endswith(s):
            return s
    return path.suffix.lower()


def looks_like_dicom_folder(path: Path) -> bool:
    """Whether ``path`` is a folder holding DICOM-looking files (``.dcm``, ``.ima`` or no suffix)."""
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
        return looks_like_dicom_folder(p)
    return file_suffix(p) in SUPPORTED_SUFFIXES
