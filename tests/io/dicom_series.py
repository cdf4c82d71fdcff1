"""Synthetic CT series written with pydicom, on any geometry: what a scanner's export looks like.

The package's own DICOM writer (``write_labels`` to a folder) writes secondary captures through
GDCM; a real series is CT (or MR) Image Storage with patient, study and frame-of-reference
UIDs. These helpers write one slice file per array index ``k`` at the position the geometry
gives it, in LPS as DICOM wants, so tests can check that a DICOM SEG lands on the right voxels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_sparseseg.io import Geometry

_LPS = np.array([-1.0, -1.0, 1.0])


def oblique_geometry(shape=(6, 7, 8), spacing=(2.0, 1.0, 1.5), angle=0.2, flip=False) -> Geometry:
    """A geometry whose in-plane axes are rotated by ``angle``; ``flip`` runs the slices foot to head... reversed.

    Array axes ``(k, j, i)``: ``k`` along the slice normal, ``j`` the rows, ``i`` the columns.
    """
    c, s = np.cos(angle), np.sin(angle)
    # columns: unit RAS directions of k, j, i
    dk = np.array([0.0, -s, c])
    dj = np.array([0.0, -c, -s]) if not flip else np.array([0.0, c, s])
    di = np.array([1.0, 0.0, 0.0]) if not flip else np.array([-1.0, 0.0, 0.0])
    if flip:
        dk = -dk
    affine = np.eye(4)
    affine[:3, :3] = np.stack([dk * spacing[0], dj * spacing[1], di * spacing[2]], axis=1)
    affine[:3, 3] = [12.5, -40.0, 25.0]
    return Geometry(affine, tuple(shape))


def write_ct_series(folder: Path, image: np.ndarray, geometry: Geometry, reverse_instances: bool = False,
                    uid_root: str = "1.2.826.0.1.3680043.8.498.") -> dict:
    """Write ``image`` (array order ``(k, j, i)``) as a CT series; return its UIDs.

    Returns:
        ``{"study": ..., "series": ..., "frame_of_reference": ..., "instances": [SOP Instance UID per k]}``.
    """
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    study, series, frame = (generate_uid(prefix=uid_root) for _ in range(3))
    direction = geometry.direction
    row_dir = _LPS * direction[:, 2]  # along a row: increasing column index i
    col_dir = _LPS * direction[:, 1]  # down a column: increasing row index j
    spacing = geometry.spacing
    instances = []
    n = image.shape[0]
    for k in range(n):
        uid = generate_uid(prefix=uid_root)
        instances.append(uid)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, uid
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Phantom^Test", "PH-001", "19700101", "O"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20240101", "120000", "1", "ACC1"
        ds.ReferringPhysicianName = ""
        ds.Modality, ds.SeriesNumber, ds.Manufacturer = "CT", 3, "Phantom"
        ds.SeriesDescription = "synthetic CT"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.InstanceNumber = (n - k) if reverse_instances else (k + 1)
        ds.PositionReferenceIndicator = ""
        ds.ImagePositionPatient = [f"{v:.6f}" for v in _LPS * geometry.index_to_world((k, 0, 0))]
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in (*row_dir, *col_dir)]
        ds.PixelSpacing = [f"{spacing[1]:.6f}", f"{spacing[2]:.6f}"]  # row spacing (j), column spacing (i)
        ds.SliceThickness = f"{spacing[0]:.6f}"
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = image.shape[1], image.shape[2]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", "1", "HU"
        ds.KVP = "120"
        ds.PixelData = np.ascontiguousarray(image[k].astype(np.int16)).tobytes()
        pydicom.dcmwrite(folder / f"IM{ds.InstanceNumber:04d}.dcm", ds, enforce_file_format=True)
    return {"study": study, "series": series, "frame_of_reference": frame, "instances": instances}
