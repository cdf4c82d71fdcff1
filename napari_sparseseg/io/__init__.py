"""Reading and writing volumes with their geometry (nibabel for NIfTI, SimpleITK otherwise).

All arrays are returned in one order: ``(k, j, i)``, i.e. slice axis first, which is
SimpleITK's ``GetArrayFromImage`` order and napari's natural display order. The
:class:`Geometry` maps array indices in that order to world RAS millimetres.
"""

from napari_sparseseg.io.geometry import Geometry
from napari_sparseseg.io.outputs import OutputLog, check_demo_folder, check_format_limits, check_outputs
from napari_sparseseg.io.paths import SUPPORTED_SUFFIXES, is_supported_path
from napari_sparseseg.io.volumes import (
    check_writable,
    read_image,
    read_labels,
    read_scan,
    write_image,
    write_labels,
    write_probabilities,
)

__all__ = [
    "Geometry",
    "OutputLog",
    "SUPPORTED_SUFFIXES",
    "check_demo_folder",
    "check_format_limits",
    "check_outputs",
    "check_writable",
    "is_supported_path",
    "read_image",
    "read_labels",
    "read_scan",
    "write_image",
    "write_labels",
    "write_probabilities",
]
