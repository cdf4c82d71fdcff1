"""npe2 writer: a Labels layer to NIfTI/NRRD/MHA on the scan's geometry."""

from __future__ import annotations

from napari_sparseseg._napari.layers import geometry_from_layer, grid_array
from napari_sparseseg.io import write_labels


def write_labels_layer(path: str, data, meta: dict) -> list[str]:
    """Write a Labels layer on its scan's own grid and geometry (undoing the display order)."""
    metadata = meta.get("metadata")
    geometry = geometry_from_layer(data.shape, metadata, meta.get("scale"), meta.get("translate"))
    return [str(write_labels(path, grid_array(data, metadata), geometry))]
