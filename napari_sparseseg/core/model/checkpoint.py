"""The model in memory (:class:`SegModel`) and its saved format: the files and the ``model.json`` it writes.

Reading and writing a model folder is :mod:`napari_sparseseg.io.models`'s job. Layout of a model folder::

    model.json   format version, package version, network, normalisation, classes, patch size
    model.pt     the network's state_dict (loaded with ``weights_only=True``)
    forest.npz   optional: the random forest fused with the network, as its training set
                 (:mod:`~napari_sparseseg.core.model.forest`; loaded with ``allow_pickle=False``)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from napari_sparseseg import __version__
from napari_sparseseg.core.model.intensity import Normalization
from napari_sparseseg.core.model.network import NetworkConfig

FORMAT_VERSION = 1
CONFIG_NAME, WEIGHTS_NAME, FOREST_NAME = "model.json", "model.pt", "forest.npz"


@dataclass
class SegModel:
    """A trained (or training) segmentation model and everything needed to apply it.

    Args:
        network: the torch module (MONAI UNet).
        config: rebuilds ``network``.
        normalization: maps raw intensities to input channels.
        class_names: index 0 is background; ``len == config.out_channels``.
        patch_size: training/inference window in voxels, array order.
        spacing: voxel size (mm) of the training image, array order.
        history: one dict per training round (steps, seconds, loss).
        intensity_scale: typical intensity difference between neighbouring voxels of one class
            on the strokes it was trained on (normalised units), for boundary refinement
            (:mod:`~napari_sparseseg.core.inference.refine`); ``None`` if unknown.
        forest: a :class:`~napari_sparseseg.core.model.forest.StrokeForest` fitted to the same strokes,
            fused with the network at prediction; ``None`` if there is none.

    Examples:
        ```python
        import napari_sparseseg as ss
        model = ss.load_model("round1")      # or a training result's .model
        print(model.class_names, model.patch_size, len(model.history), "rounds")
        ```
    """

    network: object
    config: NetworkConfig
    normalization: Normalization
    class_names: list
    patch_size: tuple
    spacing: tuple = (1.0, 1.0, 1.0)
    history: list = field(default_factory=list)
    intensity_scale: float | None = None
    forest: object = None

    @property
    def num_classes(self) -> int:
        """Classes the network predicts, background included."""
        return self.config.out_channels

    def metadata(self) -> dict:
        """The ``model.json`` content: versions, network, normalisation, classes, patch, history."""
        return {
            "format_version": FORMAT_VERSION,
            "package": "napari-sparseseg",
            "package_version": __version__,
            "saved": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "network": {"architecture": "monai.networks.nets.UNet", **self.config.to_dict()},
            "normalization": self.normalization.to_dict(),
            "class_names": list(self.class_names),
            "patch_size": list(self.patch_size),
            "spacing": list(self.spacing),
            "history": list(self.history),
            "intensity_scale": self.intensity_scale,
            "forest": None if self.forest is None else {"file": FOREST_NAME, "samples": int(len(self.forest.classes)),
                                                        "trees": self.forest.n_estimators, "weight": self.forest.weight},
        }


def default_class_names(num_classes: int) -> list[str]:
    """``["background", "structure 1", ...]`` for ``num_classes`` classes."""
    return ["background"] + [f"structure {i}" for i in range(1, num_classes)]


MODEL_FILES = frozenset({CONFIG_NAME, WEIGHTS_NAME, FOREST_NAME})
