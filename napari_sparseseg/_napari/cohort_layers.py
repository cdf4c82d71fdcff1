"""A cohort scan as napari layers: the scan and its mask as an editable Labels layer, and back.

Both are shown radiologically like any scan the reader opens (:func:`.layers.layer_kwargs`);
the mask layer's edits are read back on the file's grid (:func:`.layers.grid_array`), where
the difference to the prediction becomes that scan's strokes
(:meth:`~napari_sparseseg.cohort.project.Cohort.add_corrections`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_sparseseg._napari.layers import default_colors, display_array, grid_array, layer_kwargs, prediction_colormap
from napari_sparseseg.cohort.project import Cohort
from napari_sparseseg.core.annotations.labels import label_dtype
from napari_sparseseg.io import Geometry, read_image, read_labels

__all__ = ["OpenedScan", "open_scan", "edited_mask"]

MASK_SUFFIX = " mask (edit to correct)"


@dataclass
class OpenedScan:
    """A cohort scan shown in the viewer: its layers, the mask as predicted, its geometry."""

    name: str
    image_layer: object
    mask_layer: object
    predicted: np.ndarray  # file grid, as the batch wrote it
    geometry: Geometry


def open_scan(viewer, cohort: Cohort, name: str, class_names) -> OpenedScan:
    """Add scan ``name`` and its mask (an editable Labels layer) to ``viewer``; replace earlier layers of it."""
    scan = cohort.scan(name)
    image, geom = read_image(scan.image)
    mask_path = cohort.mask_path(name)
    if mask_path.is_file():
        predicted, _ = read_labels(mask_path, like=geom, what="mask")
    else:
        predicted = np.zeros(geom.shape, label_dtype(max(1, len(class_names) - 1)))
    predicted = np.ascontiguousarray(predicted).astype(label_dtype(max(1, len(class_names) - 1)))
    for layer_name in (name, name + MASK_SUFFIX):
        if layer_name in viewer.layers:
            viewer.layers.remove(layer_name)
    kw = layer_kwargs(geom, name, scan.image)
    image_layer = viewer.add_image(display_array(image, kw["metadata"]), colormap="gray", **kw)
    mkw = layer_kwargs(geom, name + MASK_SUFFIX, str(mask_path))
    mkw["metadata"]["class_names"] = list(class_names)
    mask_layer = viewer.add_labels(display_array(predicted.copy(), mkw["metadata"]), opacity=0.5,
                                   colormap=prediction_colormap(default_colors(len(class_names))), **mkw)
    return OpenedScan(name, image_layer, mask_layer, predicted, geom)


def edited_mask(opened: OpenedScan) -> np.ndarray:
    """The mask layer's data on the file's grid (a copy)."""
    return np.array(grid_array(opened.mask_layer.data, opened.mask_layer.metadata))
